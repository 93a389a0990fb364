//! The operator's command line against a running Presence over its public
//! HTTP API (`presence inventory upload`, `presence scan`, `presence ticket`,
//! `presence device`), in both modes: plain and `--json` output when not on a
//! terminal, errors that say what to do next (a refused key, a device secret,
//! an upload over the server's limit), and on a real terminal (tmux) the
//! progress bars of upload and check and the green and red bands.

use anyhow::{Context, Result, anyhow, ensure};
use presence_tests::curl::shell_words;
use presence_tests::process::{Launch, run_to_completion};
use presence_tests::stack::DistributedOptions;
use presence_tests::terminal::Tmux;
use presence_tests::{Auth, Scanner, Show, TestApp, contract_tests, ndjson, unique_mac};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

/// `presence <args>` against `app` with `key` in `PRESENCE_API_KEY`, run in
/// the fixture's folder.
fn command(app: &TestApp, dir: &Path, key: &str, args: &[&str]) -> Launch {
    args.iter()
        .fold(Launch::new(dir), |launch, arg| launch.arg(arg))
        .env("PRESENCE_URL", app.base_url())
        .env("PRESENCE_API_KEY", key)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The exit code, stdout and stderr of a run.
fn outcome(output: &Output) -> (Option<i32>, String, String) {
    (
        output.status.code(),
        text(&output.stdout),
        text(&output.stderr),
    )
}

/// A show with a gate and `tickets` tickets, as a file in `dir`; the file and its tokens.
fn inventory_file(dir: &Path, show: &Show, tickets: usize) -> Result<(PathBuf, Vec<String>)> {
    let tokens: Vec<String> = (0..tickets).map(|_| show.token()).collect();
    let mut records = vec![show.venue(), show.event(), show.gate("Gate 1")];
    records.extend(tokens.iter().map(|token| show.ticket(token, &["A:1:1"])));
    let path = dir.join(format!("{}.ndjson", show.venue_id));
    std::fs::write(&path, ndjson(&records))?;
    Ok((path, tokens))
}

fn temp_dir() -> Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new()
        .prefix("presence-operator-")
        .tempdir()?)
}

async fn inventory_upload_applies_a_file_and_is_safe_to_rerun(app: &TestApp) -> Result<()> {
    let dir = temp_dir()?;
    let show = Show::new();
    let (file, tokens) = inventory_file(dir.path(), &show, 3)?;
    let file = file.to_string_lossy().into_owned();
    let upload = command(
        app,
        dir.path(),
        app.admin_key(),
        &["inventory", "upload", &file],
    );
    for run in 1..=2 {
        let (code, stdout, stderr) = outcome(&run_to_completion(&upload).await?);
        ensure!(code == Some(0), "run {run}: {code:?}\n{stdout}\n{stderr}");
        ensure!(
            stdout.starts_with("applied 6 (from "),
            "run {run}: {stdout}"
        );
        ensure!(stdout.contains("6 lines"), "run {run}: {stdout}");
        // Not a terminal: no progress bar, no escape sequences.
        ensure!(
            !stderr.contains("uploading") && !stdout.contains('\u{1b}'),
            "{stderr}"
        );
    }
    let json = run_to_completion(&upload.clone().arg("--json")).await?;
    let (code, stdout, _) = outcome(&json);
    let answer: Value = serde_json::from_str(&stdout).with_context(|| stdout.clone())?;
    ensure!(
        code == Some(0) && answer["message"]["applied"] == 6,
        "{stdout}"
    );
    // The tickets are there: the first one enters.
    let scanner = app.scanner(&show.venue_id, "Gate 1").await?;
    let reply = app
        .scan(
            presence_tests::ScanKind::Enter,
            &scanner.body(&tokens[0], presence_tests::next_scan_time()),
        )
        .await?;
    reply.expect(200, "OKAY")?;
    Ok(())
}

