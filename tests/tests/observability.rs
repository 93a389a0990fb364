#![allow(clippy::unwrap_used, clippy::expect_used)]
//! What operators see of a scan in distributed mode: one trace across the
//! gateway and the validator (spans exported by OTLP to a test receiver), the
//! `/metrics` page of every service moving as scans happen, and JSON log lines
//! from every service, whose scan spans carry the scan's fields but neither the
//! token nor the key. And what each service shows of the broker it reaches.

use anyhow::{Context, Result, ensure};
use presence_tests::otlp::{OtlpReceiver, ReceivedSpan};
use presence_tests::prometheus::{self, Sample, sum};
use presence_tests::scans::with_app;
use presence_tests::stack::DistributedOptions;
use presence_tests::{ScanKind, Show, TestApp, next_scan_time};
use serde_json::Value;
use std::time::{Duration, Instant};

/// How long exported spans and the consumer's statistics may take to arrive.
const ARRIVAL: Duration = Duration::from_secs(15);
/// How long the services' broker figures may take to follow the broker: the
/// clients' statistics come every 5 s, and a reconnect takes up to a second.
const BROKER_FIGURE_FOLLOWS: Duration = Duration::from_secs(20);
/// What the `PresenceKafkaUnreachableFromPods` alert reads.
const BROKERS_UP: &str = "presence_kafka_client_brokers_up";

async fn scrape(client: &reqwest::Client, url: &str) -> Result<Vec<Sample>> {
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    prometheus::parse(&text).with_context(|| format!("{url}/metrics"))
}

/// The `/metrics` of the gateway, then of the registry and each validator.
async fn scrape_all(app: &TestApp) -> Result<Vec<(String, Vec<Sample>)>> {
    let client = reqwest::Client::new();
    let mut pages = vec![(
        "presence-gateway".to_owned(),
        scrape(&client, &app.base_url()).await?,
    )];
    for (program, url) in app.service_ops_urls() {
        let samples = scrape(&client, &url)
            .await
            .with_context(|| format!("{program}'s /metrics"))?;
        pages.push((program, samples));
    }
    Ok(pages)
}

fn page<'a>(pages: &'a [(String, Vec<Sample>)], program: &str) -> &'a [Sample] {
    pages
        .iter()
        .find(|(name, _)| name == program)
        .map(|(_, samples)| samples.as_slice())
        .unwrap_or_else(|| panic!("no /metrics of {program}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_scan_is_one_trace_moves_every_metrics_page_and_logs_json() -> Result<()> {
    let receiver = OtlpReceiver::start().await?;
    let pairs = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let app = TestApp::distributed_with(DistributedOptions {
        env: pairs(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
            // Spans leave every 100 ms rather than every 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("PRESENCE_LOG_FORMAT", "json"),
        ]),
        ..DistributedOptions::default()
    })
    .await?;
    let outcome = check(&app, &receiver).await;
    if outcome.is_err() {
        app.print_logs();
    }
    outcome
}

