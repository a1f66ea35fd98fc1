//! Reading messages and their options from the command line.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, bail};
use busbar::QoS;

/// Where a message body comes from: the argument, `--file`, or standard input.
#[derive(clap::Args, Debug, Clone)]
pub struct Body {
    /// The body, as text ("-" reads standard input).
    #[arg(value_name = "MESSAGE")]
    text: Option<String>,
    /// Read the body from this file.
    #[arg(long, value_name = "FILE", conflicts_with = "text")]
    file: Option<PathBuf>,
    /// An empty body (with `pub --retain`: clears the topic's retained message).
    #[arg(long, conflicts_with_all = ["text", "file"])]
    null: bool,
}

impl Body {
    /// The bodies to send: one from an argument or a file; with "-", one per line of
    /// standard input; an empty one with `--null`. Without any of them, an empty message
    /// when `required` is false, and a usage error when it is true (an empty publish is
    /// easy to send by mistake, and with `--retain` it clears the retained value).
    pub fn read(&self, required: bool) -> anyhow::Result<Vec<Vec<u8>>> {
        if self.null {
            return Ok(vec![Vec::new()]);
        }
        if let Some(path) = &self.file {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            return Ok(vec![bytes]);
        }
        match self.text.as_deref() {
            Some("-") => {
                let mut all = String::new();
                std::io::stdin().read_to_string(&mut all).context("reading standard input")?;
                Ok(all.lines().map(|l| l.as_bytes().to_vec()).collect())
            }
            Some(text) => Ok(vec![text.as_bytes().to_vec()]),
            None if required => Err(crate::exit::with(
                crate::profile::USAGE,
                "no message given: give it as an argument, --file FILE, - for standard input, \
                 or --null for an empty one (with --retain, --null clears the retained message)",
            )),
            None => Ok(vec![Vec::new()]),
        }
    }
}

/// `--header k=v`, any number of them.
pub fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not NAME=VALUE")),
    }
}

pub fn parse_qos(s: &str) -> Result<QoS, String> {
    match s {
        "0" => Ok(QoS::AtMostOnce),
        "1" => Ok(QoS::AtLeastOnce),
        "2" => Ok(QoS::ExactlyOnce),
        _ => Err(format!("{s:?} is not a QoS (0, 1 or 2)")),
    }
}

pub fn check_rate(rate: Option<f64>) -> anyhow::Result<Option<std::time::Duration>> {
    match rate {
        None => Ok(None),
        Some(r) if r.is_finite() && r > 0.0 => {
            Ok(Some(std::time::Duration::from_secs_f64(1.0 / r)))
        }
        Some(r) => bail!("--rate {r} is not a positive number of messages per second"),
    }
}

/// The moment `span` from now, for a command-line deadline: a span too long to reach means
/// no deadline, not a crash.
pub fn deadline_in(span: std::time::Duration) -> Option<tokio::time::Instant> {
    tokio::time::Instant::now().checked_add(span)
}

