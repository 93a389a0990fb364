//! A topic as an outside reader sees it (`presence decisions tail`, `presence
//! audit tail`): every partition assigned directly, so the reader joins no
//! consumer group and commits no offset. Reading never moves anyone's position
//! nor triggers a rebalance of the services.

use crate::KafkaError;
use crate::settings::{KafkaSettings, Topics};
use presence_domain::{AuditRecord, DecisionEvent};
use presence_proto::pb;
use prost::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Longest one metadata or watermark request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where reading starts in each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The oldest record the topic retains.
    Beginning,
    /// Each partition's end when the reader opens: decisions made from then on.
    End,
}

/// What a topic read from outside carries: its name and how its records decode.
pub trait Tailed: Sized + Send + 'static {
    fn topic(topics: &Topics) -> String;
    /// The record's domain value, or why the bytes are not one.
    fn decode(payload: &[u8]) -> Result<Self, String>;
}

impl Tailed for DecisionEvent {
    fn topic(topics: &Topics) -> String {
        topics.decisions()
    }

    fn decode(payload: &[u8]) -> Result<Self, String> {
        pb::Decision::decode(payload)
            .map_err(|error| error.to_string())
            .and_then(|decision| Self::try_from(decision).map_err(|e| e.to_string()))
    }
}

impl Tailed for AuditRecord {
    fn topic(topics: &Topics) -> String {
        topics.audit()
    }

    fn decode(payload: &[u8]) -> Result<Self, String> {
        pb::AuditRecord::decode(payload)
            .map_err(|error| error.to_string())
            .and_then(|record| Self::try_from(record).map_err(|e| e.to_string()))
    }
}

/// One record of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read<M> {
    Record(M),
    /// A record that does not decode as the topic's message.
    Unreadable {
        partition: i32,
        offset: i64,
        reason: String,
    },
}

/// Reads a topic of `M` from every partition.
pub struct TopicReader<M> {
    consumer: StreamConsumer,
    partitions: usize,
    /// Per partition: the next offset to read, and the end when the reader
    /// opened.
    progress: Mutex<HashMap<i32, (i64, i64)>>,
    records: PhantomData<fn() -> M>,
}

/// The `decisions` stream.
pub type DecisionReader = TopicReader<DecisionEvent>;

/// The `audit` trail.
pub type AuditReader = TopicReader<AuditRecord>;

impl<M> std::fmt::Debug for TopicReader<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicReader")
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl<M: Tailed> TopicReader<M> {
    /// Assigns every partition of the topic, positioned at `start`. `None` while
    /// the topic does not exist (the service that writes it creates it when it
    /// first starts).
    pub async fn open(
        settings: &KafkaSettings,
        start: StartAt,
    ) -> Result<Option<Self>, KafkaError> {
        // Never used to join or commit (partitions are assigned), but unique,
        // so that nothing a broker shows under a group name is ours.
        let group = format!("presence-tail-{}", uuid::Uuid::new_v4().simple());
        let consumer: StreamConsumer = settings
            .client_config(&[
                ("group.id", &group),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                // Presence writes no transactions, so there is nothing to wait
                // for whatever a broker reports of open ones.
                ("isolation.level", "read_uncommitted"),
            ])
            .create()?;
        let topic = M::topic(&settings.topics());
        // Metadata and watermark requests block; the reader has no other work meanwhile.
        tokio::task::spawn_blocking(move || position(consumer, &topic, start))
            .await
            .map_err(|error| KafkaError::Task(error.to_string()))?
    }

    /// How many partitions the reader follows.
    pub fn partitions(&self) -> usize {
        self.partitions
    }

    /// Whether every record the topic held when the reader opened was read.
    pub fn caught_up(&self) -> bool {
        self.progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .all(|(next, end)| next >= end)
    }

    /// Waits for the next record. An error is the client's (a broker
    /// unreachable for a while); reading may go on after it.
    pub async fn next(&self) -> Result<Read<M>, KafkaError> {
        let message = self.consumer.recv().await?;
        if let Some((next, _)) = self
            .progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&message.partition())
        {
            *next = message.offset() + 1;
        }
        Ok(match M::decode(message.payload().unwrap_or_default()) {
            Ok(record) => Read::Record(record),
            Err(reason) => Read::Unreadable {
                partition: message.partition(),
                offset: message.offset(),
                reason,
            },
        })
    }
}

fn position<M>(
    consumer: StreamConsumer,
    topic: &str,
    start: StartAt,
) -> Result<Option<TopicReader<M>>, KafkaError> {
    let metadata = consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    match found.error().map(RDKafkaErrorCode::from) {
        None => {}
        Some(RDKafkaErrorCode::UnknownTopicOrPartition) => return Ok(None),
        Some(code) => {
            return Err(KafkaError::Topic {
                topic: topic.to_owned(),
                reason: code.to_string(),
            });
        }
    }
    if found.partitions().is_empty() {
        return Ok(None);
    }
    let mut assignment = TopicPartitionList::new();
    let mut progress = HashMap::new();
    for partition in found.partitions() {
        let (low, high) = consumer.fetch_watermarks(topic, partition.id(), REQUEST_TIMEOUT)?;
        let (offset, next) = match start {
            StartAt::Beginning => (Offset::Beginning, low),
            // The end as of now, not librdkafka's `Offset::End`, which is fixed
            // only at the first fetch: a record written in between would be missed.
            StartAt::End => (Offset::Offset(high), high),
        };
        progress.insert(partition.id(), (next, high));
        assignment.add_partition_offset(topic, partition.id(), offset)?;
    }
    consumer.assign(&assignment)?;
    Ok(Some(TopicReader {
        consumer,
        partitions: found.partitions().len(),
        progress: Mutex::new(progress),
        records: PhantomData,
    }))
}