async fn check(app: &TestApp, receiver: &OtlpReceiver) -> Result<()> {
    let show = Show::new();
    let token = show.token();
    let mut records = show.records();
    records.push(show.gate("North"));
    records.push(show.ticket(&token, &["A-1"]));
    app.load(&records).await?;
    let scanner = app.scanner(&show.venue_id, "North").await?;
    let before = scrape_all(app).await?;

    let reply = app
        .scan(ScanKind::Enter, &scanner.body(&token, next_scan_time()))
        .await?;
    reply.expect(200, "OKAY")?;
    let scan_id = reply.json["result"]["scanId"]
        .as_str()
        .context("no scanId")?
        .to_owned();

    // (a) One trace: the gateway's request span, its Kafka round trip, the
    // validator's record and its Redis calls.
    let request = receiver
        .wait_for(ARRIVAL, |spans| {
            spans
                .iter()
                .find(|s| {
                    s.service == "presence-gateway"
                        && s.name == "request"
                        && s.attribute("scan_id") == Some(scan_id.as_str())
                })
                .cloned()
        })
        .await?;
    let in_trace = |spans: &[ReceivedSpan], service: &str, name: &str| {
        spans
            .iter()
            .find(|s| s.service == service && s.name == name && s.trace_id == request.trace_id)
            .cloned()
    };
    let record = receiver
        .wait_for(ARRIVAL, |spans| {
            in_trace(spans, "presence-validator", "record")
        })
        .await?;
    let redis = receiver
        .wait_for(ARRIVAL, |spans| {
            in_trace(spans, "presence-validator", "redis")
        })
        .await?;
    let round_trip = in_trace(&receiver.spans(), "presence-gateway", "kafka_request")
        .context("no kafka_request span in the scan's trace")?;
    ensure!(
        round_trip.parent_span_id == request.span_id,
        "the round trip hangs under the request: {round_trip:?}"
    );
    ensure!(
        record.parent_span_id == round_trip.span_id,
        "the validator's record continues the gateway's round trip: {record:?}"
    );
    ensure!(!redis.parent_span_id.is_empty(), "{redis:?}");
    for (field, value) in [
        ("kind", "enter"),
        ("venue", show.venue_id.as_str()),
        ("decision", "OKAY"),
    ] {
        ensure!(
            request.attribute(field) == Some(value),
            "{field} of {request:?}"
        );
    }
    ensure!(
        request.attribute("device") == Some(scanner.device_id.to_string().as_str())
            && request.attribute("gate") == Some(scanner.gate_id.to_string().as_str()),
        "{request:?}"
    );

    // (b) Every page parses, and its counters moved with the scan.
    let after = scrape_all(app).await?;
    let moved = |program: &str, name: &str, labels: &[(&str, &str)]| {
        sum(page(&after, program), name, labels) - sum(page(&before, program), name, labels)
    };
    let enter_okay = [("kind", "enter"), ("status", "OKAY")];
    ensure!(moved("presence-gateway", "presence_scans_total", &enter_okay) == 1.0);
    ensure!(
        moved(
            "presence-gateway",
            "presence_kafka_request_duration_seconds_count",
            &[]
        ) >= 1.0
    );
    let venue = [
        ("kind", "enter"),
        ("status", "OKAY"),
        ("venue", show.venue_id.as_str()),
    ];
    ensure!(moved("presence-validator", "presence_decisions_total", &venue) == 1.0);
    ensure!(
        moved(
            "presence-validator",
            "presence_redis_call_duration_seconds_count",
            &[("call", "commit")]
        ) >= 1.0
    );
    ensure!(
        moved(
            "presence-validator",
            "presence_kafka_records_handled_total",
            &[("outcome", "done")]
        ) >= 1.0
    );
    let registry = page(&after, "presence-registry");
    ensure!(
        sum(
            registry,
            "presence_kafka_records_handled_total",
            &[("outcome", "done")]
        ) >= 1.0,
        "the registry handled the device init"
    );
    // Lag, and what each client asked of the broker, come with the clients'
    // statistics, every few seconds.
    let client = reqwest::Client::new();
    let validator_url = app
        .service_ops_urls()
        .into_iter()
        .find(|(program, _)| program == "presence-validator")
        .map(|(_, url)| url)
        .context("no validator")?;
    let deadline = std::time::Instant::now() + ARRIVAL;
    loop {
        let samples = scrape(&client, &validator_url).await?;
        let lag = samples
            .iter()
            .any(|s| s.name == "presence_kafka_consumer_lag" && s.labels.contains_key("partition"));
        let fetched_scans = samples.iter().any(|s| {
            s.name == "presence_kafka_client_requests_total"
                && s.labels.get("request").is_some_and(|r| r == "Fetch")
                && s.labels
                    .get("client")
                    .is_some_and(|c| c.starts_with("consumer:") && c.ends_with("scans"))
                && s.value >= 1.0
        });
        // The decision and the answer.
        let produced = sum(
            &samples,
            "presence_kafka_client_records_total",
            &[("client", "producer"), ("direction", "produced")],
        ) >= 2.0;
        if lag && fetched_scans && produced {
            break;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "on the validator's /metrics: consumer lag {lag}, fetches of the scans topic \
             {fetched_scans}, the decision and the answer produced {produced}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // (c) JSON lines from every service; the gateway's request span and the
    // validator's scan span name the scan, never the token or the key.
    let json_lines = |program: &str, log: &str| -> Result<Vec<Value>> {
        log.lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line).with_context(|| format!("{program}: not JSON: {line}"))
            })
            .collect()
    };
    let closing = |lines: &[Value], span_name: &str| {
        lines
            .iter()
            .find(|line| {
                line["fields"]["message"] == "close"
                    && line["span"]["name"] == span_name
                    && line["span"]["scan_id"] == scan_id.as_str()
            })
            .map(|line| line["span"].clone())
            .with_context(|| format!("no closing line of the scan's {span_name} span"))
    };
    let gateway_log = app.gateway_log();
    let request_span = closing(&json_lines("gateway", &gateway_log)?, "request")?;
    for field in ["kind", "venue", "gate", "device", "token_hash", "decision"] {
        ensure!(
            !request_span[field].is_null(),
            "{field} missing from {request_span}"
        );
    }
    let validator_log = app.validator_log(0)?;
    let scan_span = closing(&json_lines("validator", &validator_log)?, "scan")?;
    for field in ["kind", "venue", "gate", "device", "status"] {
        ensure!(
            !scan_span[field].is_null(),
            "{field} missing from {scan_span}"
        );
    }
    let registry_log = app.registry_log()?;
    json_lines("registry", &registry_log)?;
    for (program, log) in [
        ("gateway", &gateway_log),
        ("validator", &validator_log),
        ("registry", &registry_log),
    ] {
        ensure!(!log.contains(&token), "the token is in the {program} log");
        ensure!(
            !log.contains(app.admin_key()),
            "the key is in the {program} log"
        );
    }
    Ok(())
}

