//! `presence-loadgen` against the real embedded server: a closed loop and an
//! open loop with every op of the mix, a run that outgrows its inventory, and
//! runs that cannot start (no key, a refused key, nothing listening), each
//! saying what to do next. Checks the JSON report's arithmetic, the server's
//! answers, and that no live line is drawn when stderr is not a terminal.

use anyhow::{Context, Result, ensure};
use presence_tests::process::{Launch, PresenceProcess};
use serde_json::Value;
use std::process::Output;
use std::time::{Duration, Instant};
use tempfile::TempDir;

const KEY: &str = "loadgen-test-key";
/// A key the server knows, not an admin key.
const SCANNER_KEY: &str = "loadgen-scanner-key";
const MIX: &str = "enter=90,duplicate=5,exit=3,validate=1,unknown=1";
/// The whole test, server start included, must finish within this.
const BUDGET: Duration = Duration::from_secs(20);

/// `presence serve` with [`KEY`] (admin) and [`SCANNER_KEY`] (not admin).
async fn serve(dir: &TempDir) -> Result<(PresenceProcess, String)> {
    let keys = dir.path().join("keys.toml");
    std::fs::write(
        &keys,
        format!("[[keys]]\nname = \"scanner\"\nkey = \"{SCANNER_KEY}\"\n"),
    )?;
    let launch = Launch::new(dir.path())
        .arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--api-keys-file")
        .arg(&keys)
        .env("PRESENCE_API_KEY", KEY);
    PresenceProcess::start(&launch).await
}

/// Runs the load generator to completion with `key` in `PRESENCE_API_KEY`
/// (none when `None`), bounded by what is left of the budget.
async fn loadgen(args: &[&str], key: Option<&str>, deadline: Instant) -> Result<Output> {
    let left = deadline.saturating_duration_since(Instant::now());
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_presence-loadgen"));
    command
        .args(args)
        .env_remove("PRESENCE_URL")
        .env_remove("PRESENCE_API_KEY")
        .env_remove("PRESENCE_API_KEY_FILE")
        .kill_on_drop(true);
    if let Some(key) = key {
        command.env("PRESENCE_API_KEY", key);
    }
    tokio::time::timeout(left, command.output())
        .await
        .with_context(|| format!("presence-loadgen {args:?} ran past the test's budget"))?
        .context("running presence-loadgen")
}

/// The JSON report of a run that is expected to pass.
fn passed_report(output: &Output) -> Result<Value> {
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.success(),
        "presence-loadgen exited {}\n--- stdout ---\n{}\n--- stderr ---\n{stderr}",
        output.status,
        String::from_utf8_lossy(&output.stdout)
    );
    let report: Value = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("the report is not JSON; stderr: {stderr}"))?;
    ensure!(report["passed"] == true, "not passed: {report:#}");
    ensure!(report["failures"] == serde_json::json!([]), "{report:#}");
    Ok(report)
}

fn u(report: &Value, pointer: &str) -> Result<u64> {
    report
        .pointer(pointer)
        .and_then(Value::as_u64)
        .with_context(|| format!("{pointer} is not a count in {report:#}"))
}

fn f(report: &Value, pointer: &str) -> Result<f64> {
    report
        .pointer(pointer)
        .and_then(Value::as_f64)
        .with_context(|| format!("{pointer} is not a number in {report:#}"))
}

fn sum_of(report: &Value, pointer: &str) -> Result<u64> {
    let map = report
        .pointer(pointer)
        .and_then(Value::as_object)
        .with_context(|| format!("{pointer} is not an object"))?;
    Ok(map.values().filter_map(Value::as_u64).sum())
}

