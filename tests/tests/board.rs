//! The venue board (SPEC §8) in a real browser, in both modes: a venue-limited
//! key opens `/venues/{venueId}/board?apikey=…`, scans change the numbers, a
//! quiet scanner is flagged, a dropped stream catches up exactly, the page
//! fits 360 px, axe-core finds nothing serious, nothing is fetched from
//! another host, and the key never reaches the logs.
//!
//! The browser part is `tests/browser/board.test.mjs` (node, playwright-core
//! and Debian's chromium, which scripts/test.sh installs; it exports
//! `PRESENCE_BROWSER_DEPS`). Without them these tests fail, naming what is
//! missing. `PRESENCE_BOARD_SCREENSHOT=<path>` copies a run's screenshot
//! there (scripts/board-screenshot.sh makes docs/board.png so).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use anyhow::{Context, Result, bail, ensure};
use presence_tests::stack::DistributedOptions;
use presence_tests::{Auth, Scanner, Show, TestApp, next_scan_time};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::time::Instant;

/// Short, so the warning shows within the test; 2 minutes by default. The
/// threshold is the gateway's `PRESENCE_BOARD_SILENT_AFTER_MS`.
const SILENT_AFTER_MS: &str = "4000";
/// The browser test's own waits are shorter; this only stops a hung browser.
const BROWSER_TEST_LIMIT: Duration = Duration::from_secs(240);
const SILENT_GATE: &str = "South";

fn enter(scanner: &Scanner, token: &str) -> Value {
    json!({"path": "/presence/v1/ticket/enter", "body": scanner.body(token, next_scan_time())})
}

fn exit(scanner: &Scanner, token: &str) -> Value {
    json!({"path": "/presence/v1/ticket/exit", "body": scanner.body(token, next_scan_time())})
}

fn totals(entries: i64, exits: i64, refused: i64) -> Value {
    json!({"entries": entries, "exits": exits, "occupancy": entries - exits, "refused": refused})
}

/// Waits until the venue's stats count `entries` (the distributed registry
/// counts shortly after the answer).
async fn wait_for_entries(app: &TestApp, venue: &str, entries: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = app
            .get(
                &format!("/presence/v1/venues/{venue}/stats"),
                Auth::Header(app.admin_key()),
            )
            .await?;
        if reply.json["message"]["totals"]["entries"].as_u64() == Some(entries) {
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

async fn the_board_works_in_a_browser(app: &TestApp) -> Result<()> {
    let key = app.keys().limited.clone();
    let show = Show::at_venue(&app.keys().limited_venue);
    let venue = show.venue_id.clone();
    let tokens: Vec<String> = (0..6).map(|_| show.token()).collect();
    let mut records = show.records();
    records.push(show.gate("North"));
    records.push(show.gate(SILENT_GATE));
    records.extend(tokens.iter().map(|token| show.ticket(token, &["A:1:1"])));
    app.load(&records).await?;
    let north = app.scanner(&venue, "North").await?;
    let south = app.scanner(&venue, SILENT_GATE).await?;
    let first = enter(&south, &tokens[0]);
    app.scan(presence_tests::ScanKind::Enter, &first["body"])
        .await?
        .expect(200, "OKAY")?;
    wait_for_entries(app, &venue, 1).await?;
    the_feed_refuses_whom_it_must(app, &venue).await?;

    let screenshots = tempfile::tempdir()?;
    let fixture = json!({
        "boardUrl": app.url(&format!("/venues/{venue}/board?apikey={key}")),
        "apiBase": app.base_url(),
        "apiKey": key,
        "initial": totals(1, 0, 0),
        "scans": [
            enter(&north, &tokens[1]),
            enter(&north, &tokens[2]),
            enter(&north, &tokens[3]),
            enter(&north, &show.token()),
            enter(&north, &show.token()),
            exit(&north, &tokens[2]),
        ],
        "expected": totals(4, 1, 2),
        "late": [enter(&north, &tokens[4]), enter(&north, &tokens[5])],
        "expectedAfterDrop": totals(6, 1, 2),
        "silentGate": SILENT_GATE,
        "screenshotDir": screenshots.path(),
    });
    run_browser_test(&fixture).await?;

    let logs = app.logs();
    ensure!(!logs.is_empty(), "the server logged nothing to check");
    ensure!(!logs.contains(&key), "the API key is in the server's logs");
    if let Some(target) = std::env::var_os("PRESENCE_BOARD_SCREENSHOT") {
        std::fs::copy(screenshots.path().join("board.png"), &target)
            .with_context(|| format!("copying the screenshot to {target:?}"))?;
    }
    Ok(())
}

async fn run_browser_test(fixture: &Value) -> Result<()> {
    let deps = std::env::var("PRESENCE_BROWSER_DEPS").context(
        "PRESENCE_BROWSER_DEPS is not set: run scripts/test.sh, which installs chromium, \
         playwright-core and axe-core and sets it",
    )?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/board.test.mjs");
    let run = tokio::process::Command::new("node")
        .arg(&script)
        .env("PRESENCE_BROWSER_DEPS", deps)
        .env("BOARD_FIXTURE", fixture.to_string())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(BROWSER_TEST_LIMIT, run)
        .await
        .context("the browser test hung")?
        .context("starting node (is it installed?)")?;
    println!("{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    ensure!(
        output.status.success(),
        "the browser test failed: {}",
        output.status
    );
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
    let app =
        TestApp::embedded_with(&[("PRESENCE_BOARD_SILENT_AFTER_MS", SILENT_AFTER_MS)]).await?;
    with_logs_on_failure(app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_board_in_a_browser_distributed() -> Result<()> {
    let app = TestApp::distributed_with(DistributedOptions {
        gateway_env: vec![(
            "PRESENCE_BOARD_SILENT_AFTER_MS".to_owned(),
            SILENT_AFTER_MS.to_owned(),
        )],
        ..DistributedOptions::default()
    })
    .await?;
    with_logs_on_failure(app).await
}
