//! Venues, gates and devices, and how a new gate or device claims its id.

use crate::codec::{decode_opt, encode};
use crate::connection::Connection;
use crate::keys::Sequence;
use crate::{RedisStore, store_error};
use presence_domain::device::gate_key;
use presence_domain::{
    Device, DeviceId, Event, EventId, Gate, GateId, GateSpec, Mac, Venue, VenueId,
};
use presence_ports::{DeviceDraft, StoreError, VenueCounts};

async fn get(conn: &mut Connection, key: String) -> Result<Option<Vec<u8>>, StoreError> {
    redis::cmd("GET")
        .arg(key)
        .query_async(conn)
        .await
        .map_err(store_error)
}

async fn index_get(
    conn: &mut Connection,
    index: String,
    field: &str,
) -> Result<Option<u64>, StoreError> {
    redis::cmd("HGET")
        .arg(index)
        .arg(field)
        .query_async(conn)
        .await
        .map_err(store_error)
}

pub(crate) async fn venue(store: &RedisStore, id: &VenueId) -> Result<Option<Venue>, StoreError> {
    decode_opt("venue", get(&mut store.conn(), store.keys.venue(id)).await?)
}

pub(crate) async fn event(store: &RedisStore, id: &EventId) -> Result<Option<Event>, StoreError> {
    decode_opt("event", get(&mut store.conn(), store.keys.event(id)).await?)
}

pub(crate) async fn gate(store: &RedisStore, id: GateId) -> Result<Option<Gate>, StoreError> {
    let spec: Option<GateSpec> =
        decode_opt("gate", get(&mut store.conn(), store.keys.gate(id)).await?)?;
    Ok(spec.map(|spec| spec.with_id(id)))
}

pub(crate) async fn device(store: &RedisStore, id: DeviceId) -> Result<Option<Device>, StoreError> {
    decode_opt(
        "device",
        get(&mut store.conn(), store.keys.device(id)).await?,
    )
}

/// Reads the device and writes it back revoked. Not atomic with a re-init
/// racing it (GET then SET): the later write wins, and when that is this one
/// the device stays revoked with its old secret, so the race errs on the safe
/// side (the port documents it).
pub(crate) async fn revoke_device(
    store: &RedisStore,
    venue_id: &VenueId,
    id: DeviceId,
) -> Result<Option<Device>, StoreError> {
    let Some(mut device) = device(store, id)
        .await?
        .filter(|device| &device.venue_id == venue_id)
    else {
        return Ok(None);
    };
    device.access.revoked = true;
    redis::cmd("SET")
        .arg(store.keys.device(id))
        .arg(encode("device", &device)?)
        .query_async::<()>(&mut store.conn())
        .await
        .map_err(store_error)?;
    Ok(Some(device))
}

/// The gate an index entry names; its value is written before the entry, so a
/// missing one means the data was damaged.
async fn indexed_gate(store: &RedisStore, id: u64) -> Result<Gate, StoreError> {
    gate(store, GateId::new(id)).await?.ok_or_else(|| {
        StoreError::Corrupt(format!("a gate name index points at missing gate {id}"))
    })
}

pub(crate) async fn gate_by_name(
    store: &RedisStore,
    venue_id: &VenueId,
    name: &str,
) -> Result<Option<Gate>, StoreError> {
    let index = store.keys.gate_names(venue_id);
    match index_get(&mut store.conn(), index, &gate_key(name)).await? {
        Some(id) => indexed_gate(store, id).await.map(Some),
        None => Ok(None),
    }
}

/// The lengths of the venue's gate-name and MAC indexes (`HLEN`, constant time).
pub(crate) async fn venue_counts(
    store: &RedisStore,
    venue_id: &VenueId,
) -> Result<VenueCounts, StoreError> {
    let hlen = |index: String| {
        let mut hlen = redis::cmd("HLEN");
        hlen.arg(index);
        hlen
    };
    let (gates, devices): (u64, u64) = store
        .conn
        .query_independent(vec![
            hlen(store.keys.gate_names(venue_id)),
            hlen(store.keys.device_macs(venue_id)),
        ])
        .await?;
    Ok(VenueCounts { gates, devices })
}

