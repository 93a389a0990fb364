//! The tables of `presence.redb`, how values are encoded in them, and the writes
//! one command makes inside the writer's shared transaction.
//!
//! Every write command below keeps one invariant the group commit relies on: it can
//! fail with [`StoreError::Corrupt`] only before its first write (it decodes and
//! encodes everything first), so a corrupt record fails that command alone and the
//! rest of the batch commits. Any redb error is [`StoreError::Unavailable`] and
//! abandons the whole batch.

use crate::stats::StatsTables;
use presence_domain::device::gate_key;
use presence_domain::history::MAX_HISTORY_ENTRIES;
use presence_domain::{
    Device, Gate, GateId, GateSpec, InventoryRecord, RememberedDecision, StateRecord, Tally,
    UnixMillis, VenueId,
};
use presence_ports::{Commit, CommitOutcome, DeviceDraft, StoreError};
use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::borrow::Borrow;
use std::fmt::Display;

/// Id sequences, by name; the value is the last id handed out.
pub(crate) const SEQUENCES: TableDefinition<&str, u64> = TableDefinition::new("sequences");
pub(crate) const VENUES: TableDefinition<&str, &[u8]> = TableDefinition::new("venues");
pub(crate) const EVENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("events");
/// Gate id → its [`GateSpec`]; the id is the key, so it is not stored twice.
pub(crate) const GATES: TableDefinition<u64, &[u8]> = TableDefinition::new("gates");
/// (venue, [`gate_key`]) → gate id.
pub(crate) const GATE_NAMES: TableDefinition<(&str, &str), u64> =
    TableDefinition::new("gate_names");
pub(crate) const TICKETS: TableDefinition<&str, &[u8]> = TableDefinition::new("tickets");
/// Token → its [`StateRecord`]; absent means never scanned.
pub(crate) const STATES: TableDefinition<&str, &[u8]> = TableDefinition::new("states");
/// `ScanKey::encode()` → the [`RememberedDecision`].
pub(crate) const REMEMBERED: TableDefinition<&str, &[u8]> = TableDefinition::new("remembered");
/// (decided_at, scan key) of every remembered decision, so that expiry is a range
/// scan from the oldest instead of a pass over every decision.
pub(crate) const REMEMBERED_BY_TIME: TableDefinition<(i64, &str), ()> =
    TableDefinition::new("remembered_by_time");
/// The same for decisions [remembered briefly](presence_domain::Status::is_remembered_briefly)
/// (NOT_FOUND), which the sweeper forgets after the shorter retention.
pub(crate) const REMEMBERED_BRIEFLY_BY_TIME: TableDefinition<(i64, &str), ()> =
    TableDefinition::new("remembered_briefly_by_time");

/// (decided_at, sequence, token) → a [`ScanRecord`] of the token's history
/// (`GET ticket`). Keyed by time first, so records are appended in about the
/// order they are written (dense pages; keying by token first scattered them
/// over half-full pages and tripled their cost) and the sweeper forgets the
/// oldest with one range.
pub(crate) const HISTORY: TableDefinition<(i64, u64, &str), &[u8]> =
    TableDefinition::new("history");
/// (token, sequence) → decided_at: a token's history records, oldest first, so
/// its newest are a reverse range scan and trimming keeps the last
/// [`MAX_HISTORY_ENTRIES`].
pub(crate) const HISTORY_BY_TOKEN: TableDefinition<(&str, u64), i64> =
    TableDefinition::new("history_by_token");

/// Scan id → the token whose history holds that scan's record
/// ([`presence_ports::TicketStore::scan_token`]): written with the record, and
/// removed with it when it is trimmed or expires.
pub(crate) const SCAN_TOKENS: TableDefinition<&str, &str> = TableDefinition::new("scan_tokens");

/// Which retention a remembered decision is kept for: the index it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kept {
    /// The idempotency retention (24 hours by default).
    Long,
    /// The NOT_FOUND retention.
    Briefly,
}

impl Kept {
    pub(crate) fn of(decision: &RememberedDecision) -> Self {
        if decision.decision.status.is_remembered_briefly() {
            Kept::Briefly
        } else {
            Kept::Long
        }
    }
}
pub(crate) const DEVICES: TableDefinition<u64, &[u8]> = TableDefinition::new("devices");
/// (venue, MAC) → device id.
pub(crate) const DEVICE_MACS: TableDefinition<(&str, &str), u64> =
    TableDefinition::new("device_macs");

