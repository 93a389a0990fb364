//! Unix milliseconds: from a clock reading, and to ISO 8601 UTC for messages a
//! gate supervisor reads.

use crate::ids::UnixMillis;
use std::time::{SystemTime, UNIX_EPOCH};

/// A clock reading in Unix milliseconds; times before 1970 read as 0.
pub fn unix_millis(time: SystemTime) -> UnixMillis {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| {
        UnixMillis::try_from(d.as_millis()).unwrap_or(UnixMillis::MAX)
    })
}

/// Formats `millis` as `2016-11-24T16:00:00Z`, adding `.mmm` only when the
/// milliseconds are not zero.
pub fn iso8601(millis: UnixMillis) -> String {
    let seconds = millis.div_euclid(1000);
    let millis_part = millis.rem_euclid(1000);
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60,
    );
    if millis_part == 0 {
        format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
    } else {
        format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{millis_part:03}Z")
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_readings_become_unix_milliseconds() {
        let later = UNIX_EPOCH + std::time::Duration::from_millis(1_480_003_200_001);
        assert_eq!(unix_millis(later), 1_480_003_200_001);
        assert_eq!(
            unix_millis(UNIX_EPOCH - std::time::Duration::from_secs(1)),
            0
        );
    }

    #[test]
    fn formats_the_spec_example() {
        assert_eq!(iso8601(1_480_003_200_000), "2016-11-24T16:00:00Z");
    }

    #[test]
    fn keeps_milliseconds_when_present() {
        assert_eq!(iso8601(1_480_003_200_001), "2016-11-24T16:00:00.001Z");
    }

    #[test]
    fn handles_epoch_leap_days_and_before_epoch() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(-1000), "1969-12-31T23:59:59Z");
    }
}