async fn inventory_upload_lists_the_bad_lines_and_exits_non_zero(app: &TestApp) -> Result<()> {
    let dir = temp_dir()?;
    let show = Show::new();
    let file = dir.path().join("bad.ndjson");
    std::fs::write(
        &file,
        format!(
            "{}\n{{broken\n{{\"type\":\"stadium\"}}\n",
            ndjson(&[show.venue()]).trim_end()
        ),
    )?;
    let file = file.to_string_lossy().into_owned();
    let upload = command(
        app,
        dir.path(),
        app.admin_key(),
        &["inventory", "upload", &file],
    );
    let (code, stdout, stderr) = outcome(&run_to_completion(&upload).await?);
    ensure!(code == Some(1), "{code:?}\n{stdout}\n{stderr}");
    ensure!(
        stderr.contains("line 2: ")
            && stderr.contains("line 3: ")
            && stderr.contains("refused, 2 bad line(s); nothing applied"),
        "{stderr}"
    );
    let (code, stdout, _) = outcome(&run_to_completion(&upload.clone().arg("--json")).await?);
    let answer: Value = serde_json::from_str(&stdout).with_context(|| stdout.clone())?;
    ensure!(
        code == Some(1) && answer["message"]["errorCount"] == 2,
        "{stdout}"
    );

    // A file refused as a whole (here: empty) has no bad lines: the server's
    // reason is printed instead.
    let empty = dir.path().join("empty.ndjson");
    std::fs::write(&empty, "")?;
    let empty = empty.to_string_lossy().into_owned();
    let upload = command(
        app,
        dir.path(),
        app.admin_key(),
        &["inventory", "upload", &empty],
    );
    let (code, stdout, stderr) = outcome(&run_to_completion(&upload).await?);
    ensure!(code == Some(1), "{code:?}\n{stdout}\n{stderr}");
    ensure!(
        stderr.trim_end()
            == format!("{empty}: refused: The body holds no inventory records; nothing applied"),
        "{stderr}"
    );
    Ok(())
}

/// `presence scan KIND TOKEN` from `scanner`'s device, with `extra` flags.
fn scan_command(
    app: &TestApp,
    dir: &Path,
    scanner: &Scanner,
    kind: &str,
    token: &str,
    extra: &[&str],
) -> Launch {
    let (device, gate) = (scanner.device_id.to_string(), scanner.gate_id.to_string());
    let mut args = vec![
        "scan",
        kind,
        token,
        "--venue",
        &scanner.venue_id,
        "--device",
        &device,
        "--gate",
        &gate,
        "--gate-name",
        &scanner.gate_name,
    ];
    args.extend_from_slice(extra);
    command(app, dir, &app.keys().scanner, &args)
}

/// A show with one ticket (place PIT1:3:4) and a scanner at its "Gate 1".
async fn one_ticket_at_gate_1(app: &TestApp) -> Result<(Show, String, Scanner)> {
    let show = Show::new();
    let token = show.token();
    app.load(&[
        show.venue(),
        show.event(),
        show.gate("Gate 1"),
        show.ticket(&token, &["PIT1:3:4"]),
    ])
    .await?;
    let scanner = app.scanner(&show.venue_id, "Gate 1").await?;
    Ok((show, token, scanner))
}

async fn scan_shows_green_then_red_and_json_for_scripts(app: &TestApp) -> Result<()> {
    let dir = temp_dir()?;
    let (_, token, scanner) = one_ticket_at_gate_1(app).await?;
    let enter = scan_command(app, dir.path(), &scanner, "enter", &token, &[]);
    let (code, stdout, stderr) = outcome(&run_to_completion(&enter).await?);
    ensure!(code == Some(0), "{code:?}\n{stdout}\n{stderr}");
    ensure!(
        stdout.starts_with("GREEN OKAY Okay\n  place PIT1:3:4  (event "),
        "{stdout}"
    );
    ensure!(
        !stdout.contains('\u{1b}'),
        "colour when not on a terminal: {stdout:?}"
    );
    let (code, stdout, _) = outcome(&run_to_completion(&enter).await?);
    ensure!(code == Some(2), "{code:?} {stdout}");
    ensure!(
        stdout.starts_with("RED ALREADY_ENTERED Already entered at Gate 1"),
        "{stdout}"
    );
    let validate = scan_command(app, dir.path(), &scanner, "validate", &token, &["--json"]);
    let (code, stdout, _) = outcome(&run_to_completion(&validate).await?);
    let answer: Value = serde_json::from_str(&stdout).with_context(|| stdout.clone())?;
    ensure!(
        code == Some(0) && answer["result"]["status"] == "INTERNAL_SCAN",
        "{stdout}"
    );
    let unknown = scan_command(app, dir.path(), &scanner, "enter", "no-such-token", &[]);
    let (code, stdout, _) = outcome(&run_to_completion(&unknown).await?);
    ensure!(
        code == Some(2) && stdout.starts_with("RED NOT_FOUND"),
        "{code:?} {stdout}"
    );
    Ok(())
}

