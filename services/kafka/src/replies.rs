//! This gateway's reply topic: answers come back here and are handed to the
//! request waiting for them.
//!
//! Each gateway instance reads only its own topic (one partition, read from the
//! beginning by assignment, no consumer group), so no gateway reads another's
//! answers, and an answer that arrives before the request starts waiting is
//! still found: the waiter is registered before the request is sent.

use crate::KafkaError;
use crate::client::{self, CORRELATION_ID};
use crate::producer::KafkaProducer;
use crate::settings::KafkaSettings;
use presence_proto::pb;
use prost::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<pb::Reply>>>>;

/// Routes answers from this gateway's reply topic to their waiting requests.
#[derive(Debug)]
pub struct ReplyRouter {
    topic: String,
    waiters: Waiters,
    task: JoinHandle<()>,
}

/// A request waiting for its answer; dropping it stops waiting.
#[derive(Debug)]
pub struct Waiting {
    id: String,
    waiters: Waiters,
    receiver: oneshot::Receiver<pb::Reply>,
}

impl Waiting {
    /// The answer, or `None` when the router stopped.
    pub async fn answer(&mut self) -> Option<pb::Reply> {
        (&mut self.receiver).await.ok()
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

impl ReplyRouter {
    /// Starts reading `topic` (which must exist) from its beginning.
    pub fn start(settings: &KafkaSettings, topic: String) -> Result<Self, KafkaError> {
        let consumer: StreamConsumer =
            client::consumer_config(settings, &format!("{topic}.reader"))
                .set("enable.auto.commit", "false")
                .create()?;
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(&topic, 0, Offset::Beginning)?;
        consumer.assign(&assignment)?;
        let waiters: Waiters = Arc::default();
        let task = tokio::spawn(read_replies(consumer, waiters.clone()));
        Ok(Self {
            topic,
            waiters,
            task,
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Whether the reply consumer still runs.
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// Registers interest in the answer correlated by `id`; call before sending.
    pub fn wait_for(&self, id: &str) -> Waiting {
        let (sender, receiver) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.to_owned(), sender);
        Waiting {
            id: id.to_owned(),
            waiters: self.waiters.clone(),
            receiver,
        }
    }

    /// Stops reading and returns once the reply consumer is closed.
    pub async fn stop(mut self) {
        self.task.abort();
        // The aborted task drops (closes) its consumer before the handle resolves.
        let _ = (&mut self.task).await;
    }
}

impl Drop for ReplyRouter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_replies(consumer: StreamConsumer, waiters: Waiters) {
    loop {
        match consumer.recv().await {
            Ok(message) => {
                let Some(id) = client::header(message.headers(), CORRELATION_ID) else {
                    tracing::warn!(
                        offset = message.offset(),
                        "reply without a correlation id; ignored"
                    );
                    continue;
                };
                let waiter = waiters
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(id);
                // No waiter: the request gave up (timed out) before its answer came.
                let Some(waiter) = waiter else { continue };
                match pb::Reply::decode(message.payload().unwrap_or_default()) {
                    Ok(reply) => {
                        let _ = waiter.send(reply);
                    }
                    Err(error) => {
                        tracing::warn!(%error, correlation_id = id, "undecodable reply; the request will time out")
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "reply consumer error; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
}

/// Answers `request` on the reply topic it names, with its correlation id and
/// the current trace context (see [`client::with_trace`]). A request that names no reply topic (published by
/// another system) gets no answer.
pub async fn answer(
    producer: &KafkaProducer,
    request: &rdkafka::message::OwnedMessage,
    outcome: pb::reply::Outcome,
) -> Result<(), KafkaError> {
    let headers = request.headers();
    let Some(reply_to) = client::header(headers, client::REPLY_TO) else {
        return Ok(());
    };
    let correlation_id = client::header(headers, CORRELATION_ID).unwrap_or_default();
    let reply_headers = client::with_current_trace(client::with_header(
        rdkafka::message::OwnedHeaders::new(),
        CORRELATION_ID,
        correlation_id,
    ));
    let payload = pb::Reply {
        outcome: Some(outcome),
    }
    .encode_to_vec();
    client::send(
        producer,
        reply_to,
        correlation_id.as_bytes(),
        &payload,
        reply_headers,
    )
    .await
}

/// Whether the gateway that sent `request` has stopped waiting for it.
pub fn expired(request: &rdkafka::message::OwnedMessage, now_millis: i64) -> bool {
    client::header(request.headers(), client::DEADLINE)
        .and_then(|deadline| deadline.parse::<i64>().ok())
        .is_some_and(|deadline| now_millis > deadline)
}
