//! Producer and consumer configuration, topic creation, and the headers every
//! record carries.

use crate::KafkaError;
use crate::producer::{KafkaProducer, Record};
use crate::settings::KafkaSettings;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseProducer, Producer as _, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

/// The topic a request's answer goes to.
pub const REPLY_TO: &str = "presence-reply-to";
/// The partition of [`REPLY_TO`] the answer goes to: one the waiting gateway
/// reads. Without it (a request from an older gateway, with a reply topic of
/// its own) the answer goes where its key hashes to.
pub const REPLY_PARTITION: &str = "presence-reply-partition";
/// Pairs an answer with its request: the scan id, or a request id.
pub const CORRELATION_ID: &str = "presence-correlation-id";
/// Unix milliseconds after which the gateway no longer waits: a scan found
/// later is not decided, so that no scan answered 503 changes state afterwards.
pub const DEADLINE: &str = "presence-deadline";
/// W3C trace context.
pub const TRACEPARENT: &str = "traceparent";
/// Why a record went to a dead-letter topic.
pub const DEAD_LETTER_REASON: &str = "presence-dead-letter-reason";

/// How often each producer and consumer reports its statistics: what it asked
/// of the brokers (`kafka_client_*` on `/metrics`) and, for a consumer, its lag.
pub const STATISTICS_INTERVAL_MS: &str = "5000";

/// A producer for every topic: idempotent, acknowledged by all in-sync replicas.
pub fn producer(settings: &KafkaSettings) -> Result<KafkaProducer, KafkaError> {
    let timeout = settings.delivery_timeout.as_millis().to_string();
    Ok(KafkaProducer::new(&settings.client_config(&[
        ("enable.idempotence", "true"),
        ("acks", "all"),
        // A scan waits for its acknowledgement: batch only what arrives together.
        ("linger.ms", "1"),
        ("message.timeout.ms", &timeout),
        ("statistics.interval.ms", STATISTICS_INTERVAL_MS),
    ]))?)
}

/// A consumer configuration in `group`, storing offsets only when told to.
/// Its context must take the statistics ([`crate::metrics`]).
pub fn consumer_config(settings: &KafkaSettings, group: &str) -> ClientConfig {
    let fetch_wait = settings.fetch_wait.as_millis().to_string();
    settings.client_config(&[
        ("group.id", group),
        ("enable.auto.commit", "true"),
        ("auto.commit.interval.ms", "1000"),
        ("enable.auto.offset.store", "false"),
        ("auto.offset.reset", "earliest"),
        // Incremental rebalancing: a member joining or leaving moves only the
        // partitions that change hands; the others keep being consumed.
        // Eager assignment (`range`, librdkafka's old default) stops every
        // member's partitions for each rebalance.
        ("partition.assignment.strategy", "cooperative-sticky"),
        ("session.timeout.ms", "10000"),
        ("heartbeat.interval.ms", "1000"),
        // A scan waits on two fetches (request, then reply): a broker that holds
        // an empty fetch for the default 500 ms instead of answering when data
        // arrives would add that to every scan.
        ("fetch.wait.max.ms", &fetch_wait),
        ("statistics.interval.ms", STATISTICS_INTERVAL_MS),
    ])
}

/// A topic this service needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub compacted: bool,
    /// How long records are kept when this service creates the topic; `None`
    /// leaves it to the broker's default.
    pub retention: Option<Duration>,
}

/// Longest the broker's metadata may take to arrive when topics are prepared.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the error events of a failed metadata request are collected.
const EVENTS_WAIT: Duration = Duration::from_millis(100);

/// Makes sure `specs` exist before a service uses them: creates the missing
/// ones, or, with `PRESENCE_KAFKA_CREATE_TOPICS=false`, only checks that they
/// exist (no admin call that needs a create ACL). The error says why the broker
/// cannot be used: unreachable, authentication or TLS failed (as librdkafka
/// reported it), a topic missing.
pub async fn prepare_topics(
    settings: &KafkaSettings,
    specs: &[TopicSpec],
) -> Result<(), KafkaError> {
    // A producer only for its metadata request and its error events: polling
    // it hands librdkafka's reports (authentication, TLS) to `LastError`.
    let probe: BaseProducer<LastError> = settings
        .client_config(&[])
        .create_with_context(LastError::default())?;
    let probe = std::sync::Arc::new(probe);
    let probing = probe.clone();
    let metadata = tokio::task::spawn_blocking(move || {
        let metadata = probing.client().fetch_metadata(None, METADATA_TIMEOUT);
        probing.poll(EVENTS_WAIT);
        metadata
    })
    .await
    .map_err(|error| KafkaError::Task(error.to_string()))?;
    let metadata = metadata.map_err(|error| {
        KafkaError::Unreachable(
            probe
                .context()
                .reason()
                .unwrap_or_else(|| error.to_string()),
        )
    })?;
    let existing: std::collections::HashSet<&str> = metadata
        .topics()
        .iter()
        .filter(|topic| topic.error().is_none() && !topic.partitions().is_empty())
        .map(|topic| topic.name())
        .collect();
    let missing: Vec<&TopicSpec> = specs
        .iter()
        .filter(|spec| !existing.contains(spec.name.as_str()))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !settings.create_topics {
        return Err(KafkaError::MissingTopics(
            missing.iter().map(|spec| spec.name.clone()).collect(),
        ));
    }
    create_topics(settings, &missing).await
}

