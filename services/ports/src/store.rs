//! Store traits. Every method is one atomic operation of the adapter; the rules
//! that decide what to write stay in the domain crate.

use async_trait::async_trait;
use presence_domain::inventory::{InventoryRecord, Reference};
use presence_domain::{
    Device, DeviceAccess, DeviceId, Event, EventId, Gate, GateId, Mac, RememberedDecision, ScanId,
    ScanKey, ScanRecord, SecretDigest, StateRecord, Tally, Ticket, Token, Venue, VenueId,
    VenueStats,
};
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// How long a NOT_FOUND decision (and its stats marker) is remembered by
/// default, instead of the 24 hours of every other decision: five minutes, far
/// longer than a scanner's retries, and at a key's rate limit of 1,000 scans a
/// second at most 300,000 records per key however long a flood of random tokens
/// lasts ([`presence_domain::Status::is_remembered_briefly`]).
pub const DEFAULT_NOT_FOUND_RETENTION: Duration =
    Duration::from_millis(DEFAULT_NOT_FOUND_RETENTION_MS);
/// [`DEFAULT_NOT_FOUND_RETENTION`] in milliseconds, for the flags.
pub const DEFAULT_NOT_FOUND_RETENTION_MS: u64 = 5 * 60 * 1000;

/// Why a store could not answer. Every variant means "try again later": the
/// gateway turns it into 503 UNAVAILABLE, never into a decision.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
}

/// Everything rules 2–10 need about one scan, read together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanContext {
    pub ticket: Option<Ticket>,
    /// The ticket's event, when the ticket is known.
    pub event: Option<Event>,
    pub gate: Option<Gate>,
    pub state: StateRecord,
    /// The decision already given to this scan key, if any.
    pub remembered: Option<RememberedDecision>,
}

/// A decision to record, with the state change it makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub key: ScanKey,
    /// The state version the decision was computed from.
    pub expected_version: u64,
    /// The token's new state, when the decision changes it.
    pub next_state: Option<StateRecord>,
    pub remembered: RememberedDecision,
    /// The scan as the ticket's history shows it, for a decision about a
    /// known ticket; `None` leaves the history alone.
    pub history: Option<ScanRecord>,
}

/// What `GET ticket` reads about one token, together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TicketHistory {
    pub ticket: Option<Ticket>,
    /// The ticket's event, when the ticket is known.
    pub event: Option<Event>,
    pub state: StateRecord,
    /// Newest first.
    pub scans: Vec<ScanRecord>,
}

/// What became of a [`Commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Recorded, and the state changed if the commit asked for it.
    Committed,
    /// This scan key was already decided; nothing was written. The first decision wins.
    AlreadyDecided(RememberedDecision),
    /// The token changed since it was read; nothing was written. Read again and redecide.
    Conflict,
}

