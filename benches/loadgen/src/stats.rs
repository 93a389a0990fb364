//! What one worker saw in the measured window; workers record without sharing
//! anything and their recorders are merged at the end.

use crate::error::LoadgenError;
use crate::mix::Op;
use hdrhistogram::Histogram;
use std::time::Duration;

/// Latencies above an hour are recorded as an hour.
const HIGHEST_MICROS: u64 = 3_600_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;

/// Why a request got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No connection could be opened.
    Connect,
    /// No complete answer within the request timeout.
    Timeout,
    /// The connection broke or the answer was not HTTP.
    Transport,
}

/// Per-op counters: what was sent, answered, and answered otherwise than the
/// contract says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpCounts {
    pub sent: u64,
    pub answered: u64,
    pub unexpected: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FailureCounts {
    pub connect: u64,
    pub timeout: u64,
    pub transport: u64,
}

impl FailureCounts {
    pub fn total(&self) -> u64 {
        self.connect + self.timeout + self.transport
    }
}

/// An empty histogram of latencies in microseconds, up to an hour.
pub fn new_latency_histogram() -> Result<Histogram<u64>, LoadgenError> {
    Histogram::new_with_bounds(1, HIGHEST_MICROS, SIGNIFICANT_DIGITS)
        .map_err(|e| LoadgenError::Histogram(e.to_string()))
}

#[derive(Debug, Clone)]
pub struct Recorder {
    pub latency: Histogram<u64>,
    /// `result.status` → count, in order of first appearance; a handful of
    /// entries, so a scan beats hashing.
    pub statuses: Vec<(String, u64)>,
    /// Answers without a readable `result.status`.
    pub unparsed: u64,
    pub http_codes: Vec<(u16, u64)>,
    pub failures: FailureCounts,
    pub ops: [OpCounts; 5],
    /// Duplicates and exits sent as fresh enters because the worker had no
    /// entered ticket yet.
    pub substituted: u64,
    /// Open loop: requests that could not leave at their due time because
    /// every in-flight slot was taken.
    pub late: u64,
    pub max_lag: Duration,
    /// Requests sent during the warm-up, not otherwise counted.
    pub warmup_sent: u64,
    /// Warm-up requests answered with a 5xx or not answered at all.
    pub warmup_failed: u64,
}

impl Recorder {
    pub fn new() -> Result<Self, LoadgenError> {
        Ok(Self {
            latency: new_latency_histogram()?,
            statuses: Vec::new(),
            unparsed: 0,
            http_codes: Vec::new(),
            failures: FailureCounts::default(),
            ops: [OpCounts::default(); 5],
            substituted: 0,
            late: 0,
            max_lag: Duration::ZERO,
            warmup_sent: 0,
            warmup_failed: 0,
        })
    }