const GATE_SEQUENCE: &str = "gate";
const DEVICE_SEQUENCE: &str = "device";
/// Orders history records decided in the same millisecond.
const HISTORY_SEQUENCE: &str = "history";

pub(crate) fn unavailable(error: impl Display) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

pub(crate) fn encode<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(format!("cannot encode {what}: {e}")))
}

/// Encodes into `buffer` (cleared first), for writes that come after other writes
/// and so must abandon the whole batch if they fail.
fn encode_into<T: Serialize>(
    buffer: &mut Vec<u8>,
    what: &str,
    value: &T,
) -> Result<(), StoreError> {
    buffer.clear();
    serde_json::to_writer(&mut *buffer, value)
        .map_err(|e| StoreError::Unavailable(format!("cannot encode {what}: {e}")))
}

pub(crate) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("{what} record is unreadable: {e}")))
}

/// Reads and decodes one JSON value, from a read or a write transaction.
pub(crate) fn get_json<'k, K, T>(
    table: &impl ReadableTable<K, &'static [u8]>,
    key: impl Borrow<K::SelfType<'k>>,
    what: &str,
) -> Result<Option<T>, StoreError>
where
    K: redb::Key + 'static,
    T: DeserializeOwned,
{
    table
        .get(key)
        .map_err(unavailable)?
        .map(|guard| decode(what, guard.value()))
        .transpose()
}

/// The scan id a stored history record names, read without decoding the rest.
fn recorded_scan_id(record: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Named {
        #[serde(rename = "i")]
        scan_id: String,
    }
    serde_json::from_slice::<Named>(record)
        .ok()
        .map(|named| named.scan_id)
}

/// Creates every table, so that read transactions never meet a missing one.
pub(crate) fn create_all(txn: &WriteTransaction) -> Result<(), redb::TableError> {
    WriteTables::open(txn).map(drop)
}

/// Every table, opened once for a whole batch.
pub(crate) struct WriteTables<'t> {
    sequences: Table<'t, &'static str, u64>,
    venues: Table<'t, &'static str, &'static [u8]>,
    events: Table<'t, &'static str, &'static [u8]>,
    gates: Table<'t, u64, &'static [u8]>,
    gate_names: Table<'t, (&'static str, &'static str), u64>,
    tickets: Table<'t, &'static str, &'static [u8]>,
    states: Table<'t, &'static str, &'static [u8]>,
    remembered: Table<'t, &'static str, &'static [u8]>,
    remembered_by_time: Table<'t, (i64, &'static str), ()>,
    remembered_briefly_by_time: Table<'t, (i64, &'static str), ()>,
    history: Table<'t, (i64, u64, &'static str), &'static [u8]>,
    history_by_token: Table<'t, (&'static str, u64), i64>,
    scan_tokens: Table<'t, &'static str, &'static str>,
    devices: Table<'t, u64, &'static [u8]>,
    device_macs: Table<'t, (&'static str, &'static str), u64>,
    stats: StatsTables<'t>,
    /// Whether a command of this batch wrote anything. A batch that only read
    /// (conflicts, repeats, existing gates) is not committed, so it costs no fsync.
    pub(crate) wrote: bool,
}

impl<'t> WriteTables<'t> {
    pub(crate) fn open(txn: &'t WriteTransaction) -> Result<Self, redb::TableError> {
        Ok(Self {
            sequences: txn.open_table(SEQUENCES)?,
            venues: txn.open_table(VENUES)?,
            events: txn.open_table(EVENTS)?,
            gates: txn.open_table(GATES)?,
            gate_names: txn.open_table(GATE_NAMES)?,
            tickets: txn.open_table(TICKETS)?,
            states: txn.open_table(STATES)?,
            remembered: txn.open_table(REMEMBERED)?,
            remembered_by_time: txn.open_table(REMEMBERED_BY_TIME)?,
            remembered_briefly_by_time: txn.open_table(REMEMBERED_BRIEFLY_BY_TIME)?,
            history: txn.open_table(HISTORY)?,
            history_by_token: txn.open_table(HISTORY_BY_TOKEN)?,
            scan_tokens: txn.open_table(SCAN_TOKENS)?,
            devices: txn.open_table(DEVICES)?,
            device_macs: txn.open_table(DEVICE_MACS)?,
            stats: StatsTables::open(txn)?,
            wrote: false,
        })
    }

