//! The consumer loop every service runs on.
//!
//! Records of one key (one ticket, one venue) are handled one after another in
//! arrival order; records of different keys run side by side, up to the
//! runner's lanes at once. A record's offset is stored for commit only when it
//! and every earlier record of its partition are done, so a crash at any point
//! redelivers whatever was not finished: at-least-once, with the handlers making
//! a redelivery harmless. A record the handler cannot understand goes to
//! `<topic>.dlq` with the reason, and the partition keeps flowing.
//!
//! Everything runs on the consumer loop's own task: it takes what has been
//! fetched as one batch (up to [`MAX_BATCH`]), starts the records it may, and
//! polls them all together. So the Redis commands a batch sends and the records
//! it produces leave together, their answers wake one task once, and finished
//! records are stored without crossing to another task: a scan is not handed
//! from the consumer to a lane, to the Redis connection, to the producer and
//! back each on its own (docs/benchmarks.md, "Batched hand-offs").

use crate::KafkaError;
use crate::client::{self, DEAD_LETTER_REASON};
use crate::metrics::Handled;
use crate::producer::KafkaProducer;
use crate::settings::KafkaSettings;
use async_trait::async_trait;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt as _, StreamExt as _};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{Headers, Message, OwnedHeaders, OwnedMessage};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::watch;
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

