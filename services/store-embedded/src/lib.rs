//! The embedded on-disk store: tickets, token state, remembered decisions, gates and
//! devices in one redb file (`<data_dir>/presence.redb`), behind the
//! [`TicketStore`], [`DeviceStore`] and [`InventoryStore`] ports.
//!
//! - `tables`: the tables, their encoding, and the writes of one command;
//! - `writer`: the single writer thread and its group commit (one fsync per batch);
//! - `sweeper`: forgets remembered decisions after the retention period;
//! - `read`: reads, each in its own snapshot;
//! - `stats`: the venues' live counters ([`presence_ports::StatsStore`]);
//! - `backup`: a consistent copy of every table, taken while serving.
//!
//! Every answered write is durable (`Durability::Immediate`): it survives `kill -9`.

mod backup;
mod read;
mod stats;
mod sweeper;
mod tables;
mod writer;

pub use backup::{BackupSummary, data_file, inspect_backup};
pub use writer::{BATCH_DURATION_BOUNDS, BatchDurations, WriterStats};

use async_trait::async_trait;
use presence_domain::inventory::{InventoryRecord, Reference};
use presence_domain::{
    Device, DeviceId, Event, EventId, Gate, GateId, Mac, ScanId, ScanKey, Token, Venue, VenueId,
};
use presence_ports::{
    Commit, CommitOutcome, DEFAULT_NOT_FOUND_RETENTION, DeviceDraft, DeviceStore, InventorySize,
    InventoryStore, ScanContext, StoreError, TicketHistory, TicketStore, VenueCounts,
};
use redb::{Database, ReadableDatabase};
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use sweeper::Sweeper;
use tables::unavailable;
use writer::Writer;

/// The file the store keeps in its data directory.
pub const FILE_NAME: &str = "presence.redb";

/// The store's page cache by default: 256 MiB, against redb's own 1 GiB.
///
/// The cache is what the embedded server's memory mostly is: it fills up to the
/// file's size, which is about 150 MiB for 1,000,000 tickets and grows by about
/// 650 bytes per entry scan (token state plus the decision remembered for retries),
/// so with redb's default the resident size followed the data past 500 MiB. 256 MiB
/// kept the whole process at 368 to 389 MiB with 1,000,000 tickets and up to
/// 492,000 entries (docs/benchmarks.md, "Memory"). Pages beyond it are read from the file (the
/// kernel's page cache, usually), which costs CPU on scans whose pages were
/// evicted: a few percent of the CPU per enter in the benchmarks, more with less.
/// redb also gives at most half of it to a write transaction's dirty pages, which
/// bounds what a large inventory holds before it commits.
pub const DEFAULT_CACHE_BYTES: usize = 256 * 1024 * 1024;

/// How the store behaves; the defaults suit production.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// How long a decision is remembered for idempotent retries, at least.
    pub idempotency_retention: Duration,
    /// How long a NOT_FOUND decision and its stats marker are remembered instead
    /// ([`presence_domain::Status::is_remembered_briefly`]).
    pub not_found_retention: Duration,
    /// Most writes committed together in one transaction.
    pub max_batch: usize,
    /// Bytes of database pages redb keeps in memory (read cache and the write
    /// transaction's dirty pages together); pages beyond it are read from the file.
    pub cache_bytes: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            idempotency_retention: Duration::from_secs(24 * 60 * 60),
            not_found_retention: DEFAULT_NOT_FOUND_RETENTION,
            max_batch: 1024,
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

/// Why the store could not open.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error("cannot prepare the tables of {path}: {source}")]
    Tables { path: PathBuf, source: redb::Error },
    #[error("cannot start the store's {name} thread: {source}")]
    Thread {
        name: &'static str,
        source: std::io::Error,
    },
}

/// The embedded store. Share it as `Arc<EmbeddedStore>`; dropping the last `Arc`
/// stops the sweeper, lets the writer answer what is queued, and closes the file.
pub struct EmbeddedStore {
    // Fields drop in this order: the sweeper first (it submits to the writer),
    // then the writer (which holds the database open until its thread ends). The
    // sweeper is only held for that: dropping it stops its thread.
    _sweeper: Sweeper,
    writer: Writer,
    db: Arc<Database>,
    path: PathBuf,
    /// How long a NOT_FOUND tally's scan id is remembered (the stats' markers).
    not_found_retention: Duration,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens or creates `<data_dir>/presence.redb` (creating `data_dir`), starts the
    /// writer thread and the sweeper.
    pub fn open(data_dir: &Path, options: EmbeddedOptions) -> Result<Arc<Self>, EmbeddedError> {
        std::fs::create_dir_all(data_dir).map_err(|source| EmbeddedError::DataDir {
            path: data_dir.to_owned(),
            source,
        })?;
        let path = data_dir.join(FILE_NAME);
        let db = Database::builder()
            .set_cache_size(options.cache_bytes)
            .create(&path)
            .map_err(|source| EmbeddedError::Open {
                path: path.clone(),
                source,
            })?;
        let tables_error = |source: redb::Error| EmbeddedError::Tables {
            path: path.clone(),
            source,
        };
        let txn = db.begin_write().map_err(|e| tables_error(e.into()))?;
        tables::create_all(&txn).map_err(|e| tables_error(e.into()))?;
        txn.commit().map_err(|e| tables_error(e.into()))?;

        let db = Arc::new(db);
        let writer = Writer::start(db.clone(), options.max_batch).map_err(|source| {
            EmbeddedError::Thread {
                name: "writer",
                source,
            }
        })?;
        let weak = writer.weak_sender().ok_or(EmbeddedError::Thread {
            name: "writer",
            source: std::io::Error::other("the writer has no queue"),
        })?;
        let sweeper = Sweeper::start(
            weak,
            options.idempotency_retention,
            options.not_found_retention,
        )
        .map_err(|source| EmbeddedError::Thread {
            name: "sweeper",
            source,
        })?;
        tracing::info!(path = %path.display(), "embedded store open");
        Ok(Arc::new(Self {
            _sweeper: sweeper,
            writer,
            db,
            path,
            not_found_retention: options.not_found_retention,
        }))
    }

