//! Presence in one process: the gateway, validator and registry wired together
//! with in-process adapters and the embedded store. No Kafka, no Redis; only
//! `presence decisions tail`, with the `kafka` feature, reads a distributed
//! deployment's topic.
//!
//! - [`transport`]: [`InProcessTransport`], the `Transport` that calls the
//!   validator and registry directly;
//! - [`app`]: builds and runs the whole server from [`app::ServeSettings`];
//! - [`audit_log`]: the embedded audit trail, a bounded file in the data
//!   directory; [`audit`]: `presence audit tail`, which prints it (or the
//!   distributed `audit` topic);
//! - [`backup`]: `presence backup` and `presence restore`;
//! - [`barcode`]: `presence barcode`, a rotating ticket's current barcode;
//! - [`decisions`]: `presence decisions`: the decisions topic tailed as JSON lines
//!   (the `--decisions-log` format), and the protobuf descriptor set;
//! - [`demo`]: the demo inventory and the commands printed for newcomers;
//! - [`client`]: what the commands that call a running server share (URL, API
//!   key, refusals explained, the terminal); [`progress`]: their progress bars;
//! - [`inventory_file`]: reading and checking NDJSON inventory files offline;
//! - [`inventory_upload`]: `presence inventory upload`, a file streamed to a server;
//! - [`scan`]: `presence scan`, one scan shown as a gate shows it; [`ticket`]:
//!   `presence ticket`, a ticket's state and history as a table; [`device`]:
//!   `presence device init` and `show`, a scanning device set up or looked up;
//! - [`metrics`]: the embedded store's group-commit figures on `/metrics`.

pub mod app;
pub mod audit;
pub mod audit_log;
pub mod backup;
pub mod barcode;
pub mod client;
pub mod decisions;
pub mod demo;
pub mod device;
pub mod inventory_file;
pub mod inventory_upload;
pub mod metrics;
pub mod progress;
pub mod scan;
pub mod ticket;
pub mod transport;

pub use transport::InProcessTransport;
