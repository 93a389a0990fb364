//! In-process adapters, for the all-in-one binary and tests.

use crate::transport::{DecisionSink, TransportError};
use async_trait::async_trait;
use presence_domain::DecisionEvent;
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
