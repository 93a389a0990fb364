//! Faults of the distributed mode, each while scans flow: a gateway killed, Redis
//! down and restarted, the broker restarted, and every service stopped with
//! SIGTERM. After each: no answered scan is missing from `decisions` (exactly
//! once after deduplication by scan id), no ticket is entered twice, and the
//! services serve again without being restarted by hand (except the one that
//! was stopped).
//!
//! Each test prints what it measured (`fault: …` lines) for
//! docs/reliability.md; run with `--no-capture` to see them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use anyhow::{Context, Result, ensure};
use presence_proto::pb;
use presence_tests::kafka::{read_topic, topic_names, wait_until_committed};
use presence_tests::scans::{
    Delivery, Flow, READ_FOR, RETRY_FOR, RETRY_PAUSE, Retry, Sent, enters, nothing_lost,
    scan_until_decided, send_all, stream_holds_each_scan_once, venue, with_app,
};
use presence_tests::stack::{
    Cluster, DistributedOptions, Probe, SESSION_EXPIRY, Shutdown, assigned_scan_partitions,
};
use presence_tests::{ScanKind, TestApp, next_scan_time, now_ms, prometheus, unique_mac};
use prost::Message as _;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Scans of one stream, and how many are in flight at once: enough that a fault
/// always finds some in flight.
const SCANS: usize = 300;
const IN_FLIGHT: usize = 12;
/// How long Redis stays down in the outage test.
const REDIS_DOWN_FOR: Duration = Duration::from_secs(3);
/// How long Redis stays frozen in the stall test: past the store's one-second
/// response timeout.
const REDIS_STALL: Duration = Duration::from_secs(3);
/// How long after the kills of the scaled-out test its other instances must be
/// seen deciding: well inside the dead validator's group session (10 s from its
/// last heartbeat, sent every 3 s), so before its partitions can have moved.
const CARRY_ON_WITHIN: Duration = Duration::from_secs(5);
/// Fresh tickets the scaled-out test enters all at once right after the kills:
/// each lands on the surviving validator's partitions with even odds, so some
/// are decided at once (all missing them: 1 chance in 65,536).
const CARRY_ON_PROBES: usize = 16;
/// How long the broker stays down in the restart test: a blip of a few
/// seconds, within the gateway's readiness grace (`PRESENCE_READY_GRACE_MS`).
const BROKER_DOWN_FOR: Duration = Duration::from_secs(3);
/// How often the broker restart test probes the gateway's `/readyz`.
const READINESS_PROBE_EVERY: Duration = Duration::from_millis(100);
/// Longest a service may take to report ready again after a dependency returned.
const RECOVER_WITHIN: Duration = Duration::from_secs(20);
/// The gateway's shutdown grace in the graceful-stop test: `/readyz` red this
/// long before the listener closes.
const GATEWAY_GRACE_MS: u64 = 500;