/// Tickets, token state and remembered decisions.
#[async_trait]
pub trait TicketStore: Send + Sync + 'static {
    /// Reads the ticket for `key.token`, its event, the gate, the token's state and
    /// the decision remembered for `key`.
    async fn scan_context(&self, key: &ScanKey, gate_id: GateId)
    -> Result<ScanContext, StoreError>;

    /// Atomically: if `commit.key` is remembered, returns that decision; else if the
    /// token's version is not `expected_version`, returns `Conflict`; else stores the
    /// new state (if any), adds `commit.history` (if any) to the token's history
    /// (the newest [`presence_domain::history::MAX_HISTORY_ENTRIES`] kept, each
    /// for the idempotency retention) and remembers the decision for at least the retention
    /// period: the adapter's NOT_FOUND retention for a decision
    /// [remembered briefly](presence_domain::Status::is_remembered_briefly), else
    /// its idempotency retention (24 hours by default). The brief one ends,
    /// give or take the adapter's expiry interval, soon after it.
    ///
    /// With `commit.history`, the store also indexes its scan id to the token
    /// ([`TicketStore::scan_token`]) for as long as the record is kept. An
    /// adapter may write that index entry even when the commit is not made
    /// (Redis writes it just before): an entry whose token's history lacks the
    /// scan leads nowhere.
    async fn commit(&self, commit: Commit) -> Result<CommitOutcome, StoreError>;

    /// The token whose history has (or, see [`TicketStore::commit`], may
    /// have) a record of `scan_id`: how an annulment, which names a scan and
    /// no token, finds its ticket. Found while the record is kept; `None`
    /// once the idempotency retention has passed. (A record trimmed from a
    /// history beyond its newest 500 may still be indexed until then.)
    async fn scan_token(&self, scan_id: &ScanId) -> Result<Option<Token>, StoreError>;

    /// The ticket of `token`, its event, its state and its newest `limit`
    /// history records, newest first.
    async fn ticket_history(
        &self,
        token: &Token,
        limit: usize,
    ) -> Result<TicketHistory, StoreError>;

    /// Succeeds when the store can serve requests.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// A device as device/init asks to save it; the store keeps or assigns the id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceDraft {
    pub venue_id: VenueId,
    pub name: String,
    pub mac: Mac,
    pub ip: String,
    pub gate_id: GateId,
    pub gate_name: String,
    pub serial: String,
    pub model: String,
    /// The digest of the secret issued with this init, if the venue requires one.
    pub secret: Option<SecretDigest>,
}

impl DeviceDraft {
    pub fn with_id(self, id: DeviceId) -> Device {
        Device {
            id,
            venue_id: self.venue_id,
            name: self.name,
            mac: self.mac,
            ip: self.ip,
            gate_id: self.gate_id,
            gate_name: self.gate_name,
            serial: self.serial,
            model: self.model,
            access: DeviceAccess {
                secret: self.secret,
                revoked: false,
            },
        }
    }
}

/// What a venue holds of what device/init creates, for the per-venue caps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VenueCounts {
    /// Gates, whether device/init or an inventory record created them.
    pub gates: u64,
    pub devices: u64,
}

/// Venues, gates and devices, as the registry sees them.
#[async_trait]
pub trait DeviceStore: Send + Sync + 'static {
    async fn venue(&self, id: &VenueId) -> Result<Option<Venue>, StoreError>;

    /// An event as inventory stored it: the board reads its doors-open window.
    async fn event(&self, id: &EventId) -> Result<Option<Event>, StoreError>;

    async fn gate(&self, id: GateId) -> Result<Option<Gate>, StoreError>;

    /// The venue's gate of that name, matched as [`presence_domain::device::gate_key`]
    /// matches names; never creates one.
    async fn gate_by_name(
        &self,
        venue_id: &VenueId,
        name: &str,
    ) -> Result<Option<Gate>, StoreError>;

    /// How many gates and devices the venue has. Exact in both adapters; a
    /// caller that checks a cap with it and then creates may pass the cap by
    /// the number of creations racing it.
    async fn venue_counts(&self, venue_id: &VenueId) -> Result<VenueCounts, StoreError>;

    /// The venue's gate of that name (matched as [`DeviceStore::gate_by_name`]), created without
    /// restrictions and with a new positive id if absent.
    async fn ensure_gate(&self, venue_id: &VenueId, name: &str) -> Result<Gate, StoreError>;

    /// Saves a device keyed by (venue, MAC): a re-init keeps the id and replaces the
    /// rest; a new device gets a new positive id.
    async fn save_device(&self, draft: DeviceDraft) -> Result<Device, StoreError>;

    async fn device_by_mac(
        &self,
        venue_id: &VenueId,
        mac: &Mac,
    ) -> Result<Option<Device>, StoreError>;

    async fn device(&self, id: DeviceId) -> Result<Option<Device>, StoreError>;

    /// Marks the venue's device revoked (SPEC §7) until a re-init
    /// ([`DeviceStore::save_device`]) replaces its access; `None` when the venue
    /// has no device with that id. A revocation racing a re-init of the same
    /// device may win over it: the device then stays revoked, the safe side.
    async fn revoke_device(
        &self,
        venue_id: &VenueId,
        id: DeviceId,
    ) -> Result<Option<Device>, StoreError>;
}