/// Where a subscription starts (`--start`), for clap's `value_parser`: `now`, `earliest`,
/// a UTC time in RFC 3339 form (`2026-12-06T15:00:00Z`, fractions of a second allowed), or an
/// age (`30s`, `10m`, `2h`, `1d`: that long ago).
pub fn start_at(s: &str) -> Result<busbar::StartAt, String> {
    use std::time::{Duration, SystemTime};
    let bad = || {
        format!(
            "{s:?} is not a start: say `now`, `earliest`, a UTC time like \
             2026-12-06T15:00:00Z, or an age like 30s, 10m, 2h, 1d"
        )
    };
    match s {
        "now" => return Ok(busbar::StartAt::Now),
        "earliest" => return Ok(busbar::StartAt::Earliest),
        _ => {}
    }
    if let Some(unit) = s.chars().last().filter(|c| "smhd".contains(*c)) {
        let count: u64 = s[..s.len() - 1].parse().map_err(|_| bad())?;
        let scale = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => 86_400,
        };
        let age = count.checked_mul(scale).map(Duration::from_secs).ok_or_else(bad)?;
        let at = SystemTime::now().checked_sub(age).ok_or_else(bad)?;
        return Ok(busbar::StartAt::Time(at));
    }
    utc_time(s).map(busbar::StartAt::Time).ok_or_else(bad)
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]Z` as a time.
fn utc_time(s: &str) -> Option<std::time::SystemTime> {
    let s = s.strip_suffix('Z').or_else(|| s.strip_suffix('z'))?;
    let (date, time) = s.split_once(['T', 't', ' '])?;
    let mut d = date.splitn(3, '-').map(str::parse::<i64>);
    let (year, month, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (time, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut t = time.splitn(3, ':').map(str::parse::<i64>);
    let (hour, minute, second) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let in_range = (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && (0..24).contains(&hour)
        && (0..60).contains(&minute)
        && (0..=60).contains(&second)
        && fraction.chars().all(|c| c.is_ascii_digit());
    if !in_range || year < 1970 {
        return None;
    }
    // Days since 1970-01-01 of a proleptic Gregorian date (the usual era arithmetic).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    let seconds = u64::try_from(days * 86_400 + hour * 3600 + minute * 60 + second).ok()?;
    let nanos = format!("{fraction:0<9}").get(..9)?.parse::<u32>().ok()?;
    std::time::UNIX_EPOCH.checked_add(std::time::Duration::new(seconds, nanos))
}

/// A span of time on the command line, for clap's `value_parser`: a number with a unit
/// (`500ms`, `1.5s`, `2m`, `1h`, `1d`; also `us`) or a bare number of seconds (`5`, `0.25`).
/// Zero is allowed (the option says what it means); anything else is a usage error that
/// shows the value.
pub fn duration(s: &str) -> Result<std::time::Duration, String> {
    busbar::time::parse_duration(s).ok_or_else(|| {
        format!("{s:?} is not a duration: say 500ms, 1.5s, 2m, 1h, or a number of seconds")
    })
}

/// A span of time that must not be zero (a timeout, a patience), as [`duration`].
pub fn positive_duration(s: &str) -> Result<std::time::Duration, String> {
    let span = duration(s)?;
    if span.is_zero() {
        return Err(format!("{s:?} is zero: give a positive duration (500ms, 1.5s, 2m, ...)"));
    }
    Ok(span)
}

#[cfg(test)]
mod tests {
    use super::*;
    use busbar::StartAt;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn durations_are_read_as_the_core_reads_them() {
        assert_eq!(duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(
            duration("5 parsecs").expect_err("bad").contains("\"5 parsecs\" is not a duration")
        );
        assert!(positive_duration("0ms").expect_err("zero").contains("is zero"));
        assert_eq!(positive_duration("2s"), Ok(Duration::from_secs(2)));
    }

    #[test]
    fn starts_are_named_dated_or_aged() {
        assert_eq!(start_at("now"), Ok(StartAt::Now));
        assert_eq!(start_at("earliest"), Ok(StartAt::Earliest));
        assert_eq!(
            start_at("2026-12-06T15:00:00Z"),
            Ok(StartAt::Time(UNIX_EPOCH + Duration::from_secs(1_796_569_200)))
        );
        assert_eq!(
            start_at("1970-01-01T00:00:01.5Z"),
            Ok(StartAt::Time(UNIX_EPOCH + Duration::from_millis(1500)))
        );
        assert_eq!(
            start_at("2000-02-29T12:00:00Z"),
            Ok(StartAt::Time(UNIX_EPOCH + Duration::from_secs(951_825_600)))
        );
        let Ok(StartAt::Time(at)) = start_at("10m") else { panic!("an age") };
        let age = std::time::SystemTime::now().duration_since(at).expect("in the past");
        assert!(age >= Duration::from_secs(600) && age < Duration::from_secs(660), "{age:?}");
        for bad in ["", "later", "10x", "m", "2026-13-01T00:00:00Z", "2026-12-06T15:00:00", "-5m"] {
            let err = start_at(bad).expect_err(bad);
            assert!(err.contains("earliest"), "{err}");
        }
    }
}
