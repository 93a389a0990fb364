//! The `presence` command line: `serve` flags and their environment twins,
//! signals, `inventory check`, and `demo`.

use anyhow::{Result, anyhow, ensure};
use presence_tests::curl::{CurlCommand, curl_commands};
use presence_tests::process::{Launch, PresenceProcess, run_to_completion, served_url};
use presence_tests::{Show, TestApp, ndjson, next_scan_time};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;
use tempfile::TempDir;

fn temp_dir() -> Result<TempDir> {
    Ok(tempfile::Builder::new().prefix("presence-cli-").tempdir()?)
}

fn write(dir: &Path, name: &str, text: &str) -> Result<String> {
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path.to_string_lossy().into_owned())
}

/// A venue, an event on now, a gate and two tickets, as an inventory file.
fn good_inventory(show: &Show, tokens: [&str; 2]) -> String {
    ndjson(&[
        show.venue(),
        show.event(),
        show.gate("Gate 1"),
        show.ticket(tokens[0], &["A:1:1"]),
        show.ticket(tokens[1], &["A:1:2", "A:1:3"]),
    ])
}

/// `presence serve` on a free port in `dir`, with one admin key and an inventory file.
fn serve_with_inventory(dir: &Path, key: &str, inventory: &str) -> Launch {
    Launch::new(dir)
        .arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--api-key")
        .arg(key)
        .arg("--inventory")
        .arg(inventory)
}

fn http_client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .no_proxy()
        .build()?)
}

async fn post_json(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    body: &Value,
) -> Result<(u16, Value)> {
    let response = client
        .post(url)
        .header("X-Api-Key", key)
        .body(body.to_string())
        .send()
        .await?;
    let code = response.status().as_u16();
    Ok((code, response.json().await?))
}

/// Configures a new device at "Gate 1" of `venue`; the device/init answer's `message`.
async fn configure_device(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    venue: &str,
) -> Result<Value> {
    let init = json!({
        "venueId": venue, "name": "Scanner", "mac": presence_tests::unique_mac(), "ip": "10.0.0.1",
        "gateName": "Gate 1", "serial": "S1", "model": "M1"
    });
    let (code, device) = post_json(
        client,
        &format!("{url}/presence/v1/device/init"),
        key,
        &init,
    )
    .await?;
    ensure!(code == 200, "device/init: HTTP {code} {device}");
    Ok(device["message"].clone())
}

/// An enter of `token` by `device` (a device/init `message`), scanned now.
fn enter_body(device: &Value, token: &str) -> Value {
    json!({
        "deviceOs": "Printed", "gateName": "Gate 1", "token": token,
        "venueId": device["venueId"], "deviceId": device["id"], "gateId": device["gateId"],
        "scanTime": next_scan_time()
    })
}

/// Configures a device at "Gate 1" of `venue` and enters `token` there.
async fn enter_via(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    venue: &str,
    token: &str,
) -> Result<(u16, Value)> {
    let device = configure_device(client, url, key, venue).await?;
    let scan = enter_body(&device, token);
    post_json(
        client,
        &format!("{url}/presence/v1/ticket/enter"),
        key,
        &scan,
    )
    .await
}

