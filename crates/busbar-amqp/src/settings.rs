//! `amqp://` and `amqps://` URLs.

use std::time::Duration;

use busbar_core::connection::redact_url;
use busbar_core::url::percent_decode;
use busbar_core::{Error, Result};

/// The exchange busbar topics are published to unless the URL names another.
pub const DEFAULT_EXCHANGE: &str = "amq.topic";

/// RabbitMQ's default `max_message_size` (128 MiB): a larger message makes the broker close
/// the channel, so it is refused before sending.
pub const DEFAULT_MAX_PAYLOAD: usize = 128 * 1024 * 1024;

/// Where and how to connect, from a URL such as
/// `amqp://user:pass@127.0.0.1:5672/%2f?exchange=plant&heartbeat=30` or
/// `amqps://broker:5671/prod?ca=/etc/ca.pem&cert=/etc/me.pem&key=/etc/me.key`.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// Broker host.
    pub host: String,
    /// Broker port (default 5672, or 5671 for `amqps://`).
    pub port: u16,
    /// User name (RabbitMQ's `guest` when the URL has none).
    pub username: String,
    /// Password (`guest` when the URL has none).
    pub password: String,
    /// Virtual host, percent-decoded (`/` when the URL path is empty or `%2f`).
    pub vhost: String,
    /// Topic exchange busbar topics are published to and bound on (default `amq.topic`;
    /// another name is declared as a durable topic exchange).
    pub exchange: String,
    /// Heartbeat interval asked of the broker; `None` accepts the broker's.
    pub heartbeat: Option<u16>,
    /// How long a subscription's queue outlives its connection (RabbitMQ `x-expires`), so a
    /// reconnect finds what was published meanwhile (default 60 s).
    pub queue_expiry: Duration,
    /// Unacknowledged deliveries a subscription with a drop policy may have in flight (its
    /// consumer prefetch; `Block` subscriptions use their queue capacity). Default 1000.
    pub prefetch: u16,
    /// How long a publish, request or subscribe waits for a lost connection to come back
    /// before failing with `NotConnected` (default 10 s).
    pub reconnect_wait: Duration,
    /// How long connecting may take (default 10 s).
    pub connect_timeout: Duration,
    /// Largest payload accepted (default RabbitMQ's 128 MiB).
    pub max_payload: usize,
    /// TLS settings for `amqps://`; `None` for plain TCP.
    pub tls: Option<TlsSettings>,
    /// The URL with the password hidden, for messages and logs.
    pub shown: String,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("Settings")
            .field("url", &self.shown)
            .field("exchange", &self.exchange)
            .field("heartbeat", &self.heartbeat)
            .field("queue_expiry", &self.queue_expiry)
            .field("prefetch", &self.prefetch)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// How to secure the connection. On AMQP, `ca` certificates are trusted in addition to the
/// system's roots, not instead of them: lapin adds them to the roots and cannot trust them
/// alone. The client key must be PKCS#8.
pub use busbar_tls::TlsSettings;

const KNOWN: &str = "exchange, heartbeat, queue_expiry, prefetch, reconnect_wait, \
                     connect_timeout, max_payload, ca, cert, key";

