//! The operator's command line against a running Presence over its public
//! HTTP API (`presence inventory upload`, `presence scan`, `presence ticket`),
//! in both modes: plain and `--json` output when not on a terminal, errors
//! that say what to do next, and on a real terminal (tmux) the progress bar
//! and the green and red bands.

use anyhow::{Context, Result, ensure};
use presence_tests::process::{Launch, run_to_completion};
use presence_tests::terminal::Tmux;
use presence_tests::{Scanner, Show, TestApp, contract_tests, ndjson};
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

async fn refusals_say_what_to_do_next(app: &TestApp) -> Result<()> {
    let dir = temp_dir()?;
    let show = Show::new();
    let (file, _) = inventory_file(dir.path(), &show, 1)?;
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
            "HTTP 401 UNAUTHORIZED",
        ),
        (
            "not an admin key",
            command(
                app,
                dir.path(),
                &app.keys().scanner,
                &["inventory", "upload", &file],
            ),
            "needs an admin key",
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

contract_tests!(embedded, distributed, scaled => [
    inventory_upload_applies_a_file_and_is_safe_to_rerun,
    inventory_upload_lists_the_bad_lines_and_exits_non_zero,
    scan_shows_green_then_red_and_json_for_scripts,
    ticket_prints_state_and_history_and_json,
    refusals_say_what_to_do_next,
]);

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
    ensure!(
        screen.contains("uploading [") && screen.contains("2003 lines"),
        "no progress bar:\n{screen}"
    );
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
