//! The gateway's transport: each request is a record on the topic of the
//! service that answers it, and the answer comes back on a partition of the
//! gateways' reply topic that this gateway reads ([`crate::replies`]).

use crate::audit::KafkaAudit;
use crate::client::{
    self, CORRELATION_ID, DEADLINE, REPLY_PARTITION, REPLY_TO, TRACEPARENT, TopicSpec, TraceContext,
};
use crate::producer::KafkaProducer;
use crate::replies::ReplyRouter;
use crate::settings::{KafkaSettings, Topics};
use crate::{KafkaError, wire};
use async_trait::async_trait;
use presence_domain::inventory::{LineErrors, NumberedRecord};
use presence_domain::time::unix_millis;
use presence_domain::{
    DecisionEvent, Device, DeviceId, DeviceInitRequest, DeviceLookup, TicketQuery, TicketReport,
    VenueId, VenueStats, barcode,
};
use presence_ports::{
    AnnulCommand, Answer, DeviceInitOutcome, InventoryOutcome, ScanCommand, Transport,
    TransportError,
};
use presence_proto::pb;
use presence_proto::pb::reply::Outcome;
use prost::Message as _;
use rdkafka::message::OwnedHeaders;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};
use tokio::task::JoinHandle;
use tracing::Instrument;

/// Largest inventory chunk, encoded; well under Kafka's default 1 MB message limit.
const INVENTORY_CHUNK_BYTES: usize = 512 * 1024;

/// How long the reply topic keeps answers, when a gateway creates it. An
/// answer is read within its request's deadline; what is kept only bounds
/// what a gateway reads when it starts on a partition whose committed offset
/// has expired (it starts from the oldest answer kept).
const REPLY_RETENTION: Duration = Duration::from_secs(3600);

/// How long the gateway waits for answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerDeadlines {
    /// Scans and device calls (the SPEC's 2 s).
    pub request: Duration,
    /// A whole inventory batch being applied.
    pub inventory: Duration,
}

impl Default for AnswerDeadlines {
    fn default() -> Self {
        Self {
            request: Duration::from_secs(2),
            inventory: Duration::from_secs(600),
        }
    }
}

/// `Transport` over Kafka, for the gateway.
pub struct KafkaTransport {
    topics: Topics,
    producer: KafkaProducer,
    /// This instance's reply reader, once its topics are prepared.
    replies: Arc<OnceLock<ReplyRouter>>,
    /// Why the reply reader has not started yet.
    starting: Arc<Mutex<String>>,
    preparing: JoinHandle<()>,
    deadlines: AnswerDeadlines,
}

impl std::fmt::Debug for KafkaTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaTransport")
            .field("replies", &self.replies.get().map(ReplyRouter::topic))
            .finish_non_exhaustive()
    }
}

/// The topics a gateway writes to, and the reply topic it reads.
pub fn gateway_topics(settings: &KafkaSettings) -> Vec<TopicSpec> {
    let topics = settings.topics();
    vec![
        TopicSpec {
            name: topics.scans(),
            partitions: settings.partitions,
            compacted: false,
            retention: None,
        },
        TopicSpec {
            name: topics.registry(),
            partitions: settings.partitions,
            compacted: false,
            retention: None,
        },
        TopicSpec {
            name: topics.inventory(),
            partitions: 1,
            compacted: false,
            retention: None,
        },
        TopicSpec {
            name: topics.replies(),
            partitions: settings.reply_partitions,
            compacted: false,
            retention: Some(REPLY_RETENTION),
        },
        TopicSpec {
            name: topics.audit(),
            partitions: 1,
            compacted: false,
            retention: Some(crate::audit::AUDIT_RETENTION),
        },
    ]
}

impl KafkaTransport {
    /// Starts preparing, in the background, the topics it writes to and the
    /// reply topic, then reading that in the gateways' group. Until that works
    /// (Kafka refusing the credentials, a topic missing: retried, see
    /// [`client::prepare_topics_retrying`]), and while the group gives this
    /// gateway no reply partition, requests and readiness fail with the reason,
    /// and the gateway still serves its probes.
    pub fn start(settings: KafkaSettings, deadlines: AnswerDeadlines) -> Result<Self, KafkaError> {
        let topics = settings.topics();
        let producer = client::producer(&settings)?;
        let replies = Arc::new(OnceLock::new());
        let starting = Arc::new(Mutex::new("connecting to Kafka".to_owned()));
        let preparing = tokio::spawn(prepare(settings, replies.clone(), starting.clone()));
        Ok(Self {
            topics,
            producer,
            replies,
            starting,
            preparing,
            deadlines,
        })
    }

