//! The Redis store of distributed mode: tickets, token state, remembered decisions,
//! venues, events, gates and devices in Redis, behind the [`TicketStore`],
//! [`DeviceStore`] and [`InventoryStore`] ports.
//!
//! Redis is one server, the primary Redis Sentinel names, or a Redis Cluster
//! ([`RedisTarget`]); every operation works in all three. Each may be reached
//! over TLS as an ACL user ([`RedisAccess`]); the validator and the registry
//! read all of it from [`RedisArgs`].
//!
//! - `access`: TLS material and credentials; `settings`: the services' flags;
//! - `connection`: the connection to a server or a cluster, and how commands on
//!   keys of several cluster slots travel; `server`: one server, reconnected
//!   when it answers `READONLY`; `sentinel`: the primary Sentinel names, found
//!   again after a failover;
//! - `keys`: every key name; `codec`: how values are encoded;
//! - `tickets`: scan contexts, ticket histories and the commit script (`lua/commit.lua`);
//! - `registry`: venues, gates and devices, and how new ids are claimed;
//! - `inventory`: reference checks, the inventory apply (one transaction on a
//!   server, one write per slot in a cluster) and the inventory size;
//! - `persistence`: a warning at start when Redis could lose what it answered;
//! - `stats`: the venues' live counters (`lua/stats.lua`).
//!
//! # Key layout
//!
//! Every key starts with [`RedisOptions::key_prefix`] (`presence:` by default),
//! shown as `P`. Values are JSON; the two there is one of per ticket are compact
//! (one-letter fields, no token, see `codec`): a loaded ticket costs Redis about
//! 170 bytes (measured over a million; a test holds it under 250).
//!
//! | key | value |
//! | --- | --- |
//! | `P{t:<token>}:tk` | the ticket |
//! | `P{t:<token>}:st` | the token's state, with its version in `v`; absent = never scanned |
//! | `P{t:<token>}:sc:<kind>:<device>:<scan time>` | a remembered decision, expiring after [`RedisOptions::idempotency_retention`] (a NOT_FOUND after [`RedisOptions::not_found_retention`]) |
//! | `P{t:<token>}:h` | list: the ticket's newest 500 scan records (`GET ticket`), newest first, expiring [`RedisOptions::idempotency_retention`] after its latest scan; only for known tickets |
//! | `P{s:<scan id>}` | the token whose history has that scan's record (annulments find the ticket by it), expiring after [`RedisOptions::idempotency_retention`]; written just before the commit that adds the record |
//! | `Pvn:<venue>`, `Pev:<event>` | a venue, an event |
//! | `Pgt:<gate id>` | a gate's spec (the id is the key) |
//! | `Pvg:<venue>` | hash: gate key (NFKC, trimmed, lower-case name) → gate id |
//! | `Pdv:<device id>` | a device |
//! | `Pvm:<venue>` | hash: MAC → device id |
//! | `Pseq:gate`, `Pseq:device` | id counters (`INCR`, so ids start at 1) |
//! | `Pinv:venues`, `Pinv:events`, `Pinv:tickets` | HyperLogLogs of the ids inventory stored, for its size (12 KiB each) |
//! | `P{vs:<venue>}:c` | hash: `scope\|counter` → count, the venue's live stats |
//! | `P{vs:<venue>}:g`, `P{vs:<venue>}:u` | hash: gate id → name; the latest counted decision's time |
//! | `P{vs:<venue>}:m:<minute start>` | hash: gate id → people admitted in that minute, expiring once older than the board shows (31 minutes) |
//! | `P{vs:<venue>}:d` | hash: device id → `<latest counted decision time>:<gate id>` |
//! | `P{vs:<venue>}:sn:<scan id>` | a decision counted in the stats, expiring after [`RedisOptions::idempotency_retention`] (a NOT_FOUND after [`RedisOptions::not_found_retention`]) |
//!
//! # Redis Cluster
//!
//! The keys of one token share the hash tag `{t:<token>}`, and a venue's stats keys
//! `{vs:<venue>}`, so each script (the commit, the stats count) touches one slot.
//! Every other command names one key. What reads or writes several unrelated keys
//! at once (a scan context's token keys and gate, the references an inventory
//! names, the inventory size) is one pipeline on a server and one pipeline per
//! slot, sent side by side, in a cluster: a cluster refuses a pipeline across
//! slots. Either way a scan context takes two round trips: the token's keys and
//! the gate, then the ticket's event.
//! A commit that adds a history record also writes its scan's index key
//! `{s:<scan id>}`, of another slot: on a server in the commit's pipeline,
//! before the script, so a scan still takes one round trip to commit; in a
//! cluster beside it, as a request of its own sent at the same time.
//!
//! In a cluster the store connects through seed nodes (any one that answers),
//! learns which primary serves which slot, follows `MOVED`/`ASK` while slots
//! migrate, and keeps one multiplexed connection per primary. It reads from
//! primaries only: a replica may lag behind a commit. Databases other than 0
//! do not exist there.
//!
//! # Concurrency
//!
//! - A commit is one script run: Redis runs scripts one at a time, so of many
//!   transitions computed from one version exactly one commits.
//! - A commit carries the moment its call stops waiting (now +
//!   [`RedisOptions::response_timeout`]) and the script does nothing when Redis
//!   runs it later (it compares Redis's `TIME`): a commit whose answer timed out
//!   cannot land afterwards, so reading the scan's keys after the timeout tells
//!   whether it happened (the hosts' clocks must agree to well within the
//!   caller's pause before that read).
//! - With [`RedisOptions::min_replicas`], a commit's script is followed by
//!   `WAIT` in the same pipeline, on one of [`CONFIRMING_CONNECTIONS`] (Redis
//!   holds a connection's later commands behind a `WAIT`): a commit fewer
//!   replicas confirm in time fails as unavailable, its outcome unknown to the
//!   caller, who reads it back; a remembered decision read back is confirmed
//!   the same way before it is answered again (a `PEXPIRE` renewing it is the
//!   write the `WAIT` then covers). An answer never leaves before the replicas
//!   have it, so a failover to one of them cannot lose it.
//! - A new gate or device is claimed without a script: the value is written under a
//!   fresh id (`INCR`) first, then the id is offered to the venue's index with
//!   `HSETNX`. The first offer wins; a loser deletes its value and uses the winner's
//!   id. An index entry therefore never points at a missing value; a crash between
//!   the two steps leaves an unreachable value under an unused id, nothing worse.
//! - Commands travel on one multiplexed connection (to each primary, in a
//!   cluster), which reconnects by itself. While Redis is unreachable every call
//!   answers [`StoreError::Unavailable`] after a few quick reconnect attempts (well
//!   under a second when the port refuses; [`RedisOptions::response_timeout`]
//!   bounds a server that accepts but does not answer). In a cluster that bound
//!   covers a call's retries and redirections too, so a commit never lands after
//!   its caller stopped waiting in either mode. The cluster client may send a
//!   command again when a node's connection broke under it: a commit that ran
//!   the first time then answers with the decision it remembered, its own.
//!
//! # Inventory applies
//!
//! On one Redis server [`InventoryStore::apply`] is all or nothing: it opens its own
//! connection, sends `MULTI`, streams the records as `MSET` chunks of
//! [`APPLY_CHUNK`] records per round trip, then `EXEC`, then (outside the
//! transaction) `PFADD`s of the ids into the inventory size. Redis queues the chunks and
//! applies them at `EXEC` in one step; if anything fails before, the connection is
//! dropped and Redis discards the queue. `EXEC` holds Redis for as long as the
//! writes take, and scans wait meanwhile: about 0.9 s for a million tickets on the
//! 2-core dev machine, just under the default [`RedisOptions::response_timeout`].
//!
//! One write happens before the transaction: a gate record naming a gate that does
//! not exist yet claims its id as [`DeviceStore::ensure_gate`] would (an
//! unrestricted gate), and the transaction then sets its restrictions. A failed
//! apply may leave that unrestricted gate behind; a retry reuses it.
//!
//! In a Redis Cluster a transaction cannot span slots, so an apply is atomic per
//! slot only: on a connection of its own, it groups the records by slot and writes
//! each slot's records with one `MSET` (which Redis applies at once), several slots
//! side by side, then counts the ids into the inventory size. If it fails halfway,
//! some slots hold the new records and others do not, and scans see that mix until
//! the apply is retried. A retry converges: every record is an upsert and the
//! last write wins, so applying the same batch again leaves what one successful
//! apply would. An upload whose apply failed is answered 503 and uploaded again
//! by its operator; a batch published by another system is retried by the
//! validator until it lands. The same gate claim precedes the writes.

