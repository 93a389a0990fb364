//! [`StatsStore`]: the venues' live counters, one hash per venue, counted by
//! `lua/stats.lua` once per scan id.

use crate::{RedisStore, store_error};
use async_trait::async_trait;
use presence_domain::{GateId, Tally, VenueId, VenueStats};
use presence_ports::{StatsStore, StoreError};
use redis::Script;
use std::collections::HashMap;
use std::sync::LazyLock;

/// Built once: `invoke_async` sends only the hash (EVALSHA) and loads the
/// source again if Redis answers NOSCRIPT.
static STATS_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/stats.lua")));

#[async_trait]
impl StatsStore for RedisStore {
    async fn record(&self, tally: &Tally) -> Result<bool, StoreError> {
        let venue = &tally.venue_id;
        let mut invocation = STATS_SCRIPT.prepare_invoke();
        invocation
            .key(self.keys.stats_seen(venue, &tally.scan_id))
            .key(self.keys.stats_counters(venue))
            .key(self.keys.stats_gate_names(venue))
            .key(self.keys.stats_updated(venue))
            .arg(self.retention_ms_for(tally.is_remembered_briefly()))
            .arg(tally.amount)
            .arg(tally.gate_id.get())
            .arg(&tally.gate_name)
            .arg(tally.decided_at);
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
        // One pipeline even in a cluster: the keys share the venue's hash tag.
        let (counters, names, updated_at): (
            HashMap<String, u64>,
            HashMap<u64, String>,
            Option<i64>,
        ) = redis::pipe()
            .cmd("HGETALL")
            .arg(self.keys.stats_counters(venue_id))
            .cmd("HGETALL")
            .arg(self.keys.stats_gate_names(venue_id))
            .cmd("GET")
            .arg(self.keys.stats_updated(venue_id))
            .query_async(&mut self.conn())
            .await
            .map_err(store_error)?;
        VenueStats::from_fields(
            venue_id.clone(),
            updated_at,
            counters
                .iter()
                .map(|(field, count)| (field.as_str(), *count)),
            names
                .into_iter()
                .map(|(gate, name)| (GateId::new(gate), name)),
        )
        .map_err(|error| StoreError::Corrupt(error.to_string()))
    }
}