async fn ticket_prints_state_and_history_and_json(app: &TestApp) -> Result<()> {
    let dir = temp_dir()?;
    let (show, token, scanner) = one_ticket_at_gate_1(app).await?;
    let enter = scan_command(app, dir.path(), &scanner, "enter", &token, &[]);
    ensure!(run_to_completion(&enter).await?.status.success(), "enter");
    let key = app.keys().scanner.clone();
    let lookup = |extra: &[&str]| {
        let mut args = vec!["ticket", token.as_str(), "--venue", show.venue_id.as_str()];
        args.extend_from_slice(extra);
        command(app, dir.path(), &key, &args)
    };
    let (code, stdout, stderr) = outcome(&run_to_completion(&lookup(&[])).await?);
    ensure!(code == Some(0), "{code:?}\n{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    ensure!(
        lines.len() == 4
            && lines[0].starts_with(&format!("ticket {token}  event "))
            && lines[0].ends_with("places PIT1:3:4")
            && lines[1] == "status VALID  state IN"
            && lines[2].starts_with("scan time")
            && lines[3].contains("  enter  OKAY  ")
            && lines[3].contains("Gate 1"),
        "{stdout}"
    );
    let (code, stdout, _) = outcome(&run_to_completion(&lookup(&["--json"])).await?);
    let answer: Value = serde_json::from_str(&stdout).with_context(|| stdout.clone())?;
    ensure!(
        code == Some(0)
            && answer["message"]["state"] == "IN"
            && answer["message"]["scans"].as_array().map(Vec::len) == Some(1),
        "{stdout}"
    );
    let unknown = command(
        app,
        dir.path(),
        &key,
        &["ticket", "no-such-token", "--venue", &show.venue_id],
    );
    let (code, stdout, stderr) = outcome(&run_to_completion(&unknown).await?);
    ensure!(
        code == Some(1) && stderr.contains("404 NOT_FOUND"),
        "{code:?}\n{stdout}\n{stderr}"
    );
    Ok(())
}

/// An inventory file of `bytes` bytes or a little more: the same venue, line
/// after line.
fn large_file(dir: &Path, bytes: usize) -> Result<PathBuf> {
    let line = ndjson(&[Show::new().venue()]);
    let path = dir.join("large.ndjson");
    std::fs::write(&path, line.repeat(bytes.div_ceil(line.len())))?;
    Ok(path)
}

/// The server refuses a key before reading the body and closes the
/// connection: with a file far larger than what the sockets buffer, a client
/// that simply streams it sees its write fail, not the refusal.
const LARGER_THAN_SOCKET_BUFFERS: usize = 32 * 1024 * 1024;

