//! ISO-8601 timestamps in UTC as the systems busbar joins write them, without a date-time
//! dependency: Python's `datetime.isoformat()` (`2026-11-23T07:16:45.985532+00:00`) and
//! JavaScript's `Date.toISOString()` (`2026-11-23T07:16:45.985Z`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A span of time as people write it in URLs, files and command lines: a number with a unit
/// (`500ms`, `1.5s`, `30s`, `2m`, `1h`, `1d`, also `us`) or a bare number of seconds (`30`,
/// `0.25`). `None` for anything else, negative and unrepresentable spans included.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| c.is_alphabetic()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return None,
    };
    let number = number.trim();
    // Digits and at most one point: no signs, exponents, `inf` or `nan`.
    let digits = number.chars().filter(char::is_ascii_digit).count();
    if digits == 0 || number.chars().any(|c| !c.is_ascii_digit() && c != '.') {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    Duration::try_from_secs_f64(value * scale).ok()
}

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
    fn durations_take_units_or_seconds() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("5"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("0.25"), Some(ms(250)));
        assert_eq!(parse_duration("500ms"), Some(ms(500)));
        assert_eq!(parse_duration("1.5s"), Some(ms(1500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1d"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("250us"), Some(Duration::from_micros(250)));
        assert_eq!(parse_duration(" 0 "), Some(Duration::ZERO));
        for bad in ["", "s", "-1", "+1", "1x", "1.5.2s", "nan", "inf", "1e3", "1e400", "9e99d"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

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
