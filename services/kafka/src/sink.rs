//! The `decisions` stream.

use crate::KafkaError;
use crate::client;
use crate::producer::KafkaProducer;
use async_trait::async_trait;
use presence_domain::DecisionEvent;
use presence_ports::{DecisionSink, TransportError};
use presence_proto::pb;
use prost::Message as _;
use rdkafka::message::OwnedHeaders;

/// Publishes every decision to `decisions`, keyed by token, and returns once
/// the brokers acknowledged it.
#[derive(Clone)]
pub struct KafkaDecisions {
    producer: KafkaProducer,
    topic: String,
}

impl std::fmt::Debug for KafkaDecisions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaDecisions")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl KafkaDecisions {
    pub fn new(producer: KafkaProducer, topic: String) -> Self {
        Self { producer, topic }
    }
}

#[async_trait]
impl DecisionSink for KafkaDecisions {
    async fn publish(&self, event: DecisionEvent) -> Result<(), TransportError> {
        let payload = pb::Decision::from(&event).encode_to_vec();
        client::send(
            &self.producer,
            &self.topic,
            event.token.as_str().as_bytes(),
            &payload,
            client::with_current_trace(OwnedHeaders::new()),
        )
        .await
        .map_err(|error: KafkaError| TransportError::Unavailable(error.to_string()))?;
        crate::metrics::decision_published(&event);
        Ok(())
    }
}
