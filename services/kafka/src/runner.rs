//! The consumer loop every service runs on.
//!
//! Records of one key (one ticket, one venue) are handled one after another in
//! arrival order, on one of several lanes; records of different keys run side by
//! side. A record's offset is stored for commit only when it and every earlier
//! record of its partition are done, so a crash at any point redelivers whatever
//! was not finished: at-least-once, with the handlers making a redelivery
//! harmless. A record the handler cannot understand goes to `<topic>.dlq` with
//! the reason, and the partition keeps flowing.

use crate::KafkaError;
use crate::client::{self, DEAD_LETTER_REASON};
use crate::metrics::Handled;
use crate::producer::KafkaProducer;
use crate::settings::KafkaSettings;
use async_trait::async_trait;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{Headers, Message, OwnedHeaders, OwnedMessage};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

/// What became of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Done.
    Done,
    /// Accepted but not finished (a chunk of a batch still arriving): its offset
    /// is not stored until the handler releases it.
    HeldBack,
    /// Done, and so are these earlier held-back offsets of its partition (the rest
    /// of a batch just applied, or of one given up).
    Releases(Vec<i64>),
}

/// Why a record was not handled.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The record can never be handled: it goes to the dead-letter topic.
    #[error("poison record: {0}")]
    Poison(String),
    /// Something it needs is down: the same record is tried again after a pause.
    #[error("retry: {0}")]
    Retry(String),
}

/// What a service does with one record.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    async fn handle(&self, record: &OwnedMessage) -> Result<Disposition, HandlerError>;
}

/// One consumer loop's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerConfig {
    pub group: String,
    pub topic: String,
    /// Records of different keys handled at once; 1 keeps the partition's order.
    pub lanes: usize,
    /// How long a stopping runner waits for records in flight.
    pub drain: Duration,
    pub fetching: Fetching,
}

/// How a consumer's fetches wait at the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetching {
    /// Someone waits on each record (a scan's answer, a device init): take
    /// records as soon as there are any, waiting at most the service's fetch
    /// wait (`PRESENCE_KAFKA_FETCH_WAIT_MS`) while there are none.
    Prompt,
    /// Nobody waits on a single record (decisions counted into the venue
    /// stats): let records gather at the broker for up to `wait`, or until
    /// [`GATHERED_FETCH_BYTES`] are there, so that a busy topic costs one fetch
    /// per few hundred records instead of one per few records (docs/reliability.md,
    /// "What Presence asks of the broker"). The records are handled and their
    /// offsets committed exactly as with `Prompt`.
    Gathered { wait: Duration },
}

/// The most a [`Fetching::Gathered`] fetch lets gather before the broker answers:
/// a few hundred decisions.
pub const GATHERED_FETCH_BYTES: &str = "65536";

/// How many partitions a runner's consumer holds, for readiness: a service whose
/// consumer has joined its group and holds partitions is doing its job.
#[derive(Debug, Clone, Default)]
pub struct Assignment(Arc<AtomicUsize>);

