//! The live view of a venue, as `GET venues/{venueId}/stats` asks for it.

use presence_domain::time::unix_millis;
use presence_domain::{VenueId, VenueStats};
use presence_ports::{DeviceStore, StatsStore, StoreError, Stores};
use std::sync::Arc;

/// Answers stats queries: the counters of a venue the store knows. Cheap to clone.
#[derive(Clone)]
pub struct StatsView {
    devices: Arc<dyn DeviceStore>,
    stats: Arc<dyn StatsStore>,
}

impl std::fmt::Debug for StatsView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsView").finish_non_exhaustive()
    }
}

impl StatsView {
    pub fn new(stores: &Stores, stats: Arc<dyn StatsStore>) -> Self {
        Self {
            devices: stores.devices.clone(),
            stats,
        }
    }

    /// `None` for a venue the inventory does not hold (404, as device/init);
    /// a known venue without decisions has zero counts.
    ///
    /// Each gate is named as stored for its id (the name it was created with, or
    /// its inventory record's), not as scanners sent it: the sent name is free
    /// text. The stats store's record of the sent name shows only for a gate
    /// that is no longer stored. One read per gate, at most the venue's gate cap.
    pub async fn venue_stats(&self, venue_id: &VenueId) -> Result<Option<VenueStats>, StoreError> {
        if self.devices.venue(venue_id).await?.is_none() {
            return Ok(None);
        }
        let mut stats = self.stats.venue_stats(venue_id).await?;
        for gate in &mut stats.gates {
            if let Some(stored) = self.devices.gate(gate.gate_id).await?
                && &stored.spec.venue_id == venue_id
            {
                gate.name = stored.spec.name;
            }
        }
        stats.doors_open = self.doors_open(&stats).await?;
        Ok(Some(stats))
    }

    /// Whether one of the events the venue's counted scans named has its doors
    /// open now (doorsOpen ≤ now ≤ endsAt): the board warns of a silent scanner
    /// only then. Events nobody scanned a ticket of yet are not looked at; the
    /// stores know no list of a venue's events. One read per event with scans.
    async fn doors_open(&self, stats: &VenueStats) -> Result<bool, StoreError> {
        let now = unix_millis(std::time::SystemTime::now());
        for counted in &stats.events {
            if let Some(event) = self.devices.event(&counted.event_id).await?
                && event.venue_id == stats.venue_id
                && event.doors_open <= now
                && now <= event.ends_at
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
