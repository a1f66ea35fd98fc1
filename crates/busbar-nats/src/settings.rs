//! `nats://` and `tls://` URLs.

use std::time::Duration;

use busbar_core::connection::redact_url;
use busbar_core::url::percent_decode;
use busbar_core::{Error, Overflow, QueueConfig, Result};
pub use busbar_tls::TlsSettings;

/// The NATS client's default per-subscription buffer (async-nats' own default, stated here so
/// it is a decision rather than an accident).
pub const DEFAULT_SUBSCRIPTION_CAPACITY: usize = 64 * 1024;

/// How the client proves who it is.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Credentials {
    /// Anonymous.
    #[default]
    None,
    /// `nats://user:password@host`.
    UserPassword {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// `nats://token@host` (a user name without a password is a token, as in every NATS
    /// client).
    Token(String),
    /// `nats://host?creds=PATH`: a `.creds` file holding a user JWT and the nkey seed that
    /// signs the server's challenge (decentralised JWT authentication).
    CredsFile(std::path::PathBuf),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret.
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::UserPassword { user, .. } => write!(f, "UserPassword({user}, ***)"),
            Credentials::Token(_) => f.write_str("Token(***)"),
            Credentials::CredsFile(path) => write!(f, "CredsFile({})", path.display()),
        }
    }
}

/// Where and how to connect, from a URL such as
/// `nats://user:pass@127.0.0.1:4222?subscription_capacity=100000` or
/// `tls://127.0.0.1:4443?ca=/etc/ca.pem&cert=/etc/me.pem&key=/etc/me.key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Server host.
    pub host: String,
    /// Server port (default 4222).
    pub port: u16,
    /// Credentials from the URL.
    pub credentials: Credentials,
    /// TLS settings for `tls://`; `None` for plain TCP.
    pub tls: Option<TlsSettings>,
    /// Messages the NATS client buffers per subscription before it drops them and reports a
    /// slow consumer (`?subscription_capacity=N`, default 65,536). Under the `Block` policy
    /// this buffer is what absorbs a slow reader: NATS cannot make a publisher wait.
    pub subscription_capacity: usize,
    /// How publishes wait when the client cannot take them (connection down or slow):
    /// `Block` (the default) makes `publish` wait; the drop policies never wait and count what
    /// they discard (`?publish_overflow=drop-oldest&publish_queue=N`).
    pub publish_queue: QueueConfig,
    /// How long the first connection may take (`?connect_timeout=SECS`, default 5 s).
    pub connect_timeout: Duration,
    /// The URL with the password hidden, for messages.
    pub shown: String,
}

