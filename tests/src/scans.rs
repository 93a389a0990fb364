//! Scans sent the way scanners send them under load (each retried with the same
//! body until decided), and the checks every distributed test makes of the
//! outcome: each scan on the `decisions` stream exactly once with what its
//! client was told (raw, or after deduplication by scan id where a redelivery
//! may publish a decision twice: [`Delivery`]), and each ticket entered exactly
//! once.

use crate::TestApp;
use crate::app::Reply;
use crate::kafka::{DecisionRecord, read_decisions, wait_until_committed};
use crate::scenario::{Scanner, Show, next_scan_time};
use anyhow::{Context, Result, anyhow, ensure};
use presence_domain::ScanKind;
use presence_domain::time::iso8601;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Longest a scan is retried while it is not decided.
pub const RETRY_FOR: Duration = Duration::from_secs(40);
/// Pause between two tries of a scan.
pub const RETRY_PAUSE: Duration = Duration::from_millis(250);
/// Longest reading the `decisions` stream to its end may take.
pub const READ_FOR: Duration = Duration::from_secs(20);

/// Runs a test body against `app`, printing the services' logs when it fails.
pub async fn with_app<F, Fut>(app: TestApp, body: F) -> Result<()>
where
    F: FnOnce(TestApp) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let outcome = body(app.clone()).await;
    if outcome.is_err() {
        app.print_logs();
    }
    outcome
}

/// What identifies one scan for the validator: kind, device, token, scan time.
pub type ScanKey = (String, u64, String, i64);

/// What a scanner does when a try gets no decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Retries a 503 (UNAVAILABLE); a connection error fails the test.
    Unavailable,
    /// Retries a 503 and a connection error alike: the gateway is expected to
    /// go away and come back (on another port, which each try looks up).
    UnavailableOrUnreachable,
}

/// One try of a scan: when it was sent and what came of it.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub started: Instant,
    pub finished: Instant,
    /// The HTTP code, or `None` when the connection failed.
    pub code: Option<u16>,
    /// Why the connection failed.
    pub error: Option<String>,
}

/// One scan as the scanner meant it (one body), and every answer it got: a
/// client retry sends the same body again.
#[derive(Debug, Clone)]
pub struct Sent {
    pub kind: ScanKind,
    pub body: Value,
    /// Every HTTP answer, in order.
    pub answers: Vec<Reply>,
    /// Every try, connection failures included, in order.
    pub attempts: Vec<Attempt>,
}

impl Sent {
    pub fn key(&self) -> ScanKey {
        (
            self.kind.to_string(),
            self.body["deviceId"].as_u64().unwrap_or_default(),
            self.token().to_owned(),
            self.body["scanTime"].as_i64().unwrap_or_default(),
        )
    }

    pub fn token(&self) -> &str {
        self.body["token"].as_str().unwrap_or_default()
    }

    pub fn gate_name(&self) -> &str {
        self.body["gateName"].as_str().unwrap_or_default()
    }

    pub fn scan_time(&self) -> i64 {
        self.body["scanTime"].as_i64().unwrap_or_default()
    }

    /// The answer that decided it (the last one).
    pub fn last(&self) -> Result<&Reply> {
        self.answers
            .last()
            .ok_or_else(|| anyhow!("{:?} was never answered", self.key()))
    }

    /// The final decision's status; an error unless it was decided (HTTP 200).
    pub fn status(&self) -> Result<&str> {
        let last = self.last()?;
        ensure!(
            last.code == 200,
            "{:?} ended with HTTP {} {}",
            self.key(),
            last.code,
            last.text
        );
        Ok(last.status())
    }

    /// Every scan id the gateway gave this scan's requests.
    pub fn scan_ids(&self) -> Vec<String> {
        self.answers.iter().filter_map(scan_id).collect()
    }

    /// How many tries were answered 503.
    pub fn unavailable(&self) -> usize {
        self.answers
            .iter()
            .filter(|reply| reply.code == 503)
            .count()
    }

    /// How many tries failed without an HTTP answer.
    pub fn unreachable(&self) -> usize {
        self.attempts.iter().filter(|a| a.code.is_none()).count()
    }
}