impl Assignment {
    pub fn partitions(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

impl ClientContext for Assignment {
    /// Consumer lag per partition and the client's requests, for `/metrics`.
    fn stats(&self, statistics: rdkafka::Statistics) {
        crate::metrics::consumer_statistics(&statistics);
        crate::metrics::client_statistics(&statistics);
    }
}

impl ConsumerContext for Assignment {
    /// With cooperative-sticky assignment a rebalance hands over or takes back
    /// only the partitions that move, so the count is read from the consumer's
    /// whole assignment after each change, never from the change itself. Offsets
    /// stored for a revoked partition are committed by librdkafka (auto commit)
    /// before the revocation completes; records of it still in flight are
    /// redelivered to its new owner, which decides them the same again.
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let held = consumer.assignment().unwrap_or_default();
        let listed = |partitions: &rdkafka::TopicPartitionList| {
            let elements = partitions.elements();
            let topic = elements.first().map(|p| p.topic().to_owned());
            let numbers: Vec<i32> = elements.iter().map(|p| p.partition()).collect();
            (topic, numbers)
        };
        match rebalance {
            Rebalance::Assign(added) => {
                let (topic, numbers) = listed(&held);
                tracing::info!(
                    partitions = held.count(),
                    topic,
                    numbers = ?numbers,
                    added = added.count(),
                    "partitions assigned"
                );
            }
            Rebalance::Revoke(revoked) => {
                let (topic, numbers) = listed(revoked);
                tracing::info!(
                    partitions = revoked.count(),
                    topic,
                    numbers = ?numbers,
                    held = held.count(),
                    "partitions revoked"
                );
                crate::metrics::partitions_revoked();
            }
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance error"),
        }
        self.0.store(held.count(), Ordering::Relaxed);
    }
}

/// Runs `handler` over `config.topic` until `shutdown` turns true, then finishes
/// what is in flight (up to `config.drain`), stores and commits the offsets.
/// `assignment` follows the partitions the consumer holds. The topic and its
/// dead-letter topic must exist ([`dead_letter_topics`]).
pub async fn run(
    settings: KafkaSettings,
    config: RunnerConfig,
    handler: Arc<dyn Handler>,
    assignment: Assignment,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), KafkaError> {
    let mut consumer_config = client::consumer_config(&settings, &config.group);
    if let Fetching::Gathered { wait } = config.fetching {
        consumer_config
            .set("fetch.wait.max.ms", wait.as_millis().to_string())
            .set("fetch.min.bytes", GATHERED_FETCH_BYTES);
    }
    if let Some(id) = &settings.group_instance_id {
        // Static membership: a member that comes back under the same name
        // within `session.timeout.ms` gets its partitions back without a
        // rebalance. It sends no LeaveGroup when it stops, so a name that never
        // comes back holds its partitions until the session expires.
        consumer_config.set("group.instance.id", id);
    }
    let consumer: StreamConsumer<Assignment> = consumer_config.create_with_context(assignment)?;
    consumer.subscribe(&[config.topic.as_str()])?;
    let dead_letters = DeadLetters {
        producer: client::producer(&settings)?,
        settings,
    };
    let (done_sender, mut done) = mpsc::unbounded_channel::<Finished>();
    let lanes: Vec<mpsc::Sender<OwnedMessage>> = (0..config.lanes.max(1))
        .map(|_| {
            let (sender, receiver) = mpsc::channel(64);
            tokio::spawn(lane(
                receiver,
                handler.clone(),
                dead_letters.clone(),
                done_sender.clone(),
                shutdown.clone(),
            ));
            sender
        })
        .collect();
    drop(done_sender);
    let mut offsets = OffsetTracker::default();
    tracing::info!(topic = %config.topic, group = %config.group, lanes = lanes.len(), "consuming");
    loop {
        tokio::select! {
            biased;
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
            Some(finished) = done.recv() => {
                store(&consumer, &config.topic, offsets.finish(finished));
            }
            received = consumer.recv() => match received {
                Ok(message) => {
                    let message = message.detach();
                    offsets.start(message.partition(), message.offset());
                    let lane = lane_of(message.key(), lanes.len());
                    if lanes[lane].send(message).await.is_err() {
                        break;
                    }
                }
                Err(error) => {
                    crate::metrics::client_error(crate::metrics::Operation::Consume);
                    tracing::warn!(%error, topic = %config.topic, "consumer error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
        }
    }
    // Stop feeding the lanes; let them finish what they hold.
    drop(lanes);
    let drained = tokio::time::timeout(config.drain, async {
        while let Some(finished) = done.recv().await {
            store(&consumer, &config.topic, offsets.finish(finished));
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(topic = %config.topic, "records still in flight at shutdown; they will be redelivered");
    }
    if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
        // Nothing stored since the last commit is not an error worth more than a note.
        tracing::debug!(%error, "final offset commit");
    }
    consumer.unsubscribe();
    tracing::info!(topic = %config.topic, "consumer stopped");
    Ok(())
}

/// One consumer of a service: what it reads and who handles it.
pub struct Consumer {
    pub config: RunnerConfig,
    pub handler: Arc<dyn Handler>,
    pub assignment: Assignment,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Runs a service's consumers until `shutdown` resolves or one of them ends on
/// its own (which ends the service, for its orchestrator to restart); then stops
/// the others gracefully. Returns the first error.
///
/// `stop` turns true the moment the consumers start stopping, before they
/// finish what is in flight: subscribe to it to report readiness red first.
pub async fn run_all(
    settings: &KafkaSettings,
    consumers: Vec<Consumer>,
    shutdown: impl std::future::Future<Output = ()>,
    stop: watch::Sender<bool>,
) -> Result<(), KafkaError> {
    let stopped = stop.subscribe();
    let mut running = tokio::task::JoinSet::new();
    for consumer in consumers {
        running.spawn(run(
            settings.clone(),
            consumer.config,
            consumer.handler,
            consumer.assignment,
            stopped.clone(),
        ));
    }
    let early = tokio::select! {
        () = shutdown => None,
        ended = running.join_next() => {
            tracing::error!("a consumer ended on its own; stopping the service");
            ended
        }
    };
    stop.send_replace(true);
    tracing::info!("consumers stopping: readiness is red; finishing the records in flight");
    let mut ended: Vec<_> = early.into_iter().collect();
    while let Some(next) = running.join_next().await {
        ended.push(next);
    }
    ended
        .into_iter()
        .try_for_each(|task| task.map_err(|error| KafkaError::Task(error.to_string()))?)
}

/// The dead-letter topics of `consumers`' topics, which must exist before the
/// first poison record (brokers need not create topics on first use).
pub fn dead_letter_topics(
    settings: &KafkaSettings,
    consumers: &[Consumer],
) -> Vec<client::TopicSpec> {
    let topics = settings.topics();
    consumers
        .iter()
        .map(|consumer| client::TopicSpec {
            name: topics.dead_letters(&consumer.config.topic),
            partitions: 1,
            compacted: false,
            retention: None,
        })
        .collect()
}

fn lane_of(key: Option<&[u8]>, lanes: usize) -> usize {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    usize::try_from(hasher.finish() % u64::try_from(lanes).unwrap_or(1)).unwrap_or(0)
}

fn store(consumer: &StreamConsumer<Assignment>, topic: &str, advanced: Option<(i32, i64)>) {
    if let Some((partition, offset)) = advanced
        && let Err(error) = consumer.store_offset(topic, partition, offset)
    {
        // The partition was revoked meanwhile: its new owner redelivers from the last commit.
        tracing::debug!(%error, partition, offset, "offset not stored");
    }
}

#[derive(Debug, Clone)]
struct Finished {
    partition: i32,
    offset: i64,
    disposition: Disposition,
}

async fn lane(
    mut records: mpsc::Receiver<OwnedMessage>,
    handler: Arc<dyn Handler>,
    dead_letters: DeadLetters,
    done: mpsc::UnboundedSender<Finished>,
    shutdown: watch::Receiver<bool>,
) {
    while let Some(record) = records.recv().await {
        let mut pause = Duration::from_millis(100);
        let disposition = loop {
            let traceparent = client::header(record.headers(), client::TRACEPARENT);
            let trace = traceparent.and_then(client::TraceContext::parse);
            let span = tracing::info_span!(
                "record",
                topic = record.topic(),
                partition = record.partition(),
                offset = record.offset(),
                trace_id = trace.as_ref().map(client::TraceContext::trace_id),
            );
            if let Some(traceparent) = traceparent {
                presence_runtime::telemetry::continue_trace(&span, traceparent);
            }
            let started = std::time::Instant::now();
            let handled = client::with_trace(trace, handler.handle(&record))
                .instrument(span)
                .await;
            let outcome = match handled {
                Err(HandlerError::Poison(reason)) => {
                    let sent = dead_letters.send(&record, &reason).await;
                    if sent.is_ok() {
                        crate::metrics::dead_lettered(record.topic());
                    }
                    sent.map(|()| Disposition::Done)
                }
                other => other,
            };
            let handled = if outcome.is_ok() {
                Handled::Done
            } else {
                Handled::Retried
            };
            crate::metrics::record_handled(record.topic(), handled, started.elapsed());
            match outcome {
                Ok(disposition) => break Some(disposition),
                Err(error) => {
                    tracing::warn!(%error, topic = record.topic(), partition = record.partition(), offset = record.offset(), "record not handled; retrying");
                    if *shutdown.borrow() {
                        break None;
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        };
        let Some(disposition) = disposition else {
            continue;
        };
        let finished = Finished {
            partition: record.partition(),
            offset: record.offset(),
            disposition,
        };
        if done.send(finished).is_err() {
            return;
        }
    }
}

#[derive(Clone)]
struct DeadLetters {
    producer: KafkaProducer,
    settings: KafkaSettings,
}

impl DeadLetters {
    /// Copies the record to `<topic>.dlq` with the reason; the original stays
    /// readable there for whoever investigates.
    async fn send(&self, record: &OwnedMessage, reason: &str) -> Result<(), HandlerError> {
        let topic = self.settings.topics().dead_letters(record.topic());
        tracing::error!(
            topic = record.topic(),
            partition = record.partition(),
            offset = record.offset(),
            reason,
            "poison record dead-lettered"
        );
        let mut headers = OwnedHeaders::new();
        if let Some(original) = record.headers() {
            for header in original.iter() {
                headers = headers.insert(header);
            }
        }
        headers = client::with_header(headers, DEAD_LETTER_REASON, reason);
        client::send(
            &self.producer,
            &topic,
            record.key().unwrap_or_default(),
            record.payload().unwrap_or_default(),
            headers,
        )
        .await
        .map_err(|error| HandlerError::Retry(format!("dead-letter topic {topic}: {error}")))
    }
}

/// Which offsets of each partition are in flight, held back or done.
#[derive(Debug, Default)]
struct OffsetTracker {
    partitions: HashMap<i32, BTreeMap<i64, State>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    InFlight,
    HeldBack,
    Done,
}

impl OffsetTracker {
    fn start(&mut self, partition: i32, offset: i64) {
        self.partitions
            .entry(partition)
            .or_default()
            .insert(offset, State::InFlight);
    }

    /// Records a finished record; returns the partition and the last offset that
    /// may now be stored, when the done prefix of the partition grew.
    fn finish(&mut self, finished: Finished) -> Option<(i32, i64)> {
        let offsets = self.partitions.get_mut(&finished.partition)?;
        match finished.disposition {
            Disposition::HeldBack => {
                offsets.insert(finished.offset, State::HeldBack);
                return None;
            }
            Disposition::Done => {
                offsets.insert(finished.offset, State::Done);
            }
            Disposition::Releases(released) => {
                for offset in released {
                    if let Some(state) = offsets.get_mut(&offset) {
                        *state = State::Done;
                    }
                }
                offsets.insert(finished.offset, State::Done);
            }
        }
        let mut last = None;
        while let Some(entry) = offsets.first_entry() {
            if *entry.get() != State::Done {
                break;
            }
            last = Some(entry.remove_entry().0);
        }
        last.map(|offset| (finished.partition, offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(partition: i32, offset: i64, disposition: Disposition) -> Finished {
        Finished {
            partition,
            offset,
            disposition,
        }
    }

    #[test]
    fn offsets_advance_only_over_a_done_prefix() {
        let mut tracker = OffsetTracker::default();
        for offset in 0..4 {
            tracker.start(0, offset);
        }
        tracker.start(1, 10);
        assert_eq!(tracker.finish(finished(0, 2, Disposition::Done)), None);
        assert_eq!(
            tracker.finish(finished(0, 0, Disposition::Done)),
            Some((0, 0))
        );
        assert_eq!(
            tracker.finish(finished(0, 1, Disposition::Done)),
            Some((0, 2))
        );
        assert_eq!(
            tracker.finish(finished(1, 10, Disposition::Done)),
            Some((1, 10))
        );
        assert_eq!(
            tracker.finish(finished(0, 3, Disposition::Done)),
            Some((0, 3))
        );
    }

    #[test]
    fn held_back_records_wait_until_their_batch_releases_them() {
        let mut tracker = OffsetTracker::default();
        for offset in 5..9 {
            tracker.start(0, offset);
        }
        // Offsets 5 and 7 are one batch, 6 and 8 another, interleaved.
        assert_eq!(tracker.finish(finished(0, 5, Disposition::HeldBack)), None);
        assert_eq!(tracker.finish(finished(0, 6, Disposition::HeldBack)), None);
        assert_eq!(
            tracker.finish(finished(0, 7, Disposition::Releases(vec![5]))),
            Some((0, 5))
        );
        assert_eq!(
            tracker.finish(finished(0, 8, Disposition::Releases(vec![6]))),
            Some((0, 8))
        );
    }

    #[test]
    fn keys_keep_their_lane() {
        assert_eq!(lane_of(Some(b"T1"), 8), lane_of(Some(b"T1"), 8));
        assert!(lane_of(Some(b"T1"), 8) < 8);
        assert_eq!(lane_of(None, 1), 0);
    }
}
