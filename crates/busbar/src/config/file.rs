//! The configuration file as written: busbar's own shape and the CELINE `brokers.yaml` shape,
//! read by one set of types so that every error has a position. Unknown keys are refused.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use super::expand::{self, Expanded};

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct File {
    /// The broker used when none is named. Optional when there is only one.
    #[serde(default)]
    pub default: Option<String>,
    /// CELINE's spelling of `default`.
    #[serde(default)]
    pub default_broker: Option<String>,
    /// The identity provider that `token: {oidc: ...}` and CELINE's `auth_with_token` use.
    #[serde(default, deserialize_with = "oidc_in_its_scope")]
    pub oidc: Option<OidcFile>,
    /// The brokers, by name.
    #[serde(deserialize_with = "each_broker_in_its_scope")]
    pub brokers: BTreeMap<String, BrokerFile>,
    /// Bridges between the brokers, started by `busbar bridge --config FILE`.
    #[serde(default)]
    pub bridges: Vec<BridgeFile>,
}

/// The scope of the `oidc` section's unset variables (see [`expand::scoped`]).
pub(crate) const OIDC_SCOPE: &str = "oidc";

/// The scope of broker `name`'s unset variables (see [`expand::scoped`]).
pub(crate) fn broker_scope(name: &str) -> String {
    format!("broker:{name}")
}

/// The `oidc` section, whose unset variables matter only to brokers that take tokens from it.
fn oidc_in_its_scope<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OidcFile>, D::Error> {
    expand::scoped(OIDC_SCOPE, || Option::<OidcFile>::deserialize(d))
}

/// The brokers, each read in its own scope: a broker's unset variables matter only when it
/// is used.
fn each_broker_in_its_scope<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, BrokerFile>, D::Error> {
    struct Entries;

    impl<'de> Visitor<'de> for Entries {
        type Value = BTreeMap<String, BrokerFile>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of broker names to brokers")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut brokers = BTreeMap::new();
            while let Some(name) = map.next_key::<String>()? {
                let broker = expand::scoped(&broker_scope(&name), || map.next_value())?;
                if brokers.insert(name.clone(), broker).is_some() {
                    return Err(de::Error::custom(format!("two brokers are named {name:?}")));
                }
            }
            Ok(brokers)
        }
    }

    d.deserialize_map(Entries)
}

/// One bridge between two brokers of the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct BridgeFile {
    /// Its name (in counters, logs, and the loop header).
    pub name: String,
    /// The broker messages (or calls) come from.
    pub from: String,
    /// The broker they go to.
    pub to: String,
    /// Topics or patterns to forward, each a bridge of its own.
    #[serde(default)]
    pub topics: Vec<String>,
    /// How forwarded topics are renamed (default: kept).
    #[serde(default)]
    pub rewrite: Option<RewriteFile>,
    /// Also forward the same topics back, never returning a message where it came from
    /// (the rewrite must be a prefix, undone on the way back).
    #[serde(default)]
    pub two_way: bool,
    /// What a full queue does: `block` (default: the source slows down), `drop-oldest`,
    /// `drop-newest`.
    #[serde(default)]
    pub overflow: Option<String>,
    /// Messages queued between the brokers (default 1024).
    #[serde(default)]
    pub capacity: Option<usize>,
    /// RPC services of `to` served on `from`.
    #[serde(default)]
    pub rpc: Vec<RpcBridgeFile>,
    /// Read `from` through durable subscriptions of this name: the source broker keeps what
    /// arrives while the bridge is stopped, and each message is acknowledged only once `to`
    /// confirmed it (with several topics or two ways, each gets the name and a tag of its
    /// own). Needs `overflow: block` and a source that keeps durable subscriptions.
    #[serde(default)]
    pub durable: Option<String>,
}

/// A topic rewrite: exactly one of the keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct RewriteFile {
    /// Put `prefix/` before topics.
    #[serde(default)]
    pub add_prefix: Option<String>,
    /// Take `prefix/` off topics.
    #[serde(default)]
    pub strip_prefix: Option<String>,
    /// `{1}`, `{2}`, ...: the levels the filter's wildcards captured.
    #[serde(default)]
    pub template: Option<String>,
    /// `true`: every `.` becomes a level break (commlib names from a Redis channel to MQTT
    /// or AMQP levels).
    #[serde(default)]
    pub dots_to_levels: Option<bool>,
    /// `true`: every level break becomes a `.` (the other way).
    #[serde(default)]
    pub levels_to_dots: Option<bool>,
}

