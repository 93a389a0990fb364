//! Reads, each in its own read transaction (a consistent snapshot that never waits
//! for the writer).

use crate::tables::{
    DEVICE_MACS, DEVICES, EVENTS, GATE_NAMES, GATES, HISTORY, HISTORY_BY_TOKEN, REMEMBERED,
    SCAN_TOKENS, STATES, TICKETS, VENUES, find_gate, get_json, unavailable,
};
use presence_domain::inventory::Reference;
use presence_domain::{
    Device, DeviceId, Event, EventId, Gate, GateId, GateSpec, Mac, ScanId, ScanKey, ScanRecord,
    Ticket, Token, Venue, VenueId,
};
use presence_ports::{InventorySize, ScanContext, StoreError, TicketHistory, VenueCounts};
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTableMetadata, TableDefinition};
use std::collections::{BTreeSet, HashSet};

fn begin(db: &Database) -> Result<ReadTransaction, StoreError> {
    db.begin_read().map_err(unavailable)
}

fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    definition: TableDefinition<K, V>,
) -> Result<redb::ReadOnlyTable<K, V>, StoreError> {
    txn.open_table(definition).map_err(unavailable)
}

pub(crate) fn scan_context(
    db: &Database,
    key: &ScanKey,
    gate_id: GateId,
) -> Result<ScanContext, StoreError> {
    let txn = begin(db)?;
    let token = key.token.as_str();
    let ticket: Option<Ticket> = get_json(&table(&txn, TICKETS)?, token, "ticket")?;
    let event: Option<Event> = match &ticket {
        Some(ticket) => get_json(&table(&txn, EVENTS)?, ticket.event_id.as_str(), "event")?,
        None => None,
    };
    let gate = get_json::<_, GateSpec>(&table(&txn, GATES)?, gate_id.get(), "gate")?
        .map(|spec| spec.with_id(gate_id));
    let state = get_json(&table(&txn, STATES)?, token, "token state")?.unwrap_or_default();
    let remembered = get_json(&table(&txn, REMEMBERED)?, key.encode().as_str(), "decision")?;
    Ok(ScanContext {
        ticket,
        event,
        gate,
        state,
        remembered,
    })
}

/// [`presence_ports::TicketStore::scan_token`].
pub(crate) fn scan_token(db: &Database, scan_id: &ScanId) -> Result<Option<Token>, StoreError> {
    let txn = begin(db)?;
    Ok(table(&txn, SCAN_TOKENS)?
        .get(scan_id.as_str())
        .map_err(unavailable)?
        .map(|token| Token::new(token.value())))
}

/// [`presence_ports::TicketStore::ticket_history`], from one snapshot.
pub(crate) fn ticket_history(
    db: &Database,
    token: &Token,
    limit: usize,
) -> Result<TicketHistory, StoreError> {
    let txn = begin(db)?;
    let token = token.as_str();
    let ticket: Option<Ticket> = get_json(&table(&txn, TICKETS)?, token, "ticket")?;
    let event: Option<Event> = match &ticket {
        Some(ticket) => get_json(&table(&txn, EVENTS)?, ticket.event_id.as_str(), "event")?,
        None => None,
    };
    let state = get_json(&table(&txn, STATES)?, token, "token state")?.unwrap_or_default();
    let records = table(&txn, HISTORY)?;
    let scans = table(&txn, HISTORY_BY_TOKEN)?
        .range::<(&str, u64)>((token, 0)..=(token, u64::MAX))
        .map_err(unavailable)?
        .rev()
        .take(limit)
        .map(|entry| {
            let (key, decided_at) = entry.map_err(unavailable)?;
            let sequence = key.value().1;
            get_json::<_, ScanRecord>(
                &records,
                (decided_at.value(), sequence, token),
                "history record",
            )?
            .ok_or_else(|| {
                StoreError::Corrupt(format!("history record {sequence} is indexed but missing"))
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(TicketHistory {
        ticket,
        event,
        state,
        scans,
    })
}

pub(crate) fn venue(db: &Database, id: &VenueId) -> Result<Option<Venue>, StoreError> {
    get_json(&table(&begin(db)?, VENUES)?, id.as_str(), "venue")
}

pub(crate) fn event(db: &Database, id: &EventId) -> Result<Option<Event>, StoreError> {
    get_json(&table(&begin(db)?, EVENTS)?, id.as_str(), "event")
}

pub(crate) fn gate(db: &Database, id: GateId) -> Result<Option<Gate>, StoreError> {
    let spec: Option<GateSpec> = get_json(&table(&begin(db)?, GATES)?, id.get(), "gate")?;
    Ok(spec.map(|spec| spec.with_id(id)))
}

pub(crate) fn gate_by_name(
    db: &Database,
    venue_id: &VenueId,
    name: &str,
) -> Result<Option<Gate>, StoreError> {
    let txn = begin(db)?;
    find_gate(
        &table(&txn, GATE_NAMES)?,
        &table(&txn, GATES)?,
        venue_id,
        name,
    )
}

/// Counts the venue's entries of the two (venue, …) indexes: a range scan of at
/// most the venue's cap, done only when device/init checks a cap.
pub(crate) fn venue_counts(db: &Database, venue_id: &VenueId) -> Result<VenueCounts, StoreError> {
    let txn = begin(db)?;
    let venue = venue_id.as_str();
    let count = |index: &redb::ReadOnlyTable<(&'static str, &'static str), u64>| {
        let mut count = 0u64;
        for entry in index
            .range::<(&str, &str)>((venue, "")..)
            .map_err(unavailable)?
        {
            let (key, _) = entry.map_err(unavailable)?;
            if key.value().0 != venue {
                break;
            }
            count += 1;
        }
        Ok::<_, StoreError>(count)
    };
    Ok(VenueCounts {
        gates: count(&table(&txn, GATE_NAMES)?)?,
        devices: count(&table(&txn, DEVICE_MACS)?)?,
    })
}

pub(crate) fn device(db: &Database, id: DeviceId) -> Result<Option<Device>, StoreError> {
    get_json(&table(&begin(db)?, DEVICES)?, id.get(), "device")
}

pub(crate) fn device_by_mac(
    db: &Database,
    venue_id: &VenueId,
    mac: &Mac,
) -> Result<Option<Device>, StoreError> {
    let txn = begin(db)?;
    let id = table(&txn, DEVICE_MACS)?
        .get((venue_id.as_str(), mac.as_str()))
        .map_err(unavailable)?
        .map(|guard| guard.value());
    match id {
        Some(id) => get_json(&table(&txn, DEVICES)?, id, "device"),
        None => Ok(None),
    }
}

pub(crate) fn stored(
    db: &Database,
    references: &BTreeSet<Reference>,
) -> Result<HashSet<Reference>, StoreError> {
    let txn = begin(db)?;
    let venues = table(&txn, VENUES)?;
    let events = table(&txn, EVENTS)?;
    let mut found = HashSet::new();
    for reference in references {
        let present = match reference {
            Reference::Venue(id) => venues.get(id.as_str()),
            Reference::Event(id) => events.get(id.as_str()),
        }
        .map_err(unavailable)?
        .is_some();
        if present {
            found.insert(reference.clone());
        }
    }
    Ok(found)
}

pub(crate) fn size(db: &Database) -> Result<InventorySize, StoreError> {
    let txn = begin(db)?;
    let len = |result: Result<u64, redb::StorageError>| result.map_err(unavailable);
    Ok(InventorySize {
        venues: len(table(&txn, VENUES)?.len())?,
        events: len(table(&txn, EVENTS)?.len())?,
        tickets: len(table(&txn, TICKETS)?.len())?,
    })
}
