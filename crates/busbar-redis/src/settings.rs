//! `redis://` and `rediss://` URLs: what they may say and the typed errors for what they may
//! not.
//!
//! ```text
//! redis[s]://[user[:password]@]host[:port][,host[:port]...][/db][?param=value&...]
//! redis+unix://[user[:password]@]/path/to/redis.sock[?db=N&param=value&...]
//! ```
//!
//! `redis+unix://` (or `unix://`) reaches a server through its Unix socket (commlib's
//! `unix_socket` connection parameter); the database is then `?db=N`.
//!
//! Several servers are tried in turn (`?server_order=listed`, the default, or `random`).
//! With `?sentinel=NAME` they are Redis Sentinels instead (port 26379 usually, which must
//! then be written): every connect asks them, in turn, for the current master of the
//! group `NAME`, and follows it when they promote a replica.
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
//! | `server_order` | `listed` or `random`: the order the servers are tried in | `listed` |
//! | `sentinel` | the master group's name: the servers are Sentinels that name its master | none |
//!
//! Unknown parameters are refused (a typo must not be silently ignored).

use std::path::PathBuf;
use std::time::Duration;

use busbar_core::error::ConnectError;
use busbar_core::{Overflow, QueueConfig};
use busbar_transport_kit::endpoint::{Endpoint, Scheme, Server};
use busbar_transport_kit::servers::ServerOrder;

/// Everything a `redis://` or `rediss://` URL says.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settings {
    /// The URL with its password replaced by `***`, for messages and logs.
    pub redacted_url: String,
    /// The servers (port 6379 by default), or with [`sentinel`](Self::sentinel) the
    /// Sentinels to ask for the master. With [`socket`](Self::socket), one entry that names
    /// the socket (host `unix:PATH`, port 0) for events and messages.
    pub servers: Vec<Server>,
    /// The server's Unix socket (`redis+unix:///path`), used instead of TCP.
    pub socket: Option<PathBuf>,
    /// The order the servers are tried in.
    pub server_order: ServerOrder,
    /// The master group whose master the Sentinels name (`?sentinel=NAME`).
    pub sentinel: Option<String>,
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
    /// How long connecting may take (`?connect_timeout=10s`, the default): the first
    /// connection in all, and each reconnect's TCP connect.
    pub connect_timeout: Duration,
    /// The largest message published on a channel (`?max_message=BYTES`, default 32 MiB).
    /// Redis disconnects a subscriber whose pending output passes its
    /// `client-output-buffer-limit pubsub` hard limit (32 MiB by default), so a larger
    /// message reaches nobody and costs every subscriber its connection: it is refused
    /// before sending. Named queues (lists) are bounded by `proto-max-bulk-len` instead.
    pub max_message: usize,
}

/// Redis's default hard limit on a pub/sub subscriber's output buffer.
pub const DEFAULT_MAX_MESSAGE: usize = 32 * 1024 * 1024;

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

/// The schemes, their default ports, and which is secure.
const SCHEMES: &[Scheme] = &[
    Scheme { name: "redis", default_port: DEFAULT_PORT, secure: false },
    Scheme { name: "rediss", default_port: DEFAULT_PORT, secure: true },
];

