//! What a plain Kafka client sees of a distributed Presence: the records of a
//! topic, and the `decisions` stream decoded. Nothing here uses Presence's own
//! Kafka code, so the tests check the services against Kafka itself.

use anyhow::{Context, Result, anyhow, bail};
use presence_proto::pb;
use prost::Message as _;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Longest one metadata, watermark or group request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(100);
/// How long a topic read to its reported end must stay quiet to count as read.
const QUIET: Duration = Duration::from_secs(1);

/// A consumer that reads by assignment and commits nothing: in a group of its own
/// (`group` a fresh name), or in a service's group only to ask for its committed
/// offsets (it never subscribes, so it never joins).
fn consumer(bootstrap: &str, group: &str) -> Result<BaseConsumer> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.wait.max.ms", "50")
        // Presence writes no transactions: nothing to wait for, whatever the
        // broker says of open ones. (tansu 0.6 on PostgreSQL also fails every
        // read_committed ListOffsets with an SQL error, so watermarks need this.)
        .set("isolation.level", "read_uncommitted")
        .create()
        .context("creating a Kafka consumer")
}

/// Every record of `topic` from the beginning up to its end when called, as
/// [`RawRecord`]s, within `timeout`. Records appended while it
/// reads may be included.
pub async fn read_topic(bootstrap: &str, topic: &str, timeout: Duration) -> Result<Vec<RawRecord>> {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || read_topic_blocking(&bootstrap, &topic, timeout))
        .await
        .context("the topic reader panicked")?
}