/// The most records the consumer loop takes at once from what has been
/// fetched, and the most it lets wait beyond its lanes before it takes no more:
/// enough to carry a busy fetch in one batch, few enough to bound what a runner
/// holds in memory.
pub const MAX_BATCH: usize = 256;

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
    // One lane keeps the partition's order across keys too (RunnerConfig::lanes).
    let order = if config.lanes <= 1 {
        Order::Partition
    } else {
        Order::Key
    };
    let mut schedule = Schedule::new(order, config.lanes.max(1));
    let stopping = shutdown.clone();
    let mut running = FuturesUnordered::new();
    let start = |record: OwnedMessage, key: ChainKey| {
        let (handler, dead_letters, stopping) = (&handler, &dead_letters, &stopping);
        async move { (key, handle(&record, handler, dead_letters, stopping).await) }.boxed()
    };
    let start_ready = |schedule: &mut Schedule, running: &mut FuturesUnordered<_>| {
        while let Some((record, key)) = schedule.next() {
            running.push(start(record, key));
        }
    };
    let mut offsets = OffsetTracker::default();
    tracing::info!(topic = %config.topic, group = %config.group, lanes = config.lanes, "consuming");
    loop {
        tokio::select! {
            biased;
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
            Some(first) = running.next(), if !running.is_empty() => {
                // Report everything that is done by now together.
                let mut finished = Vec::new();
                let mut next = Some(first);
                while let Some((key, record)) = next.take() {
                    schedule.finish(key);
                    finished.extend(record);
                    if let Some(done) = running.next().now_or_never() {
                        next = done;
                    }
                }
                store_finished(&consumer, &config.topic, &mut offsets, finished);
            }
            received = consumer.recv(), if schedule.has_room() => match received {
                Ok(message) => {
                    let mut taken = 0;
                    let mut next = Some(message.detach());
                    // Take what has been fetched already, without waiting for more.
                    while let Some(message) = next.take() {
                        offsets.start(message.partition(), message.offset());
                        schedule.admit(message);
                        taken += 1;
                        if taken < MAX_BATCH {
                            match consumer.recv().now_or_never() {
                                Some(Ok(fetched)) => next = Some(fetched.detach()),
                                Some(Err(error)) => consumer_error(&config.topic, &error),
                                None => {}
                            }
                        }
                    }
                    crate::metrics::handed_over(&config.topic, taken);
                }
                Err(error) => {
                    consumer_error(&config.topic, &error);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
        }
        start_ready(&mut schedule, &mut running);
    }
    // Take no more records; finish those taken.
    start_ready(&mut schedule, &mut running);
    let drained = tokio::time::timeout(config.drain, async {
        while let Some((key, record)) = running.next().await {
            schedule.finish(key);
            store_finished(
                &consumer,
                &config.topic,
                &mut offsets,
                record.into_iter().collect(),
            );
            start_ready(&mut schedule, &mut running);
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

fn consumer_error(topic: &str, error: &rdkafka::error::KafkaError) {
    crate::metrics::client_error(crate::metrics::Operation::Consume);
    tracing::warn!(%error, topic, "consumer error");
}

/// Stores, for each partition, the last offset a finished batch lets advance to.
fn store_finished(
    consumer: &StreamConsumer<Assignment>,
    topic: &str,
    offsets: &mut OffsetTracker,
    finished: Vec<Finished>,
) {
    let mut advanced: HashMap<i32, i64> = HashMap::new();
    for record in finished {
        if let Some((partition, offset)) = offsets.finish(record) {
            advanced.insert(partition, offset);
        }
    }
    for (partition, offset) in advanced {
        if let Err(error) = consumer.store_offset(topic, partition, offset) {
            // The partition was revoked meanwhile: its new owner redelivers from the last commit.
            tracing::debug!(%error, partition, offset, "offset not stored");
        }
    }
}

#[derive(Debug, Clone)]
struct Finished {
    partition: i32,
    offset: i64,
    disposition: Disposition,
}

/// Which records must wait for each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// Those of one key: the others run side by side.
    Key,
    /// All of them, in the partition's order (a runner with one lane).
    Partition,
}

/// What records wait on: their key, or with [`Order::Partition`] one chain for all.
type ChainKey = Option<Vec<u8>>;

/// Which taken records run now and which wait. At most `lanes` run at once and
/// never two of one chain; each chain runs in arrival order, and chains wait
/// for a free lane in the order they became ready. The runner stops taking
/// records while [`MAX_BATCH`] of them wait beyond the lanes.
#[derive(Debug)]
struct Schedule {
    order: Order,
    lanes: usize,
    /// The records not started yet of every chain running or waiting.
    chains: HashMap<ChainKey, VecDeque<OwnedMessage>>,
    /// Chains with records to start and none running, oldest first.
    ready: VecDeque<ChainKey>,
    running: HashSet<ChainKey>,
    waiting: usize,
}

impl Schedule {
    fn new(order: Order, lanes: usize) -> Self {
        Self {
            order,
            lanes,
            chains: HashMap::new(),
            ready: VecDeque::new(),
            running: HashSet::new(),
            waiting: 0,
        }
    }

    fn has_room(&self) -> bool {
        self.waiting < self.lanes + MAX_BATCH
    }

    fn admit(&mut self, record: OwnedMessage) {
        let key = match self.order {
            Order::Key => record.key().map(<[u8]>::to_vec),
            Order::Partition => None,
        };
        let chain = self.chains.entry(key.clone()).or_default();
        if chain.is_empty() && !self.running.contains(&key) {
            self.ready.push_back(key);
        }
        chain.push_back(record);
        self.waiting += 1;
    }

    /// The next record to start, while a lane is free.
    fn next(&mut self) -> Option<(OwnedMessage, ChainKey)> {
        if self.running.len() >= self.lanes {
            return None;
        }
        let key = self.ready.pop_front()?;
        let record = self.chains.get_mut(&key)?.pop_front()?;
        self.waiting -= 1;
        self.running.insert(key.clone());
        Some((record, key))
    }

    /// The running record of `key` is done: its chain's next record may start.
    fn finish(&mut self, key: ChainKey) {
        self.running.remove(&key);
        match self.chains.get(&key) {
            Some(chain) if !chain.is_empty() => self.ready.push_back(key),
            _ => {
                self.chains.remove(&key);
            }
        }
    }
}

/// Handles one record until it is done (or dead-lettered), retrying with a
/// growing pause while what it needs is down; `None` when the service stops
/// while it is still being retried (it will be redelivered).
async fn handle(
    record: &OwnedMessage,
    handler: &Arc<dyn Handler>,
    dead_letters: &DeadLetters,
    shutdown: &watch::Receiver<bool>,
) -> Option<Finished> {
    let mut pause = Duration::from_millis(100);
    loop {
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
        let handled = client::with_trace(trace, handler.handle(record))
            .instrument(span)
            .await;
        let outcome = match handled {
            Err(HandlerError::Poison(reason)) => {
                let sent = dead_letters.send(record, &reason).await;
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
            Ok(disposition) => {
                return Some(Finished {
                    partition: record.partition(),
                    offset: record.offset(),
                    disposition,
                });
            }
            Err(error) => {
                tracing::warn!(%error, topic = record.topic(), partition = record.partition(), offset = record.offset(), "record not handled; retrying");
                if *shutdown.borrow() {
                    return None;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
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

    fn record(key: &str, offset: i64) -> OwnedMessage {
        OwnedMessage::new(
            None,
            Some(key.as_bytes().to_vec()),
            "scans".into(),
            rdkafka::Timestamp::NotAvailable,
            0,
            offset,
            None,
        )
    }

    /// Starts what the schedule lets start; returns the offsets started.
    fn start_all(schedule: &mut Schedule, running: &mut Vec<(i64, ChainKey)>) -> Vec<i64> {
        let mut started = Vec::new();
        while let Some((record, key)) = schedule.next() {
            started.push(record.offset());
            running.push((record.offset(), key));
        }
        started
    }

    /// Finishes the running record at `offset`.
    fn finish_offset(schedule: &mut Schedule, running: &mut Vec<(i64, ChainKey)>, offset: i64) {
        let at = running.iter().position(|(o, _)| *o == offset);
        let (_, key) = running.remove(at.unwrap_or_else(|| panic!("{offset} is not running")));
        schedule.finish(key);
    }

    #[test]
    fn records_of_one_key_run_in_turn_and_other_keys_side_by_side() {
        let mut schedule = Schedule::new(Order::Key, 8);
        let mut running = Vec::new();
        for (key, offset) in [("T1", 1), ("T2", 2), ("T1", 3), ("T3", 4), ("T2", 5)] {
            schedule.admit(record(key, offset));
        }
        assert_eq!(start_all(&mut schedule, &mut running), [1, 2, 4]);
        finish_offset(&mut schedule, &mut running, 2);
        assert_eq!(start_all(&mut schedule, &mut running), [5]);
        finish_offset(&mut schedule, &mut running, 1);
        assert_eq!(start_all(&mut schedule, &mut running), [3]);
        for offset in [3, 4, 5] {
            finish_offset(&mut schedule, &mut running, offset);
        }
        assert!(start_all(&mut schedule, &mut running).is_empty());
        assert!(schedule.chains.is_empty() && schedule.running.is_empty());
    }

    #[test]
    fn no_more_run_at_once_than_there_are_lanes() {
        let mut schedule = Schedule::new(Order::Key, 2);
        let mut running = Vec::new();
        for (key, offset) in [("T1", 1), ("T2", 2), ("T3", 3), ("T4", 4)] {
            schedule.admit(record(key, offset));
        }
        assert_eq!(start_all(&mut schedule, &mut running), [1, 2]);
        finish_offset(&mut schedule, &mut running, 2);
        assert_eq!(start_all(&mut schedule, &mut running), [3]);
        assert_eq!(schedule.waiting, 1);
    }

    #[test]
    fn one_lane_runs_the_partition_in_order_whatever_the_keys() {
        let mut schedule = Schedule::new(Order::Partition, 1);
        let mut running = Vec::new();
        for (key, offset) in [("B1", 7), ("B2", 8), ("B1", 9)] {
            schedule.admit(record(key, offset));
        }
        for offset in [7, 8, 9] {
            assert_eq!(start_all(&mut schedule, &mut running), [offset]);
            finish_offset(&mut schedule, &mut running, offset);
        }
    }

    #[test]
    fn taking_stops_while_a_full_batch_waits_beyond_the_lanes() {
        let mut schedule = Schedule::new(Order::Key, 1);
        for offset in 0..=i64::try_from(MAX_BATCH).unwrap_or(i64::MAX) {
            assert!(schedule.has_room());
            schedule.admit(record("T1", offset));
        }
        assert!(!schedule.has_room());
        assert!(schedule.next().is_some());
        assert!(schedule.has_room());
    }
}
