//! [`KafkaProducer`]: the producer every service sends with, one future per
//! record, resolved when the broker acknowledges it.
//!
//! rdkafka's `FutureProducer` serves delivery reports from a thread that polls in
//! 100 ms cycles, and its poll loop hands librdkafka the remaining time truncated
//! to whole milliseconds: the last millisecond of every cycle is a busy loop of
//! zero-timeout polls, about 1 % of a core per producer while idle
//! (docs/benchmarks.md). This producer's thread polls in [`POLL_CYCLE`]s, so the
//! same spin happens once per cycle instead of ten times a second. Delivery
//! reports are not delayed by the cycle: a poll returns as soon as a report is
//! queued.

use rdkafka::ClientContext;
use rdkafka::client::Client;
use rdkafka::config::{ClientConfig, FromClientConfigAndContext};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::oneshot;

/// How long one poll of the delivery-report thread lasts at most; also how long
/// the thread outlives the last handle on the producer.
const POLL_CYCLE: Duration = Duration::from_secs(1);

/// An idempotent producer shared by clones; the last clone dropped stops its
/// polling thread (within [`POLL_CYCLE`]), which then releases the client.
#[derive(Clone)]
pub struct KafkaProducer {
    producer: Arc<BaseProducer<Acknowledgements>>,
    _polling: Arc<PollingThread>,
}

impl std::fmt::Debug for KafkaProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaProducer").finish_non_exhaustive()
    }
}

impl KafkaProducer {
    /// Creates the producer and starts its polling thread.
    pub fn new(config: &ClientConfig) -> Result<Self, KafkaError> {
        let producer = Arc::new(BaseProducer::from_config_and_context(
            config,
            Acknowledgements,
        )?);
        let stop = Arc::new(AtomicBool::new(false));
        let polled = producer.clone();
        let stopping = stop.clone();
        std::thread::Builder::new()
            .name("kafka-delivery-reports".into())
            .spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    polled.poll(POLL_CYCLE);
                }
            })
            .map_err(|error| {
                KafkaError::ClientCreation(format!("cannot start the polling thread: {error}"))
            })?;
        Ok(Self {
            producer,
            _polling: Arc::new(PollingThread { stop }),
        })
    }

    /// Sends one record, to `partition` or else the one its key hashes to, and
    /// waits until the broker acknowledges it (or the producer's
    /// `message.timeout.ms` gives up). A full local queue fails at once rather
    /// than waiting for room.
    pub async fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        payload: &[u8],
        headers: OwnedHeaders,
    ) -> Result<(), KafkaError> {
        let (acknowledge, acknowledged) = oneshot::channel();
        let mut record = BaseRecord::with_opaque_to(topic, Box::new(acknowledge))
            .key(key)
            .payload(payload)
            .headers(headers);
        record.partition = partition;
        self.producer.send(record).map_err(|(error, _)| error)?;
        acknowledged.await.map_err(|_| KafkaError::Canceled)?
    }

    /// The underlying client, for metadata requests.
    pub fn client(&self) -> &Client<Acknowledgements> {
        self.producer.client()
    }
}

/// Tells the polling thread to stop when the last producer handle is dropped.
struct PollingThread {
    stop: Arc<AtomicBool>,
}

impl Drop for PollingThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Resolves each record's future with its delivery report.
#[derive(Debug)]
pub struct Acknowledgements;

impl ClientContext for Acknowledgements {
    /// What the producer asks of the brokers, for `/metrics`.
    fn stats(&self, statistics: rdkafka::Statistics) {
        crate::metrics::client_statistics(&statistics);
    }
}

impl ProducerContext for Acknowledgements {
    type DeliveryOpaque = Box<oneshot::Sender<Result<(), KafkaError>>>;

    fn delivery(&self, report: &DeliveryResult<'_>, acknowledge: Self::DeliveryOpaque) {
        let outcome = report
            .as_ref()
            .map(|_| ())
            .map_err(|(error, _)| error.clone());
        // The sender stopped waiting (its request was cancelled): nobody to tell.
        let _ = acknowledge.send(outcome);
    }
}