async fn refusals_say_what_to_do_next(app: &TestApp) -> Result<()> {
    let dir = temp_dir()?;
    let file = large_file(dir.path(), LARGER_THAN_SOCKET_BUFFERS)?;
    let file = file.to_string_lossy().into_owned();
    let cases: [(&str, Launch, &str); 4] = [
        (
            "unknown key",
            command(
                app,
                dir.path(),
                "not-a-key",
                &["inventory", "upload", &file],
            ),
            "upload refused: HTTP 401 UNAUTHORIZED",
        ),
        (
            "not an admin key",
            command(
                app,
                dir.path(),
                &app.keys().scanner,
                &["inventory", "upload", &file],
            ),
            "upload refused: HTTP 403 FORBIDDEN: This API key may not use the admin API\n  \
             what to do: this key may not do that: /admin needs an admin key",
        ),
        (
            "no key",
            Launch::new(dir.path())
                .arg("inventory")
                .arg("upload")
                .arg(&file)
                .env("PRESENCE_URL", app.base_url()),
            "no API key: set PRESENCE_API_KEY or pass --api-key-file",
        ),
        (
            "nothing listening",
            command(
                app,
                dir.path(),
                app.admin_key(),
                &["inventory", "upload", &file],
            )
            .env("PRESENCE_URL", "http://127.0.0.1:9"),
            "Is it running there? Check --url (or PRESENCE_URL)",
        ),
    ];
    for (case, launch, says) in cases {
        let (code, stdout, stderr) = outcome(&run_to_completion(&launch).await?);
        ensure!(code == Some(1), "{case}: {code:?}\n{stdout}\n{stderr}");
        ensure!(stderr.contains(says), "{case}: {stderr}");
        if case == "unknown key" {
            ensure!(
                stderr.contains("set PRESENCE_API_KEY or pass --api-key-file"),
                "{stderr}"
            );
        }
        ensure!(
            !stderr.contains(app.admin_key()),
            "{case}: the key in an error: {stderr}"
        );
    }
    Ok(())
}

/// `presence device init`'s first line: `configured device ID "NAME" (MAC) at
/// venue V, gate GATE "GATE NAME"`; the device's and the gate's ids.
fn configured_ids(stdout: &str) -> Result<(u64, u64)> {
    let first = stdout.lines().next().unwrap_or_default();
    let words: Vec<&str> = first.split_whitespace().collect();
    let number = |after: &str| {
        words
            .iter()
            .position(|word| *word == after)
            .and_then(|at| words.get(at + 1))
            .and_then(|word| word.parse().ok())
            .ok_or_else(|| anyhow!("no number after {after:?} in {first:?}"))
    };
    ensure!(first.starts_with("configured device "), "{stdout}");
    Ok((number("device")?, number("gate")?))
}

/// The `presence scan` command `presence device init` printed, for `token`:
/// its words after `presence`, as a shell reads them.
fn printed_scan(stdout: &str, token: &str) -> Result<Vec<String>> {
    let line = stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("scan from it: "))
        .ok_or_else(|| anyhow!("no scan command in {stdout}"))?;
    let words = shell_words(line)?;
    ensure!(
        words.first().map(String::as_str) == Some("presence"),
        "{line}"
    );
    Ok(words
        .into_iter()
        .skip(1)
        .map(|word| {
            if word == "TOKEN" {
                token.to_owned()
            } else {
                word
            }
        })
        .collect())
}