/// One RPC service across a bridge.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct RpcBridgeFile {
    /// The topic callers use on `from`.
    pub topic: String,
    /// The service's topic on `to` (default: the same).
    #[serde(default)]
    pub target: Option<String>,
    /// Seconds the service on `to` may take (default 5).
    #[serde(default)]
    pub timeout: Option<f64>,
}

/// An OpenID Connect client-credentials client.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct OidcFile {
    /// The issuer URL; its discovery document names the token endpoint.
    pub issuer: Expanded<String>,
    /// The client id.
    pub client_id: Expanded<String>,
    /// The client secret (use `${VAR}`).
    pub client_secret: Expanded<String>,
    /// Space-separated scopes; none sent when absent.
    #[serde(default)]
    pub scope: Option<Expanded<String>>,
    /// Seconds before expiry that a token counts as used up (default 30).
    #[serde(default)]
    #[cfg_attr(test, schemars(with = "Option<Expanded<f64>>"))]
    pub margin: Option<Expanded<Duration>>,
    /// Seconds each request to the issuer may take (default 10).
    #[serde(default)]
    #[cfg_attr(test, schemars(with = "Option<Expanded<f64>>"))]
    pub timeout: Option<Expanded<Duration>>,
    /// PEM file of the authorities to trust for an https issuer (default: the system's).
    #[serde(default)]
    pub ca: Option<Expanded<PathBuf>>,
}

/// The transports a broker entry can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) enum TransportName {
    /// MQTT over TCP (TLS with `tls`).
    Mqtt,
    /// MQTT over WebSocket (secure with `tls`).
    Ws,
    /// Redis.
    Redis,
    /// NATS.
    Nats,
    /// AMQP 0.9.1 (RabbitMQ).
    Amqp,
    /// Kafka (`servers` lists several bootstrap servers).
    Kafka,
    /// The in-process bus; `host` names the bus.
    Mem,
}

/// One broker. Either `url`, or `transport` and `host` with the other connection fields, or
/// (CELINE) `config`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct BrokerFile {
    /// Whether the broker may be used (default true).
    #[serde(default)]
    pub enabled: Option<Expanded<bool>>,
    /// The broker's URL, as `busbar --url` takes it.
    #[serde(default)]
    pub url: Option<Expanded<String>>,
    /// The transport, when the URL is given as fields.
    #[serde(default)]
    pub transport: Option<TransportName>,
    /// Host name or address.
    #[serde(default)]
    pub host: Option<Expanded<String>>,
    /// Port (default: the transport's).
    #[serde(default)]
    pub port: Option<Expanded<u16>>,
    /// Several servers instead of `host` and `port`, as `host[:port]` each (`[::1]:1883` for
    /// IPv6): tried in turn at connect, the next taken when the one in use is lost. For
    /// Redis with `sentinel`, the Sentinels.
    #[serde(default)]
    pub servers: Option<Vec<Expanded<String>>>,
    /// The order `servers` are tried in (default `listed`).
    #[serde(default)]
    pub server_order: Option<ServerOrderName>,
    /// Redis: the master group the Sentinels in `servers` (or `host`) name the master of.
    #[serde(default)]
    pub sentinel: Option<Expanded<String>>,
    /// User name.
    #[serde(default)]
    pub username: Option<Expanded<String>>,
    /// Password (use `${VAR}`).
    #[serde(default)]
    pub password: Option<Expanded<String>>,
    /// AMQP virtual host.
    #[serde(default)]
    pub vhost: Option<Expanded<String>>,
    /// Redis database number.
    #[serde(default)]
    pub database: Option<Expanded<u32>>,
    /// WebSocket path (default `/mqtt`).
    #[serde(default)]
    pub path: Option<Expanded<String>>,
    /// TLS: present means on; files optional.
    #[serde(default)]
    pub tls: Option<TlsFile>,
    /// Client identifier (default: a unique one).
    #[serde(default)]
    pub client_id: Option<Expanded<String>>,
    /// MQTT keep-alive in seconds.
    #[serde(default)]
    pub keep_alive: Option<Expanded<u64>>,
    /// Prefix put before every topic of this connection (and taken off what arrives).
    #[serde(default)]
    pub topic_prefix: Option<Expanded<String>>,
    /// Log in with a token.
    #[serde(default)]
    pub token: Option<TokenFile>,
    /// CELINE: log in with a token from the identity provider (`oidc`, or the
    /// `CELINE_OIDC_*` environment variables).
    #[serde(default)]
    pub auth_with_token: Option<Expanded<bool>>,
    /// CELINE's `MqttBroker` settings.
    #[serde(default)]
    pub config: Option<CelineMqttFile>,
    /// CELINE's broker class, as its documentation's files name it
    /// (`celine.dt.core.broker.mqtt:MqttBroker`, `celine.sdk.broker.mqtt:MqttBroker`): taken
    /// for CELINE's MQTT broker, with `config`; any other class is refused.
    #[serde(default, rename = "class")]
    pub class_name: Option<Expanded<String>>,
    /// CELINE's earlier name for `auth_with_token`.
    #[serde(default)]
    pub jwt_auth: Option<Expanded<bool>>,
}