    /// The audit trail's sink, sharing this transport's producer.
    pub fn audit(&self) -> KafkaAudit {
        KafkaAudit::new(self.producer.clone(), self.topics.audit())
    }

    /// The reply reader, or why there is none yet.
    fn replies(&self) -> Result<&ReplyRouter, TransportError> {
        self.replies.get().ok_or_else(|| {
            TransportError::Unavailable(
                self.starting
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone(),
            )
        })
    }

    /// The reply reader and a partition it reads, for one request's answer.
    fn reply_partition(&self) -> Result<(&ReplyRouter, i32), TransportError> {
        let replies = self.replies()?;
        let partition = replies.partition().ok_or_else(|| {
            TransportError::Unavailable(format!(
                "this gateway reads no partition of {} yet (joining the gateways' group, \
                 or more gateways than its partitions: PRESENCE_REPLY_PARTITIONS)",
                replies.topic()
            ))
        })?;
        Ok((replies, partition))
    }

    /// Sends one request to the registry, keyed by venue, and waits for its reply.
    async fn ask_registry(
        &self,
        venue_id: &VenueId,
        request: pb::registry_request::Request,
    ) -> Result<pb::RegistryReply, TransportError> {
        let message = pb::RegistryRequest {
            request: Some(request),
        };
        let id = uuid::Uuid::now_v7().to_string();
        let outcome = self
            .request(
                &self.topics.registry(),
                venue_id.as_str().as_bytes(),
                &id,
                Payloads::one(message.encode_to_vec()),
                self.deadlines.request,
            )
            .await?;
        match outcome {
            Outcome::Registry(reply) => Ok(reply),
            _ => Err(unexpected("not a registry reply")),
        }
    }

    /// Sends one request and waits for its answer until `deadline` elapses.
    async fn request(
        &self,
        topic: &str,
        key: &[u8],
        correlation_id: &str,
        payloads: Payloads,
        deadline: Duration,
    ) -> Result<Outcome, TransportError> {
        // The round trip is a span of its own: the services' spans hang under it.
        let span = tracing::info_span!("kafka_request", topic);
        let trace = span.in_scope(TraceContext::current);
        let started = std::time::Instant::now();
        let expires = unix_millis(SystemTime::now() + deadline).to_string();
        let (replies, reply_partition) = self.reply_partition()?;
        let reply_partition = reply_partition.to_string();
        let mut waiting = replies.wait_for(correlation_id);
        let headers = || {
            [
                (REPLY_TO, replies.topic()),
                (REPLY_PARTITION, reply_partition.as_str()),
                (CORRELATION_ID, correlation_id),
                (DEADLINE, expires.as_str()),
                (TRACEPARENT, trace.header_value().as_str()),
            ]
            .into_iter()
            .fold(OwnedHeaders::new(), |headers, (name, value)| {
                client::with_header(headers, name, value)
            })
        };
        let unavailable = |error: KafkaError| TransportError::Unavailable(error.to_string());
        let answer = async {
            for payload in &payloads.leading {
                // Each chunk is in the broker's hands before the next is sent:
                // an upload never outruns the producer's queue.
                client::send(&self.producer, topic, key, payload, headers())
                    .await
                    .map_err(unavailable)?;
            }
            // The answer comes only after the broker has the request, so its
            // acknowledgement is not waited for; a failure to deliver it
            // answers at once.
            let failed =
                client::send_request(&self.producer, topic, key, &payloads.last, headers())
                    .map_err(unavailable)?;
            tokio::select! {
                answer = waiting.answer() => answer
                    .ok_or_else(|| TransportError::Unavailable("reply reader stopped".into())),
                error = failed => Err(unavailable(error)),
            }
        };
        let reply = tokio::time::timeout(deadline, answer)
            .instrument(span)
            .await;
        crate::metrics::request_answered(topic, started.elapsed());
        let reply = reply.map_err(|_| TransportError::Timeout)??;
        match reply.outcome {
            Some(Outcome::Unavailable(reason)) => Err(TransportError::Unavailable(reason)),
            Some(outcome) => Ok(outcome),
            None => Err(TransportError::Unavailable("empty reply".into())),
        }
    }

