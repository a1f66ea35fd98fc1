//! `kafka://` and `kafka+tls://` URLs, and the librdkafka configuration they make.

use std::time::Duration;

use busbar_core::error::ConnectError;
pub use busbar_tls::TlsSettings;
use busbar_transport_kit::endpoint::{Endpoint, Scheme, Server};
use rdkafka::ClientConfig;

/// The schemes, their default port, and which is secure.
const SCHEMES: &[Scheme] = &[
    Scheme { name: "kafka", default_port: 9092, secure: false },
    Scheme { name: "kafka+tls", default_port: 9093, secure: true },
];

/// How the client proves who it is.
#[derive(Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Credentials {
    /// Anonymous.
    #[default]
    None,
    /// `kafka://user:password@host`: SASL with a user name and password (`?sasl=` says
    /// which mechanism: `plain`, the default, `scram-sha-256` or `scram-sha-512`).
    Password {
        /// The SASL mechanism, as librdkafka names it (`PLAIN`, `SCRAM-SHA-256`, ...).
        mechanism: &'static str,
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret.
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::Password { mechanism, user, .. } => {
                write!(f, "Password({mechanism}, {user}, ***)")
            }
        }
    }
}

/// What a publish to a topic the broker does not have does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MissingTopics {
    /// Create it (with [`Settings::partitions`] partitions), then publish: the default.
    Create,
    /// Refuse the publish (or subscription) with an error of kind `Refused`.
    Refuse,
}

/// Where and how to connect, from a URL such as
/// `kafka://127.0.0.1:9092,127.0.0.1:9094?partitions=4` or
/// `kafka+tls://user:pass@broker:9093?ca=/etc/ca.pem&sasl=scram-sha-256`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The bootstrap servers, in the order given: the client learns the rest of the cluster
    /// from whichever answers first.
    pub servers: Vec<Server>,
    /// Credentials from the URL.
    pub credentials: Credentials,
    /// TLS settings for `kafka+tls://`; `None` for plain TCP.
    pub tls: Option<TlsSettings>,
    /// Topics the broker does not have: created or refused (`?create_topics=true|false`).
    pub missing_topics: MissingTopics,
    /// Partitions of the topics this client creates (`?partitions=N`, default 1, as a
    /// Kafka broker's own `num.partitions`). A queue group shares a topic only as far as its
    /// partitions go.
    pub partitions: i32,
    /// How a queue group names its Kafka consumer group (`?group_names=`): `scoped`
    /// (the default), `<group>@<filter>`, so that busbar's contract holds (members of one
    /// group on one filter share its messages) and groups of the same name on other
    /// filters never rebalance each other; or `exact`, the group's name as it is, to share
    /// a group with other Kafka clients.
    pub exact_group_names: bool,
    /// Replicas of the topics this client creates (`?replication=N`, default 1).
    pub replication: i32,
    /// How long the producer waits to fill a batch (`?linger=`, default 0: send at once;
    /// batches still form while earlier ones are in flight).
    pub linger: Duration,
    /// How long the broker may hold a fetch that found nothing new (`?fetch_wait=`,
    /// default 10 ms, at least 1 ms). Tansu holds an empty fetch this long even when a
    /// record arrives meanwhile, so it bounds a reader's latency there (an RPC waits for
    /// two such fetches: p50 7 ms at 10 ms, 4 ms at 1 ms, 53 ms at 100 ms, measured on
    /// Tansu 0.6); Apache Kafka answers a waiting fetch as soon as a record arrives, so
    /// `?fetch_wait=500ms` (librdkafka's default) costs nothing there and spares requests.
    pub fetch_wait: Duration,
    /// How often subscriptions with wildcards look for new matching topics
    /// (`?metadata_interval=`, default 1 s).
    pub metadata_interval: Duration,
    /// How long the first connection may take (`?connect_timeout=`, default 10 s).
    pub connect_timeout: Duration,
    /// The URL with the password hidden, for messages.
    pub shown: String,
}

impl Settings {
    /// Parses a `kafka://` or `kafka+tls://` URL.
    pub fn parse(url: &str) -> Result<Settings, ConnectError> {
        let mut e = Endpoint::parse(url, SCHEMES)?;
        if !e.path.is_empty() {
            return Err(e.invalid(format!("a Kafka URL has no path, but {:?} was given", e.path)));
        }
        let p = &mut e.params;
        let mechanism = p.choice("sasl", &["plain", "scram-sha-256", "scram-sha-512"])?;
        let credentials = match (&e.login.user, &e.login.password) {
            (None, None) => {
                if mechanism.is_some() {
                    return Err(p.refuse("sasl= needs a user name and password before '@'"));
                }
                Credentials::None
            }
            (Some(user), Some(password)) if !user.is_empty() => Credentials::Password {
                mechanism: match mechanism {
                    None | Some("plain") => "PLAIN",
                    Some("scram-sha-256") => "SCRAM-SHA-256",
                    _ => "SCRAM-SHA-512",
                },
                user: user.clone(),
                password: password.clone(),
            },
            (_, Some(_)) => return Err(p.refuse("a password needs a user name")),
            (Some(_), None) => {
                return Err(p.refuse("a Kafka user name needs a password (user:password@host)"));
            }
        };
        let missing_topics = match p.choice("create_topics", &["true", "false"])? {
            Some("false") => MissingTopics::Refuse,
            _ => MissingTopics::Create,
        };
        let exact_group_names = p.choice("group_names", &["scoped", "exact"])? == Some("exact");
        let partitions = p.number("partitions", 1, 100_000)?.unwrap_or(1);
        let replication = p.number("replication", 1, 1_000)?.unwrap_or(1);
        let linger = p.duration("linger", Duration::ZERO)?.unwrap_or(Duration::ZERO);
        // At least 1 ms: librdkafka with `fetch.wait.max.ms=0` was seen to never deliver.
        let fetch_wait = p
            .duration("fetch_wait", Duration::from_millis(1))?
            .unwrap_or(Duration::from_millis(10));
        let metadata_interval = p
            .duration("metadata_interval", Duration::from_millis(10))?
            .unwrap_or(Duration::from_secs(1));
        let connect_timeout = p.connect_timeout()?;
        let tls = TlsSettings::from_params(p, e.scheme.secure)?;
        let settings = Settings {
            servers: e.servers.clone(),
            credentials,
            tls,
            missing_topics,
            partitions,
            exact_group_names,
            replication,
            linger,
            fetch_wait,
            metadata_interval,
            connect_timeout,
            shown: e.shown.clone(),
        };
        e.params.finish()?;
        Ok(settings)
    }