async fn device_init_sets_up_a_gate_to_scan_from(app: &TestApp) -> Result<()> {
    let dir = temp_dir()?;
    let show = Show::new();
    let token = show.token();
    app.load(&[show.venue(), show.event(), show.ticket(&token, &["A:1:1"])])
        .await?;
    let mac = unique_mac();
    let init = command(
        app,
        dir.path(),
        &app.keys().scanner,
        &[
            "device",
            "init",
            "--venue",
            &show.venue_id,
            "--mac",
            &mac,
            "--gate-name",
            "North Door",
            "--name",
            "Door 1",
        ],
    );
    let (code, stdout, stderr) = outcome(&run_to_completion(&init).await?);
    ensure!(code == Some(0), "{code:?}\n{stdout}\n{stderr}");
    let (device, gate) = configured_ids(&stdout)?;
    ensure!(
        stdout.contains(&format!(
            "\"Door 1\" ({mac}) at venue {}, gate {gate} \"North Door\"",
            show.venue_id
        )) && !stdout.contains("device secret"),
        "{stdout}"
    );
    // The command it prints scans from the new device: green.
    let scan = printed_scan(&stdout, &token)?;
    let words: Vec<&str> = scan.iter().map(String::as_str).collect();
    let (code, scanned, _) =
        outcome(&run_to_completion(&command(app, dir.path(), &app.keys().scanner, &words)).await?);
    ensure!(
        code == Some(0) && scanned.starts_with("GREEN OKAY"),
        "{words:?}: {code:?} {scanned}"
    );
    // Again: the same device (init is by MAC), its answer as JSON.
    let (code, again, _) = outcome(&run_to_completion(&init.clone().arg("--json")).await?);
    let answer: Value = serde_json::from_str(&again).with_context(|| again.clone())?;
    ensure!(
        code == Some(0) && answer["message"]["id"] == device && answer["message"]["gateId"] == gate,
        "{again}"
    );
    // Looked up by its MAC.
    let lookup = command(
        app,
        dir.path(),
        &app.keys().scanner,
        &["device", "show", "--venue", &show.venue_id, "--mac", &mac],
    );
    let (code, shown, _) = outcome(&run_to_completion(&lookup).await?);
    ensure!(
        code == Some(0) && shown.starts_with(&format!("device {device} \"Door 1\"")),
        "{shown}"
    );
    // A venue the server does not know.
    let unknown = command(
        app,
        dir.path(),
        &app.keys().scanner,
        &[
            "device",
            "init",
            "--venue",
            "no-such-venue",
            "--mac",
            &mac,
            "--gate",
            &gate.to_string(),
        ],
    );
    let (code, _, stderr) = outcome(&run_to_completion(&unknown).await?);
    ensure!(
        code == Some(1) && stderr.contains("device init refused: HTTP 404 NOT_FOUND"),
        "{code:?} {stderr}"
    );
    Ok(())
}

/// At a venue that requires device secrets: init prints the secret once, a
/// scan without it is told to send the device's secret (not to fix the API
/// key), and with it (from the environment or a file) the scan is decided.
async fn a_strict_venue_takes_the_device_secret(app: &TestApp) -> Result<()> {
    let dir = temp_dir()?;
    let show = Show::new();
    let token = show.token();
    app.load(&[
        show.strict_venue(),
        show.event(),
        show.ticket(&token, &["A:1:1"]),
    ])
    .await?;
    let mac = unique_mac();
    let init = command(
        app,
        dir.path(),
        app.admin_key(),
        &[
            "device",
            "init",
            "--venue",
            &show.venue_id,
            "--mac",
            &mac,
            "--gate-name",
            "Gate 1",
        ],
    );
    let (code, stdout, stderr) = outcome(&run_to_completion(&init).await?);
    ensure!(code == Some(0), "{code:?}\n{stdout}\n{stderr}");
    let secret = stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("device secret: "))
        .ok_or_else(|| anyhow!("no device secret printed: {stdout}"))?
        .to_owned();
    let (device, gate) = configured_ids(&stdout)?;
    let scanner = Scanner {
        venue_id: show.venue_id.clone(),
        mac: mac.clone(),
        device_id: device,
        gate_id: gate,
        gate_name: "Gate 1".to_owned(),
    };
    // The lookup never shows it again.
    let lookup = command(
        app,
        dir.path(),
        app.admin_key(),
        &[
            "device",
            "show",
            "--venue",
            &show.venue_id,
            "--mac",
            &mac,
            "--json",
        ],
    );
    let (_, shown, _) = outcome(&run_to_completion(&lookup).await?);
    ensure!(!shown.contains(&secret), "{shown}");

    let enter = scan_command(app, dir.path(), &scanner, "enter", &token, &[]);
    let (code, stdout, stderr) = outcome(&run_to_completion(&enter).await?);
    ensure!(
        code == Some(1)
            && stderr.contains("HTTP 401 UNAUTHORIZED: device secret required")
            && stderr.contains("set PRESENCE_DEVICE_SECRET or pass --device-secret-file")
            && !stderr.contains("PRESENCE_API_KEY"),
        "{code:?}\n{stdout}\n{stderr}"
    );
    let wrong = enter
        .clone()
        .env("PRESENCE_DEVICE_SECRET", "0123456789abcdef0123456789abcdef");
    let (code, _, stderr) = outcome(&run_to_completion(&wrong).await?);
    ensure!(
        code == Some(1)
            && stderr.contains("device secret rejected")
            && stderr.contains("set PRESENCE_DEVICE_SECRET or pass --device-secret-file"),
        "{code:?} {stderr}"
    );
    let right = enter.clone().env("PRESENCE_DEVICE_SECRET", &secret);
    let (code, stdout, stderr) = outcome(&run_to_completion(&right).await?);
    ensure!(
        code == Some(0) && stdout.starts_with("GREEN OKAY"),
        "{code:?}\n{stdout}\n{stderr}"
    );
    let secret_file = dir.path().join("device.secret");
    std::fs::write(&secret_file, format!("{secret}\n"))?;
    let secret_file = secret_file.to_string_lossy().into_owned();
    let from_file = scan_command(
        app,
        dir.path(),
        &scanner,
        "exit",
        &token,
        &["--device-secret-file", &secret_file],
    );
    let (code, stdout, stderr) = outcome(&run_to_completion(&from_file).await?);
    ensure!(
        code == Some(0) && stdout.starts_with("GREEN EXIT"),
        "{code:?}\n{stdout}\n{stderr}"
    );
    ensure!(
        !app.logs().contains(&secret),
        "a log holds the device secret"
    );
    Ok(())
}

