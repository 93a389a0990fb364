//! The gateways' reply topic: answers come back here and are handed to the
//! request waiting for them.
//!
//! All gateways share one topic, `<prefix>replies`, read in one consumer group
//! (`<prefix>gateways`): each partition is read by exactly one gateway, and a
//! request names one partition its gateway holds ([`client::REPLY_PARTITION`]),
//! so no gateway reads another's answers and no gateway needs a topic of its
//! own. A killed gateway leaves nothing behind: its group membership expires
//! and its partitions go to the others. An answer on a partition that has just
//! moved finds no waiter at its new reader and is dropped; its request answers
//! 503 at its deadline, as any lost answer does.
//!
//! Offsets are committed to the group, so a partition's next reader starts
//! where the last one stopped, and an answer that arrives before its request
//! starts waiting is still found: the waiter is registered before the request
//! is sent.
//!
//! A gateway that holds no partition for [`REJOIN_AFTER`] leaves the group and
//! joins again (waiting twice as long each time it comes back empty, up to
//! [`MAX_REJOIN_AFTER`]). A Kafka group gives a joining member partitions within
//! a session timeout once the dead members expire; a broker whose group
//! coordinator ends a rebalance with an empty assignment (the test broker,
//! tansu 0.6, accepts a follower's empty SyncGroup as the leader's when the old
//! leader expires between the follower's JoinGroup and its SyncGroup) would
//! otherwise leave the gateway unready until the next member comes or goes.
//! With more gateways than partitions the extra ones rejoin at most every
//! [`MAX_REJOIN_AFTER`], each moving no partition (cooperative rebalancing).

use crate::KafkaError;
use crate::client::{self, CORRELATION_ID};
use crate::producer::KafkaProducer;
use crate::settings::KafkaSettings;
use presence_proto::pb;
use prost::Message as _;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::Message;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long a gateway may hold no partition of the reply topic before it
/// leaves the group and joins again: twice the session timeout
/// ([`client::consumer_config`]), by which a killed member has expired and a
/// rebalance that follows has ended.
pub const REJOIN_AFTER: Duration = Duration::from_secs(20);
/// The longest wait between two rejoins of a gateway that keeps getting no
/// partition (more gateways than partitions).
pub const MAX_REJOIN_AFTER: Duration = Duration::from_secs(320);
/// How often the reader checks whether it holds a partition.
const HELD_CHECK_EVERY: Duration = Duration::from_secs(1);

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<pb::Reply>>>>;

/// The partitions of the reply topic this gateway holds, kept by the group's
/// rebalances; requests take turns naming them.
#[derive(Debug, Clone, Default)]
struct HeldPartitions {
    held: Arc<RwLock<Vec<i32>>>,
    next: Arc<AtomicUsize>,
}

impl HeldPartitions {
    fn is_empty(&self) -> bool {
        self.held
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// The next partition to name in a request, or `None` while none is held.
    fn pick(&self) -> Option<i32> {
        let held = self.held.read().unwrap_or_else(PoisonError::into_inner);
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        held.get(turn.checked_rem(held.len())?).copied()
    }
}

impl ClientContext for HeldPartitions {
    /// What the reply reader asks of the brokers, for `/metrics`.
    fn stats(&self, statistics: rdkafka::Statistics) {
        crate::metrics::client_statistics(&statistics);
    }
}

impl ConsumerContext for HeldPartitions {
    /// Eager rebalances revoke and assign whole assignments, cooperative ones
    /// only the partitions that move: adding what is assigned and removing
    /// what is revoked follows both.
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut held = self.held.write().unwrap_or_else(PoisonError::into_inner);
        match rebalance {
            Rebalance::Assign(partitions) => {
                held.extend(partitions.elements().iter().map(|p| p.partition()));
                held.sort_unstable();
                held.dedup();
            }
            Rebalance::Revoke(partitions) => {
                let revoked: Vec<i32> = partitions
                    .elements()
                    .iter()
                    .map(|p| p.partition())
                    .collect();
                held.retain(|partition| !revoked.contains(partition));
            }
            Rebalance::Error(error) => {
                tracing::warn!(%error, "reply reader rebalance error");
                return;
            }
        }
        tracing::info!(partitions = ?*held, "reply partitions held");
    }
}

