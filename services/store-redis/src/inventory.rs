//! Inventory: which references exist, the apply (all or nothing on one server,
//! per slot in a cluster: see the crate doc) and the inventory size.

use crate::codec::{encode, encode_ticket};
use crate::connection::{Dialer, per_slot, slot_of};
use crate::keys::Counted;
use crate::{RedisStore, registry, store_error};
use presence_domain::inventory::{InventoryRecord, Reference};
use presence_domain::{GateId, VenueId};
use presence_ports::{InventorySize, StoreError};
use redis::aio::ConnectionLike;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{Pipeline, Value};
use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, HashSet};

/// Records sent per round trip of an inventory transaction, as one `MSET`: large
/// enough that a million tickets take a few hundred round trips, small enough
/// (about half a megabyte) not to hold the connection for long.
pub const APPLY_CHUNK: usize = 5_000;

/// Gate ids by venue and gate key, as [`gate_ids`] claims them.
type GateIds = HashMap<(VenueId, String), GateId>;

pub(crate) async fn stored(
    store: &RedisStore,
    references: &BTreeSet<Reference>,
) -> Result<HashSet<Reference>, StoreError> {
    if references.is_empty() {
        return Ok(HashSet::new());
    }
    let exists = references
        .iter()
        .map(|reference| {
            let key = match reference {
                Reference::Venue(id) => store.keys.venue(id),
                Reference::Event(id) => store.keys.event(id),
            };
            let mut exists = redis::cmd("EXISTS");
            exists.arg(key);
            exists
        })
        .collect();
    let found: Vec<bool> = store.conn.query_independent(exists).await?;
    Ok(references
        .iter()
        .zip(found)
        .filter(|(_, found)| *found)
        .map(|(reference, _)| reference.clone())
        .collect())
}

pub(crate) async fn apply(
    store: &RedisStore,
    records: Vec<InventoryRecord>,
) -> Result<usize, StoreError> {
    if records.is_empty() {
        return Ok(0);
    }
    let gate_ids = gate_ids(store, &records).await?;
    match &store.dialer {
        Dialer::Cluster(client) => {
            // A connection of its own, waiting up to the apply timeout, so that
            // the writes do not queue ahead of the scans on the shared one.
            let mut conn = client.get_async_connection().await.map_err(store_error)?;
            by_slot(store, &conn, &records, &gate_ids).await?;
            count_size(store, &mut conn, &records).await;
        }
        Dialer::Server(dialer) => {
            // A connection of its own: MULTI..EXEC must not interleave with other
            // callers' commands, and dropping it on any error makes Redis discard
            // the queue.
            let mut conn = dialer.connect(store.apply_timeout).await?;
            transaction(store, &mut conn, &records, &gate_ids).await?;
            count_size(store, &mut conn, &records).await;
        }
    }
    Ok(records.len())
}

/// One server: `MULTI`, the records as `MSET`s of [`APPLY_CHUNK`], `EXEC`.
async fn transaction(
    store: &RedisStore,
    conn: &mut impl ConnectionLike,
    records: &[InventoryRecord],
    gate_ids: &GateIds,
) -> Result<(), StoreError> {
    redis::cmd("MULTI")
        .query_async::<()>(conn)
        .await
        .map_err(store_error)?;
    let mut queued = 0;
    for chunk in records.chunks(APPLY_CHUNK) {
        let mut mset = redis::cmd("MSET");
        for record in chunk {
            mset.arg(key(store, record, gate_ids)?).arg(value(record)?);
        }
        mset.query_async::<()>(conn).await.map_err(store_error)?;
        queued += 1;
    }
    let replies: Value = redis::cmd("EXEC")
        .query_async(conn)
        .await
        .map_err(store_error)?;
    if !matches!(&replies, Value::Array(replies) if replies.len() == queued) {
        return Err(StoreError::Unavailable(format!(
            "the inventory transaction answered {replies:?} for {queued} writes"
        )));
    }
    Ok(())
}

/// A cluster, where a transaction cannot span slots: each slot's records as one
/// `MSET`, which Redis applies at once, [`crate::connection::SLOTS_IN_FLIGHT`]
/// slots at a time. A record repeated in the batch lands in one `MSET`, in
/// order, so the last one wins as in a transaction.
async fn by_slot(
    store: &RedisStore,
    conn: &ClusterConnection,
    records: &[InventoryRecord],
    gate_ids: &GateIds,
) -> Result<(), StoreError> {
    let mut slots: HashMap<Slot, Vec<usize>> = HashMap::new();
    for (index, record) in records.iter().enumerate() {
        let slot = Slot::for_key(key(store, record, gate_ids)?);
        slots.entry(slot).or_default().push(index);
    }
    // Encoded as they are sent, so that only the slots in flight are in memory twice.
    let msets = slots.into_values().map(|indices| {
        let mut mset = redis::cmd("MSET");
        for index in indices {
            let record = &records[index];
            mset.arg(key(store, record, gate_ids)?).arg(value(record)?);
        }
        let mut pipe = Pipeline::new();
        pipe.add_command(mset);
        Ok(((), pipe))
    });
    per_slot(conn, msets).await?;
    Ok(())
}

