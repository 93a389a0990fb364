//! Backups: a consistent copy of the whole store, taken while it serves.
//!
//! The copy is read from one read transaction, a snapshot: the writer goes on
//! committing meanwhile, and the copy holds every commit made before the
//! snapshot and nothing of any later one. Each table is copied row by row, in
//! key order, into a new redb file, so the copy's pages are as full as the
//! store's own after an inventory load. A byte copy of the live file could
//! catch a commit half written; a row copy cannot.
//!
//! A table of the store that this module does not know fails the backup
//! instead of being left out of it: a backup that restores without some
//! table's data would answer retries differently.

use crate::stats::{
    COUNTERS, DEVICE_ACTIVITY, ENTRY_MINUTES, GATE_NAMES as STATS_GATE_NAMES, SEEN, SEEN_BY_EXPIRY,
    UPDATED,
};
use crate::tables::{
    DEVICE_MACS, DEVICES, EVENTS, GATE_NAMES, GATES, HISTORY, HISTORY_BY_TOKEN, REMEMBERED,
    REMEMBERED_BRIEFLY_BY_TIME, REMEMBERED_BY_TIME, SCAN_TOKENS, SEQUENCES, STATES, TICKETS,
    VENUES, unavailable,
};
use crate::{EmbeddedStore, FILE_NAME};
use async_trait::async_trait;
use presence_ports::{Snapshot, Snapshots, StoreError};
use redb::backends::FileBackend;
use redb::{
    Database, Key, MultimapTableHandle, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, TableDefinition, TableError, TableHandle, Value, WriteTransaction,
};
use std::collections::BTreeSet;
use std::io::{Seek, SeekFrom};
use std::path::Path;

/// What a backup holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupSummary {
    /// Tables copied, empty ones included.
    pub tables: usize,
    /// Rows copied, over every table.
    pub rows: u64,
}

impl EmbeddedStore {
    /// Writes a consistent copy of the store into `file`, which must be empty.
    /// Blocking (it reads and writes the whole store): call it from a blocking
    /// thread. Serving goes on meanwhile: the copy reads a snapshot and never
    /// waits for the writer, nor makes it wait.
    ///
    /// `presence serve` on a data directory holding the copy as
    /// [`FILE_NAME`] answers every scan decided before the snapshot, and its
    /// retries, as this store did.
    pub fn backup_to(&self, file: std::fs::File) -> Result<BackupSummary, StoreError> {
        backup(&self.db, file)
    }
}

/// Backups for `GET /admin/v1/backup`, made in an unnamed temporary file in the
/// data directory (it needs room for a copy of the store).
#[async_trait]
impl Snapshots for EmbeddedStore {
    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let db = self.db.clone();
        let dir = self
            .path
            .parent()
            .map_or_else(|| Path::new(".").to_owned(), Path::to_owned);
        let copying = tokio::task::spawn_blocking(move || {
            let file = tempfile::tempfile_in(&dir).map_err(|e| {
                unavailable(format!(
                    "cannot make a backup file in {}: {e}",
                    dir.display()
                ))
            })?;
            let summary = backup(&db, file.try_clone().map_err(unavailable)?)?;
            let mut file = file;
            let bytes = file.seek(SeekFrom::End(0)).map_err(unavailable)?;
            file.rewind().map_err(unavailable)?;
            Ok(Snapshot {
                file,
                bytes,
                tables: summary.tables,
                rows: summary.rows,
            })
        });
        copying.await.map_err(unavailable)?
    }
}

fn backup(db: &Database, file: std::fs::File) -> Result<BackupSummary, StoreError> {
    let snapshot = db.begin_read().map_err(unavailable)?;
    let cannot_create =
        |e: &dyn std::fmt::Display| unavailable(format!("cannot create the backup: {e}"));
    let backend = FileBackend::new(file).map_err(|e| cannot_create(&e))?;
    let copy = Database::builder()
        .create_with_backend(backend)
        .map_err(|e| cannot_create(&e))?;
    let txn = copy.begin_write().map_err(unavailable)?;
    let summary = copy_every_table(&snapshot, &txn).map_err(unavailable)?;
    txn.commit().map_err(unavailable)?;
    Ok(summary)
}

