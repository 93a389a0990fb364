//! Hostile clients against the real `presence serve`: connections that send
//! nothing, idle or trickle a body must not keep an honest scanner from its
//! answer, and one API key's flood is answered 429 while another key is served.
//! The limits are set low through the environment, so each test takes seconds.
//! Embedded throughout; the flood also against the distributed gateway.

use anyhow::{Context, Result, bail, ensure};
use presence_tests::stack::DistributedOptions;
use presence_tests::{Auth, Reply, Scanner, Show, TestApp, next_scan_time};
use reqwest::Method;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_CONNECTIONS: usize = 8;
/// Generous bounds for a loaded 2-core machine; the point is "seconds, not never".
const SLACK: Duration = Duration::from_millis(1500);
/// Longer than any wait the server may impose here.
const SILENCE: Duration = Duration::from_secs(10);

/// A venue with an event on now and one device at "Gate 1".
async fn setup(app: &TestApp) -> Result<(Show, Scanner)> {
    let show = Show::new();
    app.load(&show.records()).await?;
    let scanner = app.scanner(&show.venue_id, "Gate 1").await?;
    Ok((show, scanner))
}

/// Where the app listens, for raw connections.
fn address(app: &TestApp) -> Result<SocketAddr> {
    let url = app.base_url();
    url.trim_start_matches("http://")
        .parse()
        .with_context(|| format!("not an http://IP:PORT URL: {url}"))
}

/// Reads one HTTP/1.1 response: its head and a body of its Content-Length. Fails
/// when the server falls silent for [`SILENCE`].
async fn read_response(stream: &mut (impl AsyncRead + Unpin)) -> Result<String> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if bytes.len() >= end + 4 + length {
                return Ok(text);
            }
        }
        let read = tokio::time::timeout(SILENCE, stream.read(&mut chunk))
            .await
            .map_err(|_| anyhow::anyhow!("no whole response within {SILENCE:?}: {text:?}"))??;
        if read == 0 {
            bail!("closed before a whole response: {text:?}");
        }
        bytes.extend_from_slice(&chunk[..read]);
    }
}

/// Waits, at most `limit`, for the server to close `stream`; when it did.
async fn server_closes(stream: &mut (impl AsyncRead + Unpin), limit: Duration) -> Result<Instant> {
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut chunk)).await {
            Err(_) => bail!("the server kept the connection open for {limit:?}"),
            Ok(Ok(0) | Err(_)) => return Ok(Instant::now()),
            Ok(Ok(_)) => {}
        }
    }
}

/// The value of a counter's sample on the metrics page, if present.
fn sample(metrics: &str, name_and_labels: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
}

/// A connection that made one keep-alive request and now idles; when it went quiet.
async fn idle_connection(addr: SocketAddr) -> Result<(TcpStream, Instant)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: presence\r\n\r\n")
        .await?;
    let answer = read_response(&mut stream).await?;
    ensure!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    Ok((stream, Instant::now()))
}

