//! The venue board (SPEC §8) in a real browser, in every mode (embedded,
//! distributed, scaled out): a venue-limited key opens
//! `/venues/{venueId}/board?apikey=…` and then travels as a header; scans
//! change the totals and each gate's numbers, refusals by status, forced
//! offline passages and chart within 2 s of their answers (each delay is
//! measured and printed); the quiet scanner is flagged and the active one is
//! not; a dropped stream and a restarted server are caught up exactly; the
//! page fits 360 px, axe-core finds nothing serious on the board (phone and
//! wall screen) nor on the key form; nothing is fetched from another host;
//! the key never reaches the logs.
//!
//! The browser part is `tests/browser/board.test.mjs` (node, playwright-core
//! and Debian's chromium, which scripts/test.sh installs; it exports
//! `PRESENCE_BROWSER_DEPS`). Without them these tests fail, naming what is
//! missing. It asks this side for what only the test can do (restart the
//! server) with a line on its stdout, and waits for the answer on its stdin.
//!
//! `PRESENCE_BOARD_SCREENSHOT=<path>` copies the embedded run's screenshot
//! there (scripts/board-screenshot.sh makes docs/board.png so). That run
//! looks like a venue at work: a crowd is admitted first, the venue has the
//! id of the README's example, and the production silent threshold (2
//! minutes) is kept, so it waits that long for the quiet scanner.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use anyhow::{Context, Result, bail, ensure};
use presence_tests::stack::{DistributedOptions, RedisSetup};
use presence_tests::{
    Auth, PresenceProcess, ScanKind, Scanner, Show, TestApp, next_scan_time, offline_scan,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The silent threshold of the tests (`PRESENCE_BOARD_SILENT_AFTER_MS`):
/// short, so the warning shows within the test. The screenshot run keeps the
/// production default (2 minutes).
const TEST_SILENT_AFTER_MS: u64 = 4_000;
const PRODUCTION_SILENT_AFTER_MS: u64 = 120_000;
/// The browser test's own waits are shorter; this only stops a hung browser.
/// The screenshot run also waits for the production silent threshold.
const BROWSER_TEST_LIMIT: Duration = Duration::from_secs(300);
/// How a line of the browser test asking this side to act begins.
const REQUEST_PREFIX: &str = "@@ ";
const ACTIVE_GATE: &str = "North";
const OTHER_GATE: &str = "East";
const SILENT_GATE: &str = "South";
/// Scans the delay from answer to board is measured on, one after the other.
const DELAY_SAMPLES: usize = 6;

fn screenshot_target() -> Option<std::ffi::OsString> {
    std::env::var_os("PRESENCE_BOARD_SCREENSHOT")
}

fn silent_after_ms() -> u64 {
    if screenshot_target().is_some() {
        PRODUCTION_SILENT_AFTER_MS
    } else {
        TEST_SILENT_AFTER_MS
    }
}

/// The key the board is opened with, and its venue: a key limited to the
/// venue, but for the screenshot, whose venue has the id of the README's
/// example address (so the key is one of all venues).
fn board_key_and_venue(app: &TestApp) -> (String, String) {
    if screenshot_target().is_some() {
        (app.keys().scanner.clone(), "KovZpZAnAtJJ".to_owned())
    } else {
        (app.keys().limited.clone(), app.keys().limited_venue.clone())
    }
}

/// The gateway's board settings for this run.
fn board_env() -> Vec<(String, String)> {
    vec![(
        "PRESENCE_BOARD_SILENT_AFTER_MS".to_owned(),
        silent_after_ms().to_string(),
    )]
}

/// One gate's counts as the board shows them.
#[derive(Debug, Clone, Default)]
struct GateCounts {
    entries: u64,
    exits: u64,
    denials: BTreeMap<String, u64>,
    forced: u64,
}

impl GateCounts {
    fn json(&self) -> Value {
        json!({
            "entries": self.entries,
            "exits": self.exits,
            "occupancy": i64::try_from(self.entries).unwrap() - i64::try_from(self.exits).unwrap(),
            "refused": self.denials.values().sum::<u64>(),
            "forced": self.forced,
        })
    }
}

/// The scans of the test as requests (path, body, the answer's status) and,
/// beside them, what the board must show once they are counted. Every ticket
/// holds one place.
#[derive(Debug, Default)]
struct Script {
    gates: BTreeMap<String, GateCounts>,
}

impl Script {
    fn gate(&mut self, scanner: &Scanner) -> &mut GateCounts {
        self.gates.entry(scanner.gate_name.clone()).or_default()
    }

    fn request(kind: ScanKind, scanner: &Scanner, token: &str, status: &str) -> Value {
        json!({
            "path": format!("/presence/v1/ticket/{kind}"),
            "body": scanner.body(token, next_scan_time()),
            "status": status,
        })
    }

    /// An enter of a ticket that is out.
    fn admit(&mut self, scanner: &Scanner, token: &str) -> Value {
        self.gate(scanner).entries += 1;
        Self::request(ScanKind::Enter, scanner, token, "OKAY")
    }

    /// An exit of a ticket that is in.
    fn let_out(&mut self, scanner: &Scanner, token: &str) -> Value {
        self.gate(scanner).exits += 1;
        Self::request(ScanKind::Exit, scanner, token, "EXIT")
    }

    /// An enter the rules refuse with `status`.
    fn refuse(&mut self, scanner: &Scanner, token: &str, status: &str) -> Value {
        *self
            .gate(scanner)
            .denials
            .entry(status.to_owned())
            .or_default() += 1;
        Self::request(ScanKind::Enter, scanner, token, status)
    }

    /// An offline upload by `scanner` of enters it let through: `fresh`
    /// tickets (counted as entries) and `again` tickets that were already in
    /// (forced passages: entries, and forced too).
    fn offline_entries(&mut self, scanner: &Scanner, fresh: &[String], again: &[String]) -> Value {
        let gate = self.gate(scanner);
        gate.entries += u64::try_from(fresh.len() + again.len()).unwrap();
        gate.forced += u64::try_from(again.len()).unwrap();
        let scans: Vec<Value> = fresh
            .iter()
            .chain(again)
            .map(|token| offline_scan(ScanKind::Enter, token, next_scan_time(), "OKAY"))
            .collect();
        json!({
            "path": "/presence/v1/ticket/offline",
            "body": scanner.offline_body(&scans),
            "status": "OKAY",
        })
    }

    /// Entries of `count` tickets at `scanner` made while the board's server
    /// is down (see [`restart_the_boards_server`]).
    fn entries_during_outage(&mut self, scanner: &Scanner, count: usize) {
        self.gate(scanner).entries += u64::try_from(count).unwrap();
    }

    /// What the board shows now: the totals and each gate's counts and
    /// refusals by status.
    fn board(&self) -> Value {
        let mut totals = GateCounts::default();
        let mut gates = serde_json::Map::new();
        for (name, gate) in &self.gates {
            totals.entries += gate.entries;
            totals.exits += gate.exits;
            totals.forced += gate.forced;
            for (status, n) in &gate.denials {
                *totals.denials.entry(status.clone()).or_default() += n;
            }
            let mut shown = gate.json();
            shown["denials"] = json!(gate.denials);
            gates.insert(name.clone(), shown);
        }
        json!({"totals": totals.json(), "gates": gates})
    }
}

/// Sends a request of a [`Script`] with the admin key and checks its answer.
async fn send(app: &TestApp, request: &Value) -> Result<()> {
    let path = request["path"].as_str().context("a request without path")?;
    let status = request["status"]
        .as_str()
        .context("a request without status")?;
    app.post_json(path, &request["body"])
        .await?
        .expect(200, status)?;
    Ok(())
}

/// Waits until the venue's stats count `entries` (the distributed registry
/// counts shortly after the answer).
async fn wait_for_entries(app: &TestApp, venue: &str, entries: &Value) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = app
            .get(
                &format!("/presence/v1/venues/{venue}/stats"),
                Auth::Header(app.admin_key()),
            )
            .await?;
        if reply.json["message"]["totals"]["entries"] == *entries {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("stats did not reach {entries} entries: {}", reply.json);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The live feed's refusals, before any stream opens: no key, another
/// venue's key, an unknown venue.
async fn the_feed_refuses_whom_it_must(app: &TestApp, venue: &str) -> Result<()> {
    let live = format!("/presence/v1/venues/{venue}/live");
    app.get(&live, Auth::None)
        .await?
        .expect(401, "UNAUTHORIZED")?;
    app.get(
        "/presence/v1/venues/another-venue/live",
        Auth::Header(&app.keys().limited),
    )
    .await?
    .expect(403, "FORBIDDEN")?;
    app.get(
        "/presence/v1/venues/no-such-venue/live",
        Auth::Header(app.admin_key()),
    )
    .await?
    .expect(404, "NOT_FOUND")?;
    Ok(())
}

/// The screenshot run's crowd, before the board opens: people admitted at
/// two gates, a few turned away, a few gone home again. Sent 16 at a time.
async fn admit_a_crowd(
    app: &TestApp,
    script: &mut Script,
    show: &Show,
    main: &Scanner,
    side: &Scanner,
) -> Result<()> {
    let main_tokens: Vec<String> = (0..212).map(|_| show.token()).collect();
    let side_tokens: Vec<String> = (0..147).map(|_| show.token()).collect();
    let records: Vec<Value> = main_tokens
        .iter()
        .chain(&side_tokens)
        .map(|token| show.ticket(token, &["A:1:1"]))
        .collect();
    app.load(&records).await?;
    let mut admitted: Vec<Value> = main_tokens
        .iter()
        .map(|token| script.admit(main, token))
        .collect();
    admitted.extend(side_tokens.iter().map(|token| script.admit(side, token)));
    let mut then: Vec<Value> = (0..3)
        .map(|_| script.refuse(main, &show.token(), "NOT_FOUND"))
        .collect();
    then.extend(
        side_tokens[..2]
            .iter()
            .map(|token| script.refuse(side, token, "ALREADY_ENTERED")),
    );
    then.extend(
        side_tokens[2..14]
            .iter()
            .map(|token| script.let_out(side, token)),
    );
    for batch in [admitted, then] {
        let mut sending = JoinSet::new();
        for chunk in batch.chunks(batch.len().div_ceil(16)) {
            let (app, chunk) = (app.clone(), chunk.to_vec());
            sending.spawn(async move {
                for request in &chunk {
                    send(&app, request).await?;
                }
                Ok::<_, anyhow::Error>(())
            });
        }
        while let Some(sent) = sending.join_next().await {
            sent??;
        }
    }
    Ok(())
}

/// The browser's request to restart the board's server: stops the process
/// serving it (the embedded `presence`, or the board's gateway), has
/// `scanner` admit `tokens` meanwhile and starts it again on the same port.
/// Distributed, the scans go through `spare`, a gateway that stays up;
/// embedded, nothing answers while the server is down, so the scanner keeps
/// them (offline, timed during the outage) and uploads them once it is back.
async fn restart_the_boards_server(
    app: &TestApp,
    spare: Option<&str>,
    scanner: &Scanner,
    tokens: &[String],
) -> Result<()> {
    app.stop_api().await?;
    let mut held = Vec::new();
    for token in tokens {
        let scan_time = next_scan_time();
        match spare {
            Some(url) => {
                app.scan_at(url, ScanKind::Enter, &scanner.body(token, scan_time))
                    .await?
                    .expect(200, "OKAY")?;
            }
            None => held.push(offline_scan(ScanKind::Enter, token, scan_time, "OKAY")),
        }
    }
    app.start_api_on_its_port().await?;
    if !held.is_empty() {
        let upload = app.upload_offline(&scanner.offline_body(&held)).await?;
        upload.expect(200, "OKAY")?;
        for scan in upload.json["message"]["scans"]
            .as_array()
            .into_iter()
            .flatten()
        {
            ensure!(
                scan["status"] == "OKAY" && scan["forced"] == false,
                "an upload of the outage's scans: {}",
                upload.text
            );
        }
    }
    Ok(())
}

async fn the_board_works_in_a_browser(app: &TestApp) -> Result<()> {
    let (key, venue) = board_key_and_venue(app);
    let show = Show::at_venue(&venue);
    let tokens: Vec<String> = (0..32).map(|_| show.token()).collect();
    let mut records = show.records();
    for gate in [ACTIVE_GATE, OTHER_GATE, SILENT_GATE] {
        records.push(show.gate(gate));
    }
    records.extend(tokens.iter().map(|token| show.ticket(token, &["A:1:1"])));
    app.load(&records).await?;
    let north = app.scanner(&venue, ACTIVE_GATE).await?;
    let east = app.scanner(&venue, OTHER_GATE).await?;
    let south = app.scanner(&venue, SILENT_GATE).await?;
    let mut fresh = tokens.iter();
    let mut next = || fresh.next().cloned().context("the test needs more tickets");

    let mut script = Script::default();
    send(app, &script.admit(&south, &next()?)).await?;
    if screenshot_target().is_some() {
        admit_a_crowd(app, &mut script, &show, &north, &east).await?;
    }
    let initial = script.board();
    wait_for_entries(app, &venue, &initial["totals"]["entries"]).await?;
    the_feed_refuses_whom_it_must(app, &venue).await?;

    // The board's server is the first gateway; while it restarts, scans go
    // through another one (a scaled-out fixture's second, else one started
    // for it).
    let mut spare_process: Option<PresenceProcess> = None;
    let board_base = app.base_urls()[0].clone();
    let spare = match (app.cluster(), app.base_urls().get(1)) {
        (None, _) => None,
        (Some(_), Some(other)) => Some(other.clone()),
        (Some(_), None) => {
            let (process, url) = app.start_another_gateway().await?;
            spare_process = Some(process);
            Some(url)
        }
    };
    let mut api_bases = app.base_urls();
    if let Some(url) = spare.as_ref().filter(|url| !api_bases.contains(url)) {
        api_bases.push(url.clone());
    }

    let (in_twice, refused_twice, going_home) = (next()?, next()?, next()?);
    let scans = vec![
        script.admit(&north, &in_twice),
        script.admit(&north, &going_home),
        script.admit(&east, &refused_twice),
        script.refuse(&north, &show.token(), "NOT_FOUND"),
        script.refuse(&north, &show.token(), "NOT_FOUND"),
        script.refuse(&east, &refused_twice, "ALREADY_ENTERED"),
        script.let_out(&north, &going_home),
    ];
    let after_scans = script.board();
    let mut samples = Vec::new();
    for _ in 0..DELAY_SAMPLES {
        samples.push(script.admit(&north, &next()?));
    }
    let after_samples = script.board();
    let forced = script.offline_entries(&east, &[next()?], std::slice::from_ref(&in_twice));
    let after_forced = script.board();
    let keep_alive = vec![
        script.admit(&north, &next()?),
        script.admit(&east, &next()?),
    ];
    let after_keep_alive = script.board();
    let late = vec![
        script.admit(&north, &next()?),
        script.admit(&east, &next()?),
    ];
    let after_drop = script.board();
    let outage_tokens = vec![next()?, next()?];
    script.entries_during_outage(&north, outage_tokens.len());
    let after_restart = script.board();

    let screenshots = tempfile::tempdir()?;
    let fixture = json!({
        "boardUrl": format!("{board_base}/venues/{venue}/board?apikey={key}"),
        "apiBases": api_bases,
        "apiKey": key,
        "activeGate": ACTIVE_GATE,
        "silentGate": SILENT_GATE,
        "silentAfterMs": silent_after_ms(),
        "initial": initial,
        "scans": scans,
        "afterScans": after_scans,
        "samples": samples,
        "afterSamples": after_samples,
        "forced": forced,
        "afterForced": after_forced,
        "keepAlive": keep_alive,
        "afterKeepAlive": after_keep_alive,
        "late": late,
        "afterDrop": after_drop,
        "afterRestart": after_restart,
        "screenshotDir": screenshots.path(),
    });
    run_browser_test(&fixture, async |request: &Value| {
        match request["do"].as_str() {
            Some("restart") => {
                restart_the_boards_server(app, spare.as_deref(), &north, &outage_tokens).await?;
                Ok(json!({"restarted": true}))
            }
            _ => bail!("the browser test asked for something unknown: {request}"),
        }
    })
    .await?;
    drop(spare_process);

    let logs = app.logs();
    ensure!(!logs.is_empty(), "the server logged nothing to check");
    ensure!(!logs.contains(&key), "the API key is in the server's logs");
    if let Some(target) = screenshot_target() {
        std::fs::copy(screenshots.path().join("board.png"), &target)
            .with_context(|| format!("copying the screenshot to {target:?}"))?;
    }
    Ok(())
}

/// Runs the browser test with `fixture`, printing what it prints; each line
/// it prints starting with [`REQUEST_PREFIX`] is a request (JSON) that
/// `serve` answers, the answer written back as one line.
async fn run_browser_test(
    fixture: &Value,
    mut serve: impl AsyncFnMut(&Value) -> Result<Value>,
) -> Result<()> {
    let deps = std::env::var("PRESENCE_BROWSER_DEPS").context(
        "PRESENCE_BROWSER_DEPS is not set: run scripts/test.sh, which installs chromium, \
         playwright-core and axe-core and sets it",
    )?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/board.test.mjs");
    let mut node = tokio::process::Command::new("node")
        .arg(&script)
        .env("PRESENCE_BROWSER_DEPS", deps)
        .env("BOARD_FIXTURE", fixture.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting node (is it installed?)")?;
    let mut answers = node.stdin.take().context("node's stdin")?;
    let mut lines = BufReader::new(node.stdout.take().context("node's stdout")?).lines();
    let mut errors = node.stderr.take().context("node's stderr")?;
    let stderr = tokio::spawn(async move {
        let mut text = String::new();
        errors.read_to_string(&mut text).await.map(|_| text)
    });
    let talk = async {
        while let Some(line) = lines.next_line().await? {
            println!("{line}");
            if let Some(request) = line.strip_prefix(REQUEST_PREFIX) {
                let request: Value = serde_json::from_str(request)
                    .with_context(|| format!("a request of the browser test: {request}"))?;
                let answer = serve(&request).await?;
                answers.write_all(format!("{answer}\n").as_bytes()).await?;
                answers.flush().await?;
            }
        }
        node.wait().await.context("waiting for node")
    };
    let status = tokio::time::timeout(BROWSER_TEST_LIMIT, talk)
        .await
        .context("the browser test hung")??;
    eprintln!("{}", stderr.await??);
    ensure!(status.success(), "the browser test failed: {status}");
    Ok(())
}

async fn with_logs_on_failure(app: TestApp) -> Result<()> {
    let outcome = the_board_works_in_a_browser(&app).await;
    if outcome.is_err() {
        app.print_logs();
    }
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_board_in_a_browser_embedded() -> Result<()> {
    let env = board_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    with_logs_on_failure(TestApp::embedded_with(&env).await?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_board_in_a_browser_distributed() -> Result<()> {
    let app = TestApp::distributed_with(DistributedOptions {
        gateway_env: board_env(),
        ..DistributedOptions::default()
    })
    .await?;
    with_logs_on_failure(app).await
}

/// Two gateways and two registries over a Redis Cluster: the board reads
/// through the first gateway while scans take turns across both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_board_in_a_browser_scaled() -> Result<()> {
    let app = TestApp::distributed_with(DistributedOptions {
        instances: 2,
        redis: RedisSetup::Cluster,
        gateway_env: board_env(),
        ..DistributedOptions::default()
    })
    .await?;
    with_logs_on_failure(app).await
}
