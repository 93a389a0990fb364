//! [`KafkaProducer`]: the producer every service sends with, one future per
//! record, resolved when the broker acknowledges it; or, for a record whose
//! answer comes another way (a gateway's request), only a failure reported.
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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};

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

    /// Sends one record and waits until the broker acknowledges it (or the producer's
    /// `message.timeout.ms` gives up). A full local queue fails at once rather
    /// than waiting for room.
    pub async fn send(&self, record: Record<'_>) -> Result<(), KafkaError> {
        let (acknowledge, acknowledged) = oneshot::channel();
        self.enqueue(Delivery::Acknowledge(acknowledge), record)?;
        acknowledged.await.map_err(|_| KafkaError::Canceled)?
    }

    /// Sends one record without waiting for the broker: for a request whose
    /// answer can only come after the broker has it, so waiting for the
    /// acknowledgement too would wake the sender once more per request for
    /// nothing. The returned [`DeliveryFailure`] resolves only if the record
    /// cannot be delivered; a delivered record wakes nobody.
    pub fn send_unacknowledged(&self, record: Record<'_>) -> Result<DeliveryFailure, KafkaError> {
        let failure = Arc::new(FailureSlot::default());
        self.enqueue(Delivery::ReportFailure(failure.clone()), record)?;
        Ok(DeliveryFailure(failure))
    }

    fn enqueue(&self, delivery: Delivery, outgoing: Record<'_>) -> Result<(), KafkaError> {
        let mut record = BaseRecord::with_opaque_to(outgoing.topic, Box::new(delivery))
            .key(outgoing.key)
            .payload(outgoing.payload)
            .headers(outgoing.headers);
        record.partition = outgoing.partition;
        self.producer.send(record).map_err(|(error, _)| error)
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

/// One record to send: to `partition`, or else to the one its key hashes to.
#[derive(Debug)]
pub struct Record<'a> {
    pub topic: &'a str,
    pub partition: Option<i32>,
    pub key: &'a [u8],
    pub payload: &'a [u8],
    pub headers: OwnedHeaders,
}

/// Who learns how a record's delivery went.
#[derive(Debug)]
pub enum Delivery {
    /// Its sender, either way.
    Acknowledge(oneshot::Sender<Result<(), KafkaError>>),
    /// Its [`DeliveryFailure`], only if it failed.
    ReportFailure(Arc<FailureSlot>),
}

/// Where a failed delivery is left for its [`DeliveryFailure`].
#[derive(Debug, Default)]
pub struct FailureSlot {
    error: Mutex<Option<KafkaError>>,
    failed: Notify,
}

/// Resolves when a record sent with [`KafkaProducer::send_unacknowledged`]
/// could not be delivered (the producer's `message.timeout.ms` passed, or the
/// broker refused it); never, when it was.
#[derive(Debug)]
pub struct DeliveryFailure(Arc<FailureSlot>);

impl DeliveryFailure {
    pub async fn failed(&self) -> KafkaError {
        loop {
            // A failure reported before this wait left a permit: no wake is lost.
            self.0.failed.notified().await;
            let error = self
                .0
                .error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(error) = error {
                return error;
            }
        }
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
    type DeliveryOpaque = Box<Delivery>;

    fn delivery(&self, report: &DeliveryResult<'_>, delivery: Self::DeliveryOpaque) {
        let outcome = report
            .as_ref()
            .map(|_| ())
            .map_err(|(error, _)| error.clone());
        match (*delivery, outcome) {
            // The sender stopped waiting (its request was cancelled): nobody to tell.
            (Delivery::Acknowledge(acknowledge), outcome) => {
                let _ = acknowledge.send(outcome);
            }
            (Delivery::ReportFailure(_), Ok(())) => {}
            (Delivery::ReportFailure(slot), Err(error)) => {
                *slot.error.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
                slot.failed.notify_one();
            }
        }
    }
}