/// `presence inventory check FILE` with `extra` flags: its exit code, stdout and stderr.
async fn check(dir: &Path, file: &str, extra: &[&str]) -> Result<(Option<i32>, String, String)> {
    let launch = extra.iter().fold(
        Launch::new(dir).arg("inventory").arg("check").arg(file),
        |launch, flag| launch.arg(flag),
    );
    let output = run_to_completion(&launch).await?;
    Ok((
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// Not on a terminal: one plain line of counts (no progress bar, no escape
/// sequence), or with `--json` one JSON object for scripts.
#[tokio::test]
async fn inventory_check_accepts_a_good_file() -> Result<()> {
    let dir = temp_dir()?;
    let show = Show::new();
    let file = write(
        dir.path(),
        "good.ndjson",
        &good_inventory(&show, ["T1", "T2"]),
    )?;
    let (code, stdout, stderr) = check(dir.path(), &file, &[]).await?;
    ensure!(code == Some(0), "exit {code:?}: {stdout}\n{stderr}");
    ensure!(
        stdout == format!("{file}: valid, 1 venues, 1 events, 1 gates, 2 tickets\n"),
        "{stdout:?}"
    );
    ensure!(
        !stderr.contains("checking") && !stderr.contains('\u{1b}') && !stdout.contains('\u{1b}'),
        "a progress bar or colour off a terminal: {stderr:?}"
    );
    let (code, stdout, _) = check(dir.path(), &file, &["--json"]).await?;
    let verdict: Value = serde_json::from_str(&stdout)?;
    ensure!(
        code == Some(0)
            && verdict
                == json!({"valid": true, "counts": {"venues": 1, "events": 1, "gates": 1, "tickets": 2}}),
        "{stdout}"
    );
    Ok(())
}

/// `presence barcode` prints RFC 6238's own SHA-1 vector (T = 59 s, 30 s
/// steps: 94287082, of which a 6-digit code keeps the last six digits), with the
/// secret from the environment or a file, and never echoes a bad secret.
#[tokio::test]
async fn barcode_prints_the_rfc_6238_code() -> Result<()> {
    let dir = temp_dir()?;
    let seed = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    let barcode = |secret: Launch| async move {
        let output = run_to_completion(
            &secret
                .arg("barcode")
                .arg("T1")
                .arg("--at")
                .arg("59000")
                .arg("--step-seconds")
                .arg("30"),
        )
        .await?;
        Ok::<_, anyhow::Error>((
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).trim().to_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ))
    };
    let from_env = barcode(Launch::new(dir.path()).env("PRESENCE_ROTATION_SECRET", seed)).await?;
    ensure!(from_env.0 && from_env.1 == "T1:287082", "{from_env:?}");
    let file = write(dir.path(), "secret.txt", &format!("{seed}\n"))?;
    let from_file =
        barcode(Launch::new(dir.path()).env("PRESENCE_ROTATION_SECRET_FILE", &file)).await?;
    ensure!(from_file.0 && from_file.1 == "T1:287082", "{from_file:?}");
    let bad = "NOT-A-SECRET-1890";
    let refused = barcode(Launch::new(dir.path()).env("PRESENCE_ROTATION_SECRET", bad)).await?;
    ensure!(!refused.0, "a bad secret was accepted: {refused:?}");
    ensure!(
        refused.2.contains("base32") && !refused.2.contains(bad),
        "{}",
        refused.2
    );
    Ok(())
}

#[tokio::test]
async fn inventory_check_names_every_bad_line() -> Result<()> {
    let dir = temp_dir()?;
    let show = Show::new();
    let lines = [
        show.venue().to_string(),
        "{\"type\":\"venue\"".to_owned(),
        show.event().to_string(),
        json!({"type": "arena", "id": "X"}).to_string(),
        Show::new().ticket("T9", &["A:1:1"]).to_string(),
        show.ticket("T1", &["A:1:1"]).to_string(),
        show.ticket("T2", &[]).to_string(),
    ];
    let file = write(dir.path(), "bad.ndjson", &(lines.join("\n") + "\n"))?;
    let (code, _, stderr) = check(dir.path(), &file, &[]).await?;
    ensure!(code == Some(1), "a bad file passed: {stderr}");
    let reported: Vec<u64> = stderr
        .lines()
        .filter_map(|line| line.strip_prefix("line "))
        .filter_map(|rest| rest.split_once(':'))
        .filter_map(|(number, reason)| {
            (!reason.trim().is_empty()).then(|| number.trim().parse().ok())?
        })
        .collect();
    ensure!(
        reported == [2, 4, 5, 7],
        "reported lines {reported:?}:\n{stderr}"
    );
    let (code, stdout, _) = check(dir.path(), &file, &["--json"]).await?;
    let verdict: Value = serde_json::from_str(&stdout)?;
    let listed: Vec<u64> = verdict["errors"]
        .as_array()
        .map(|errors| errors.iter().filter_map(|e| e["line"].as_u64()).collect())
        .unwrap_or_default();
    ensure!(
        code == Some(1)
            && verdict["valid"] == false
            && verdict["errorCount"] == 4
            && listed == [2, 4, 5, 7],
        "{stdout}"
    );
    Ok(())
}

#[tokio::test]
async fn inventory_check_fails_on_a_missing_file() -> Result<()> {
    let dir = temp_dir()?;
    let missing = dir.path().join("missing.ndjson");
    let (code, _, stderr) = check(dir.path(), &missing.to_string_lossy(), &[]).await?;
    ensure!(code == Some(1), "a missing file passed");
    ensure!(
        stderr.contains("missing.ndjson"),
        "the error does not name the file: {stderr}"
    );
    Ok(())
}

/// The words of a text: runs of letters, digits, `_` and `-`, so that
/// `--api-key-file` is one word and `PRESENCE_API_KEY` is not found inside
/// `PRESENCE_API_KEY_FILE`.
fn words(text: &str) -> BTreeSet<&str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .filter(|word| !word.is_empty())
        .collect()
}

/// The exit statuses a help lists: the numbers of its `Exit status:` paragraph.
fn exit_statuses(help: &str) -> BTreeSet<&str> {
    help.find("Exit status:")
        .and_then(|start| help[start..].split("\n\n").next())
        .map(|paragraph| {
            words(paragraph)
                .into_iter()
                .filter(|word| word.bytes().all(|b| b.is_ascii_digit()))
                .collect()
        })
        .unwrap_or_default()
}

/// What one `--help` must name.
struct Help {
    program: &'static str,
    command: &'static [&'static str],
    /// Arguments, options and the settings (environment) it reads, as words.
    names: &'static [&'static str],
    /// Its exit statuses, for the operator's commands.
    exits: &'static [&'static str],
    /// It talks to a running server: it takes [`SERVER`], and no secret as a flag.
    client: bool,
}

