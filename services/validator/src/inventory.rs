//! Applying inventory: references checked against the store, then all or nothing;
//! and the inventory-size metric.

use presence_domain::inventory::{LineErrors, NumberedRecord, check_references, referenced};
use presence_ports::{InventoryOutcome, InventoryStore, StoreError, Stores};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

/// How often the inventory size is read again: another replica may have
/// applied a batch, and a restarted one starts from nothing.
const SIZE_REFRESH: Duration = Duration::from_secs(15);

/// Checks and applies inventory batches. Cheap to clone.
#[derive(Clone)]
pub struct InventoryApplier {
    store: Arc<dyn InventoryStore>,
    size: InventorySizeGauge,
}

impl std::fmt::Debug for InventoryApplier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InventoryApplier").finish_non_exhaustive()
    }
}

impl InventoryApplier {
    pub fn new(stores: &Stores) -> Self {
        Self {
            store: stores.inventory.clone(),
            size: InventorySizeGauge::new(stores.inventory.clone()),
        }
    }

    /// The inventory-size gauge, refreshed after each applied batch.
    pub fn size_gauge(&self) -> &InventorySizeGauge {
        &self.size
    }

    /// Applies a batch whose `syntax_errors` lines did not parse. Any such line, or
    /// any reference to a venue or event that is neither stored nor defined on an
    /// earlier line, rejects the whole batch, listing the first bad lines with
    /// every problem of each, and counting them all.
    /// Inventory is never deleted, so a reference found here still holds when the
    /// batch is written.
    pub async fn apply(
        &self,
        records: Vec<NumberedRecord>,
        syntax_errors: LineErrors,
    ) -> Result<InventoryOutcome, StoreError> {
        let stored = self
            .store
            .stored(&referenced(&records, &syntax_errors))
            .await?;
        let errors = check_references(&records, syntax_errors, |reference| {
            stored.contains(reference)
        });
        if !errors.is_empty() {
            return Ok(InventoryOutcome::Rejected(errors));
        }
        let applied = self
            .store
            .apply(
                records
                    .into_iter()
                    .map(|numbered| numbered.record)
                    .collect(),
            )
            .await?;
        tracing::info!(applied, "inventory applied");
        self.size.refresh().await;
        Ok(InventoryOutcome::Applied(applied))
    }
}

type KindLabel = [(&'static str, &'static str); 1];

/// `presence_inventory_records{kind="venue"|"event"|"ticket"}`: how many distinct
/// records inventory has stored (the Redis store estimates, within about 1 %).
#[derive(Clone)]
pub struct InventorySizeGauge {
    store: Arc<dyn InventoryStore>,
    records: Family<KindLabel, Gauge>,
}

impl std::fmt::Debug for InventorySizeGauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InventorySizeGauge").finish_non_exhaustive()
    }
}

impl InventorySizeGauge {
    fn new(store: Arc<dyn InventoryStore>) -> Self {
        Self {
            store,
            records: Family::default(),
        }
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "inventory_records",
            "Distinct venues, events and tickets stored by inventory uploads",
            self.records.clone(),
        );
    }

    /// Reads the size from the store; on failure the gauge keeps its last value.
    pub async fn refresh(&self) {
        match self.store.size().await {
            Ok(size) => {
                for (kind, count) in [
                    ("venue", size.venues),
                    ("event", size.events),
                    ("ticket", size.tickets),
                ] {
                    self.records
                        .get_or_create(&[("kind", kind)])
                        .set(i64::try_from(count).unwrap_or(i64::MAX));
                }
            }
            Err(error) => tracing::warn!(%error, "cannot read the inventory size"),
        }
    }

    /// Refreshes now and every [`SIZE_REFRESH`], for as long as the process runs.
    pub async fn refresh_periodically(self) {
        let mut ticks = tokio::time::interval(SIZE_REFRESH);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.refresh().await;
        }
    }
}
