//! How long scans pause while the validators' consumer group rebalances: a
//! second validator started (1→2) and a rolling restart (each validator
//! stopped with SIGTERM and started again, in turn), while scans arrive at a
//! steady rate. A measurement for docs/benchmarks.md, not a check: ignored by
//! default, run with
//!
//! ```text
//! cargo nextest run -p presence-tests --all-features -E 'binary(rebalances)' \
//!     --run-ignored only --no-capture
//! ```
//!
//! `REBALANCE_EAGER=1` runs the services with eager rebalancing
//! (`PRESENCE_KAFKA_PROPERTIES=partition.assignment.strategy=range`), as before
//! cooperative-sticky assignment; `REBALANCE_PROPERTIES` adds other librdkafka
//! properties; `REBALANCE_STATIC=1` makes the restarted validator a static
//! member; `REBALANCE_LOGS=1` prints its log. Results: docs/benchmarks.md,
//! "Rebalances".

#![allow(clippy::unwrap_used, clippy::expect_used)]

use anyhow::Result;
use presence_tests::scans::{Retry, Sent, scan_until_decided_with, venue, with_app};
use presence_tests::stack::DistributedOptions;
use presence_tests::{ScanKind, TestApp, next_scan_time};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// One scan every this long: 50 a second, a busy venue's gates.
const SCAN_EVERY: Duration = Duration::from_millis(20);
/// Scans before and after each change, so each window has steady traffic on
/// both sides.
const QUIET: Duration = Duration::from_secs(3);

/// Whether the environment variable `name` is set to something.
fn flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|value| !value.is_empty())
}

/// Scans sent at a steady rate until stopped, each until decided.
struct Paced {
    sending: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Result<Vec<Sent>>>,
}

impl Paced {
    fn start(app: &TestApp, tokens: Vec<String>, scanner: presence_tests::Scanner) -> Self {
        let sending = Arc::new(AtomicBool::new(true));
        let task = tokio::spawn({
            let (app, sending) = (app.clone(), sending.clone());
            async move {
                let mut scans = tokio::task::JoinSet::new();
                let mut every = tokio::time::interval(SCAN_EVERY);
                let mut n = 0;
                while sending.load(Ordering::Relaxed) {
                    every.tick().await;
                    let body = scanner.body(&tokens[n % tokens.len()], next_scan_time());
                    n += 1;
                    let app = app.clone();
                    scans.spawn(async move {
                        scan_until_decided_with(&app, ScanKind::Validate, body, Retry::Unavailable)
                            .await
                    });
                }
                let mut sent = Vec::new();
                while let Some(scan) = scans.join_next().await {
                    sent.push(scan??);
                }
                Ok(sent)
            }
        });
        Self { sending, task }
    }

    async fn finish(self) -> Result<Vec<Sent>> {
        self.sending.store(false, Ordering::Relaxed);
        self.task.await?
    }
}

/// The tries started between `from` and `to`: how many, the longest, and how
/// many were answered 503.
fn window(sent: &[Sent], from: Instant, to: Instant) -> String {
    let tries: Vec<_> = sent
        .iter()
        .flat_map(|scan| &scan.attempts)
        .filter(|attempt| attempt.started >= from && attempt.started < to)
        .collect();
    let longest = tries
        .iter()
        .map(|attempt| attempt.finished - attempt.started)
        .max()
        .unwrap_or_default();
    let unavailable = tries
        .iter()
        .filter(|attempt| attempt.code == Some(503))
        .count();
    format!(
        "{} tries over {:.1} s, longest {} ms, {unavailable} answered 503",
        tries.len(),
        (to - from).as_secs_f64(),
        longest.as_millis()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement for docs/benchmarks.md; about a minute"]
async fn scan_pause_during_a_scale_up_and_a_rolling_restart() -> Result<()> {
    let eager = flag("REBALANCE_EAGER");
    let mut properties: Vec<String> = std::env::var("REBALANCE_PROPERTIES")
        .ok()
        .into_iter()
        .collect();
    if eager {
        properties.push("partition.assignment.strategy=range".to_owned());
    }
    let mut options = DistributedOptions::default();
    if !properties.is_empty() {
        options
            .env
            .push(("PRESENCE_KAFKA_PROPERTIES".to_owned(), properties.join(",")));
    }
    with_app(
        TestApp::distributed_with(options).await?,
        |app| async move {
            let (_show, tokens, mut scanners) = venue(&app, 200, 1).await?;
            let paced = Paced::start(&app, tokens, scanners.remove(0));
            tokio::time::sleep(QUIET).await;
            let steady = Instant::now();
            tokio::time::sleep(QUIET).await;

            let scale_up = Instant::now();
            let second = app.start_validator().await?;
            let scaled = scale_up.elapsed();
            tokio::time::sleep(QUIET).await;

            let rolling = Instant::now();
            for index in [0, second] {
                app.stop_validator(index).await?;
                app.restart_validator(index).await?;
            }
            let rolled = rolling.elapsed();
            tokio::time::sleep(QUIET).await;
            let end = Instant::now();
            let sent = paced.finish().await?;

            let strategy = if eager {
                "range (eager)"
            } else {
                "cooperative-sticky"
            };
            eprintln!("rebalance: {strategy} {properties:?}, one scan every {SCAN_EVERY:?}");
            eprintln!("rebalance: steady: {}", window(&sent, steady, scale_up));
            eprintln!(
                "rebalance: 1→2 scale-up (settled in {:.1} s): {}",
                scaled.as_secs_f64(),
                window(&sent, scale_up, rolling)
            );
            eprintln!(
                "rebalance: rolling restart of 2 (done in {:.1} s): {}",
                rolled.as_secs_f64(),
                window(&sent, rolling, end)
            );
            Ok(())
        },
    )
    .await
}

/// One validator restarted (SIGTERM, then started again at once) while scans
/// flow, as a dynamic member (it leaves its group and joins anew) or, with
/// `REBALANCE_STATIC=1`, as a static one (`PRESENCE_INSTANCE_ID`: it sends no
/// LeaveGroup and comes back under the same name within its session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement for docs/benchmarks.md; about 20 seconds"]
async fn scan_pause_during_a_validator_restart() -> Result<()> {
    let static_member = flag("REBALANCE_STATIC");
    let mut options = DistributedOptions::default();
    if static_member {
        options
            .env
            .push(("PRESENCE_INSTANCE_ID".to_owned(), "validator-0".to_owned()));
    }
    with_app(
        TestApp::distributed_with(options).await?,
        |app| async move {
            let (_show, tokens, mut scanners) = venue(&app, 200, 1).await?;
            let paced = Paced::start(&app, tokens, scanners.remove(0));
            tokio::time::sleep(QUIET).await;
            let restart = Instant::now();
            app.stop_validator(0).await?;
            app.restart_validator(0).await?;
            let restarted = restart.elapsed();
            tokio::time::sleep(QUIET).await;
            let end = Instant::now();
            let sent = paced.finish().await?;
            let membership = if static_member { "static" } else { "dynamic" };
            eprintln!(
                "rebalance: restart of the only validator, {membership} membership (ready again in \
             {:.1} s): {}",
                restarted.as_secs_f64(),
                window(&sent, restart, end)
            );
            if flag("REBALANCE_LOGS") {
                eprintln!("--- validator 0\n{}", app.validator_log(0)?);
            }
            Ok(())
        },
    )
    .await
}
