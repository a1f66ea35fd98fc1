//! `nats://` and `tls://` URLs.

use std::time::Duration;

use busbar_core::error::ConnectError;
use busbar_core::{Overflow, QueueConfig};
pub use busbar_tls::TlsSettings;
use busbar_transport_kit::endpoint::{Endpoint, Scheme, Server};
use busbar_transport_kit::servers::ServerOrder;

/// The NATS client's default per-subscription buffer (async-nats' own default, stated here so
/// it is a decision rather than an accident).
pub const DEFAULT_SUBSCRIPTION_CAPACITY: usize = 64 * 1024;

/// How the client proves who it is.
#[derive(Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
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
    /// The servers to connect to (`nats://h1:4222,h2:4222`; port 4222 by default). A cluster
    /// announces its other members as well, which the client adds.
    pub servers: Vec<Server>,
    /// The order the servers are tried in (`?server_order=listed`, the default, or
    /// `random`).
    pub server_order: ServerOrder,
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
    /// How long the first connection may take (`?connect_timeout=SECS`, or with a unit:
    /// `500ms`, `1m`; default 10 s, as on every transport).
    pub connect_timeout: Duration,
    /// The longest command line the server reads (`?max_control_line=BYTES`, default
    /// 4,096, nats-server's default). Its INFO does not say; a longer `PUB` line makes the
    /// server drop the message with an error, so such subjects are refused before sending.
    pub max_control_line: usize,
    /// Replicas of a durable subscription's JetStream stream (`?durable_replicas=N`, 1 to
    /// 5, default 1): on a JetStream cluster, 3 keeps it readable and its messages through
    /// the loss of one node. Fixed when the stream is made.
    pub durable_replicas: usize,
    /// How long a publish to a subject a durable subscription keeps waits for its JetStream
    /// stream to confirm storing it (`?confirm_timeout=`, default 10 s): past it, the
    /// publish fails with `TimedOut` (it may have been stored).
    pub confirm_timeout: Duration,
    /// The URL with the password hidden, for messages.
    pub shown: String,
}

/// How long a publish waits for a durable subscription's stream to confirm it, by default.
pub const DEFAULT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// nats-server's default `max_control_line`.
pub const DEFAULT_MAX_CONTROL_LINE: usize = 4096;

/// The schemes, their default port, and which is secure.
const SCHEMES: &[Scheme] = &[
    Scheme { name: "nats", default_port: 4222, secure: false },
    Scheme { name: "tls", default_port: 4222, secure: true },
];

impl Settings {
    /// Parses a `nats://` or `tls://` URL.
    pub fn parse(url: &str) -> Result<Settings, ConnectError> {
        let mut e = Endpoint::parse(url, SCHEMES)?;
        if !e.path.is_empty() {
            return Err(e.invalid(format!("a NATS URL has no path, but {:?} was given", e.path)));
        }
        let mut credentials = match (&e.login.user, &e.login.password) {
            (None, None) => Credentials::None,
            (Some(user), Some(password)) if !user.is_empty() => {
                Credentials::UserPassword { user: user.clone(), password: password.clone() }
            }
            (_, Some(_)) => return Err(e.invalid("a password needs a user name")),
            (Some(token), None) if token.is_empty() => {
                return Err(e.invalid("empty credentials before '@'"));
            }
            // A user name without a password is a token, as in every NATS client.
            (Some(token), None) => Credentials::Token(token.clone()),
        };
        let p = &mut e.params;
        let server_order = ServerOrder::from_params(p)?;
        let subscription_capacity =
            p.count("subscription_capacity")?.unwrap_or(DEFAULT_SUBSCRIPTION_CAPACITY);
        let publish_queue =
            p.queue("publish_queue", "publish_overflow", QueueConfig::new(1024, Overflow::Block))?;
        let connect_timeout = p.connect_timeout()?;
        let max_control_line = p.count("max_control_line")?.unwrap_or(DEFAULT_MAX_CONTROL_LINE);
        let durable_replicas = p.number("durable_replicas", 1, 5)?.unwrap_or(1);
        let confirm_timeout = p
            .duration("confirm_timeout", Duration::from_millis(1))?
            .unwrap_or(DEFAULT_CONFIRM_TIMEOUT);
        if let Some(path) = p.path("creds") {
            if credentials != Credentials::None {
                return Err(p.refuse("give either credentials before '@' or creds=, not both"));
            }
            credentials = Credentials::CredsFile(path);
        }
        let tls = TlsSettings::from_params(p, e.scheme.secure)?;
        let settings = Settings {
            servers: e.servers.clone(),
            server_order,
            credentials,
            tls,
            subscription_capacity,
            publish_queue,
            connect_timeout,
            max_control_line,
            durable_replicas,
            confirm_timeout,
            shown: e.shown.clone(),
        };
        e.params.finish()?;
        Ok(settings)
    }

