//! ISO-8601 timestamps in UTC as the systems busbar joins write them, without a date-time
//! dependency: Python's `datetime.isoformat()` (`2026-11-23T07:16:45.985532+00:00`) and
//! JavaScript's `Date.toISOString()` (`2026-11-23T07:16:45.985Z`).

use std::time::{SystemTime, UNIX_EPOCH};

/// `at` as Python writes an aware UTC time: microseconds and a `+00:00` offset.
pub fn iso8601_micros(at: SystemTime) -> String {
    let (date, since) = date_time(at);
    format!("{date}.{:06}+00:00", since.subsec_micros())
}

/// `at` as JavaScript writes a date: milliseconds and `Z`.
pub fn iso8601_millis(at: SystemTime) -> String {
    let (date, since) = date_time(at);
    format!("{date}.{:03}Z", since.subsec_millis())
}

/// `YYYY-MM-DDTHH:MM:SS`, and the time since the epoch.
fn date_time(at: SystemTime) -> (String, std::time::Duration) {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(i64::try_from(days).unwrap_or(i64::MAX));
    let text = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    );
    (text, since)
}

/// Year, month, day of the `days`-th day after 1970-01-01 (proleptic Gregorian calendar;
/// Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn timestamps_read_like_python_and_javascript() {
        let at = UNIX_EPOCH + Duration::from_micros(1_795_418_205_985_532);
        assert_eq!(iso8601_micros(at), "2026-11-23T07:16:45.985532+00:00");
        assert_eq!(iso8601_millis(at), "2026-11-23T07:16:45.985Z");
        assert_eq!(iso8601_micros(UNIX_EPOCH), "1970-01-01T00:00:00.000000+00:00");
        // A leap day.
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(iso8601_millis(leap), "2000-02-29T00:00:00.000Z");
    }
}
