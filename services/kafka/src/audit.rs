//! The `audit` topic (SPEC §6 "Audit"): [`KafkaAudit`], the distributed
//! gateway's [`AuditSink`]. Read from outside by `presence audit tail`
//! ([`crate::tail::TopicReader`]).

use crate::KafkaError;
use crate::client;
use crate::producer::KafkaProducer;
use async_trait::async_trait;
use presence_domain::AuditRecord;
use presence_ports::{AuditSink, TransportError};
use presence_proto::pb;
use prost::Message as _;
use rdkafka::message::OwnedHeaders;
use std::time::Duration;

/// How long the `audit` topic keeps records when a gateway creates it: 400
/// days, a year of event nights and their disputes. A deployment that must
/// keep more copies the topic out (docs/operations.md).
pub const AUDIT_RETENTION: Duration = Duration::from_secs(400 * 24 * 3600);

/// Publishes each audit record to `<prefix>audit` and returns once the
/// brokers acknowledged it.
#[derive(Clone)]
pub struct KafkaAudit {
    producer: KafkaProducer,
    topic: String,
}

impl std::fmt::Debug for KafkaAudit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaAudit")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl KafkaAudit {
    pub fn new(producer: KafkaProducer, topic: String) -> Self {
        Self { producer, topic }
    }
}

#[async_trait]
impl AuditSink for KafkaAudit {
    async fn record(&self, record: AuditRecord) -> Result<(), TransportError> {
        let payload = pb::AuditRecord::from(&record).encode_to_vec();
        client::send(
            &self.producer,
            &self.topic,
            record.key_name.as_bytes(),
            &payload,
            client::with_current_trace(OwnedHeaders::new()),
        )
        .await
        .map_err(|error: KafkaError| TransportError::Unavailable(error.to_string()))
    }
}
