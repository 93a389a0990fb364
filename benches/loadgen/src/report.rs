//! The run's report: one structure, printed as text for people or as JSON
//! (`--json`) for scripts. The JSON field names are a stable interface
//! (docs/benchmarks.md); new fields may be added, none renamed.

use crate::drive::{Load, Outcome};
use crate::mix::{Mix, Op};
use crate::setup::{DevicesReport, InventoryReport, per_second};
use crate::stats::{FailureCounts, OpCounts};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

/// The version of the JSON layout; bumped only if a field changes meaning.
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: u32,
    /// The base URL driven, or several separated by commas.
    pub url: String,
    /// `closed` or `open`.
    pub mode: &'static str,
    /// Workers, each with one keep-alive connection: the concurrency of a closed
    /// loop, the in-flight bound of an open one.
    pub connections: usize,
    /// Open loop: requests per second.
    pub rate: Option<u64>,
    pub threads: usize,
    pub mix: Mix,
    pub setup: SetupReport,
    pub warmup_seconds: f64,
    pub duration_seconds: f64,
    /// The window the figures below cover: the duration, or less when the fresh
    /// tickets ran out.
    pub measured_seconds: f64,
    /// Requests sent in the window: `answered` plus every `errors` count.
    pub sent: u64,
    pub answered: u64,
    /// `answered / measured_seconds`.
    pub throughput_per_second: f64,
    pub latency_us: Latency,
    /// `result.status` → answers.
    pub statuses: BTreeMap<String, u64>,
    /// Answers without a readable `result.status`.
    pub unparsed: u64,
    /// HTTP code → answers.
    pub http_codes: BTreeMap<String, u64>,
    pub errors: Errors,
    pub ops: OpsReport,
    /// Duplicates and exits sent as enters of fresh tickets because their worker
    /// had not entered a ticket yet (counted under `ops.enter`).
    pub substituted: u64,
    pub warmup: WarmupReport,
    pub tickets: TicketsReport,
    pub open_loop: Option<OpenLoopReport>,
    pub passed: bool,
    /// Why `passed` is false, one sentence each.
    pub failures: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SetupReport {
    pub inventory: InventoryReport,
    pub devices: DevicesReport,
}

/// Latency percentiles in microseconds, from the due time (open loop) or the
/// send time (closed loop) to the last byte of the answer.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Errors {
    pub connect: u64,
    pub timeout: u64,
    pub transport: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct OpsReport {
    pub enter: OpReport,
    pub duplicate: OpReport,
    pub exit: OpReport,
    pub validate: OpReport,
    pub unknown: OpReport,
}

/// One op: sent, answered, and answered with another status than
/// `expected_status`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct OpReport {
    pub expected_status: &'static str,
    pub sent: u64,
    pub answered: u64,
    pub unexpected: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct WarmupReport {
    pub sent: u64,
    /// Answered with a 5xx or not answered.
    pub failed: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct TicketsReport {
    pub loaded: u64,
    /// Fresh tickets handed out (warm-up included).
    pub fresh_used: u64,
    pub exhausted: bool,
    /// Seconds from the start of the drive (warm-up included).
    pub exhausted_after_seconds: Option<f64>,
}

/// Open loop only: how well the timetable was kept.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct OpenLoopReport {
    /// Requests due in the measured window.
    pub scheduled: u64,
    /// Sent after their due time because every in-flight slot was busy
    /// (their latency still counts from the due time).
    pub late: u64,
    /// Due in the window but never sent: the window closed first.
    pub missed: u64,
    pub max_lag_us: u64,
}

/// What the report is made of besides the drive's outcome.
#[derive(Debug, Clone)]
pub struct Context {
    pub url: String,
    pub load: Load,
    pub threads: usize,
    pub mix: Mix,
    pub warmup: Duration,
    pub duration: Duration,
    pub tickets: u64,
    pub allow_errors: bool,
    pub setup: SetupReport,
}

