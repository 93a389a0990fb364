//! Distributed mode only: what the services show beyond the HTTP contract.
//!
//! The `decisions` stream is read with a plain Kafka consumer and decoded as
//! `presence.v1.Decision`; validators are added, stopped (SIGTERM) and killed
//! (SIGKILL) while scans flow. The HTTP contract itself runs against this mode
//! in `contract.rs`.

use anyhow::{Context, Result, anyhow, bail, ensure};
use presence_domain::time::iso8601;
use presence_tests::kafka::{DecisionRecord, produce, read_decisions, read_topic};
use presence_tests::{Reply, ScanKind, Scanner, Show, TestApp, next_scan_time, now_ms, unique};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

const ENTER: ScanKind = ScanKind::Enter;
const EXIT: ScanKind = ScanKind::Exit;
const VALIDATE: ScanKind = ScanKind::Validate;

/// Longest a scan is retried while the gateway answers 503.
const RETRY_FOR: Duration = Duration::from_secs(40);
/// Pause between two tries of a scan answered 503.
const RETRY_PAUSE: Duration = Duration::from_millis(250);
/// Longest reading the `decisions` stream to its end may take.
const READ_FOR: Duration = Duration::from_secs(20);

/// Runs a test body against its own distributed fixture, printing the services'
/// logs when it fails.
async fn with_app<F, Fut>(body: F) -> Result<()>
where
    F: FnOnce(TestApp) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let app = TestApp::distributed().await?;
    let outcome = body(app.clone()).await;
    if outcome.is_err() {
        app.print_logs();
    }
    outcome
}

/// What identifies one scan for the validator: kind, device, token, scan time.
type ScanKey = (String, u64, String, i64);

/// One scan as the scanner meant it (one body), and every answer it got: a
/// client retry sends the same body again.
#[derive(Debug, Clone)]
struct Sent {
    kind: ScanKind,
    body: Value,
    answers: Vec<Reply>,
}

impl Sent {
    fn key(&self) -> ScanKey {
        (
            self.kind.to_string(),
            self.body["deviceId"].as_u64().unwrap_or_default(),
            self.token().to_owned(),
            self.body["scanTime"].as_i64().unwrap_or_default(),
        )
    }

    fn token(&self) -> &str {
        self.body["token"].as_str().unwrap_or_default()
    }

    fn gate_name(&self) -> &str {
        self.body["gateName"].as_str().unwrap_or_default()
    }

    fn scan_time(&self) -> i64 {
        self.body["scanTime"].as_i64().unwrap_or_default()
    }

    /// The answer that decided it (the last one).
    fn last(&self) -> Result<&Reply> {
        self.answers
            .last()
            .ok_or_else(|| anyhow!("{:?} was never answered", self.key()))
    }