    /// An answer to `op` after `latency`, with its HTTP code and `result.status`.
    pub fn answered(&mut self, op: Op, latency: Duration, code: u16, status: Option<&[u8]>) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency.saturating_record(micros.max(1));
        bump(&mut self.http_codes, code, 1);
        match status {
            Some(status) => {
                match self
                    .statuses
                    .iter_mut()
                    .find(|(known, _)| known.as_bytes() == status)
                {
                    Some((_, count)) => *count += 1,
                    None => self
                        .statuses
                        .push((String::from_utf8_lossy(status).into_owned(), 1)),
                }
            }
            None => self.unparsed += 1,
        }
        let counts = &mut self.ops[op.index()];
        counts.sent += 1;
        counts.answered += 1;
        if status != Some(op.expected_status().as_bytes()) {
            counts.unexpected += 1;
        }
    }

    /// A request of `op` that got no answer.
    pub fn failed(&mut self, op: Op, failure: Failure) {
        self.ops[op.index()].sent += 1;
        match failure {
            Failure::Connect => self.failures.connect += 1,
            Failure::Timeout => self.failures.timeout += 1,
            Failure::Transport => self.failures.transport += 1,
        }
    }

    /// A warm-up request, `failed` when it got a 5xx or no answer.
    pub fn warmup(&mut self, failed: bool) {
        self.warmup_sent += 1;
        if failed {
            self.warmup_failed += 1;
        }
    }

    /// An open-loop request that left `lag` after its due time.
    pub fn late(&mut self, lag: Duration) {
        self.late += 1;
        self.max_lag = self.max_lag.max(lag);
    }

    pub fn sent(&self) -> u64 {
        self.ops.iter().map(|o| o.sent).sum()
    }

    pub fn answered_count(&self) -> u64 {
        self.ops.iter().map(|o| o.answered).sum()
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &Recorder) -> Result<(), LoadgenError> {
        self.latency
            .add(&other.latency)
            .map_err(|e| LoadgenError::Histogram(e.to_string()))?;
        for (status, count) in &other.statuses {
            match self.statuses.iter_mut().find(|(known, _)| known == status) {
                Some((_, mine)) => *mine += count,
                None => self.statuses.push((status.clone(), *count)),
            }
        }
        self.unparsed += other.unparsed;
        for (code, count) in &other.http_codes {
            bump(&mut self.http_codes, *code, *count);
        }
        self.failures.connect += other.failures.connect;
        self.failures.timeout += other.failures.timeout;
        self.failures.transport += other.failures.transport;
        for (mine, theirs) in self.ops.iter_mut().zip(other.ops) {
            mine.sent += theirs.sent;
            mine.answered += theirs.answered;
            mine.unexpected += theirs.unexpected;
        }
        self.substituted += other.substituted;
        self.late += other.late;
        self.max_lag = self.max_lag.max(other.max_lag);
        self.warmup_sent += other.warmup_sent;
        self.warmup_failed += other.warmup_failed;
        Ok(())
    }
}

fn bump(codes: &mut Vec<(u16, u64)>, code: u16, by: u64) {
    match codes.iter_mut().find(|(known, _)| *known == code) {
        Some((_, count)) => *count += by,
        None => codes.push((code, by)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_across_merged_recorders() {
        let mut a = Recorder::new().unwrap();
        a.answered(Op::Enter, Duration::from_micros(100), 200, Some(b"OKAY"));
        a.answered(
            Op::Duplicate,
            Duration::from_micros(200),
            200,
            Some(b"OKAY"),
        );
        a.failed(Op::Enter, Failure::Timeout);
        let mut b = Recorder::new().unwrap();
        b.answered(Op::Enter, Duration::from_millis(3), 503, None);
        b.answered(Op::Unknown, Duration::ZERO, 200, Some(b"NOT_FOUND"));
        b.failed(Op::Exit, Failure::Connect);
        b.late(Duration::from_millis(2));
        b.warmup(false);
        b.warmup(true);
        a.merge(&b).unwrap();

        assert_eq!(a.sent(), 6);
        assert_eq!(a.answered_count(), 4);
        assert_eq!(a.latency.len(), 4);
        assert_eq!(
            a.statuses,
            [("OKAY".to_owned(), 2), ("NOT_FOUND".to_owned(), 1)]
        );
        assert_eq!(a.unparsed, 1);
        assert_eq!(a.http_codes, [(200, 3), (503, 1)]);
        assert_eq!(
            a.failures,
            FailureCounts {
                connect: 1,
                timeout: 1,
                transport: 0
            }
        );
        let enter = a.ops[Op::Enter.index()];
        assert_eq!((enter.sent, enter.answered, enter.unexpected), (3, 2, 1));
        let duplicate = a.ops[Op::Duplicate.index()];
        assert_eq!(
            duplicate.unexpected, 1,
            "OKAY is not what a duplicate expects"
        );
        assert_eq!(a.ops[Op::Unknown.index()].unexpected, 0);
        assert_eq!((a.late, a.max_lag), (1, Duration::from_millis(2)));
        assert_eq!((a.warmup_sent, a.warmup_failed), (2, 1));
        // A zero latency is still one recorded microsecond.
        assert_eq!(a.latency.min(), 1);
    }
}