contract_tests!(embedded, distributed, scaled => [
    inventory_upload_applies_a_file_and_is_safe_to_rerun,
    inventory_upload_lists_the_bad_lines_and_exits_non_zero,
    scan_shows_green_then_red_and_json_for_scripts,
    ticket_prints_state_and_history_and_json,
    refusals_say_what_to_do_next,
    device_init_sets_up_a_gate_to_scan_from,
    a_strict_venue_takes_the_device_secret,
]);

/// The inventory limit of a server started with a small
/// `PRESENCE_MAX_INVENTORY_BYTES`.
const SMALL_INVENTORY_LIMIT: usize = 4096;

/// The server's inventory limit is a setting: a larger body is refused 413
/// naming it, `presence inventory upload` refuses a larger file before
/// sending it, naming the limit and what to do, and a file within it applies.
async fn uploads_over_the_servers_limit_are_refused_naming_it(app: &TestApp) -> Result<()> {
    let limit = SMALL_INVENTORY_LIMIT;
    let reply = app
        .get("/admin/v1/inventory", Auth::Header(app.admin_key()))
        .await?;
    reply.expect(200, "OKAY")?;
    ensure!(reply.json["message"]["maxBytes"] == limit, "{}", reply.text);
    let dir = temp_dir()?;
    let file = large_file(dir.path(), limit + 1)?;
    let body = std::fs::read_to_string(&file)?;
    let reply = app
        .post_unread("/admin/v1/inventory", Auth::Header(app.admin_key()), body)
        .await?;
    reply.expect(413, "PAYLOAD_TOO_LARGE")?;
    ensure!(
        reply.message() == format!("The body is larger than {limit} bytes"),
        "{}",
        reply.text
    );

    let file = file.to_string_lossy().into_owned();
    let upload = command(
        app,
        dir.path(),
        app.admin_key(),
        &["inventory", "upload", &file],
    );
    let (code, stdout, stderr) = outcome(&run_to_completion(&upload).await?);
    ensure!(code == Some(1), "{code:?}\n{stdout}\n{stderr}");
    ensure!(
        stderr.contains(&format!(
            "more than this server takes in one upload: {limit} bytes"
        )) && stderr.contains("413 PAYLOAD_TOO_LARGE")
            && stderr.contains("split the file")
            && stderr.contains("PRESENCE_MAX_INVENTORY_BYTES"),
        "{stderr}"
    );

    let show = Show::new();
    let (small, _) = inventory_file(dir.path(), &show, 2)?;
    ensure!(
        std::fs::metadata(&small)?.len() <= limit as u64,
        "the small file is too large"
    );
    let small = small.to_string_lossy().into_owned();
    let upload = command(
        app,
        dir.path(),
        app.admin_key(),
        &["inventory", "upload", &small],
    );
    let (code, stdout, stderr) = outcome(&run_to_completion(&upload).await?);
    ensure!(
        code == Some(0) && stdout.starts_with("applied 5 "),
        "{code:?}\n{stdout}\n{stderr}"
    );
    Ok(())
}

