//! `mqtt://` and `mqtts://` URLs.

use std::time::Duration;

use busbar_core::error::ConnectError;
pub use busbar_tls::TlsSettings;
use busbar_transport_kit::endpoint::{Endpoint, Scheme, Server};
use busbar_transport_kit::servers::{Retry, ServerOrder};

/// Where and how to connect, from a URL such as
/// `mqtt://user:pass@127.0.0.1:1883?keep_alive=30&session_expiry=60` or
/// `mqtts://broker:8883?ca=/etc/ca.pem&cert=/etc/me.pem&key=/etc/me.key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The brokers (`mqtt://h1,h2:1884`; port 1883 by default): tried in turn at connect,
    /// and the next one taken when the one in use is lost. MQTT brokers share no state, so
    /// a persistent session resumes only on a broker that kept it.
    pub servers: Vec<Server>,
    /// The order the servers are tried in (`?server_order=listed`, the default, or
    /// `random`).
    pub server_order: ServerOrder,
    /// How a lost connection tries again (`?reconnect_interval=`,
    /// `?max_reconnect_attempts=`; by default with backoff, without end).
    pub retry: Retry,
    /// User name, if any.
    pub username: Option<String>,
    /// Password, if any.
    pub password: Option<String>,
    /// Keep-alive interval (default 30 s).
    pub keep_alive: Duration,
    /// Session expiry after a disconnect; `None` starts a clean session every time.
    pub session_expiry: Option<Duration>,
    /// TLS settings for `mqtts://` and `wss://`; `None` for plain TCP or WebSocket.
    pub tls: Option<TlsSettings>,
    /// The WebSocket path for `ws://` and `wss://` (default `/mqtt`); `None` for TCP.
    pub websocket_path: Option<String>,
    /// How publishes wait when the broker cannot take them (connection down or slow):
    /// `Block` (the default) makes `publish` wait; the drop policies never wait and count
    /// what they discard (`?publish_overflow=drop-oldest&publish_queue=N`).
    pub publish_queue: busbar_core::QueueConfig,
    /// Protocol version (`?version=5`, the default, or `?version=3.1.1`).
    pub version: crate::protocol::Version,
    /// The largest packet this client sends (`?max_packet=BYTES`). Over MQTT 5 the broker's
    /// own maximum, from its CONNACK, applies as well; MQTT 3.1.1 has no way to learn it, so
    /// set this to the broker's limit (Mosquitto: `message_size_limit`) to have oversized
    /// publishes refused with a typed error instead of dropped by the broker.
    pub max_packet: Option<usize>,
    /// Most levels a topic may have (`?max_topic_levels=N`, default 128, EMQX's limit;
    /// Mosquitto's is 200). A broker drops a client that publishes deeper, so deeper topics
    /// are refused before sending.
    pub max_topic_levels: usize,
    /// How long connecting may take (`?connect_timeout=10s`, the default), each attempt.
    pub connect_timeout: Duration,
    /// The URL with the password hidden, for messages.
    pub shown: String,
}

/// The deepest topic published unless the URL says otherwise: the lowest limit among the
/// common brokers (EMQX 128, Mosquitto 200).
pub const DEFAULT_TOPIC_LEVELS: usize = 128;

/// The schemes, their default ports, and which are secure.
const SCHEMES: &[Scheme] = &[
    Scheme { name: "mqtt", default_port: 1883, secure: false },
    Scheme { name: "mqtts", default_port: 8883, secure: true },
    Scheme { name: "ws", default_port: 80, secure: false },
    Scheme { name: "wss", default_port: 443, secure: true },
];

impl Settings {
    /// True when incoming QoS 1 and 2 messages are acknowledged only once handed over (or
    /// when their receipt says so): in a persistent session, where the broker gives what
    /// was not acknowledged to the session's next connection. A clean session forgets it
    /// anyway, so there the client library acknowledges as it reads.
    pub fn acknowledges_after_hand_over(&self) -> bool {
        self.session_expiry.is_some()
    }

