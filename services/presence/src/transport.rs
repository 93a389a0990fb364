//! The in-process transport: a request is a function call. Every decision is
//! counted into the venue stats on its way to the decisions stream
//! ([`CountedDecisions`]), before the scan is answered.
//!
//! A scan (or an annulment) is decided in a task of its own, not in the request's: hyper drops a
//! request's future when its client goes away, and the gateway drops it when
//! the decision deadline passes. Dropped between the store's commit and the
//! publication, a decision would change the ticket's state yet be missing from
//! the decisions stream and the venue stats. The task runs to the end whoever
//! still waits for it, and shutdown waits for the tasks still running.

use async_trait::async_trait;
use presence_domain::inventory::{LineErrors, NumberedRecord};
use presence_domain::{
    Device, DeviceId, DeviceInitRequest, DeviceLookup, TicketQuery, TicketReport, VenueId,
    VenueStats,
};
use presence_ports::in_process::CountedDecisions;
use presence_ports::{
    AnnulCommand, Answer, DecisionSink, DeviceInitOutcome, InventoryOutcome, ScanCommand,
    StatsStore, Stores, Transport, TransportError,
};
use presence_registry::{Registry, StatsView, VenueCaps};
use presence_validator::{InventoryApplier, Validator};
use std::sync::Arc;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Calls the validator, registry and inventory applier of this process.
#[derive(Debug, Clone)]
pub struct InProcessTransport {
    validator: Validator,
    registry: Registry,
    inventory: InventoryApplier,
    stats: StatsView,
    stores: Stores,
    /// The scans being decided, so that shutdown can wait for them.
    deciding: TaskTracker,
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
            deciding: TaskTracker::new(),
        }
    }

    /// Allows annulments of passages decided at most `window_ms` ago.
    pub fn with_annul_window(self, window_ms: u64) -> Self {
        Self {
            validator: self.validator.with_annul_window(window_ms),
            ..self
        }
    }

    /// Waits until every scan being decided is decided and published, even
    /// those whose callers stopped waiting. Scans that arrive meanwhile are
    /// still served.
    pub async fn finish_deciding(&self) {
        self.deciding.close();
        self.deciding.wait().await;
        self.deciding.reopen();
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
        let validator = self.validator.clone();
        let deciding = self
            .deciding
            .spawn(async move { validator.decide(&command).await }.in_current_span());
        deciding.await.map_err(unavailable)?.map_err(unavailable)
    }

    async fn annul(&self, command: AnnulCommand) -> Result<Answer, TransportError> {
        // In a task of its own, as a scan: a committed annulment is published
        // whoever still waits for it.
        let validator = self.validator.clone();
        let deciding = self
            .deciding
            .spawn(async move { validator.annul(&command).await }.in_current_span());
        deciding.await.map_err(unavailable)?.map_err(unavailable)
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

    async fn revoke_device(
        &self,
        venue_id: &VenueId,
        device_id: DeviceId,
    ) -> Result<Option<Device>, TransportError> {
        self.registry
            .revoke(venue_id, device_id)
            .await
            .map_err(unavailable)
    }

    async fn apply_inventory(
        &self,
        records: Vec<NumberedRecord>,
        syntax_errors: LineErrors,
    ) -> Result<InventoryOutcome, TransportError> {
        self.inventory
            .apply(records, syntax_errors)
            .await
            .map_err(unavailable)
    }

    async fn venue_stats(&self, venue_id: &VenueId) -> Result<Option<VenueStats>, TransportError> {
        self.stats.venue_stats(venue_id).await.map_err(unavailable)
    }

    async fn ticket(&self, query: TicketQuery) -> Result<Option<TicketReport>, TransportError> {
        self.registry.ticket(&query).await.map_err(unavailable)
    }

    async fn ready(&self) -> Result<(), TransportError> {
        self.stores.tickets.ping().await.map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use presence_domain::{
        DecisionEvent, DeviceId, DeviceOs, GateId, ScanId, ScanKind, ScanRequest, Token,
    };
    use presence_store_embedded::{EmbeddedOptions, EmbeddedStore};
    use std::sync::Mutex;
    use std::time::Duration;
    use tokio::sync::Semaphore;

    /// A decisions stream that holds every publication until let through.
    #[derive(Debug)]
    struct HeldDecisions {
        gate: Semaphore,
        published: Mutex<Vec<DecisionEvent>>,
    }

    impl Default for HeldDecisions {
        fn default() -> Self {
            Self {
                gate: Semaphore::new(0),
                published: Mutex::default(),
            }
        }
    }

    #[async_trait]
    impl DecisionSink for HeldDecisions {
        async fn publish(&self, event: DecisionEvent) -> Result<(), TransportError> {
            let _pass = self.gate.acquire().await.expect("the gate stays open");
            self.published.lock().unwrap().push(event);
            Ok(())
        }
    }

    fn scan(scan_id: &str) -> ScanCommand {
        ScanCommand {
            scan_id: ScanId::new(scan_id),
            kind: ScanKind::Enter,
            request: ScanRequest {
                channel_id: None,
                device_os: DeviceOs::Printed,
                gate_name: "Gate 1".into(),
                token: Token::new("721744537954"),
                venue_id: presence_domain::VenueId::new("V1"),
                device_id: DeviceId::new(1),
                gate_id: GateId::new(1),
                scan_time: 1_480_000_000_000,
            },
            device_secret: None,
            shown: None,
        }
    }

    /// The gateway's decision deadline drops the scan's future (and hyper drops
    /// it when the client goes away). The decision is published all the same,
    /// once, and shutdown waits for it.
    #[tokio::test]
    async fn a_scan_dropped_by_its_caller_is_still_published() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
        let decisions = Arc::new(HeldDecisions::default());
        let transport = InProcessTransport::new(
            Stores::from_backend(store.clone()),
            store,
            decisions.clone(),
            VenueCaps::default(),
        );
        // No device is configured: a BAD_REQUEST decision, published like any.
        let deadline = Duration::from_millis(50);
        let dropped = tokio::time::timeout(deadline, transport.scan(scan("dropped"))).await;
        assert!(
            dropped.is_err(),
            "the publication was held: no answer in time"
        );

        decisions.gate.add_permits(1);
        tokio::time::timeout(Duration::from_secs(5), transport.finish_deciding())
            .await
            .expect("shutdown waits for the scan, which finishes");
        let published = decisions.published.lock().unwrap().clone();
        assert_eq!(published.len(), 1, "{published:?}");
        assert_eq!(published[0].scan_id, ScanId::new("dropped"));

        // Served as before after the wait.
        decisions.gate.add_permits(1);
        let answer = transport.scan(scan("next")).await.unwrap();
        assert_eq!(answer.scan_id, ScanId::new("next"));
    }
}