impl Settings {
    /// Parses `url`.
    ///
    /// # Errors
    ///
    /// A [`ConnectError`] of kind `InvalidUrl` naming the offending part.
    pub fn parse(url: &str) -> Result<Settings, ConnectError> {
        if let Some(socket_url) = unix_socket_url(url) {
            return Self::parse_unix(url, socket_url);
        }
        let mut e = Endpoint::parse(url, SCHEMES)?;
        let db = if e.path.is_empty() {
            0
        } else {
            e.path.parse::<i64>().ok().filter(|d| *d >= 0).ok_or_else(|| {
                e.invalid(format!("database {:?} is not a non-negative number", e.path))
            })?
        };
        let p = &mut e.params;
        let queue = p.queue(
            "publish_queue",
            "publish_overflow",
            QueueConfig::new(DEFAULT_QUEUE, Overflow::Block),
        )?;
        let settings = Settings {
            redacted_url: e.shown.clone(),
            servers: e.servers.clone(),
            socket: None,
            server_order: ServerOrder::from_params(p)?,
            sentinel: match p.text("sentinel") {
                Some(name) if name.is_empty() => {
                    return Err(p.refuse("sentinel needs the master group's name"));
                }
                name => name,
            },
            db,
            // `redis://:password@host` names no user: the default user.
            username: e.login.user.clone().filter(|u| !u.is_empty()),
            password: e.login.password.clone(),
            publish_queue: queue.capacity,
            publish_overflow: queue.overflow,
            push_buffer: p.count("push_buffer")?.unwrap_or(DEFAULT_QUEUE),
            response_timeout: Duration::from_millis(
                p.number("response_timeout_ms", 1u64, u64::MAX)?.unwrap_or(10_000),
            ),
            connect_timeout: p.connect_timeout()?,
            max_message: p.count("max_message")?.unwrap_or(DEFAULT_MAX_MESSAGE),
            tls: TlsSettings::from_params(p, e.scheme.secure)?,
        };
        e.params.finish()?;
        Ok(settings)
    }

    /// Parses a `redis+unix://` URL: its login and parameters as a `redis://` URL's, the
    /// database from `?db=`, the socket from its path.
    fn parse_unix(url: &str, (scheme, rest): (&str, &str)) -> Result<Settings, ConnectError> {
        let shown = busbar_core::url::redact(url);
        let invalid = |reason: &str| ConnectError::invalid_url(&shown, reason);
        let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
        // The login ends at the last '@' before the path.
        let (login, path) = match before_query.rsplit_once('@') {
            Some((login, path)) => (format!("{login}@"), path),
            None => (String::new(), before_query),
        };
        if !path.starts_with('/') || path.len() < 2 {
            return Err(invalid(&format!(
                "a {scheme}:// URL names the socket by its absolute path: {scheme}:///path/to/redis.sock"
            )));
        }
        let path = busbar_core::url::percent_decode(path)
            .map_err(|e| invalid(&format!("the socket path: {e}")))?;
        // Everything but the address is read as a redis:// URL's; `db` comes first, as no path
        // can carry it.
        let mut params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
        let db = match params.iter().position(|p| p.starts_with("db=")) {
            Some(i) => {
                let value = &params.remove(i)["db=".len()..];
                value.parse::<i64>().ok().filter(|d| *d >= 0).ok_or_else(|| {
                    invalid(&format!("database {value:?} is not a non-negative number"))
                })?
            }
            None => 0,
        };
        let as_tcp = format!("redis://{login}localhost/{db}?{}", params.join("&"));
        // Its messages name this URL, not the stand-in.
        let mut settings = Self::parse(&as_tcp).map_err(|e| {
            let text = e.to_string();
            let reason = text.split_once("\": ").map_or(text.as_str(), |(_, r)| r);
            ConnectError::invalid_url(&shown, reason)
        })?;
        if settings.sentinel.is_some() || settings.servers.len() != 1 {
            return Err(invalid("a Unix socket is one server: no sentinel= here"));
        }
        settings.redacted_url = shown;
        settings.servers = vec![Server { host: format!("unix:{path}"), port: 0 }];
        settings.socket = Some(PathBuf::from(path));
        Ok(settings)
    }
}

/// `(scheme, rest)` of a URL that names a Unix socket (`redis+unix://` or `unix://`).
fn unix_socket_url(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    ["redis+unix", "unix"].iter().any(|s| s.eq_ignore_ascii_case(scheme)).then_some((scheme, rest))
}

#[cfg(test)]
mod tests {
    use busbar_core::error::ConnectErrorKind;

    use super::*;