    /// Parses an `mqtt://`, `mqtts://`, `ws://` or `wss://` URL.
    pub fn parse(url: &str) -> Result<Settings, ConnectError> {
        let mut e = Endpoint::parse(url, SCHEMES)?;
        let websocket = e.scheme.name.starts_with("ws");
        if !websocket && !e.path.is_empty() {
            return Err(e.invalid(format!(
                "a path ({}) only means something for ws:// and wss://",
                e.path
            )));
        }
        // WebSocket brokers usually serve MQTT on /mqtt.
        let websocket_path = websocket
            .then(|| if e.path.is_empty() { "/mqtt".to_owned() } else { format!("/{}", e.path) });
        let p = &mut e.params;
        let version = match p.choice("version", &["5", "5.0", "3.1.1", "4"])? {
            Some("3.1.1" | "4") => crate::protocol::Version::V311,
            _ => crate::protocol::Version::V5,
        };
        let settings = Settings {
            servers: e.servers.clone(),
            server_order: ServerOrder::from_params(p)?,
            retry: Retry::from_params(p)?,
            username: e.login.user.clone(),
            password: e.login.password.clone(),
            keep_alive: p.duration("keep_alive", Duration::ZERO)?.map_or(
                Duration::from_secs(30),
                // rumqttc refuses keep-alives under 5 s.
                |d| d.max(Duration::from_secs(5)),
            ),
            session_expiry: p.duration("session_expiry", Duration::ZERO)?,
            publish_queue: p.queue(
                "publish_queue",
                "publish_overflow",
                busbar_core::QueueConfig::new(1024, busbar_core::Overflow::Block),
            )?,
            version,
            max_packet: p.count("max_packet")?,
            max_topic_levels: p.count("max_topic_levels")?.unwrap_or(DEFAULT_TOPIC_LEVELS),
            connect_timeout: p.connect_timeout()?,
            tls: TlsSettings::from_params(p, e.scheme.secure)?,
            websocket_path,
            shown: e.shown.clone(),
        };
        e.params.finish()?;
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use busbar_core::error::ConnectErrorKind;

    #[test]
    fn parses_hosts_credentials_and_options() {
        let s = Settings::parse("mqtt://u:p@127.0.0.1:1884?keep_alive=10&session_expiry=60")
            .expect("valid");
        assert_eq!(s.servers, [Server { host: "127.0.0.1".into(), port: 1884 }]);
        assert_eq!((s.username.as_deref(), s.password.as_deref()), (Some("u"), Some("p")));
        assert_eq!(s.keep_alive, Duration::from_secs(10));
        assert_eq!(s.session_expiry, Some(Duration::from_secs(60)));
        assert!(!s.shown.contains(":p@"), "{}", s.shown);
        assert_eq!(Settings::parse("mqtt://h").expect("default port").servers[0].port, 1883);
        let list = Settings::parse("mqtt://a,b:1884?server_order=random").expect("a list");
        assert_eq!(list.servers.len(), 2);
        assert_eq!(list.server_order, ServerOrder::Random);
        // Percent-encoded parts are decoded.
        let e = Settings::parse("mqtts://a%40b:p%3Ass%2F@h?ca=%2Ftmp%2Fca.pem").expect("encoded");
        assert_eq!((e.username.as_deref(), e.password.as_deref()), (Some("a@b"), Some("p:ss/")));
        assert_eq!(e.tls.and_then(|t| t.ca), Some(std::path::PathBuf::from("/tmp/ca.pem")));
        assert!(
            matches!(Settings::parse("mqtt://u:%zz@h"), Err(e) if e.kind() == ConnectErrorKind::InvalidUrl)
        );
        let q = Settings::parse("mqtt://h?publish_queue=10&publish_overflow=drop-oldest")
            .expect("queue");
        assert_eq!(
            q.publish_queue,
            busbar_core::QueueConfig::new(10, busbar_core::Overflow::DropOldest)
        );
        assert!(matches!(
            Settings::parse("mqtt://h?publish_overflow=x"),
            Err(e) if e.kind() == ConnectErrorKind::InvalidUrl
        ));
        let v = Settings::parse("mqtt://h?version=3.1.1").expect("3.1.1");
        assert_eq!(v.version, crate::protocol::Version::V311);
        assert!(
            matches!(Settings::parse("mqtt://h?version=6"), Err(e) if e.kind() == ConnectErrorKind::InvalidUrl)
        );
        assert_eq!(
            Settings::parse("mqtt://h?max_packet=1024").expect("max").max_packet,
            Some(1024)
        );
        assert!(
            matches!(Settings::parse("mqtt://h?max_packet=0"), Err(e) if e.kind() == ConnectErrorKind::InvalidUrl)
        );
        let tls = Settings::parse("mqtts://h?ca=/c.pem&cert=/m.pem&key=/m.key").expect("tls");
        assert_eq!(tls.servers[0].port, 8883);
        let t = tls.tls.expect("tls settings");
        assert_eq!(t.ca.as_deref(), Some(std::path::Path::new("/c.pem")));
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        assert!(
            matches!(Settings::parse("mqtt://h:x"), Err(e) if e.kind() == ConnectErrorKind::InvalidUrl)
        );
        assert!(
            matches!(Settings::parse("mqtt://h?colour=red"), Err(e) if e.kind() == ConnectErrorKind::InvalidUrl)
        );
        assert!(
            matches!(Settings::parse("gopher://h"), Err(e) if e.kind() == ConnectErrorKind::InvalidUrl)
        );
        let ws = Settings::parse("ws://h:9001").expect("ws");
        assert_eq!((ws.servers[0].port, ws.websocket_path.as_deref()), (9001, Some("/mqtt")));
        let wss = Settings::parse("wss://h/custom").expect("wss");
        assert_eq!(
            (wss.servers[0].port, wss.websocket_path.as_deref(), wss.tls.is_some()),
            (443, Some("/custom"), true)
        );
        assert!(
            matches!(Settings::parse("mqtt://h/x"), Err(e) if e.kind() == ConnectErrorKind::InvalidUrl)
        );
        assert!(
            matches!(Settings::parse("mqtt://h?ca=/x"), Err(e) if e.kind() == ConnectErrorKind::InvalidUrl)
        );
        assert!(
            matches!(Settings::parse("mqtts://h?cert=/x"), Err(e) if e.kind() == ConnectErrorKind::InvalidUrl)
        );
        assert!(
            matches!(Settings::parse("mqtt://"), Err(e) if e.kind() == ConnectErrorKind::InvalidUrl)
        );
    }
}
