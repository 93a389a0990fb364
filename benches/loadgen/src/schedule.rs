//! The open loop's timetable: request `slot` is due at `slot / rate` seconds
//! after the start, whatever happened to the requests before it.

use std::num::NonZeroU64;
use std::time::Duration;

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// Fixed intervals at `rate` requests per second, in integer nanoseconds so that
/// slot one million is as exactly placed as slot one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    rate: NonZeroU64,
}

impl Schedule {
    pub fn new(rate: NonZeroU64) -> Self {
        Self { rate }
    }

    pub fn rate(&self) -> NonZeroU64 {
        self.rate
    }

    /// When `slot` (counted from 0) is due, after the start.
    pub fn due(&self, slot: u64) -> Duration {
        let nanos = u128::from(slot) * NANOS_PER_SECOND / u128::from(self.rate.get());
        duration_from_nanos(nanos)
    }

    /// How many slots are due strictly before `offset`: the `n` for which
    /// `due(n - 1) < offset <= due(n)`.
    pub fn due_before(&self, offset: Duration) -> u64 {
        // due(s) < t  ⇔  ⌊s·10⁹/r⌋ < t  ⇔  s·10⁹ < t·r (t is whole nanoseconds),
        // so the count is ⌈t·r / 10⁹⌉.
        let scaled = offset.as_nanos() * u128::from(self.rate.get());
        u64::try_from(scaled.div_ceil(NANOS_PER_SECOND)).unwrap_or(u64::MAX)
    }
}

fn duration_from_nanos(nanos: u128) -> Duration {
    let seconds = u64::try_from(nanos / NANOS_PER_SECOND).unwrap_or(u64::MAX);
    let rest = u32::try_from(nanos % NANOS_PER_SECOND).unwrap_or(0);
    Duration::new(seconds, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(rate: u64) -> Schedule {
        Schedule::new(NonZeroU64::new(rate).unwrap())
    }

    #[test]
    fn slots_are_evenly_spaced_from_the_start() {
        let s = schedule(2000);
        assert_eq!(s.due(0), Duration::ZERO);
        assert_eq!(s.due(1), Duration::from_micros(500));
        assert_eq!(s.due(2000), Duration::from_secs(1));
        assert_eq!(s.due(2_000_000), Duration::from_secs(1000));
    }

    #[test]
    fn rates_that_do_not_divide_a_second_do_not_drift() {
        let s = schedule(3);
        assert_eq!(s.due(1), Duration::from_nanos(333_333_333));
        assert_eq!(s.due(2), Duration::from_nanos(666_666_666));
        assert_eq!(s.due(3), Duration::from_secs(1));
        assert_eq!(s.due(3_000_000), Duration::from_secs(1_000_000));
    }

    #[test]
    fn counts_the_slots_due_before_an_instant() {
        let s = schedule(2000);
        assert_eq!(s.due_before(Duration::ZERO), 0);
        assert_eq!(s.due_before(Duration::from_nanos(1)), 1);
        assert_eq!(s.due_before(Duration::from_micros(500)), 1);
        assert_eq!(s.due_before(Duration::from_nanos(500_001)), 2);
        assert_eq!(s.due_before(Duration::from_secs(2)), 4000);
        let third = schedule(3);
        assert_eq!(third.due_before(Duration::from_secs(1)), 3);
        assert_eq!(third.due_before(Duration::from_nanos(333_333_334)), 2);
    }

    #[test]
    fn due_before_agrees_with_due_everywhere() {
        for rate in [1, 3, 7, 999, 2000, 10_000, 123_457] {
            let s = schedule(rate);
            for slot in (0..5000).chain([1_000_003, 77_777_777]) {
                let at = s.due(slot);
                assert_eq!(s.due_before(at), slot, "rate {rate}, slot {slot}");
                assert_eq!(
                    s.due_before(at + Duration::from_nanos(1)),
                    slot + 1,
                    "rate {rate}, slot {slot}"
                );
                assert!(s.due(slot + 1) > at, "rate {rate}, slot {slot}");
            }
        }
    }
}