/// Routes answers from the partitions of the reply topic this gateway holds to
/// their waiting requests.
#[derive(Debug)]
pub struct ReplyRouter {
    topic: String,
    held: HeldPartitions,
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
    /// Joins the gateways' group on the reply topic (which must exist).
    pub fn start(settings: &KafkaSettings) -> Result<Self, KafkaError> {
        let topic = settings.topics().replies();
        let held = HeldPartitions::default();
        let group = format!("{}gateways", settings.topic_prefix);
        let consumer: StreamConsumer<HeldPartitions> = client::consumer_config(settings, &group)
            .set("client.id", &settings.instance_id)
            // Only moved partitions pause when a gateway comes or goes.
            .set("partition.assignment.strategy", "cooperative-sticky")
            // A record read is done with: no answer is handled twice.
            .set("enable.auto.offset.store", "true")
            // The group's rebalance timeout: how long a join waits for the
            // members to rejoin. The reader polls without pause, so the
            // session timeout suffices; librdkafka's default (5 minutes) let a
            // gateway restarted after a SIGKILL wait past 30 s for the dead
            // member before it got a partition.
            .set("max.poll.interval.ms", "10000")
            .create_with_context(held.clone())?;
        consumer.subscribe(&[topic.as_str()])?;
        let waiters: Waiters = Arc::default();
        let task = tokio::spawn(read_replies(consumer, topic.clone(), waiters.clone()));
        Ok(Self {
            topic,
            held,
            waiters,
            task,
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// A partition of the reply topic this gateway reads, for a request's
    /// answer; `None` while the group gives it none (joining, rebalancing, or
    /// more gateways than partitions).
    pub fn partition(&self) -> Option<i32> {
        self.held.pick()
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

    /// Stops reading and returns once the reply consumer has left the group
    /// (its partitions go to the other gateways at once).
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

async fn read_replies(consumer: StreamConsumer<HeldPartitions>, topic: String, waiters: Waiters) {
    let mut rejoin = Rejoin::new(Instant::now());
    let mut check = tokio::time::interval(HELD_CHECK_EVERY);
    loop {
        tokio::select! {
            received = consumer.recv() => match received {
                Ok(message) => hand_over(&message, &waiters),
                Err(error) => {
                    tracing::warn!(%error, "reply consumer error; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
            now = check.tick() => {
                if let Some(waited) = rejoin.due(consumer.context().is_empty(), now) {
                    tracing::warn!(
                        topic,
                        ?waited,
                        "this gateway holds no partition of the reply topic; leaving the gateways' group and joining again"
                    );
                    consumer.unsubscribe();
                    if let Err(error) = consumer.subscribe(&[topic.as_str()]) {
                        tracing::warn!(%error, "rejoining the gateways' group failed; retrying later");
                    }
                }
            }
        }
    }
}

/// Hands one record of the reply topic to the request waiting for it.
fn hand_over(message: &rdkafka::message::BorrowedMessage<'_>, waiters: &Waiters) {
    let Some(id) = client::header(message.headers(), CORRELATION_ID) else {
        tracing::warn!(
            offset = message.offset(),
            "reply without a correlation id; ignored"
        );
        return;
    };
    let waiter = waiters
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(id);
    // No waiter: the request gave up (timed out) before its answer came.
    let Some(waiter) = waiter else { return };
    match pb::Reply::decode(message.payload().unwrap_or_default()) {
        Ok(reply) => {
            let _ = waiter.send(reply);
        }
        Err(error) => {
            tracing::warn!(%error, correlation_id = id, "undecodable reply; the request will time out")
        }
    }
}

/// When a gateway that holds no reply partition leaves the group and joins
/// again: after [`REJOIN_AFTER`] without one, then after twice as long each
/// time it still has none, up to [`MAX_REJOIN_AFTER`]; holding one resets it.
#[derive(Debug)]
struct Rejoin {
    /// Since when no partition has been held (or the last rejoin).
    empty_since: Option<Instant>,
    patience: Duration,
}

impl Rejoin {
    /// A reader that started (and held nothing) at `started`.
    fn new(started: Instant) -> Self {
        Self {
            empty_since: Some(started),
            patience: REJOIN_AFTER,
        }
    }

    /// Whether to rejoin now, given whether nothing is held at `now`: how long
    /// nothing was held, when it is time.
    fn due(&mut self, holds_nothing: bool, now: Instant) -> Option<Duration> {
        if !holds_nothing {
            self.empty_since = None;
            self.patience = REJOIN_AFTER;
            return None;
        }
        let waited = now.duration_since(*self.empty_since.get_or_insert(now));
        if waited < self.patience {
            return None;
        }
        self.empty_since = Some(now);
        self.patience = (self.patience * 2).min(MAX_REJOIN_AFTER);
        Some(waited)
    }
}

/// Answers `request` on the reply topic and partition it names, with its
/// correlation id and the current trace context (see [`client::with_trace`]).
/// A request that names no reply topic (published by another system) gets no
/// answer.
pub async fn answer(
    producer: &KafkaProducer,
    request: &rdkafka::message::OwnedMessage,
    outcome: pb::reply::Outcome,
) -> Result<(), KafkaError> {
    let headers = request.headers();
    let Some(reply_to) = client::header(headers, client::REPLY_TO) else {
        return Ok(());
    };
    let partition = client::header(headers, client::REPLY_PARTITION)
        .and_then(|partition| partition.parse::<i32>().ok());
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
    client::send_to_partition(
        producer,
        reply_to,
        partition,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_take_turns_on_the_held_partitions_and_get_none_while_none_is_held() {
        let held = HeldPartitions::default();
        assert_eq!(held.pick(), None);
        *held.held.write().unwrap() = vec![2, 5];
        let picks: Vec<Option<i32>> = (0..4).map(|_| held.pick()).collect();
        assert_eq!(picks, [Some(5), Some(2), Some(5), Some(2)]);
    }

    #[test]
    fn a_reader_holding_nothing_rejoins_less_and_less_often_until_it_holds_a_partition() {
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        let mut rejoin = Rejoin::new(start);
        let seconds = |waited: Option<Duration>| waited.map(|w| w.as_secs());
        assert_eq!(seconds(rejoin.due(true, at(19))), None);
        assert_eq!(seconds(rejoin.due(true, at(20))), Some(20));
        assert_eq!(seconds(rejoin.due(true, at(59))), None);
        assert_eq!(seconds(rejoin.due(true, at(60))), Some(40));
        assert_eq!(seconds(rejoin.due(true, at(139))), None);
        assert_eq!(seconds(rejoin.due(true, at(140))), Some(80));
        // Holding a partition resets the wait: the next empty spell starts afresh.
        assert_eq!(rejoin.due(false, at(141)), None);
        assert_eq!(rejoin.due(true, at(150)), None);
        assert_eq!(rejoin.due(true, at(169)), None);
        assert_eq!(seconds(rejoin.due(true, at(170))), Some(20));
    }

    #[test]
    fn the_wait_between_rejoins_stops_growing_at_its_maximum() {
        let start = Instant::now();
        let mut rejoin = Rejoin::new(start);
        let mut now = start;
        for _ in 0..10 {
            now += rejoin.patience;
            assert!(rejoin.due(true, now).is_some());
        }
        assert_eq!(rejoin.patience, MAX_REJOIN_AFTER);
    }
}