mod access;
mod codec;
mod connection;
mod inventory;
mod keys;
mod persistence;
mod registry;
mod sentinel;
mod server;
mod settings;
mod stats;
mod tickets;

pub use access::{ClientIdentity, RedisAccess};
pub use connection::RedisTarget;
pub use inventory::APPLY_CHUNK;
pub use settings::RedisArgs;

use async_trait::async_trait;
use connection::{Connection, Dialer};
use keys::Keys;
use presence_domain::inventory::{InventoryRecord, Reference};
use presence_domain::{
    Device, DeviceId, Event, EventId, Gate, GateId, Mac, ScanId, ScanKey, Token, Venue, VenueId,
};
use presence_ports::{
    Commit, CommitOutcome, DEFAULT_NOT_FOUND_RETENTION, DeviceDraft, DeviceStore, InventorySize,
    InventoryStore, ScanContext, StoreError, TicketHistory, TicketStore, VenueCounts,
};
use redis::{RedisError, Script};
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tracing::Instrument;

/// How the store behaves; the defaults suit production.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// Starts every key, so that several deployments (or tests) can share a server.
    /// Must not contain `{` or `}`.
    pub key_prefix: String,
    /// How long a decision is remembered for idempotent retries.
    pub idempotency_retention: Duration,
    /// How long a NOT_FOUND decision and its stats marker are remembered instead
    /// ([`presence_domain::Status::is_remembered_briefly`]).
    pub not_found_retention: Duration,
    /// How long a call waits for Redis to answer before it fails as unavailable.
    pub response_timeout: Duration,
    /// How long each command of an inventory transaction may wait for Redis.
    /// `EXEC` performs every write of the batch, so this bounds the largest batch
    /// (a million tickets took about a second on a 2-core machine).
    pub apply_timeout: Duration,
    /// Credentials and TLS material.
    pub access: RedisAccess,
    /// Replicas that must have acknowledged a decision's commit before it is
    /// answered (`WAIT`); 0 answers once the primary has it.
    pub min_replicas: u32,
    /// How long a commit waits for those replicas before it is reported
    /// unavailable; less than [`RedisOptions::response_timeout`].
    pub replica_timeout: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            key_prefix: "presence:".to_owned(),
            idempotency_retention: Duration::from_secs(24 * 60 * 60),
            not_found_retention: DEFAULT_NOT_FOUND_RETENTION,
            response_timeout: Duration::from_secs(1),
            apply_timeout: Duration::from_secs(120),
            access: RedisAccess::default(),
            min_replicas: 0,
            replica_timeout: Duration::from_millis(500),
        }
    }
}

