//! The validator as a Kafka service: scan requests and annulments in, decisions
//! and answers out; inventory chunks in, applied to the store.

use crate::{
    InventoryApplier, Publication, Validator, ValidatorError, annulment_event, scan_event,
};
use async_trait::async_trait;
use presence_domain::inventory::{LineErrors, NumberedRecord};
use presence_domain::time::unix_millis;
use presence_domain::{ScanId, Token};
use presence_kafka::client;
use presence_kafka::producer::KafkaProducer;
use presence_kafka::replies::{answer, expired};
use presence_kafka::runner::{Disposition, Handler, HandlerError};
use presence_kafka::wire;
use presence_ports::{AnnulCommand, Answer, InventoryOutcome, ScanCommand};
use presence_proto::pb;
use presence_proto::pb::reply::Outcome;
use prost::Message as _;
use rdkafka::message::{Message, OwnedMessage};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::SystemTime;

fn retry(error: impl std::fmt::Display) -> HandlerError {
    HandlerError::Retry(error.to_string())
}

/// Decides scan requests and annulments from the `scans` topic.
pub struct ScanHandler {
    validator: Validator,
    producer: KafkaProducer,
    /// Scans being retried whose decision may be recorded but not published (a
    /// commit whose answer was lost, a failed publish): each is finished by
    /// reading what was recorded for it, never by deciding it anew.
    unsettled: Mutex<HashSet<ScanId>>,
}

impl std::fmt::Debug for ScanHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScanHandler").finish_non_exhaustive()
    }
}

impl ScanHandler {
    pub fn new(validator: Validator, producer: KafkaProducer) -> Self {
        Self {
            validator,
            producer,
            unsettled: Mutex::default(),
        }
    }

    fn unsettled(&self) -> std::sync::MutexGuard<'_, HashSet<ScanId>> {
        self.unsettled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One record of the `scans` topic: a scan, or an annulment.
enum Request {
    Scan(ScanCommand),
    Annul(AnnulCommand),
}

impl Request {
    fn decode(record: &OwnedMessage) -> Result<Self, HandlerError> {
        let poison = |error: presence_proto::ProtoError| HandlerError::Poison(error.to_string());
        let message = pb::ScanRequest::decode(record.payload().unwrap_or_default())
            .map_err(|error| HandlerError::Poison(format!("not a ScanRequest: {error}")))?;
        let device_secret =
            presence_proto::secret_digest_from_pb(&message.device_secret_digest).map_err(poison)?;
        if presence_proto::is_annulment(&message) {
            let (scan_id, request) = presence_proto::annul_from_pb(message).map_err(poison)?;
            return Ok(Self::Annul(AnnulCommand {
                scan_id,
                request,
                device_secret,
            }));
        }
        let (scan_id, kind, request, shown) =
            presence_proto::scan_from_pb(message).map_err(poison)?;
        Ok(Self::Scan(ScanCommand {
            scan_id,
            kind,
            request,
            device_secret,
            shown,
        }))
    }

    fn scan_id(&self) -> &ScanId {
        match self {
            Self::Scan(command) => &command.scan_id,
            Self::Annul(command) => &command.scan_id,
        }
    }

    async fn decide(&self, validator: &Validator) -> Result<Answer, ValidatorError> {
        match self {
            Self::Scan(command) => validator.decide(command).await,
            Self::Annul(command) => validator.annul(command).await,
        }
    }

    async fn redeliver(&self, validator: &Validator) -> Result<Option<Answer>, ValidatorError> {
        match self {
            Self::Scan(command) => validator.redeliver(command).await,
            Self::Annul(command) => validator.redeliver_annul(command).await,
        }
    }