    /// Leaves the gateways' group (its reply partitions go to the others at
    /// once); call once the gateway has stopped.
    pub async fn close(self) {
        self.preparing.abort();
        // The aborted task drops its handle on the reply reader before resolving.
        let _ = self.preparing.await;
        if let Some(replies) = Arc::into_inner(self.replies).and_then(OnceLock::into_inner) {
            replies.stop().await;
        }
    }
}

/// Prepares the gateway's topics (the reply topic among them) until it works,
/// then starts the reply reader; meanwhile `starting` says why requests cannot
/// be made.
async fn prepare(
    settings: KafkaSettings,
    replies: Arc<OnceLock<ReplyRouter>>,
    starting: Arc<Mutex<String>>,
) {
    let not_ready = |reason: &str| {
        *starting.lock().unwrap_or_else(PoisonError::into_inner) = reason.to_owned();
    };
    loop {
        client::prepare_topics_retrying(&settings, &gateway_topics(&settings), not_ready).await;
        match ReplyRouter::start(&settings) {
            Ok(router) => {
                tracing::info!(replies = router.topic(), "kafka transport started");
                // Set only here, once.
                let _ = replies.set(router);
                return;
            }
            Err(error) => {
                let reason = error.to_string();
                tracing::error!(%reason, "reply reader not started; not ready, retrying");
                not_ready(&reason);
                tokio::time::sleep(client::PREPARE_RETRY).await;
            }
        }
    }
}

/// The answer a validator replied with: a decision.
fn answer_of(outcome: Outcome) -> Result<Answer, TransportError> {
    match outcome {
        Outcome::Decision(decision) => {
            let event = DecisionEvent::try_from(decision).map_err(undecodable)?;
            Ok(Answer {
                scan_id: event.scan_id,
                decision: event.decision,
            })
        }
        _ => Err(unexpected("not a decision")),
    }
}

fn unexpected(what: &str) -> TransportError {
    TransportError::Unavailable(format!("unexpected reply: {what}"))
}

fn undecodable(error: impl std::fmt::Display) -> TransportError {
    TransportError::Unavailable(format!("undecodable reply: {error}"))
}

/// A request's records: `leading` sent one after another, each acknowledged
/// before the next, then `last`, which its answer follows.
struct Payloads {
    leading: Vec<Vec<u8>>,
    last: Vec<u8>,
}

impl Payloads {
    fn one(payload: Vec<u8>) -> Self {
        Self {
            leading: Vec::new(),
            last: payload,
        }
    }
}

/// Splits inventory into chunks under the size limit; the syntax errors (at
/// most [`presence_domain::inventory::MAX_LISTED_LINES`], each of bounded size)
/// and the `last` flag go on the final chunk, alone if they would not fit beside
/// its records.
fn inventory_chunks(
    batch_id: &str,
    records: &[NumberedRecord],
    syntax_errors: &LineErrors,
) -> Payloads {
    let empty = || pb::InventoryChunk {
        batch_id: batch_id.to_owned(),
        ..Default::default()
    };
    let mut chunks = Vec::new();
    let mut current = empty();
    let mut size = current.encoded_len();
    for record in wire::records_to_pb(records) {
        // A repeated field costs its tag byte and length prefix on top of the record.
        let cost = 1 + prost::length_delimiter_len(record.encoded_len()) + record.encoded_len();
        if size + cost > INVENTORY_CHUNK_BYTES && !current.records.is_empty() {
            chunks.push(std::mem::replace(&mut current, empty()).encode_to_vec());
            size = current.encoded_len();
        }
        size += cost;
        current.records.push(record);
    }
    (current.syntax_errors, current.syntax_error_count) = wire::line_errors_to_pb(syntax_errors);
    current.last = true;
    if current.encoded_len() > INVENTORY_CHUNK_BYTES && !current.records.is_empty() {
        let records = pb::InventoryChunk {
            records: std::mem::take(&mut current.records),
            ..empty()
        };
        chunks.push(records.encode_to_vec());
    }
    Payloads {
        leading: chunks,
        last: current.encode_to_vec(),
    }
}

