//! The live line: while the drive runs, one line on stderr, redrawn twice a
//! second, with the time elapsed, the rate of answers over the last half
//! second, p50 and p99 of the measured window so far, and the errors (5xx
//! answers and requests without an answer). Drawn only on a terminal; the
//! final report is unchanged.
//!
//! Each worker adds to its own tally (a lock nobody else takes but the line,
//! twice a second), so measuring costs the drive next to nothing.

use crate::error::LoadgenError;
use crate::stats::new_latency_histogram;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often the line is redrawn.
pub const REDRAW: Duration = Duration::from_millis(500);

#[derive(Debug)]
struct Tally {
    latency: Histogram<u64>,
    answered: u64,
    errors: u64,
    warmup_sent: u64,
}

/// What the workers have done so far, one tally each.
#[derive(Debug)]
pub struct Live {
    tallies: Vec<Mutex<Tally>>,
}

/// Sums of the tallies at one moment.
#[derive(Debug)]
pub struct Totals {
    latency: Histogram<u64>,
    pub answered: u64,
    pub errors: u64,
    pub warmup_sent: u64,
}

impl Live {
    pub fn new(workers: usize) -> Result<Self, LoadgenError> {
        let tallies = (0..workers)
            .map(|_| {
                Ok(Mutex::new(Tally {
                    latency: new_latency_histogram()?,
                    answered: 0,
                    errors: 0,
                    warmup_sent: 0,
                }))
            })
            .collect::<Result<_, LoadgenError>>()?;
        Ok(Self { tallies })
    }

    fn tally(&self, worker: usize) -> std::sync::MutexGuard<'_, Tally> {
        self.tallies[worker % self.tallies.len().max(1)]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A measured request of `worker`: answered after `latency` (a 5xx counts
    /// as an error too), or `None` when it got no answer.
    pub fn measured(&self, worker: usize, latency: Option<Duration>, server_error: bool) {
        let mut tally = self.tally(worker);
        match latency {
            Some(latency) => {
                let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                tally.latency.saturating_record(micros.max(1));
                tally.answered += 1;
                if server_error {
                    tally.errors += 1;
                }
            }
            None => tally.errors += 1,
        }
    }

    /// A warm-up request of `worker`.
    pub fn warming_up(&self, worker: usize) {
        self.tally(worker).warmup_sent += 1;
    }

    pub fn totals(&self) -> Result<Totals, LoadgenError> {
        let mut totals = Totals {
            latency: new_latency_histogram()?,
            answered: 0,
            errors: 0,
            warmup_sent: 0,
        };
        for tally in &self.tallies {
            let tally = tally.lock().unwrap_or_else(PoisonError::into_inner);
            totals
                .latency
                .add(&tally.latency)
                .map_err(|error| LoadgenError::Histogram(error.to_string()))?;
            totals.answered += tally.answered;
            totals.errors += tally.errors;
            totals.warmup_sent += tally.warmup_sent;
        }
        Ok(totals)
    }
}

/// The drive's clock, for the line.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start: Instant,
    pub warmup_end: Instant,
    pub end: Instant,
}

/// The line for `totals` at `now`; `rate` answers a second lately.
pub fn line(totals: &Totals, window: Window, now: Instant, rate: f64) -> String {
    if now < window.warmup_end {
        return format!(
            "warming up {:.1} s of {:.1} s, {} sent",
            now.duration_since(window.start).as_secs_f64(),
            window.warmup_end.duration_since(window.start).as_secs_f64(),
            totals.warmup_sent
        );
    }
    let millis = |quantile: f64| totals.latency.value_at_quantile(quantile) as f64 / 1000.0;
    let (p50, p99) = if totals.answered == 0 {
        ("-".to_owned(), "-".to_owned())
    } else {
        (
            format!("{:.2} ms", millis(0.5)),
            format!("{:.2} ms", millis(0.99)),
        )
    };
    format!(
        "{:.1} s of {:.1} s  {rate:.0} req/s  p50 {p50}  p99 {p99}  answered {}  errors {}",
        now.min(window.end)
            .duration_since(window.warmup_end)
            .as_secs_f64(),
        window.end.duration_since(window.warmup_end).as_secs_f64(),
        totals.answered,
        totals.errors
    )
}

/// Redraws the line until `stop` resolves, then leaves its last state on
/// screen (the report follows on stdout).
pub async fn show(live: &Live, window: Window, stop: impl std::future::Future<Output = ()>) {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
        bar.set_style(style);
    }
    let mut stop = std::pin::pin!(stop);
    let mut ticks = tokio::time::interval(REDRAW);
    let mut last = (Instant::now(), 0);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = ticks.tick() => {}
        }
        let Ok(totals) = live.totals() else { break };
        let now = Instant::now();
        let seconds = now.duration_since(last.0).as_secs_f64();
        #[allow(clippy::cast_precision_loss)] // display only
        let rate = if seconds > 0.0 {
            totals.answered.saturating_sub(last.1) as f64 / seconds
        } else {
            0.0
        };
        last = (now, totals.answered);
        bar.set_message(line(&totals, window, now, rate));
        bar.tick();
    }
    bar.abandon();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_time_rate_percentiles_and_errors() {
        let live = Live::new(2).unwrap();
        for millis in 1..=100_u64 {
            live.measured(
                usize::from(millis % 2 == 1),
                Some(Duration::from_millis(millis)),
                false,
            );
        }
        live.measured(0, None, false);
        live.measured(1, Some(Duration::from_millis(5)), true);
        let start = Instant::now();
        let window = Window {
            start,
            warmup_end: start + Duration::from_secs(1),
            end: start + Duration::from_secs(11),
        };
        let totals = live.totals().unwrap();
        let text = line(&totals, window, start + Duration::from_millis(3500), 1234.4);
        assert_eq!(
            text,
            "2.5 s of 10.0 s  1234 req/s  p50 50.02 ms  p99 99.01 ms  answered 101  errors 2"
        );
        live.warming_up(1);
        let warming = line(
            &live.totals().unwrap(),
            window,
            start + Duration::from_millis(500),
            0.0,
        );
        assert_eq!(warming, "warming up 0.5 s of 1.0 s, 1 sent");
    }
}