pub fn scan_id(reply: &Reply) -> Option<String> {
    reply.json["result"]["scanId"].as_str().map(str::to_owned)
}

pub fn record_key(record: &DecisionRecord) -> ScanKey {
    let d = &record.decision;
    (record.kind(), d.device_id, d.token.clone(), d.scan_time)
}

/// Sends `body` until it is decided: a 503 (UNAVAILABLE, with `Retry-After`)
/// is retried with the very same body, as a scanner does, for at most
/// [`RETRY_FOR`]. Any other answer ends it.
pub async fn scan_until_decided(app: &TestApp, kind: ScanKind, body: Value) -> Result<Sent> {
    scan_until_decided_with(app, kind, body, Retry::Unavailable).await
}

/// [`scan_until_decided`], also retrying connection errors when `retry` says so.
pub async fn scan_until_decided_with(
    app: &TestApp,
    kind: ScanKind,
    body: Value,
    retry: Retry,
) -> Result<Sent> {
    let deadline = Instant::now() + RETRY_FOR;
    let mut sent = Sent {
        kind,
        body,
        answers: Vec::new(),
        attempts: Vec::new(),
    };
    loop {
        let started = Instant::now();
        let decided = match app.scan(kind, &sent.body).await {
            Ok(reply) => {
                reply.check_envelope()?;
                let unavailable = reply.code == 503;
                if unavailable {
                    reply.expect(503, "UNAVAILABLE")?;
                    let retry_after = reply
                        .headers
                        .get("retry-after")
                        .and_then(|value| value.to_str().ok())
                        .and_then(|value| value.parse::<u64>().ok());
                    ensure!(
                        retry_after.is_some_and(|seconds| seconds >= 1),
                        "a 503 without a valid Retry-After: {:?}",
                        reply.headers
                    );
                }
                sent.attempts.push(Attempt {
                    started,
                    finished: Instant::now(),
                    code: Some(reply.code),
                    error: None,
                });
                sent.answers.push(reply);
                !unavailable
            }
            Err(error) if retry == Retry::UnavailableOrUnreachable => {
                sent.attempts.push(Attempt {
                    started,
                    finished: Instant::now(),
                    code: None,
                    error: Some(format!("{error:#}")),
                });
                false
            }
            Err(error) => return Err(error.context(format!("scan {:?}", sent.key()))),
        };
        if decided {
            return Ok(sent);
        }
        ensure!(
            Instant::now() < deadline,
            "{:?} still undecided after {RETRY_FOR:?}: {:?}",
            sent.key(),
            sent.attempts
        );
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// Sends `scans` with at most `concurrency` in flight, each until decided
/// (retrying as `retry` says). `answered` counts scans whose every try is done.
pub async fn send_all(
    app: &TestApp,
    scans: Vec<(ScanKind, Value)>,
    concurrency: usize,
    answered: Arc<AtomicUsize>,
    retry: Retry,
) -> Result<Vec<Sent>> {
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut set = JoinSet::new();
    for (kind, body) in scans {
        let (app, permits, answered) = (app.clone(), permits.clone(), answered.clone());
        set.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            let sent = scan_until_decided_with(&app, kind, body, retry).await;
            answered.fetch_add(1, Ordering::Relaxed);
            sent
        });
    }
    let mut sent = Vec::new();
    while let Some(joined) = set.join_next().await {
        sent.push(joined??);
    }
    Ok(sent)
}

/// `send_all` in the background; [`Flow::wait_for`] waits until a number of
/// scans is answered, so a fault can strike mid-stream.
#[derive(Debug)]
pub struct Flow {
    answered: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<Result<Vec<Sent>>>,
}

