//! [`StatsStore`]: the venues' live counters, in tables of their own in the same
//! file.
//!
//! A tally is a writer job like a scan's commit: it joins the next group commit,
//! and is durable with it. It used to be a write transaction of its own per
//! decision (without fsync), which fought the writer for redb's write lock and
//! cut the embedded server's enter rate from 17,500/s to 5,800/s
//! (docs/benchmarks.md). A scan's answer does not wait for its tally
//! ([`StatsStore::record_later`]): that wait was a second group commit per scan.
//! Reads are snapshots, like every read of this store.
//!
//! The board's minute buckets live in [`ENTRY_MINUTES`]; each tally drops a
//! few of its venue's buckets that are no longer kept, so a venue holds at most
//! the kept minutes of each gate plus a few, however long it runs.

use crate::EmbeddedStore;
use crate::tables::unavailable;
use async_trait::async_trait;
use presence_domain::stats::oldest_kept_minute;
use presence_domain::time::unix_millis;
use presence_domain::{DeviceActivity, DeviceId, GateId, Tally, VenueId, VenueStats};
use presence_ports::{StatsStore, StoreError};
use redb::{
    Database, ReadableDatabase, ReadableTable, Table, TableDefinition, TableError, WriteTransaction,
};
use std::time::{Duration, SystemTime};

/// (venue, `scope|counter` field of [`Tally::fields`]) → count.
pub(crate) const COUNTERS: TableDefinition<(&str, &str), u64> =
    TableDefinition::new("stats_counters");
/// (venue, gate id) → the gate's latest name.
pub(crate) const GATE_NAMES: TableDefinition<(&str, u64), &str> =
    TableDefinition::new("stats_gate_names");
/// Venue → when its latest counted decision was made.
pub(crate) const UPDATED: TableDefinition<&str, i64> = TableDefinition::new("stats_updated");
/// (venue, minute start, gate id) → people admitted in that minute.
pub(crate) const ENTRY_MINUTES: TableDefinition<(&str, i64, u64), u64> =
    TableDefinition::new("stats_entry_minutes");
/// (venue, device id) → (its latest counted decision time, that scan's gate id).
pub(crate) const DEVICE_ACTIVITY: TableDefinition<(&str, u64), (i64, u64)> =
    TableDefinition::new("stats_device_activity");
/// Scan id → until when it is remembered, so a repeated decision is not counted twice.
pub(crate) const SEEN: TableDefinition<&str, i64> = TableDefinition::new("stats_seen");
/// (remembered until, scan id), to forget scan ids as they expire. Keyed by
/// expiry rather than by counting time since a NOT_FOUND's scan id is kept for
/// less time than the others. (It replaced `stats_seen_by_time`, keyed by
/// counting time, before any deployment kept data.)
pub(crate) const SEEN_BY_EXPIRY: TableDefinition<(i64, &str), ()> =
    TableDefinition::new("stats_seen_by_expiry");

/// How long a counted scan id is remembered: redeliveries come within minutes.
/// A NOT_FOUND's is kept for the store's NOT_FOUND retention instead
/// ([`Tally::is_remembered_briefly`]).
const SEEN_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// Old scan ids forgotten per tally: more than one, so the table shrinks after
/// a busy night.
const FORGET_PER_TALLY: usize = 4;

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[async_trait]
impl StatsStore for EmbeddedStore {
    async fn record(&self, tally: &Tally) -> Result<bool, StoreError> {
        let tally = tally.clone();
        let keep_ms = self.seen_retention_ms(&tally);
        self.writer
            .submit(move |tables| tables.count(&tally, keep_ms))
            .await
    }

    async fn record_later(&self, tally: Tally) -> Result<(), StoreError> {
        let keep_ms = self.seen_retention_ms(&tally);
        self.writer
            .submit_detached("a venue stats tally", move |tables| {
                tables.count(&tally, keep_ms).map(drop)
            })
            .await
    }

    async fn venue_stats(&self, venue_id: &VenueId) -> Result<VenueStats, StoreError> {
        venue_stats(&self.db, venue_id)
    }
}

impl EmbeddedStore {
    fn seen_retention_ms(&self, tally: &Tally) -> i64 {
        if tally.is_remembered_briefly() {
            millis(self.not_found_retention)
        } else {
            millis(SEEN_RETENTION)
        }
    }
}

/// The stats tables, opened once per writer batch with the others.
pub(crate) struct StatsTables<'t> {
    counters: Table<'t, (&'static str, &'static str), u64>,
    gate_names: Table<'t, (&'static str, u64), &'static str>,
    updated: Table<'t, &'static str, i64>,
    seen: Table<'t, &'static str, i64>,
    seen_by_expiry: Table<'t, (i64, &'static str), ()>,
    entry_minutes: Table<'t, (&'static str, i64, u64), u64>,
    device_activity: Table<'t, (&'static str, u64), (i64, u64)>,
}

impl<'t> StatsTables<'t> {
    pub(crate) fn open(txn: &'t WriteTransaction) -> Result<Self, TableError> {
        Ok(Self {
            counters: txn.open_table(COUNTERS)?,
            gate_names: txn.open_table(GATE_NAMES)?,
            updated: txn.open_table(UPDATED)?,
            seen: txn.open_table(SEEN)?,
            seen_by_expiry: txn.open_table(SEEN_BY_EXPIRY)?,
            entry_minutes: txn.open_table(ENTRY_MINUTES)?,
            device_activity: txn.open_table(DEVICE_ACTIVITY)?,
        })
    }

