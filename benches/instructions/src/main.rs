//! `presence-instructions`: a fixed plan of scans ([`plan`]) through one path
//! of the services, in one thread, so that valgrind's callgrind can count the
//! instructions each scan takes (`scripts/bench/instructions.sh` runs it and
//! reads the profile; docs/benchmarks.md records the figures).
//!
//! Every path runs the plan's warm-up scans first, then the measured scans
//! inside [`measured_scans`], the one function the script cuts the profile at,
//! then checks that every answer is the one planned.
//!
//! - `validator-embedded`, `validator-redis`: [`Validator::decide`] on the
//!   embedded store (in a temporary directory) or on the Redis store at
//!   `--redis-url` ([`validator`]);
//! - `gateway`: the gateway's router handling the scans' HTTP requests
//!   ([`gateway`]).

mod gateway;
mod plan;
mod setup;
mod validator;

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use plan::Plan;
use presence_domain::Status;
use presence_ports::Stores;
use presence_store_embedded::{EmbeddedOptions, EmbeddedStore};
use presence_store_redis::{RedisOptions, RedisStore};
use presence_validator::Validator;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use tokio::runtime::Runtime;
use validator::EncodedDecisions;

#[derive(Debug, Parser)]
#[command(about = "Runs a fixed plan of scans through one path of Presence, for callgrind")]
struct Args {
    /// What the scans go through.
    #[arg(value_enum)]
    path: MeasuredPath,
    /// Scans measured.
    #[arg(long, default_value_t = 2000)]
    scans: usize,
    /// Scans before the measured ones, not counted: first-use costs (connections,
    /// scripts loaded, lazily built tables) stay out of the figures.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// The Redis server of `validator-redis`; it must not hold an earlier run's
    /// keys (the tickets would be entered already).
    #[arg(long, env = "PRESENCE_REDIS_URL")]
    redis_url: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum MeasuredPath {
    ValidatorEmbedded,
    ValidatorRedis,
    Gateway,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let _telemetry = presence_runtime::telemetry::init("presence-instructions")?;
    // One thread: every instruction of a scan runs between the two ends of
    // `measured_scans`, the same ones on every run.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let plan = Plan::new(args.warmup, args.scans);
    let data = tempfile::tempdir().context("creating the data directory")?;
    let statuses = match args.path {
        MeasuredPath::ValidatorEmbedded => {
            validator_path(&runtime, &embedded_stores(data.path())?, &plan)?
        }
        MeasuredPath::ValidatorRedis => {
            let url = args
                .redis_url
                .context("validator-redis needs --redis-url")?;
            let store = runtime
                .block_on(RedisStore::connect(&url, RedisOptions::default()))
                .context("connecting to Redis")?;
            validator_path(&runtime, &Stores::from_backend(store), &plan)?
        }
        MeasuredPath::Gateway => gateway_path(&runtime, &embedded_stores(data.path())?, &plan)?,
    };
    let expected: Vec<Status> = plan.measured.iter().map(|scan| scan.expected).collect();
    if statuses != expected {
        let first = statuses
            .iter()
            .zip(&expected)
            .position(|(got, want)| got != want)
            .unwrap_or(statuses.len().min(expected.len()));
        bail!(
            "measured scan {first} was answered {:?}, planned {:?}",
            statuses.get(first),
            expected.get(first)
        );
    }
    let count = |status: Status| statuses.iter().filter(|s| **s == status).count();
    println!(
        "{:?}: {} scans measured after {} warm-up scans, as planned: OKAY {}, ALREADY_ENTERED {}, NOT_FOUND {}",
        args.path,
        statuses.len(),
        plan.warmup.len(),
        count(Status::Okay),
        count(Status::AlreadyEntered),
        count(Status::NotFound),
    );
    Ok(())
}

/// Runs `scans` to the end. The script's callgrind dumps its counts as this
/// function starts and as [`measurement_ends`] starts, so the second dump
/// holds exactly the instructions of the measured scans (every thread's).
/// (Callgrind's dump on leaving a function missed this one's return.)
#[inline(never)]
fn measured_scans<F: Future>(runtime: &Runtime, scans: F) -> F::Output {
    let output = runtime.block_on(scans);
    measurement_ends();
    output
}

/// Marks the end of the measured scans for callgrind; does nothing else.
#[inline(never)]
fn measurement_ends() {
    // An empty function's call would be optimised away.
    std::hint::black_box(());
}

fn embedded_stores(data_dir: &Path) -> Result<Stores> {
    let store = EmbeddedStore::open(data_dir, EmbeddedOptions::default())
        .context("opening the embedded store")?;
    Ok(Stores::from_backend(store))
}

/// Sets up `stores`, decides the warm-up scans, then measures deciding the others.
fn validator_path(runtime: &Runtime, stores: &Stores, plan: &Plan) -> Result<Vec<Status>> {
    let scanner = runtime.block_on(setup::prepare(stores, plan))?;
    let validator = Validator::new(stores, Arc::new(EncodedDecisions::default()));
    let warmup = validator::commands(&plan.warmup, scanner, 0);
    let measured = validator::commands(&plan.measured, scanner, plan.warmup.len());
    runtime.block_on(validator::decide_all(&validator, &warmup))?;
    measured_scans(runtime, validator::decide_all(&validator, &measured))
}

/// Decides every scan of the plan with a validator on `stores` (not measured),
/// then measures the gateway answering the measured scans' requests with those
/// decisions.
fn gateway_path(runtime: &Runtime, stores: &Stores, plan: &Plan) -> Result<Vec<Status>> {
    let scanner = runtime.block_on(setup::prepare(stores, plan))?;
    let decisions = Arc::new(EncodedDecisions::default());
    let validator = Validator::new(stores, decisions.clone());
    let all: Vec<_> = plan.warmup.iter().chain(&plan.measured).cloned().collect();
    runtime.block_on(validator::decide_all(
        &validator,
        &validator::commands(&all, scanner, 0),
    ))?;
    let (router, sent_bytes) = gateway::router(decisions.take());
    let warmup = gateway::requests(&plan.warmup, scanner)?;
    let measured = gateway::requests(&plan.measured, scanner)?;
    runtime.block_on(gateway::send_all(&router, warmup))?;
    let bodies = measured_scans(runtime, gateway::send_all(&router, measured))?;
    tracing::info!(
        bytes = sent_bytes.load(std::sync::atomic::Ordering::Relaxed),
        "scan requests encoded"
    );
    gateway::statuses(&bodies)
}