/// Inventory writes.
#[async_trait]
pub trait InventoryStore: Send + Sync + 'static {
    /// Which of `references` are stored.
    async fn stored(
        &self,
        references: &BTreeSet<Reference>,
    ) -> Result<HashSet<Reference>, StoreError>;

    /// Applies the records in order, all or nothing: upsert by id (last write wins);
    /// a gate record creates its gate if absent (as [`DeviceStore::ensure_gate`]) and
    /// replaces its restrictions. Returns how many records were applied.
    async fn apply(&self, records: Vec<InventoryRecord>) -> Result<usize, StoreError>;

    /// How many distinct venues, events and tickets inventory has stored, for
    /// the inventory-size metric. An adapter may estimate (the Redis store counts
    /// with HyperLogLogs, within about 1 %); re-applying a record never counts it
    /// twice.
    async fn size(&self) -> Result<InventorySize, StoreError>;
}

/// What [`InventoryStore::size`] counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InventorySize {
    pub venues: u64,
    pub events: u64,
    pub tickets: u64,
}

/// The venues' live counters, fed from the decisions stream.
///
/// The stream delivers at least once (a decision may come twice with one scan
/// id), so counting is idempotent by scan id.
#[async_trait]
pub trait StatsStore: Send + Sync + 'static {
    /// Atomically: unless a tally with this scan id was recorded in the last
    /// 24 hours at least, adds `tally.amount` to each of [`Tally::fields`], records
    /// the gate's name, moves the venue's `updated_at` up to `decided_at`, adds
    /// an entry's people to its gate's [`Tally::entry_minute`] and moves the
    /// device's latest scan up to `decided_at` (with its gate). Returns whether
    /// it counted. Minute buckets older than
    /// [`presence_domain::stats::oldest_kept_minute`] are dropped in time.
    async fn record(&self, tally: &Tally) -> Result<bool, StoreError>;

    /// [`StatsStore::record`], for a caller on a scan's answer path that must not
    /// wait for the tally to be stored: returns once it is accepted, and the
    /// adapter logs a failure to store it. By default it waits for `record`.
    async fn record_later(&self, tally: Tally) -> Result<(), StoreError> {
        self.record(&tally).await.map(drop)
    }

    /// The venue's counters, empty when nothing was counted there, with each
    /// gate's minute buckets kept now and each device's latest scan
    /// (`doors_open` false: stores do not read inventory for it).
    async fn venue_stats(&self, venue_id: &VenueId) -> Result<VenueStats, StoreError>;
}

/// A consistent copy of a whole store, taken while it serves: the embedded
/// mode's backups. (A Redis deployment is backed up by Redis's own means.)
#[async_trait]
pub trait Snapshots: Send + Sync + 'static {
    /// Copies every commit made before the call and none made after, into an
    /// unnamed temporary file (gone once closed), positioned at its start.
    async fn snapshot(&self) -> Result<Snapshot, StoreError>;
}

/// A copy made by [`Snapshots::snapshot`].
#[derive(Debug)]
pub struct Snapshot {
    pub file: std::fs::File,
    /// The copy's size in bytes.
    pub bytes: u64,
    /// Tables and rows copied.
    pub tables: usize,
    pub rows: u64,
}

/// One backend's three stores, as the services are wired with them.
#[derive(Clone)]
pub struct Stores {
    pub tickets: Arc<dyn TicketStore>,
    pub devices: Arc<dyn DeviceStore>,
    pub inventory: Arc<dyn InventoryStore>,
}

impl Stores {
    /// Wires a backend that implements all three traits.
    pub fn from_backend<B: TicketStore + DeviceStore + InventoryStore>(backend: Arc<B>) -> Self {
        Self {
            tickets: backend.clone(),
            devices: backend.clone(),
            inventory: backend,
        }
    }
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").finish_non_exhaustive()
    }
}
