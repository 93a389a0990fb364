//! Kafka security (issue 13): every Kafka client of every binary over SASL_SSL
//! against a broker that demands it (tansu behind a TLS terminator, see
//! `presence_tests::secured_broker`), and with a client certificate where the
//! broker requires one (mutual TLS); credentials the broker refuses leave a
//! service running and not ready, saying why; a password shows nowhere; and
//! with topic creation off the services wait for their topics instead of
//! creating them, the gateway included.

use anyhow::{Context, Result, bail, ensure};
use presence_tests::broker::Broker;
use presence_tests::process::run_to_completion;
use presence_tests::redis_server::RedisServer;
use presence_tests::scans::{self, scan_until_decided, venue};
use presence_tests::secured_broker::{
    CLIENT_CERTIFICATE_SETTINGS, ClientCertificates, SecuredBroker, User,
};
use presence_tests::stack::{DistributedOptions, readiness, wait_ready};
use presence_tests::{Launch, PresenceProcess, ScanKind, TestApp, next_scan_time, unique};
use std::path::Path;
use std::time::{Duration, Instant};

/// Longest a service may take to report why it is not ready, or to become
/// ready once its cause is gone (it retries every 5 s).
const VERDICT_TIMEOUT: Duration = Duration::from_secs(30);

/// The gateway, the validator and the registry over SASL_SSL (SCRAM-SHA-512,
/// the broker's certificate checked against the test's CA) answer a scan end
/// to end; `presence decisions tail` with the same settings prints its
/// decision; the password is in no log, no `/metrics` and no `--help`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_is_answered_and_tailed_over_sasl_ssl() -> Result<()> {
    let options = DistributedOptions {
        sasl_ssl: true,
        ..DistributedOptions::default()
    };
    scans::with_app(
        TestApp::distributed_with(options).await?,
        |app| async move {
            let (_show, tokens, scanners) = venue(&app, 1, 1).await?;
            scan_until_decided(
                &app,
                ScanKind::Enter,
                scanners[0].body(&tokens[0], next_scan_time()),
            )
            .await?
            .last()?
            .expect(200, "OKAY")?;
            let cluster = app.cluster().context("a distributed fixture")?;
            let dir = tempfile::tempdir()?;
            let tail = with_env(
                [
                    "decisions",
                    "tail",
                    "--from-beginning",
                    "--max",
                    "1",
                    "--timeout",
                    "30",
                ]
                .into_iter()
                .fold(Launch::new(dir.path()), Launch::arg)
                .arg("--brokers")
                .arg(&cluster.bootstrap)
                .arg("--topic-prefix")
                .arg(&cluster.topic_prefix),
                &cluster.kafka_env,
            );
            let output = run_to_completion(&tail).await?;
            let printed = String::from_utf8_lossy(&output.stdout);
            ensure!(
                output.status.success() && printed.contains(&tokens[0]),
                "decisions tail over SASL_SSL ({}): {printed}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
            let password = password_of(&cluster.kafka_env)?;
            let mut pages = vec![metrics_page(&app.base_url()).await?];
            for (_, ops_url) in app.service_ops_urls() {
                pages.push(metrics_page(&ops_url).await?);
            }
            for (what, text) in [("the logs", app.logs()), ("/metrics", pages.concat())] {
                ensure!(!text.contains(&password), "the Kafka password is in {what}");
            }
            for program in [
                "presence-gateway",
                "presence-validator",
                "presence-registry",
            ] {
                let help = with_env(
                    Launch::program(program, dir.path()).arg("--help"),
                    &cluster.kafka_env,
                );
                let help = run_to_completion(&help).await?;
                let text = String::from_utf8_lossy(&help.stdout);
                ensure!(
                    text.contains("--kafka-sasl-password-file") && !text.contains(&password),
                    "{program} --help:\n{text}"
                );
            }
            Ok(())
        },
    )
    .await
}