    #[test]
    fn unix_sockets() {
        let s = Settings::parse("redis+unix://u:p%40ss@/run/redis/redis.sock?db=3&push_buffer=9")
            .expect("socket");
        assert_eq!(s.socket.as_deref(), Some(std::path::Path::new("/run/redis/redis.sock")));
        assert_eq!((s.db, s.push_buffer), (3, 9));
        assert_eq!((s.username.as_deref(), s.password.as_deref()), (Some("u"), Some("p@ss")));
        assert_eq!(s.servers[0].host, "unix:/run/redis/redis.sock");
        assert!(!s.redacted_url.contains("p%40ss"), "{}", s.redacted_url);
        let plain = Settings::parse("unix:///tmp/r.sock").expect("unix://");
        assert_eq!((plain.socket.is_some(), plain.db), (true, 0));
        let bad = |url: &str| {
            let e = Settings::parse(url).expect_err(url);
            assert_eq!(e.kind(), ConnectErrorKind::InvalidUrl, "{url}: {e}");
            assert!(e.to_string().contains(url.split('?').next().unwrap_or(url)), "{e}");
            e.to_string()
        };
        assert!(bad("redis+unix://relative.sock").contains("absolute path"));
        assert!(bad("redis+unix:///tmp/r.sock?db=x").contains("\"x\""));
        assert!(bad("redis+unix:///tmp/r.sock?nonsense=1").contains("nonsense"));
        assert!(bad("redis+unix:///tmp/r.sock?sentinel=m").contains("sentinel"));
    }

    #[test]
    fn full_url() {
        let s = Settings::parse(
            "rediss://alice:p%40ss@redis.example:6380/2?ca=/tmp/ca.pem&publish_overflow=drop-oldest",
        )
        .expect("valid");
        assert_eq!(s.servers, [Server { host: "redis.example".into(), port: 6380 }]);
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
        assert_eq!((s.servers[0].port, s.db, s.tls.is_none()), (6379, 0, true));
        assert_eq!((s.publish_queue, s.publish_overflow), (65_536, Overflow::Block));
        assert_eq!((s.push_buffer, s.response_timeout), (65_536, Duration::from_secs(10)));
        let s = Settings::parse("redis://:secret@[::1]:7000").expect("valid");
        assert_eq!(s.servers, [Server { host: "::1".into(), port: 7000 }]);
        assert_eq!((s.username, s.password.as_deref()), (None, Some("secret")));
        let s = Settings::parse("redis://h?publish_queue=8&push_buffer=16&response_timeout_ms=250")
            .expect("valid");
        assert_eq!((s.publish_queue, s.push_buffer), (8, 16));
        assert_eq!(s.response_timeout, Duration::from_millis(250));
        assert_eq!(Settings::parse("rediss://h").expect("valid").servers[0].port, 6379);
        let s = Settings::parse("redis://a:26379,b:26380?sentinel=mymaster").expect("sentinels");
        assert_eq!((s.servers.len(), s.sentinel.as_deref()), (2, Some("mymaster")));
        assert_eq!(s.server_order, ServerOrder::Listed);
    }

    #[test]
    fn typed_errors_name_the_problem_and_hide_the_password() {
        for (url, needle) in [
            ("redis://h:0", "port"),
            ("redis://h:x", "port"),
            ("redis://", "host"),
            ("redis://h/abc", "database"),
            ("redis://h?ca=/x", "TLS"),
            ("redis://h?bogus=1", "unknown parameter"),
            ("redis://h?publish_queue=0", "publish_queue"),
            ("redis://h?response_timeout_ms=0", "response_timeout_ms"),
            ("redis://h?publish_overflow=maybe", "drop-oldest"),
            ("rediss://h?cert=/a", "both cert and key"),
            ("redis://h1,h2:x", "\"h2:x\""),
            ("redis://h?sentinel=", "master group"),
            ("redis://h?server_order=first", "listed, random"),
            ("http://h", "scheme"),
            ("redis://u:topsecret@h:99999", "port"),
        ] {
            match Settings::parse(url) {
                Err(e) => {
                    assert_eq!(e.kind(), ConnectErrorKind::InvalidUrl, "{url}: {e}");
                    assert!(e.to_string().contains(needle), "{url}: {e}");
                    assert!(!e.to_string().contains("topsecret"), "{e}");
                }
                Ok(s) => panic!("{url}: expected InvalidUrl, got {s:?}"),
            }
        }
    }
}
