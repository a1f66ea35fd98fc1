//! `amqp://` and `amqps://` URLs.

use std::time::Duration;

use busbar_core::error::ConnectError;
use busbar_transport_kit::endpoint::{Endpoint, Params, Scheme, Server};
use busbar_transport_kit::servers::ServerOrder;

/// The exchange busbar topics are published to unless the URL names another.
pub const DEFAULT_EXCHANGE: &str = "amq.topic";

/// RabbitMQ's default `max_message_size` (128 MiB): a larger message makes the broker close
/// the channel, so it is refused before sending.
pub const DEFAULT_MAX_PAYLOAD: usize = 128 * 1024 * 1024;

/// The largest AMQP frame asked of the broker unless `?frame_max=` says otherwise (see
/// [`Settings::frame_max`]).
pub const DEFAULT_FRAME_MAX: u32 = 32 * 1024;

/// Where and how to connect, from a URL such as
/// `amqp://user:pass@127.0.0.1:5672/%2f?exchange=plant&heartbeat=30` or
/// `amqps://broker:5671/prod?ca=/etc/ca.pem&cert=/etc/me.pem&key=/etc/me.key`.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// The brokers (`amqp://h1,h2:5673`; port 5672 by default, or 5671 for `amqps://`):
    /// tried in turn at connect, and the next one taken when the one in use is lost.
    pub servers: Vec<Server>,
    /// The order the servers are tried in (`?server_order=listed`, the default, or
    /// `random`).
    pub server_order: ServerOrder,
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
    /// Largest AMQP frame asked of the broker (`?frame_max=BYTES`, 4096 to 131072; default
    /// 32768). Larger messages travel in several body frames. lapin keeps send and
    /// receive buffers of 32 frames each, so RabbitMQ's own 128 KiB would cost an idle
    /// connection 8 MiB; 32 KiB costs 2 MiB and carries a 32 KiB message in one frame.
    pub frame_max: u32,
    /// How long a subscription's queue outlives its connection (RabbitMQ `x-expires`), so a
    /// reconnect finds what was published meanwhile (default 60 s).
    pub queue_expiry: Duration,
    /// The queue type of durable subscriptions (`?durable_queues=classic`, the default, or
    /// `quorum`: replicated over a cluster's nodes).
    pub durable_queues: DurableQueues,
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
            .field("frame_max", &self.frame_max)
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

/// The schemes, their default ports, and which is secure.
const SCHEMES: &[Scheme] = &[
    Scheme { name: "amqp", default_port: 5672, secure: false },
    Scheme { name: "amqps", default_port: 5671, secure: true },
];

/// The longest wait a duration parameter may ask for (whole seconds in a `u32`, as before
/// units were accepted): longer ones would overflow the deadlines computed from them.
const LONGEST: Duration = Duration::from_secs(u32::MAX as u64);

/// A duration parameter of at least one second (`30`, `500ms` is too short, `2m`).
fn wait(p: &mut Params, key: &'static str) -> Result<Option<Duration>, ConnectError> {
    match p.duration(key, Duration::from_secs(1))? {
        Some(d) if d > LONGEST => Err(p.refuse(format!("{key} must be at most {LONGEST:?}"))),
        other => Ok(other),
    }
}

/// The queue type of durable subscriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DurableQueues {
    /// A durable classic queue: on disk on the node that holds it.
    Classic,
    /// A quorum queue: replicated over a majority of a cluster's nodes.
    Quorum,
}