impl Flow {
    /// Starts sending `scans` as [`send_all`] does.
    pub fn start(
        app: &TestApp,
        scans: Vec<(ScanKind, Value)>,
        concurrency: usize,
        retry: Retry,
    ) -> Self {
        let answered = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let (app, answered) = (app.clone(), answered.clone());
            async move { send_all(&app, scans, concurrency, answered, retry).await }
        });
        Self { answered, task }
    }

    /// How many scans are done so far.
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::Relaxed)
    }

    /// Waits until at least `count` scans are done; an error if the flow ended
    /// first (the fault would strike nothing in flight).
    pub async fn wait_for(&self, count: usize) -> Result<()> {
        while self.answered() < count {
            ensure!(
                !self.task.is_finished(),
                "the scans ended after {} answers, before {count}",
                self.answered()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(())
    }

    /// Waits for every scan to be decided.
    pub async fn finish(self) -> Result<Vec<Sent>> {
        self.task.await.context("the scan flow panicked")?
    }
}

/// What SPEC promises of the `decisions` stream for a test's scans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// No validator lost records it had taken (no crash, no partitions moved):
    /// nothing is redelivered, so each decision is on the raw stream exactly
    /// once (SPEC §5), not one duplicate to drop.
    ExactlyOnce,
    /// A validator was killed or its group rebalanced while scans flowed: the
    /// records it had taken but not committed are handed out again and their
    /// decisions published again under the same scan id (SPEC §4's at-least-once
    /// consumption; docs/analytics.md tells consumers to deduplicate by scan id).
    /// Exactly once after that deduplication, each copy the same decision.
    AtLeastOnce,
}

/// What the `decisions` stream held, as [`stream_holds_each_scan_once`] read it.
#[derive(Debug)]
pub struct Stream {
    /// Records, duplicates included.
    pub raw: usize,
    /// Records dropped by deduplication by scan id (redeliveries).
    pub duplicates: usize,
    /// The partition of each record dropped by deduplication.
    pub duplicated_partitions: Vec<i32>,
    /// The deduplicated records by scan key.
    pub by_key: BTreeMap<ScanKey, DecisionRecord>,
}

/// Every record of the `decisions` stream, duplicates included, once the
/// validators have finished (committed) every scan request: a stream read while
/// a redelivery is still under way would miss its duplicate, or a decision.
pub async fn all_decisions(app: &TestApp) -> Result<Vec<DecisionRecord>> {
    let cluster = app.cluster().context("not a distributed fixture")?;
    wait_until_committed(
        &cluster.bootstrap,
        &cluster.validator_group(),
        &cluster.topic("scans"),
        READ_FOR,
    )
    .await?;
    read_decisions(&cluster.bootstrap, &cluster.topic("decisions"), READ_FOR).await
}

/// The records by scan id, as `delivery` allows them: with
/// [`Delivery::ExactlyOnce`] a scan id twice is an error; with
/// [`Delivery::AtLeastOnce`] its copies must carry the same decision.
pub fn by_scan_id(
    records: Vec<DecisionRecord>,
    delivery: Delivery,
) -> Result<BTreeMap<String, DecisionRecord>> {
    let mut by_id: BTreeMap<String, DecisionRecord> = BTreeMap::new();
    for record in records {
        match by_id.get(&record.decision.scan_id) {
            Some(first) => {
                ensure!(
                    delivery == Delivery::AtLeastOnce,
                    "scan id {} published twice although nothing was redelivered:\n{first:?}\n\
                     {record:?}",
                    record.decision.scan_id
                );
                ensure!(
                    first.decision == record.decision,
                    "scan id {} published with two different decisions:\n{first:?}\n{record:?}",
                    record.decision.scan_id
                );
            }
            None => {
                by_id.insert(record.decision.scan_id.clone(), record);
            }
        }
    }
    Ok(by_id)
}

/// The one check of the `decisions` stream against what the clients saw: once
/// every scan request is finished, every scan sent is on it as `delivery`
/// promises, with what its client was told ([`check_stream`]), and nothing else.
pub async fn stream_holds_each_scan_once(
    app: &TestApp,
    sent: &[Sent],
    delivery: Delivery,
) -> Result<Stream> {
    let records = all_decisions(app).await?;
    let raw = records.len();
    let mut seen = BTreeSet::new();
    let duplicated_partitions = records
        .iter()
        .filter(|record| !seen.insert(record.decision.scan_id.clone()))
        .map(|record| record.partition)
        .collect();
    let by_id = by_scan_id(records, delivery)?;
    let by_key = check_stream(sent, &by_id)?;
    Ok(Stream {
        raw,
        duplicates: raw - by_id.len(),
        duplicated_partitions,
        by_key,
    })
}