/// The key a record is stored under.
fn key(
    store: &RedisStore,
    record: &InventoryRecord,
    gate_ids: &GateIds,
) -> Result<String, StoreError> {
    Ok(match record {
        InventoryRecord::Venue(venue) => store.keys.venue(&venue.id),
        InventoryRecord::Event(event) => store.keys.event(&event.id),
        InventoryRecord::Ticket(ticket) => store.keys.ticket(&ticket.token),
        InventoryRecord::Gate(spec) => {
            let id = gate_ids
                .get(&(spec.venue_id.clone(), spec.key()))
                .copied()
                .ok_or_else(|| StoreError::Corrupt(format!("gate {:?} got no id", spec.name)))?;
            store.keys.gate(id)
        }
    })
}

/// The value a record is stored as.
fn value(record: &InventoryRecord) -> Result<Vec<u8>, StoreError> {
    match record {
        InventoryRecord::Venue(venue) => encode("venue", venue),
        InventoryRecord::Event(event) => encode("event", event),
        InventoryRecord::Ticket(ticket) => encode_ticket(ticket),
        InventoryRecord::Gate(spec) => encode("gate", spec),
    }
}

/// Counts the applied records into the inventory size, after the transaction:
/// inside, its `PFADD`s would lengthen the `EXEC` that scans wait behind, for a
/// figure that is an estimate anyway. If this fails the size lags until the next
/// apply of those records; the records themselves are applied.
async fn count_size(
    store: &RedisStore,
    conn: &mut impl ConnectionLike,
    records: &[InventoryRecord],
) {
    // A pipeline per HyperLogLog: each is a key of its own, and a cluster takes
    // a pipeline only when its keys share a slot.
    let mut pipes: HashMap<Slot, Pipeline> = HashMap::new();
    for chunk in records.chunks(APPLY_CHUNK) {
        for update in size_updates(store, chunk) {
            pipes
                .entry(slot_of(&update))
                .or_default()
                .add_command(update)
                .ignore();
        }
    }
    for pipe in pipes.into_values() {
        if let Err(error) = pipe.query_async::<()>(conn).await {
            tracing::warn!(%error, "inventory applied, but not counted in the inventory size");
            return;
        }
    }
}

/// `PFADD`s counting the chunk's venues, events and tickets into the inventory
/// size.
fn size_updates(store: &RedisStore, chunk: &[InventoryRecord]) -> Vec<redis::Cmd> {
    let (mut venues, mut events, mut tickets) = (Vec::new(), Vec::new(), Vec::new());
    for record in chunk {
        match record {
            InventoryRecord::Venue(venue) => venues.push(venue.id.as_str()),
            InventoryRecord::Event(event) => events.push(event.id.as_str()),
            InventoryRecord::Ticket(ticket) => tickets.push(ticket.token.as_str()),
            InventoryRecord::Gate(_) => {}
        }
    }
    [
        (Counted::Venues, venues),
        (Counted::Events, events),
        (Counted::Tickets, tickets),
    ]
    .into_iter()
    .filter(|(_, ids)| !ids.is_empty())
    .map(|(counted, ids)| {
        let mut pfadd = redis::cmd("PFADD");
        pfadd.arg(store.keys.inventory_size(counted)).arg(ids);
        pfadd
    })
    .collect()
}

pub(crate) async fn size(store: &RedisStore) -> Result<InventorySize, StoreError> {
    let counts = [Counted::Venues, Counted::Events, Counted::Tickets].map(|counted| {
        let mut pfcount = redis::cmd("PFCOUNT");
        pfcount.arg(store.keys.inventory_size(counted));
        pfcount
    });
    let (venues, events, tickets): (u64, u64, u64) =
        store.conn.query_independent(counts.into()).await?;
    Ok(InventorySize {
        venues,
        events,
        tickets,
    })
}

/// The id of every gate the records name, claiming ids for new names (the one
/// write made before the transaction, see the crate doc).
async fn gate_ids(
    store: &RedisStore,
    records: &[InventoryRecord],
) -> Result<HashMap<(VenueId, String), GateId>, StoreError> {
    let mut ids = HashMap::new();
    for record in records {
        if let InventoryRecord::Gate(spec) = record
            && let Entry::Vacant(vacant) = ids.entry((spec.venue_id.clone(), spec.key()))
        {
            let (id, _) = registry::gate_id(store, &spec.venue_id, &spec.name).await?;
            vacant.insert(id);
        }
    }
    Ok(ids)
}