/// How long a client waits between two tries to prepare its topics.
pub(crate) const PREPARE_RETRY: Duration = Duration::from_secs(5);

/// [`prepare_topics`] until it works, every [`PREPARE_RETRY`]: a wrong password
/// or CA, or a missing topic, is logged (once per new reason) and handed to
/// `not_ready`, and the process keeps running instead of exiting into a crash
/// loop; it recovers by itself once the cause is fixed (a topic created, an
/// ACL granted).
pub async fn prepare_topics_retrying(
    settings: &KafkaSettings,
    specs: &[TopicSpec],
    not_ready: impl Fn(&str),
) {
    let mut last_reason = None;
    loop {
        match prepare_topics(settings, specs).await {
            Ok(()) => {
                if last_reason.is_some() {
                    tracing::info!("kafka usable again");
                }
                return;
            }
            Err(error) => {
                let reason = error.to_string();
                if last_reason.as_ref() != Some(&reason) {
                    tracing::error!(
                        %reason,
                        retry_seconds = PREPARE_RETRY.as_secs(),
                        "kafka not usable; not ready, retrying"
                    );
                }
                not_ready(&reason);
                last_reason = Some(reason);
            }
        }
        tokio::time::sleep(PREPARE_RETRY).await;
    }
}

/// Creates `specs`; one created meanwhile by another service is fine.
async fn create_topics(settings: &KafkaSettings, specs: &[&TopicSpec]) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = settings.client_config(&[]).create()?;
    let retention_ms: Vec<Option<String>> = specs
        .iter()
        .map(|spec| spec.retention.map(|kept| kept.as_millis().to_string()))
        .collect();
    let topics: Vec<NewTopic<'_>> = specs
        .iter()
        .zip(&retention_ms)
        .map(|(spec, retention_ms)| {
            let topic = NewTopic::new(
                &spec.name,
                spec.partitions,
                TopicReplication::Fixed(settings.replication),
            );
            let topic = match retention_ms {
                Some(retention_ms) => topic.set("retention.ms", retention_ms),
                None => topic,
            };
            if spec.compacted {
                topic.set("cleanup.policy", "compact")
            } else {
                topic
            }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics(topics.iter(), &options).await? {
        match result {
            Ok(name) => tracing::info!(topic = %name, "topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaError::Topic {
                    topic,
                    reason: code.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Keeps the last error librdkafka reported on a client (an authentication or
/// TLS failure arrives here, while the request that failed only times out),
/// so that the error explains itself. librdkafka's reasons carry no secret.
#[derive(Debug, Default)]
pub struct LastError(std::sync::Mutex<Option<String>>);

impl LastError {
    /// What went wrong last, in words an operator acts on.
    pub fn reason(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl ProducerContext for LastError {
    type DeliveryOpaque = ();

    /// The probe sends nothing.
    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: ()) {}
}

impl ClientContext for LastError {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        let what = match code {
            Some(RDKafkaErrorCode::Authentication) => "authentication failed",
            Some(RDKafkaErrorCode::SSL) => "TLS failed",
            _ if reason.contains("SSL") => "TLS failed",
            _ => "broker unreachable",
        };
        let mut last = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // "All brokers down" follows the failure that brought them down: keep
        // the cause.
        if code == Some(RDKafkaErrorCode::AllBrokersDown) && last.is_some() {
            return;
        }
        *last = Some(format!("{what}: {reason}"));
    }
}

/// Produces one record and waits for its acknowledgement.
pub async fn send(
    producer: &KafkaProducer,
    topic: &str,
    key: &[u8],
    payload: &[u8],
    headers: OwnedHeaders,
) -> Result<(), KafkaError> {
    send_to_partition(producer, topic, None, key, payload, headers).await
}

/// Sends a request whose answer comes on the replies topic, without waiting
/// for the broker's acknowledgement ([`KafkaProducer::send_unacknowledged`]):
/// the returned future resolves only if the request cannot be delivered.
pub fn send_request(
    producer: &KafkaProducer,
    topic: &str,
    key: &[u8],
    payload: &[u8],
    headers: OwnedHeaders,
) -> Result<impl Future<Output = KafkaError>, KafkaError> {
    let failure = producer
        .send_unacknowledged(Record {
            topic,
            partition: None,
            key,
            payload,
            headers,
        })
        .map_err(produce_failed)?;
    Ok(async move { produce_failed(failure.failed().await) })
}

/// [`send`] to `partition` (a reply, to the one its gateway reads), or else
/// to the partition the key hashes to.
pub async fn send_to_partition(
    producer: &KafkaProducer,
    topic: &str,
    partition: Option<i32>,
    key: &[u8],
    payload: &[u8],
    headers: OwnedHeaders,
) -> Result<(), KafkaError> {
    producer
        .send(Record {
            topic,
            partition,
            key,
            payload,
            headers,
        })
        .await
        .map_err(produce_failed)
}

/// A send that failed, counted in `kafka_errors_total`.
fn produce_failed(error: rdkafka::error::KafkaError) -> KafkaError {
    crate::metrics::client_error(crate::metrics::Operation::Produce);
    KafkaError::Client(error)
}

/// Adds a text header.
pub fn with_header(headers: OwnedHeaders, key: &str, value: &str) -> OwnedHeaders {
    headers.insert(Header {
        key,
        value: Some(value),
    })
}

/// The first header called `name`, as text.
pub fn header<'a>(headers: Option<&'a impl Headers>, name: &str) -> Option<&'a str> {
    headers?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

tokio::task_local! {
    /// The trace context of the record being handled, for the records it produces.
    static CURRENT_TRACE: TraceContext;
}

/// Runs `work` with `trace` as the context of every record it produces.
pub async fn with_trace<F: std::future::Future>(trace: Option<TraceContext>, work: F) -> F::Output {
    match trace {
        Some(trace) => CURRENT_TRACE.scope(trace, work).await,
        None => work.await,
    }
}

/// Adds a `traceparent` header continuing the current trace, when there is one:
/// the current span's when spans are exported (so the next service's spans hang
/// under it), else the record being handled's.
pub fn with_current_trace(headers: OwnedHeaders) -> OwnedHeaders {
    let traceparent = presence_runtime::telemetry::current_traceparent().or_else(|| {
        CURRENT_TRACE
            .try_with(|trace| trace.child().header_value())
            .ok()
    });
    match traceparent {
        Some(traceparent) => with_header(headers, TRACEPARENT, &traceparent),
        None => headers,
    }
}

/// A W3C trace context (`traceparent`), carried through every record of one
/// request so one trace spans gateway, topics and services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: String,
    span_id: String,
    sampled: bool,
}

impl TraceContext {
    /// Continues the current span's trace when spans are exported; else starts
    /// a new trace.
    pub fn current() -> Self {
        presence_runtime::telemetry::current_traceparent()
            .and_then(|traceparent| Self::parse(&traceparent))
            .unwrap_or_else(Self::root)
    }

    /// Starts a new trace.
    pub fn root() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Self {
            span_id: id[..16].to_owned(),
            trace_id: id,
            sampled: true,
        }
    }

    /// Reads `00-<32 hex>-<16 hex>-<2 hex>`; anything else is no context.
    pub fn parse(text: &str) -> Option<Self> {
        let parts: Vec<&str> = text.trim().split('-').collect();
        let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
        match parts.as_slice() {
            ["00", trace, span, flags] if hex(trace, 32) && hex(span, 16) && hex(flags, 2) => {
                let all_zero = |s: &str| s.bytes().all(|b| b == b'0');
                (!all_zero(trace) && !all_zero(span)).then(|| Self {
                    trace_id: trace.to_ascii_lowercase(),
                    span_id: span.to_ascii_lowercase(),
                    sampled: u8::from_str_radix(flags, 16).is_ok_and(|f| f & 1 == 1),
                })
            }
            _ => None,
        }
    }

    /// The same trace, one hop further.
    pub fn child(&self) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Self {
            trace_id: self.trace_id.clone(),
            span_id: id[..16].to_owned(),
            sampled: self.sampled,
        }
    }

    pub fn trace_id(&self) -> &str {
        &self.trace_id
    }

    pub fn header_value(&self) -> String {
        format!(
            "00-{}-{}-{}",
            self.trace_id,
            self.span_id,
            if self.sampled { "01" } else { "00" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_produced_while_handling_continue_its_trace() {
        let header_of =
            |headers: OwnedHeaders| header(Some(&headers), TRACEPARENT).map(str::to_owned);
        assert_eq!(header_of(with_current_trace(OwnedHeaders::new())), None);
        let incoming = TraceContext::root();
        let produced = with_trace(Some(incoming.clone()), async {
            header_of(with_current_trace(OwnedHeaders::new()))
        })
        .await;
        let produced = TraceContext::parse(&produced.unwrap()).unwrap();
        assert_eq!(produced.trace_id(), incoming.trace_id());
        assert_ne!(produced, incoming, "a new span of the same trace");
    }

    #[test]
    fn trace_context_round_trips_and_rejects_garbage() {
        let root = TraceContext::root();
        let parsed = TraceContext::parse(&root.header_value()).unwrap();
        assert_eq!(parsed, root);
        let child = root.child();
        assert_eq!(child.trace_id(), root.trace_id());
        assert_ne!(child.header_value(), root.header_value());
        let example = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        assert_eq!(
            TraceContext::parse(example).unwrap().header_value(),
            example
        );
        for bad in [
            "",
            "00-abc-def-01",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
    }
}
