//! What the Kafka side of a process shows on `/metrics`: decisions published by
//! kind, status and venue, records handled and dead-lettered per topic, how long
//! handling and request round trips take, client errors, consumer lag per
//! partition, what each client asks of the brokers (requests by type, bytes,
//! records and produced batches, from librdkafka's statistics) and how many
//! brokers it is connected to. Labels have few values: a deployment has a handful of topics and
//! partitions, and venues beyond [`MAX_VENUES`] share one label value; never a
//! token or a device.
//!
//! The figures are process-wide (one consumer runner, one producer path per
//! process): [`register`] adds them to the process's registry.

use presence_domain::DecisionEvent;
use presence_runtime::metrics::MetricsHandle;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use rdkafka::statistics::Statistics;
use std::collections::{HashMap, HashSet};
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// From a quarter of a millisecond to ten seconds: a record handled, a request
/// answered.
const BUCKETS: [f64; 16] = [
    0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];

/// Records in one hand-over, from one to the runner's most
/// ([`MAX_BATCH`](crate::runner::MAX_BATCH)).
const HANDOVER_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Venues counted under their own label; later ones count as [`OTHER_VENUE`],
/// so a flood of made-up venue ids cannot grow the page without bound.
pub const MAX_VENUES: usize = 200;
/// The venue label of venues beyond [`MAX_VENUES`].
pub const OTHER_VENUE: &str = "other";