/// Runs `test` against `app`, printing its logs on failure.
async fn with_logs<F>(app: TestApp, test: F) -> Result<()>
where
    F: AsyncFnOnce(&TestApp) -> Result<()>,
{
    let outcome = test(&app).await;
    if outcome.is_err() {
        app.print_logs();
    }
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_inventory_limit_is_a_setting() -> Result<()> {
    let limit = SMALL_INVENTORY_LIMIT.to_string();
    let app = TestApp::embedded_with(&[("PRESENCE_MAX_INVENTORY_BYTES", &limit)]).await?;
    with_logs(app, uploads_over_the_servers_limit_are_refused_naming_it).await
}

/// The limit lives in the gateway library: `presence-gateway` takes it from
/// its environment too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_inventory_limit_is_a_setting() -> Result<()> {
    let app = TestApp::distributed_with(DistributedOptions {
        gateway_env: vec![(
            "PRESENCE_MAX_INVENTORY_BYTES".to_owned(),
            SMALL_INVENTORY_LIMIT.to_string(),
        )],
        ..DistributedOptions::default()
    })
    .await?;
    with_logs(app, uploads_over_the_servers_limit_are_refused_naming_it).await
}

/// The bar `verb` drew (`uploading [====] 298.50 KiB/298.50 KiB, 2003 lines,
/// 1.20 MiB/s, ETA 0s`), as it stays on the screen once the file is through:
/// every byte of the file done, its `lines` lines, a rate and the time left.
fn progress_bar_is_complete(screen: &str, verb: &str, lines: usize) -> Result<()> {
    let bar = screen
        .lines()
        .find(|line| line.starts_with(&format!("{verb} [")))
        .ok_or_else(|| anyhow!("no {verb} bar on the screen:\n{screen}"))?;
    let fields: Vec<&str> = bar
        .split_once("] ")
        .map(|(_, fields)| fields.split(", ").collect())
        .unwrap_or_default();
    let [bytes, counted, rate, eta] = fields[..] else {
        return Err(anyhow!("not bytes, lines, rate and ETA: {bar:?}"));
    };
    let (done, total) = bytes
        .split_once('/')
        .ok_or_else(|| anyhow!("no done/total bytes in {bar:?}"))?;
    ensure!(
        done == total && total.ends_with("iB") && total.starts_with(|c: char| c.is_ascii_digit()),
        "bytes {bytes:?} in {bar:?}"
    );
    ensure!(
        counted == format!("{lines} lines"),
        "lines {counted:?} in {bar:?}"
    );
    ensure!(
        rate.ends_with("/s") && rate.starts_with(|c: char| c.is_ascii_digit()),
        "rate {rate:?} in {bar:?}"
    );
    ensure!(
        eta.starts_with("ETA ") && eta.len() > 4,
        "time left {eta:?} in {bar:?}"
    );
    Ok(())
}

