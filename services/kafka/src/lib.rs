//! Presence over Kafka.
//!
//! The gateway reaches the validator and the registry through topics, and every
//! decision leaves on the `decisions` stream:
//! - [`settings`]: brokers, topic names and partition counts;
//! - [`security`]: TLS, SASL and pass-through properties for every client, and
//!   [`security::Secret`], which does not print;
//! - [`client`]: producer and consumer configuration, topic creation, headers and
//!   the W3C trace context they carry;
//! - [`producer`]: [`KafkaProducer`], a future per record, without the idle spin
//!   of rdkafka's `FutureProducer`;
//! - [`transport`]: [`KafkaTransport`], the gateway's `Transport`: requests out,
//!   answers back on a partition of the gateways' shared reply topic that this
//!   gateway reads ([`replies`]);
//! - [`sink`]: [`KafkaDecisions`], the validator's `DecisionSink`;
//! - [`audit`]: [`KafkaAudit`], the gateway's `AuditSink`, on the `audit` topic;
//! - [`runner`]: the consumer loop the services run on: key-ordered lanes, offsets
//!   stored only once a record's work is acknowledged, poison records to
//!   `<topic>.dlq`; the services plug their handlers into it;
//! - [`service`]: how the validator and the registry run: their consumers, and
//!   `/healthz` and `/readyz` green while they hold partitions and their store answers;
//! - [`wire`]: the request and reply messages between gateway and services;
//! - [`tail`]: [`DecisionReader`] and [`AuditReader`], the `decisions` and
//!   `audit` topics read from outside the services, without a consumer group
//!   (`presence decisions tail`, `presence audit tail`);
//! - [`observed`]: the services' ticket store calls (Redis) timed and counted;
//! - [`metrics`]: decisions published, records handled, dead letters, round
//!   trips, client errors and consumer lag, for `/metrics`.

pub mod audit;
pub mod client;
pub mod metrics;
pub mod observed;
pub mod producer;
pub mod replies;
pub mod runner;
pub mod security;
pub mod service;
pub mod settings;
pub mod sink;
pub mod tail;
pub mod transport;
pub mod wire;

pub use audit::KafkaAudit;
pub use producer::KafkaProducer;
pub use settings::{KafkaArgs, KafkaSettings, Topics};
pub use sink::KafkaDecisions;
pub use tail::{AuditReader, DecisionReader};
pub use transport::KafkaTransport;

/// What can go wrong talking to Kafka.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka client: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("kafka: {0}")]
    Unreachable(String),
    #[error("kafka: topics missing (PRESENCE_KAFKA_CREATE_TOPICS=false): {}", .0.join(", "))]
    MissingTopics(Vec<String>),
    #[error("creating topic {topic}: {reason}")]
    Topic { topic: String, reason: String },
    #[error("message could not be decoded: {0}")]
    Decode(String),
    #[error("consumer task failed: {0}")]
    Task(String),
}