/// A client handle's connected-broker count older than this is from a handle
/// since dropped: three of its statistics intervals
/// ([`STATISTICS_INTERVAL_MS`](crate::client::STATISTICS_INTERVAL_MS)) missed.
const CONNECTED_REPORT_TTL: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    kind: &'static str,
    status: &'static str,
    venue: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabels {
    topic: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    topic: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    topic: String,
    partition: i32,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientRequestLabels {
    client: String,
    request: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientDirectionLabels {
    client: String,
    direction: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientLabels {
    client: String,
}

type Histograms = Family<TopicLabels, Histogram, fn() -> Histogram>;

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

fn handover_histogram() -> Histogram {
    Histogram::new(HANDOVER_BUCKETS)
}

/// How a record's handling ended, for `kafka_records_handled_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handled {
    /// Finished (dead-lettered records included).
    Done,
    /// Not handled this time: tried again after a pause.
    Retried,
}

/// What failed talking to the brokers, for `kafka_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Consume,
    Produce,
}

struct KafkaMetrics {
    decisions: Family<DecisionLabels, Counter>,
    venues: Mutex<HashSet<String>>,
    handled: Family<OutcomeLabels, Counter>,
    handle_duration: Histograms,
    handover_records: Histograms,
    dead_letters: Family<TopicLabels, Counter>,
    request_duration: Histograms,
    errors: Family<OperationLabels, Counter>,
    consumer_lag: Family<PartitionLabels, Gauge>,
    client_requests: Family<ClientRequestLabels, Counter>,
    client_bytes: Family<ClientDirectionLabels, Counter>,
    client_records: Family<ClientDirectionLabels, Counter>,
    client_batches: Family<ClientLabels, Counter>,
    /// librdkafka reports running totals per client handle; the counters
    /// above grow by the difference to the handle's previous report.
    reported: Mutex<HashMap<(String, String), u64>>,
    brokers_up: Family<ClientLabels, Gauge>,
    /// Each client handle's last count of connected brokers: its label, the
    /// count and when it came. Handles sharing a label (a process's producers)
    /// show the most any of them counts.
    connected: Mutex<HashMap<String, ConnectedReport>>,
}

struct ConnectedReport {
    client: String,
    brokers: i64,
    at: Instant,
}

static METRICS: LazyLock<KafkaMetrics> = LazyLock::new(|| KafkaMetrics {
    decisions: Family::default(),
    venues: Mutex::default(),
    handled: Family::default(),
    handle_duration: Family::new_with_constructor(histogram),
    handover_records: Family::new_with_constructor(handover_histogram),
    dead_letters: Family::default(),
    request_duration: Family::new_with_constructor(histogram),
    errors: Family::default(),
    consumer_lag: Family::default(),
    client_requests: Family::default(),
    client_bytes: Family::default(),
    client_records: Family::default(),
    client_batches: Family::default(),
    reported: Mutex::default(),
    brokers_up: Family::default(),
    connected: Mutex::default(),
});

/// Adds this process's Kafka figures to `metrics`.
pub fn register(metrics: &MetricsHandle) {
    let m = &*METRICS;
    metrics.with_registry(|registry| {
        registry.register(
            "decisions",
            "Decisions published on the decisions stream, by scan kind, status and venue",
            m.decisions.clone(),
        );
        registry.register(
            "kafka_records_handled",
            "Records a consumer handled, by topic and outcome (done, retried)",
            m.handled.clone(),
        );
        registry.register(
            "kafka_record_duration_seconds",
            "Time a handler took over one record (for a scan: the store and the \
             decision's publication), by topic",
            m.handle_duration.clone(),
        );
        registry.register(
            "kafka_handover_records",
            "Records a consumer took at once from what had been fetched (up to 256), \
             by topic: the scans one batch of Redis commands and produced records \
             carries",
            m.handover_records.clone(),
        );
        registry.register(
            "kafka_dead_letters",
            "Records sent to a dead-letter topic, by the topic they came from",
            m.dead_letters.clone(),
        );
        registry.register(
            "kafka_request_duration_seconds",
            "Round trip of a gateway request through Kafka: sent until answered \
             or given up, by request topic",
            m.request_duration.clone(),
        );
        registry.register(
            "kafka_errors",
            "Errors of the Kafka clients, by operation (consume, produce)",
            m.errors.clone(),
        );
        registry.register(
            "kafka_consumer_lag",
            "Records not yet consumed, by topic and partition, as the consumer last \
             reported (every few seconds)",
            m.consumer_lag.clone(),
        );
        registry.register(
            "kafka_client_requests",
            "Requests the Kafka clients sent to the brokers, by client (producer, or \
             consumer:<topic>) and request type (Produce, Fetch, OffsetCommit, ...), \
             as librdkafka last reported (every few seconds)",
            m.client_requests.clone(),
        );
        registry.register(
            "kafka_client_bytes",
            "Bytes the Kafka clients sent to and received from the brokers, by client \
             and direction (sent, received), as librdkafka last reported",
            m.client_bytes.clone(),
        );
        registry.register(
            "kafka_client_records",
            "Records the Kafka clients produced or consumed, by client and direction \
             (produced, consumed), as librdkafka last reported",
            m.client_records.clone(),
        );
        registry.register(
            "kafka_client_batches",
            "Record batches the producers sent (a broker stores and serves each \
             batch as one unit), as librdkafka last reported",
            m.client_batches.clone(),
        );
        registry.register(
            "kafka_client_brokers_up",
            "Brokers the Kafka client is connected to (librdkafka state UP; its \
             bootstrap and learned brokers), by client, as librdkafka last reported \
             (every few seconds); clients sharing a label show the most any of them \
             is connected to. 0 in every client: the process reaches no broker",
            m.brokers_up.clone(),
        );
    });
}

pub(crate) fn decision_published(event: &DecisionEvent) {
    let venue = {
        let mut venues = METRICS
            .venues
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let venue = event.venue_id.as_str();
        if venues.contains(venue) || (venues.len() < MAX_VENUES && venues.insert(venue.to_owned()))
        {
            venue.to_owned()
        } else {
            OTHER_VENUE.to_owned()
        }
    };
    METRICS
        .decisions
        .get_or_create(&DecisionLabels {
            kind: event.kind.as_str(),
            status: event.decision.status.as_str(),
            venue,
        })
        .inc();
}

pub(crate) fn handed_over(topic: &str, records: usize) {
    METRICS
        .handover_records
        .get_or_create(&TopicLabels {
            topic: topic.to_owned(),
        })
        .observe(records as f64);
}

pub(crate) fn record_handled(topic: &str, outcome: Handled, elapsed: Duration) {
    let outcome = match outcome {
        Handled::Done => "done",
        Handled::Retried => "retried",
    };
    METRICS
        .handled
        .get_or_create(&OutcomeLabels {
            topic: topic.to_owned(),
            outcome,
        })
        .inc();
    METRICS
        .handle_duration
        .get_or_create(&TopicLabels {
            topic: topic.to_owned(),
        })
        .observe(elapsed.as_secs_f64());
}

pub(crate) fn dead_lettered(topic: &str) {
    METRICS
        .dead_letters
        .get_or_create(&TopicLabels {
            topic: topic.to_owned(),
        })
        .inc();
}

pub(crate) fn request_answered(topic: &str, elapsed: Duration) {
    METRICS
        .request_duration
        .get_or_create(&TopicLabels {
            topic: topic.to_owned(),
        })
        .observe(elapsed.as_secs_f64());
}

pub(crate) fn client_error(operation: Operation) {
    let operation = match operation {
        Operation::Consume => "consume",
        Operation::Produce => "produce",
    };
    METRICS
        .errors
        .get_or_create(&OperationLabels { operation })
        .inc();
}

/// Takes the lag of every partition the consumer holds from its statistics
/// (`statistics.interval.ms`); partitions it does not hold report no lag (-1)
/// and are dropped.
pub(crate) fn consumer_statistics(statistics: &Statistics) {
    consumer_lags(statistics.topics.iter().flat_map(|(name, topic)| {
        topic
            .partitions
            .iter()
            .map(move |(partition, figures)| (name.as_str(), *partition, figures.consumer_lag))
    }));
}

fn consumer_lags<'a>(lags: impl IntoIterator<Item = (&'a str, i32, i64)>) {
    for (topic, partition, lag) in lags {
        let labels = PartitionLabels {
            topic: topic.to_owned(),
            partition,
        };
        // librdkafka lists an internal partition -1, and -1 for lag it does not know.
        if partition >= 0 && lag >= 0 {
            METRICS.consumer_lag.get_or_create(&labels).set(lag);
        } else {
            METRICS.consumer_lag.remove(&labels);
        }
    }
}