/// A wrong password and a CA that did not sign the broker's certificate: the
/// validator and the registry keep running, not ready, `/readyz` and their
/// log saying why; the gateway serves its probes, not ready, and logs why; the passwords,
/// right or wrong, appear in none of their logs nor `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_leave_services_running_and_not_ready() -> Result<()> {
    let user = User::new("SCRAM-SHA-512");
    let broker =
        SecuredBroker::start(std::slice::from_ref(&user), ClientCertificates::NotAsked).await?;
    let redis = RedisServer::start().await?;
    let dir = tempfile::tempdir()?;
    let front = broker.front();
    let wrong_password = User {
        password: unique("wrong"),
        ..user.clone()
    };
    let mut refused_password = front.client_env(&wrong_password, front.ca_file())?;
    refused_password.push(("PRESENCE_KAFKA_BROKERS".into(), front.bootstrap()));
    let mut unknown_ca = front.client_env(&user, front.other_ca_file())?;
    unknown_ca.push(("PRESENCE_KAFKA_BROKERS".into(), front.bootstrap()));
    let cases = [
        (
            "presence-validator",
            &refused_password,
            "kafka: authentication failed",
        ),
        ("presence-registry", &unknown_ca, "kafka: TLS failed"),
    ];
    let redis_url = redis.url();
    for (program, env, reason) in cases {
        let secrets = [user.password.as_str(), wrong_password.password.as_str()];
        let refused =
            stays_running_and_not_ready(program, dir.path(), &redis_url, env, reason, &secrets);
        if let Err(error) = refused.await {
            bail!("{error:#}\n--- broker ---\n{}", broker.log());
        }
    }
    let gateway = Launch::program("presence-gateway", dir.path())
        .env("PRESENCE_TOPIC_PREFIX", format!("{}.", unique("presence")))
        .env("PRESENCE_LISTEN", "127.0.0.1:0")
        .env("PRESENCE_API_KEY", unique("key"));
    let (gateway, base_url) = PresenceProcess::start(&with_env(gateway, &refused_password)).await?;
    // Its probes answer: not ready, the reason logged with each probe.
    not_ready_saying(&base_url, "unavailable").await?;
    let deadline = Instant::now() + VERDICT_TIMEOUT;
    while !gateway.stderr().contains("kafka: authentication failed") {
        ensure!(
            Instant::now() < deadline,
            "the gateway never said why: {}",
            gateway.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    not_ready_saying(&base_url, "unavailable").await?;
    ensure!(
        !gateway.stderr().contains(&wrong_password.password),
        "the password is in the gateway's log"
    );
    Ok(())
}

/// Mutual TLS: the broker's TLS terminator requires a client certificate
/// signed by the test's CA, on top of SASL SCRAM-SHA-512. The three services,
/// given the certificate, answer a scan end to end; a registry with the same
/// settings but no certificate stays running and not ready, `/readyz` saying
/// TLS failed, the password in none of its log, `/metrics` or `/readyz`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_answers_a_scan_and_refuses_a_client_without_a_certificate() -> Result<()> {
    let options = DistributedOptions {
        sasl_ssl: true,
        client_certificates: true,
        ..DistributedOptions::default()
    };
    scans::with_app(
        TestApp::distributed_with(options).await?,
        |app| async move {
            let (_show, tokens, scanners) = venue(&app, 1, 1).await?;
            scan_until_decided(
                &app,
                ScanKind::Enter,
                scanners[0].body(&tokens[0], next_scan_time()),
            )
            .await?
            .last()?
            .expect(200, "OKAY")?;
            let cluster = app.cluster().context("a distributed fixture")?;
            let given: Vec<&String> = cluster.kafka_env.iter().map(|(key, _)| key).collect();
            ensure!(
                CLIENT_CERTIFICATE_SETTINGS
                    .iter()
                    .all(|setting| given.iter().any(|key| key == setting)),
                "the services were not given the client certificate: {given:?}"
            );
            let without_certificate: Vec<(String, String)> = cluster
                .kafka_env
                .iter()
                .filter(|(key, _)| !CLIENT_CERTIFICATE_SETTINGS.contains(&key.as_str()))
                .cloned()
                .chain([(
                    "PRESENCE_KAFKA_BROKERS".to_owned(),
                    cluster.bootstrap.clone(),
                )])
                .collect();
            let password = password_of(&cluster.kafka_env)?;
            let dir = tempfile::tempdir()?;
            stays_running_and_not_ready(
                "presence-registry",
                dir.path(),
                &cluster.redis_url,
                &without_certificate,
                "kafka: TLS failed",
                &[password.as_str()],
            )
            .await
        },
    )
    .await
}