/// Why the store could not start.
#[derive(Debug, thiserror::Error)]
pub enum RedisStoreError {
    #[error("invalid Redis URL: {0}")]
    Url(#[source] RedisError),
    #[error("invalid Redis store options: {0}")]
    Options(String),
    #[error("cannot connect to Redis: {0}")]
    Connect(#[source] RedisError),
    #[error("cannot read the {setting} file {path}: {source}")]
    File {
        setting: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// A retention as whole milliseconds, at least one (a Redis `PX` argument).
fn whole_millis(what: &str, retention: Duration) -> Result<u64, RedisStoreError> {
    u64::try_from(retention.as_millis())
        .ok()
        .filter(|ms| *ms > 0)
        .ok_or_else(|| {
            RedisStoreError::Options(format!(
                "the {what} retention {retention:?} must be at least a millisecond"
            ))
        })
}

/// How long a connection attempt may take (to the server, or to each cluster node).
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The Redis store. Share it as `Arc<RedisStore>`.
pub struct RedisStore {
    /// For connections of their own (inventory applies).
    dialer: Dialer,
    conn: Connection,
    keys: Keys,
    commit_script: Script,
    retention_ms: u64,
    not_found_retention_ms: u64,
    /// How long a call waits for Redis; a commit runs only within it.
    response_timeout: Duration,
    apply_timeout: Duration,
    min_replicas: u32,
    replica_timeout: Duration,
    /// With `min_replicas`, the [`CONFIRMING_CONNECTIONS`] connections that
    /// commits and their `WAIT`s take turns on; empty without.
    confirming: Vec<Connection>,
    confirming_turn: AtomicUsize,
}

/// Connections that commits waiting for replicas take turns on. Redis holds
/// every command sent after a `WAIT` on its connection until the `WAIT`
/// returns, so on the one shared connection each commit would wait for the one
/// before it: a pool lets as many commits wait side by side, and leaves the
/// shared connection (reads, registry, inventory) unblocked.
pub const CONFIRMING_CONNECTIONS: usize = 16;

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("keys", &self.keys)
            .field("retention_ms", &self.retention_ms)
            .field("not_found_retention_ms", &self.not_found_retention_ms)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to the Redis server at `url` (e.g. `redis://127.0.0.1:6379/0`);
    /// [`RedisStore::connect_to`] with [`RedisTarget::Server`].
    pub async fn connect(url: &str, options: RedisOptions) -> Result<Arc<Self>, RedisStoreError> {
        Self::connect_to(&RedisTarget::Server(url.to_owned()), options).await
    }

    /// Connects to one server or to a cluster; fails if Redis does not answer
    /// within a few attempts (in a cluster: if no seed node answers). Once
    /// connected, a lost connection is re-established by itself.
    pub async fn connect_to(
        target: &RedisTarget,
        options: RedisOptions,
    ) -> Result<Arc<Self>, RedisStoreError> {
        if options.key_prefix.contains(['{', '}']) {
            return Err(RedisStoreError::Options(format!(
                "the key prefix {:?} must not contain braces: they would move the hash tags",
                options.key_prefix
            )));
        }
        let retention_ms = whole_millis("idempotency", options.idempotency_retention)?;
        let not_found_retention_ms = whole_millis("NOT_FOUND", options.not_found_retention)?;
        if options.min_replicas > 0
            && (options.replica_timeout.is_zero()
                || options.replica_timeout >= options.response_timeout)
        {
            // WAIT 0 would wait forever; a wait as long as the response
            // timeout would fail the call before WAIT answers.
            return Err(RedisStoreError::Options(format!(
                "the replica timeout {:?} must be above zero and below the response timeout {:?}",
                options.replica_timeout, options.response_timeout
            )));
        }
        let (conn, dialer) = connection::connect(target, &options).await?;
        let mut confirming = Vec::new();
        if options.min_replicas > 0 {
            for _ in 0..CONFIRMING_CONNECTIONS {
                confirming.push(connection::connect(target, &options).await?.0);
            }
        }
        let mode = match target {
            RedisTarget::Server(_) => "server",
            RedisTarget::Cluster(_) => "cluster",
            RedisTarget::Sentinel { .. } => "sentinel",
        };
        tracing::info!(
            prefix = %options.key_prefix,
            mode,
            min_replicas = options.min_replicas,
            "redis store connected"
        );
        persistence::check(&conn).await;
        Ok(Arc::new(Self {
            dialer,
            conn,
            keys: Keys::new(&options.key_prefix),
            commit_script: tickets::commit_script(),
            retention_ms,
            not_found_retention_ms,
            response_timeout: options.response_timeout,
            apply_timeout: options.apply_timeout,
            min_replicas: options.min_replicas,
            replica_timeout: options.replica_timeout,
            confirming,
            confirming_turn: AtomicUsize::new(0),
        }))
    }

    /// How long to remember a decision or a stats marker, in milliseconds: the
    /// NOT_FOUND retention if it is kept briefly, else the idempotency retention.
    pub(crate) fn retention_ms_for(&self, briefly: bool) -> u64 {
        if briefly {
            self.not_found_retention_ms
        } else {
            self.retention_ms
        }
    }

    /// What in Redis's persistence settings can lose answered scans, if anything
    /// (`connect` logs it); an error if Redis refuses `CONFIG GET`.
    pub async fn persistence_warning(&self) -> Result<Option<String>, StoreError> {
        persistence::warning(&self.conn).await.map_err(store_error)
    }

    /// A handle on the shared connection; clones are cheap and share its sockets.
    fn conn(&self) -> Connection {
        self.conn.clone()
    }

    /// A connection for a commit and its `WAIT`: one of the confirming pool,
    /// in turn, when replicas must confirm; the shared one otherwise.
    fn confirming_conn(&self) -> Connection {
        if self.confirming.is_empty() {
            return self.conn();
        }
        let turn = self.confirming_turn.fetch_add(1, Ordering::Relaxed);
        self.confirming[turn % self.confirming.len()].clone()
    }
}

/// Redis errors are outages (try again later), except when the data is not what
/// this store wrote: a value of the wrong type, or a state the commit script
/// cannot read.
pub(crate) fn store_error(error: RedisError) -> StoreError {
    match error.code() {
        Some("WRONGTYPE" | tickets::CORRUPT_CODE) => StoreError::Corrupt(error.to_string()),
        _ => StoreError::Unavailable(error.to_string()),
    }
}

#[async_trait]
impl TicketStore for RedisStore {
    async fn scan_context(
        &self,
        key: &ScanKey,
        gate_id: GateId,
    ) -> Result<ScanContext, StoreError> {
        let span = tracing::debug_span!("redis.scan_context", kind = %key.kind, device = %key.device_id, gate = %gate_id);
        tickets::scan_context(self, key, gate_id)
            .instrument(span)
            .await
    }

    async fn commit(&self, commit: Commit) -> Result<CommitOutcome, StoreError> {
        let span = tracing::debug_span!(
            "redis.commit",
            kind = %commit.key.kind,
            device = %commit.key.device_id,
            expected_version = commit.expected_version,
            changes_state = commit.next_state.is_some(),
        );
        tickets::commit(self, &commit).instrument(span).await
    }

    async fn ticket_history(
        &self,
        token: &Token,
        limit: usize,
    ) -> Result<TicketHistory, StoreError> {
        let span = tracing::debug_span!("redis.ticket_history", limit);
        tickets::ticket_history(self, token, limit)
            .instrument(span)
            .await
    }

    async fn scan_token(&self, scan_id: &ScanId) -> Result<Option<Token>, StoreError> {
        let span = tracing::debug_span!("redis.scan_token", %scan_id);
        tickets::scan_token(self, scan_id).instrument(span).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        redis::cmd("PING")
            .query_async::<()>(&mut self.conn())
            .instrument(tracing::debug_span!("redis.ping"))
            .await
            .map_err(store_error)
    }
}

#[async_trait]
impl DeviceStore for RedisStore {
    async fn venue(&self, id: &VenueId) -> Result<Option<Venue>, StoreError> {
        registry::venue(self, id)
            .instrument(tracing::debug_span!("redis.venue", venue = %id))
            .await
    }

    async fn event(&self, id: &EventId) -> Result<Option<Event>, StoreError> {
        registry::event(self, id)
            .instrument(tracing::debug_span!("redis.event", event = %id))
            .await
    }

    async fn gate(&self, id: GateId) -> Result<Option<Gate>, StoreError> {
        registry::gate(self, id)
            .instrument(tracing::debug_span!("redis.gate", gate = %id))
            .await
    }

    async fn gate_by_name(
        &self,
        venue_id: &VenueId,
        name: &str,
    ) -> Result<Option<Gate>, StoreError> {
        registry::gate_by_name(self, venue_id, name)
            .instrument(tracing::debug_span!("redis.gate_by_name", venue = %venue_id, name))
            .await
    }

    async fn venue_counts(&self, venue_id: &VenueId) -> Result<VenueCounts, StoreError> {
        registry::venue_counts(self, venue_id)
            .instrument(tracing::debug_span!("redis.venue_counts", venue = %venue_id))
            .await
    }

    async fn ensure_gate(&self, venue_id: &VenueId, name: &str) -> Result<Gate, StoreError> {
        registry::ensure_gate(self, venue_id, name)
            .instrument(tracing::debug_span!("redis.ensure_gate", venue = %venue_id, name))
            .await
    }

    async fn save_device(&self, draft: DeviceDraft) -> Result<Device, StoreError> {
        let span =
            tracing::debug_span!("redis.save_device", venue = %draft.venue_id, mac = %draft.mac);
        registry::save_device(self, draft).instrument(span).await
    }

    async fn device_by_mac(
        &self,
        venue_id: &VenueId,
        mac: &Mac,
    ) -> Result<Option<Device>, StoreError> {
        registry::device_by_mac(self, venue_id, mac)
            .instrument(tracing::debug_span!("redis.device_by_mac", venue = %venue_id, mac = %mac))
            .await
    }

    async fn device(&self, id: DeviceId) -> Result<Option<Device>, StoreError> {
        registry::device(self, id)
            .instrument(tracing::debug_span!("redis.device", device = %id))
            .await
    }

    async fn revoke_device(
        &self,
        venue_id: &VenueId,
        id: DeviceId,
    ) -> Result<Option<Device>, StoreError> {
        registry::revoke_device(self, venue_id, id)
            .instrument(
                tracing::debug_span!("redis.revoke_device", venue = %venue_id, device = %id),
            )
            .await
    }
}

#[async_trait]
impl InventoryStore for RedisStore {
    async fn stored(
        &self,
        references: &BTreeSet<Reference>,
    ) -> Result<HashSet<Reference>, StoreError> {
        inventory::stored(self, references)
            .instrument(tracing::debug_span!(
                "redis.stored",
                references = references.len()
            ))
            .await
    }

    async fn apply(&self, records: Vec<InventoryRecord>) -> Result<usize, StoreError> {
        let span = tracing::debug_span!("redis.apply", records = records.len());
        inventory::apply(self, records).instrument(span).await
    }

    async fn size(&self) -> Result<InventorySize, StoreError> {
        inventory::size(self)
            .instrument(tracing::debug_span!("redis.inventory_size"))
            .await
    }
}
