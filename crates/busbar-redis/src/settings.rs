//! `redis://` and `rediss://` URLs: what they may say and the typed errors for what they may
//! not.
//!
//! ```text
//! redis[s]://[user[:password]@]host[:port][/db][?param=value&...]
//! ```
//!
//! Parameters (all optional):
//!
//! | name | meaning | default |
//! |---|---|---|
//! | `ca` | PEM file of the CA that signed the server's certificate (`rediss://` only) | system roots |
//! | `cert`, `key` | PEM client certificate and key for mutual TLS (`rediss://` only, both or neither) | none |
//! | `publish_queue` | capacity of the outgoing publish queue | 65536 |
//! | `publish_overflow` | `block`, `drop-oldest` or `drop-newest` when that queue is full | `block` |
//! | `push_buffer` | capacity of the buffer between the socket reader and the dispatcher | 65536 |
//! | `response_timeout_ms` | how long a command may wait for its reply | 10000 |
//!
//! Unknown parameters are refused (a typo must not be silently ignored).

use std::time::Duration;

use busbar_core::connection::redact_url;
use busbar_core::url::percent_decode;
use busbar_core::{Error, Overflow, Result};

/// Everything a `redis://` or `rediss://` URL says.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settings {
    /// The URL with its password replaced by `***`, for messages and logs.
    pub redacted_url: String,
    /// Host name or address.
    pub host: String,
    /// TCP port (6379 by default).
    pub port: u16,
    /// Database number (only affects list keys: pub/sub channels are global in Redis).
    pub db: i64,
    /// User name (Redis 6 ACL), if any.
    pub username: Option<String>,
    /// Password, if any.
    pub password: Option<String>,
    /// TLS settings for `rediss://`; `None` for `redis://`.
    pub tls: Option<TlsSettings>,
    /// Capacity of the outgoing publish queue.
    pub publish_queue: usize,
    /// What a full publish queue does.
    pub publish_overflow: Overflow,
    /// Capacity of the buffer between the socket reader and the dispatcher.
    pub push_buffer: usize,
    /// Reply deadline for ordinary commands.
    pub response_timeout: Duration,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("Settings")
            .field("url", &self.redacted_url)
            .field("tls", &self.tls)
            .field("publish_queue", &self.publish_queue)
            .field("publish_overflow", &self.publish_overflow)
            .field("push_buffer", &self.push_buffer)
            .finish_non_exhaustive()
    }
}

/// How to secure a `rediss://` connection (`ca`, `cert`, `key`).
pub use busbar_tls::TlsSettings;

const DEFAULT_PORT: u16 = 6379;
const DEFAULT_QUEUE: usize = 65_536;

impl Settings {
    /// Parses `url`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`] naming the offending part.
    pub fn parse(url: &str) -> Result<Settings> {
        let redacted_url = redact_url(url);
        let bad = |reason: String| Error::InvalidUrl { url: redacted_url.clone(), reason };
        let (scheme, rest) =
            url.split_once("://").ok_or_else(|| bad("expected redis://host[:port]".into()))?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "redis" => false,
            "rediss" => true,
            other => return Err(bad(format!("scheme {other:?} is not redis or rediss"))),
        };
        let (before_query, query) = match rest.split_once('?') {
            Some((a, q)) => (a, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match before_query.find('/') {
            Some(i) => (&before_query[..i], &before_query[i + 1..]),
            None => (before_query, ""),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => {
                let (user, pass) = match u.split_once(':') {
                    Some((user, pass)) => (user, Some(pass)),
                    None => (u, None),
                };
                let user = percent_decode(user).map_err(|e| bad(format!("user name: {e}")))?;
                let pass = pass
                    .map(percent_decode)
                    .transpose()
                    .map_err(|e| bad(format!("password: {e}")))?;
                (Some(user).filter(|u| !u.is_empty()), pass)
            }
        };
        let (host, port) = split_host_port(hostport).map_err(bad)?;
        let db = if path.is_empty() {
            0
        } else {
            path.parse::<i64>()
                .ok()
                .filter(|d| *d >= 0)
                .ok_or_else(|| bad(format!("database {path:?} is not a non-negative number")))?
        };
        let mut settings = Settings {
            redacted_url: redacted_url.clone(),
            host,
            port,
            db,
            username,
            password,
            tls: tls.then(TlsSettings::default),
            publish_queue: DEFAULT_QUEUE,
            publish_overflow: Overflow::Block,
            push_buffer: DEFAULT_QUEUE,
            response_timeout: Duration::from_secs(10),
        };
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value).map_err(|e| bad(format!("parameter {name}: {e}")))?;
            settings.apply(name, &value).map_err(bad)?;
        }
        if let Some(problem) = settings.tls.as_ref().and_then(TlsSettings::problem) {
            return Err(bad(problem.into()));
        }
        Ok(settings)
    }

    fn apply(&mut self, name: &str, value: &str) -> std::result::Result<(), String> {
        let positive = |v: &str| {
            v.parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{name}={v:?} is not a positive number"))
        };
        fn tls_only<'a>(
            tls: &'a mut Option<TlsSettings>,
            name: &str,
        ) -> std::result::Result<&'a mut TlsSettings, String> {
            tls.as_mut().ok_or_else(|| format!("{name} needs a rediss:// URL (TLS)"))
        }
        match name {
            "ca" | "cert" | "key" => {
                tls_only(&mut self.tls, name)?.set(name, value);
            }
            "publish_queue" => self.publish_queue = positive(value)?,
            "push_buffer" => self.push_buffer = positive(value)?,
            "publish_overflow" => {
                self.publish_overflow = Overflow::from_name(value).ok_or_else(|| {
                    format!(
                        "publish_overflow={value:?}: expected block, drop-oldest or drop-newest"
                    )
                })?
            }
            "response_timeout_ms" => {
                self.response_timeout = Duration::from_millis(positive(value)? as u64)
            }
            other => return Err(format!("unknown parameter {other:?}")),
        }
        Ok(())
    }
}