async fn slow_and_silent_clients_do_not_keep_a_scanner_from_its_answer(
    app: &TestApp,
) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    let token = show.token();
    app.load(&[show.ticket(&token, &["A:1:1"])]).await?;
    let addr = address(app)?;

    // More connections than the limit: some idle after a request, some never
    // send a byte (those beyond the limit wait in the listen backlog).
    let mut quiet = Vec::new();
    for _ in 0..MAX_CONNECTIONS / 2 {
        quiet.push(idle_connection(addr).await?);
    }
    for _ in 0..MAX_CONNECTIONS / 2 + 3 {
        quiet.push((TcpStream::connect(addr).await?, Instant::now()));
    }
    // And one sends a scan body a byte every 100 ms: 300 bytes would take 30 s.
    let trickler = TcpStream::connect(addr).await?;
    let trickle_started = Instant::now();
    let (mut trickle_reader, mut trickle_writer) = trickler.into_split();
    let head = format!(
        "POST /presence/v1/ticket/enter HTTP/1.1\r\nHost: presence\r\nX-Api-Key: {}\r\n\
         Content-Length: 300\r\n\r\n",
        app.admin_key()
    );
    trickle_writer.write_all(head.as_bytes()).await?;
    let trickle = tokio::spawn(async move {
        for _ in 0..300 {
            if trickle_writer.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    // An honest scanner on a connection of its own: every slot may be taken, but
    // a slot held by a quiet client frees within the header timeout.
    let honest = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?;
    let sent = Instant::now();
    let answer = honest
        .post(app.url("/presence/v1/ticket/enter"))
        .header("X-Api-Key", app.admin_key())
        .json(&scanner.body(&token, next_scan_time()))
        .send()
        .await?;
    let took = sent.elapsed();
    let code = answer.status();
    let text = answer.text().await?;
    ensure!(
        code == 200 && text.contains("\"OKAY\""),
        "HTTP {code} {text}"
    );
    ensure!(
        took < HEADER_TIMEOUT + SLACK,
        "the honest scan took {took:?} behind the quiet connections"
    );

    // The trickled body is cut off by the request timeout: 503 and closed.
    let cut = read_response(&mut trickle_reader).await?;
    let trickled = trickle_started.elapsed();
    ensure!(cut.starts_with("HTTP/1.1 503"), "{cut}");
    ensure!(cut.contains("\"UNAVAILABLE\""), "{cut}");
    ensure!(cut.to_ascii_lowercase().contains("retry-after:"), "{cut}");
    // It may have waited in the backlog for a slot first.
    ensure!(
        trickled >= REQUEST_TIMEOUT && trickled < HEADER_TIMEOUT + REQUEST_TIMEOUT + SLACK,
        "the trickled request ended after {trickled:?}"
    );
    server_closes(&mut trickle_reader, SLACK).await?;
    trickle.abort();

    // Every quiet connection is closed, none before the header timeout.
    for (index, (stream, since)) in quiet.iter_mut().enumerate() {
        let closed = server_closes(stream, 2 * HEADER_TIMEOUT + SLACK).await?;
        let quiet_for = closed - *since;
        ensure!(
            quiet_for >= HEADER_TIMEOUT,
            "quiet connection {index} closed after {quiet_for:?}"
        );
    }
    eprintln!(
        "honest scan answered in {took:?}; trickled body cut after {trickled:?}; \
         {} quiet connections closed",
        quiet.len()
    );
    let metrics = app.get("/metrics", Auth::None).await?.text;
    let timeouts = sample(&metrics, "presence_http_header_timeouts_total").unwrap_or_default();
    ensure!(
        timeouts >= u64::try_from(quiet.len())?,
        "{timeouts} header timeouts counted for {} quiet connections",
        quiet.len()
    );
    Ok(())
}

/// A validate of `token` with `key`; any answer.
async fn validate(app: &TestApp, key: &str, scanner: &Scanner, token: &str) -> Result<Reply> {
    let request = app
        .request(
            Method::POST,
            "/presence/v1/ticket/validate",
            Auth::Header(key),
        )
        .json(&scanner.body(token, next_scan_time()));
    app.send(request).await
}

async fn a_flooding_key_is_refused_while_another_is_served(app: &TestApp) -> Result<()> {
    // Every key: 10 at once, then 5 a second (the environment of the fixture).
    let (show, scanner) = setup(app).await?;
    let token = show.token();
    app.load(&[show.ticket(&token, &["A:1:1"])]).await?;
    let keys = app.keys().clone();

    let flooded = Instant::now();
    let mut flood = JoinSet::new();
    for _ in 0..60 {
        let (app, key, scanner, token) = (
            app.clone(),
            keys.scanner.clone(),
            scanner.clone(),
            token.clone(),
        );
        flood.spawn(async move { validate(&app, &key, &scanner, &token).await });
    }
    // Meanwhile another key scans at four a second, within its own budget.
    let steady = {
        let (app, key, scanner, token) = (
            app.clone(),
            keys.ops.clone(),
            scanner.clone(),
            token.clone(),
        );
        tokio::spawn(async move {
            let mut replies = Vec::new();
            for _ in 0..8 {
                replies.push(validate(&app, &key, &scanner, &token).await?);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Ok::<_, anyhow::Error>(replies)
        })
    };
    let (mut admitted, mut refused, mut retry_after) = (0u32, 0u32, 0u64);
    while let Some(joined) = flood.join_next().await {
        let reply = joined??;
        match reply.code {
            200 => {
                reply.expect(200, "INTERNAL_SCAN")?;
                admitted += 1;
            }
            429 => {
                reply.expect(429, "RATE_LIMITED")?;
                ensure!(
                    reply.json["message"]["tickets"] == serde_json::json!([]),
                    "{}",
                    reply.text
                );
                let seconds: u64 = reply
                    .headers
                    .get("retry-after")
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.parse().ok())
                    .with_context(|| {
                        format!(
                            "429 without whole seconds in Retry-After: {:?}",
                            reply.headers
                        )
                    })?;
                ensure!(seconds >= 1, "Retry-After: {seconds}");
                retry_after = retry_after.max(seconds);
                refused += 1;
            }
            code => bail!("the flood got HTTP {code}: {}", reply.text),
        }
    }
    // The burst, and five more a second while the flood lasted.
    let refills = u32::try_from(flooded.elapsed().as_secs()).unwrap_or(u32::MAX);
    ensure!(
        (10..=10 + 5 * (refills + 1)).contains(&admitted) && refused > 0,
        "{admitted} admitted, {refused} refused"
    );
    eprintln!(
        "flood: {admitted} admitted, {refused} refused in {:?}, Retry-After {retry_after} s",
        flooded.elapsed()
    );
    for reply in steady.await?? {
        reply.expect(200, "INTERNAL_SCAN")?;
    }

    // After the wait it was told, the flooding key is served again.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    validate(app, &keys.scanner, &scanner, &token)
        .await?
        .expect(200, "INTERNAL_SCAN")?;

    let metrics = app.get("/metrics", Auth::None).await?.text;
    let counted = sample(&metrics, "presence_rate_limited_total{key=\"scanner\"}");
    ensure!(
        counted == Some(u64::from(refused)),
        "counted {counted:?} of {refused}: {metrics}"
    );
    ensure!(!metrics.contains("key=\"ops\""), "{metrics}");
    let logs = app.logs();
    ensure!(!logs.contains(&keys.scanner), "the key is in the logs");
    Ok(())
}

/// Scanners that abandon their scans: how many, and the tickets they enter.
const ABANDONED: usize = 2_000;

/// Enters every ticket over its own connection, closed 0–4 ms after the
/// request is sent, without reading the answer; 64 connections at a time.
async fn abandon_enters(addr: SocketAddr, key: &str, bodies: &[serde_json::Value]) -> Result<()> {
    let mut scanners = JoinSet::new();
    for (i, body) in bodies.iter().enumerate() {
        if scanners.len() >= 64
            && let Some(done) = scanners.join_next().await
        {
            done??;
        }
        let body = body.to_string();
        let request = format!(
            "POST /presence/v1/ticket/enter HTTP/1.1\r\nHost: presence\r\nX-Api-Key: {key}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let wait = Duration::from_micros(u64::try_from(i % 5)? * 1_000);
        scanners.spawn(async move {
            let mut stream = TcpStream::connect(addr).await?;
            stream.write_all(request.as_bytes()).await?;
            tokio::time::sleep(wait).await;
            drop(stream);
            anyhow::Ok(())
        });
    }
    while let Some(done) = scanners.join_next().await {
        done??;
    }
    Ok(())
}

/// The decisions `presence serve --decisions-log` wrote, once `expected` lines
/// are there (they are written behind the answers), or what is there after 20 s.
async fn decisions_logged(
    path: &std::path::Path,
    expected: usize,
) -> Result<Vec<serde_json::Value>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
        if lines.len() >= expected || Instant::now() > deadline {
            return Ok(lines);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every ticket entered once: one OKAY enter per token on the decisions log and
/// nothing else, and the venue's stats count exactly those entries.
async fn every_entry_logged_and_counted_once(
    app: &TestApp,
    log: &std::path::Path,
    show: &Show,
    tokens: &[String],
) -> Result<()> {
    let lines = decisions_logged(log, tokens.len()).await?;
    let mut okay_per_token = std::collections::HashMap::new();
    for line in &lines {
        ensure!(
            line["kind"] == "enter" && line["status"] == "OKAY",
            "an unexpected decision was logged: {line}"
        );
        *okay_per_token
            .entry(line["token"].as_str().unwrap_or_default().to_owned())
            .or_insert(0) += 1;
    }
    let missing = tokens
        .iter()
        .filter(|token| !okay_per_token.contains_key(token.as_str()))
        .count();
    let twice = okay_per_token.values().filter(|n| **n > 1).count();
    ensure!(
        missing == 0 && twice == 0 && lines.len() == tokens.len(),
        "{} tickets, {} lines logged: {missing} entries missing, {twice} logged twice",
        tokens.len(),
        lines.len()
    );
    let path = format!("/presence/v1/venues/{}/stats", show.venue_id);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = app.get(&path, Auth::Header(app.admin_key())).await?;
        stats.expect(200, "OKAY")?;
        let entries = stats.json["message"]["totals"]["entries"].as_u64();
        if entries == Some(u64::try_from(tokens.len())?) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the stats count {entries:?} entries of {}",
            tokens.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A venue with a scanner and `ABANDONED` fresh tickets, and their enter bodies.
async fn many_tickets(app: &TestApp) -> Result<(Show, Vec<String>, Vec<serde_json::Value>)> {
    let (show, scanner) = setup(app).await?;
    let tokens: Vec<String> = (0..ABANDONED).map(|_| show.token()).collect();
    let tickets: Vec<_> = tokens.iter().map(|t| show.ticket(t, &["A:1:1"])).collect();
    app.load(&tickets).await?;
    let scan_time = next_scan_time();
    let bodies = tokens.iter().map(|t| scanner.body(t, scan_time)).collect();
    Ok((show, tokens, bodies))
}

/// Scanners that close their connection mid-scan: hyper drops the request, but
/// a scan that reached the store is still published and counted, once. Their
/// retries (the same scan key) settle the tickets whose request never arrived.
async fn abandoned_scans_are_logged_and_counted_once(
    app: &TestApp,
    log: &std::path::Path,
) -> Result<()> {
    let (show, tokens, bodies) = many_tickets(app).await?;
    abandon_enters(address(app)?, app.admin_key(), &bodies).await?;
    for body in &bodies {
        app.scan(presence_tests::ScanKind::Enter, body)
            .await?
            .expect(200, "OKAY")?;
    }
    every_entry_logged_and_counted_once(app, log, &show, &tokens).await
}

/// Runs `test` against `presence serve` with `env`, printing its logs on failure.
async fn embedded<F>(env: &[(&str, &str)], test: F) -> Result<()>
where
    F: AsyncFnOnce(&TestApp) -> Result<()>,
{
    run(TestApp::embedded_with(env).await?, test).await
}

/// Runs `test` against `app`, printing its logs on failure.
async fn run<F>(app: TestApp, test: F) -> Result<()>
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
async fn embedded_slow_and_silent_clients() -> Result<()> {
    let header = HEADER_TIMEOUT.as_millis().to_string();
    let request = REQUEST_TIMEOUT.as_millis().to_string();
    let limit = MAX_CONNECTIONS.to_string();
    embedded(
        &[
            ("PRESENCE_HEADER_TIMEOUT_MS", &header),
            ("PRESENCE_REQUEST_TIMEOUT_MS", &request),
            ("PRESENCE_MAX_CONNECTIONS", &limit),
        ],
        slow_and_silent_clients_do_not_keep_a_scanner_from_its_answer,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_flooding_key() -> Result<()> {
    embedded(
        &[("PRESENCE_KEY_RATE", "5"), ("PRESENCE_KEY_BURST", "10")],
        a_flooding_key_is_refused_while_another_is_served,
    )
    .await
}

/// The limits live in the gateway library, so one distributed case shows that
/// `presence-gateway` takes them from its environment too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_flooding_key() -> Result<()> {
    let options = DistributedOptions {
        gateway_env: [("PRESENCE_KEY_RATE", "5"), ("PRESENCE_KEY_BURST", "10")]
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .to_vec(),
        ..DistributedOptions::default()
    };
    run(
        TestApp::distributed_with(options).await?,
        a_flooding_key_is_refused_while_another_is_served,
    )
    .await
}

/// Scanners that abandon their scans, against `presence serve --decisions-log`.
/// (The decision deadline drops a scan the same way; the embedded transport's
/// own tests cover it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_abandoned_scans() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("decisions.ndjson");
    let log_setting = log.to_str().context("a UTF-8 temporary path")?;
    embedded(&[("PRESENCE_DECISIONS_LOG", log_setting)], async |app| {
        abandoned_scans_are_logged_and_counted_once(app, &log).await
    })
    .await
}