impl Settings {
    /// Parses a `nats://` or `tls://` URL.
    pub fn parse(url: &str) -> Result<Settings> {
        let shown = redact(url);
        let invalid = |reason: String| Error::InvalidUrl { url: shown.clone(), reason };
        let (scheme, rest) =
            url.split_once("://").ok_or_else(|| invalid("expected nats://HOST[:PORT]".into()))?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "nats" => None,
            "tls" => Some(TlsSettings::default()),
            _ => {
                return Err(Error::Unsupported {
                    transport: "nats",
                    feature: "this URL scheme (nats://, tls://)",
                });
            }
        };
        let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = match before_query.find('/') {
            Some(i) => before_query.split_at(i),
            None => (before_query, ""),
        };
        if !path.is_empty() && path != "/" {
            return Err(invalid(format!("a NATS URL has no path, but {path:?} was given")));
        }
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let credentials = match userinfo {
            None => Credentials::None,
            Some(u) => match u.split_once(':') {
                Some((user, password)) if !user.is_empty() => Credentials::UserPassword {
                    user: percent_decode(user).map_err(&invalid)?,
                    password: percent_decode(password).map_err(&invalid)?,
                },
                Some(_) => return Err(invalid("a password needs a user name".into())),
                None if u.is_empty() => return Err(invalid("empty credentials before '@'".into())),
                None => Credentials::Token(percent_decode(u).map_err(&invalid)?),
            },
        };
        if hostport.contains(',') {
            return Err(invalid("give one server; NATS clusters announce the others".into()));
        }
        let (host, port) = match hostport.rsplit_once(':') {
            // An IPv6 literal without a port: the colon is the address's own.
            Some((h, p)) if !(hostport.starts_with('[') && hostport.ends_with(']')) => {
                let port = p.parse::<u16>().map_err(|_| invalid(format!("bad port {p:?}")))?;
                (h, port)
            }
            _ => (hostport, 4222),
        };
        if host.is_empty() {
            return Err(invalid("no host".into()));
        }
        let mut settings = Settings {
            host: host.trim_start_matches('[').trim_end_matches(']').to_owned(),
            port,
            credentials,
            tls,
            subscription_capacity: DEFAULT_SUBSCRIPTION_CAPACITY,
            publish_queue: QueueConfig::new(1024, Overflow::Block),
            connect_timeout: Duration::from_secs(5),
            shown: shown.clone(),
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| invalid(format!("parameter {pair:?} has no value")))?;
            // Values are percent-encoded like every URL part (`ca=%2Fetc%2Fca.pem`).
            let decoded =
                percent_decode(value).map_err(|e| invalid(format!("parameter {key}: {e}")))?;
            let value = decoded.as_str();
            let count = || {
                value.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    invalid(format!("{key} must be a positive count, not {value:?}"))
                })
            };
            match key {
                "subscription_capacity" => settings.subscription_capacity = count()?,
                "publish_queue" => {
                    settings.publish_queue =
                        QueueConfig::new(count()?, settings.publish_queue.overflow);
                }
                "publish_overflow" => {
                    let overflow = Overflow::from_name(value).ok_or_else(|| {
                        invalid(format!(
                            "publish_overflow must be block, drop-oldest or drop-newest, not {value:?}"
                        ))
                    })?;
                    settings.publish_queue =
                        QueueConfig::new(settings.publish_queue.capacity, overflow);
                }
                "connect_timeout" => {
                    let secs = value.parse::<u64>().ok().filter(|s| *s > 0).ok_or_else(|| {
                        invalid(format!("connect_timeout must be whole seconds, not {value:?}"))
                    })?;
                    settings.connect_timeout = Duration::from_secs(secs);
                }
                "creds" => {
                    if settings.credentials != Credentials::None {
                        return Err(invalid(
                            "give either credentials before '@' or creds=, not both".into(),
                        ));
                    }
                    settings.credentials = Credentials::CredsFile(value.into());
                }
                "ca" | "cert" | "key" => {
                    let tls = settings.tls.as_mut().ok_or_else(|| {
                        invalid(format!("{key} needs a TLS connection: use tls://"))
                    })?;
                    tls.set(key, value);
                }
                _ => {
                    return Err(invalid(format!(
                        "unknown parameter {key:?} (known: subscription_capacity, publish_queue, \
                         publish_overflow, connect_timeout, creds, ca, cert, key)"
                    )));
                }
            }
        }
        if let Some(problem) = settings.tls.as_ref().and_then(TlsSettings::problem) {
            return Err(invalid(problem.into()));
        }
        Ok(settings)
    }

    /// The server address as async-nats takes it, without credentials (those go in the
    /// connect options, so they never appear in the client's own logs).
    pub(crate) fn server_address(&self) -> String {
        let scheme = if self.tls.is_some() { "tls" } else { "nats" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// `url` with its secret hidden: the password of `user:password@`, or a whole token
/// (`token@`), which `redact_url` would otherwise show as a user name.
fn redact(url: &str) -> String {
    let redacted = redact_url(url);
    let Some((scheme, rest)) = redacted.split_once("://") else { return redacted };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if !userinfo.contains(':') => format!("{scheme}://***@{host}{tail}"),
        _ => redacted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_credentials_and_options() {
        let s = Settings::parse(
            "nats://u:p%40ss@127.0.0.1:4223?subscription_capacity=10&publish_queue=5&publish_overflow=drop-oldest",
        )
        .expect("valid");
        assert_eq!((s.host.as_str(), s.port), ("127.0.0.1", 4223));
        assert_eq!(
            s.credentials,
            Credentials::UserPassword { user: "u".into(), password: "p@ss".into() }
        );
        assert_eq!(s.subscription_capacity, 10);
        assert_eq!(s.publish_queue, QueueConfig::new(5, Overflow::DropOldest));
        assert!(!s.shown.contains("p%40ss"), "{}", s.shown);
        assert!(!format!("{s:?}").contains("p@ss"));
        let d = Settings::parse("nats://localhost").expect("defaults");
        assert_eq!((d.port, d.subscription_capacity), (4222, DEFAULT_SUBSCRIPTION_CAPACITY));
        assert_eq!(d.server_address(), "nats://localhost:4222");
        let t = Settings::parse("nats://s3cret@h:1").expect("token");
        assert_eq!(t.credentials, Credentials::Token("s3cret".into()));
        let c = Settings::parse("nats://h?creds=%2Fetc%2Fme.creds").expect("creds");
        assert_eq!(c.credentials, Credentials::CredsFile("/etc/me.creds".into()));
        assert!(Settings::parse("nats://u:p@h?creds=/x").is_err());
        assert!(!t.shown.contains("s3cret"), "{}", t.shown);
        let tls = Settings::parse("tls://h?ca=/c.pem&cert=/m.pem&key=/m.key").expect("tls");
        assert_eq!(tls.server_address(), "tls://h:4222");
        let tls = tls.tls.expect("tls settings");
        assert_eq!(tls.ca.as_deref(), Some(std::path::Path::new("/c.pem")));
        let v6 = Settings::parse("nats://[::1]:4333").expect("v6");
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 4333));
        assert_eq!(v6.server_address(), "nats://[::1]:4333");
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        let bad = |url: &str| matches!(Settings::parse(url), Err(Error::InvalidUrl { .. }));
        assert!(bad("nats://h:x"));
        assert!(bad("nats://h?colour=red"));
        assert!(bad("nats://h?subscription_capacity=0"));
        assert!(bad("nats://h?publish_overflow=sometimes"));
        assert!(bad("nats://h/path"));
        assert!(bad("nats://h?ca=/x"));
        assert!(bad("tls://h?cert=/x"));
        assert!(bad("nats://"));
        assert!(bad("nats://a:1,b:2"));
        assert!(bad("nats://:pw@h"));
        assert!(matches!(Settings::parse("mqtt://h"), Err(Error::Unsupported { .. })));
        let err = Settings::parse("nats://u:hunter2@h:x").expect_err("bad port");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