#[async_trait]
impl Transport for KafkaTransport {
    async fn scan(&self, command: ScanCommand) -> Result<Answer, TransportError> {
        let message = presence_proto::scan_to_pb(
            &command.scan_id,
            command.kind,
            &command.request,
            command.device_secret.as_ref(),
            command.shown,
        );
        // Keyed by the ticket's token: a rotating ticket's barcodes, whatever
        // their code, go to one partition in order, as any ticket's scans do.
        let key = barcode::ticket_key(command.request.token.as_str());
        let outcome = self
            .request(
                &self.topics.scans(),
                key.as_bytes(),
                command.scan_id.as_str(),
                Payloads::one(message.encode_to_vec()),
                self.deadlines.request,
            )
            .await?;
        answer_of(outcome)
    }

    async fn annul(&self, command: AnnulCommand) -> Result<Answer, TransportError> {
        let message = presence_proto::annul_to_pb(
            &command.scan_id,
            &command.request,
            command.device_secret.as_ref(),
        );
        // Keyed by the annulled scan's id: the gateway does not know its
        // ticket. An annulment and a scan of one ticket may so be decided side
        // by side; the store's version check lets exactly one of them win.
        let outcome = self
            .request(
                &self.topics.scans(),
                command.request.scan_id.as_str().as_bytes(),
                command.scan_id.as_str(),
                Payloads::one(message.encode_to_vec()),
                self.deadlines.request,
            )
            .await?;
        answer_of(outcome)
    }

    async fn init_device(
        &self,
        request: DeviceInitRequest,
    ) -> Result<DeviceInitOutcome, TransportError> {
        let init = pb::registry_request::Request::Init(wire::device_init_to_pb(&request));
        let reply = self.ask_registry(&request.venue_id, init).await?;
        wire::init_outcome_from_pb(reply).map_err(undecodable)
    }

    async fn lookup_device(&self, lookup: DeviceLookup) -> Result<Option<Device>, TransportError> {
        let request = pb::registry_request::Request::Lookup(wire::lookup_to_pb(&lookup));
        let reply = self.ask_registry(&lookup.venue_id, request).await?;
        wire::lookup_outcome_from_pb(reply).map_err(undecodable)
    }

    async fn revoke_device(
        &self,
        venue_id: &VenueId,
        device_id: DeviceId,
    ) -> Result<Option<Device>, TransportError> {
        let request = pb::registry_request::Request::Revoke(pb::DeviceRevoke {
            venue_id: venue_id.to_string(),
            device_id: device_id.get(),
        });
        let reply = self.ask_registry(venue_id, request).await?;
        wire::lookup_outcome_from_pb(reply).map_err(undecodable)
    }

    async fn venue_stats(&self, venue_id: &VenueId) -> Result<Option<VenueStats>, TransportError> {
        let query = pb::registry_request::Request::Stats(pb::VenueStatsQuery {
            venue_id: venue_id.to_string(),
        });
        let reply = self.ask_registry(venue_id, query).await?;
        wire::stats_outcome_from_pb(reply).map_err(undecodable)
    }

    async fn ticket(&self, query: TicketQuery) -> Result<Option<TicketReport>, TransportError> {
        let message = pb::RegistryRequest {
            request: Some(pb::registry_request::Request::Ticket(
                wire::ticket_query_to_pb(&query),
            )),
        };
        let id = uuid::Uuid::now_v7().to_string();
        let outcome = self
            .request(
                &self.topics.registry(),
                query.venue_id.as_str().as_bytes(),
                &id,
                Payloads::one(message.encode_to_vec()),
                self.deadlines.request,
            )
            .await?;
        match outcome {
            Outcome::Registry(reply) => wire::ticket_outcome_from_pb(reply).map_err(undecodable),
            _ => Err(unexpected("not a registry reply")),
        }
    }