/// Nothing answered was lost and no ticket entered twice: the stream holds each
/// scan as `delivery` promises ([`stream_holds_each_scan_once`]), and every
/// ticket was entered exactly once ([`entered_exactly_once`]).
pub async fn nothing_lost(
    app: &TestApp,
    sent: &[Sent],
    probe: &Scanner,
    delivery: Delivery,
) -> Result<Stream> {
    let stream = stream_holds_each_scan_once(app, sent, delivery).await?;
    entered_exactly_once(app, sent, &stream.by_key, probe).await?;
    Ok(stream)
}

/// Checks the stream against what the clients saw: every scan key sent appears
/// exactly once after deduplication, under the scan id of every decided answer
/// it got, with the status, message and places of the final answer; nothing
/// else is on the stream. Returns the records by scan key.
pub fn check_stream(
    sent: &[Sent],
    by_id: &BTreeMap<String, DecisionRecord>,
) -> Result<BTreeMap<ScanKey, DecisionRecord>> {
    let mut by_key: BTreeMap<ScanKey, Vec<&DecisionRecord>> = BTreeMap::new();
    for record in by_id.values() {
        by_key.entry(record_key(record)).or_default().push(record);
    }
    let expected: BTreeSet<ScanKey> = sent.iter().map(Sent::key).collect();
    ensure!(
        expected.len() == sent.len(),
        "the test sent one scan key twice"
    );
    for (key, records) in &by_key {
        ensure!(
            expected.contains(key),
            "a decision for a scan nobody sent: {records:?}"
        );
        ensure!(
            records.len() == 1,
            "{key:?} has {} distinct decisions on the stream: {records:?}",
            records.len()
        );
    }
    let mut found = BTreeMap::new();
    for scan in sent {
        let key = scan.key();
        let record = by_key
            .get(&key)
            .and_then(|records| records.first())
            .ok_or_else(|| {
                let answers: Vec<(u16, Option<String>)> = scan
                    .answers
                    .iter()
                    .map(|answer| (answer.code, scan_id(answer)))
                    .collect();
                let token: Vec<&DecisionRecord> = by_id
                    .values()
                    .filter(|record| record.decision.token == key.2)
                    .collect();
                anyhow!(
                    "{key:?} was answered (HTTP code, scan id) {answers:?}, finally {:?}, but is \
                     not on the decisions stream; its token's records: {token:#?}",
                    scan.last().map(Reply::status)
                )
            })?;
        // A decided answer carries the id of the scan its decision was made for,
        // the one on the stream: a retry answered from memory, or a retry of a
        // scan answered 503 but applied, returns the first scan's id.
        for answer in scan.answers.iter().filter(|answer| answer.code == 200) {
            ensure!(
                scan_id(answer).as_deref() == Some(record.decision.scan_id.as_str()),
                "{key:?}: answered as scan {:?}, published as scan {}",
                scan_id(answer),
                record.decision.scan_id
            );
        }
        let ids = scan.scan_ids();
        ensure!(
            ids.contains(&record.decision.scan_id),
            "{key:?}: the stream's scan id {} is none of the ids its requests got: {ids:?}",
            record.decision.scan_id
        );
        let last = scan.last()?;
        ensure!(
            record.status() == scan.status()?,
            "{key:?}: the stream says {}, the client was told {}",
            record.status(),
            last.text
        );
        ensure!(
            record.decision.message == last.message(),
            "{key:?}: message {:?} on the stream, {:?} in the answer",
            record.decision.message,
            last.message()
        );
        let places: Vec<(String, String)> = record
            .decision
            .tickets
            .iter()
            .map(|t| (t.place.clone(), t.event_id.clone()))
            .collect();
        ensure!(
            places == last.tickets(),
            "{key:?}: tickets {places:?} on the stream, {:?} in the answer",
            last.tickets()
        );
        ensure!(
            record.decision.gate_name == scan.gate_name()
                && record.decision.venue_id == scan.body["venueId"].as_str().unwrap_or_default()
                && Some(record.decision.gate_id) == scan.body["gateId"].as_u64(),
            "{key:?}: the stream does not name the scan's venue and gate: {record:?}"
        );
        found.insert(key, (*record).clone());
    }
    Ok(found)
}

