//! Inventory: which references exist, and the all-or-nothing apply (see the crate
//! doc for how it streams one transaction).

use crate::codec::{encode, encode_ticket};
use crate::{CONNECT_TIMEOUT, RedisStore, registry, store_error};
use presence_domain::inventory::{InventoryRecord, Reference};
use presence_domain::{GateId, VenueId};
use presence_ports::StoreError;
use redis::{AsyncConnectionConfig, Value};
use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, HashSet};

/// Records sent per round trip of an inventory transaction, as one `MSET`: large
/// enough that a million tickets take a few hundred round trips, small enough
/// (about half a megabyte) not to hold the connection for long.
pub const APPLY_CHUNK: usize = 5_000;

pub(crate) async fn stored(
    store: &RedisStore,
    references: &BTreeSet<Reference>,
) -> Result<HashSet<Reference>, StoreError> {
    if references.is_empty() {
        return Ok(HashSet::new());
    }
    let mut pipe = redis::pipe();
    for reference in references {
        let key = match reference {
            Reference::Venue(id) => store.keys.venue(id),
            Reference::Event(id) => store.keys.event(id),
        };
        pipe.cmd("EXISTS").arg(key);
    }
    let found: Vec<bool> = pipe
        .query_async(&mut store.conn())
        .await
        .map_err(store_error)?;
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
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(store.apply_timeout));
    // A connection of its own: MULTI..EXEC must not interleave with other callers'
    // commands, and dropping it on any error makes Redis discard the queue.
    let mut conn = store
        .client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(store_error)?;
    redis::cmd("MULTI")
        .query_async::<()>(&mut conn)
        .await
        .map_err(store_error)?;
    let mut queued = 0;
    for chunk in records.chunks(APPLY_CHUNK) {
        let mut mset = redis::cmd("MSET");
        for record in chunk {
            let (key, value) = match record {
                InventoryRecord::Venue(venue) => {
                    (store.keys.venue(&venue.id), encode("venue", venue)?)
                }
                InventoryRecord::Event(event) => {
                    (store.keys.event(&event.id), encode("event", event)?)
                }
                InventoryRecord::Ticket(ticket) => {
                    (store.keys.ticket(&ticket.token), encode_ticket(ticket)?)
                }
                InventoryRecord::Gate(spec) => {
                    let id = gate_ids
                        .get(&(spec.venue_id.clone(), spec.key()))
                        .copied()
                        .ok_or_else(|| {
                            StoreError::Corrupt(format!("gate {:?} got no id", spec.name))
                        })?;
                    (store.keys.gate(id), encode("gate", spec)?)
                }
            };
            mset.arg(key).arg(value);
        }
        mset.query_async::<()>(&mut conn)
            .await
            .map_err(store_error)?;
        queued += 1;
    }
    let replies: Value = redis::cmd("EXEC")
        .query_async(&mut conn)
        .await
        .map_err(store_error)?;
    match replies {
        Value::Array(replies) if replies.len() == queued => Ok(records.len()),
        other => Err(StoreError::Unavailable(format!(
            "the inventory transaction answered {other:?} for {queued} writes"
        ))),
    }
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
