//! The rules of Presence, free of I/O.
//!
//! This crate owns everything the SPEC decides without asking a store or a network:
//! - [`barcode`]: rotating (screenshot-proof) barcodes, RFC 6238 codes;
//! - [`scan`]: the enter/exit/validate request, parsed from untrusted JSON;
//! - [`rules`]: the SPEC §2 rule table, in its exact order, and [`state`] the
//!   NEVER/IN/OUT machine behind rule 10;
//! - [`decision`]: statuses, decisions and the decision event analytics consume;
//! - [`device`]: device init and lookup requests, MAC and IP normalisation, gate names;
//! - [`inventory`]: venues, events, gates and tickets, and NDJSON inventory validation;
//! - [`audit`]: the audit trail's records (who changed inventory and devices);
//! - [`stats`]: the live view of a venue and which counter a decision bumps;
//! - [`offline`]: uploads of scans made offline, and forced passages;
//! - [`history`]: the per-ticket scan history a lookup answers;
//! - [`annul`]: undoing a passage (`ticket/annul`), decided from that history.
//!
//! Adapters (HTTP, Kafka, Redis, the embedded store) convert to and from these types;
//! the rules never see a wire format.

pub mod annul;
pub mod audit;
pub mod barcode;
pub mod decision;
pub mod device;
pub mod fields;
pub mod history;
pub mod ids;
pub mod inventory;
pub mod json;
pub mod offline;
pub mod rules;
pub mod scan;
pub mod state;
pub mod stats;
pub mod time;

pub use annul::{AnnulOutcome, AnnulRequest, Annulled, AnnulledPassage};
pub use audit::{AuditAction, AuditRecord, UploadedVenues};
pub use decision::{Decision, DecisionEvent, RememberedDecision, Status, TicketPlace};
pub use device::{
    Device, DeviceAccess, DeviceInitRequest, DeviceLookup, GateRef, Mac, SecretDigest,
};
pub use fields::{FieldError, FieldErrors};
pub use history::{ScanRecord, TicketQuery, TicketReport};
pub use ids::{DeviceId, EventId, GateId, ScanId, Token, UnixMillis, VenueId};
pub use inventory::{
    Event, EventStatus, Gate, GateSpec, InventoryRecord, LineError, LineErrors, Ticket,
    TicketStatus, Venue,
};
pub use rules::{Outcome, TicketFacts};
pub use scan::{DeviceOs, ScanKey, ScanKind, ScanRequest};
pub use state::{Entry, PriorState, StateRecord, TokenState};
pub use stats::{DeviceActivity, Tally, VenueStats};