impl Settings {
    /// Parses an `amqp://` or `amqps://` URL.
    pub fn parse(url: &str) -> Result<Settings> {
        let shown = redact_url(url);
        let invalid = |reason: String| Error::InvalidUrl { url: shown.clone(), reason };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid("expected amqp://HOST[:PORT][/VHOST]".into()))?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "amqp" => None,
            "amqps" => Some(TlsSettings::default()),
            _ => {
                return Err(Error::Unsupported {
                    transport: "amqp",
                    feature: "this URL scheme (amqp://, amqps://)",
                });
            }
        };
        let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = match before_query.find('/') {
            Some(i) => (&before_query[..i], &before_query[i + 1..]),
            None => (before_query, ""),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let decode = |what: &str, s: &str| {
            percent_decode(s).map_err(|e| invalid(format!("the {what}: {e}")))
        };
        let (username, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((user, pass)) => (decode("user name", user)?, decode("password", pass)?),
                None => (decode("user name", u)?, String::new()),
            },
            None => ("guest".to_owned(), "guest".to_owned()),
        };
        let default_port = if tls.is_some() { 5671 } else { 5672 };
        let (host, port) = match hostport.rsplit_once(':') {
            // An IPv6 literal without a port ends in ']'.
            Some((h, p)) if !p.ends_with(']') => {
                let port = p.parse::<u16>().map_err(|_| invalid(format!("bad port {p:?}")))?;
                (h, port)
            }
            _ => (hostport, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(invalid("no host".into()));
        }
        // AMQP URI spec: an empty path is the default vhost "/", and "/" itself is spelled %2f.
        let vhost = if path.is_empty() { "/".to_owned() } else { decode("virtual host", path)? };
        let mut settings = Settings {
            host: host.to_owned(),
            port,
            username,
            password,
            vhost,
            exchange: DEFAULT_EXCHANGE.to_owned(),
            heartbeat: None,
            queue_expiry: Duration::from_secs(60),
            prefetch: 1000,
            reconnect_wait: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            max_payload: DEFAULT_MAX_PAYLOAD,
            tls,
            shown: shown.clone(),
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| invalid(format!("parameter {pair:?} has no value")))?;
            let value = decode(key, value)?;
            let number = |max: u64| {
                value.parse::<u64>().ok().filter(|n| *n <= max).ok_or_else(|| {
                    invalid(format!("{key} must be a whole number up to {max}, not {value:?}"))
                })
            };
            let positive_secs = || {
                number(u64::from(u32::MAX)).and_then(|n| {
                    if n == 0 {
                        Err(invalid(format!("{key} must be at least 1 second")))
                    } else {
                        Ok(Duration::from_secs(n))
                    }
                })
            };
            match key {
                "exchange" => {
                    if value.is_empty() || value.len() > 255 {
                        return Err(invalid(
                            "exchange must be a name of 1 to 255 bytes (the default exchange cannot route topics)"
                                .into(),
                        ));
                    }
                    settings.exchange = value.clone();
                }
                "heartbeat" => settings.heartbeat = Some(number(u64::from(u16::MAX))? as u16),
                "queue_expiry" => settings.queue_expiry = positive_secs()?,
                "prefetch" => {
                    let n = number(u64::from(u16::MAX))?;
                    if n == 0 {
                        return Err(invalid(
                            "prefetch must be at least 1 (0 would be unbounded)".into(),
                        ));
                    }
                    settings.prefetch = n as u16;
                }
                "reconnect_wait" => settings.reconnect_wait = positive_secs()?,
                "connect_timeout" => settings.connect_timeout = positive_secs()?,
                "max_payload" => {
                    let n = number(u64::from(u32::MAX))?;
                    settings.max_payload = usize::try_from(n).unwrap_or(usize::MAX).max(1);
                }
                "ca" | "cert" | "key" => {
                    let tls = settings.tls.as_mut().ok_or_else(|| {
                        invalid(format!("{key} needs a TLS connection: use amqps://"))
                    })?;
                    tls.set(key, &value);
                }
                _ => return Err(invalid(format!("unknown parameter {key:?} (known: {KNOWN})"))),
            }
        }
        if let Some(problem) = settings.tls.as_ref().and_then(TlsSettings::problem) {
            return Err(invalid(problem.into()));
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_credentials_vhosts_and_options() {
        let s = Settings::parse(
            "amqp://u%40x:p%3Ass@127.0.0.1:5673/%2f?exchange=plant&heartbeat=10&prefetch=50",
        )
        .expect("valid");
        assert_eq!((s.host.as_str(), s.port), ("127.0.0.1", 5673));
        assert_eq!((s.username.as_str(), s.password.as_str()), ("u@x", "p:ss"));
        assert_eq!(s.vhost, "/");
        assert_eq!(s.exchange, "plant");
        assert_eq!((s.heartbeat, s.prefetch), (Some(10), 50));
        assert!(!s.shown.contains("p%3Ass"), "{}", s.shown);
        assert!(!format!("{s:?}").contains("p:ss"));
        let d = Settings::parse("amqp://h").expect("defaults");
        assert_eq!((d.port, d.vhost.as_str(), d.username.as_str()), (5672, "/", "guest"));
        assert_eq!(d.exchange, DEFAULT_EXCHANGE);
        assert_eq!(Settings::parse("amqp://h/prod").expect("vhost").vhost, "prod");
        let tls = Settings::parse("amqps://h?ca=/c.pem&cert=/m.pem&key=/m.key").expect("tls");
        assert_eq!(tls.port, 5671);
        assert_eq!(tls.tls.expect("tls").ca.as_deref(), Some(std::path::Path::new("/c.pem")));
        let v6 = Settings::parse("amqp://[::1]:5000").expect("ipv6");
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 5000));
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        let bad = |url: &str| matches!(Settings::parse(url), Err(Error::InvalidUrl { .. }));
        assert!(bad("amqp://h:x"));
        assert!(bad("amqp://h?colour=red"));
        assert!(bad("amqp://h?prefetch=0"));
        assert!(bad("amqp://h?prefetch=70000"));
        assert!(bad("amqp://h?queue_expiry=0"));
        assert!(bad("amqp://h?heartbeat=soon"));
        assert!(bad("amqp://h?ca=/x"));
        assert!(bad("amqps://h?cert=/x"));
        assert!(bad("amqp://h?exchange="));
        assert!(bad("amqp://"));
        assert!(bad("amqp://h/%zz"));
        assert!(matches!(Settings::parse("gopher://h"), Err(Error::Unsupported { .. })));
        let err = Settings::parse("amqp://u:s3cret@h?x=1").expect_err("unknown parameter");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
}