/// Polls `ready` until it answers true; how long that took. An error after
/// [`RECOVER_WITHIN`].
async fn until<F, Fut>(what: &str, mut ready: F) -> Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let started = Instant::now();
    loop {
        if ready().await? {
            return Ok(started.elapsed());
        }
        ensure!(
            started.elapsed() < RECOVER_WITHIN,
            "{what} not within {RECOVER_WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every scan is decided at the first try: everything works again.
async fn decided_at_once(app: &TestApp, scans: Vec<(ScanKind, Value)>) -> Result<()> {
    let sent = send_all(app, scans, 4, Arc::default(), Retry::Unavailable).await?;
    for scan in &sent {
        ensure!(
            scan.answers.len() == 1 && scan.answers[0].code == 200,
            "{:?} was not decided at once: {:?}",
            scan.key(),
            scan.answers
                .iter()
                .map(|a| (a.code, a.text.clone()))
                .collect::<Vec<_>>()
        );
    }
    Ok(())
}

/// The topics of the fixture's prefix, sorted.
async fn prefixed_topics(cluster: &Cluster) -> Result<Vec<String>> {
    let mut topics: Vec<String> = topic_names(&cluster.bootstrap)
        .await?
        .into_iter()
        .filter(|topic| topic.starts_with(&cluster.topic_prefix))
        .collect();
    topics.sort();
    Ok(topics)
}

/// Answers by HTTP code over every try of `sent`; `None` counts connection errors.
fn codes(sent: &[Sent]) -> BTreeMap<Option<u16>, usize> {
    let mut codes = BTreeMap::new();
    for attempt in sent.iter().flat_map(|scan| &scan.attempts) {
        *codes.entry(attempt.code).or_default() += 1;
    }
    codes
}

/// Readiness went red because the service was stopping (`stopping` is how its
/// `/readyz` says so), while it still answered, and stayed red; the service
/// exited cleanly.
///
/// A validator or registry whose records in flight finish at once exits within
/// milliseconds of SIGTERM, between two probes; then its log (`red_then_stopped`:
/// the line it logs as readiness turns red, then the one as a consumer stops)
/// shows the order instead.
fn stopped_cleanly(
    what: &str,
    stopping: &str,
    red_then_stopped: Option<(&str, &str)>,
    shutdown: &Shutdown,
) -> Result<()> {
    ensure!(
        shutdown.status.success(),
        "{what} exited with {} on SIGTERM",
        shutdown.status
    );
    let never_red = !shutdown
        .probes
        .iter()
        .any(|(_, probe)| matches!(probe, Probe::NotReady(..)));
    if let (true, Some((red_line, stopped_line))) = (never_red, red_then_stopped) {
        let red = shutdown.log.find(red_line);
        let stopped = shutdown.log.find(stopped_line);
        ensure!(
            matches!((red, stopped), (Some(red), Some(stopped)) if red < stopped),
            "{what} exited before a probe saw it red, and its log does not show readiness \
             red before its consumers stopped: {:?}\n{}",
            shutdown.probes,
            shutdown.log
        );
        ensure!(
            shutdown.took < QUICK_EXIT,
            "{what} was never seen red although it took {:?} to exit: {:?}",
            shutdown.took,
            shutdown.probes
        );
        return Ok(());
    }
    ensure!(
        shutdown.went_red_first(),
        "{what}'s /readyz did not turn red before it stopped serving: {:?}",
        shutdown.probes
    );
    // Red for another reason (no partitions once the consumer has left its
    // group) would come after the drain, not before it.
    let first_red = shutdown
        .probes
        .iter()
        .find_map(|(_, probe)| match probe {
            Probe::NotReady(_, body) => Some(body),
            _ => None,
        })
        .context("never red")?;
    ensure!(
        first_red.contains(stopping),
        "{what}'s /readyz first turned red with {first_red:?}, not because it was stopping"
    );
    Ok(())
}

/// What the validator and registry log as their readiness turns red, then as
/// each consumer stops (`presence_kafka::runner`).
const CONSUMERS_RED_THEN_STOPPED: (&str, &str) =
    ("consumers stopping: readiness is red", "consumer stopped");
/// The longest a stop may take and still slip between probes: a probe is sent
/// every 5 ms, and one on a loaded machine took 104 ms to be answered.
const QUICK_EXIT: Duration = Duration::from_millis(500);

// ---------------------------------------------------------------- gateway killed

/// A gateway killed (SIGKILL) with a dozen scans in flight, then started again
/// (a new instance in the gateways' group). Scans cut off are retried by their
/// clients against the new gateway with the same body: each gets the decision
/// that was applied for it, or is decided then. Nothing answered is lost, no
/// ticket is entered twice, and the killed gateway left no topic behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_under_load_loses_no_answered_decision() -> Result<()> {
    with_app(TestApp::distributed().await?, |app| async move {
        let (_show, tokens, scanners) = venue(&app, 60, 6).await?;
        let cluster = app.cluster().context("distributed")?;
        let topics_before = prefixed_topics(&cluster).await?;
        let flow = Flow::start(
            &app,
            enters(SCANS, &tokens, &scanners),
            IN_FLIGHT,
            Retry::UnavailableOrUnreachable,
        );
        flow.wait_for(SCANS / 4).await?;
        app.kill_gateway()?;
        let (killed, killed_ms) = (Instant::now(), now_ms());
        let answered_before = flow.answered();
        app.restart_gateway().await?;
        let restarted = killed.elapsed();
        let sent = flow.finish().await?;
        let topics_after = prefixed_topics(&cluster).await?;
        ensure!(
            topics_after == topics_before,
            "topics before the kill {topics_before:?}, after the restart {topics_after:?}"
        );

        let cut: Vec<&Sent> = sent.iter().filter(|s| s.unreachable() > 0).collect();
        ensure!(
            !cut.is_empty(),
            "no scan lost its connection: the kill interrupted nothing"
        );
        let stream = nothing_lost(&app, &sent, &scanners[0], Delivery::ExactlyOnce).await?;
        // A scan cut off after its decision was applied got that decision on its
        // retry (remembered, under the first request's scan id).
        let applied_before_cut = cut
            .iter()
            .filter(|s| {
                stream
                    .by_key
                    .get(&s.key())
                    .is_some_and(|record| record.decision.decided_at <= killed_ms)
            })
            .count();
        eprintln!(
            "fault: gateway SIGKILL after {answered_before}/{SCANS} scans answered, {IN_FLIGHT} \
             in flight; new gateway ready {restarted:?} after the kill; {} scans cut off \
             (connection error), retried against the new gateway; tries by HTTP code {:?}; \
             decisions on the stream {} ({} duplicates by scan id); {applied_before_cut} \
             cut-off scans answered on retry with the decision made before the kill; no \
             topic left behind",
            cut.len(),
            codes(&sent),
            stream.raw,
            stream.duplicates,
        );
        Ok(())
    })
    .await
}

/// Two gateways share the reply topic, each reading the partitions the group
/// gives it: scans through either are decided at the first try (each gateway
/// gets its own answers). One killed (SIGKILL), the other keeps deciding at the
/// first try, through the dead one's session expiry and the rebalance that hands
/// it every partition, and no topic is left for anyone to delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_share_the_reply_topic_and_a_killed_one_leaves_nothing_behind() -> Result<()> {
    with_app(TestApp::distributed().await?, |app| async move {
        let (_show, tokens, scanners) = venue(&app, 40, 4).await?;
        let cluster = app.cluster().context("distributed")?;
        let topics_before = prefixed_topics(&cluster).await?;
        ensure!(
            topics_before.contains(&cluster.topic("replies")),
            "no shared reply topic: {topics_before:?}"
        );
        let (survivor, survivor_url) = app.start_another_gateway().await?;
        let first_url = app.base_url();
        let mut scans = enters(40, &tokens, &scanners).into_iter().enumerate();
        for (n, (kind, body)) in scans.by_ref().take(20) {
            let url = if n % 2 == 0 {
                &first_url
            } else {
                &survivor_url
            };
            let reply = app.scan_at(url, kind, &body).await?;
            ensure!(
                reply.code == 200,
                "scan {n} through {url}: {} {}",
                reply.code,
                reply.text
            );
        }
        app.kill_gateway()?;
        let killed = Instant::now();
        // Spread past the dead member's session, so that some are sent while
        // its partitions move.
        let pause = SESSION_EXPIRY * 3 / 2 / 20;
        for (n, (kind, body)) in scans {
            let reply = app.scan_at(&survivor_url, kind, &body).await?;
            ensure!(
                reply.code == 200,
                "scan {n}, {:?} after the other gateway was killed: {} {}",
                killed.elapsed(),
                reply.code,
                reply.text
            );
            tokio::time::sleep(pause).await;
        }
        let every_partition = format!(
            "reply partitions held partitions={:?}",
            (0..cluster.partitions).collect::<Vec<_>>()
        );
        until(
            "the surviving gateway holding every reply partition",
            || async { Ok(survivor.stderr().contains(&every_partition)) },
        )
        .await?;
        let topics_after = prefixed_topics(&cluster).await?;
        ensure!(
            topics_after == topics_before,
            "topics with both gateways {topics_before:?}, after one was killed {topics_after:?}"
        );
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------- scaled out

/// Two of each service on a 3-node Redis Cluster ([`TestApp::scaled`]), scans
/// taking turns across the gateways: one validator and one gateway killed
/// (SIGKILL) at once with a dozen scans in flight, and nothing restarted. Those
/// killed are the second of each, which do not lead their groups: tansu 0.6 can
/// leave a group whose leader died with nothing assigned (the fixture starts
/// the first of each kind first, so it leads; on Kafka any member may die). The
/// other instances carry on: scans cut off by the dead gateway are retried
/// through the other (as a load balancer that checks its backends sends them),
/// scans on the other validator's partitions are decided meanwhile, and those
/// on the dead one's wait (503, retried) until its session expires and the
/// group hands its partitions over. Every answered scan is on `decisions` once
/// after deduplication by scan id (the dead validator's uncommitted records are
/// redelivered), and no ticket is entered twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaled_out_a_gateway_and_a_validator_killed_under_load_lose_no_answered_decision()
-> Result<()> {
    with_app(TestApp::scaled().await?, |app| async move {
        let (show, tokens, scanners) = venue(&app, 60, 6).await?;
        let fresh: Vec<String> = (0..CARRY_ON_PROBES).map(|_| show.token()).collect();
        app.load(
            &fresh
                .iter()
                .map(|token| show.ticket(token, &["B:1:1"]))
                .collect::<Vec<_>>(),
        )
        .await?;
        let cluster = app.cluster().context("distributed")?;
        ensure!(
            (0..2).all(|index| app.validator_partitions(index).is_ok_and(|held| held > 0)),
            "the two validators do not share the scan partitions"
        );
        let flow = Flow::start(
            &app,
            enters(SCANS, &tokens, &scanners),
            IN_FLIGHT,
            Retry::UnavailableOrUnreachable,
        );
        flow.wait_for(SCANS / 4).await?;
        // The scans take turns across the gateways: each has decided some.
        for base_url in app.base_urls() {
            let page = reqwest::get(format!("{base_url}/metrics"))
                .await?
                .text()
                .await?;
            let scans = prometheus::sum(&prometheus::parse(&page)?, "presence_scans_total", &[]);
            ensure!(scans > 0.0, "the gateway at {base_url} has decided no scan");
        }
        let dead_share = app.validator_partitions(1)?;
        app.kill_validator(1)?;
        app.kill_gateway_at(1)?;
        let killed = Instant::now();
        let answered_before = flow.answered();
        let every_partition = usize::try_from(cluster.partitions)?;
        let (took_over, probes) = tokio::join!(
            // The registries and the surviving validator hold every partition:
            // the dead member's session expired and its share moved.
            async {
                app.settle().await?;
                Ok::<_, anyhow::Error>(killed.elapsed())
            },
            send_all(
                &app,
                enters(CARRY_ON_PROBES, &fresh, &scanners),
                CARRY_ON_PROBES,
                Arc::default(),
                Retry::UnavailableOrUnreachable,
            )
        );
        let (took_over, probes) = (took_over?, probes?);
        ensure!(
            app.validator_partitions(0)? == every_partition && took_over > CARRY_ON_WITHIN,
            "validator 0 holds {} of {every_partition} scan partitions {took_over:?} after the \
             kills",
            app.validator_partitions(0)?
        );
        let mut sent = flow.finish().await?;
        let cut = sent.iter().filter(|s| s.unreachable() > 0).count();
        ensure!(
            cut > 0,
            "no scan lost its connection: the gateway's kill interrupted nothing"
        );
        sent.extend(probes);
        let waited = sent.iter().filter(|s| s.unavailable() > 0).count();
        // Decided while the dead validator's partitions were still its own.
        let carried_on = sent
            .iter()
            .flat_map(|scan| &scan.attempts)
            .filter(|attempt| {
                attempt.code == Some(200)
                    && attempt.started > killed
                    && attempt.finished < killed + CARRY_ON_WITHIN
            })
            .count();
        ensure!(
            carried_on > 0,
            "no scan was decided within {CARRY_ON_WITHIN:?} of the kills: the other instances \
             did not carry on"
        );
        let stream = nothing_lost(&app, &sent, &scanners[0], Delivery::AtLeastOnce).await?;
        eprintln!(
            "fault: 2 of each service, validator 1 (holding {dead_share}/{every_partition} scan \
             partitions) and gateway 1 SIGKILLed after {answered_before}/{SCANS} scans answered, \
             {IN_FLIGHT} in flight, nothing restarted, {CARRY_ON_PROBES} fresh tickets entered \
             at once right after; {carried_on} scans decided by the others within \
             {CARRY_ON_WITHIN:?} of the kills; validator 0 held every scan partition \
             {took_over:?} after the kills; {cut} scans cut off (connection error) and retried \
             through gateway 0; {waited} scans answered 503 and retried; tries by HTTP code \
             {:?}; decisions on the stream {} ({} duplicates by scan id)",
            codes(&sent),
            stream.raw,
            stream.duplicates,
        );
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------- Redis

/// Redis killed for a few seconds while scans flow, then started again on its
/// port and data. Meanwhile scans are answered 503 UNAVAILABLE with Retry-After
/// (never a 500, never a decision Redis did not make), the validator's and the
/// registry's `/readyz` are red and the gateway's stays green (it does not follow
/// Redis). Once Redis is
/// back everything is decided again, with no service restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_answers_503_and_heals_without_restarts() -> Result<()> {
    with_app(TestApp::distributed().await?, |app| async move {
        let (show, tokens, scanners) = venue(&app, 60, 6).await?;
        let flow = Flow::start(
            &app,
            enters(SCANS, &tokens, &scanners),
            8,
            Retry::Unavailable,
        );
        flow.wait_for(SCANS / 5).await?;
        app.kill_redis().await?;
        let down = Instant::now();
        let answered_before = flow.answered();
        let validator_red = until("the validator's /readyz red", || async {
            Ok(!app.validator_readiness(0).await?.0)
        })
        .await?;
        // The registry serves devices and counts decisions from Redis: its
        // readiness follows Redis too (it pings the store, as the validator's does).
        let registry_red = until("the registry's /readyz red", || async {
            Ok(!app.registry_readiness().await?.0)
        })
        .await?;
        let (gateway_ready, gateway_says) = app.gateway_readiness().await?;
        ensure!(
            gateway_ready,
            "the gateway's /readyz follows Redis: {gateway_says}"
        );
        tokio::time::sleep(REDIS_DOWN_FOR.saturating_sub(down.elapsed())).await;
        app.restart_redis().await?;
        let up = Instant::now();
        let down_for = down.elapsed() - up.elapsed();
        let validator_green = until("the validator's /readyz green again", || async {
            Ok(app.validator_readiness(0).await?.0)
        })
        .await?;
        let registry_green = until("the registry's /readyz green again", || async {
            Ok(app.registry_readiness().await?.0)
        })
        .await?;
        let sent = flow.finish().await?;

        let unavailable: usize = sent.iter().map(Sent::unavailable).sum();
        ensure!(
            unavailable > 0,
            "no scan was answered 503: the outage interrupted nothing"
        );
        // The first decision after Redis came back, by the clients' clocks.
        let first_decided_after = sent
            .iter()
            .flat_map(|scan| &scan.attempts)
            .filter(|attempt| attempt.code == Some(200) && attempt.finished > up)
            .map(|attempt| attempt.finished - up)
            .min();
        let stream = nothing_lost(&app, &sent, &scanners[0], Delivery::ExactlyOnce).await?;
        let fresh: Vec<String> = (0..20).map(|_| show.token()).collect();
        app.load(
            &fresh
                .iter()
                .map(|token| show.ticket(token, &["B:1:1"]))
                .collect::<Vec<_>>(),
        )
        .await?;
        decided_at_once(&app, enters(40, &fresh, &scanners)).await?;
        eprintln!(
            "fault: Redis SIGKILL after {answered_before}/{SCANS} scans answered, 8 in flight, \
             down {down_for:?}; validator /readyz red {validator_red:?} after the kill, green \
             {validator_green:?} after the restart; registry /readyz red {registry_red:?} after \
             the kill, green {registry_green:?} after the restart; gateway ready during the \
             outage: {gateway_ready}; tries by HTTP \
             code {:?} ({unavailable} answered 503); first decision {first_decided_after:?} \
             after the restart; decisions on the stream {} ({} duplicates by scan id)",
            codes(&sent),
            stream.raw,
            stream.duplicates,
        );
        Ok(())
    })
    .await
}

/// Redis stopped with SIGTERM, then with SIGKILL right after an answer, and
/// started again each time on its data: every ticket entered before is still
/// ALREADY_ENTERED (naming that entry), a retry of the entering scan still
/// returns its OKAY, and inventory and devices are still there. Every decision
/// is on `decisions` once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_keeps_ticket_state() -> Result<()> {
    with_app(TestApp::distributed().await?, |app| async move {
        let (_show, tokens, scanners) = venue(&app, 20, 2).await?;
        let (entry_gate, other_gate) = (&scanners[0], &scanners[1]);
        let mut sent = Vec::new();
        for (variant, batch) in [("SIGTERM", &tokens[..10]), ("SIGKILL", &tokens[10..])] {
            let mut entered = Vec::new();
            for token in batch {
                let scan = scan_until_decided(
                    &app,
                    ScanKind::Enter,
                    entry_gate.body(token, next_scan_time()),
                )
                .await?;
                scan.last()?.expect(200, "OKAY")?;
                entered.push(scan);
            }
            let stopped = Instant::now();
            if variant == "SIGTERM" {
                app.terminate_redis().await?;
            } else {
                app.kill_redis().await?;
            }
            app.restart_redis().await?;
            let restarted = stopped.elapsed();
            let ready = until("the validator's /readyz green again", || async {
                Ok(app.validator_readiness(0).await?.0)
            })
            .await?;
            for scan in &mut entered {
                let again = scan_until_decided(
                    &app,
                    ScanKind::Enter,
                    other_gate.body(scan.token(), next_scan_time()),
                )
                .await?;
                let reply = again.last()?;
                reply.expect(200, "ALREADY_ENTERED")?;
                ensure!(
                    reply
                        .message()
                        .starts_with(&format!("Already entered at {}", scan.gate_name())),
                    "{variant}: {} now says {:?}",
                    scan.token(),
                    reply.message()
                );
                let retry = scan_until_decided(&app, scan.kind, scan.body.clone()).await?;
                let first = scan.last()?;
                retry.last()?.expect(200, "OKAY")?;
                ensure!(
                    first_ids(&retry) == first_ids(scan),
                    "{variant}: the retry of {} was decided anew: {:?} then {:?}",
                    scan.token(),
                    first.text,
                    retry.last()?.text
                );
                // A retry is the same scan: its answers are that scan's.
                scan.answers.extend(retry.answers);
                sent.push(again);
            }
            eprintln!(
                "fault: Redis {variant} and restart took {restarted:?}, validator ready {ready:?} \
                 later; {} entered tickets still ALREADY_ENTERED, their retries still OKAY",
                entered.len()
            );
            sent.extend(entered);
        }
        // Redis restarts hand no scan request out again: each decision once.
        stream_holds_each_scan_once(&app, &sent, Delivery::ExactlyOnce).await?;
        Ok(())
    })
    .await
}

/// The scan ids of a scan's decided answers.
fn first_ids(scan: &Sent) -> Vec<String> {
    scan.answers
        .iter()
        .filter(|answer| answer.code == 200)
        .filter_map(presence_tests::scans::scan_id)
        .collect()
}

// ---------------------------------------------------------------- broker

/// How long the gateway's producer tries to deliver a request in
/// [`a_request_the_broker_never_takes_is_answered_when_its_delivery_fails`],
/// and how long its scans may wait for an answer: far apart, so which of the
/// two ended the wait shows.
const DELIVERY_TIMEOUT_MS: u64 = 1_000;
const ANSWER_DEADLINE: Duration = Duration::from_secs(20);

/// The broker gone: a scan request the producer cannot deliver is answered 503
/// UNAVAILABLE as soon as its delivery fails (the producer's
/// `message.timeout.ms`, here 1 s), not when its answer deadline (20 s) runs
/// out. The gateway does not wait for a request's acknowledgement (its answer
/// can only follow the broker's taking it) but must hear of its failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_broker_never_takes_is_answered_when_its_delivery_fails() -> Result<()> {
    let options = DistributedOptions {
        gateway_env: vec![
            (
                "PRESENCE_KAFKA_PROPERTIES".to_owned(),
                format!("message.timeout.ms={DELIVERY_TIMEOUT_MS}"),
            ),
            (
                "PRESENCE_DECISION_TIMEOUT_MS".to_owned(),
                ANSWER_DEADLINE.as_millis().to_string(),
            ),
            (
                "PRESENCE_REQUEST_TIMEOUT_MS".to_owned(),
                (ANSWER_DEADLINE * 2).as_millis().to_string(),
            ),
        ],
        ..DistributedOptions::default()
    };
    with_app(
        TestApp::distributed_with(options).await?,
        |app| async move {
            let (_, tokens, scanners) = venue(&app, 1, 1).await?;
            app.kill_broker().await?;
            let sent = Instant::now();
            let reply = app
                .scan(
                    ScanKind::Enter,
                    &scanners[0].body(&tokens[0], next_scan_time()),
                )
                .await?;
            let answered_after = sent.elapsed();
            reply.expect(503, "UNAVAILABLE")?;
            ensure!(
                answered_after < ANSWER_DEADLINE / 2,
                "answered after {answered_after:?}: at the answer deadline, not when the request's \
             delivery failed ({DELIVERY_TIMEOUT_MS} ms)"
            );
            println!("broker gone: the scan was answered 503 after {answered_after:?}");
            Ok(())
        },
    )
    .await
}

/// The broker killed (SIGKILL) while scans flow and started again three
/// seconds later on its port and storage (PostgreSQL, so topics, records,
/// committed offsets and producer state survive). Producers and consumers
/// reconnect by themselves; scans caught by the outage are answered 503 (never
/// 500) and decided on retry; the gateway's `/readyz` stays green throughout
/// (the blip is within its readiness grace), so a load balancer keeps it;
/// nothing answered is lost, no ticket is entered twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_loses_no_answered_scan() -> Result<()> {
    let options = DistributedOptions {
        durable_broker: true,
        ..DistributedOptions::default()
    };
    with_app(TestApp::distributed_with(options).await?, |app| async move {
        let (show, tokens, scanners) = venue(&app, 60, 6).await?;
        let flow = Flow::start(
            &app,
            enters(SCANS, &tokens, &scanners),
            8,
            Retry::Unavailable,
        );
        flow.wait_for(SCANS / 5).await?;
        let probing = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let probes = tokio::spawn({
            let (app, probing) = (app.clone(), probing.clone());
            async move {
                let mut probes = Vec::new();
                while probing.load(std::sync::atomic::Ordering::Relaxed) {
                    probes.push(app.gateway_readiness().await?);
                    tokio::time::sleep(READINESS_PROBE_EVERY).await;
                }
                anyhow::Ok(probes)
            }
        });
        app.kill_broker().await?;
        let down = Instant::now();
        let answered_before = flow.answered();
        tokio::time::sleep(BROKER_DOWN_FOR).await;
        app.restart_broker().await?;
        let up = Instant::now();
        let down_for = down.elapsed() - up.elapsed();
        let sent = flow.finish().await?;
        let all_decided = up.elapsed();
        probing.store(false, std::sync::atomic::Ordering::Relaxed);
        let probes = probes.await??;
        let red: Vec<&String> = probes
            .iter()
            .filter(|(ready, _)| !ready)
            .map(|(_, says)| says)
            .collect();
        ensure!(
            red.is_empty(),
            "the gateway's /readyz turned red during a {down_for:?} broker blip: {red:?}"
        );
        let degraded = probes
            .iter()
            .filter(|(_, says)| says.contains("degraded"))
            .count();
        ensure!(
            codes(&sent)
                .keys()
                .all(|code| matches!(code, Some(200 | 503))),
            "a scan was answered other than 200 or 503: {:?}",
            codes(&sent)
        );

        let first_decided_after = sent
            .iter()
            .flat_map(|scan| &scan.attempts)
            .filter(|attempt| attempt.code == Some(200) && attempt.finished > up)
            .map(|attempt| attempt.finished - up)
            .min();
        let unavailable: usize = sent.iter().map(Sent::unavailable).sum();
        ensure!(
            unavailable > 0,
            "no scan was answered 503: the broker's restart interrupted nothing"
        );
        let stream = nothing_lost(&app, &sent, &scanners[0], Delivery::ExactlyOnce).await?;
        let fresh: Vec<String> = (0..20).map(|_| show.token()).collect();
        app.load(
            &fresh
                .iter()
                .map(|token| show.ticket(token, &["B:1:1"]))
                .collect::<Vec<_>>(),
        )
        .await?;
        decided_at_once(&app, enters(40, &fresh, &scanners)).await?;
        eprintln!(
            "fault: broker SIGKILL after {answered_before}/{SCANS} scans answered, 8 in flight, \
             down {down_for:?}; tries by HTTP code {:?} ({unavailable} answered 503); first \
             decision {first_decided_after:?} after the restart, all {SCANS} decided \
             {all_decided:?} after it; gateway /readyz probes {} ({degraded} degraded, none \
             red); decisions on the stream {} ({} duplicates by scan id)",
            codes(&sent),
            probes.len(),
            stream.raw,
            stream.duplicates,
        );
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------- SIGTERM under load

/// The gateway stopped with SIGTERM while scans flow: `/readyz` turns red first,
/// every request sent before the signal is answered with its decision, and the
/// gateway exits cleanly. Its clients then move to a new gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_stops_gracefully_under_load() -> Result<()> {
    let options = DistributedOptions {
        gateway_env: vec![(
            "PRESENCE_SHUTDOWN_GRACE_MS".to_owned(),
            GATEWAY_GRACE_MS.to_string(),
        )],
        ..DistributedOptions::default()
    };
    with_app(
        TestApp::distributed_with(options).await?,
        |app| async move {
            let (_show, tokens, scanners) = venue(&app, 60, 6).await?;
            let flow = Flow::start(
                &app,
                enters(SCANS, &tokens, &scanners),
                IN_FLIGHT,
                Retry::UnavailableOrUnreachable,
            );
            flow.wait_for(SCANS / 4).await?;
            let signalled = Instant::now();
            let shutdown = app.stop_gateway_watching().await?;
            stopped_cleanly("the gateway", "shutting_down", None, &shutdown)?;
            let first_red = shutdown.first_red().context("never red")?;
            ensure!(
                first_red < Duration::from_millis(GATEWAY_GRACE_MS),
                "/readyz turned red {first_red:?} after SIGTERM, past the grace"
            );
            app.restart_gateway().await?;
            let sent = flow.finish().await?;

            let before: Vec<_> = sent
                .iter()
                .flat_map(|scan| scan.attempts.iter().map(move |a| (scan, a)))
                .filter(|(_, attempt)| attempt.started < signalled)
                .collect();
            let in_flight = before
                .iter()
                .filter(|(_, attempt)| attempt.finished > signalled)
                .count();
            ensure!(in_flight > 0, "nothing was in flight at SIGTERM");
            for (scan, attempt) in &before {
                ensure!(
                    attempt.code == Some(200),
                    "{:?}, sent before SIGTERM, got {:?} {:?}",
                    scan.key(),
                    attempt.code,
                    attempt.error
                );
            }
            let refused = sent.iter().map(Sent::unreachable).sum::<usize>();
            let stream = nothing_lost(&app, &sent, &scanners[0], Delivery::ExactlyOnce).await?;
            eprintln!(
                "fault: gateway SIGTERM (grace {GATEWAY_GRACE_MS} ms) with {in_flight} scans in \
             flight, all answered 200; /readyz red {first_red:?} after the signal, exit 0 after \
             {:?}; {refused} tries refused while no gateway listened, retried on the new one; \
             tries by HTTP code {:?}; decisions on the stream {} ({} duplicates by scan id)",
                shutdown.took,
                codes(&sent),
                stream.raw,
                stream.duplicates,
            );
            Ok(())
        },
    )
    .await
}

/// One of two validators stopped with SIGTERM while scans flow: `/readyz`
/// turns red before it stops serving, it finishes the scans it holds and
/// commits their offsets (the other validator redelivers none of them: no
/// duplicate on the stream), and exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validator_stops_gracefully_under_load() -> Result<()> {
    with_app(TestApp::distributed().await?, |app| async move {
        let second = app.start_validator().await?;
        let (_show, tokens, scanners) = venue(&app, 60, 6).await?;
        let flow = Flow::start(
            &app,
            enters(SCANS, &tokens, &scanners),
            IN_FLIGHT,
            Retry::Unavailable,
        );
        flow.wait_for(SCANS / 4).await?;
        let held = assigned_scan_partitions(&app.validator_log(second)?);
        ensure!(
            !held.is_empty(),
            "the second validator holds no scan partition"
        );
        let shutdown = app.stop_validator_watching(second).await?;
        stopped_cleanly(
            "the validator",
            "shutting down",
            Some(CONSUMERS_RED_THEN_STOPPED),
            &shutdown,
        )?;
        let sent = flow.finish().await?;
        app.settle().await?;
        let log = app.logs();
        ensure!(
            !log.contains("still in flight at shutdown"),
            "the validator gave up records in flight"
        );
        // The remaining validator takes over the stopped one's partitions: a
        // rebalance, after which records may be handed out again.
        let stream = nothing_lost(&app, &sent, &scanners[0], Delivery::AtLeastOnce).await?;
        // `decisions` is keyed and partitioned as `scans` is: a decision published
        // twice on a partition the stopped validator held was redelivered from it.
        // The remaining validator may redeliver records of its own partitions that
        // were in flight when the group rebalanced (at least once, same scan id).
        let (from_stopped, from_rebalance): (Vec<i32>, Vec<i32>) = stream
            .duplicated_partitions
            .iter()
            .partition(|partition| held.contains(partition));
        ensure!(
            from_stopped.is_empty(),
            "decisions of partitions {from_stopped:?}, which the stopped validator held \
             ({held:?}), were published twice: it did not commit what it finished"
        );
        eprintln!(
            "fault: validator SIGTERM (one of two, holding partitions {held:?}) with \
             {IN_FLIGHT} scans in flight; /readyz red {:?} after the signal, exit 0 after \
             {:?}; tries by HTTP code {:?}; decisions on the stream {} ({} duplicates by scan \
             id, on the remaining validator's partitions {from_rebalance:?})",
            shutdown.first_red(),
            shutdown.took,
            codes(&sent),
            stream.raw,
            stream.duplicates,
        );
        Ok(())
    })
    .await
}

/// The registry stopped with SIGTERM while devices are configured: `/readyz`
/// turns red before it stops serving, it finishes and commits what it holds
/// (no device published twice), exits cleanly, and once started again the
/// remaining calls are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_stops_gracefully_under_load() -> Result<()> {
    const DEVICES: usize = 120;
    with_app(TestApp::distributed().await?, |app| async move {
        let (show, _tokens, _scanners) = venue(&app, 1, 1).await?;
        let macs: Vec<String> = (0..DEVICES).map(|_| unique_mac()).collect();
        let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let calls = tokio::spawn({
            let (app, macs, venue_id) = (app.clone(), macs.clone(), show.venue_id.clone());
            let answered = answered.clone();
            async move {
                let permits = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
                let mut set = tokio::task::JoinSet::new();
                for (i, mac) in macs.into_iter().enumerate() {
                    let (app, venue_id, permits, answered) = (
                        app.clone(),
                        venue_id.clone(),
                        permits.clone(),
                        answered.clone(),
                    );
                    set.spawn(async move {
                        let _permit = permits.acquire_owned().await?;
                        let body = json!({
                            "venueId": venue_id, "name": format!("Scanner {i}"), "mac": mac,
                            "ip": "10.0.0.7", "gateName": format!("Gate {}", i % 4),
                            "serial": mac, "model": "Janam XT2"
                        });
                        let codes = init_until_configured(&app, &body).await;
                        answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        codes.map(|codes| (mac, codes))
                    });
                }
                let mut outcomes = BTreeMap::new();
                while let Some(joined) = set.join_next().await {
                    let (mac, codes) = joined??;
                    outcomes.insert(mac, codes);
                }
                anyhow::Ok(outcomes)
            }
        });
        while answered.load(std::sync::atomic::Ordering::Relaxed) < DEVICES / 4 {
            ensure!(!calls.is_finished(), "the calls ended before SIGTERM");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let shutdown = app.stop_registry_watching().await?;
        stopped_cleanly(
            "the registry",
            "shutting down",
            Some(CONSUMERS_RED_THEN_STOPPED),
            &shutdown,
        )?;
        app.restart_registry().await?;
        let outcomes = calls.await??;

        // Each device on `devices` as often as it was configured: once, unless
        // a call answered 503 was applied anyway and then applied again on retry.
        let cluster = app.cluster().context("distributed")?;
        // Every device request finished first: a redelivery still under way
        // would publish its device after the read.
        wait_until_committed(
            &cluster.bootstrap,
            &cluster.registry_group(),
            &cluster.topic("registry"),
            READ_FOR,
        )
        .await?;
        let mut published: BTreeMap<String, usize> = BTreeMap::new();
        for record in read_topic(&cluster.bootstrap, &cluster.topic("devices"), READ_FOR).await? {
            let device = pb::Device::decode(record.payload.as_slice())?;
            *published.entry(device.mac).or_default() += 1;
        }
        let mut once = 0;
        for (mac, codes) in &outcomes {
            let count = published.get(mac).copied().unwrap_or_default();
            ensure!(
                count >= 1,
                "{mac} was configured ({codes:?}) but is not on devices"
            );
            if codes == &[200] {
                once += 1;
                ensure!(
                    count == 1,
                    "{mac}, configured by one call, is on devices {count} times: redelivered"
                );
            }
        }
        let log = app.logs();
        ensure!(
            !log.contains("still in flight at shutdown"),
            "the registry gave up records in flight"
        );
        eprintln!(
            "fault: registry SIGTERM with {IN_FLIGHT} device inits in flight; /readyz red {:?} \
             after the signal, exit 0 after {:?}; {once}/{DEVICES} devices configured by one \
             call, each on devices once; calls by HTTP codes {:?}",
            shutdown.first_red(),
            shutdown.took,
            outcomes
                .values()
                .fold(BTreeMap::<Vec<u16>, usize>::new(), |mut acc, codes| {
                    *acc.entry(codes.clone()).or_default() += 1;
                    acc
                }),
        );
        Ok(())
    })
    .await
}

/// Sends a device/init until it is answered 200 (retrying 503s as a scanner
/// app does); the HTTP codes of every try.
async fn init_until_configured(app: &TestApp, body: &Value) -> Result<Vec<u16>> {
    let deadline = Instant::now() + RETRY_FOR;
    let mut codes = Vec::new();
    loop {
        let reply = app.device_init(body).await?;
        codes.push(reply.code);
        match reply.code {
            200 => return Ok(codes),
            503 => {
                reply.expect(503, "UNAVAILABLE")?;
                ensure!(
                    Instant::now() < deadline,
                    "device/init still 503: {codes:?}"
                );
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            _ => anyhow::bail!("device/init answered {}", reply.text),
        }
    }
}

/// Redis frozen (SIGSTOP) longer than the store waits for an answer, while scans
/// flow, then let go (SIGCONT): commits sent before the freeze time out in the
/// validator but are applied when Redis runs again. Their scans, answered 503
/// meanwhile, get that decision on retry, and it is on `decisions` all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_stall_past_the_store_timeout_loses_no_decision() -> Result<()> {
    with_app(TestApp::distributed().await?, |app| async move {
        let (_show, tokens, scanners) = venue(&app, 60, 6).await?;
        let flow = Flow::start(
            &app,
            enters(SCANS, &tokens, &scanners),
            IN_FLIGHT,
            Retry::Unavailable,
        );
        flow.wait_for(SCANS / 5).await?;
        app.pause_redis().await?;
        let answered_before = flow.answered();
        tokio::time::sleep(REDIS_STALL).await;
        app.resume_redis().await?;
        let sent = flow.finish().await?;
        let unavailable: usize = sent.iter().map(Sent::unavailable).sum();
        ensure!(
            unavailable > 0,
            "no scan was answered 503: the stall interrupted nothing"
        );
        let stream = nothing_lost(&app, &sent, &scanners[0], Delivery::ExactlyOnce).await?;
        eprintln!(
            "fault: Redis SIGSTOP for {REDIS_STALL:?} after {answered_before}/{SCANS} scans \
             answered, {IN_FLIGHT} in flight; tries by HTTP code {:?} ({unavailable} answered \
             503); decisions on the stream {} ({} duplicates by scan id)",
            codes(&sent),
            stream.raw,
            stream.duplicates,
        );
        Ok(())
    })
    .await
}

/// Redis holds back every write for longer than the store waits for an answer
/// (`CLIENT PAUSE … WRITE`: reads go on, scripts wait), as a stalled disk under
/// `appendfsync always` does. Commits time out in the validator; when the pause
/// ends Redis runs them, too late to change anything, so no scan answered 503
/// was decided behind that answer, and every decision made is on `decisions`.
/// (Before the commit carried its last moment, these commits were applied after
/// the 503 and their decisions, answered to the retries, never published.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_held_past_their_timeout_decide_nothing_behind_a_503() -> Result<()> {
    with_app(TestApp::distributed().await?, |app| async move {
        let (_show, tokens, scanners) = venue(&app, 60, 6).await?;
        let flow = Flow::start(
            &app,
            enters(SCANS, &tokens, &scanners),
            IN_FLIGHT,
            Retry::Unavailable,
        );
        flow.wait_for(SCANS / 5).await?;
        let paused = app
            .redis_command(&format!("CLIENT PAUSE {} WRITE", REDIS_STALL.as_millis()))
            .await?;
        ensure!(paused == "+OK", "CLIENT PAUSE answered {paused}");
        let answered_before = flow.answered();
        let sent = flow.finish().await?;
        let unavailable: usize = sent.iter().map(Sent::unavailable).sum();
        ensure!(
            unavailable > 0,
            "no scan was answered 503: the pause held back nothing"
        );
        let stream = nothing_lost(&app, &sent, &scanners[0], Delivery::ExactlyOnce).await?;
        eprintln!(
            "fault: Redis writes paused {REDIS_STALL:?} after {answered_before}/{SCANS} scans \
             answered, {IN_FLIGHT} in flight; tries by HTTP code {:?} ({unavailable} answered \
             503); decisions on the stream {} ({} duplicates by scan id)",
            codes(&sent),
            stream.raw,
            stream.duplicates,
        );
        Ok(())
    })
    .await
}
