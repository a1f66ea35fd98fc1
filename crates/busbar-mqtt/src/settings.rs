//! `mqtt://` URLs.

use std::time::Duration;

use busbar_core::connection::redact_url;
use busbar_core::{Error, Result};

/// Where and how to connect, from a URL such as
/// `mqtt://user:pass@127.0.0.1:1883?keep_alive=30&session_expiry=60`.
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
    /// The URL with the password hidden, for messages.
    pub shown: String,
}

impl Settings {
    /// Parses an `mqtt://` URL.
    pub fn parse(url: &str) -> Result<Settings> {
        let shown = redact_url(url);
        let invalid = |reason: String| Error::InvalidUrl { url: shown.clone(), reason };
        let (scheme, rest) =
            url.split_once("://").ok_or_else(|| invalid("expected mqtt://HOST[:PORT]".into()))?;
        if !scheme.eq_ignore_ascii_case("mqtt") {
            return Err(Error::Unsupported {
                transport: "mqtt",
                feature: "this URL scheme (only mqtt:// so far)",
            });
        }
        let (authority, query) = match rest.split_once('?') {
            Some((a, q)) => (a, q),
            None => (rest, ""),
        };
        let authority = authority.strip_suffix('/').unwrap_or(authority);
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((user, pass)) => (Some(user.to_owned()), Some(pass.to_owned())),
                None => (Some(u.to_owned()), None),
            },
            None => (None, None),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => {
                let port = p.parse::<u16>().map_err(|_| invalid(format!("bad port {p:?}")))?;
                (h, port)
            }
            None => (hostport, 1883),
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
            shown: shown.clone(),
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| invalid(format!("parameter {pair:?} has no value")))?;
            let secs = || {
                value
                    .parse::<u64>()
                    .map(Duration::from_secs)
                    .map_err(|_| invalid(format!("{key} must be whole seconds, not {value:?}")))
            };
            match key {
                "keep_alive" => settings.keep_alive = secs()?.max(Duration::from_secs(5)),
                "session_expiry" => settings.session_expiry = Some(secs()?),
                _ => {
                    return Err(invalid(format!(
                        "unknown parameter {key:?} (known: keep_alive, session_expiry)"
                    )));
                }
            }
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
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        assert!(matches!(Settings::parse("mqtt://h:x"), Err(Error::InvalidUrl { .. })));
        assert!(matches!(Settings::parse("mqtt://h?colour=red"), Err(Error::InvalidUrl { .. })));
        assert!(matches!(Settings::parse("mqtts://h"), Err(Error::Unsupported { .. })));
        assert!(matches!(Settings::parse("mqtt://"), Err(Error::InvalidUrl { .. })));
    }
}