/// A SCRAM-SHA-256 user connects as well. PLAIN reaches the broker as PLAIN,
/// but tansu 0.6 closes the connection at a PLAIN handshake, so a PLAIN user is
/// only seen refused here, with the mechanism in the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_sha_256_connects_and_plain_reaches_the_broker() -> Result<()> {
    let (scram, plain) = (User::new("SCRAM-SHA-256"), User::new("PLAIN"));
    let broker = SecuredBroker::start(
        &[scram.clone(), plain.clone()],
        ClientCertificates::NotAsked,
    )
    .await?;
    let redis = RedisServer::start().await?;
    let dir = tempfile::tempdir()?;
    let front = broker.front();
    let env_of = |user: &User| -> Result<Vec<(String, String)>> {
        let mut env = front.client_env(user, front.ca_file())?;
        env.push(("PRESENCE_KAFKA_BROKERS".into(), front.bootstrap()));
        Ok(env)
    };
    let mut service = spawn_service(
        "presence-registry",
        dir.path(),
        &redis.url(),
        &env_of(&scram)?,
    )?;
    let ops_url = service.wait_for_ops_url().await?;
    if let Err(error) = ready(&ops_url).await {
        bail!("SCRAM-SHA-256: {error:#}\n{}", service.stderr());
    }
    let mut service = spawn_service(
        "presence-registry",
        dir.path(),
        &redis.url(),
        &env_of(&plain)?,
    )?;
    let ops_url = service.wait_for_ops_url().await?;
    if let Err(error) = not_ready_saying(&ops_url, "SASL PLAIN mechanism").await {
        bail!("PLAIN: {error:#}\n{}", service.stderr());
    }
    Ok(())
}

/// With `PRESENCE_KAFKA_CREATE_TOPICS=false` a validator and a gateway create
/// nothing: each is not ready and names the topics it misses (the gateway the
/// shared reply topic among them) until they are created (as Strimzi or
/// Terraform would), then becomes ready by itself, and a scan through the
/// gateway is answered: the gateway gets its replies with no topic of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_topic_creation_services_wait_for_their_topics() -> Result<()> {
    let broker = Broker::start().await?;
    let redis = RedisServer::start().await?;
    let dir = tempfile::tempdir()?;
    let prefix = format!("{}.", unique("presence"));
    let env = [
        ("PRESENCE_KAFKA_BROKERS".to_owned(), broker.bootstrap()),
        (
            "PRESENCE_KAFKA_CREATE_TOPICS".to_owned(),
            "false".to_owned(),
        ),
        ("PRESENCE_TOPIC_PREFIX".to_owned(), prefix.clone()),
    ];
    let mut validator = spawn_service("presence-validator", dir.path(), &redis.url(), &env)?;
    let ops_url = validator.wait_for_ops_url().await?;
    let api_key = unique("key");
    let gateway_launch = Launch::program("presence-gateway", dir.path())
        .env("PRESENCE_LISTEN", "127.0.0.1:0")
        .env("PRESENCE_API_KEY", &api_key)
        .env("PRESENCE_KAFKA_FETCH_WAIT_MS", "10");
    let mut gateway = PresenceProcess::spawn(&with_env(gateway_launch, &env))?;
    let gateway_url = gateway.wait_for_url().await?;
    let validator_topics = "scans decisions inventory scans.dlq inventory.dlq";
    let gateway_topics = "scans registry inventory replies audit";
    let body = not_ready_saying(&ops_url, "topics missing").await?;
    // The gateway's public /readyz says only "unavailable"; its log says why.
    not_ready_saying(&gateway_url, "unavailable").await?;
    let deadline = Instant::now() + VERDICT_TIMEOUT;
    let gateway_says = loop {
        let log = gateway.stderr();
        if let Some(line) = log.lines().find(|line| line.contains("topics missing")) {
            break line.to_owned();
        }
        ensure!(
            Instant::now() < deadline,
            "the gateway never named its missing topics: {log}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (what, says, topics) in [
        ("validator", &body, validator_topics),
        ("gateway", &gateway_says, gateway_topics),
    ] {
        for topic in topics.split(' ') {
            ensure!(
                says.contains(&format!("{prefix}{topic}")),
                "the {what} does not name {topic}: {says}"
            );
        }
    }
    let names: std::collections::BTreeSet<String> = [validator_topics, gateway_topics]
        .iter()
        .flat_map(|topics| topics.split(' '))
        .map(|topic| format!("{prefix}{topic}"))
        .collect();
    let names: Vec<String> = names.into_iter().collect();
    broker.create_topics(&names, 1).await?;
    for (url, process) in [(&ops_url, &validator), (&gateway_url, &gateway)] {
        if let Err(error) = ready(url).await {
            bail!("{error:#}\n{}", process.stderr());
        }
    }
    let scanned = client()?
        .post(format!("{gateway_url}/presence/v1/ticket/enter"))
        .header("X-Api-Key", &api_key)
        .json(&serde_json::json!({
            "channelId": "A", "deviceOs": "Printed", "gateName": "North", "token": "T",
            "venueId": "V", "deviceId": 1, "gateId": 1, "scanTime": next_scan_time()
        }))
        .send()
        .await?;
    let code = scanned.status();
    let answer = scanned.text().await?;
    // A decision by the validator's rules (no device is configured), which
    // only the reply path brings back to the gateway.
    ensure!(
        code == 400 && answer.contains("is not a configured device"),
        "the scan was not decided: {code} {answer}\n{}",
        gateway.stderr()
    );
    let listed = broker.topics().await?;
    let ours: Vec<&String> = listed
        .iter()
        .filter(|topic| topic.starts_with(&prefix))
        .collect();
    ensure!(
        ours.len() == names.len(),
        "the services created topics of their own: {ours:?} (besides {names:?})"
    );
    Ok(())
}

