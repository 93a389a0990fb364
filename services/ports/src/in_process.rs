//! In-process adapters, for the all-in-one binary and tests.

use crate::store::StatsStore;
use crate::transport::{DecisionSink, TransportError};
use async_trait::async_trait;
use presence_domain::{DecisionEvent, Tally};
use std::sync::Arc;
use tokio::sync::broadcast;

/// Delivers decisions to whoever subscribed in this process. A subscriber that
/// falls behind by more than the capacity misses the oldest events (and is told
/// so by `RecvError::Lagged`); the scan path never waits for subscribers.
#[derive(Debug, Clone)]
pub struct BroadcastDecisions {
    sender: broadcast::Sender<DecisionEvent>,
}

impl BroadcastDecisions {
    pub fn new(capacity: usize) -> Self {
        Self {
            sender: broadcast::channel(capacity.max(1)).0,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<DecisionEvent> {
        self.sender.subscribe()
    }
}

#[async_trait]
impl DecisionSink for BroadcastDecisions {
    async fn publish(&self, event: DecisionEvent) -> Result<(), TransportError> {
        // No subscriber is not an error: nobody is listening yet.
        let _ = self.sender.send(event);
        Ok(())
    }
}

/// Counts every decision into the venue stats, then passes it on. The embedded
/// mode's stats are fed here, on the decision's own path, rather than by a
/// subscriber of the broadcast, which misses decisions when it falls behind.
/// The count is handed over ([`StatsStore::record_later`]), not awaited: the
/// scan's answer does not wait for the stats to be stored.
pub struct CountedDecisions {
    stats: Arc<dyn StatsStore>,
    next: Arc<dyn DecisionSink>,
}

impl CountedDecisions {
    pub fn new(stats: Arc<dyn StatsStore>, next: Arc<dyn DecisionSink>) -> Self {
        Self { stats, next }
    }
}

impl std::fmt::Debug for CountedDecisions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountedDecisions").finish_non_exhaustive()
    }
}

#[async_trait]
impl DecisionSink for CountedDecisions {
    async fn publish(&self, event: DecisionEvent) -> Result<(), TransportError> {
        if let Some(tally) = Tally::of(&event)
            && let Err(error) = self.stats.record_later(tally).await
        {
            // The decision stands and is answered; only the live view misses it.
            // Failing the publish would answer 503 for a scan already applied.
            tracing::error!(%error, scan_id = %event.scan_id, "a decision was not counted in the venue stats");
        }
        self.next.publish(event).await
    }
}

/// Keeps audit records in memory, in the order recorded: for tests of what
/// the gateway records.
#[derive(Debug, Default)]
pub struct RecordedAudit {
    records: std::sync::Mutex<Vec<presence_domain::AuditRecord>>,
}

impl RecordedAudit {
    /// Every record so far.
    pub fn records(&self) -> Vec<presence_domain::AuditRecord> {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

#[async_trait]
impl crate::audit::AuditSink for RecordedAudit {
    async fn record(&self, record: presence_domain::AuditRecord) -> Result<(), TransportError> {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(record);
        Ok(())
    }
}
