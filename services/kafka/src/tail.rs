//! The `decisions` stream as an outside reader sees it (`presence decisions
//! tail`): every partition assigned directly, so the reader joins no consumer
//! group and commits no offset. Reading never moves anyone's position nor
//! triggers a rebalance of the services.

use crate::KafkaError;
use crate::settings::KafkaSettings;
use presence_domain::DecisionEvent;
use presence_proto::pb;
use prost::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
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

/// One record of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    Decision(DecisionEvent),
    /// A record that is not a valid `presence.v1.Decision`.
    Unreadable {
        partition: i32,
        offset: i64,
        reason: String,
    },
}

/// Reads a `decisions` topic from every partition.
pub struct DecisionReader {
    consumer: StreamConsumer,
    partitions: usize,
}

impl std::fmt::Debug for DecisionReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionReader")
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl DecisionReader {
    /// Assigns every partition of the `decisions` topic, positioned at `start`. `None` while
    /// the topic does not exist (the validator creates it when it first starts).
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
        let topic = settings.topics().decisions();
        // Metadata and watermark requests block; the reader has no other work meanwhile.
        tokio::task::spawn_blocking(move || position(consumer, &topic, start))
            .await
            .map_err(|error| KafkaError::Task(error.to_string()))?
    }

    /// How many partitions the reader follows.
    pub fn partitions(&self) -> usize {
        self.partitions
    }

    /// Waits for the next record. An error is the client's (a broker
    /// unreachable for a while); reading may go on after it.
    pub async fn next(&self) -> Result<Read, KafkaError> {
        let message = self.consumer.recv().await?;
        let decoded = pb::Decision::decode(message.payload().unwrap_or_default())
            .map_err(|error| error.to_string())
            .and_then(|decision| DecisionEvent::try_from(decision).map_err(|e| e.to_string()));
        Ok(match decoded {
            Ok(event) => Read::Decision(event),
            Err(reason) => Read::Unreadable {
                partition: message.partition(),
                offset: message.offset(),
                reason,
            },
        })
    }
}

fn position(
    consumer: StreamConsumer,
    topic: &str,
    start: StartAt,
) -> Result<Option<DecisionReader>, KafkaError> {
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
    for partition in found.partitions() {
        let offset = match start {
            StartAt::Beginning => Offset::Beginning,
            // The end as of now, not librdkafka's `Offset::End`, which is fixed
            // only at the first fetch: a decision made in between would be missed.
            StartAt::End => {
                let (_, high) =
                    consumer.fetch_watermarks(topic, partition.id(), REQUEST_TIMEOUT)?;
                Offset::Offset(high)
            }
        };
        assignment.add_partition_offset(topic, partition.id(), offset)?;
    }
    consumer.assign(&assignment)?;
    Ok(Some(DecisionReader {
        consumer,
        partitions: found.partitions().len(),
    }))
}