/// Adds what a client asked of the brokers since its previous report to the
/// `kafka_client_*` counters. Every producer and consumer reports every
/// `statistics.interval.ms` ([`STATISTICS_INTERVAL_MS`](crate::client::STATISTICS_INTERVAL_MS)).
pub(crate) fn client_statistics(statistics: &Statistics) {
    let client = client_label(statistics);
    brokers_connected(
        &statistics.name,
        &client,
        connected_brokers(statistics),
        Instant::now(),
    );
    let mut requests: HashMap<&str, i64> = HashMap::new();
    for broker in statistics.brokers.values() {
        for (request, count) in &broker.req {
            *requests.entry(request.as_str()).or_default() += count;
        }
    }
    let mut reported = METRICS
        .reported
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let mut since_last = |figure: &str, total: i64| {
        let total = u64::try_from(total).unwrap_or(0);
        let last = reported
            .insert((statistics.name.clone(), figure.to_owned()), total)
            .unwrap_or(0);
        total.saturating_sub(last)
    };
    for (request, count) in requests {
        let added = since_last(request, count);
        // librdkafka lists every request type it knows, most of them never sent.
        if added > 0 {
            METRICS
                .client_requests
                .get_or_create(&ClientRequestLabels {
                    client: client.clone(),
                    request: request.to_owned(),
                })
                .inc_by(added);
        }
    }
    for (direction, total) in [
        ("sent", statistics.tx_bytes),
        ("received", statistics.rx_bytes),
    ] {
        METRICS
            .client_bytes
            .get_or_create(&ClientDirectionLabels {
                client: client.clone(),
                direction,
            })
            .inc_by(since_last(direction, total));
    }
    for (direction, total) in [
        ("produced", statistics.txmsgs),
        ("consumed", statistics.rxmsgs),
    ] {
        METRICS
            .client_records
            .get_or_create(&ClientDirectionLabels {
                client: client.clone(),
                direction,
            })
            .inc_by(since_last(direction, total));
    }
    drop(reported);
    if statistics.client_type == "producer" {
        // A topic's batch count window covers the interval since the previous report.
        let batches: i64 = statistics
            .topics
            .values()
            .map(|topic| topic.batchcnt.cnt)
            .sum();
        METRICS
            .client_batches
            .get_or_create(&ClientLabels { client })
            .inc_by(u64::try_from(batches).unwrap_or(0));
    }
}