    /// The server addresses as async-nats takes them, without credentials (those go in the
    /// connect options, so they never appear in the client's own logs).
    pub(crate) fn server_addresses(&self) -> Vec<String> {
        let scheme = if self.tls.is_some() { "tls" } else { "nats" };
        self.servers.iter().map(|server| format!("{scheme}://{server}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use busbar_core::error::ConnectErrorKind;

    use super::*;

    #[test]
    fn parses_hosts_credentials_and_options() {
        let s = Settings::parse(
            "nats://u:p%40ss@127.0.0.1:4223?subscription_capacity=10&publish_queue=5&publish_overflow=drop-oldest",
        )
        .expect("valid");
        assert_eq!(s.servers, [Server { host: "127.0.0.1".into(), port: 4223 }]);
        assert_eq!(
            s.credentials,
            Credentials::UserPassword { user: "u".into(), password: "p@ss".into() }
        );
        assert_eq!(s.subscription_capacity, 10);
        assert_eq!(s.publish_queue, QueueConfig::new(5, Overflow::DropOldest));
        assert!(!s.shown.contains("p%40ss"), "{}", s.shown);
        assert!(!format!("{s:?}").contains("p@ss"));
        let d = Settings::parse("nats://localhost").expect("defaults");
        assert_eq!(
            (d.servers[0].port, d.subscription_capacity),
            (4222, DEFAULT_SUBSCRIPTION_CAPACITY)
        );
        assert_eq!(d.server_addresses(), ["nats://localhost:4222"]);
        let t = Settings::parse("nats://s3cret@h:1").expect("token");
        assert_eq!(t.credentials, Credentials::Token("s3cret".into()));
        let c = Settings::parse("nats://h?creds=%2Fetc%2Fme.creds").expect("creds");
        assert_eq!(c.credentials, Credentials::CredsFile("/etc/me.creds".into()));
        assert!(Settings::parse("nats://u:p@h?creds=/x").is_err());
        assert!(!t.shown.contains("s3cret"), "{}", t.shown);
        let tls = Settings::parse("tls://h?ca=/c.pem&cert=/m.pem&key=/m.key").expect("tls");
        assert_eq!(tls.server_addresses(), ["tls://h:4222"]);
        let tls = tls.tls.expect("tls settings");
        assert_eq!(tls.ca.as_deref(), Some(std::path::Path::new("/c.pem")));
        let v6 = Settings::parse("nats://[::1]:4333").expect("v6");
        assert_eq!(v6.server_addresses(), ["nats://[::1]:4333"]);
        let list = Settings::parse("nats://a,b:4223?server_order=random").expect("a list");
        assert_eq!(list.server_addresses(), ["nats://a:4222", "nats://b:4223"]);
        assert_eq!(list.server_order, ServerOrder::Random);
        let slow = Settings::parse("nats://h?connect_timeout=30").expect("seconds");
        assert_eq!(slow.connect_timeout, Duration::from_secs(30));
        assert_eq!(d.connect_timeout, Duration::from_secs(10));
        assert_eq!(d.publish_queue, QueueConfig::new(1024, Overflow::Block));
        assert_eq!(Settings::parse("nats://h/").expect("a bare slash").servers[0].port, 4222);
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        let bad = |url: &str| matches!(Settings::parse(url), Err(e) if e.kind() == ConnectErrorKind::InvalidUrl);
        assert!(bad("nats://h:x"));
        assert!(bad("nats://h?colour=red"));
        assert!(bad("nats://h?subscription_capacity=0"));
        assert!(bad("nats://h?publish_overflow=sometimes"));
        assert!(bad("nats://h?connect_timeout=0"));
        assert!(bad("nats://h/path"));
        assert!(bad("nats://h?ca=/x"));
        assert!(bad("tls://h?cert=/x"));
        assert!(bad("nats://"));
        assert!(bad("nats://a:1,b:x"));
        assert!(bad("nats://a?server_order=first"));
        assert!(bad("nats://:pw@h"));
        assert!(bad("nats://@h"));
        assert!(bad("mqtt://h"));
        let err = Settings::parse("nats://u:hunter2@h:x").expect_err("bad port");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let err = Settings::parse("nats://s3cret@h?colour=red").expect_err("unknown parameter");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
}