impl Report {
    pub fn new(context: Context, outcome: &Outcome) -> Report {
        let recorder = &outcome.recorder;
        let measured_seconds = outcome
            .window_end
            .saturating_duration_since(outcome.warmup_end)
            .as_secs_f64();
        let answered = recorder.answered_count();
        let sent = recorder.sent();
        let histogram = &recorder.latency;
        let latency = if histogram.is_empty() {
            Latency {
                min: 0,
                mean: 0.0,
                p50: 0,
                p90: 0,
                p99: 0,
                p999: 0,
                max: 0,
            }
        } else {
            Latency {
                min: histogram.min(),
                mean: histogram.mean(),
                p50: histogram.value_at_quantile(0.50),
                p90: histogram.value_at_quantile(0.90),
                p99: histogram.value_at_quantile(0.99),
                p999: histogram.value_at_quantile(0.999),
                max: histogram.max(),
            }
        };
        let op = |op: Op| {
            let OpCounts {
                sent,
                answered,
                unexpected,
            } = recorder.ops[op.index()];
            OpReport {
                expected_status: op.expected_status(),
                sent,
                answered,
                unexpected,
            }
        };
        let FailureCounts {
            connect,
            timeout,
            transport,
        } = recorder.failures;
        let server_errors: u64 = recorder
            .http_codes
            .iter()
            .filter(|(code, _)| *code >= 500)
            .map(|(_, count)| count)
            .sum();
        let open_loop = outcome.scheduled.map(|scheduled| OpenLoopReport {
            scheduled,
            late: recorder.late,
            missed: scheduled.saturating_sub(sent),
            max_lag_us: u64::try_from(recorder.max_lag.as_micros()).unwrap_or(u64::MAX),
        });
        let exhausted_after_seconds = outcome
            .exhausted_at
            .map(|at| at.saturating_duration_since(outcome.start).as_secs_f64());

        let mut failures = Vec::new();
        if !context.allow_errors {
            if server_errors > 0 {
                failures.push(format!("{server_errors} answers with an HTTP 5xx code"));
            }
            if recorder.failures.total() > 0 {
                failures.push(format!(
                    "{} requests got no answer (connect {connect}, timeout {timeout}, transport {transport})",
                    recorder.failures.total()
                ));
            }
            if recorder.warmup_failed > 0 {
                failures.push(format!(
                    "{} warm-up requests got a 5xx or no answer",
                    recorder.warmup_failed
                ));
            }
        }
        if let Some(after) = exhausted_after_seconds {
            failures.push(format!(
                "the {} fresh tickets ran out after {after:.1} s of {:.1} s: load more with --tickets",
                context.tickets,
                (context.warmup + context.duration).as_secs_f64()
            ));
        }

        let (mode, rate) = match context.load {
            Load::Closed { .. } => ("closed", None),
            Load::Open { rate, .. } => ("open", Some(rate.get())),
        };
        Report {
            schema: SCHEMA,
            url: context.url,
            mode,
            connections: context.load.workers(),
            rate,
            threads: context.threads,
            mix: context.mix,
            setup: context.setup,
            warmup_seconds: context.warmup.as_secs_f64(),
            duration_seconds: context.duration.as_secs_f64(),
            measured_seconds,
            sent,
            answered,
            throughput_per_second: per_second(answered, measured_seconds),
            latency_us: latency,
            statuses: recorder.statuses.iter().cloned().collect(),
            unparsed: recorder.unparsed,
            http_codes: recorder
                .http_codes
                .iter()
                .map(|(code, count)| (code.to_string(), *count))
                .collect(),
            errors: Errors {
                connect,
                timeout,
                transport,
            },
            ops: OpsReport {
                enter: op(Op::Enter),
                duplicate: op(Op::Duplicate),
                exit: op(Op::Exit),
                validate: op(Op::Validate),
                unknown: op(Op::Unknown),
            },
            substituted: recorder.substituted,
            warmup: WarmupReport {
                sent: recorder.warmup_sent,
                failed: recorder.warmup_failed,
            },
            tickets: TicketsReport {
                loaded: context.tickets,
                fresh_used: outcome.fresh_used,
                exhausted: exhausted_after_seconds.is_some(),
                exhausted_after_seconds,
            },
            open_loop,
            passed: failures.is_empty(),
            failures,
        }
    }