/// Brokers the client holds a connection to: bootstrap (`configured`) and
/// `learned` brokers in state `UP`. Its `internal` broker (always up) and the
/// `logical` group coordinator (a second name for a learned broker) are left out.
fn connected_brokers(statistics: &Statistics) -> i64 {
    let connected = statistics
        .brokers
        .values()
        .filter(|broker| matches!(broker.source.as_str(), "configured" | "learned"))
        .filter(|broker| broker.state == "UP")
        .count();
    i64::try_from(connected).unwrap_or(i64::MAX)
}

/// Records `handle`'s count and sets its label's gauge to the most any fresh
/// handle of that label counts.
fn brokers_connected(handle: &str, client: &str, brokers: i64, now: Instant) {
    let mut reports = METRICS
        .connected
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    reports.insert(
        handle.to_owned(),
        ConnectedReport {
            client: client.to_owned(),
            brokers,
            at: now,
        },
    );
    reports.retain(|_, report| now.saturating_duration_since(report.at) <= CONNECTED_REPORT_TTL);
    let most = reports
        .values()
        .filter(|report| report.client == client)
        .map(|report| report.brokers)
        .max()
        .unwrap_or(brokers);
    METRICS
        .brokers_up
        .get_or_create(&ClientLabels {
            client: client.to_owned(),
        })
        .set(most);
}

/// `producer`, or `consumer:<topics it reads>`: a service has one consumer per
/// topic it reads, and its producers write to many topics.
fn client_label(statistics: &Statistics) -> String {
    if statistics.client_type != "consumer" {
        return statistics.client_type.clone();
    }
    let mut topics: Vec<&str> = statistics.topics.keys().map(String::as_str).collect();
    topics.sort_unstable();
    if topics.is_empty() {
        "consumer".to_owned()
    } else {
        format!("consumer:{}", topics.join(","))
    }
}