fn split_host_port(hostport: &str) -> std::result::Result<(String, u16), String> {
    if hostport.is_empty() {
        return Err("the host is missing".into());
    }
    // Bracketed IPv6 literal: [::1]:6379
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or("unclosed '[' in the host")?;
        (h, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err("the host is missing".into());
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("port {p:?} is not a number from 1 to 65535"))?,
    };
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_url() {
        let s = Settings::parse(
            "rediss://alice:p%40ss@redis.example:6380/2?ca=/tmp/ca.pem&publish_overflow=drop-oldest",
        )
        .expect("valid");
        assert_eq!(s.host, "redis.example");
        assert_eq!(s.port, 6380);
        assert_eq!(s.db, 2);
        assert_eq!(s.username.as_deref(), Some("alice"));
        assert_eq!(s.password.as_deref(), Some("p@ss"));
        assert_eq!(s.publish_overflow, Overflow::DropOldest);
        assert_eq!(
            s.tls.as_ref().and_then(|t| t.ca.clone()),
            Some(std::path::PathBuf::from("/tmp/ca.pem"))
        );
        assert!(!format!("{s:?}").contains("p%40ss") && !format!("{s:?}").contains("p@ss"));
    }

    #[test]
    fn defaults() {
        let s = Settings::parse("redis://127.0.0.1").expect("valid");
        assert_eq!((s.port, s.db, s.tls.is_none()), (6379, 0, true));
        let s = Settings::parse("redis://:secret@[::1]:7000").expect("valid");
        assert_eq!((s.host.as_str(), s.port), ("::1", 7000));
        assert_eq!((s.username, s.password.as_deref()), (None, Some("secret")));
    }

    #[test]
    fn typed_errors_name_the_problem_and_hide_the_password() {
        for (url, needle) in [
            ("redis://h:0", "port"),
            ("redis://h:x", "port"),
            ("redis://", "host"),
            ("redis://h/abc", "database"),
            ("redis://h?ca=/x", "rediss"),
            ("redis://h?bogus=1", "unknown parameter"),
            ("redis://h?publish_queue=0", "positive"),
            ("redis://h?publish_overflow=maybe", "drop-oldest"),
            ("rediss://h?cert=/a", "both cert and key"),
            ("http://h", "scheme"),
            ("redis://u:topsecret@h:99999", "port"),
        ] {
            match Settings::parse(url) {
                Err(Error::InvalidUrl { url: shown, reason }) => {
                    assert!(reason.contains(needle), "{url}: {reason}");
                    assert!(!shown.contains("topsecret"), "{shown}");
                }
                other => panic!("{url}: expected InvalidUrl, got {other:?}"),
            }
        }
    }
}