/// What every report of a clean run against a correct server satisfies.
fn check_report(report: &Value) -> Result<()> {
    let sent = u(report, "/sent")?;
    let answered = u(report, "/answered")?;
    let errors = sum_of(report, "/errors")?;
    ensure!(errors == 0, "requests without an answer: {report:#}");
    ensure!(
        sent == answered + errors,
        "sent ≠ answered + errors: {report:#}"
    );
    ensure!(
        sum_of(report, "/statuses")? + u(report, "/unparsed")? == answered,
        "statuses do not add up to the answers: {report:#}"
    );
    ensure!(u(report, "/unparsed")? == 0, "{report:#}");
    ensure!(
        u(report, "/http_codes/200")? == answered,
        "every scan answer should be HTTP 200: {report:#}"
    );
    let mut op_sent = 0;
    for op in ["enter", "duplicate", "exit", "validate", "unknown"] {
        op_sent += u(report, &format!("/ops/{op}/sent"))?;
        ensure!(
            u(report, &format!("/ops/{op}/unexpected"))? == 0,
            "{op} got answers other than the contract's: {report:#}"
        );
    }
    ensure!(op_sent == sent, "ops do not add up to sent: {report:#}");
    // Each op's expected status shows up, so every part of the mix was exercised.
    for status in [
        "OKAY",
        "ALREADY_ENTERED",
        "EXIT",
        "INTERNAL_SCAN",
        "NOT_FOUND",
    ] {
        ensure!(
            u(report, &format!("/statuses/{status}"))? > 0,
            "no {status} answer: {report:#}"
        );
    }
    let latency: Vec<u64> = ["min", "p50", "p90", "p99", "p999", "max"]
        .iter()
        .map(|p| u(report, &format!("/latency_us/{p}")))
        .collect::<Result<_>>()?;
    ensure!(latency[0] > 0, "{report:#}");
    ensure!(
        latency.windows(2).all(|w| w[0] <= w[1]),
        "percentiles out of order: {latency:?}"
    );
    let measured = f(report, "/measured_seconds")?;
    let throughput = f(report, "/throughput_per_second")?;
    ensure!(
        (throughput - answered as f64 / measured).abs() < 1e-6 * throughput.max(1.0),
        "throughput is not answered / measured_seconds: {report:#}"
    );
    ensure!(report["tickets"]["exhausted"] == false, "{report:#}");
    ensure!(
        u(report, "/ops/enter/sent")? <= u(report, "/tickets/fresh_used")?,
        "more enters than fresh tickets handed out: {report:#}"
    );
    ensure!(
        u(report, "/setup/inventory/tickets")? == u(report, "/tickets/loaded")?,
        "{report:#}"
    );
    ensure!(
        f(report, "/setup/inventory/tickets_per_second")? > 0.0,
        "{report:#}"
    );
    Ok(())
}

#[tokio::test]
async fn drives_the_embedded_server_in_both_loops_and_reports_what_it_saw() -> Result<()> {
    let deadline = Instant::now() + BUDGET;
    let dir = tempfile::Builder::new()
        .prefix("presence-loadgen-")
        .tempdir()?;
    let (_server, url) = serve(&dir).await?;
    let base = ["--url", url.as_str(), "--json", "--mix", MIX];

    let closed = [
        "--tickets",
        "40000",
        "--devices",
        "4",
        "--gates",
        "2",
        "--duration",
        "2s",
        "--concurrency",
        "4",
    ];
    let output = loadgen(&[&base[..], &closed[..]].concat(), Some(KEY), deadline).await?;
    let report = passed_report(&output)?;
    // stderr is not a terminal here: the setup lines, and no live line.
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        stderr
            .lines()
            .all(|line| line.starts_with("presence-loadgen: "))
            && !stderr.contains("req/s")
            && !stderr.contains('\r')
            && !stderr.contains('\u{1b}'),
        "a live line drawn off a terminal:\n{stderr:?}"
    );
    check_report(&report)?;
    ensure!(
        report["mode"] == "closed" && report["connections"] == 4,
        "{report:#}"
    );
    ensure!(report["open_loop"].is_null(), "{report:#}");
    ensure!(report["setup"]["devices"]["devices"] == 4, "{report:#}");
    let measured = f(&report, "/measured_seconds")?;
    ensure!(
        (2.0..2.5).contains(&measured),
        "measured {measured} s of 2 s"
    );
    ensure!(
        u(&report, "/answered")? >= 100,
        "too few answers to see the whole mix: {report:#}"
    );

    let open = [
        "--tickets",
        "5000",
        "--duration",
        "2s",
        "--warmup",
        "500ms",
        "--rate",
        "200",
        // Room for a stall of over half a second (an fsync behind another
        // process's disk writes held every answer for 578 ms once, and 32 in
        // flight then left 65 slots unsent): what is checked is the schedule
        // and its accounting, not how fast this machine's disk is.
        "--max-in-flight",
        "160",
    ];
    // The key from a file this time.
    let key_file = dir.path().join("admin.key");
    std::fs::write(&key_file, format!("{KEY}\n"))?;
    let key_file = key_file.to_string_lossy().into_owned();
    let from_file = ["--api-key-file", key_file.as_str()];
    let output = loadgen(
        &[&base[..], &open[..], &from_file[..]].concat(),
        None,
        deadline,
    )
    .await?;
    let report = passed_report(&output)?;
    check_report(&report)?;
    ensure!(
        report["mode"] == "open" && report["rate"] == 200,
        "{report:#}"
    );
    // Due in the window [0.5 s, 2.5 s) at 200/s: slots 100 to 499.
    ensure!(u(&report, "/open_loop/scheduled")? == 400, "{report:#}");
    let missed = u(&report, "/open_loop/missed")?;
    ensure!(
        u(&report, "/sent")? + missed == 400,
        "sent + missed ≠ scheduled: {report:#}"
    );
    ensure!(
        missed <= 8,
        "{missed} requests never sent at 200/s: {report:#}"
    );
    let throughput = f(&report, "/throughput_per_second")?;
    ensure!(
        (180.0..=220.0).contains(&throughput),
        "open loop at 200/s answered {throughput}/s"
    );
    // 100 warm-up slots were sent but are in no figure.
    ensure!(u(&report, "/warmup/sent")? == 100, "{report:#}");
    ensure!(
        u(&report, "/tickets/fresh_used")? > u(&report, "/ops/enter/sent")?,
        "warm-up enters used fresh tickets too: {report:#}"
    );

    // Twelve tickets cannot feed a second of scans: reported, and a failure.
    let short = ["--tickets", "12", "--duration", "1s", "--concurrency", "2"];
    let output = loadgen(&[&base[..], &short[..]].concat(), Some(KEY), deadline).await?;
    ensure!(
        output.status.code() == Some(1),
        "exhaustion should exit 1: {output:?}"
    );
    let report: Value = serde_json::from_slice(&output.stdout)?;
    ensure!(report["passed"] == false, "{report:#}");
    ensure!(report["tickets"]["exhausted"] == true, "{report:#}");
    ensure!(u(&report, "/tickets/fresh_used")? == 12, "{report:#}");
    ensure!(
        u(&report, "/ops/enter/sent")? <= 12,
        "a ticket was reused: {report:#}"
    );
    ensure!(
        report["failures"][0]
            .as_str()
            .is_some_and(|f| f.contains("ran out")),
        "{report:#}"
    );

    // Several base URLs: the connections take turns over them. With the second
    // refusing connections, its workers count connect errors while the
    // first's are answered.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let urls = format!("{url},http://127.0.0.1:{closed_port}");
    let output = loadgen(
        &[
            "--url",
            urls.as_str(),
            "--json",
            "--tickets",
            "5000",
            "--duration",
            "1s",
            "--concurrency",
            "2",
        ],
        Some(KEY),
        deadline,
    )
    .await?;
    let report: Value = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("not a JSON report: {output:?}"))?;
    ensure!(
        output.status.code() == Some(1) && report["passed"] == false,
        "connect errors should fail the run: {output:?}"
    );
    ensure!(report["url"] == urls.as_str(), "{report:#}");
    ensure!(
        u(&report, "/errors/connect")? > 0 && u(&report, "/statuses/OKAY")? > 0,
        "one connection on each URL: {report:#}"
    );

    Ok(())
}

