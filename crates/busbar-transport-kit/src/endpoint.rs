//! Broker URLs: `SCHEME://[USER[:PASSWORD]@]HOST[:PORT][,HOST[:PORT]...][/PATH][?KEY=VALUE&...]`
//! parsed once, the same way for every transport, into an [`Endpoint`].
//!
//! Every part is percent-decoded (`p%40ss` is the password `p@ss`); IPv6 addresses are
//! bracketed (`[::1]:1883`). The transport then reads the parameters it knows through the
//! typed getters of [`Params`] and calls [`Params::finish`], which refuses anything left
//! over, naming the parameters it does know: a typo is an error, never silently ignored.
//! Every error is a [`ConnectError`] of kind `InvalidUrl` that shows the URL without its
//! secrets ([`busbar_core::url::redact`]).

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use busbar_core::error::{ConnectError, ConnectErrorKind, OpError};
use busbar_core::url::{percent_decode, redact};
use busbar_core::{Overflow, QueueConfig};

use crate::login::Login;

/// One URL scheme a transport serves.
#[derive(Debug, Clone, Copy)]
pub struct Scheme {
    /// The scheme, lowercase, without `://`.
    pub name: &'static str,
    /// The port when the URL gives none.
    pub default_port: u16,
    /// True for the TLS variant (`mqtts`, `rediss`, ...).
    pub secure: bool,
}

/// One server of an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Host name or address (an IPv6 address without its brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl std::fmt::Display for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A parsed broker URL.
#[derive(Debug)]
pub struct Endpoint {
    /// The scheme matched.
    pub scheme: Scheme,
    /// The user name and password in the URL, decoded.
    pub login: Login,
    /// The servers, in the order given (at least one).
    pub servers: Vec<Server>,
    /// The path after the servers, decoded, without its leading `/` (empty when none).
    pub path: String,
    /// The query parameters, for the transport to take.
    pub params: Params,
    /// The URL as it may be shown: secrets hidden.
    pub shown: String,
}

impl Endpoint {
    /// Parses `url` for a transport serving `schemes`.
    pub fn parse(url: &str, schemes: &[Scheme]) -> Result<Endpoint, ConnectError> {
        let shown = redact(url);
        let invalid = |reason: String| ConnectError::invalid_url(&shown, reason);
        let expected = || {
            let names: Vec<String> = schemes.iter().map(|s| format!("{}://", s.name)).collect();
            names.join(", ")
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid(format!("expected {}HOST[:PORT]", expected())))?;
        let scheme = schemes
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(scheme))
            .copied()
            .ok_or_else(|| invalid(format!("the scheme must be one of {}", expected())))?;
        let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = match before_query.find('/') {
            Some(i) => (&before_query[..i], &before_query[i + 1..]),
            None => (before_query, ""),
        };
        let decode = |what: &str, s: &str| {
            percent_decode(s).map_err(|e| invalid(format!("the {what}: {e}")))
        };
        // The login ends at the last '@' (a password may contain one, percent-encoded or not).
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let login = match userinfo {
            None => Login::default(),
            Some(u) => match u.split_once(':') {
                Some((user, password)) => Login {
                    user: Some(decode("user name", user)?),
                    password: Some(decode("password", password)?),
                },
                None => Login { user: Some(decode("user name", u)?), password: None },
            },
        };
        let mut servers = Vec::new();
        for entry in hosts.split(',') {
            servers.push(parse_server(entry, scheme.default_port).map_err(|reason| {
                invalid(if hosts.contains(',') {
                    format!("server {entry:?} in the list: {reason}")
                } else {
                    reason
                })
            })?);
        }
        let path = decode("path", path)?;
        let mut pairs = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| invalid(format!("parameter {pair:?} has no value")))?;
            let key = decode("parameter name", key)?;
            let value = decode(&format!("parameter {key}"), value)?;
            if pairs.iter().any(|(k, _): &(String, String)| *k == key) {
                return Err(invalid(format!("parameter {key:?} is given twice")));
            }
            pairs.push((key, value));
        }
        Ok(Endpoint {
            scheme,
            login,
            servers,
            path,
            params: Params { pairs, asked: Vec::new(), shown: shown.clone() },
            shown,
        })
    }

    /// An `InvalidUrl` error about this URL.
    pub fn invalid(&self, reason: impl std::fmt::Display) -> ConnectError {
        ConnectError::invalid_url(&self.shown, reason)
    }
}

fn parse_server(entry: &str, default_port: u16) -> Result<Server, String> {
    let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
        let (host, after) =
            rest.split_once(']').ok_or_else(|| "an IPv6 address is missing its ']'".to_owned())?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None => return Err(format!("unexpected {after:?} after the address")),
            },
        }
    } else {
        match entry.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => {
                return Err("an IPv6 address must be in brackets, as in [::1]:1883".into());
            }
            Some((h, p)) => (h, Some(p)),
            None => (entry, None),
        }
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    let port = match port {
        Some(p) => {
            p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| format!("bad port {p:?}"))?
        }
        None => default_port,
    };
    Ok(Server { host: host.to_owned(), port })
}

