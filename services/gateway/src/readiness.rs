//! How long `/readyz` stays green while a dependency stops answering.
//!
//! A broker blip of a few seconds reaches every gateway at once: if each turned
//! red at the first failed check, the load balancer would take them all out
//! together and scanners would get connection errors instead of the enveloped
//! 503 with `Retry-After` that tells them to try again. So a gateway that was
//! ready stays ready for a grace period after its dependency stops answering;
//! scans meanwhile are answered 503 UNAVAILABLE. Past the grace the outage is
//! not a blip, and `/readyz` turns red.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The failed checks a gateway has seen since its last good one.
#[derive(Debug)]
pub(crate) struct ReadinessGrace {
    grace: Duration,
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    /// Whether a check ever succeeded: a gateway still starting has no grace.
    ever_ready: bool,
    /// When the checks started failing, since the last good one.
    failing_since: Option<Instant>,
}

impl ReadinessGrace {
    pub(crate) fn new(grace: Duration) -> Self {
        Self {
            grace,
            seen: Mutex::new(Seen::default()),
        }
    }

    /// Notes a good check: the next failure starts a new grace period.
    pub(crate) fn succeeded(&self) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.ever_ready = true;
        seen.failing_since = None;
    }

    /// Notes a failed check at `now`; whether the gateway still counts as
    /// ready: it was ready before and has been failing for less than the grace.
    pub(crate) fn tolerates_failure(&self, now: Instant) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if !seen.ever_ready {
            return false;
        }
        let since = *seen.failing_since.get_or_insert(now);
        now.saturating_duration_since(since) < self.grace
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blip_shorter_than_the_grace_keeps_the_gateway_ready() {
        let grace = ReadinessGrace::new(Duration::from_secs(10));
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        assert!(
            !grace.tolerates_failure(at(0)),
            "never ready yet: no grace while starting"
        );
        grace.succeeded();
        assert!(grace.tolerates_failure(at(1)));
        assert!(grace.tolerates_failure(at(10)));
        assert!(!grace.tolerates_failure(at(11)), "failing for 10 s");
        grace.succeeded();
        assert!(
            grace.tolerates_failure(at(30)),
            "a good check starts the grace anew"
        );
    }

    #[test]
    fn no_grace_turns_red_at_the_first_failure() {
        let grace = ReadinessGrace::new(Duration::ZERO);
        grace.succeeded();
        assert!(!grace.tolerates_failure(Instant::now()));
    }
}