    async fn apply_inventory(
        &self,
        records: Vec<NumberedRecord>,
        syntax_errors: LineErrors,
    ) -> Result<InventoryOutcome, TransportError> {
        let batch_id = uuid::Uuid::now_v7().to_string();
        let chunks = inventory_chunks(&batch_id, &records, &syntax_errors);
        let outcome = self
            .request(
                &self.topics.inventory(),
                batch_id.as_bytes(),
                &batch_id,
                chunks,
                self.deadlines.inventory,
            )
            .await?;
        match outcome {
            Outcome::Inventory(reply) => Ok(wire::inventory_outcome_from_pb(reply)),
            _ => Err(unexpected("not an inventory reply")),
        }
    }

    async fn ready(&self) -> Result<(), TransportError> {
        let (replies, _) = self.reply_partition()?;
        if !replies.is_running() {
            return Err(TransportError::Unavailable("reply reader stopped".into()));
        }
        let producer = self.producer.clone();
        let topic = self.topics.scans();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(1))
                .map(|_| ())
        })
        .await
        .map_err(|error| TransportError::Unavailable(error.to_string()))?
        .map_err(|error| TransportError::Unavailable(error.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_domain::inventory::{
        LineError, MAX_BAD_LINE_REFERENCE_BYTES, MAX_BAD_LINE_REFERENCES, MAX_LISTED_LINES,
        MAX_REASON_CHARS, Reference, parse_ndjson,
    };

    fn tickets(count: usize) -> Vec<NumberedRecord> {
        let text: String = (0..count)
            .map(|n| format!("{{\"type\":\"ticket\",\"token\":\"T{n}\",\"eventId\":\"E\",\"places\":[\"A:1:{n}\"]}}\n"))
            .collect();
        parse_ndjson(&text).0
    }

    fn decode(chunks: &Payloads) -> Vec<pb::InventoryChunk> {
        chunks
            .leading
            .iter()
            .chain([&chunks.last])
            .map(|c| pb::InventoryChunk::decode(c.as_slice()).unwrap())
            .collect()
    }

    #[test]
    fn the_errors_of_a_large_bad_upload_fit_the_last_chunk() {
        // The largest a listed line can be: its reason at the limit in four-byte
        // characters, and its unchecked references at theirs.
        let id_bytes = MAX_BAD_LINE_REFERENCE_BYTES / MAX_BAD_LINE_REFERENCES;
        let largest = LineError {
            unchecked: vec![
                Reference::Event(presence_domain::EventId::new("e".repeat(id_bytes)));
                MAX_BAD_LINE_REFERENCES
            ],
            ..LineError::new(0, "𝄞".repeat(MAX_REASON_CHARS))
        };
        let mut errors = LineErrors::default();
        for line in 1..=100_000 {
            errors.push(|| LineError {
                line,
                ..largest.clone()
            });
        }
        let decoded = decode(&inventory_chunks("b", &tickets(20_000), &errors));
        assert!(
            decoded
                .iter()
                .all(|c| c.encoded_len() <= INVENTORY_CHUNK_BYTES)
        );
        let last = decoded.last().unwrap();
        assert_eq!(
            (last.syntax_errors.len(), last.syntax_error_count),
            (MAX_LISTED_LINES, 100_000)
        );
    }

    #[test]
    fn large_inventories_are_chunked_with_errors_on_the_last_chunk() {
        let records = tickets(20_000);
        let errors = LineErrors::from_parts(vec![LineError::new(3, "bad")], 1);
        let chunks = inventory_chunks("b", &records, &errors);
        assert!(!chunks.leading.is_empty());
        let decoded = decode(&chunks);
        assert!(
            decoded
                .iter()
                .all(|c| c.encoded_len() <= INVENTORY_CHUNK_BYTES && c.batch_id == "b")
        );
        assert_eq!(
            decoded.iter().map(|c| c.records.len()).sum::<usize>(),
            20_000
        );
        assert!(
            decoded
                .iter()
                .rev()
                .skip(1)
                .all(|c| !c.last && c.syntax_errors.is_empty())
        );
        let last = decoded.last().unwrap();
        assert!(last.last && last.syntax_errors.len() == 1);
    }
}
