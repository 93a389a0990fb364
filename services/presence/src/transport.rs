//! The in-process transport: a request is a function call. Every decision is
//! counted into the venue stats on its way to the decisions stream
//! ([`CountedDecisions`]), before the scan is answered.

use async_trait::async_trait;
use presence_domain::inventory::{LineError, NumberedRecord};
use presence_domain::{Device, DeviceInitRequest, DeviceLookup, VenueId, VenueStats};
use presence_ports::in_process::CountedDecisions;
use presence_ports::{
    Answer, DecisionSink, DeviceInitOutcome, InventoryOutcome, ScanCommand, StatsStore, Stores,
    Transport, TransportError,
};
use presence_registry::{Registry, StatsView, VenueCaps};
use presence_validator::{InventoryApplier, Validator};
use std::sync::Arc;

/// Calls the validator, registry and inventory applier of this process.
#[derive(Debug, Clone)]
pub struct InProcessTransport {
    validator: Validator,
    registry: Registry,
    inventory: InventoryApplier,
    stats: StatsView,
    stores: Stores,
}

impl InProcessTransport {
    pub fn new(
        stores: Stores,
        stats: Arc<dyn StatsStore>,
        decisions: Arc<dyn DecisionSink>,
        caps: VenueCaps,
    ) -> Self {
        let counted = Arc::new(CountedDecisions::new(stats.clone(), decisions));
        Self {
            validator: Validator::new(&stores, counted),
            registry: Registry::new(&stores, caps),
            inventory: InventoryApplier::new(&stores),
            stats: StatsView::new(&stores, stats),
            stores,
        }
    }

    /// The inventory-size gauge, for `/metrics`.
    pub fn inventory_size(&self) -> &presence_validator::InventorySizeGauge {
        self.inventory.size_gauge()
    }
}

fn unavailable(error: impl std::fmt::Display) -> TransportError {
    TransportError::Unavailable(error.to_string())
}

#[async_trait]
impl Transport for InProcessTransport {
    async fn scan(&self, command: ScanCommand) -> Result<Answer, TransportError> {
        self.validator.decide(&command).await.map_err(unavailable)
    }

    async fn init_device(
        &self,
        request: DeviceInitRequest,
    ) -> Result<DeviceInitOutcome, TransportError> {
        self.registry.init(request).await.map_err(unavailable)
    }

    async fn lookup_device(&self, lookup: DeviceLookup) -> Result<Option<Device>, TransportError> {
        self.registry.lookup(&lookup).await.map_err(unavailable)
    }

    async fn apply_inventory(
        &self,
        records: Vec<NumberedRecord>,
        syntax_errors: Vec<LineError>,
    ) -> Result<InventoryOutcome, TransportError> {
        self.inventory
            .apply(records, syntax_errors)
            .await
            .map_err(unavailable)
    }

    async fn venue_stats(&self, venue_id: &VenueId) -> Result<Option<VenueStats>, TransportError> {
        self.stats.venue_stats(venue_id).await.map_err(unavailable)
    }

    async fn ready(&self) -> Result<(), TransportError> {
        self.stores.tickets.ping().await.map_err(unavailable)
    }
}
