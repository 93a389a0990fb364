//! `presence-loadgen`: drives any server that speaks the Presence HTTP API
//! (SPEC §2) and measures it, using nothing but that public contract.
//!
//! - [`cli`]: the command line and its environment twins, turned into [`Settings`];
//! - [`setup`]: a fresh inventory through `POST /admin/v1/inventory` and devices
//!   through `device/init`, timed;
//! - [`drive`]: closed-loop or open-loop workers sending the [`mix`] of scans;
//! - [`schedule`]: the open loop's timetable;
//! - [`http`]: one keep-alive HTTP/1.1 connection per worker, and `result.status`
//!   found without parsing the JSON;
//! - [`stats`]: per-worker counts and an HDR latency histogram;
//! - [`live`]: the line redrawn on a terminal while the drive runs;
//! - [`report`]: the text and JSON report.

pub mod cli;
pub mod drive;
pub mod error;
pub mod http;
pub mod live;
pub mod mix;
pub mod report;
pub mod schedule;
pub mod setup;
pub mod stats;

pub use drive::Load;
pub use error::LoadgenError;
pub use mix::{Mix, Op};
pub use report::Report;

use crate::drive::Plan;
use crate::http::Target;
use crate::report::{Context, SetupReport};
use crate::setup::{Device, RunIds};
use std::fmt;
use std::time::Duration;

/// The highest open-loop rate: beyond it one slot would be under a nanosecond.
pub const MAX_RATE: u64 = 1_000_000;

/// The API key; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(…)")
    }
}

/// Everything one run needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Base URLs of the server, `http://HOST[:PORT][/PREFIX]`: the drive's
    /// connections take turns over them; setup goes through the first.
    pub urls: Vec<String>,
    /// An admin key: the inventory is loaded through `/admin/v1/inventory`.
    pub api_key: ApiKey,
    pub tickets: u64,
    pub devices: u64,
    pub gates: u64,
    pub warmup: Duration,
    pub duration: Duration,
    pub load: Load,
    pub mix: Mix,
    /// Per request, connect included.
    pub timeout: Duration,
    /// Tickets per inventory request.
    pub inventory_batch: u64,
    /// Runtime threads; 1 keeps the generator on one core.
    pub threads: usize,
    /// Pass even with 5xx answers or requests without an answer.
    pub allow_errors: bool,
    /// Draw the live line (elapsed, rate, p50/p99 so far, errors) on stderr.
    pub live: bool,
}

impl Settings {
    /// Checks what the types cannot say.
    pub fn validate(&self) -> Result<(), LoadgenError> {
        let fail = |reason: String| Err(LoadgenError::Settings(reason));
        if self.urls.is_empty() || self.urls.iter().any(|url| url.trim().is_empty()) {
            return fail("--url must name at least one base URL, none empty".to_owned());
        }
        if self.tickets == 0 {
            return fail("--tickets must be at least 1".to_owned());
        }
        if self.devices == 0 {
            return fail("--devices must be at least 1".to_owned());
        }
        if self.gates == 0 || self.gates > self.devices {
            return fail(format!(
                "--gates must be between 1 and --devices ({})",
                self.devices
            ));
        }
        if self.duration.is_zero() {
            return fail("--duration must be above 0".to_owned());
        }
        if self.timeout.is_zero() {
            return fail("--timeout must be above 0".to_owned());
        }
        if self.inventory_batch == 0 {
            return fail("--inventory-batch must be at least 1".to_owned());
        }
        if self.threads == 0 {
            return fail("--threads must be at least 1".to_owned());
        }
        match self.load {
            Load::Closed { concurrency: 0 } => fail("--concurrency must be at least 1".to_owned()),
            Load::Open {
                max_in_flight: 0, ..
            } => fail("--max-in-flight must be at least 1".to_owned()),
            Load::Open { rate, .. } if rate.get() > MAX_RATE => {
                fail(format!("--rate must be at most {MAX_RATE}"))
            }
            Load::Closed { .. } | Load::Open { .. } => Ok(()),
        }
    }
}

/// A server with this run's inventory and devices, ready to be driven.
#[derive(Debug)]
pub struct Prepared {
    /// One per base URL, the first used for setup.
    targets: Vec<Target>,
    ids: RunIds,
    devices: Vec<Device>,
    setup: SetupReport,
}

impl Prepared {
    /// What the setup took.
    pub fn setup(&self) -> &SetupReport {
        &self.setup
    }
}

/// The setup phase: loads `settings.tickets` fresh tickets and configures the
/// devices. Any refusal (bad key, server down, bad answer) stops here.
pub async fn prepare(settings: &Settings) -> Result<Prepared, LoadgenError> {
    settings.validate()?;
    let mut targets = Vec::with_capacity(settings.urls.len());
    for url in &settings.urls {
        targets.push(Target::resolve(url, settings.api_key.expose()).await?);
    }
    let target = targets
        .first()
        .ok_or_else(|| LoadgenError::Settings("--url names no base URL".to_owned()))?;
    let ids = RunIds::new();
    let mut connection = target.connect().await?;
    let inventory = setup::load_inventory(
        target,
        &mut connection,
        &ids,
        settings.tickets,
        settings.inventory_batch,
        // A batch is validated and applied whole: allow it far more than a scan.
        settings.timeout.max(Duration::from_secs(120)),
    )
    .await?;
    let (devices, devices_report) = setup::init_devices(
        target,
        &mut connection,
        &ids,
        settings.devices,
        settings.gates,
        settings.timeout,
    )
    .await?;
    Ok(Prepared {
        targets,
        ids,
        devices,
        setup: SetupReport {
            inventory,
            devices: devices_report,
        },
    })
}

/// The drive phase on a prepared server, and its report.
pub async fn run(settings: &Settings, prepared: Prepared) -> Result<Report, LoadgenError> {
    let plan = Plan {
        load: settings.load,
        warmup: settings.warmup,
        duration: settings.duration,
        timeout: settings.timeout,
        mix: settings.mix.clone(),
        live: settings.live,
    };
    let url = prepared
        .targets
        .iter()
        .map(Target::url)
        .collect::<Vec<_>>()
        .join(",");
    let outcome = drive::drive(
        prepared.targets,
        prepared.devices,
        prepared.ids,
        settings.tickets,
        &plan,
    )
    .await?;
    let context = Context {
        url,
        load: settings.load,
        threads: settings.threads,
        mix: settings.mix.clone(),
        warmup: settings.warmup,
        duration: settings.duration,
        tickets: settings.tickets,
        allow_errors: settings.allow_errors,
        setup: prepared.setup,
    };
    Ok(Report::new(context, &outcome))
}