/// Forgets the lag of partitions given up, so a revoked partition does not
/// show its last figure forever.
pub(crate) fn partitions_revoked() {
    METRICS.consumer_lag.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_show_under_their_names() {
        let metrics = MetricsHandle::default();
        register(&metrics);
        record_handled("p.scans", Handled::Done, Duration::from_millis(2));
        record_handled("p.scans", Handled::Retried, Duration::from_millis(2));
        dead_lettered("p.scans");
        request_answered("p.scans", Duration::from_millis(4));
        client_error(Operation::Produce);
        consumer_lags([("p.scans", -1, 0), ("p.scans", 0, 7), ("p.scans", 1, -1)]);
        let text = metrics.encode().unwrap();
        for line in [
            "presence_kafka_records_handled_total{topic=\"p.scans\",outcome=\"done\"} 1",
            "presence_kafka_records_handled_total{topic=\"p.scans\",outcome=\"retried\"} 1",
            "presence_kafka_record_duration_seconds_count{topic=\"p.scans\"} 2",
            "presence_kafka_dead_letters_total{topic=\"p.scans\"} 1",
            "presence_kafka_request_duration_seconds_bucket{le=\"0.005\",topic=\"p.scans\"} 1",
            "presence_kafka_errors_total{operation=\"produce\"} 1",
            "presence_kafka_consumer_lag{topic=\"p.scans\",partition=\"0\"} 7",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(!text.contains("partition=\"-1\""), "{text}");
        assert!(!text.contains("partition=\"1\""), "unknown lag: {text}");
        partitions_revoked();
        assert!(!metrics.encode().unwrap().contains("partition=\"0\""));
    }

    fn statistics(name: &str, client_type: &str, topic: &str) -> Statistics {
        let mut statistics = Statistics {
            name: name.to_owned(),
            client_type: client_type.to_owned(),
            ..Statistics::default()
        };
        statistics
            .topics
            .insert(topic.to_owned(), rdkafka::statistics::Topic::default());
        statistics
    }

    fn requests(statistics: &mut Statistics, broker: &str, sent: &[(&str, i64)]) {
        statistics.brokers.insert(
            broker.to_owned(),
            rdkafka::statistics::Broker {
                req: sent.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
                ..rdkafka::statistics::Broker::default()
            },
        );
    }

    fn broker(source: &str, state: &str) -> rdkafka::statistics::Broker {
        rdkafka::statistics::Broker {
            source: source.to_owned(),
            state: state.to_owned(),
            ..rdkafka::statistics::Broker::default()
        }
    }

    #[test]
    fn connected_brokers_count_bootstrap_and_learned_brokers_up_only() {
        let mut statistics = statistics("rdkafka#producer-b1", "producer", "b.scans");
        for (name, source, state) in [
            ("a:9092/bootstrap", "configured", "UP"),
            ("a:9092/1", "learned", "UP"),
            ("b:9092/2", "learned", "TRY_CONNECT"),
            ("c:9092/3", "learned", "DOWN"),
            (":0/internal", "internal", "UP"),
            ("GroupCoordinator", "logical", "UP"),
        ] {
            statistics
                .brokers
                .insert(name.to_owned(), broker(source, state));
        }
        assert_eq!(connected_brokers(&statistics), 2);
    }

    #[test]
    fn a_label_shows_the_most_brokers_its_fresh_handles_are_connected_to() {
        let metrics = MetricsHandle::default();
        register(&metrics);
        let gauge = |client: &str| {
            let text = metrics.encode().unwrap();
            let prefix = format!("presence_kafka_client_brokers_up{{client=\"{client}\"}} ");
            text.lines()
                .find_map(|line| line.strip_prefix(prefix.as_str()))
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("no {prefix}in:\n{text}"))
        };
        let start = Instant::now();
        // Two producers: one connected to 2 brokers, the other to none.
        brokers_connected("h1", "b-producer", 2, start);
        brokers_connected("h2", "b-producer", 0, start);
        assert_eq!(gauge("b-producer"), "2");
        // A consumer's only handle losing its broker: 0.
        brokers_connected("h3", "b-consumer", 1, start);
        brokers_connected("h3", "b-consumer", 0, start + Duration::from_secs(5));
        assert_eq!(gauge("b-consumer"), "0");
        // The connected producer stopped reporting (dropped): its count expires.
        brokers_connected("h2", "b-producer", 0, start + CONNECTED_REPORT_TTL * 2);
        assert_eq!(gauge("b-producer"), "0");
    }

    #[test]
    fn client_statistics_count_what_each_client_asked_since_its_last_report() {
        let metrics = MetricsHandle::default();
        register(&metrics);
        // Running totals: 10 fetches, then 25 in all; two brokers add up.
        let mut first = statistics("rdkafka#consumer-t1", "consumer", "t.scans");
        requests(&mut first, "a", &[("Fetch", 6), ("Produce", 0)]);
        requests(&mut first, "b", &[("Fetch", 4)]);
        first.rxmsgs = 4;
        first.rx_bytes = 1000;
        client_statistics(&first);
        let mut second = first.clone();
        requests(&mut second, "a", &[("Fetch", 21), ("OffsetCommit", 2)]);
        second.rxmsgs = 9;
        second.rx_bytes = 3000;
        client_statistics(&second);
        // A producer's batches are counted per report (librdkafka's window).
        let mut producer = statistics("rdkafka#producer-t2", "producer", "t.decisions");
        requests(&mut producer, "a", &[("Produce", 3)]);
        producer.txmsgs = 5;
        if let Some(topic) = producer.topics.get_mut("t.decisions") {
            topic.batchcnt.cnt = 3;
        }
        client_statistics(&producer);
        client_statistics(&producer);

        let text = metrics.encode().unwrap();
        for line in [
            "presence_kafka_client_requests_total{client=\"consumer:t.scans\",request=\"Fetch\"} 25",
            "presence_kafka_client_requests_total{client=\"consumer:t.scans\",request=\"OffsetCommit\"} 2",
            "presence_kafka_client_records_total{client=\"consumer:t.scans\",direction=\"consumed\"} 9",
            "presence_kafka_client_bytes_total{client=\"consumer:t.scans\",direction=\"received\"} 3000",
            "presence_kafka_client_requests_total{client=\"producer\",request=\"Produce\"} 3",
            "presence_kafka_client_records_total{client=\"producer\",direction=\"produced\"} 5",
            "presence_kafka_client_batches_total{client=\"producer\"} 6",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(
            !text.contains("client=\"consumer:t.scans\",request=\"Produce\""),
            "a request type never sent has no line: {text}"
        );
    }
}