/// The most brokers any Kafka client of each service reports connected: the
/// gateway, the registry and each validator, by program (`None`: no figure).
async fn connected_brokers(app: &TestApp) -> Result<Vec<(String, Option<f64>)>> {
    Ok(scrape_all(app)
        .await?
        .into_iter()
        .map(|(program, samples)| {
            let most = samples
                .iter()
                .filter(|sample| sample.name == BROKERS_UP)
                .map(|sample| sample.value)
                .reduce(f64::max);
            (program, most)
        })
        .collect())
}

/// Waits until every service's figure passes `wanted`.
async fn connected_brokers_until(
    app: &TestApp,
    broker: &str,
    wanted: impl Fn(f64) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + BROKER_FIGURE_FOLLOWS;
    loop {
        let most = connected_brokers(app).await?;
        if most
            .iter()
            .all(|(_, connected)| connected.is_some_and(&wanted))
        {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{BROKER_FIGURE_FOLLOWS:?} after the broker {broker}, the most brokers each \
             service's Kafka clients report connected ({BROKERS_UP}): {most:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every service's count of connected brokers, which the
/// `PresenceKafkaUnreachableFromPods` alert pages on when a pod's is 0, follows
/// the broker: at least 1 while it runs, 0 in every client of every service
/// once it is killed, at least 1 again once it is back. The broker keeps its
/// topics across the restart (PostgreSQL storage), as a Kafka broker does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_services_broker_figure_follows_the_broker() -> Result<()> {
    let options = DistributedOptions {
        durable_broker: true,
        ..DistributedOptions::default()
    };
    with_app(
        TestApp::distributed_with(options).await?,
        |app| async move {
            connected_brokers_until(&app, "started", |most| most >= 1.0).await?;
            app.kill_broker().await?;
            connected_brokers_until(&app, "was killed", |most| most == 0.0).await?;
            app.restart_broker().await?;
            connected_brokers_until(&app, "came back", |most| most >= 1.0).await
        },
    )
    .await
}