/// How every command that talks to a server is pointed at it.
const SERVER: [&str; 5] = [
    "--url",
    "PRESENCE_URL",
    "--api-key-file",
    "PRESENCE_API_KEY_FILE",
    "PRESENCE_API_KEY",
];

/// `--help` of every binary and command names its options, the settings it
/// reads (those that may hold a secret included: a Redis URL with its
/// password, an API key, a device secret, a URL with credentials) and, for the
/// operator's commands, its exit statuses, each as a word of its own; it
/// never prints a secret's value from the environment, which clap shows by
/// default, and no command takes the API key or a device secret as a flag.
#[tokio::test]
async fn every_help_names_its_options_settings_and_exit_statuses_and_no_secret() -> Result<()> {
    let dir = temp_dir()?;
    let password = presence_tests::unique("redis-password");
    let api_key = presence_tests::unique("api-key");
    let device_secret = presence_tests::unique("device-secret");
    let url_password = presence_tests::unique("url-password");
    let kafka_password = presence_tests::unique("kafka-password");
    let rotation_secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    let secrets = [
        ("PRESENCE_KAFKA_SASL_PASSWORD", kafka_password.clone()),
        (
            "PRESENCE_REDIS_URL",
            format!("redis://presence:{password}@127.0.0.1:6379/0"),
        ),
        ("PRESENCE_API_KEY", api_key.clone()),
        ("PRESENCE_DEVICE_SECRET", device_secret.clone()),
        ("PRESENCE_ROTATION_SECRET", rotation_secret.to_owned()),
        (
            "PRESENCE_URL",
            format!("http://bench:{url_password}@127.0.0.1:8080"),
        ),
    ];
    let helps = [
        Help {
            program: "presence",
            command: &["serve"],
            names: &[
                "PRESENCE_API_KEY",
                "--max-inventory-bytes",
                "PRESENCE_MAX_INVENTORY_BYTES",
            ],
            exits: &[],
            client: false,
        },
        Help {
            program: "presence",
            command: &["inventory", "upload"],
            names: &["FILE", "--json"],
            exits: &["0", "1"],
            client: true,
        },
        Help {
            program: "presence",
            command: &["inventory", "check"],
            names: &["FILE", "--json"],
            exits: &["0", "1"],
            client: false,
        },
        Help {
            program: "presence",
            command: &["scan"],
            names: &[
                "KIND",
                "TOKEN",
                "--venue",
                "--device",
                "--gate",
                "--gate-name",
                "--os",
                "--scan-time",
                "--channel",
                "--device-secret-file",
                "PRESENCE_DEVICE_SECRET_FILE",
                "PRESENCE_DEVICE_SECRET",
                "NO_COLOR",
                "--json",
            ],
            exits: &["0", "1", "2"],
            client: true,
        },
        Help {
            program: "presence",
            command: &["ticket"],
            names: &["TOKEN", "--venue", "--limit", "--json"],
            exits: &["0", "1"],
            client: true,
        },
        Help {
            program: "presence",
            command: &["device", "init"],
            names: &[
                "--venue",
                "--mac",
                "--gate-name",
                "--gate",
                "--name",
                "--ip",
                "--serial",
                "--model",
                "--json",
            ],
            exits: &["0", "1"],
            client: true,
        },
        Help {
            program: "presence",
            command: &["device", "show"],
            names: &["--venue", "--mac", "--json"],
            exits: &["0", "1"],
            client: true,
        },
        Help {
            program: "presence",
            command: &["audit", "tail"],
            names: &["PRESENCE_DATA_DIR"],
            exits: &[],
            client: false,
        },
        Help {
            program: "presence",
            command: &["backup"],
            names: &[],
            exits: &[],
            client: true,
        },
        Help {
            program: "presence",
            command: &["demo"],
            names: &[],
            exits: &[],
            client: false,
        },
        Help {
            program: "presence",
            command: &["barcode"],
            names: &["PRESENCE_ROTATION_SECRET"],
            exits: &[],
            client: false,
        },
        Help {
            program: "presence",
            command: &["decisions", "tail"],
            names: &[],
            exits: &[],
            client: false,
        },
        Help {
            program: "presence-gateway",
            command: &[],
            names: &[
                "PRESENCE_API_KEY",
                "--max-inventory-bytes",
                "PRESENCE_MAX_INVENTORY_BYTES",
            ],
            exits: &[],
            client: false,
        },
        Help {
            program: "presence-validator",
            command: &[],
            names: &["PRESENCE_REDIS_URL"],
            exits: &[],
            client: false,
        },
        Help {
            program: "presence-registry",
            command: &[],
            names: &["PRESENCE_REDIS_URL"],
            exits: &[],
            client: false,
        },
        Help {
            program: "presence-loadgen",
            command: &[],
            names: &[
                "--tickets",
                "--devices",
                "--gates",
                "--duration",
                "--warmup",
                "--concurrency",
                "--rate",
                "--max-in-flight",
                "--mix",
                "--json",
                "--timeout",
                "--inventory-batch",
                "--threads",
                "--allow-errors",
                "live",
            ],
            exits: &["0", "1", "2"],
            client: true,
        },
    ];
    for help in helps {
        let mut launch = Launch::program(help.program, dir.path());
        for word in help.command {
            launch = launch.arg(word);
        }
        launch = launch.arg("--help");
        for (name, value) in &secrets {
            launch = launch.env(name, value);
        }
        let output = run_to_completion(&launch).await?;
        let text = String::from_utf8_lossy(&output.stdout);
        let what = format!("{} {:?} --help", help.program, help.command);
        ensure!(
            output.status.success(),
            "{what} exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let named = words(&text);
        let server: &[&str] = if help.client { &SERVER } else { &[] };
        for name in help.names.iter().chain(server) {
            ensure!(named.contains(name), "{what} does not name {name}:\n{text}");
        }
        for flag in ["--api-key", "--device-secret"] {
            ensure!(
                !(help.client && named.contains(flag)),
                "{what} takes a secret on the command line ({flag}):\n{text}"
            );
        }
        let exits = exit_statuses(&text);
        ensure!(
            help.exits.iter().copied().collect::<BTreeSet<_>>() == exits || help.exits.is_empty(),
            "{what} lists exit statuses {exits:?}, not {:?}:\n{text}",
            help.exits
        );
        for secret in [
            password.as_str(),
            api_key.as_str(),
            device_secret.as_str(),
            url_password.as_str(),
            kafka_password.as_str(),
            rotation_secret,
        ] {
            ensure!(
                !text.contains(secret),
                "{what} prints a secret from the environment:\n{text}"
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stops_cleanly_on_sigterm() -> Result<()> {
    let app = TestApp::embedded().await?;
    let show = Show::new();
    app.load(&show.records()).await?;
    let status = app.terminate().await?;
    ensure!(status.success(), "exit status after SIGTERM: {status}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_takes_its_settings_from_the_environment() -> Result<()> {
    let dir = temp_dir()?;
    let show = Show::new();
    let token = show.token();
    let inventory = write(
        dir.path(),
        "inventory.ndjson",
        &good_inventory(&show, [&token, "other"]),
    )?;
    let scanner_key = presence_tests::unique("env-scanner");
    let keys = write(
        dir.path(),
        "keys.toml",
        &format!("[[keys]]\nname = \"env\"\nkey = \"{scanner_key}\"\n"),
    )?;
    let admin_key = presence_tests::unique("env-admin");
    let launch = Launch::new(dir.path())
        .arg("serve")
        .env("PRESENCE_LISTEN", "127.0.0.1:0")
        .env("PRESENCE_DATA_DIR", dir.path().join("data"))
        .env("PRESENCE_API_KEY", &admin_key)
        .env("PRESENCE_API_KEYS_FILE", &keys)
        .env("PRESENCE_INVENTORY", &inventory);
    let (_process, url) = PresenceProcess::start(&launch).await?;
    let client = http_client()?;
    // The inventory was applied at start; both keys work.
    let (code, reply) = enter_via(&client, &url, &scanner_key, &show.venue_id, &token).await?;
    ensure!(
        code == 200 && reply["result"]["status"] == "OKAY",
        "HTTP {code} {reply}"
    );
    let (code, reply) = post_json(
        &client,
        &format!("{url}/admin/v1/inventory"),
        &scanner_key,
        &json!({}),
    )
    .await?;
    ensure!(
        code == 403,
        "the file's key is not admin, got HTTP {code} {reply}"
    );
    let response = client
        .post(format!("{url}/admin/v1/inventory"))
        .header("X-Api-Key", &admin_key)
        .body(ndjson(&[show.ticket(&show.token(), &["A:1:1"])]))
        .send()
        .await?;
    ensure!(
        response.status() == 200,
        "the env admin key: HTTP {}",
        response.status()
    );
    ensure!(
        dir.path().join("data").exists(),
        "PRESENCE_DATA_DIR was not used"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_applies_an_inventory_file_at_start() -> Result<()> {
    let dir = temp_dir()?;
    let show = Show::new();
    let (first, group) = (show.token(), show.token());
    let inventory = write(
        dir.path(),
        "inventory.ndjson",
        &good_inventory(&show, [&first, &group]),
    )?;
    let key = presence_tests::unique("admin");
    let launch = serve_with_inventory(dir.path(), &key, &inventory);
    let (_process, url) = PresenceProcess::start(&launch).await?;
    let client = http_client()?;
    let (code, reply) = enter_via(&client, &url, &key, &show.venue_id, &group).await?;
    ensure!(
        code == 200 && reply["result"]["status"] == "OKAY",
        "HTTP {code} {reply}"
    );
    ensure!(
        reply["message"]["tickets"].as_array().map(Vec::len) == Some(2),
        "{reply}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_logs_every_decision_once_with_every_field() -> Result<()> {
    let dir = temp_dir()?;
    let show = Show::new();
    let (first, second) = (show.token(), show.token());
    let inventory = write(
        dir.path(),
        "inventory.ndjson",
        &good_inventory(&show, [&first, &second]),
    )?;
    let log = dir.path().join("decisions.ndjson");
    let key = presence_tests::unique("admin");
    let launch = serve_with_inventory(dir.path(), &key, &inventory)
        .arg("--decisions-log")
        .arg(&log);
    let (_process, url) = PresenceProcess::start(&launch).await?;
    let client = http_client()?;
    let (code, entered) = enter_via(&client, &url, &key, &show.venue_id, &first).await?;
    ensure!(
        code == 200 && entered["result"]["status"] == "OKAY",
        "HTTP {code} {entered}"
    );
    let scan_id = entered["result"]["scanId"].clone();
    let (code, again) = enter_via(&client, &url, &key, &show.venue_id, &first).await?;
    ensure!(
        code == 200 && again["result"]["status"] == "ALREADY_ENTERED",
        "HTTP {code} {again}"
    );

    // The log is written behind the answers: wait for both lines.
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(serde_json::from_str::<Value>)
            .collect::<Result<Vec<_>, _>>()?;
        if lines.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ensure!(lines.len() == 2, "expected two decisions, got {lines:?}");
    let okay = &lines[0];
    ensure!(okay["scanId"] == scan_id, "{okay}");
    ensure!(
        okay["kind"] == "enter" && okay["status"] == "OKAY",
        "{okay}"
    );
    ensure!(
        okay["token"] == first.as_str() && okay["venueId"] == show.venue_id.as_str(),
        "{okay}"
    );
    ensure!(
        okay["gateName"] == "Gate 1" && okay["deviceOs"] == "Printed",
        "{okay}"
    );
    ensure!(okay["tickets"][0]["place"] == "A:1:1", "{okay}");
    ensure!(
        okay["tickets"][0]["eventId"] == show.event_id.as_str(),
        "{okay}"
    );
    for field in ["gateId", "deviceId", "scanTime", "decidedAt"] {
        ensure!(
            okay[field].as_u64().is_some_and(|n| n > 0),
            "{field} in {okay}"
        );
    }
    ensure!(lines[1]["status"] == "ALREADY_ENTERED", "{}", lines[1]);
    ensure!(
        !std::fs::read_to_string(&log)?.contains(&key),
        "the key leaked into the log"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_to_start_with_a_broken_keys_file() -> Result<()> {
    let dir = temp_dir()?;
    let keys = write(dir.path(), "keys.toml", "[[keys]\nname = \"broken\n")?;
    let launch = Launch::new(dir.path())
        .arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--api-keys-file")
        .arg(&keys);
    let mut process = PresenceProcess::spawn(&launch)?;
    let started = process.wait_for_url().await;
    ensure!(started.is_err(), "presence served with a broken keys file");
    let status = process.try_exit()?;
    ensure!(
        status.is_some_and(|s| !s.success()),
        "expected a failed exit, got {status:?}"
    );
    ensure!(
        process.stderr().contains("keys.toml"),
        "the error does not name the file:\n{}",
        process.stderr()
    );
    Ok(())
}

/// Runs `script` with bash in `cwd`, as a reader who pasted it would, with
/// nothing of the test's environment but `PATH`; its exit code, stdout and
/// stderr.
async fn paste(cwd: &Path, script: &str) -> Result<(Option<i32>, String, String)> {
    let mut command = tokio::process::Command::new("bash");
    command
        .arg("-c")
        .arg(script)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .map_err(|_| anyhow!("bash -c {script:?} ran for a minute"))??;
    Ok((
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// What `presence demo` prints works as pasted: the `export` line points the
/// command line at the demo (the key in the environment, printed on its own
/// too), each `presence` command then exits 0 (the enter green, and red with
/// exit status 2 when pasted again), and each curl command of the raw API is
/// answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_prints_a_key_and_commands_that_work() -> Result<()> {
    let dir = temp_dir()?;
    let launch = Launch::new(dir.path())
        .arg("demo")
        .arg("--listen")
        .arg("127.0.0.1:0");
    let mut process = PresenceProcess::spawn(&launch)?;
    let url = process.wait_for_url().await?;
    process
        .wait_for_stdout(Duration::from_secs(10), |stdout| {
            stdout.contains("API description:").then_some(())
        })
        .await?;
    let stdout = process.stdout();
    ensure!(
        served_url(&stdout).as_deref() == Some(url.as_str()),
        "{stdout}"
    );
    let key = stdout
        .lines()
        .find_map(|line| line.strip_prefix("API key: "))
        .ok_or_else(|| anyhow!("no API key printed:\n{stdout}"))?;
    let export = stdout
        .lines()
        .find(|line| line.starts_with("export "))
        .ok_or_else(|| anyhow!("no export line:\n{stdout}"))?;
    ensure!(
        export.contains(&format!("PRESENCE_URL={url} PRESENCE_API_KEY={key}")),
        "{export}"
    );
    let commands: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with("presence "))
        .collect();
    let enter = commands
        .iter()
        .find(|line| line.starts_with("presence scan enter DEMO-0001 "))
        .ok_or_else(|| anyhow!("no enter command:\n{stdout}"))?;
    ensure!(
        [
            "presence scan exit ",
            "presence scan validate ",
            "presence ticket ",
            "presence device init ",
            "presence device show "
        ]
        .iter()
        .all(|start| commands.iter().any(|line| line.starts_with(start))),
        "a command is missing:\n{stdout}"
    );
    for command in &commands {
        let (code, out, err) = paste(dir.path(), &format!("{export}\n{command}")).await?;
        ensure!(code == Some(0), "{command}: exit {code:?}\n{out}\n{err}");
        if command == enter {
            ensure!(out.starts_with("GREEN OKAY"), "{command}: {out}");
            // The server keeps state like any other: pasted again, already in.
            let (code, again, _) = paste(dir.path(), &format!("{export}\n{command}")).await?;
            ensure!(
                code == Some(2) && again.starts_with("RED ALREADY_ENTERED"),
                "{command} again: {code:?} {again}"
            );
        }
    }
    // The raw API's commands answer too.
    let client = http_client()?;
    let curls = curl_commands(&stdout)?;
    ensure!(!curls.is_empty(), "no curl command:\n{stdout}");
    for command in &curls {
        ensure!(
            command.url.starts_with(&url),
            "{} is not on {url}",
            command.url
        );
        ensure!(api_key_of(command).as_deref() == Some(key), "{command:?}");
        let (code, reply) = send(&client, command).await?;
        ensure!(
            (200..300).contains(&code) && reply["result"]["status"].is_string(),
            "{} {}: HTTP {code} {reply}",
            command.method,
            command.url
        );
    }
    let status = process.terminate().await?;
    ensure!(status.success(), "demo exit status after SIGTERM: {status}");
    Ok(())
}

/// The repository's root, where README.md's commands run.
fn repository_root() -> Result<&'static Path> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow!("the tests crate has no parent folder"))
}

/// The fenced block of `markdown` that holds `text`, without its fence's
/// language line.
fn block_with<'a>(markdown: &'a str, text: &str) -> Result<&'a str> {
    markdown
        .split("```")
        .find(|block| block.contains(text))
        .map(|block| block.split_once('\n').map_or(block, |(_, code)| code))
        .ok_or_else(|| anyhow!("README.md has no block with {text:?}"))
}

/// The README's inventory, `examples/tonight.ndjson`, passes `presence inventory
/// check` and is what `presence serve --inventory` loads; the README's command
/// line block (upload it, configure a device, enter a ticket, look it up), run
/// as written against such a server, succeeds command by command, and its curl
/// example of the scan is then answered 200 OKAY (the same scan, answered as
/// the first time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_examples_work_with_examples_tonight_ndjson() -> Result<()> {
    let root = repository_root()?;
    let inventory = root.join("examples/tonight.ndjson");
    let readme = std::fs::read_to_string(root.join("README.md"))?;
    let dir = temp_dir()?;
    let (code, _, stderr) = check(dir.path(), &inventory.to_string_lossy(), &[]).await?;
    ensure!(
        code == Some(0),
        "presence inventory check examples/tonight.ndjson: {stderr}"
    );
    let key = "dev-key";
    let launch = serve_with_inventory(dir.path(), key, &inventory.to_string_lossy());
    let (_process, url) = PresenceProcess::start(&launch).await?;
    let presence = presence_tests::process::presence_bin()?;
    let bin_dir = presence
        .parent()
        .ok_or_else(|| anyhow!("{} has no folder", presence.display()))?;
    let block = block_with(
        &readme,
        "presence inventory upload examples/tonight.ndjson\npresence device init",
    )?;
    let script = format!(
        "set -e\nexport PATH=\"{}:$PATH\" PRESENCE_URL={url}\n{block}",
        bin_dir.display()
    );
    let (code, stdout, stderr) = paste(root, &script).await?;
    ensure!(
        code == Some(0) && stdout.contains("GREEN OKAY"),
        "the README's command line block: exit {code:?}\n{stdout}\n{stderr}"
    );
    let block = block_with(&readme, "$PRESENCE_URL/presence/v1/ticket/enter")?
        .replace("$PRESENCE_URL", &url);
    let commands = curl_commands(&block)?;
    ensure!(!commands.is_empty(), "no curl command in {block}");
    let client = http_client()?;
    for command in commands {
        let (code, reply) = send(&client, &command).await?;
        ensure!(
            code == 200 && reply["result"]["status"] == "OKAY",
            "{} {}: HTTP {code} {reply}",
            command.method,
            command.url
        );
    }
    Ok(())
}

/// The API key a printed command sends, in its query or its `X-Api-Key` header.
fn api_key_of(command: &CurlCommand) -> Option<String> {
    let from_header = command
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("x-api-key"))
        .map(|(_, value)| value.clone());
    let from_query = reqwest::Url::parse(&command.url).ok().and_then(|url| {
        url.query_pairs()
            .find(|(name, _)| name == "apikey")
            .map(|(_, value)| value.into_owned())
    });
    from_header.or(from_query)
}

/// Sends a printed curl command as curl would.
async fn send(client: &reqwest::Client, command: &CurlCommand) -> Result<(u16, Value)> {
    let method = Method::from_bytes(command.method.as_bytes())?;
    let mut request = client.request(method, &command.url);
    for (name, value) in &command.headers {
        request = request.header(name, value);
    }
    if let Some(body) = &command.body {
        request = request.body(body.clone());
    }
    let response = request.send().await?;
    let code = response.status().as_u16();
    let text = response.text().await?;
    Ok((
        code,
        serde_json::from_str(&text).map_err(|e| anyhow!("{e}: {text}"))?,
    ))
}

/// One enter as the load of the backup test sent it, and when it was answered.
struct Answered {
    body: Value,
    reply: Value,
    at: std::time::Instant,
}

/// Enters every token once through `url`, in order; each answer with its time.
async fn enter_all(
    url: String,
    key: String,
    device: Value,
    tokens: Vec<String>,
) -> Result<Vec<Answered>> {
    let client = http_client()?;
    let mut answered = Vec::with_capacity(tokens.len());
    for token in tokens {
        let body = enter_body(&device, &token);
        let (code, reply) = post_json(
            &client,
            &format!("{url}/presence/v1/ticket/enter"),
            &key,
            &body,
        )
        .await?;
        ensure!(
            code == 200 && reply["result"]["status"] == "OKAY",
            "HTTP {code} {reply}"
        );
        answered.push(Answered {
            body,
            reply,
            at: std::time::Instant::now(),
        });
    }
    Ok(answered)
}

/// `presence backup` while two scanners keep entering tickets, then `presence
/// restore` and `presence serve` on the copy: every scan answered before the
/// backup began is answered as before on a retry (the same decision and scan
/// id), and its ticket is still inside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_serving_restores_every_answered_scan() -> Result<()> {
    let dir = temp_dir()?;
    let show = Show::new();
    let tokens: Vec<String> = (0..600).map(|_| show.token()).collect();
    let mut records = vec![show.venue(), show.event(), show.gate("Gate 1")];
    records.extend(tokens.iter().map(|token| show.ticket(token, &["A:1:1"])));
    let inventory = write(dir.path(), "inventory.ndjson", &ndjson(&records))?;
    let key = presence_tests::unique("admin");
    let (mut server, url) =
        PresenceProcess::start(&serve_with_inventory(dir.path(), &key, &inventory)).await?;
    let client = http_client()?;
    let device = configure_device(&client, &url, &key, &show.venue_id).await?;

    let (first, second) = tokens.split_at(tokens.len() / 2);
    let scanners = [first, second].map(|half| {
        tokio::spawn(enter_all(
            url.clone(),
            key.clone(),
            device.clone(),
            half.to_vec(),
        ))
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let backup = dir.path().join("tonight.backup");
    let backup_began = std::time::Instant::now();
    let output = run_to_completion(
        &Launch::new(dir.path())
            .arg("backup")
            .arg("--url")
            .arg(&url)
            .arg("--to")
            .arg(&backup)
            .env("PRESENCE_API_KEY", &key),
    )
    .await?;
    let backup_ended = std::time::Instant::now();
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success() && stdout.contains("backup written to"),
        "backup failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The copy holds the store's secrets: its owner's only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&backup)?.permissions().mode() & 0o777;
        ensure!(mode == 0o600, "the backup's mode is {mode:o}, not 600");
    }
    let mut answered = Vec::new();
    for scanner in scanners {
        answered.extend(scanner.await??);
    }
    let before: Vec<&Answered> = answered.iter().filter(|a| a.at < backup_began).collect();
    let during = answered
        .iter()
        .filter(|a| a.at >= backup_began && a.at <= backup_ended)
        .count();
    println!(
        "{stdout}{} scans answered before the backup began, {during} while it ran, {} after",
        before.len(),
        answered.len() - before.len() - during
    );
    ensure!(
        !before.is_empty(),
        "no scan was answered before the backup began"
    );

    // Restoring over the store of a running server is refused.
    let in_use = run_to_completion(
        &Launch::new(dir.path())
            .arg("restore")
            .arg("--from")
            .arg(&backup)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--replace"),
    )
    .await?;
    ensure!(!in_use.status.success(), "restored over a store in use");
    server.terminate().await?;

    let restored = dir.path().join("restored");
    let output = run_to_completion(
        &Launch::new(dir.path())
            .arg("restore")
            .arg("--from")
            .arg(&backup)
            .arg("--data-dir")
            .arg(&restored),
    )
    .await?;
    ensure!(
        output.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (_restored_server, url) = PresenceProcess::start(
        &Launch::new(dir.path())
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&restored)
            .arg("--api-key")
            .arg(&key),
    )
    .await?;
    let enter = format!("{url}/presence/v1/ticket/enter");
    for scan in before {
        let (code, retry) = post_json(&client, &enter, &key, &scan.body).await?;
        ensure!(
            code == 200 && retry["result"] == scan.reply["result"],
            "a retry after the restore was answered HTTP {code} {retry}, first {}",
            scan.reply
        );
        let mut again = scan.body.clone();
        again["scanTime"] = json!(next_scan_time());
        let (_, later) = post_json(&client, &enter, &key, &again).await?;
        ensure!(later["result"]["status"] == "ALREADY_ENTERED", "{later}");
    }
    Ok(())
}