    /// librdkafka's `bootstrap.servers`.
    pub(crate) fn bootstrap(&self) -> String {
        let servers: Vec<String> = self.servers.iter().map(Server::to_string).collect();
        servers.join(",")
    }

    /// The configuration every client of this connection (producer, consumers, admin)
    /// shares: servers, security, and librdkafka's logging routed to `tracing`.
    pub(crate) fn client_config(&self, client_id: &str, oauth: bool) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.bootstrap())
            .set("client.id", client_id)
            // librdkafka retries connections itself, 100 ms doubling to 5 s: the same
            // backoff as every other busbar transport.
            .set("reconnect.backoff.ms", "100")
            .set("reconnect.backoff.max.ms", "5000")
            .set("log.connection.close", "false");
        let sasl = oauth || self.credentials != Credentials::None;
        let protocol = match (self.tls.is_some(), sasl) {
            (false, false) => "plaintext",
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        };
        c.set("security.protocol", protocol);
        if let Some(tls) = &self.tls {
            if let Some(ca) = &tls.ca {
                c.set("ssl.ca.location", ca.to_string_lossy());
            }
            if let Some(cert) = &tls.cert {
                c.set("ssl.certificate.location", cert.to_string_lossy());
            }
            if let Some(key) = &tls.key {
                c.set("ssl.key.location", key.to_string_lossy());
            }
        }
        if oauth {
            c.set("sasl.mechanism", "OAUTHBEARER");
        } else if let Credentials::Password { mechanism, user, password } = &self.credentials {
            c.set("sasl.mechanism", *mechanism)
                .set("sasl.username", user)
                .set("sasl.password", password);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use busbar_core::error::ConnectErrorKind;

    use super::*;

    #[test]
    fn parses_servers_credentials_and_options() {
        let s = Settings::parse(
            "kafka://u:p%40ss@127.0.0.1:9092,127.0.0.1:9094?partitions=4&create_topics=false&sasl=scram-sha-256",
        )
        .expect("valid");
        assert_eq!(s.bootstrap(), "127.0.0.1:9092,127.0.0.1:9094");
        assert_eq!(
            s.credentials,
            Credentials::Password {
                mechanism: "SCRAM-SHA-256",
                user: "u".into(),
                password: "p@ss".into()
            }
        );
        assert_eq!((s.partitions, s.missing_topics), (4, MissingTopics::Refuse));
        assert!(!s.shown.contains("p%40ss") && !format!("{s:?}").contains("p@ss"));
        let d = Settings::parse("kafka://localhost").expect("defaults");
        assert_eq!(d.bootstrap(), "localhost:9092");
        assert_eq!((d.partitions, d.replication, d.missing_topics), (1, 1, MissingTopics::Create));
        assert_eq!(d.connect_timeout, Duration::from_secs(10));
        assert!(!d.exact_group_names);
        assert!(Settings::parse("kafka://h?group_names=exact").expect("exact").exact_group_names);
        let tls = Settings::parse("kafka+tls://h?ca=/c.pem").expect("tls");
        assert_eq!(tls.bootstrap(), "h:9093");
        let conf = tls.client_config("me", false);
        assert_eq!(conf.get("security.protocol"), Some("ssl"));
        assert_eq!(conf.get("ssl.ca.location"), Some("/c.pem"));
        let v6 = Settings::parse("kafka://[::1]:9000").expect("v6");
        assert_eq!(v6.bootstrap(), "[::1]:9000");
        let plain = Settings::parse("kafka://u:p@h").expect("plain");
        let conf = plain.client_config("me", false);
        assert_eq!(conf.get("security.protocol"), Some("sasl_plaintext"));
        assert_eq!(conf.get("sasl.mechanism"), Some("PLAIN"));
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        let bad = |url: &str| matches!(Settings::parse(url), Err(e) if e.kind() == ConnectErrorKind::InvalidUrl);
        assert!(bad("kafka://h:x"));
        assert!(bad("kafka://h?colour=red"));
        assert!(bad("kafka://h?partitions=0"));
        assert!(bad("kafka://h?create_topics=maybe"));
        assert!(bad("kafka://h?group_names=loose"));
        assert!(bad("kafka://h?fetch_wait=0"));
        assert!(bad("kafka://h/path"));
        assert!(bad("kafka://h?ca=/x"));
        assert!(bad("kafka://h?sasl=plain"));
        assert!(bad("kafka://u@h"));
        assert!(bad("kafka://u:p@h?sasl=gssapi"));
        assert!(bad("kafka://"));
        let err = Settings::parse("kafka://u:hunter2@h:x").expect_err("bad port");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
