//! [`StatsStore`]: the venues' live counters, one hash per venue, counted by
//! `lua/stats.lua` once per scan id, with the board's minute buckets (a hash
//! per venue and minute, expiring when the board no longer shows it) and the
//! devices' latest scans (a hash per venue).

use crate::{RedisStore, store_error};
use async_trait::async_trait;
use presence_domain::stats::{MINUTE_MS, minute_of, oldest_kept_minute};
use presence_domain::time::unix_millis;
use presence_domain::{DeviceActivity, DeviceId, GateId, Tally, UnixMillis, VenueId, VenueStats};
use presence_ports::{StatsStore, StoreError};
use redis::Script;
use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::SystemTime;

/// Built once: `invoke_async` sends only the hash (EVALSHA) and loads the
/// source again if Redis answers NOSCRIPT.
static STATS_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/stats.lua")));

#[async_trait]
impl StatsStore for RedisStore {
    async fn record(&self, tally: &Tally) -> Result<bool, StoreError> {
        let venue = &tally.venue_id;
        let minute = tally.entry_minute();
        // A minute is dropped once no longer kept: the board shows BOARD_MINUTES
        // before the current one.
        let minute_expires = minute.map_or(String::new(), |minute| {
            (minute + (BOARD_MINUTES_KEPT + 1) * MINUTE_MS).to_string()
        });
        let mut invocation = STATS_SCRIPT.prepare_invoke();
        invocation
            .key(self.keys.stats_seen(venue, &tally.scan_id))
            .key(self.keys.stats_counters(venue))
            .key(self.keys.stats_gate_names(venue))
            .key(self.keys.stats_updated(venue))
            .key(self.keys.stats_devices(venue))
            .key(
                self.keys
                    .stats_minute(venue, minute.unwrap_or_else(|| minute_of(tally.decided_at))),
            )
            .arg(self.retention_ms_for(tally.is_remembered_briefly()))
            .arg(tally.delta())
            .arg(tally.gate_id.get())
            .arg(&tally.gate_name)
            .arg(tally.decided_at)
            .arg(tally.device_id.get())
            .arg(minute_expires);
        for field in tally.fields() {
            invocation.arg(field);
        }
        let counted: i64 = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        Ok(counted == 1)
    }

    async fn venue_stats(&self, venue_id: &VenueId) -> Result<VenueStats, StoreError> {
        let now = unix_millis(SystemTime::now());
        let minutes: Vec<UnixMillis> = (0..=BOARD_MINUTES_KEPT)
            .map(|n| oldest_kept_minute(now) + n * MINUTE_MS)
            .collect();
        // One pipeline even in a cluster: the keys share the venue's hash tag.
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL")
            .arg(self.keys.stats_counters(venue_id))
            .cmd("HGETALL")
            .arg(self.keys.stats_gate_names(venue_id))
            .cmd("GET")
            .arg(self.keys.stats_updated(venue_id))
            .cmd("HGETALL")
            .arg(self.keys.stats_devices(venue_id));
        for minute in &minutes {
            pipe.cmd("HGETALL")
                .arg(self.keys.stats_minute(venue_id, *minute));
        }
        let mut replies: Vec<redis::Value> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        let minute_replies = replies.split_off(4.min(replies.len()));
        let [counters, names, updated_at, devices]: [redis::Value; 4] = replies
            .try_into()
            .map_err(|_| StoreError::Corrupt("a stats pipeline reply is short".into()))?;
        let counters: HashMap<String, u64> = from_reply(counters)?;
        let names: HashMap<u64, String> = from_reply(names)?;
        let updated_at: Option<i64> = from_reply(updated_at)?;
        let devices: HashMap<u64, String> = from_reply(devices)?;
        let mut buckets = Vec::new();
        for (minute, reply) in minutes.iter().zip(minute_replies) {
            let gates: HashMap<u64, u64> = from_reply(reply)?;
            buckets.extend(
                gates
                    .into_iter()
                    .map(|(gate, people)| (GateId::new(gate), *minute, people)),
            );
        }
        let devices = devices
            .into_iter()
            .map(|(device, latest)| device_activity(device, &latest))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(VenueStats::from_fields(
            venue_id.clone(),
            updated_at,
            counters
                .iter()
                .map(|(field, count)| (field.as_str(), *count)),
            names
                .into_iter()
                .map(|(gate, name)| (GateId::new(gate), name)),
        )
        .map_err(|error| StoreError::Corrupt(error.to_string()))?
        .with_minutes(now, buckets)
        .with_devices(devices))
    }
}

/// Minutes kept before the current one: the board's, so a bucket is read
/// complete until it leaves the board.
const BOARD_MINUTES_KEPT: i64 = presence_domain::stats::BOARD_MINUTES;

fn from_reply<T: redis::FromRedisValue>(value: redis::Value) -> Result<T, StoreError> {
    redis::from_redis_value(value).map_err(|error| StoreError::Corrupt(error.to_string()))
}

/// A device's `<decision time>:<gate id>` entry, as `lua/stats.lua` writes it.
fn device_activity(device: u64, latest: &str) -> Result<DeviceActivity, StoreError> {
    let corrupt = || StoreError::Corrupt(format!("device {device}'s latest scan '{latest}'"));
    let (at, gate) = latest.split_once(':').ok_or_else(corrupt)?;
    Ok(DeviceActivity {
        device_id: DeviceId::new(device),
        gate_id: GateId::new(gate.parse().map_err(|_| corrupt())?),
        last_scan_at: at.parse().map_err(|_| corrupt())?,
    })
}
