//! [`StatsStore`]: the venues' live counters, in tables of their own in the same
//! file.
//!
//! A tally is its own small write transaction, outside the writer's batches: it
//! is counted after its decision was committed and never needs to wait for a
//! batch. It is committed with `Durability::None` (no fsync of its own) and
//! becomes durable with the writer's next commit, which every later scan makes:
//! a `kill -9` can lose the counts of the decisions made since the last scan
//! commit, never a scan. Reads are snapshots, like every read of this store.

use crate::EmbeddedStore;
use crate::tables::unavailable;
use async_trait::async_trait;
use presence_domain::time::unix_millis;
use presence_domain::{GateId, Tally, VenueId, VenueStats};
use presence_ports::{StatsStore, StoreError};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, TableError,
    WriteTransaction,
};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// (venue, `scope|counter` field of [`Tally::fields`]) → count.
const COUNTERS: TableDefinition<(&str, &str), u64> = TableDefinition::new("stats_counters");
/// (venue, gate id) → the gate's latest name.
const GATE_NAMES: TableDefinition<(&str, u64), &str> = TableDefinition::new("stats_gate_names");
/// Venue → when its latest counted decision was made.
const UPDATED: TableDefinition<&str, i64> = TableDefinition::new("stats_updated");
/// Scan id → when it was counted, so a repeated decision is not counted twice.
const SEEN: TableDefinition<&str, i64> = TableDefinition::new("stats_seen");
/// (counted at, scan id), to forget old scan ids oldest first.
const SEEN_BY_TIME: TableDefinition<(i64, &str), ()> = TableDefinition::new("stats_seen_by_time");

/// How long a counted scan id is remembered: redeliveries come within minutes.
const SEEN_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// Old scan ids forgotten per tally: more than one, so the table shrinks after
/// a busy night.
const FORGET_PER_TALLY: usize = 4;

#[async_trait]
impl StatsStore for EmbeddedStore {
    async fn record(&self, tally: &Tally) -> Result<bool, StoreError> {
        let db = self.db.clone();
        let tally = tally.clone();
        // A write transaction waits for the writer's batch to commit (an fsync).
        tokio::task::spawn_blocking(move || record(&db, &tally))
            .await
            .map_err(unavailable)?
    }

    async fn venue_stats(&self, venue_id: &VenueId) -> Result<VenueStats, StoreError> {
        venue_stats(&self.db, venue_id)
    }
}

fn record(db: &Arc<Database>, tally: &Tally) -> Result<bool, StoreError> {
    let mut txn = db.begin_write().map_err(unavailable)?;
    txn.set_durability(Durability::None).map_err(unavailable)?;
    if !count(&txn, tally)? {
        txn.abort().map_err(unavailable)?;
        return Ok(false);
    }
    txn.commit().map_err(unavailable)?;
    Ok(true)
}

fn count(txn: &WriteTransaction, tally: &Tally) -> Result<bool, StoreError> {
    let now = unix_millis(SystemTime::now());
    let scan_id = tally.scan_id.as_str();
    let mut seen = txn.open_table(SEEN).map_err(unavailable)?;
    if seen.get(scan_id).map_err(unavailable)?.is_some() {
        return Ok(false);
    }
    seen.insert(scan_id, now).map_err(unavailable)?;
    let mut by_time = txn.open_table(SEEN_BY_TIME).map_err(unavailable)?;
    by_time.insert((now, scan_id), ()).map_err(unavailable)?;
    let cutoff = now.saturating_sub(i64::try_from(SEEN_RETENTION.as_millis()).unwrap_or(i64::MAX));
    let expired = by_time
        .range::<(i64, &str)>(..(cutoff, ""))
        .map_err(unavailable)?
        .take(FORGET_PER_TALLY)
        .map(|entry| entry.map(|(key, _)| (key.value().0, key.value().1.to_owned())))
        .collect::<Result<Vec<_>, _>>()
        .map_err(unavailable)?;
    for (at, old) in &expired {
        by_time.remove((*at, old.as_str())).map_err(unavailable)?;
        seen.remove(old.as_str()).map_err(unavailable)?;
    }

    let venue = tally.venue_id.as_str();
    let mut counters = txn.open_table(COUNTERS).map_err(unavailable)?;
    for field in tally.fields() {
        let key = (venue, field.as_str());
        let current = counters
            .get(key)
            .map_err(unavailable)?
            .map_or(0, |guard| guard.value());
        counters
            .insert(key, current.saturating_add(tally.amount))
            .map_err(unavailable)?;
    }
    txn.open_table(GATE_NAMES)
        .map_err(unavailable)?
        .insert((venue, tally.gate_id.get()), tally.gate_name.as_str())
        .map_err(unavailable)?;
    let mut updated = txn.open_table(UPDATED).map_err(unavailable)?;
    let latest = updated
        .get(venue)
        .map_err(unavailable)?
        .map(|guard| guard.value());
    if latest.is_none_or(|latest| latest < tally.decided_at) {
        updated
            .insert(venue, tally.decided_at)
            .map_err(unavailable)?;
    }
    Ok(true)
}

fn venue_stats(db: &Database, venue_id: &VenueId) -> Result<VenueStats, StoreError> {
    let txn = db.begin_read().map_err(unavailable)?;
    let venue = venue_id.as_str();
    // The tables are created by the first tally.
    let counters = match txn.open_table(COUNTERS) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(VenueStats::empty(venue_id.clone())),
        Err(error) => return Err(unavailable(error)),
    };
    let fields = counters
        .range((venue, "")..)
        .map_err(unavailable)?
        .map(|entry| {
            entry.map(|(key, value)| {
                let (venue, field) = key.value();
                (venue.to_owned(), field.to_owned(), value.value())
            })
        })
        .take_while(|entry| entry.as_ref().map_or(true, |(v, _, _)| v == venue))
        .collect::<Result<Vec<_>, _>>()
        .map_err(unavailable)?;
    let names = txn
        .open_table(GATE_NAMES)
        .map_err(unavailable)?
        .range((venue, 0)..=(venue, u64::MAX))
        .map_err(unavailable)?
        .map(|entry| entry.map(|(key, name)| (GateId::new(key.value().1), name.value().to_owned())))
        .collect::<Result<Vec<_>, _>>()
        .map_err(unavailable)?;
    let updated_at = txn
        .open_table(UPDATED)
        .map_err(unavailable)?
        .get(venue)
        .map_err(unavailable)?
        .map(|guard| guard.value());
    VenueStats::from_fields(
        venue_id.clone(),
        updated_at,
        fields
            .iter()
            .map(|(_, field, value)| (field.as_str(), *value)),
        names,
    )
    .map_err(|error| StoreError::Corrupt(error.to_string()))
}