/// TLS files; the system's authorities are trusted when `ca` is absent.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct TlsFile {
    /// PEM file of the authorities to trust instead of the system's.
    #[serde(default)]
    pub ca: Option<Expanded<PathBuf>>,
    /// PEM file of the client certificate.
    #[serde(default)]
    pub cert: Option<Expanded<PathBuf>>,
    /// PEM file of the client certificate's key.
    #[serde(default)]
    pub key: Option<Expanded<PathBuf>>,
}

/// The order the servers of a list are tried in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) enum ServerOrderName {
    /// As listed: the first is preferred, the others stand by.
    Listed,
    /// Shuffled once per connection, to spread clients over a cluster.
    Random,
}

/// Where the token goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) enum PlacementName {
    /// The token is the user name (CELINE, SERMAS).
    Username,
    /// The token is the password.
    Password,
}

/// A token login: exactly one of `static` and `oidc`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct TokenFile {
    /// A fixed token (use `${VAR}`).
    #[serde(default, rename = "static")]
    pub static_token: Option<Expanded<String>>,
    /// Tokens from the file's `oidc` identity provider.
    #[serde(default)]
    pub oidc: Option<OidcUseFile>,
    /// Where the token goes (default: password).
    #[serde(default, rename = "as")]
    pub placement: Option<PlacementName>,
    /// The other half of the login: the password when the token is the user name (CELINE
    /// uses `jwt`), the user name when it is the password.
    #[serde(default)]
    pub with: Option<Expanded<String>>,
}

/// How a broker uses the identity provider.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct OidcUseFile {
    /// Scope added (once) to the provider's for this broker's tokens, e.g. `mqtt`.
    #[serde(default)]
    pub scope: Option<Expanded<String>>,
}

/// CELINE's `MqttConfig`, key for key. Values may be strings, as CELINE's loader coerces.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct CelineMqttFile {
    /// Host (default `localhost`).
    #[serde(default)]
    pub host: Option<Expanded<String>>,
    /// Port (default 1883).
    #[serde(default)]
    pub port: Option<Expanded<u16>>,
    /// Client id (default: a unique one).
    #[serde(default)]
    pub client_id: Option<Expanded<String>>,
    /// User name (replaced by the token with `auth_with_token`).
    #[serde(default)]
    pub username: Option<Expanded<String>>,
    /// Password.
    #[serde(default)]
    pub password: Option<Expanded<String>>,
    /// TLS on or off.
    #[serde(default)]
    pub use_tls: Option<Expanded<bool>>,
    /// CA file.
    #[serde(default)]
    pub ca_certs: Option<Expanded<PathBuf>>,
    /// Client certificate file.
    #[serde(default)]
    pub certfile: Option<Expanded<PathBuf>>,
    /// Client key file.
    #[serde(default)]
    pub keyfile: Option<Expanded<PathBuf>>,
    /// Keep-alive in seconds.
    #[serde(default)]
    pub keepalive: Option<Expanded<u64>>,
    /// `false`: a persistent session (kept by the broker while the client is away, as
    /// `session_expiry` never expiring); `true`, the default: a clean session each time.
    #[serde(default)]
    pub clean_session: Option<Expanded<bool>>,
    /// Seconds between reconnect attempts (busbar's backoff when absent).
    #[serde(default)]
    pub reconnect_interval: Option<Expanded<f64>>,
    /// Failed reconnect attempts after which the connection closes (0 or absent: never).
    #[serde(default)]
    pub max_reconnect_attempts: Option<Expanded<u64>>,
    /// Topic prefix.
    #[serde(default)]
    pub topic_prefix: Option<Expanded<String>>,
    /// Seconds before expiry that a token is renewed (default 30).
    #[serde(default)]
    #[cfg_attr(test, schemars(with = "Option<Expanded<f64>>"))]
    pub token_refresh_margin: Option<Expanded<Duration>>,
    /// Seconds one connect may take (busbar's default, 10, when absent).
    #[serde(default)]
    pub connect_timeout: Option<Expanded<f64>>,
    /// Scope added to the identity provider's for broker tokens (default `mqtt`; empty for
    /// none).
    #[serde(default)]
    pub token_scope: Option<Expanded<String>>,
}