    /// What the writer has done since the store opened (batches, jobs, fsyncs).
    pub fn stats(&self) -> WriterStats {
        self.writer.stats()
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

// Reads run directly on the calling task rather than through `spawn_blocking`: a
// read transaction is a snapshot that never waits for the writer, and its pages
// come from redb's cache. Measured on the 2-core dev machine (debug build, 100k
// tickets, random tokens): a scan context took 12 µs inline and 33 µs through
// `spawn_blocking`, whose hand-off costs more than the read itself.

#[async_trait]
impl TicketStore for EmbeddedStore {
    async fn scan_context(
        &self,
        key: &ScanKey,
        gate_id: GateId,
    ) -> Result<ScanContext, StoreError> {
        read::scan_context(&self.db, key, gate_id)
    }

    async fn commit(&self, commit: Commit) -> Result<CommitOutcome, StoreError> {
        self.writer
            .submit(move |tables| tables.commit(&commit))
            .await
    }

    async fn ticket_history(
        &self,
        token: &Token,
        limit: usize,
    ) -> Result<TicketHistory, StoreError> {
        read::ticket_history(&self.db, token, limit)
    }

    async fn scan_token(&self, scan_id: &ScanId) -> Result<Option<Token>, StoreError> {
        read::scan_token(&self.db, scan_id)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if !self.writer.is_running() {
            return Err(StoreError::Unavailable(
                "the store writer has stopped".into(),
            ));
        }
        self.db.begin_read().map(drop).map_err(unavailable)
    }
}

#[async_trait]
impl DeviceStore for EmbeddedStore {
    async fn venue(&self, id: &VenueId) -> Result<Option<Venue>, StoreError> {
        read::venue(&self.db, id)
    }

    async fn event(&self, id: &EventId) -> Result<Option<Event>, StoreError> {
        read::event(&self.db, id)
    }

    async fn gate(&self, id: GateId) -> Result<Option<Gate>, StoreError> {
        read::gate(&self.db, id)
    }

    async fn gate_by_name(
        &self,
        venue_id: &VenueId,
        name: &str,
    ) -> Result<Option<Gate>, StoreError> {
        read::gate_by_name(&self.db, venue_id, name)
    }

    async fn venue_counts(&self, venue_id: &VenueId) -> Result<VenueCounts, StoreError> {
        read::venue_counts(&self.db, venue_id)
    }

    async fn ensure_gate(&self, venue_id: &VenueId, name: &str) -> Result<Gate, StoreError> {
        // Most device inits name a gate that exists: answer those from a snapshot,
        // without queueing behind the writer. The writer checks again before creating.
        if let Some(gate) = read::gate_by_name(&self.db, venue_id, name)? {
            return Ok(gate);
        }
        let venue_id = venue_id.clone();
        let name = name.to_owned();
        self.writer
            .submit(move |tables| tables.ensure_gate(&venue_id, &name))
            .await
    }

    async fn save_device(&self, draft: DeviceDraft) -> Result<Device, StoreError> {
        self.writer
            .submit(move |tables| tables.save_device(draft))
            .await
    }

    async fn device_by_mac(
        &self,
        venue_id: &VenueId,
        mac: &Mac,
    ) -> Result<Option<Device>, StoreError> {
        read::device_by_mac(&self.db, venue_id, mac)
    }

    async fn device(&self, id: DeviceId) -> Result<Option<Device>, StoreError> {
        read::device(&self.db, id)
    }

    async fn revoke_device(
        &self,
        venue_id: &VenueId,
        id: DeviceId,
    ) -> Result<Option<Device>, StoreError> {
        let venue_id = venue_id.clone();
        self.writer
            .submit(move |tables| tables.revoke_device(&venue_id, id))
            .await
    }
}

#[async_trait]
impl InventoryStore for EmbeddedStore {
    async fn stored(
        &self,
        references: &BTreeSet<Reference>,
    ) -> Result<HashSet<Reference>, StoreError> {
        read::stored(&self.db, references)
    }

    async fn apply(&self, records: Vec<InventoryRecord>) -> Result<usize, StoreError> {
        if records.is_empty() {
            return Ok(0);
        }
        self.writer
            .submit(move |tables| tables.apply(&records))
            .await
    }

    /// Exact: redb keeps each table's length.
    async fn size(&self) -> Result<InventorySize, StoreError> {
        read::size(&self.db)
    }
}

#[cfg(test)]
mod tests;