impl Settings {
    /// Parses an `amqp://` or `amqps://` URL.
    pub fn parse(url: &str) -> Result<Settings, ConnectError> {
        let mut e = Endpoint::parse(url, SCHEMES)?;
        let (username, password) = match (&e.login.user, &e.login.password) {
            (None, None) => ("guest".to_owned(), "guest".to_owned()),
            (user, password) => {
                (user.clone().unwrap_or_default(), password.clone().unwrap_or_default())
            }
        };
        // AMQP URI spec: an empty path is the default vhost "/", and "/" itself is spelled %2f.
        let vhost = if e.path.is_empty() { "/".to_owned() } else { e.path.clone() };
        let p = &mut e.params;
        let exchange = match p.text("exchange") {
            None => DEFAULT_EXCHANGE.to_owned(),
            Some(name) if !name.is_empty() && name.len() <= 255 => name,
            Some(_) => {
                return Err(p.refuse(
                    "exchange must be a name of 1 to 255 bytes (the default exchange cannot route topics)",
                ));
            }
        };
        let prefetch = match p.number("prefetch", 0u16, u16::MAX)? {
            None => 1000,
            Some(0) => return Err(p.refuse("prefetch must be at least 1 (0 would be unbounded)")),
            Some(n) => n,
        };
        let settings = Settings {
            servers: e.servers.clone(),
            server_order: ServerOrder::from_params(p)?,
            username,
            password,
            vhost,
            exchange,
            heartbeat: p.number("heartbeat", 0u16, u16::MAX)?,
            frame_max: p.number("frame_max", 4096u32, 131_072)?.unwrap_or(DEFAULT_FRAME_MAX),
            queue_expiry: wait(p, "queue_expiry")?.unwrap_or(Duration::from_secs(60)),
            durable_queues: match p.choice("durable_queues", &["classic", "quorum"])? {
                Some("quorum") => DurableQueues::Quorum,
                _ => DurableQueues::Classic,
            },
            prefetch,
            reconnect_wait: wait(p, "reconnect_wait")?.unwrap_or(Duration::from_secs(10)),
            connect_timeout: wait(p, "connect_timeout")?.unwrap_or(Duration::from_secs(10)),
            max_payload: p
                .number("max_payload", 0u64, u64::from(u32::MAX))?
                .map_or(DEFAULT_MAX_PAYLOAD, |n| usize::try_from(n).unwrap_or(usize::MAX).max(1)),
            tls: TlsSettings::from_params(p, e.scheme.secure)?,
            shown: e.shown.clone(),
        };
        e.params.finish()?;
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use busbar_core::error::ConnectErrorKind;

    use super::*;

    #[test]
    fn parses_hosts_credentials_vhosts_and_options() {
        let s = Settings::parse(
            "amqp://u%40x:p%3Ass@127.0.0.1:5673/%2f?exchange=plant&heartbeat=10&prefetch=50",
        )
        .expect("valid");
        assert_eq!(s.servers, [Server { host: "127.0.0.1".into(), port: 5673 }]);
        assert_eq!((s.username.as_str(), s.password.as_str()), ("u@x", "p:ss"));
        assert_eq!(s.vhost, "/");
        assert_eq!(s.exchange, "plant");
        assert_eq!((s.heartbeat, s.prefetch), (Some(10), 50));
        assert!(!s.shown.contains("p%3Ass"), "{}", s.shown);
        assert!(!format!("{s:?}").contains("p:ss"));
        let d = Settings::parse("amqp://h").expect("defaults");
        assert_eq!(
            (d.servers[0].port, d.vhost.as_str(), d.username.as_str()),
            (5672, "/", "guest")
        );
        assert_eq!(d.password, "guest");
        assert_eq!(d.exchange, DEFAULT_EXCHANGE);
        assert_eq!((d.queue_expiry, d.prefetch), (Duration::from_secs(60), 1000));
        assert_eq!(
            (d.reconnect_wait, d.connect_timeout),
            (Duration::from_secs(10), d.reconnect_wait)
        );
        assert_eq!((d.max_payload, d.heartbeat), (DEFAULT_MAX_PAYLOAD, None));
        assert_eq!(d.frame_max, DEFAULT_FRAME_MAX);
        assert_eq!(Settings::parse("amqp://h?frame_max=131072").expect("frame").frame_max, 131_072);
        let only_user = Settings::parse("amqp://u@h").expect("user only");
        assert_eq!((only_user.username.as_str(), only_user.password.as_str()), ("u", ""));
        assert_eq!(Settings::parse("amqp://h/prod").expect("vhost").vhost, "prod");
        let tls = Settings::parse("amqps://h?ca=/c.pem&cert=/m.pem&key=/m.key").expect("tls");
        assert_eq!(tls.servers[0].port, 5671);
        assert_eq!(tls.tls.expect("tls").ca.as_deref(), Some(std::path::Path::new("/c.pem")));
        let v6 = Settings::parse("amqp://[::1]:5000").expect("ipv6");
        assert_eq!(v6.servers, [Server { host: "::1".into(), port: 5000 }]);
        assert_eq!(d.durable_queues, DurableQueues::Classic);
        let quorum = Settings::parse("amqp://h?durable_queues=quorum").expect("quorum");
        assert_eq!(quorum.durable_queues, DurableQueues::Quorum);
        assert!(Settings::parse("amqp://h?durable_queues=stream").is_err());
        let list = Settings::parse("amqp://a,b:5673?server_order=random").expect("a list");
        assert_eq!(list.servers.len(), 2);
        assert_eq!(list.server_order, ServerOrder::Random);
        let waits = Settings::parse("amqp://h?queue_expiry=2m&reconnect_wait=60&max_payload=0")
            .expect("waits");
        assert_eq!(
            (waits.queue_expiry, waits.reconnect_wait),
            (Duration::from_secs(120), Duration::from_secs(60))
        );
        assert_eq!(waits.max_payload, 1);
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        let bad = |url: &str| matches!(Settings::parse(url), Err(e) if e.kind() == ConnectErrorKind::InvalidUrl);
        assert!(bad("amqp://h:x"));
        assert!(bad("amqp://h?colour=red"));
        assert!(bad("amqp://h?prefetch=0"));
        assert!(bad("amqp://h?prefetch=70000"));
        assert!(bad("amqp://h?queue_expiry=0"));
        assert!(bad("amqp://h?queue_expiry=500ms"));
        assert!(bad("amqp://h?connect_timeout=99999999999"));
        assert!(bad("amqp://h?heartbeat=soon"));
        assert!(bad("amqp://h?frame_max=1000"), "below AMQP's minimum frame");
        assert!(bad("amqp://h?ca=/x"));
        assert!(bad("amqps://h?cert=/x"));
        assert!(bad("amqp://h?exchange="));
        assert!(bad(&format!("amqp://h?exchange={}", "x".repeat(256))));
        assert!(bad("amqp://"));
        assert!(bad("amqp://h/%zz"));
        assert!(bad("amqp://h1,h2:x"));
        assert!(bad("gopher://h"));
        let err = Settings::parse("amqp://u:s3cret@h?x=1").expect_err("unknown parameter");
        assert!(!err.to_string().contains("s3cret"), "{err}");
        assert!(err.to_string().contains("exchange"), "names the known parameters: {err}");
    }
}