/// The query parameters of an [`Endpoint`], taken one by one by the transport with typed
/// getters. Each getter removes its parameter and remembers its name, so [`finish`](Self::finish)
/// can refuse what nobody took and list what is known.
#[derive(Debug)]
pub struct Params {
    pairs: Vec<(String, String)>,
    asked: Vec<&'static str>,
    shown: String,
}

impl Params {
    fn invalid(&self, reason: String) -> ConnectError {
        ConnectError::invalid_url(&self.shown, reason)
    }

    /// The raw value of `key`, if given.
    pub fn text(&mut self, key: &'static str) -> Option<String> {
        self.asked.push(key);
        let at = self.pairs.iter().position(|(k, _)| k == key)?;
        Some(self.pairs.remove(at).1)
    }

    /// A number of type `T` between `min` and `max`.
    pub fn number<T>(
        &mut self,
        key: &'static str,
        min: T,
        max: T,
    ) -> Result<Option<T>, ConnectError>
    where
        T: FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        let Some(value) = self.text(key) else { return Ok(None) };
        match value.parse::<T>() {
            Ok(n) if n >= min && n <= max => Ok(Some(n)),
            _ => Err(self.invalid(format!(
                "{key} must be a whole number from {min} to {max}, not {value:?}"
            ))),
        }
    }

    /// A positive count (at least 1).
    pub fn count(&mut self, key: &'static str) -> Result<Option<usize>, ConnectError> {
        self.number(key, 1, usize::MAX)
    }

    /// `connect_timeout`, or [`DEFAULT_CONNECT_TIMEOUT`].
    pub fn connect_timeout(&mut self) -> Result<Duration, ConnectError> {
        Ok(self
            .duration("connect_timeout", Duration::from_millis(1))?
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT))
    }

    /// A duration of at least `min`, in seconds or with a unit (`500ms`, `1.5s`, `2m`, `1h`).
    pub fn duration(
        &mut self,
        key: &'static str,
        min: Duration,
    ) -> Result<Option<Duration>, ConnectError> {
        let Some(value) = self.text(key) else { return Ok(None) };
        match parse_duration(&value) {
            Some(d) if d >= min => Ok(Some(d)),
            Some(_) => Err(self.invalid(format!("{key} must be at least {min:?}, not {value:?}"))),
            None => Err(self.invalid(format!(
                "{key} must be a duration in seconds (or with a unit: 500ms, 30s, 2m), not {value:?}"
            ))),
        }
    }

    /// One of `choices`.
    pub fn choice(
        &mut self,
        key: &'static str,
        choices: &[&'static str],
    ) -> Result<Option<&'static str>, ConnectError> {
        let Some(value) = self.text(key) else { return Ok(None) };
        choices.iter().find(|c| **c == value).copied().map(Some).ok_or_else(|| {
            self.invalid(format!("{key} must be one of {}, not {value:?}", choices.join(", ")))
        })
    }

    /// A file path.
    pub fn path(&mut self, key: &'static str) -> Option<PathBuf> {
        self.text(key).map(PathBuf::from)
    }

    /// A bounded queue: its capacity from `capacity_key` and its overflow policy
    /// (`block`, `drop-oldest` or `drop-newest`) from `overflow_key`, over `default`.
    pub fn queue(
        &mut self,
        capacity_key: &'static str,
        overflow_key: &'static str,
        default: QueueConfig,
    ) -> Result<QueueConfig, ConnectError> {
        let capacity = self.count(capacity_key)?.unwrap_or(default.capacity);
        let overflow = match self.text(overflow_key) {
            None => default.overflow,
            Some(v) => Overflow::from_name(&v).ok_or_else(|| {
                self.invalid(format!(
                    "{overflow_key} must be block, drop-oldest or drop-newest, not {v:?}"
                ))
            })?,
        };
        Ok(QueueConfig::new(capacity, overflow))
    }

    /// Refuses parameters nobody took, naming the known ones.
    pub fn finish(self) -> Result<(), ConnectError> {
        match self.pairs.first() {
            None => Ok(()),
            Some((key, _)) => {
                let mut known = self.asked.clone();
                known.dedup();
                Err(self
                    .invalid(format!("unknown parameter {key:?} (known: {})", known.join(", "))))
            }
        }
    }

    /// An `InvalidUrl` error about a parameter's value that the getters could not check.
    pub fn refuse(&self, reason: impl std::fmt::Display) -> ConnectError {
        self.invalid(reason.to_string())
    }
}

/// `30` (seconds), `500ms`, `1.5s`, `2m`, `1h`: the one reading of durations
/// ([`busbar_core::time::parse_duration`]).
pub fn parse_duration(text: &str) -> Option<Duration> {
    busbar_core::time::parse_duration(text)
}