    /// The final decision's status; an error unless it was decided (HTTP 200).
    fn status(&self) -> Result<&str> {
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
    fn scan_ids(&self) -> Vec<String> {
        self.answers.iter().filter_map(scan_id).collect()
    }

    fn unavailable(&self) -> usize {
        self.answers
            .iter()
            .filter(|reply| reply.code == 503)
            .count()
    }
}

fn scan_id(reply: &Reply) -> Option<String> {
    reply.json["result"]["scanId"].as_str().map(str::to_owned)
}

fn record_key(record: &DecisionRecord) -> ScanKey {
    let d = &record.decision;
    (record.kind(), d.device_id, d.token.clone(), d.scan_time)
}

/// Sends `body` until it is decided: a 503 (UNAVAILABLE) is retried with the
/// very same body, as a scanner does, for at most [`RETRY_FOR`]. Any other
/// answer ends it.
async fn scan_until_decided(app: &TestApp, kind: ScanKind, body: Value) -> Result<Sent> {
    let deadline = Instant::now() + RETRY_FOR;
    let mut sent = Sent {
        kind,
        body,
        answers: Vec::new(),
    };
    loop {
        let reply = app.scan(kind, &sent.body).await?;
        reply.check_envelope()?;
        let unavailable = reply.code == 503;
        if unavailable {
            reply.expect(503, "UNAVAILABLE")?;
        }
        sent.answers.push(reply);
        if !unavailable {
            return Ok(sent);
        }
        ensure!(
            Instant::now() < deadline,
            "{:?} still answered 503 after {RETRY_FOR:?}",
            sent.key()
        );
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// The `decisions` stream deduplicated by scan id, as its consumers are told to
/// read it. A scan id seen twice (a redelivered scan published again) must carry
/// the same decision both times.
async fn decisions_by_scan_id(app: &TestApp) -> Result<BTreeMap<String, DecisionRecord>> {
    deduplicate(all_decisions(app).await?)
}

/// Every record of the `decisions` stream, duplicates included.
async fn all_decisions(app: &TestApp) -> Result<Vec<DecisionRecord>> {
    let cluster = app.cluster().context("not a distributed fixture")?;
    read_decisions(&cluster.bootstrap, &cluster.topic("decisions"), READ_FOR).await
}

fn deduplicate(records: Vec<DecisionRecord>) -> Result<BTreeMap<String, DecisionRecord>> {
    let mut by_id: BTreeMap<String, DecisionRecord> = BTreeMap::new();
    for record in records {
        match by_id.get(&record.decision.scan_id) {
            Some(first) => ensure!(
                first.decision == record.decision,
                "scan id {} published with two different decisions:\n{first:?}\n{record:?}",
                record.decision.scan_id
            ),
            None => {
                by_id.insert(record.decision.scan_id.clone(), record);
            }
        }
    }
    Ok(by_id)
}

/// Checks the stream against what the clients saw: every scan key sent appears
/// exactly once after deduplication, under the scan id of every decided answer
/// it got, with the status, message and places of the final answer; nothing
/// else is on the stream. Returns the records by scan key.
fn check_stream(
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
fn okays_by_token(sent: &[Sent]) -> Result<BTreeMap<String, Vec<&Sent>>> {
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
async fn entered_exactly_once(
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
            .scan(ENTER, &probe.body(token, next_scan_time()))
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

/// Sends `scans` with at most `concurrency` in flight, each until decided.
/// `answered` counts scans whose every try is done.
async fn send_all(
    app: &TestApp,
    scans: Vec<(ScanKind, Value)>,
    concurrency: usize,
    answered: Arc<AtomicUsize>,
) -> Result<Vec<Sent>> {
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut set = JoinSet::new();
    for (kind, body) in scans {
        let (app, permits, answered) = (app.clone(), permits.clone(), answered.clone());
        set.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            let sent = scan_until_decided(&app, kind, body).await;
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

/// A venue with an event on now, `tokens` tickets, and `gates` scanners, one per gate.
async fn venue(
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

// ---------------------------------------------------------------- the decisions stream

/// Every answered scan is on `decisions` once, with the status its client saw;
/// client retries of a scan add nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_decisions_stream_holds_every_answered_scan_once() -> Result<()> {
    with_app(|app| async move {
        let started = now_ms();
        let (show, tokens, scanners) = venue(&app, 4, 2).await?;
        let (a, b) = (&scanners[0], &scanners[1]);
        let nobody = unique("nobody");
        let mut plan: Vec<(ScanKind, &Scanner, &str, &str)> = Vec::new();
        for token in &tokens {
            plan.extend([
                (ENTER, a, token.as_str(), "OKAY"),
                (ENTER, b, token.as_str(), "ALREADY_ENTERED"),
                (VALIDATE, b, token.as_str(), "INTERNAL_SCAN"),
                (EXIT, a, token.as_str(), "EXIT"),
            ]);
        }
        plan.extend([
            (ENTER, a, nobody.as_str(), "NOT_FOUND"),
            (VALIDATE, b, nobody.as_str(), "NOT_FOUND"),
        ]);
        let mut sent = Vec::new();
        for (kind, scanner, token, status) in plan {
            let scan =
                scan_until_decided(&app, kind, scanner.body(token, next_scan_time())).await?;
            scan.last()?.expect(200, status)?;
            sent.push(scan);
        }
        // Client retries: the same bodies again, each answered with its first
        // decision (and, checked with the stream below, its first scan id).
        for scan in sent.iter_mut().step_by(3) {
            for _ in 0..2 {
                let first = scan.answers[0].clone();
                let retry = app.scan(scan.kind, &scan.body).await?;
                retry.expect(200, first.status())?;
                ensure!(
                    retry.message() == first.message() && retry.tickets() == first.tickets(),
                    "a retry got {}, the first answer was {}",
                    retry.text,
                    first.text
                );
                scan.answers.push(retry);
            }
        }
        let records = all_decisions(&app).await?;
        // Nothing was redelivered here, so not even a duplicate to drop.
        ensure!(
            records.len() == sent.len(),
            "{} scans sent, {} records on the stream: a retry or a decision was published twice",
            sent.len(),
            records.len()
        );
        // W3C trace context travels with every decision: `00-<trace>-<span>-<flags>`.
        for record in &records {
            let traceparent = record.traceparent.as_deref().unwrap_or_default();
            let parts: Vec<&str> = traceparent.split('-').collect();
            ensure!(
                parts.len() == 4
                    && parts[0] == "00"
                    && parts[1].len() == 32
                    && parts[2].len() == 16,
                "decision {} carries no valid traceparent: {traceparent:?}",
                record.decision.scan_id
            );
        }
        let stream = check_stream(&sent, &deduplicate(records)?)?;
        for (key, record) in &stream {
            let d = &record.decision;
            ensure!(
                d.channel_id.as_deref() == Some("A")
                    && d.device_os().as_str_name() == "DEVICE_OS_PRINTED"
                    && (started..=now_ms()).contains(&d.decided_at)
                    && d.venue_id == show.venue_id,
                "{key:?}: the record does not carry the scan's fields: {d:?}"
            );
        }
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------- validators come and go

/// Two validators in one group split the scan partitions; stopping one hands its
/// partitions to the other. Scans before, during and after are all decided,
/// each token admitted once, each scan on the stream once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validators_share_partitions_and_hand_them_over_on_sigterm() -> Result<()> {
    with_app(|app| async move {
        let second = app.start_validator().await?;
        let partitions = usize::try_from(app.cluster().context("distributed")?.partitions)?;
        let shares = [
            app.validator_partitions(0)?,
            app.validator_partitions(second)?,
        ];
        ensure!(
            shares.iter().all(|share| *share > 0) && shares.iter().sum::<usize>() == partitions,
            "two validators hold {shares:?} of {partitions} partitions"
        );
        for index in [0, second] {
            let (ready, text) = app.validator_readiness(index).await?;
            ensure!(ready, "validator {index} is not ready: {text}");
        }

        let (_show, tokens, scanners) = venue(&app, 60, 4).await?;
        // Each token is scanned at two gates at once: one admits, one refuses.
        let phase = |tokens: &[String]| -> Vec<(ScanKind, Value)> {
            tokens
                .iter()
                .enumerate()
                .flat_map(|(i, token)| {
                    [
                        scanners[i % scanners.len()].body(token, next_scan_time()),
                        scanners[(i + 1) % scanners.len()].body(token, next_scan_time()),
                    ]
                })
                .map(|body| (ENTER, body))
                .collect()
        };
        let (before, during, after) = (
            phase(&tokens[..20]),
            phase(&tokens[20..40]),
            phase(&tokens[40..]),
        );

        let sent_before = send_all(&app, before, 8, Arc::default()).await?;
        for scan in &sent_before {
            ensure!(
                scan.unavailable() == 0,
                "503 before any rebalance: {:?}",
                scan.answers
            );
        }

        let answered = Arc::new(AtomicUsize::new(0));
        let during_count = during.len();
        let flowing = tokio::spawn({
            let (app, answered) = (app.clone(), answered.clone());
            async move { send_all(&app, during, 4, answered).await }
        });
        while answered.load(Ordering::Relaxed) < during_count / 4 {
            ensure!(
                !flowing.is_finished(),
                "the scans ended before the validator was stopped"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let status = app.stop_validator(second).await?;
        ensure!(
            status.success(),
            "validator {second} exited with {status} on SIGTERM"
        );
        let sent_during = flowing.await??;
        app.settle().await?;
        ensure!(
            app.validator_partitions(0)? == partitions,
            "the remaining validator holds {} of {partitions} partitions",
            app.validator_partitions(0)?
        );

        let sent_after = send_all(&app, after, 8, Arc::default()).await?;
        for scan in &sent_after {
            ensure!(
                scan.unavailable() == 0,
                "503 after the rebalance: {:?}",
                scan.answers
            );
        }

        let sent: Vec<Sent> = sent_before
            .into_iter()
            .chain(sent_during)
            .chain(sent_after)
            .collect();
        let by_id = decisions_by_scan_id(&app).await?;
        let stream = check_stream(&sent, &by_id)?;
        entered_exactly_once(&app, &sent, &stream, &scanners[0]).await
    })
    .await
}

/// A validator killed (SIGKILL) in the middle of a stream of scans, then started
/// again: no ticket is admitted twice, every scan ends decided and is on the
/// stream exactly once, and every scan answered 503 gets, when retried, the
/// decision that was applied for it or is applied then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validator_killed_mid_stream_admits_no_ticket_twice() -> Result<()> {
    const SCANS: usize = 300;
    const IN_FLIGHT: usize = 12;
    with_app(|app| async move {
        let (_show, tokens, scanners) = venue(&app, 40, 6).await?;
        let scans: Vec<(ScanKind, Value)> = (0..SCANS)
            .map(|i| {
                let scanner = &scanners[(i / tokens.len() + i) % scanners.len()];
                (
                    ENTER,
                    scanner.body(&tokens[i % tokens.len()], next_scan_time()),
                )
            })
            .collect();

        let answered = Arc::new(AtomicUsize::new(0));
        let flowing = tokio::spawn({
            let (app, answered) = (app.clone(), answered.clone());
            async move { send_all(&app, scans, IN_FLIGHT, answered).await }
        });
        while answered.load(Ordering::Relaxed) < SCANS / 4 {
            ensure!(
                !flowing.is_finished(),
                "the scans ended before the validator was killed"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        app.kill_validator(0)?;
        let killed_at = answered.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(500)).await;
        app.restart_validator(0).await?;
        let sent = flowing.await??;
        ensure!(
            killed_at < SCANS,
            "every scan was answered before the kill: nothing was in flight"
        );
        let retried = sent.iter().filter(|s| s.unavailable() > 0).count();
        ensure!(
            retried > 0,
            "no scan was answered 503: the kill did not interrupt the stream"
        );

        let by_id = decisions_by_scan_id(&app).await?;
        let stream = check_stream(&sent, &by_id)?;
        entered_exactly_once(&app, &sent, &stream, &scanners[0]).await
    })
    .await
}

/// SIGTERM stops every service cleanly (exit status 0), each within the harness's
/// stop timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_stops_cleanly_on_sigterm() -> Result<()> {
    with_app(|app| async move {
        let (_show, tokens, scanners) = venue(&app, 1, 1).await?;
        scan_until_decided(&app, ENTER, scanners[0].body(&tokens[0], next_scan_time()))
            .await?
            .last()?
            .expect(200, "OKAY")?;
        let statuses = app.terminate_all().await?;
        ensure!(statuses.len() == 3, "expected three services: {statuses:?}");
        for (program, status) in statuses {
            if !status.success() {
                bail!("{program} exited with {status} on SIGTERM");
            }
        }
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------- poison records

/// Garbage and wrong protobuf on `scans`, `inventory` and `registry` go to
/// `<topic>.dlq` with the reason; the same partitions (same keys) keep flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_are_dead_lettered_and_their_partitions_keep_flowing() -> Result<()> {
    with_app(|app| async move {
        let cluster = app.cluster().context("not a distributed fixture")?;
        let (show, tokens, scanners) = venue(&app, 1, 1).await?;
        let garbage: &[u8] = b"\xff\x00 not protobuf at all";
        // A valid protobuf message of the wrong kind: field 1 as a string.
        let wrong_message: &[u8] = b"\x0a\x05hello";
        let poisoned = [
            ("scans", tokens[0].as_str(), vec![garbage, wrong_message]),
            ("inventory", "upstream", vec![garbage]),
            ("registry", show.venue_id.as_str(), vec![garbage]),
        ];
        for (topic, key, payloads) in &poisoned {
            for payload in payloads {
                produce(&cluster.bootstrap, &cluster.topic(topic), key, payload).await?;
            }
        }
        // Scans, inventory and device calls of the same keys are still answered.
        scan_until_decided(&app, ENTER, scanners[0].body(&tokens[0], next_scan_time()))
            .await?
            .last()?
            .expect(200, "OKAY")?;
        let late = show.token();
        app.load(&[show.ticket(&late, &["A:1:2"])]).await?;
        let second = app.scanner(&show.venue_id, "Gate 2").await?;
        scan_until_decided(&app, ENTER, second.body(&late, next_scan_time()))
            .await?
            .last()?
            .expect(200, "OKAY")?;
        for (topic, _, payloads) in &poisoned {
            let dead = read_topic(
                &cluster.bootstrap,
                &cluster.topic(&format!("{topic}.dlq")),
                READ_FOR,
            )
            .await?;
            let copied: Vec<&[u8]> = dead
                .iter()
                .map(|record| record.payload.as_slice())
                .collect();
            ensure!(copied == *payloads, "{topic}.dlq holds {copied:?}");
            for record in &dead {
                let reason = record
                    .header("presence-dead-letter-reason")
                    .unwrap_or_default();
                ensure!(!reason.is_empty(), "{topic}.dlq record without a reason");
            }
        }
        Ok(())
    })
    .await
}