    /// [`presence_ports::StatsStore::record`]: counts a decision into its venue's
    /// stats unless its scan id was counted in the last `keep_ms` milliseconds.
    pub(crate) fn count(&mut self, tally: &Tally, keep_ms: i64) -> Result<bool, StoreError> {
        let counted = self.stats.count(tally, keep_ms)?;
        self.wrote |= counted;
        Ok(counted)
    }

    /// [`presence_ports::TicketStore::commit`]: the first decision for a key wins,
    /// then the version check, then the write.
    pub(crate) fn commit(&mut self, commit: &Commit) -> Result<CommitOutcome, StoreError> {
        let key = commit.key.encode();
        let token = commit.key.token.as_str();
        if let Some(first) =
            get_json::<_, RememberedDecision>(&self.remembered, key.as_str(), "decision")?
        {
            return Ok(CommitOutcome::AlreadyDecided(first));
        }
        let current =
            get_json::<_, StateRecord>(&self.states, token, "token state")?.unwrap_or_default();
        if current.version != commit.expected_version {
            return Ok(CommitOutcome::Conflict);
        }
        let next = commit
            .next_state
            .as_ref()
            .map(|state| encode("token state", state))
            .transpose()?;
        let remembered = encode("decision", &commit.remembered)?;
        let history = commit
            .history
            .as_ref()
            .map(|record| encode("history record", record))
            .transpose()?;
        if let Some(next) = next {
            self.states
                .insert(token, next.as_slice())
                .map_err(unavailable)?;
        }
        self.remembered
            .insert(key.as_str(), remembered.as_slice())
            .map_err(unavailable)?;
        self.by_time(Kept::of(&commit.remembered))
            .insert((commit.remembered.decided_at, key.as_str()), ())
            .map_err(unavailable)?;
        if let (Some(history), Some(record)) = (history, &commit.history) {
            self.add_history(
                token,
                record.scan_id.as_str(),
                commit.remembered.decided_at,
                &history,
            )?;
        }
        self.wrote = true;
        Ok(CommitOutcome::Committed)
    }

    /// Adds one record (of the scan `scan_id`) to the token's history, indexes
    /// its scan id, and drops what is beyond the newest [`MAX_HISTORY_ENTRIES`].
    fn add_history(
        &mut self,
        token: &str,
        scan_id: &str,
        decided_at: UnixMillis,
        record: &[u8],
    ) -> Result<(), StoreError> {
        let sequence = self.next_id(HISTORY_SEQUENCE)?;
        self.history
            .insert((decided_at, sequence, token), record)
            .map_err(unavailable)?;
        self.history_by_token
            .insert((token, sequence), decided_at)
            .map_err(unavailable)?;
        self.scan_tokens
            .insert(scan_id, token)
            .map_err(unavailable)?;
        let beyond = self
            .history_by_token
            .range::<(&str, u64)>((token, 0)..=(token, u64::MAX))
            .map_err(unavailable)?
            .rev()
            .skip(MAX_HISTORY_ENTRIES)
            .map(|entry| entry.map(|(key, decided_at)| (key.value().1, decided_at.value())))
            .collect::<Result<Vec<_>, _>>()
            .map_err(unavailable)?;
        for (sequence, decided_at) in beyond {
            self.forget_record(decided_at, sequence, token)?;
        }
        Ok(())
    }

    /// Removes one history record, its place in its token's list and its scan
    /// id's index entry (named inside the record).
    fn forget_record(
        &mut self,
        decided_at: UnixMillis,
        sequence: u64,
        token: &str,
    ) -> Result<(), StoreError> {
        self.history_by_token
            .remove((token, sequence))
            .map_err(unavailable)?;
        let removed = self
            .history
            .remove((decided_at, sequence, token))
            .map_err(unavailable)?;
        // A record this store cannot read names no scan id to unindex: its
        // entry, if any, stays, and leads to a history without it.
        if let Some(scan_id) = removed.and_then(|record| recorded_scan_id(record.value())) {
            self.scan_tokens
                .remove(scan_id.as_str())
                .map_err(unavailable)?;
        }
        Ok(())
    }