    /// The report for people.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = self.write_text(&mut out);
        out
    }

    fn write_text(&self, out: &mut String) -> std::fmt::Result {
        let load = match self.rate {
            Some(rate) => format!(
                "open loop at {rate}/s, at most {} in flight",
                self.connections
            ),
            None => format!("closed loop, {} connections", self.connections),
        };
        writeln!(out, "presence-loadgen against {}", self.url)?;
        writeln!(
            out,
            "load:      {load}, {} s measured after {} s warm-up, mix {}",
            self.duration_seconds, self.warmup_seconds, self.mix
        )?;
        let inventory = &self.setup.inventory;
        writeln!(
            out,
            "setup:     {} tickets loaded in {:.2} s ({:.0} tickets/s, {} requests); {} devices on {} gates in {:.2} s",
            inventory.tickets,
            inventory.seconds,
            inventory.tickets_per_second,
            inventory.requests,
            self.setup.devices.devices,
            self.setup.devices.gates,
            self.setup.devices.seconds
        )?;
        writeln!(
            out,
            "requests:  {} sent, {} answered in {:.2} s = {:.1}/s",
            self.sent, self.answered, self.measured_seconds, self.throughput_per_second
        )?;
        let l = &self.latency_us;
        writeln!(
            out,
            "latency:   p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (min {}, mean {})",
            millis(l.p50 as f64),
            millis(l.p90 as f64),
            millis(l.p99 as f64),
            millis(l.p999 as f64),
            millis(l.max as f64),
            millis(l.min as f64),
            millis(l.mean)
        )?;
        write!(out, "statuses: ")?;
        for (status, count) in &self.statuses {
            write!(out, " {status} {count}")?;
        }
        if self.unparsed > 0 {
            write!(out, " (no status) {}", self.unparsed)?;
        }
        writeln!(out)?;
        write!(out, "http:     ")?;
        for (code, count) in &self.http_codes {
            write!(out, " {code} {count}")?;
        }
        writeln!(out)?;
        writeln!(
            out,
            "errors:    connect {}  timeout {}  transport {}",
            self.errors.connect, self.errors.timeout, self.errors.transport
        )?;
        write!(out, "ops:      ")?;
        for (name, op) in [
            ("enter", self.ops.enter),
            ("duplicate", self.ops.duplicate),
            ("exit", self.ops.exit),
            ("validate", self.ops.validate),
            ("unknown", self.ops.unknown),
        ] {
            if op.sent > 0 {
                write!(out, " {name} {}", op.sent)?;
                if op.unexpected > 0 {
                    write!(out, " ({} not {})", op.unexpected, op.expected_status)?;
                }
            }
        }
        if self.substituted > 0 {
            write!(
                out,
                "; {} duplicates/exits sent as enters",
                self.substituted
            )?;
        }
        writeln!(out)?;
        if self.warmup.sent > 0 {
            writeln!(
                out,
                "warm-up:   {} sent, {} failed (not in the figures above)",
                self.warmup.sent, self.warmup.failed
            )?;
        }
        writeln!(
            out,
            "tickets:   {} of {} fresh tickets used{}",
            self.tickets.fresh_used,
            self.tickets.loaded,
            if self.tickets.exhausted {
                ", EXHAUSTED"
            } else {
                ""
            }
        )?;
        if let Some(open) = &self.open_loop {
            writeln!(
                out,
                "schedule:  {} due, {} sent late (max lag {}), {} never sent",
                open.scheduled,
                open.late,
                millis(open.max_lag_us as f64),
                open.missed
            )?;
        }
        if self.passed {
            writeln!(out, "result:    PASS")?;
        } else {
            writeln!(out, "result:    FAIL")?;
            for failure in &self.failures {
                writeln!(out, "  - {failure}")?;
            }
        }
        Ok(())
    }
}

fn millis(micros: f64) -> String {
    format!("{:.2} ms", micros / 1000.0)
}