/// Checks that `path` is a backup this version can serve from, and how much it
/// holds, without changing it. Fails when a server has it open.
pub fn inspect_backup(path: &Path) -> Result<BackupSummary, StoreError> {
    let db = Database::open(path)
        .map_err(|e| unavailable(format!("{} is not a usable backup: {e}", path.display())))?;
    let snapshot = db.begin_read().map_err(unavailable)?;
    let mut rows = 0;
    let mut tables = 0;
    for table in snapshot.list_tables().map_err(unavailable)? {
        tables += 1;
        let table = snapshot.open_untyped_table(table).map_err(unavailable)?;
        rows += table.len().map_err(unavailable)?;
    }
    Ok(BackupSummary { tables, rows })
}

/// The name the store's file has in a data directory, for restoring a backup.
pub fn data_file(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join(FILE_NAME)
}

fn copy_every_table(
    snapshot: &ReadTransaction,
    copy: &WriteTransaction,
) -> Result<BackupSummary, redb::Error> {
    let mut copied = BTreeSet::new();
    let mut rows = 0;
    let mut table = |rows_copied: Result<(String, u64), redb::Error>| {
        let (name, count) = rows_copied?;
        rows += count;
        copied.insert(name);
        Ok::<_, redb::Error>(())
    };
    table(copy_table(snapshot, copy, SEQUENCES))?;
    table(copy_table(snapshot, copy, VENUES))?;
    table(copy_table(snapshot, copy, EVENTS))?;
    table(copy_table(snapshot, copy, GATES))?;
    table(copy_table(snapshot, copy, GATE_NAMES))?;
    table(copy_table(snapshot, copy, TICKETS))?;
    table(copy_table(snapshot, copy, STATES))?;
    table(copy_table(snapshot, copy, REMEMBERED))?;
    table(copy_table(snapshot, copy, REMEMBERED_BY_TIME))?;
    table(copy_table(snapshot, copy, REMEMBERED_BRIEFLY_BY_TIME))?;
    table(copy_table(snapshot, copy, HISTORY))?;
    table(copy_table(snapshot, copy, HISTORY_BY_TOKEN))?;
    table(copy_table(snapshot, copy, SCAN_TOKENS))?;
    table(copy_table(snapshot, copy, DEVICES))?;
    table(copy_table(snapshot, copy, DEVICE_MACS))?;
    table(copy_table(snapshot, copy, COUNTERS))?;
    table(copy_table(snapshot, copy, STATS_GATE_NAMES))?;
    table(copy_table(snapshot, copy, UPDATED))?;
    table(copy_table(snapshot, copy, SEEN))?;
    table(copy_table(snapshot, copy, SEEN_BY_EXPIRY))?;
    table(copy_table(snapshot, copy, ENTRY_MINUTES))?;
    table(copy_table(snapshot, copy, DEVICE_ACTIVITY))?;
    let unknown: Vec<String> = snapshot
        .list_tables()?
        .map(|table| table.name().to_owned())
        .chain(
            snapshot
                .list_multimap_tables()?
                .map(|table| table.name().to_owned()),
        )
        .filter(|name| !copied.contains(name))
        .collect();
    if !unknown.is_empty() {
        return Err(redb::Error::Corrupted(format!(
            "the backup does not know the tables {unknown:?}: refusing an incomplete copy"
        )));
    }
    Ok(BackupSummary {
        tables: copied.len(),
        rows,
    })
}

/// Copies one table, in key order; a table the snapshot does not have yet is
/// created empty. Returns the table's name and its rows.
fn copy_table<K: Key + 'static, V: Value + 'static>(
    snapshot: &ReadTransaction,
    copy: &WriteTransaction,
    definition: TableDefinition<K, V>,
) -> Result<(String, u64), redb::Error> {
    let mut target = copy.open_table(definition)?;
    let source = match snapshot.open_table(definition) {
        Ok(source) => source,
        Err(TableError::TableDoesNotExist(_)) => return Ok((definition.name().to_owned(), 0)),
        Err(error) => return Err(error.into()),
    };
    let mut rows = 0;
    for row in source.iter()? {
        let (key, value) = row?;
        target.insert(key.value(), value.value())?;
        rows += 1;
    }
    Ok((definition.name().to_owned(), rows))
}
