//! Applying inventory: references checked against the store, then all or nothing.

use presence_domain::inventory::{
    LineError, NumberedRecord, check_references, merge_errors, referenced,
};
use presence_ports::{InventoryOutcome, InventoryStore, StoreError, Stores};
use std::sync::Arc;

/// Checks and applies inventory batches. Cheap to clone.
#[derive(Clone)]
pub struct InventoryApplier {
    store: Arc<dyn InventoryStore>,
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
        }
    }

    /// Applies a batch whose `syntax_errors` lines did not parse. Any such line, or
    /// any reference to a venue or event that is neither stored nor defined on an
    /// earlier line, rejects the whole batch, listing every bad line.
    /// Inventory is never deleted, so a reference found here still holds when the
    /// batch is written.
    pub async fn apply(
        &self,
        records: Vec<NumberedRecord>,
        syntax_errors: Vec<LineError>,
    ) -> Result<InventoryOutcome, StoreError> {
        let stored = self.store.stored(&referenced(&records)).await?;
        let errors = merge_errors(
            syntax_errors,
            check_references(&records, |reference| stored.contains(reference)),
        );
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
        Ok(InventoryOutcome::Applied(applied))
    }
}
