//! Presence in one process: the gateway, validator and registry wired together
//! with in-process adapters and the embedded store. No Kafka, no Redis; only
//! `presence decisions tail`, with the `kafka` feature, reads a distributed
//! deployment's topic.
//!
//! - [`transport`]: [`InProcessTransport`], the `Transport` that calls the
//!   validator and registry directly;
//! - [`app`]: builds and runs the whole server from [`app::ServeSettings`];
//! - [`backup`]: `presence backup` and `presence restore`;
//! - [`barcode`]: `presence barcode`, a rotating ticket's current barcode;
//! - [`decisions`]: `presence decisions`: the decisions topic tailed as JSON lines
//!   (the `--decisions-log` format), and the protobuf descriptor set;
//! - [`demo`]: the demo inventory and the curl commands printed for newcomers;
//! - [`inventory_file`]: reading and checking NDJSON inventory files offline;
//! - [`metrics`]: the embedded store's group-commit figures on `/metrics`;
//! - `allocator`: jemalloc as the process's allocator, and why.

mod allocator;
pub mod app;
pub mod backup;
pub mod barcode;
pub mod decisions;
pub mod demo;
pub mod inventory_file;
pub mod metrics;
pub mod transport;

pub use transport::InProcessTransport;