/// Per token, the scans whose final answer is OKAY.
pub fn okays_by_token(sent: &[Sent]) -> Result<BTreeMap<String, Vec<&Sent>>> {
    let mut okays: BTreeMap<String, Vec<&Sent>> = BTreeMap::new();
    for scan in sent {
        if scan.status()? == "OKAY" {
            okays.entry(scan.token().to_owned()).or_default().push(scan);
        }
    }
    Ok(okays)
}

/// Every scanned token was entered exactly once: one OKAY answer, one OKAY on
/// the stream, every ALREADY_ENTERED naming that entry's gate and time, and the
/// stored state (read back through a fresh scan from `probe`) pointing at it.
pub async fn entered_exactly_once(
    app: &TestApp,
    sent: &[Sent],
    stream: &BTreeMap<ScanKey, DecisionRecord>,
    probe: &Scanner,
) -> Result<()> {
    let okays = okays_by_token(sent)?;
    let tokens: BTreeSet<&str> = sent.iter().map(Sent::token).collect();
    for token in tokens {
        let entries = okays.get(token).map(Vec::as_slice).unwrap_or_default();
        ensure!(
            entries.len() == 1,
            "{token} was admitted {} times: {:?}",
            entries.len(),
            entries.iter().map(|s| s.key()).collect::<Vec<_>>()
        );
        let entry = entries[0];
        let on_stream = stream
            .iter()
            .filter(|((_, _, t, _), record)| t == token && record.status() == "OKAY")
            .count();
        ensure!(
            on_stream == 1,
            "{token}: {on_stream} OKAYs on the decisions stream"
        );
        let expected = format!(
            "Already entered at {} at {}",
            entry.gate_name(),
            iso8601(entry.scan_time())
        );
        for scan in sent.iter().filter(|s| s.token() == token) {
            let status = scan.status()?;
            ensure!(
                status == "OKAY" || status == "ALREADY_ENTERED",
                "{:?}: {status}",
                scan.key()
            );
            if status == "ALREADY_ENTERED" {
                ensure!(
                    scan.last()?.message() == expected,
                    "{:?}: {:?}, expected {expected:?}",
                    scan.key(),
                    scan.last()?.message()
                );
            }
        }
        let reply = app
            .scan(ScanKind::Enter, &probe.body(token, next_scan_time()))
            .await?;
        reply.expect(200, "ALREADY_ENTERED")?;
        ensure!(
            reply.message() == expected,
            "{token}: the stored entry is {:?}, the answers said {expected:?}",
            reply.message()
        );
    }
    Ok(())
}

/// A venue with an event on now, `tokens` tickets, and `gates` scanners, one per gate.
pub async fn venue(
    app: &TestApp,
    tokens: usize,
    gates: usize,
) -> Result<(Show, Vec<String>, Vec<Scanner>)> {
    let show = Show::new();
    let tokens: Vec<String> = (0..tokens).map(|_| show.token()).collect();
    let mut records = show.records();
    records.extend(tokens.iter().map(|t| show.ticket(t, &["A:1:1"])));
    app.load(&records).await?;
    let mut scanners = Vec::new();
    for gate in 1..=gates {
        scanners.push(app.scanner(&show.venue_id, &format!("Gate {gate}")).await?);
    }
    Ok((show, tokens, scanners))
}

/// `count` enters spread over `tokens` and `scanners`, each token at several
/// gates: under load, one OKAY per token and ALREADY_ENTERED for the rest.
pub fn enters(count: usize, tokens: &[String], scanners: &[Scanner]) -> Vec<(ScanKind, Value)> {
    (0..count)
        .map(|i| {
            let scanner = &scanners[(i / tokens.len() + i) % scanners.len()];
            (
                ScanKind::Enter,
                scanner.body(&tokens[i % tokens.len()], next_scan_time()),
            )
        })
        .collect()
}