/// The id the venue's gate of that name has, creating the gate (unrestricted) if
/// the name is new. Returns the id and whether this call created it.
pub(crate) async fn gate_id(
    store: &RedisStore,
    venue_id: &VenueId,
    name: &str,
) -> Result<(GateId, bool), StoreError> {
    let index = store.keys.gate_names(venue_id);
    let key = gate_key(name);
    if let Some(id) = index_get(&mut store.conn(), index.clone(), &key).await? {
        return Ok((GateId::new(id), false));
    }
    let spec = encode("gate", &GateSpec::unrestricted(venue_id.clone(), name))?;
    let claim = claim(
        store,
        Sequence::Gate,
        &index,
        &key,
        |id| store.keys.gate(GateId::new(id)),
        |_| Ok(spec.clone()),
    )
    .await?;
    Ok(match claim {
        Claim::Created(id) => (GateId::new(id), true),
        Claim::Existing(id) => (GateId::new(id), false),
    })
}

pub(crate) async fn ensure_gate(
    store: &RedisStore,
    venue_id: &VenueId,
    name: &str,
) -> Result<Gate, StoreError> {
    let (id, created) = gate_id(store, venue_id, name).await?;
    if created {
        return Ok(GateSpec::unrestricted(venue_id.clone(), name).with_id(id));
    }
    indexed_gate(store, id.get()).await
}

pub(crate) async fn save_device(
    store: &RedisStore,
    draft: DeviceDraft,
) -> Result<Device, StoreError> {
    let index = store.keys.device_macs(&draft.venue_id);
    let mac = draft.mac.as_str().to_owned();
    let existing = index_get(&mut store.conn(), index.clone(), &mac).await?;
    let id = match existing {
        Some(id) => id,
        None => {
            let claim = claim(
                store,
                Sequence::Device,
                &index,
                &mac,
                |id| store.keys.device(DeviceId::new(id)),
                |id| encode("device", &draft.clone().with_id(DeviceId::new(id))),
            )
            .await?;
            match claim {
                Claim::Created(id) => return Ok(draft.with_id(DeviceId::new(id))),
                Claim::Existing(id) => id,
            }
        }
    };
    // A re-init keeps the id and replaces the rest (last write wins).
    let device = draft.with_id(DeviceId::new(id));
    redis::cmd("SET")
        .arg(store.keys.device(device.id))
        .arg(encode("device", &device)?)
        .query_async::<()>(&mut store.conn())
        .await
        .map_err(store_error)?;
    Ok(device)
}

pub(crate) async fn device_by_mac(
    store: &RedisStore,
    venue_id: &VenueId,
    mac: &Mac,
) -> Result<Option<Device>, StoreError> {
    let index = store.keys.device_macs(venue_id);
    match index_get(&mut store.conn(), index, mac.as_str()).await? {
        Some(id) => device(store, DeviceId::new(id)).await,
        None => Ok(None),
    }
}

enum Claim {
    /// This call's id is now in the index.
    Created(u64),
    /// Someone else's id was there first.
    Existing(u64),
}

/// Puts a new id under `field` of the `index` hash unless an id is already there:
/// writes `value(id)` under `value_key(id)` for a fresh id from `sequence`, then
/// offers the id with HSETNX (see the crate doc). The value goes first, and the
/// offer only once it is written, so that no reader of the index finds an id
/// without its value (the two keys may live on different cluster nodes).
async fn claim(
    store: &RedisStore,
    sequence: Sequence,
    index: &str,
    field: &str,
    value_key: impl Fn(u64) -> String,
    value: impl Fn(u64) -> Result<Vec<u8>, StoreError>,
) -> Result<Claim, StoreError> {
    let mut conn = store.conn();
    let id: u64 = redis::cmd("INCR")
        .arg(store.keys.sequence(sequence))
        .query_async(&mut conn)
        .await
        .map_err(store_error)?;
    let key = value_key(id);
    redis::cmd("SET")
        .arg(&key)
        .arg(value(id)?)
        .query_async::<()>(&mut conn)
        .await
        .map_err(store_error)?;
    let won: bool = redis::cmd("HSETNX")
        .arg(index)
        .arg(field)
        .arg(id)
        .query_async(&mut conn)
        .await
        .map_err(store_error)?;
    if won {
        return Ok(Claim::Created(id));
    }
    let mut del = redis::cmd("DEL");
    del.arg(&key);
    let mut hget = redis::cmd("HGET");
    hget.arg(index).arg(field);
    let ((), winner): ((), Option<u64>) = conn.query_independent(vec![del, hget]).await?;
    winner.map(Claim::Existing).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "the index entry {field:?} vanished after HSETNX refused"
        ))
    })
}