/// A validator or registry on `redis_url` with `env` (brokers, security, topic
/// prefix of its own unless `env` names one), probes on a free port.
fn spawn_service(
    program: &str,
    dir: &Path,
    redis_url: &str,
    env: &[(String, String)],
) -> Result<PresenceProcess> {
    let launch = Launch::program(program, dir)
        .env("PRESENCE_TOPIC_PREFIX", format!("{}.", unique("presence")))
        .env("PRESENCE_REDIS_URL", redis_url)
        .env("PRESENCE_KAFKA_FETCH_WAIT_MS", "10")
        .arg("--ops-listen")
        .arg("127.0.0.1:0");
    PresenceProcess::spawn(&with_env(launch, env))
}

/// Spawns `program` (see [`spawn_service`]) with settings the broker refuses
/// and checks that it stays running and not ready: `/readyz` answers 503 with
/// `reason`, the reason is logged (`kafka not usable`), and so it remains
/// after the next retry; none of the `secrets` is in its log, `/metrics` or
/// `/readyz`. Errors carry the service's log.
async fn stays_running_and_not_ready(
    program: &str,
    dir: &Path,
    redis_url: &str,
    env: &[(String, String)],
    reason: &str,
    secrets: &[&str],
) -> Result<()> {
    let mut service = spawn_service(program, dir, redis_url, env)?;
    let outcome = async {
        let ops_url = service.wait_for_ops_url().await?;
        let body = not_ready_saying(&ops_url, reason).await?;
        // Another retry later: still running, still not ready.
        tokio::time::sleep(Duration::from_secs(6)).await;
        ensure!(service.try_exit()?.is_none(), "{program} exited");
        let (ready, _) = readiness(&client()?, &ops_url).await?;
        ensure!(!ready, "{program} became ready with refused settings");
        let log = service.stderr();
        ensure!(
            log.lines()
                .any(|line| line.contains("kafka not usable") && line.contains(reason)),
            "{program} did not log why"
        );
        let metrics = metrics_page(&ops_url).await?;
        for secret in secrets {
            ensure!(
                ![&log, &metrics, &body]
                    .iter()
                    .any(|text| text.contains(secret)),
                "a password is in {program}'s log, /metrics or /readyz"
            );
        }
        Ok(())
    };
    outcome
        .await
        .with_context(|| format!("--- {program} ---\n{}", service.stderr()))
}

fn with_env(launch: Launch, env: &[(String, String)]) -> Launch {
    env.iter()
        .fold(launch, |launch, (key, value)| launch.env(key, value))
}

/// Polls `/readyz` until it answers 503 with `reason` in its body; returns the body.
async fn not_ready_saying(ops_url: &str, reason: &str) -> Result<String> {
    let client = client()?;
    let deadline = Instant::now() + VERDICT_TIMEOUT;
    loop {
        let (ready, body) = readiness(&client, ops_url).await?;
        ensure!(!ready, "ready, though it should say {reason:?}");
        if body.contains(reason) {
            return Ok(body);
        }
        ensure!(
            Instant::now() < deadline,
            "/readyz never said {reason:?}; last: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls `/readyz` until it answers 200, for the harness's ready timeout.
async fn ready(ops_url: &str) -> Result<()> {
    wait_ready(&client()?, &format!("{ops_url}/readyz"), ops_url).await
}

async fn metrics_page(url: &str) -> Result<String> {
    Ok(client()?
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .text()
        .await?)
}

/// The SASL password a fixture's clients read from their password file.
fn password_of(env: &[(String, String)]) -> Result<String> {
    let (_, file) = env
        .iter()
        .find(|(key, _)| key == "PRESENCE_KAFKA_SASL_PASSWORD_FILE")
        .context("no password file in the fixture's settings")?;
    Ok(std::fs::read_to_string(file)?.trim().to_owned())
}

fn client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder().no_proxy().build()?)
}
