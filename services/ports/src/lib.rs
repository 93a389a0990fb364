//! The seams of Presence.
//!
//! The gateway, validator and registry are written against these traits only:
//! - [`store`]: where tickets, token state, remembered decisions, gates and devices
//!   live ([`TicketStore`], [`DeviceStore`], [`InventoryStore`]), and the venues'
//!   live counters ([`StatsStore`]);
//! - [`transport`]: how a request reaches the service that decides it and how
//!   decisions leave ([`Transport`], [`DecisionSink`]);
//! - [`audit`]: where the audit trail goes ([`AuditSink`]);
//! - [`in_process`]: the adapters that need no technology (a broadcast decision sink);
//! - [`conformance`]: the contract tests every store adapter must pass, so the
//!   embedded and Redis stores are interchangeable.

pub mod audit;
pub mod conformance;
pub mod in_process;
pub mod store;
pub mod transport;

pub use audit::AuditSink;
pub use store::{
    Commit, CommitOutcome, DEFAULT_NOT_FOUND_RETENTION, DEFAULT_NOT_FOUND_RETENTION_MS,
    DeviceDraft, DeviceStore, InventorySize, InventoryStore, ScanContext, Snapshot, Snapshots,
    StatsStore, StoreError, Stores, TicketHistory, TicketStore, VenueCounts,
};
pub use transport::{
    AnnulCommand, Answer, DecisionSink, DeviceInitOutcome, InventoryOutcome, ScanCommand,
    Transport, TransportError,
};
