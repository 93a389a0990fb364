//! Per-key rate limits: a token bucket per API key, so one key's flood is refused
//! with 429 while every other key keeps its own budget.
//!
//! The bucket is kept as the generic cell rate algorithm (GCRA): one "theoretical
//! arrival time" instead of a token count and a refill time. It admits exactly what
//! a token bucket of `burst` tokens refilled at `per_second` admits, and fits in a
//! single atomic, so the hot path takes no lock: every scan of a key updates it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// How many requests a key may make: `per_second` sustained, and up to `burst` at
/// once after a quiet spell (by default two seconds' worth). A rate of 0 means no
/// limit, the default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: Option<u32>,
}

impl RateLimit {
    /// The burst: as set, else twice the rate; at least one request.
    pub fn burst(self) -> u32 {
        self.burst
            .unwrap_or(self.per_second.saturating_mul(2))
            .max(1)
    }

    /// Whether this limits anything at all (a rate of 0 does not, whatever the
    /// burst).
    pub fn limits(self) -> bool {
        self.per_second > 0
    }

    /// The bucket enforcing this limit; `None` when it does not limit anything.
    pub(crate) fn bucket(self) -> Option<TokenBucket> {
        if !self.limits() {
            return None;
        }
        let interval = NANOS_PER_SECOND / u64::from(self.per_second);
        Some(TokenBucket {
            interval,
            capacity: interval.saturating_mul(u64::from(self.burst())),
            arrival: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }
}

/// One key's budget. Shared by every request of the key.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    /// Nanoseconds one request costs: a token is refilled every `interval`.
    interval: u64,
    /// How far the theoretical arrival time may run ahead of now: `burst` requests.
    capacity: u64,
    /// The theoretical arrival time, in nanoseconds since `epoch`: when the bucket
    /// would be full again if nothing else arrived. Behind now, it is full.
    arrival: AtomicU64,
    epoch: Instant,
}

impl TokenBucket {
    /// Takes a token, or says how long until one is there.
    pub(crate) fn admit(&self) -> Result<(), Duration> {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let mut seen = self.arrival.load(Ordering::Relaxed);
        loop {
            let next =
                take(seen, now, self.interval, self.capacity).map_err(Duration::from_nanos)?;
            // Relaxed: the arrival time is the only state, nothing else is published
            // through it.
            match self.arrival.compare_exchange_weak(
                seen,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(current) => seen = current,
            }
        }
    }
}

/// One request at `now` against a bucket whose theoretical arrival time is
/// `arrival`: the new arrival time when it is admitted, else the nanoseconds until
/// it would be.
fn take(arrival: u64, now: u64, interval: u64, capacity: u64) -> Result<u64, u64> {
    let next = arrival.max(now).saturating_add(interval);
    let ahead = next - now;
    if ahead <= capacity {
        Ok(next)
    } else {
        Err(ahead - capacity)
    }
}

/// As the start-up log and `--help` say it: `no rate limit`, or
/// `10/s, burst 20`.
impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.limits() {
            write!(f, "{}/s, burst {}", self.per_second, self.burst())
        } else {
            f.write_str("no rate limit")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = NANOS_PER_SECOND;

    /// Runs `take` over requests at the given times; which were admitted.
    fn admitted(limit: RateLimit, times: &[u64]) -> Vec<bool> {
        let bucket = limit.bucket().unwrap();
        let mut arrival = 0;
        times
            .iter()
            .map(
                |&now| match take(arrival, now, bucket.interval, bucket.capacity) {
                    Ok(next) => {
                        arrival = next;
                        true
                    }
                    Err(_) => false,
                },
            )
            .collect()
    }

    #[test]
    fn a_full_bucket_admits_the_burst_then_the_rate() {
        let limit = RateLimit {
            per_second: 2,
            burst: Some(3),
        };
        // Four at once: the burst of three, then refused.
        assert_eq!(admitted(limit, &[0, 0, 0, 0]), [true, true, true, false]);
        // After the burst, one every half second and no sooner.
        let half = SECOND / 2;
        assert_eq!(
            admitted(limit, &[0, 0, 0, half - 1, half, half, 2 * half]),
            [true, true, true, false, true, false, true]
        );
        // A quiet spell refills the bucket, but never beyond the burst.
        assert_eq!(
            admitted(
                limit,
                &[0, 100 * SECOND, 100 * SECOND, 100 * SECOND, 100 * SECOND]
            ),
            [true, true, true, true, false]
        );
    }

    #[test]
    fn a_refusal_says_when_the_next_token_is_there() {
        let (interval, capacity) = (SECOND / 4, SECOND);
        // Four taken at 0: the bucket is empty until a quarter second later.
        let arrival = (0..4).fold(0, |arrival, _| {
            take(arrival, 0, interval, capacity).unwrap()
        });
        assert_eq!(take(arrival, 0, interval, capacity), Err(SECOND / 4));
        assert_eq!(
            take(arrival, SECOND / 10, interval, capacity),
            Err(SECOND / 4 - SECOND / 10)
        );
        assert!(take(arrival, SECOND / 4, interval, capacity).is_ok());
        // Near the end of time the arithmetic saturates instead of wrapping.
        assert_eq!(
            take(u64::MAX - 1, 0, interval, capacity),
            Err(u64::MAX - capacity)
        );
    }

    #[test]
    fn rate_zero_is_unlimited_and_the_burst_defaults_to_two_seconds() {
        assert!(RateLimit::default().bucket().is_none());
        let no_rate = RateLimit {
            per_second: 0,
            burst: Some(5),
        };
        assert!(no_rate.bucket().is_none());
        assert_eq!(no_rate.to_string(), "no rate limit");
        assert_eq!(RateLimit::default().to_string(), "no rate limit");
        let rate = |per_second| RateLimit {
            per_second,
            burst: None,
        };
        assert_eq!(rate(3).burst(), 6);
        assert_eq!(rate(3).to_string(), "3/s, burst 6");
        assert_eq!(
            admitted(rate(1), &[0, 0, 0, SECOND]),
            [true, true, false, true]
        );
        assert_eq!(rate(u32::MAX).burst(), u32::MAX);
        // A burst of 0 would refuse everything: one request at least.
        let strict = RateLimit {
            per_second: 1,
            burst: Some(0),
        };
        assert_eq!(admitted(strict, &[0, 0, SECOND]), [true, false, true]);
    }

    #[test]
    fn very_high_rates_do_not_overflow() {
        let limit = RateLimit {
            per_second: u32::MAX,
            burst: Some(u32::MAX),
        };
        let bucket = limit.bucket().unwrap();
        assert_eq!(bucket.interval, 0, "faster than a nanosecond a request");
        for _ in 0..1_000 {
            assert!(bucket.admit().is_ok());
        }
    }

    #[test]
    fn the_shared_bucket_admits_the_burst_across_threads() {
        let bucket = RateLimit {
            per_second: 1,
            burst: Some(100),
        }
        .bucket()
        .unwrap();
        let started = Instant::now();
        let admitted: usize = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| (0..50).filter(|_| bucket.admit().is_ok()).count()))
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        // The burst, and one more for each second the tries took (a token a second).
        let refills = usize::try_from(started.elapsed().as_secs()).unwrap() + 1;
        assert!(
            (100..=100 + refills).contains(&admitted),
            "{admitted} admitted"
        );
    }
}
