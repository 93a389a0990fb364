//! The `decisions` stream as a data engineer meets it (docs/analytics.md):
//! `presence decisions tail` prints exactly the decisions made, once each, as
//! the JSON lines of the domain's `DecisionEvent`, following new ones until
//! SIGTERM or stopping at `--max` / `--timeout`; and the raw records decode with
//! `protoc --decode` and the descriptor set `presence decisions descriptor`
//! publishes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use anyhow::{Context, Result, bail, ensure};
use presence_domain::DecisionEvent;
use presence_proto::pb;
use presence_tests::kafka::read_topic;
use presence_tests::process::{Launch, run_to_completion};
use presence_tests::scans::{Delivery, READ_FOR, all_decisions, by_scan_id, scan_until_decided};
use presence_tests::{
    Cluster, PresenceProcess, ScanKind, Show, TestApp, next_scan_time, offline_scan, unique,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// Longest the follower may take to position itself, or to print what was made.
const FOLLOW_FOR: Duration = Duration::from_secs(30);
/// How long the run expecting one decision too many waits for it.
const OVERSHOOT_TIMEOUT_S: u64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_exactly_the_decisions_made_and_protoc_decodes_the_records() -> Result<()> {
    let app = TestApp::distributed().await?;
    let outcome = tail_and_decode(&app).await;
    if outcome.is_err() {
        app.print_logs();
    }
    outcome
}

async fn tail_and_decode(app: &TestApp) -> Result<()> {
    let cluster = app.cluster().context("not a distributed fixture")?;
    let dir = tempfile::tempdir()?;

    // Positioned at the end before the first scan: it must print every decision
    // made from then on, and nothing else.
    let mut follower = PresenceProcess::spawn(&tail(dir.path(), &cluster, &[]))?;
    let deadline = Instant::now() + FOLLOW_FOR;
    while !follower.stderr().contains("reading decisions") {
        if let Some(status) = follower.try_exit()? {
            bail!("the follower exited ({status}):\n{}", follower.stderr());
        }
        ensure!(
            Instant::now() < deadline,
            "the follower never started reading"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let made = make_decisions(app).await?;
    let expected: BTreeMap<String, (String, String, String)> = made
        .iter()
        .map(|(id, kind, status, token)| {
            (
                id.clone(),
                (kind.to_string(), status.clone(), token.clone()),
            )
        })
        .collect();
    ensure!(expected.len() == made.len(), "two scans got one scan id");
    let count = made.len();

    let deadline = Instant::now() + FOLLOW_FOR;
    while follower.stdout().lines().count() < count {
        ensure!(
            Instant::now() < deadline,
            "the follower printed {} of {count} decisions:\n{}",
            follower.stdout().lines().count(),
            follower.stdout()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // From the beginning, stopping at --max.
    let output = run_to_completion(&tail(
        dir.path(),
        &cluster,
        &[
            "--from-beginning",
            "--max",
            &count.to_string(),
            "--timeout",
            "30",
        ],
    ))
    .await?;
    ensure!(
        output.status.success(),
        "tail --max {count} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let from_beginning = check_lines(&String::from_utf8(output.stdout)?, &expected)?;

    // One more than was made: nothing else arrives, so the timeout ends it, and
    // not reaching --max is a failure that says how far it got.
    let output = run_to_completion(&tail(
        dir.path(),
        &cluster,
        &[
            "--from-beginning",
            "--max",
            &(count + 1).to_string(),
            "--timeout",
            &OVERSHOOT_TIMEOUT_S.to_string(),
        ],
    ))
    .await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        !output.status.success()
            && stderr.contains(&format!("with {count} of {} decisions", count + 1)),
        "tail --max {} --timeout {OVERSHOOT_TIMEOUT_S}: {} and {stderr}",
        count + 1,
        output.status
    );
    check_lines(&String::from_utf8(output.stdout)?, &expected)?;

    // By now the follower had seconds to print a duplicate or a stray record.
    let status = follower.terminate().await?;
    ensure!(
        status.success(),
        "the follower exited with {status} on SIGTERM"
    );
    ensure!(
        check_lines(&follower.stdout(), &expected)? == from_beginning,
        "the follower and a reader from the beginning printed different decisions"
    );

    // The same decisions as a plain Kafka client decodes them, field for field.
    let topic = cluster.topic("decisions");
    let records = by_scan_id(all_decisions(app).await?, Delivery::ExactlyOnce)?;
    let decoded: BTreeMap<String, DecisionEvent> = records
        .into_values()
        .map(|record| {
            let event = DecisionEvent::try_from(record.decision)?;
            Ok((event.scan_id.to_string(), event))
        })
        .collect::<Result<_>>()?;
    ensure!(
        decoded == from_beginning,
        "tail printed {from_beginning:#?}\nthe topic holds {decoded:#?}"
    );

    // The published descriptor set decodes the raw records with protoc.
    let output =
        run_to_completion(&Launch::new(dir.path()).arg("decisions").arg("descriptor")).await?;
    ensure!(
        output.status.success(),
        "presence decisions descriptor failed"
    );
    ensure!(
        output.stdout == presence_proto::DESCRIPTOR_SET,
        "the binary publishes another descriptor set than presence-proto builds"
    );
    let descriptor = dir.path().join("presence-v1.desc");
    std::fs::write(&descriptor, &output.stdout)?;
    let raw = read_topic(&cluster.bootstrap, &topic, READ_FOR).await?;
    ensure!(raw.len() == count, "{} records on {topic}", raw.len());
    for record in raw {
        let text = protoc_decode(&descriptor, &record.payload).await?;
        let scan_id = text_field(&text, "scan_id")?;
        let event = from_beginning
            .get(&scan_id)
            .with_context(|| format!("protoc decoded an unknown scan id:\n{text}"))?;
        let message = pb::Decision::from(event);
        for (field, value) in [
            ("token", format!("\"{}\"", event.token)),
            ("status", message.status().as_str_name().to_owned()),
            ("kind", message.kind().as_str_name().to_owned()),
            ("decided_at", event.decided_at.to_string()),
            ("device_id", event.device_id.to_string()),
        ] {
            ensure!(
                text.lines().any(|line| line == format!("{field}: {value}")),
                "protoc's decoding lacks `{field}: {value}`:\n{text}"
            );
        }
    }
    Ok(())
}

/// `presence decisions tail` on this fixture's broker and topics.
fn tail(dir: &Path, cluster: &Cluster, args: &[&str]) -> Launch {
    args.iter().fold(
        Launch::new(dir)
            .arg("decisions")
            .arg("tail")
            .arg("--brokers")
            .arg(&cluster.bootstrap)
            .arg("--topic-prefix")
            .arg(&cluster.topic_prefix),
        |launch, arg| launch.arg(arg),
    )
}

/// An offline upload (issue 15) publishes each decision it makes once, marked
/// `offline` with what the scanner showed and whether the passage was forced;
/// uploading it again publishes nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_uploads_publish_each_decision_once_marked_offline() -> Result<()> {
    let app = TestApp::distributed().await?;
    let outcome = offline_decisions(&app).await;
    if outcome.is_err() {
        app.print_logs();
    }
    outcome
}

async fn offline_decisions(app: &TestApp) -> Result<()> {
    let show = Show::new();
    let token = show.token();
    let mut records = show.records();
    records.push(show.ticket(&token, &["A:1:1"]));
    app.load(&records).await?;
    let scanner = app.scanner(&show.venue_id, "Gate 1").await?;
    app.scan(ScanKind::Enter, &scanner.body(&token, next_scan_time()))
        .await?
        .expect(200, "OKAY")?;
    let body = scanner.offline_body(&[
        offline_scan(ScanKind::Enter, &token, next_scan_time(), "OKAY"),
        offline_scan(ScanKind::Exit, &token, next_scan_time(), "INVALID_TICKET"),
    ]);
    for _ in 0..2 {
        app.upload_offline(&body).await?.expect(200, "OKAY")?;
    }
    let published = by_scan_id(all_decisions(app).await?, Delivery::ExactlyOnce)?;
    let mut of_token: Vec<(String, String, bool, bool, String)> = published
        .values()
        .filter(|record| record.decision.token == token)
        .map(|record| {
            (
                record.kind(),
                record.status(),
                record.decision.offline,
                record.decision.forced,
                record.decision.offline_shown.clone(),
            )
        })
        .collect();
    of_token.sort();
    let expected = [
        ("enter", "ALREADY_ENTERED", true, true, "OKAY"),
        ("enter", "OKAY", false, false, ""),
        ("exit", "EXIT", true, false, "INVALID_TICKET"),
    ]
    .map(|(kind, status, offline, forced, shown)| {
        (
            kind.to_owned(),
            status.to_owned(),
            offline,
            forced,
            shown.to_owned(),
        )
    });
    ensure!(of_token == expected, "{of_token:?}");
    Ok(())
}

/// Scans of each kind with several outcomes, and a client retry, which is
/// answered from memory and published no more. Returns (scan id, kind, status,
/// token) of every decision made.
async fn make_decisions(app: &TestApp) -> Result<Vec<(String, ScanKind, String, String)>> {
    let show = Show::new();
    let tokens = [show.token(), show.token()];
    let mut records = show.records();
    records.extend(tokens.iter().map(|token| show.ticket(token, &["A:1:1"])));
    app.load(&records).await?;
    let a = app.scanner(&show.venue_id, "Gate 1").await?;
    let b = app.scanner(&show.venue_id, "Gate 2").await?;
    let first = a.body(&tokens[0], next_scan_time());
    let mut stranger = a.body(&tokens[1], next_scan_time());
    stranger["deviceId"] = json!(987_654_321);
    let plan = [
        (ScanKind::Enter, first.clone(), "OKAY"),
        (
            ScanKind::Enter,
            b.body(&tokens[0], next_scan_time()),
            "ALREADY_ENTERED",
        ),
        (
            ScanKind::Validate,
            b.body(&tokens[0], next_scan_time()),
            "INTERNAL_SCAN",
        ),
        (ScanKind::Exit, a.body(&tokens[0], next_scan_time()), "EXIT"),
        (
            ScanKind::Enter,
            a.body(&tokens[1], next_scan_time()),
            "OKAY",
        ),
        (
            ScanKind::Enter,
            a.body(&unique("nobody"), next_scan_time()),
            "NOT_FOUND",
        ),
        (ScanKind::Enter, stranger, "BAD_REQUEST"),
    ];
    let mut made = Vec::new();
    for (kind, body, status) in plan {
        let reply = scan_until_decided(app, kind, body.clone())
            .await?
            .last()?
            .clone();
        ensure!(reply.status() == status, "{kind} answered {}", reply.text);
        let token = body["token"].as_str().unwrap_or_default().to_owned();
        made.push((scan_id(&reply.json)?, kind, status.to_owned(), token));
    }
    let retry = scan_until_decided(app, ScanKind::Enter, first)
        .await?
        .last()?
        .clone();
    ensure!(
        scan_id(&retry.json)? == made[0].0,
        "a retry got another scan id: {}",
        retry.text
    );
    Ok(made)
}

fn scan_id(json: &Value) -> Result<String> {
    json["result"]["scanId"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("an answer without result.scanId: {json}"))
}

/// Parses tail's output: one `DecisionEvent` a line, each scan id once, and
/// exactly the `expected` scans with their kind, status and token.
fn check_lines(
    stdout: &str,
    expected: &BTreeMap<String, (String, String, String)>,
) -> Result<BTreeMap<String, DecisionEvent>> {
    let mut printed = BTreeMap::new();
    for line in stdout.lines() {
        let event: DecisionEvent =
            serde_json::from_str(line).with_context(|| format!("not a decision: {line}"))?;
        let id = event.scan_id.to_string();
        let seen = (
            event.kind.to_string(),
            event.decision.status.to_string(),
            event.token.to_string(),
        );
        ensure!(
            expected.get(&id) == Some(&seen),
            "printed {line}, made {:?}",
            expected.get(&id)
        );
        ensure!(printed.insert(id, event).is_none(), "printed twice: {line}");
    }
    ensure!(
        printed.len() == expected.len(),
        "printed {} of {} decisions:\n{stdout}",
        printed.len(),
        expected.len()
    );
    Ok(printed)
}

/// `protoc --decode presence.v1.Decision --descriptor_set_in=<descriptor>` on
/// one record's bytes, with the protoc the protoc-bin-vendored crate ships.
async fn protoc_decode(descriptor: &Path, payload: &[u8]) -> Result<String> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut child = tokio::process::Command::new(&protoc)
        .arg("--decode")
        .arg("presence.v1.Decision")
        .arg(format!("--descriptor_set_in={}", descriptor.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("running {}", protoc.display()))?;
    let mut stdin = child.stdin.take().context("protoc's stdin")?;
    stdin.write_all(payload).await?;
    drop(stdin);
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .context("protoc did not finish")??;
    ensure!(
        output.status.success(),
        "protoc --decode failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

/// A string field of protoc's text format, unquoted.
fn text_field(text: &str, field: &str) -> Result<String> {
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{field}: \"")))
        .and_then(|rest| rest.strip_suffix('"'))
        .map(str::to_owned)
        .with_context(|| format!("no {field} in protoc's decoding:\n{text}"))
}