/// The shell command running `presence` with `args`, the key read from a file.
fn on_terminal(app: &TestApp, dir: &Path, key: &str, args: &[&str]) -> Result<String> {
    let key_file = dir.join(format!("key-{}", presence_tests::unique("k")));
    std::fs::write(&key_file, key)?;
    let binary = presence_tests::process::presence_bin()?;
    let quoted: Vec<String> = args.iter().map(|arg| format!("'{arg}'")).collect();
    Ok(format!(
        "'{}' {} --url '{}' --api-key-file '{}'",
        binary.display(),
        quoted.join(" "),
        app.base_url(),
        key_file.display()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_upload_draws_progress_and_scans_show_green_and_red() -> Result<()> {
    let app = TestApp::embedded().await?;
    let dir = temp_dir()?;
    let show = Show::new();
    let (file, tokens) = inventory_file(dir.path(), &show, 2000)?;
    let upload = on_terminal(
        &app,
        dir.path(),
        app.admin_key(),
        &["inventory", "upload", &file.to_string_lossy()],
    )?;
    let tmux = Tmux::new();
    tmux.start(dir.path(), &upload)?;
    let (code, screen, _) = tmux.finished(Duration::from_secs(60)).await?;
    ensure!(code == 0, "{screen}");
    progress_bar_is_complete(&screen, "uploading", 2003)?;
    ensure!(screen.contains("applied 2003"), "{screen}");

    let scanner = app.scanner(&show.venue_id, "Gate 1").await?;
    let (device, gate) = (scanner.device_id.to_string(), scanner.gate_id.to_string());
    let scan = on_terminal(
        &app,
        dir.path(),
        &app.keys().scanner,
        &[
            "scan",
            "enter",
            &tokens[0],
            "--venue",
            &show.venue_id,
            "--device",
            &device,
            "--gate",
            &gate,
        ],
    )?;
    for (band, status, background) in [("GREEN", "OKAY", "42"), ("RED", "ALREADY_ENTERED", "41")] {
        let tmux = Tmux::new();
        tmux.start(dir.path(), &scan)?;
        let (_, screen, coloured) = tmux.finished(Duration::from_secs(30)).await?;
        ensure!(screen.contains(&format!("{band}  {status}")), "{screen}");
        ensure!(
            coloured.contains(&format!("{background}m")),
            "no {band} background (SGR {background}) on the screen:\n{coloured:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_loadgen_shows_a_live_line_and_keeps_its_report() -> Result<()> {
    let app = TestApp::embedded().await?;
    let dir = temp_dir()?;
    let key_file = dir.path().join("admin.key");
    std::fs::write(&key_file, app.admin_key())?;
    let loadgen = presence_tests::process::built_binary("presence-loadgen")?;
    // The key from the environment, read from a file by the shell: never on
    // the command line.
    let script = format!(
        "PRESENCE_API_KEY=$(cat '{}') '{}' --url '{}' --tickets 200000 --duration 4s --concurrency 4",
        key_file.display(),
        loadgen.display(),
        app.base_url()
    );
    let tmux = Tmux::new();
    tmux.start(dir.path(), &script)?;
    let live = tmux
        .wait_for(Duration::from_secs(60), |screen| {
            screen.contains(" of 4.0 s ") && screen.contains("req/s") && screen.contains("p99 ")
        })
        .await?;
    ensure!(live.contains("errors 0"), "{live}");
    let (code, screen, _) = tmux.finished(Duration::from_secs(60)).await?;
    ensure!(code == 0, "{screen}");
    // The report as before, after the line.
    ensure!(screen.contains("result:    PASS"), "{screen}");
    Ok(())
}

#[tokio::test]
async fn on_a_terminal_inventory_check_draws_progress() -> Result<()> {
    let dir = temp_dir()?;
    let show = Show::new();
    let (file, _) = inventory_file(dir.path(), &show, 2000)?;
    let binary = presence_tests::process::presence_bin()?;
    let check = format!(
        "'{}' inventory check '{}'",
        binary.display(),
        file.display()
    );
    let tmux = Tmux::new();
    tmux.start(dir.path(), &check)?;
    let (code, screen, _) = tmux.finished(Duration::from_secs(60)).await?;
    ensure!(code == 0, "{screen}");
    progress_bar_is_complete(&screen, "checking", 2003)?;
    ensure!(
        screen.contains(&format!(
            "{}: valid, 1 venues, 1 events, 1 gates, 2000 tickets",
            file.display()
        )),
        "{screen}"
    );
    Ok(())
}