fn read_topic_blocking(bootstrap: &str, topic: &str, timeout: Duration) -> Result<Vec<RawRecord>> {
    let deadline = Instant::now() + timeout;
    let consumer = consumer(bootstrap, &crate::unique("presence-tests-reader"))?;
    let partitions = partition_count(&consumer, topic)?;
    let mut ends = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)
            .with_context(|| format!("watermarks of {topic}/{partition}"))?;
        if high > low {
            ends.insert(partition, high);
        }
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .context("assigning a partition")?;
    }
    consumer
        .assign(&assignment)
        .with_context(|| format!("assigning {topic}"))?;
    let mut records = Vec::new();
    // Read at least to the end each partition reported, then on until nothing
    // more comes for a while: tansu (0.6) sometimes reports a partition's end one
    // record short, and a reader that trusted it would miss that record.
    let mut last_record = Instant::now();
    loop {
        if ends.is_empty() && last_record.elapsed() >= QUIET {
            return Ok(records);
        }
        if Instant::now() >= deadline {
            bail!("{topic}: partitions {ends:?} not read to their end within {timeout:?}");
        }
        match consumer.poll(POLL) {
            Some(Ok(message)) => {
                let (partition, offset) = (message.partition(), message.offset());
                if ends.get(&partition).is_some_and(|end| offset + 1 >= *end) {
                    ends.remove(&partition);
                }
                let headers: Vec<(String, String)> = message
                    .headers()
                    .map(|headers| {
                        headers
                            .iter()
                            .map(|h| {
                                let value =
                                    h.value.map(String::from_utf8_lossy).unwrap_or_default();
                                (h.key.to_owned(), value.into_owned())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let traceparent = header(&headers, "traceparent");
                records.push(RawRecord {
                    partition,
                    offset,
                    payload: message.payload().unwrap_or_default().to_vec(),
                    traceparent,
                    headers,
                });
                last_record = Instant::now();
            }
            Some(Err(error)) => bail!("reading {topic}: {error}"),
            None => {}
        }
    }
}

/// How many records of `topic` consumer group `group` has taken but not
/// committed (or not taken at all), summed over the partitions: what the group
/// would be handed again if its members died now. Joins no group: it only asks
/// the group's coordinator for its committed offsets.
pub async fn uncommitted(bootstrap: &str, group: &str, topic: &str) -> Result<i64> {
    let (bootstrap, group, topic) = (bootstrap.to_owned(), group.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || uncommitted_blocking(&bootstrap, &group, &topic))
        .await
        .context("the offset reader panicked")?
}

fn uncommitted_blocking(bootstrap: &str, group: &str, topic: &str) -> Result<i64> {
    let consumer = consumer(bootstrap, group)?;
    let mut partitions = TopicPartitionList::new();
    for partition in 0..partition_count(&consumer, topic)? {
        partitions.add_partition(topic, partition);
    }
    let committed = consumer
        .committed_offsets(partitions, REQUEST_TIMEOUT)
        .with_context(|| format!("the offsets {group} committed on {topic}"))?;
    let mut behind = 0;
    for element in committed.elements() {
        let (low, high) = consumer
            .fetch_watermarks(topic, element.partition(), REQUEST_TIMEOUT)
            .with_context(|| format!("watermarks of {topic}/{}", element.partition()))?;
        let done = match element.offset() {
            Offset::Offset(offset) => offset,
            _ => low,
        };
        behind += (high - done).max(0);
    }
    Ok(behind)
}

/// Waits until consumer group `group` has committed every record of `topic`:
/// everything its members took is finished, redeliveries included, and what
/// they published is on the broker. An error after `timeout`.
pub async fn wait_until_committed(
    bootstrap: &str,
    group: &str,
    topic: &str,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let behind = uncommitted(bootstrap, group, topic).await?;
        if behind == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{group} still had {behind} records of {topic} uncommitted after {timeout:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The names of every topic the broker at `bootstrap` holds.
pub async fn topic_names(bootstrap: &str) -> Result<Vec<String>> {
    let bootstrap = bootstrap.to_owned();
    tokio::task::spawn_blocking(move || {
        let metadata = consumer(&bootstrap, &crate::unique("presence-tests-lister"))?
            .fetch_metadata(None, REQUEST_TIMEOUT)
            .context("reading the broker's metadata")?;
        Ok(metadata
            .topics()
            .iter()
            .map(|topic| topic.name().to_owned())
            .collect())
    })
    .await
    .context("listing topics")?
}

fn partition_count(consumer: &BaseConsumer, topic: &str) -> Result<i32> {
    let metadata = consumer
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .with_context(|| format!("metadata of {topic}"))?;
    let found = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| anyhow!("no metadata for {topic}"))?;
    if let Some(error) = found.error() {
        bail!("metadata of {topic}: {error:?}");
    }
    i32::try_from(found.partitions().len()).context("partition count")
}

/// One record of a topic as read, undecoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    pub partition: i32,
    pub offset: i64,
    pub payload: Vec<u8>,
    /// The W3C `traceparent` header, if the record has one.
    pub traceparent: Option<String>,
    /// Every header, as text.
    pub headers: Vec<(String, String)>,
}

fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.clone())
}

impl RawRecord {
    /// The first header called `name`.
    pub fn header(&self, name: &str) -> Option<String> {
        header(&self.headers, name)
    }
}

/// Produces one record and waits for the broker's acknowledgement, as any Kafka
/// client (an upstream system, a broken one) would.
pub async fn produce(bootstrap: &str, topic: &str, key: &str, payload: &[u8]) -> Result<()> {
    let producer: rdkafka::producer::FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("message.timeout.ms", "10000")
        .create()
        .context("creating a Kafka producer")?;
    let record = rdkafka::producer::FutureRecord::to(topic)
        .key(key)
        .payload(payload);
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map(|_| ())
        .map_err(|(error, _)| anyhow!("producing to {topic}: {error}"))
}

/// One record of the `decisions` stream, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionRecord {
    pub partition: i32,
    pub offset: i64,
    pub decision: pb::Decision,
    pub traceparent: Option<String>,
}

impl DecisionRecord {
    /// `result.status` as the HTTP API spells it (`OKAY`, `ALREADY_ENTERED`, …).
    pub fn status(&self) -> String {
        let name = self.decision.status().as_str_name();
        name.strip_prefix("STATUS_").unwrap_or(name).to_owned()
    }

    /// `enter`, `exit` or `validate`, as the path names the scan.
    pub fn kind(&self) -> String {
        let name = self.decision.kind().as_str_name();
        name.strip_prefix("SCAN_KIND_")
            .unwrap_or(name)
            .to_lowercase()
    }
}

/// Every record of `topic` (a `decisions` topic), decoded as `presence.v1.Decision`.
/// A record that does not decode is an error: the stream is a contract.
pub async fn read_decisions(
    bootstrap: &str,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<DecisionRecord>> {
    read_topic(bootstrap, topic, timeout)
        .await?
        .into_iter()
        .map(|raw| {
            let decision = pb::Decision::decode(raw.payload.as_slice()).with_context(|| {
                format!(
                    "{topic}/{}@{} is not a presence.v1.Decision",
                    raw.partition, raw.offset
                )
            })?;
            Ok(DecisionRecord {
                partition: raw.partition,
                offset: raw.offset,
                decision,
                traceparent: raw.traceparent,
            })
        })
        .collect()
}