    /// The reply to the gateway: the answer as a decision.
    fn reply(self, answer: Answer) -> pb::Decision {
        let decided_at = unix_millis(SystemTime::now());
        let event = match &self {
            Self::Scan(command) => scan_event(
                command,
                answer.scan_id,
                command.request.token.clone(),
                answer.decision,
                decided_at,
            ),
            // The gateway reads the scan id and the decision; the rest of an
            // annulment's event is on the decisions stream.
            Self::Annul(command) => annulment_event(
                command,
                answer.scan_id,
                Publication::refused(Token::new(""), String::new()),
                answer.decision,
                decided_at,
            ),
        };
        pb::Decision::from(&event)
    }
}

#[async_trait]
impl Handler for ScanHandler {
    async fn handle(&self, record: &OwnedMessage) -> Result<Disposition, HandlerError> {
        let request = Request::decode(record)?;
        let scan_id = request.scan_id().clone();
        let late = expired(record, unix_millis(SystemTime::now()));
        let unsettled = self.unsettled().contains(&scan_id);
        let decided = if late || unsettled {
            // Past its deadline the gateway has answered 503 already: deciding now
            // would change state behind an answer that said nothing happened (its
            // retry decides). An unsettled scan may have a decision recorded. Either
            // way, a decision already recorded for this very scan is finished first:
            // published and answered.
            match request.redeliver(&self.validator).await {
                Ok(Some(answer)) => Ok(answer),
                Ok(None) if !late => request.decide(&self.validator).await,
                Ok(None) => {
                    tracing::warn!(%scan_id, "scan request expired before it was decided; dropped");
                    self.unsettled().remove(&scan_id);
                    return Ok(Disposition::Done);
                }
                // Whether a decision is recorded cannot be told yet: nobody waits
                // for this answer, so try again until the store tells.
                Err(error) => return Err(retry(error)),
            }
        } else {
            request.decide(&self.validator).await
        };
        let outcome = match decided {
            Ok(answer) => Outcome::Decision(request.reply(answer)),
            // Perhaps decided, but not on the decisions stream: the record is tried
            // again, and reads what was recorded for it before anything else.
            Err(error) if error.may_be_recorded() => {
                self.unsettled().insert(scan_id);
                return Err(retry(error));
            }
            // Nothing was decided: the gateway answers 503 now rather than waiting.
            Err(error) => Outcome::Unavailable(error.to_string()),
        };
        answer(&self.producer, record, outcome)
            .await
            .map_err(retry)?;
        self.unsettled().remove(&scan_id);
        Ok(Disposition::Done)
    }
}

/// Applies inventory chunks from the `inventory` topic, a batch at a time.
/// Runs on one lane: chunks arrive in order on the topic's one partition, those
/// of concurrent uploads interleaved. A chunk's offset is held back until its
/// batch is applied, so a crash mid-batch replays the whole batch.
pub struct InventoryHandler {
    applier: InventoryApplier,
    producer: KafkaProducer,
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    batches: HashMap<String, Batch>,
    /// Offsets of batches given up, released with the next finished record.
    released: Vec<i64>,
}

#[derive(Default)]
struct Batch {
    records: Vec<NumberedRecord>,
    errors: LineErrors,
    offsets: Vec<i64>,
    /// When its uploader stops waiting (Unix ms); none for upstream publishers.
    deadline: Option<i64>,
}

impl Pending {
    /// Drops batches whose uploader stopped waiting (their gateway answered 503:
    /// the upload is to be sent again), releasing their offsets.
    fn give_up_expired(&mut self, now: i64) {
        let expired: Vec<String> = self
            .batches
            .iter()
            .filter(|(_, batch)| batch.deadline.is_some_and(|deadline| now > deadline))
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            if let Some(batch) = self.batches.remove(&id) {
                tracing::warn!(batch = %id, chunks = batch.offsets.len(), "inventory batch incomplete past its deadline; given up");
                self.released.extend(batch.offsets);
            }
        }
    }
}

impl std::fmt::Debug for InventoryHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InventoryHandler").finish_non_exhaustive()
    }
}

impl InventoryHandler {
    pub fn new(applier: InventoryApplier, producer: KafkaProducer) -> Self {
        Self {
            applier,
            producer,
            pending: Mutex::default(),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl Handler for InventoryHandler {
    async fn handle(&self, record: &OwnedMessage) -> Result<Disposition, HandlerError> {
        let chunk = pb::InventoryChunk::decode(record.payload().unwrap_or_default())
            .map_err(|error| HandlerError::Poison(format!("not an InventoryChunk: {error}")))?;
        let (records, errors) = {
            let mut pending = self.pending();
            pending.give_up_expired(unix_millis(SystemTime::now()));
            let batch = pending.batches.entry(chunk.batch_id.clone()).or_default();
            // A chunk tried again after an outage is in its batch already.
            if !batch.offsets.contains(&record.offset()) {
                let (records, errors) = wire::records_from_pb(chunk.records);
                batch.records.extend(records);
                batch.errors = std::mem::take(&mut batch.errors).merge(errors).merge(
                    wire::line_errors_from_pb(chunk.syntax_errors, chunk.syntax_error_count),
                );
                batch.offsets.push(record.offset());
                batch.deadline =
                    client::header(record.headers(), client::DEADLINE).and_then(|d| d.parse().ok());
            }
            if !chunk.last && !chunk.batch_id.is_empty() {
                return Ok(Disposition::HeldBack);
            }
            // The batch stays pending until it is applied and answered: an outage
            // meanwhile retries the last chunk, which finds the whole batch here.
            (batch.records.clone(), batch.errors.clone())
        };
        let uploader_waits = client::header(record.headers(), client::REPLY_TO).is_some();
        let outcome = match self.applier.apply(records, errors).await {
            Ok(outcome) => {
                if let InventoryOutcome::Rejected(errors) = &outcome {
                    tracing::warn!(bad_lines = errors.total(), batch = %chunk.batch_id, "inventory batch rejected");
                }
                Outcome::Inventory(wire::inventory_outcome_to_pb(&outcome))
            }
            // An upload is waiting: tell it now; the operator uploads again.
            Err(error) if uploader_waits => Outcome::Unavailable(error.to_string()),
            // Published by another system: keep trying, inventory must not be lost.
            Err(error) => return Err(retry(error)),
        };
        answer(&self.producer, record, outcome)
            .await
            .map_err(retry)?;
        let mut pending = self.pending();
        let batch = pending.batches.remove(&chunk.batch_id).unwrap_or_default();
        let mut released = std::mem::take(&mut pending.released);
        released.extend(
            batch
                .offsets
                .into_iter()
                .filter(|offset| *offset != record.offset()),
        );
        Ok(Disposition::Releases(released))
    }
}