    /// Forgets up to `limit` history records decided before `cutoff`, oldest
    /// first. Returns how many it removed.
    fn sweep_history(&mut self, cutoff: UnixMillis, limit: usize) -> Result<usize, StoreError> {
        let expired = self
            .history
            .range::<(i64, u64, &str)>(..(cutoff, 0, ""))
            .map_err(unavailable)?
            .take(limit)
            .map(|entry| {
                entry.map(|(key, _)| {
                    let (decided_at, sequence, token) = key.value();
                    (decided_at, sequence, token.to_owned())
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(unavailable)?;
        for (decided_at, sequence, token) in &expired {
            self.forget_record(*decided_at, *sequence, token)?;
        }
        Ok(expired.len())
    }

    /// [`presence_ports::DeviceStore::ensure_gate`].
    pub(crate) fn ensure_gate(
        &mut self,
        venue_id: &VenueId,
        name: &str,
    ) -> Result<Gate, StoreError> {
        if let Some(gate) = find_gate(&self.gate_names, &self.gates, venue_id, name)? {
            return Ok(gate);
        }
        let spec = GateSpec::unrestricted(venue_id.clone(), name);
        let bytes = encode("gate", &spec)?;
        let id = self.put_gate(&spec, &bytes)?;
        Ok(spec.with_id(id))
    }

    /// Stores a gate under its (venue, name) id, creating the id if the name is new.
    fn put_gate(&mut self, spec: &GateSpec, bytes: &[u8]) -> Result<GateId, StoreError> {
        let key = spec.key();
        let index = (spec.venue_id.as_str(), key.as_str());
        let existing = self
            .gate_names
            .get(index)
            .map_err(unavailable)?
            .map(|guard| guard.value());
        let id = match existing {
            Some(id) => id,
            None => {
                let id = self.next_id(GATE_SEQUENCE)?;
                self.gate_names.insert(index, id).map_err(unavailable)?;
                id
            }
        };
        self.gates.insert(id, bytes).map_err(unavailable)?;
        self.wrote = true;
        Ok(GateId::new(id))
    }

    /// [`presence_ports::DeviceStore::save_device`].
    pub(crate) fn save_device(&mut self, draft: DeviceDraft) -> Result<Device, StoreError> {
        let existing = self
            .device_macs
            .get((draft.venue_id.as_str(), draft.mac.as_str()))
            .map_err(unavailable)?
            .map(|guard| guard.value());
        let id = match existing {
            Some(id) => id,
            None => self.peek_next_id(DEVICE_SEQUENCE)?,
        };
        let device = draft.with_id(presence_domain::DeviceId::new(id));
        let bytes = encode("device", &device)?;
        if existing.is_none() {
            self.claim_id(DEVICE_SEQUENCE, id)?;
            self.device_macs
                .insert((device.venue_id.as_str(), device.mac.as_str()), id)
                .map_err(unavailable)?;
        }
        self.devices
            .insert(id, bytes.as_slice())
            .map_err(unavailable)?;
        self.wrote = true;
        Ok(device)
    }

    /// [`presence_ports::DeviceStore::revoke_device`]: in the writer, so that it
    /// is ordered with re-inits of the device.
    pub(crate) fn revoke_device(
        &mut self,
        venue_id: &presence_domain::VenueId,
        id: presence_domain::DeviceId,
    ) -> Result<Option<Device>, StoreError> {
        let found: Option<Device> = get_json(&self.devices, id.get(), "device")?;
        let Some(mut device) = found.filter(|device| &device.venue_id == venue_id) else {
            return Ok(None);
        };
        device.access.revoked = true;
        let bytes = encode("device", &device)?;
        self.devices
            .insert(id.get(), bytes.as_slice())
            .map_err(unavailable)?;
        self.wrote = true;
        Ok(Some(device))
    }

    /// [`presence_ports::InventoryStore::apply`]: later records of one id win.
    ///
    /// Tickets are inserted in token order, whatever order they came in: redb
    /// fills a leaf completely when keys arrive above everything already in the
    /// table, and splits it in half otherwise, so an upload applied in line order
    /// leaves the ticket table about half empty (measured: 267 MiB of pages for
    /// 141 MiB of tickets), and every page of it competes for the cache when scans
    /// read tickets. The sort is stable, so of two lines with one token the later
    /// still wins. Venues, events and gates are few and keep line order (gate ids
    /// are handed out in it).
    ///
    /// Values are encoded one at a time into one buffer rather than all up front,
    /// which held a second copy of the whole inventory. The encoding of these plain
    /// types cannot fail, but should it ever, it may do so after writes: it then
    /// abandons the batch ([`StoreError::Unavailable`]) so that no part of the
    /// inventory is committed.
    pub(crate) fn apply(&mut self, records: &[InventoryRecord]) -> Result<usize, StoreError> {
        let mut tickets = Vec::new();
        let mut bytes = Vec::new();
        for record in records {
            match record {
                InventoryRecord::Venue(venue) => {
                    encode_into(&mut bytes, "venue", venue)?;
                    self.venues
                        .insert(venue.id.as_str(), bytes.as_slice())
                        .map_err(unavailable)?;
                }
                InventoryRecord::Event(event) => {
                    encode_into(&mut bytes, "event", event)?;
                    self.events
                        .insert(event.id.as_str(), bytes.as_slice())
                        .map_err(unavailable)?;
                }
                InventoryRecord::Gate(spec) => {
                    encode_into(&mut bytes, "gate", spec)?;
                    self.put_gate(spec, &bytes)?;
                }
                InventoryRecord::Ticket(ticket) => tickets.push(ticket),
            }
        }
        tickets.sort_by(|a, b| a.token.as_str().cmp(b.token.as_str()));
        for ticket in tickets {
            encode_into(&mut bytes, "ticket", ticket)?;
            self.tickets
                .insert(ticket.token.as_str(), bytes.as_slice())
                .map_err(unavailable)?;
        }
        self.wrote |= !records.is_empty();
        Ok(records.len())
    }

    fn by_time(&mut self, kept: Kept) -> &mut Table<'t, (i64, &'static str), ()> {
        match kept {
            Kept::Long => &mut self.remembered_by_time,
            Kept::Briefly => &mut self.remembered_briefly_by_time,
        }
    }

    /// Forgets up to `limit` remembered decisions kept as `kept` and decided
    /// before `cutoff`, oldest first. Returns how many it removed.
    pub(crate) fn sweep(
        &mut self,
        kept: Kept,
        cutoff: UnixMillis,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let expired = self
            .by_time(kept)
            .range::<(i64, &str)>(..(cutoff, ""))
            .map_err(unavailable)?
            .take(limit)
            .map(|entry| {
                entry.map(|(key, _)| {
                    let (decided_at, scan_key) = key.value();
                    (decided_at, scan_key.to_owned())
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(unavailable)?;
        for (decided_at, scan_key) in &expired {
            self.by_time(kept)
                .remove((*decided_at, scan_key.as_str()))
                .map_err(unavailable)?;
            self.remembered
                .remove(scan_key.as_str())
                .map_err(unavailable)?;
        }
        // History records live as long as the decisions remembered for the
        // idempotency retention; an unknown token's (kept briefly) have none.
        let forgotten = match kept {
            Kept::Long => self.sweep_history(cutoff, limit)?,
            Kept::Briefly => 0,
        };
        self.wrote |= !expired.is_empty() || forgotten > 0;
        Ok(expired.len().max(forgotten))
    }

    fn next_id(&mut self, sequence: &str) -> Result<u64, StoreError> {
        let id = self.peek_next_id(sequence)?;
        self.claim_id(sequence, id)?;
        Ok(id)
    }

    /// The id a sequence hands out next; ids start at 1, so every id is positive.
    fn peek_next_id(&self, sequence: &str) -> Result<u64, StoreError> {
        let last = self
            .sequences
            .get(sequence)
            .map_err(unavailable)?
            .map_or(0, |guard| guard.value());
        // An exhausted sequence may be met after an inventory batch has already
        // written some records, so it must abandon the whole batch (Unavailable)
        // rather than fail one command (which would commit half an inventory).
        last.checked_add(1).ok_or_else(|| {
            StoreError::Unavailable(format!("the {sequence} id sequence is exhausted"))
        })
    }

    fn claim_id(&mut self, sequence: &str, id: u64) -> Result<(), StoreError> {
        self.sequences.insert(sequence, id).map_err(unavailable)?;
        Ok(())
    }
}

/// The venue's gate of that name (trimmed, case-insensitive), if stored.
pub(crate) fn find_gate(
    gate_names: &impl ReadableTable<(&'static str, &'static str), u64>,
    gates: &impl ReadableTable<u64, &'static [u8]>,
    venue_id: &VenueId,
    name: &str,
) -> Result<Option<Gate>, StoreError> {
    let key = gate_key(name);
    let id = gate_names
        .get((venue_id.as_str(), key.as_str()))
        .map_err(unavailable)?
        .map(|guard| guard.value());
    let Some(id) = id else {
        return Ok(None);
    };
    let spec = get_json::<_, GateSpec>(gates, id, "gate")?.ok_or_else(|| {
        StoreError::Corrupt(format!(
            "gate name '{key}' of venue '{venue_id}' points at missing gate {id}"
        ))
    })?;
    Ok(Some(spec.with_id(GateId::new(id))))
}