    /// [`StatsStore::record`]: whether the tally counted (false for a scan id
    /// counted less than `keep_ms` ago). Every error is a redb error, which
    /// abandons the batch.
    pub(crate) fn count(&mut self, tally: &Tally, keep_ms: i64) -> Result<bool, StoreError> {
        let now = unix_millis(SystemTime::now());
        self.forget_expired(now)?;
        let scan_id = tally.scan_id.as_str();
        let seen_until = self
            .seen
            .get(scan_id)
            .map_err(unavailable)?
            .map(|guard| guard.value());
        if seen_until.is_some_and(|until| until > now) {
            return Ok(false);
        }
        let until = now.saturating_add(keep_ms);
        self.seen.insert(scan_id, until).map_err(unavailable)?;
        self.seen_by_expiry
            .insert((until, scan_id), ())
            .map_err(unavailable)?;

        let venue = tally.venue_id.as_str();
        for field in tally.fields() {
            let key = (venue, field.as_str());
            let current = self
                .counters
                .get(key)
                .map_err(unavailable)?
                .map_or(0, |guard| guard.value());
            self.counters
                .insert(key, tally.applied_to(current))
                .map_err(unavailable)?;
        }
        self.gate_names
            .insert((venue, tally.gate_id.get()), tally.gate_name.as_str())
            .map_err(unavailable)?;
        let latest = self
            .updated
            .get(venue)
            .map_err(unavailable)?
            .map(|guard| guard.value());
        if latest.is_none_or(|latest| latest < tally.decided_at) {
            self.updated
                .insert(venue, tally.decided_at)
                .map_err(unavailable)?;
        }
        self.count_for_the_board(tally, now)?;
        Ok(true)
    }

    /// The board's part of a counted tally: the entry's minute bucket (unless
    /// already too old to keep) and the device's latest scan.
    fn count_for_the_board(&mut self, tally: &Tally, now: i64) -> Result<(), StoreError> {
        let venue = tally.venue_id.as_str();
        let oldest = oldest_kept_minute(now);
        let stale = self
            .entry_minutes
            .range((venue, i64::MIN, 0)..(venue, oldest, 0))
            .map_err(unavailable)?
            .take(FORGET_PER_TALLY)
            .map(|entry| entry.map(|(key, _)| (key.value().1, key.value().2)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(unavailable)?;
        for (minute, gate) in stale {
            self.entry_minutes
                .remove((venue, minute, gate))
                .map_err(unavailable)?;
        }
        if let Some(minute) = tally.entry_minute().filter(|minute| *minute >= oldest) {
            let key = (venue, minute, tally.gate_id.get());
            let people = self
                .entry_minutes
                .get(key)
                .map_err(unavailable)?
                .map_or(0, |guard| guard.value());
            self.entry_minutes
                .insert(key, tally.applied_to(people))
                .map_err(unavailable)?;
        }
        let device = (venue, tally.device_id.get());
        let latest = self
            .device_activity
            .get(device)
            .map_err(unavailable)?
            .map(|guard| guard.value().0);
        if latest.is_none_or(|latest| latest < tally.decided_at) {
            self.device_activity
                .insert(device, (tally.decided_at, tally.gate_id.get()))
                .map_err(unavailable)?;
        }
        Ok(())
    }
}

impl StatsTables<'_> {
    /// Forgets a few scan ids whose time is up. An index entry whose scan id was
    /// counted again since (a NOT_FOUND redelivered after its retention) leaves
    /// that newer mark alone.
    fn forget_expired(&mut self, now: i64) -> Result<(), StoreError> {
        let expired = self
            .seen_by_expiry
            .range::<(i64, &str)>(..(now, ""))
            .map_err(unavailable)?
            .take(FORGET_PER_TALLY)
            .map(|entry| entry.map(|(key, _)| (key.value().0, key.value().1.to_owned())))
            .collect::<Result<Vec<_>, _>>()
            .map_err(unavailable)?;
        for (until, old) in &expired {
            self.seen_by_expiry
                .remove((*until, old.as_str()))
                .map_err(unavailable)?;
            let current = self
                .seen
                .get(old.as_str())
                .map_err(unavailable)?
                .map(|guard| guard.value());
            if current == Some(*until) {
                self.seen.remove(old.as_str()).map_err(unavailable)?;
            }
        }
        Ok(())
    }
}

fn venue_stats(db: &Database, venue_id: &VenueId) -> Result<VenueStats, StoreError> {
    let txn = db.begin_read().map_err(unavailable)?;
    let venue = venue_id.as_str();
    let counters = txn.open_table(COUNTERS).map_err(unavailable)?;
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
    let now = unix_millis(SystemTime::now());
    let buckets = txn
        .open_table(ENTRY_MINUTES)
        .map_err(unavailable)?
        .range((venue, oldest_kept_minute(now), 0)..=(venue, i64::MAX, u64::MAX))
        .map_err(unavailable)?
        .map(|entry| {
            entry.map(|(key, people)| {
                let (_, minute, gate) = key.value();
                (GateId::new(gate), minute, people.value())
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(unavailable)?;
    let devices = txn
        .open_table(DEVICE_ACTIVITY)
        .map_err(unavailable)?
        .range((venue, 0)..=(venue, u64::MAX))
        .map_err(unavailable)?
        .map(|entry| {
            entry.map(|(key, latest)| {
                let (last_scan_at, gate) = latest.value();
                DeviceActivity {
                    device_id: DeviceId::new(key.value().1),
                    gate_id: GateId::new(gate),
                    last_scan_at,
                }
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(unavailable)?;
    Ok(VenueStats::from_fields(
        venue_id.clone(),
        updated_at,
        fields
            .iter()
            .map(|(_, field, value)| (field.as_str(), *value)),
        names,
    )
    .map_err(|error| StoreError::Corrupt(error.to_string()))?
    .with_minutes(now, buckets)
    .with_devices(devices))
}