/// A connection error about local settings (an unreadable file, a name the broker cannot
/// take): kind `Config`.
pub fn config_error(message: impl Into<String>) -> ConnectError {
    OpError::new(ConnectErrorKind::Config, message)
}

/// How long connecting may take unless the URL (`?connect_timeout=`) or the connect
/// options say otherwise: the same on every transport.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects with `connecting`, giving up after `limit` with the one wording every transport
/// uses. `shown` is the URL without its secrets. `connecting` must leave nothing running
/// when dropped.
pub async fn connect_within<T>(
    limit: Duration,
    shown: &str,
    connecting: impl std::future::Future<Output = Result<T, ConnectError>>,
) -> Result<T, ConnectError> {
    match tokio::time::timeout(limit, connecting).await {
        // A client library's own timeout, set from the same limit, says it its way.
        Ok(Err(e)) if e.kind() == ConnectErrorKind::TimedOut => {
            Err(connect_timed_out(shown, limit).with_source(e))
        }
        Ok(outcome) => outcome,
        Err(_) => Err(connect_timed_out(shown, limit)),
    }
}

/// The error of a connection not made within `limit`.
pub fn connect_timed_out(shown: &str, limit: Duration) -> ConnectError {
    OpError::new(
        ConnectErrorKind::TimedOut,
        format!("not connected to {shown}: no answer within {limit:?} (connect_timeout)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MQTT: &[Scheme] = &[
        Scheme { name: "mqtt", default_port: 1883, secure: false },
        Scheme { name: "mqtts", default_port: 8883, secure: true },
    ];

    #[test]
    fn parts_are_decoded_and_secrets_hidden() {
        let e = Endpoint::parse("MQTTS://a%40b:p%3Ass%2F@h:1884/x%20y?k=v%2F1", MQTT).expect("ok");
        assert!(e.scheme.secure);
        assert_eq!(e.login.user.as_deref(), Some("a@b"));
        assert_eq!(e.login.password.as_deref(), Some("p:ss/"));
        assert_eq!(e.servers, [Server { host: "h".into(), port: 1884 }]);
        assert_eq!(e.path, "x y");
        assert!(!e.shown.contains("p%3Ass"), "{}", e.shown);
        let mut p = e.params;
        assert_eq!(p.text("k").as_deref(), Some("v/1"));
        p.finish().expect("all taken");
        assert_eq!(Endpoint::parse("mqtt://h", MQTT).expect("default port").servers[0].port, 1883);
    }

    #[test]
    fn servers_lists_and_ipv6() {
        let e = Endpoint::parse("mqtt://[::1]:1,h2,[fe80::1]", MQTT).expect("list");
        let shown: Vec<String> = e.servers.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["[::1]:1", "h2:1883", "[fe80::1]:1883"]);
        for bad in
            ["mqtt://", "mqtt://h:x", "mqtt://::1", "mqtt://[::1", "mqtt://h,,h2", "mqtt://h:0"]
        {
            let err = Endpoint::parse(bad, MQTT).expect_err(bad);
            assert_eq!(err.kind(), ConnectErrorKind::InvalidUrl, "{bad}: {err}");
        }
        let err = Endpoint::parse("mqtt://h1,h2:x", MQTT).expect_err("bad entry");
        assert!(err.to_string().contains("\"h2:x\""), "{err}");
        assert!(
            Endpoint::parse("gopher://h", MQTT).is_err_and(|e| e.to_string().contains("mqtts://"))
        );
    }

    #[test]
    fn typed_parameters_and_unknown_ones() {
        let url = "mqtt://h?n=5&d=500ms&q=10&o=drop-oldest&c=b&bad=1";
        let mut p = Endpoint::parse(url, MQTT).expect("ok").params;
        assert_eq!(p.number("n", 1u32, 9).expect("n"), Some(5));
        assert_eq!(p.duration("d", Duration::ZERO).expect("d"), Some(Duration::from_millis(500)));
        let q = p.queue("q", "o", QueueConfig::default()).expect("queue");
        assert_eq!(q, QueueConfig::new(10, Overflow::DropOldest));
        assert_eq!(p.choice("c", &["a", "b"]).expect("c"), Some("b"));
        assert_eq!(p.count("absent").expect("absent"), None);
        let err = p.finish().expect_err("bad is unknown");
        let text = err.to_string();
        assert!(
            text.contains("\"bad\"") && text.contains("known: n, d, q, o, c, absent"),
            "{text}"
        );
        let mut p = Endpoint::parse("mqtt://h?n=50", MQTT).expect("ok").params;
        assert!(p.number("n", 1u32, 9).is_err());
        assert!(Endpoint::parse("mqtt://h?n=1&n=2", MQTT).is_err());
        assert!(Endpoint::parse("mqtt://h?n", MQTT).is_err());
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("2x"), None);
    }
}
