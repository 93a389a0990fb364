//! The live view of a venue, as `GET venues/{venueId}/stats` asks for it.

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
    pub async fn venue_stats(&self, venue_id: &VenueId) -> Result<Option<VenueStats>, StoreError> {
        if self.devices.venue(venue_id).await?.is_none() {
            return Ok(None);
        }
        self.stats.venue_stats(venue_id).await.map(Some)
    }
}
