//! `mqtt://` and `mqtts://` URLs.

use std::time::Duration;

use busbar_core::connection::redact_url;
use busbar_core::url::percent_decode;
use busbar_core::{Error, Result};
pub use busbar_tls::TlsSettings;

/// Where and how to connect, from a URL such as
/// `mqtt://user:pass@127.0.0.1:1883?keep_alive=30&session_expiry=60` or
/// `mqtts://broker:8883?ca=/etc/ca.pem&cert=/etc/me.pem&key=/etc/me.key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Broker host.
    pub host: String,
    /// Broker port (default 1883).
    pub port: u16,
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
    /// The URL with the password hidden, for messages.
    pub shown: String,
}

impl Settings {
    /// Parses an `mqtt://` or `mqtts://` URL.
    pub fn parse(url: &str) -> Result<Settings> {
        let shown = redact_url(url);
        let invalid = |reason: String| Error::InvalidUrl { url: shown.clone(), reason };
        let (scheme, rest) =
            url.split_once("://").ok_or_else(|| invalid("expected mqtt://HOST[:PORT]".into()))?;
        let scheme = scheme.to_ascii_lowercase();
        let (tls, websocket) = match scheme.as_str() {
            "mqtt" => (None, false),
            "mqtts" => (Some(TlsSettings::default()), false),
            "ws" => (None, true),
            "wss" => (Some(TlsSettings::default()), true),
            _ => {
                return Err(Error::Unsupported {
                    transport: "mqtt",
                    feature: "this URL scheme (mqtt://, mqtts://, ws://, wss://)",
                });
            }
        };
        let (before_query, query) = match rest.split_once('?') {
            Some((a, q)) => (a, q),
            None => (rest, ""),
        };
        let (authority, path) = match before_query.find('/') {
            Some(i) => before_query.split_at(i),
            None => (before_query, ""),
        };
        if !websocket && !path.is_empty() && path != "/" {
            return Err(invalid(format!(
                "a path ({path}) only means something for ws:// and wss://"
            )));
        }
        // WebSocket brokers usually serve MQTT on /mqtt.
        let websocket_path =
            websocket.then(|| if path.is_empty() { "/mqtt".to_owned() } else { path.to_owned() });
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        // URL parts are percent-encoded: `p%40ss` is the password `p@ss`.
        let decode = |what: &str, s: &str| {
            percent_decode(s).map_err(|e| invalid(format!("the {what}: {e}")))
        };
        let (username, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((user, pass)) => {
                    (Some(decode("user name", user)?), Some(decode("password", pass)?))
                }
                None => (Some(decode("user name", u)?), None),
            },
            None => (None, None),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => {
                let port = p.parse::<u16>().map_err(|_| invalid(format!("bad port {p:?}")))?;
                (h, port)
            }
            None => (
                hostport,
                match (websocket, tls.is_some()) {
                    (false, false) => 1883,
                    (false, true) => 8883,
                    (true, false) => 80,
                    (true, true) => 443,
                },
            ),
        };
        if host.is_empty() {
            return Err(invalid("no host".into()));
        }
        let mut settings = Settings {
            host: host.trim_start_matches('[').trim_end_matches(']').to_owned(),
            port,
            username,
            password,
            keep_alive: Duration::from_secs(30),
            session_expiry: None,
            publish_queue: busbar_core::QueueConfig::new(1024, busbar_core::Overflow::Block),
            version: crate::protocol::Version::V5,
            max_packet: None,
            websocket_path,
            tls,
            shown: shown.clone(),
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| invalid(format!("parameter {pair:?} has no value")))?;
            let decoded = decode(key, value)?;
            let value = decoded.as_str();
            let secs = || {
                value
                    .parse::<u64>()
                    .map(Duration::from_secs)
                    .map_err(|_| invalid(format!("{key} must be whole seconds, not {value:?}")))
            };
            match key {
                "keep_alive" => settings.keep_alive = secs()?.max(Duration::from_secs(5)),
                "session_expiry" => settings.session_expiry = Some(secs()?),
                "publish_queue" => {
                    let n = value.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                        invalid(format!("publish_queue must be a positive count, not {value:?}"))
                    })?;
                    settings.publish_queue =
                        busbar_core::QueueConfig::new(n, settings.publish_queue.overflow);
                }
                "publish_overflow" => {
                    let overflow = busbar_core::Overflow::from_name(value).ok_or_else(|| {
                        invalid(format!(
                            "publish_overflow must be block, drop-oldest or drop-newest, not {value:?}"
                        ))
                    })?;
                    settings.publish_queue =
                        busbar_core::QueueConfig::new(settings.publish_queue.capacity, overflow);
                }
                "max_packet" => {
                    let n = value.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                        invalid(format!("max_packet must be a positive byte count, not {value:?}"))
                    })?;
                    settings.max_packet = Some(n);
                }
                "version" => {
                    settings.version = match value {
                        "5" | "5.0" => crate::protocol::Version::V5,
                        "3.1.1" | "4" => crate::protocol::Version::V311,
                        _ => {
                            return Err(invalid(format!(
                                "version must be 5 or 3.1.1, not {value:?}"
                            )));
                        }
                    }
                }
                "ca" | "cert" | "key" => {
                    let tls = settings.tls.as_mut().ok_or_else(|| {
                        invalid(format!("{key} needs a TLS connection: use mqtts:// or wss://"))
                    })?;
                    tls.set(key, value);
                }
                _ => {
                    return Err(invalid(format!(
                        "unknown parameter {key:?} (known: version, keep_alive, session_expiry, publish_queue, publish_overflow, max_packet, ca, cert, key)"
                    )));
                }
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
    fn parses_hosts_credentials_and_options() {
        let s = Settings::parse("mqtt://u:p@127.0.0.1:1884?keep_alive=10&session_expiry=60")
            .expect("valid");
        assert_eq!((s.host.as_str(), s.port), ("127.0.0.1", 1884));
        assert_eq!((s.username.as_deref(), s.password.as_deref()), (Some("u"), Some("p")));
        assert_eq!(s.keep_alive, Duration::from_secs(10));
        assert_eq!(s.session_expiry, Some(Duration::from_secs(60)));
        assert!(!s.shown.contains(":p@"), "{}", s.shown);
        assert_eq!(Settings::parse("mqtt://h").expect("default port").port, 1883);
        // Percent-encoded parts are decoded.
        let e = Settings::parse("mqtts://a%40b:p%3Ass%2F@h?ca=%2Ftmp%2Fca.pem").expect("encoded");
        assert_eq!((e.username.as_deref(), e.password.as_deref()), (Some("a@b"), Some("p:ss/")));
        assert_eq!(e.tls.and_then(|t| t.ca), Some(std::path::PathBuf::from("/tmp/ca.pem")));
        assert!(matches!(Settings::parse("mqtt://u:%zz@h"), Err(Error::InvalidUrl { .. })));
        let q = Settings::parse("mqtt://h?publish_queue=10&publish_overflow=drop-oldest")
            .expect("queue");
        assert_eq!(
            q.publish_queue,
            busbar_core::QueueConfig::new(10, busbar_core::Overflow::DropOldest)
        );
        assert!(matches!(
            Settings::parse("mqtt://h?publish_overflow=x"),
            Err(Error::InvalidUrl { .. })
        ));
        let v = Settings::parse("mqtt://h?version=3.1.1").expect("3.1.1");
        assert_eq!(v.version, crate::protocol::Version::V311);
        assert!(matches!(Settings::parse("mqtt://h?version=6"), Err(Error::InvalidUrl { .. })));
        assert_eq!(
            Settings::parse("mqtt://h?max_packet=1024").expect("max").max_packet,
            Some(1024)
        );
        assert!(matches!(Settings::parse("mqtt://h?max_packet=0"), Err(Error::InvalidUrl { .. })));
        let tls = Settings::parse("mqtts://h?ca=/c.pem&cert=/m.pem&key=/m.key").expect("tls");
        assert_eq!(tls.port, 8883);
        let t = tls.tls.expect("tls settings");
        assert_eq!(t.ca.as_deref(), Some(std::path::Path::new("/c.pem")));
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        assert!(matches!(Settings::parse("mqtt://h:x"), Err(Error::InvalidUrl { .. })));
        assert!(matches!(Settings::parse("mqtt://h?colour=red"), Err(Error::InvalidUrl { .. })));
        assert!(matches!(Settings::parse("gopher://h"), Err(Error::Unsupported { .. })));
        let ws = Settings::parse("ws://h:9001").expect("ws");
        assert_eq!((ws.port, ws.websocket_path.as_deref()), (9001, Some("/mqtt")));
        let wss = Settings::parse("wss://h/custom").expect("wss");
        assert_eq!(
            (wss.port, wss.websocket_path.as_deref(), wss.tls.is_some()),
            (443, Some("/custom"), true)
        );
        assert!(matches!(Settings::parse("mqtt://h/x"), Err(Error::InvalidUrl { .. })));
        assert!(matches!(Settings::parse("mqtt://h?ca=/x"), Err(Error::InvalidUrl { .. })));
        assert!(matches!(Settings::parse("mqtts://h?cert=/x"), Err(Error::InvalidUrl { .. })));
        assert!(matches!(Settings::parse("mqtt://"), Err(Error::InvalidUrl { .. })));
    }
}