/// Runs that cannot start stop at once (exit status 2) with what to do next,
/// and never print the key.
#[tokio::test]
async fn runs_that_cannot_start_say_what_to_do_next() -> Result<()> {
    let deadline = Instant::now() + BUDGET;
    let dir = tempfile::Builder::new()
        .prefix("presence-loadgen-")
        .tempdir()?;
    let (_server, url) = serve(&dir).await?;
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let nowhere = format!("http://127.0.0.1:{closed_port}");
    let cases: [(&str, &str, Option<&str>, &[&str]); 4] = [
        (
            "no key",
            url.as_str(),
            None,
            &["no API key: set PRESENCE_API_KEY or pass --api-key-file"],
        ),
        (
            "an unknown key",
            url.as_str(),
            Some("not-the-key"),
            &[
                "HTTP 401",
                "UNAUTHORIZED",
                "what to do: the API key is missing or unknown to this server",
            ],
        ),
        (
            "not an admin key",
            url.as_str(),
            Some(SCANNER_KEY),
            &["HTTP 403", "what to do: use an admin key"],
        ),
        (
            "nothing listening",
            nowhere.as_str(),
            Some(KEY),
            &["is Presence running there? Check --url (PRESENCE_URL)"],
        ),
    ];
    for (case, url, key, says) in cases {
        // A small inventory: the server answers a refused key before reading the body.
        let args = ["--url", url, "--duration", "1s", "--tickets", "100"];
        let output = loadgen(&args, key, deadline).await?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        ensure!(
            output.status.code() == Some(2),
            "{case}: a run that cannot start should exit 2: {output:?}"
        );
        for said in says {
            ensure!(stderr.contains(said), "{case}: no {said:?} in {stderr}");
        }
        if let Some(key) = key {
            ensure!(!stderr.contains(key), "{case}: the key leaked: {stderr}");
        }
    }
    Ok(())
}
