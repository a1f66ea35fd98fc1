//! From the file as written to brokers ready to connect: URLs composed from fields, tokens
//! chosen, CELINE entries translated, and every inconsistency reported by broker name.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use busbar_core::auth::{StaticToken, Token, TokenPlacement};
use busbar_core::error::{ConnectError, ConnectErrorKind, OpError};
use busbar_core::transport::ConnectOptions;
use busbar_core::url::percent_encode as encode;
use busbar_core::url::redact;

use super::ConfigError;
use super::expand::{Expanded, Lookup};
use super::file::{
    BridgeFile, BrokerFile, CelineMqttFile, File, OidcFile, PlacementName, ServerOrderName,
    TransportName,
};
use crate::{Connection, Error, Result};
use busbar_bridge::{Bridge, BridgeError, BridgeOptions, Rewrite};

/// One broker of a configuration, ready to connect.
#[derive(Clone)]
pub struct Broker {
    /// Its name in the file.
    pub name: String,
    /// False when the file disables it.
    pub enabled: bool,
    url: String,
    /// The client id to connect with, if the file sets one.
    pub client_id: Option<String>,
    /// Put before every topic of the connection, and taken off what arrives.
    pub topic_prefix: Option<String>,
    /// Where tokens come from, for a token login.
    pub token: Option<TokenSource>,
    /// Where the token goes.
    pub placement: TokenPlacement,
}

/// Where a broker's tokens come from.
#[derive(Clone)]
#[non_exhaustive]
pub enum TokenSource {
    /// A fixed token.
    Static(String),
    /// An OIDC client-credentials client, asking for `scope` on top of its own.
    Oidc {
        /// The identity provider.
        client: OidcClient,
        /// Scope added for this broker.
        scope: Option<String>,
    },
}

/// An OpenID Connect client-credentials client, as configured.
#[derive(Clone)]
pub struct OidcClient {
    /// The issuer URL.
    pub issuer: String,
    /// The client id.
    pub client_id: String,
    /// The client secret.
    pub client_secret: String,
    /// Scopes asked for.
    pub scope: Option<String>,
    /// How long before expiry a token is renewed.
    pub margin: Duration,
    /// Deadline of each request.
    pub timeout: Duration,
    /// Authorities for an https issuer.
    pub ca: Option<PathBuf>,
}

impl Broker {
    /// The URL to connect to, credentials included.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL with any password replaced by `***`, for messages.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }

    /// The connect options the entry asks for (client id, token).
    pub fn options(&self) -> Result<ConnectOptions> {
        self.complete(ConnectOptions::new())
    }

    /// `options` completed with the entry's: its token, and its client id where `options`
    /// has none. A last will goes under the topic prefix like everything else.
    pub fn complete(&self, mut options: ConnectOptions) -> Result<ConnectOptions> {
        if options.client_id.is_none()
            && let Some(id) = &self.client_id
        {
            options = options.client_id(id.clone());
        }
        if let (Some(prefix), Some(will)) = (&self.topic_prefix, options.last_will.as_mut()) {
            will.topic = busbar_core::Topic::new(format!("{prefix}/{}", will.topic.as_str()))?;
        }
        match &self.token {
            None => {}
            Some(TokenSource::Static(value)) => {
                let provider = Arc::new(StaticToken(Token::forever(value.clone())));
                options = options.token(provider, self.placement);
            }
            Some(TokenSource::Oidc { client, scope }) => {
                options = options.token(oidc_provider(client, scope.as_deref())?, self.placement);
            }
        }
        Ok(options)
    }

    /// Connects with every transport compiled in, the topic prefix applied.
    pub async fn connect(&self) -> Result<Connection, ConnectError> {
        self.connect_with(ConnectOptions::new()).await
    }

    /// [`connect`](Self::connect) with `options`, completed by the entry's.
    pub async fn connect_with(&self, options: ConnectOptions) -> Result<Connection, ConnectError> {
        let options = self.complete(options).map_err(|e| self.unusable(e))?;
        let conn = crate::connect_with(&self.url, options).await?;
        match &self.topic_prefix {
            Some(prefix) => conn.with_topic_prefix(prefix).map_err(|e| self.unusable(e)),
            None => Ok(conn),
        }
    }

    /// The entry's settings cannot be used to connect.
    fn unusable(&self, e: Error) -> ConnectError {
        match e {
            Error::Connect(e) => e,
            other => {
                OpError::new(ConnectErrorKind::Config, format!("broker {}: {other}", self.name))
                    .with_source(other)
            }
        }
    }

    /// A connector that connects to this broker whatever URL it is given, for
    /// [`NodeBuilder::connector`](busbar_core::NodeBuilder::connector): nodes started with it
    /// get the entry's token, client id and topic prefix.
    pub fn connector(&self) -> Arc<dyn busbar_core::Connector> {
        Arc::new(BrokerConnector(self.clone()))
    }
}

struct BrokerConnector(Broker);

impl busbar_core::Connector for BrokerConnector {
    fn schemes(&self) -> &[&'static str] {
        &[]
    }

    fn connect(
        &self,
        _url: &str,
        options: ConnectOptions,
    ) -> busbar_core::transport::BoxFuture<'static, Result<Connection, ConnectError>> {
        let broker = self.0.clone();
        Box::pin(async move { broker.connect_with(options).await })
    }
}

#[cfg(feature = "oidc")]
fn oidc_provider(
    client: &OidcClient,
    scope: Option<&str>,
) -> Result<busbar_core::auth::SharedTokenProvider> {
    let mut settings = busbar_oidc::OidcSettings::new(
        client.issuer.clone(),
        client.client_id.clone(),
        client.client_secret.clone(),
    )
    .margin(client.margin);
    settings.scope = client.scope.clone();
    settings.timeout = client.timeout;
    settings.tls.ca = client.ca.clone();
    let provider = busbar_oidc::OidcProvider::new(settings).map_err(Error::from)?;
    Ok(Arc::new(match scope {
        Some(scope) => provider.with_scope(scope),
        None => provider,
    }))
}

#[cfg(not(feature = "oidc"))]
fn oidc_provider(
    _client: &OidcClient,
    _scope: Option<&str>,
) -> Result<busbar_core::auth::SharedTokenProvider> {
    Err(Error::Config(
        "OIDC tokens need the `oidc` feature, which this build does not include".into(),
    ))
}

impl fmt::Debug for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broker")
            .field("name", &self.name)
            .field("enabled", &self.enabled)
            .field("url", &self.redacted_url())
            .field("client_id", &self.client_id)
            .field("topic_prefix", &self.topic_prefix)
            .field(
                "token",
                &self.token.as_ref().map(|t| match t {
                    TokenSource::Static(_) => "static",
                    TokenSource::Oidc { .. } => "oidc",
                }),
            )
            .field("placement", &self.placement)
            .finish()
    }
}

fn get<T: Clone>(v: &Option<Expanded<T>>) -> Option<T> {
    v.as_ref().map(|e| e.0.clone())
}

pub(super) fn resolve(
    file: File,
    origin: &Path,
    lookup: Lookup<'_>,
    mut deferred: BTreeMap<String, super::Unset>,
) -> std::result::Result<super::Config, ConfigError> {
    let problem = |message: String| ConfigError::Problem { file: origin.to_owned(), message };
    let default = match (file.default, file.default_broker) {
        (Some(a), Some(b)) if a != b => {
            return Err(problem(format!("`default` ({a}) and `default_broker` ({b}) disagree")));
        }
        (Some(a), _) | (None, Some(a)) => Some(a),
        (None, None) if file.brokers.len() == 1 => file.brokers.keys().next().cloned(),
        (None, None) => None,
    };
    if let Some(name) = &default
        && !file.brokers.contains_key(name)
    {
        return Err(ConfigError::UnknownBroker {
            file: origin.to_owned(),
            name: name.clone(),
            known: file.brokers.keys().cloned().collect::<Vec<_>>().join(", "),
        });
    }
    // What an unset variable left unusable is said when it is asked for (see `expand`).
    let oidc_unset = deferred.remove(super::file::OIDC_SCOPE);
    let oidc = file.oidc.map(oidc_client);
    let mut brokers = BTreeMap::new();
    let mut unusable = BTreeMap::new();
    for (name, entry) in file.brokers {
        if let Some(unset) = deferred.remove(&super::file::broker_scope(&name)) {
            let message = format!("{} (broker {name:?} needs it)", unset.message);
            unusable.insert(name, super::Unset { at: unset.at, message });
            continue;
        }
        let broker = broker(&name, entry, oidc.as_ref(), lookup)
            .map_err(|message| problem(format!("broker {name:?}: {message}")))?;
        if let (Some(unset), Some(TokenSource::Oidc { .. })) = (&oidc_unset, &broker.token) {
            let message = format!(
                "{} (broker {name:?} takes its tokens from the `oidc` section)",
                unset.message
            );
            unusable.insert(name, super::Unset { at: unset.at, message });
            continue;
        }
        brokers.insert(name, broker);
    }
    let names: BTreeSet<&str> = brokers.keys().chain(unusable.keys()).map(String::as_str).collect();
    let mut bridges: Vec<BridgeSpec> = Vec::new();
    for entry in file.bridges {
        let name = entry.name.clone();
        if bridges.iter().any(|b| b.name == name) {
            return Err(problem(format!("two bridges are named {name:?}")));
        }
        let spec = bridge_spec(entry, &names)
            .map_err(|message| problem(format!("bridge {name:?}: {message}")))?;
        bridges.push(spec);
    }
    Ok(super::Config { file: origin.to_owned(), brokers, unusable, default, bridges })
}

/// A bridge of a configuration, checked against its brokers.
#[derive(Debug, Clone)]
pub struct BridgeSpec {
    /// Its name.
    pub name: String,
    /// The broker it reads from.
    pub from: String,
    /// The broker it writes to.
    pub to: String,
    /// Filters forwarded, each a bridge of its own.
    pub topics: Vec<String>,
    /// How topics are renamed.
    pub rewrite: Rewrite,
    /// Also forward back (with the rewrite undone).
    pub two_way: bool,
    /// What a full queue does.
    pub overflow: busbar_core::Overflow,
    /// Messages queued between the brokers.
    pub capacity: usize,
    /// RPC services of `to` served on `from`: (topic on `from`, topic on `to`, deadline).
    pub rpc: Vec<(String, String, Duration)>,
    /// Read through durable subscriptions named after this (see [`BridgeSpec::durable_name`]).
    pub durable: Option<String>,
}

impl BridgeSpec {
    /// The durable subscription one forwarded filter reads through: the bridge's `durable`
    /// name alone when it forwards one filter one way, else that name with a tag of the
    /// filter and direction (a durable name keeps one filter on some brokers, NATS
    /// among them), stable however the list of topics is reordered.
    pub fn durable_name(&self, filter: &str, back: bool) -> Option<String> {
        let base = self.durable.as_deref()?;
        if self.topics.len() == 1 && !self.two_way {
            return Some(base.to_owned());
        }
        // FNV-1a: a short, stable tag (not a security measure).
        let mut hash: u32 = 0x811c_9dc5;
        let direction = if back { b'<' } else { b'>' };
        for b in filter.bytes().chain(std::iter::once(direction)) {
            hash = (hash ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
        Some(format!("{base}-{hash:08x}"))
    }

    /// Starts every bridge the entry describes, between `from` and `to`.
    pub async fn start(
        &self,
        from: &Connection,
        to: &Connection,
    ) -> std::result::Result<Vec<Bridge>, BridgeError> {
        let mut running = Vec::new();
        for filter in &self.topics {
            let options = BridgeOptions {
                rewrite: self.rewrite.clone(),
                capacity: self.capacity,
                overflow: self.overflow,
                loop_id: Some(self.name.clone()),
                durable: self.durable_name(filter, false),
            };
            let name = format!("{}:{filter}", self.name);
            running.push(Bridge::topics(&name, from, to, filter, options.clone()).await?);
            if self.two_way {
                let (back_filter, back_rewrite) = reverse(filter, &self.rewrite);
                let back = BridgeOptions {
                    rewrite: back_rewrite,
                    durable: self.durable_name(filter, true),
                    ..options
                };
                let name = format!("{}:{back_filter} (back)", self.name);
                running.push(Bridge::topics(&name, to, from, &back_filter, back).await?);
            }
        }
        for (topic, target, timeout) in &self.rpc {
            let name = format!("{}:rpc {topic}", self.name);
            running.push(Bridge::rpc(&name, from, to, topic, target, *timeout).await?);
        }
        Ok(running)
    }
}

/// The filter and rewrite of the way back: a prefix added on the way there is taken off on
/// the way back, and the other way round.
fn reverse(filter: &str, rewrite: &Rewrite) -> (String, Rewrite) {
    match rewrite {
        Rewrite::AddPrefix(p) => {
            (format!("{}/{filter}", p.trim_matches('/')), Rewrite::StripPrefix(p.clone()))
        }
        Rewrite::StripPrefix(p) => {
            let p = p.trim_matches('/');
            let back = filter.strip_prefix(p).and_then(|r| r.strip_prefix('/')).unwrap_or(filter);
            (back.to_owned(), Rewrite::AddPrefix(p.to_owned()))
        }
        Rewrite::DotsToLevels => (filter.replace('.', "/"), Rewrite::LevelsToDots),
        Rewrite::LevelsToDots => (filter.replace('/', "."), Rewrite::DotsToLevels),
        _ => (filter.to_owned(), Rewrite::Keep),
    }
}

fn bridge_spec(
    entry: BridgeFile,
    brokers: &BTreeSet<&str>,
) -> std::result::Result<BridgeSpec, String> {
    for side in [&entry.from, &entry.to] {
        if !brokers.contains(side.as_str()) {
            let known = brokers.iter().copied().collect::<Vec<_>>().join(", ");
            return Err(format!("no broker named {side:?} (the file has {known})"));
        }
    }
    if entry.topics.is_empty() && entry.rpc.is_empty() {
        return Err("nothing to carry: give `topics`, `rpc`, or both".into());
    }
    let rewrite = match entry.rewrite {
        None => Rewrite::Keep,
        Some(r) => {
            let mut chosen = Vec::new();
            if let Some(p) = r.add_prefix {
                chosen.push(Rewrite::AddPrefix(p));
            }
            if let Some(p) = r.strip_prefix {
                chosen.push(Rewrite::StripPrefix(p));
            }
            if let Some(t) = r.template {
                chosen.push(Rewrite::Template(t));
            }
            if r.dots_to_levels == Some(true) {
                chosen.push(Rewrite::DotsToLevels);
            }
            if r.levels_to_dots == Some(true) {
                chosen.push(Rewrite::LevelsToDots);
            }
            match (chosen.pop(), chosen.is_empty()) {
                (Some(rule), true) => rule,
                _ => {
                    return Err("`rewrite` takes exactly one of add_prefix, strip_prefix, \
                                template, dots_to_levels, levels_to_dots"
                        .into());
                }
            }
        }
    };
    if entry.two_way && matches!(rewrite, Rewrite::Template(_)) {
        return Err("a template cannot be undone on the way back: a two-way bridge takes a \
                    prefix or dots rewrite, or none"
            .into());
    }
    for filter in &entry.topics {
        let parsed =
            busbar_core::TopicFilter::new(filter).map_err(|e| format!("topic {filter:?}: {e}"))?;
        rewrite.check(&parsed).map_err(|e| e.to_string())?;
    }
    let overflow = match entry.overflow.as_deref() {
        None => busbar_core::Overflow::Block,
        Some(name) => busbar_core::Overflow::from_name(name).ok_or_else(|| {
            format!("overflow {name:?} is none of block, drop-oldest, drop-newest")
        })?,
    };
    if entry.durable.is_some() && overflow != busbar_core::Overflow::Block {
        return Err("a durable bridge keeps every message: `overflow` must be block".into());
    }
    let mut rpc = Vec::new();
    for r in entry.rpc {
        let timeout = r.timeout.unwrap_or(5.0);
        let timeout = Duration::try_from_secs_f64(timeout)
            .ok()
            .filter(|t| !t.is_zero())
            .ok_or_else(|| {
                format!("rpc {}: timeout {timeout} is not a positive number of seconds", r.topic)
            })?;
        let target = r.target.unwrap_or_else(|| r.topic.clone());
        rpc.push((r.topic, target, timeout));
    }
    Ok(BridgeSpec {
        name: entry.name,
        from: entry.from,
        to: entry.to,
        topics: entry.topics,
        rewrite,
        two_way: entry.two_way,
        overflow,
        capacity: entry.capacity.unwrap_or(1024).max(1),
        rpc,
        durable: entry.durable,
    })
}

fn oidc_client(f: OidcFile) -> OidcClient {
    OidcClient {
        issuer: f.issuer.0,
        client_id: f.client_id.0,
        client_secret: f.client_secret.0,
        scope: get(&f.scope).filter(|s| !s.trim().is_empty()),
        margin: get(&f.margin).unwrap_or(Duration::from_secs(30)),
        timeout: get(&f.timeout).unwrap_or(Duration::from_secs(10)),
        ca: get(&f.ca),
    }
}

/// The broker classes of CELINE's `brokers.yaml` that busbar stands in for: its MQTT broker,
/// under the module paths the SDK has had.
const CELINE_MQTT_CLASSES: [&str; 2] =
    ["celine.dt.core.broker.mqtt:MqttBroker", "celine.sdk.broker.mqtt:MqttBroker"];

/// Accepts a CELINE `class:` that names its MQTT broker; anything else is a Python class
/// busbar cannot load, and the message says what to write instead.
fn celine_class(class: &str) -> std::result::Result<(), String> {
    if CELINE_MQTT_CLASSES.contains(&class.trim()) {
        return Ok(());
    }
    Err(format!(
        "`class: {class}` is a Python class busbar cannot load; busbar is CELINE's MQTT broker \
         itself ({}), and reaches other brokers by `url` (mqtt://, amqp://, redis://, nats://, \
         kafka://) instead of a class",
        CELINE_MQTT_CLASSES.join(" or ")
    ))
}

/// CELINE's identity provider settings from its environment: the SDK's `CELINE_OIDC_*`
/// variables, each of which falls back to the `OIDC_*` one CELINE's documentation names.
fn celine_oidc_from_env(lookup: Lookup<'_>) -> Option<OidcClient> {
    let var = |name: &str| {
        let set = |key: String| lookup(&key).filter(|v| !v.is_empty());
        set(format!("CELINE_OIDC_{name}")).or_else(|| set(format!("OIDC_{name}")))
    };
    Some(OidcClient {
        issuer: var("BASE_URL")?,
        client_id: var("CLIENT_ID")?,
        client_secret: var("CLIENT_SECRET").unwrap_or_default(),
        scope: var("SCOPE"),
        margin: Duration::from_secs(30),
        timeout: Duration::from_secs(10),
        ca: None,
    })
}

fn broker(
    name: &str,
    mut entry: BrokerFile,
    oidc: Option<&OidcClient>,
    lookup: Lookup<'_>,
) -> std::result::Result<Broker, String> {
    let enabled = get(&entry.enabled).unwrap_or(true);
    if let Some(class) = get(&entry.class_name) {
        celine_class(&class)?;
        if entry.config.is_none() {
            return Err(format!(
                "`class: {class}` is CELINE's MQTT broker, whose settings go in `config`"
            ));
        }
    }
    let auth_with_token = match (entry.auth_with_token.take(), entry.jwt_auth.take()) {
        (Some(_), Some(_)) => {
            return Err("`jwt_auth` is the old name of `auth_with_token`: give one of them".into());
        }
        (new, old) => new.or(old),
    };
    if let Some(celine) = entry.config {
        let fields = [
            ("url", entry.url.is_some()),
            ("transport", entry.transport.is_some()),
            ("host", entry.host.is_some()),
            ("token", entry.token.is_some()),
            ("topic_prefix", entry.topic_prefix.is_some()),
        ];
        if let Some((field, _)) = fields.iter().find(|(_, set)| *set) {
            return Err(format!(
                "`config` (CELINE's shape) and `{field}` cannot be mixed: put the settings in \
                 `config`"
            ));
        }
        let with_token = get(&auth_with_token).unwrap_or(false);
        return celine_broker(name, enabled, with_token, celine, oidc, lookup);
    }
    if auth_with_token.is_some() {
        return Err(
            "`auth_with_token` belongs to CELINE's shape, with `config`; use `token`".into()
        );
    }

    let url = match (get(&entry.url), entry.transport) {
        (Some(_), Some(_)) => return Err("give `url` or `transport` with `host`, not both".into()),
        (Some(url), None) => {
            let fields = [
                ("host", entry.host.is_some()),
                ("port", entry.port.is_some()),
                ("servers", entry.servers.is_some()),
                ("server_order", entry.server_order.is_some()),
                ("sentinel", entry.sentinel.is_some()),
                ("username", entry.username.is_some()),
                ("password", entry.password.is_some()),
                ("vhost", entry.vhost.is_some()),
                ("database", entry.database.is_some()),
                ("path", entry.path.is_some()),
                ("tls", entry.tls.is_some()),
                ("keep_alive", entry.keep_alive.is_some()),
            ];
            if let Some((field, _)) = fields.iter().find(|(_, set)| *set) {
                return Err(format!("`{field}` goes into the `url` when `url` is given"));
            }
            url
        }
        (None, Some(transport)) => compose_url(transport, &entry)?,
        (None, None) => return Err("give `url`, or `transport` with `host` or `servers`".into()),
    };
    check_scheme(&url)?;

    let (token, placement, url) = match entry.token {
        None => (None, TokenPlacement::default(), url),
        Some(t) => {
            let source = match (get(&t.static_token), t.oidc) {
                (Some(value), None) => TokenSource::Static(value),
                (None, Some(use_)) => {
                    let client = oidc.cloned().ok_or(
                        "`token: {oidc: ...}` needs the file's `oidc:` section (issuer, \
                         client_id, client_secret)",
                    )?;
                    TokenSource::Oidc { client, scope: get(&use_.scope) }
                }
                (Some(_), Some(_)) => {
                    return Err("`token` takes `static` or `oidc`, not both".into());
                }
                (None, None) => return Err("`token` needs `static` or `oidc`".into()),
            };
            let placement = match t.placement {
                Some(PlacementName::Username) => TokenPlacement::Username,
                Some(PlacementName::Password) | None => TokenPlacement::Password,
            };
            let url = match get(&t.with) {
                Some(other) => with_other_half(&url, placement, &other)?,
                None => url,
            };
            (Some(source), placement, url)
        }
    };
    Ok(Broker {
        name: name.to_owned(),
        enabled,
        url,
        client_id: get(&entry.client_id),
        topic_prefix: prefix(get(&entry.topic_prefix)),
        token,
        placement,
    })
}

fn prefix(p: Option<String>) -> Option<String> {
    p.map(|p| p.trim_matches('/').to_owned()).filter(|p| !p.is_empty())
}

fn celine_broker(
    name: &str,
    enabled: bool,
    with_token: bool,
    c: CelineMqttFile,
    oidc: Option<&OidcClient>,
    lookup: Lookup<'_>,
) -> std::result::Result<Broker, String> {
    let tls = get(&c.use_tls).unwrap_or(false);
    let host = get(&c.host).unwrap_or_else(|| "localhost".into());
    let port = get(&c.port).unwrap_or(1883);
    let mut query = Vec::new();
    for (key, file) in [("ca", &c.ca_certs), ("cert", &c.certfile), ("key", &c.keyfile)] {
        if let Some(path) = get(file) {
            if !tls {
                return Err(format!("`{}` is set but `use_tls` is not", celine_key(key)));
            }
            query.push((key, path.display().to_string()));
        }
    }
    if let Some(k) = get(&c.keepalive) {
        query.push(("keep_alive", k.to_string()));
    }
    // CELINE's connection settings, as the MQTT transport's parameters.
    if get(&c.clean_session) == Some(false) {
        // MQTT 3.1.1's clean_session=0: the broker keeps the session (MQTT 5: never expires).
        query.push(("session_expiry", u32::MAX.to_string()));
    }
    for (key, seconds) in [
        ("reconnect_interval", get(&c.reconnect_interval)),
        ("connect_timeout", get(&c.connect_timeout)),
    ] {
        if let Some(seconds) = seconds {
            if !seconds.is_finite() || seconds < 0.0 {
                return Err(format!("`{key}` must be a number of seconds, not {seconds}"));
            }
            query.push((key, format!("{}ms", (seconds * 1000.0).round() as u64)));
        }
    }
    if let Some(attempts) = get(&c.max_reconnect_attempts) {
        query.push(("max_reconnect_attempts", attempts.min(u64::from(u32::MAX)).to_string()));
    }
    let (token, placement, username, password) = if with_token {
        let mut client = oidc.cloned().or_else(|| celine_oidc_from_env(lookup)).ok_or(
            "`auth_with_token` needs an identity provider: the file's `oidc:` section or the \
             CELINE_OIDC_BASE_URL and CELINE_OIDC_CLIENT_ID variables (or OIDC_BASE_URL and \
             OIDC_CLIENT_ID)",
        )?;
        if let Some(margin) = get(&c.token_refresh_margin) {
            client.margin = margin;
        }
        let scope = match get(&c.token_scope) {
            Some(s) if s.trim().is_empty() => None,
            Some(s) => Some(s),
            None => Some("mqtt".to_owned()),
        };
        // CELINE logs in with the token as user name and the literal password `jwt`.
        let password = get(&c.password).unwrap_or_else(|| "jwt".into());
        (Some(TokenSource::Oidc { client, scope }), TokenPlacement::Username, None, Some(password))
    } else {
        (None, TokenPlacement::default(), get(&c.username), get(&c.password))
    };
    let scheme = if tls { "mqtts" } else { "mqtt" };
    let url = assemble(
        scheme,
        username.as_deref(),
        password.as_deref(),
        &bracketed(&host),
        Some(port),
        "",
        &query,
    );
    Ok(Broker {
        name: name.to_owned(),
        enabled,
        url,
        client_id: get(&c.client_id),
        topic_prefix: prefix(get(&c.topic_prefix)),
        token,
        placement,
    })
}

fn celine_key(key: &str) -> &'static str {
    match key {
        "ca" => "ca_certs",
        "cert" => "certfile",
        _ => "keyfile",
    }
}

/// The URL for a broker given as fields.
fn compose_url(transport: TransportName, e: &BrokerFile) -> std::result::Result<String, String> {
    let tls = e.tls.is_some();
    let scheme = match (transport, tls) {
        (TransportName::Mqtt, false) => "mqtt",
        (TransportName::Mqtt, true) => "mqtts",
        (TransportName::Ws, false) => "ws",
        (TransportName::Ws, true) => "wss",
        (TransportName::Redis, false) => "redis",
        (TransportName::Redis, true) => "rediss",
        (TransportName::Nats, false) => "nats",
        (TransportName::Nats, true) => "tls",
        (TransportName::Amqp, false) => "amqp",
        (TransportName::Amqp, true) => "amqps",
        (TransportName::Kafka, false) => "kafka",
        (TransportName::Kafka, true) => "kafka+tls",
        (TransportName::Mem, false) => "mem",
        (TransportName::Mem, true) => return Err("the in-process bus has no TLS".into()),
    };
    let servers: Option<Vec<String>> =
        e.servers.as_ref().map(|list| list.iter().map(|s| s.0.clone()).collect());
    let host = match (get(&e.host), servers, transport) {
        (Some(_), Some(_), _) => {
            return Err("give `host` (and `port`) or `servers`, not both".into());
        }
        (None, Some(_), TransportName::Mem) => {
            return Err("the in-process bus has no servers: `host` names the bus".into());
        }
        (None, Some(list), _) => server_list(&list, get(&e.port).is_some())?,
        (Some(h), None, _) => bracketed(&h),
        (None, None, TransportName::Mem) => String::new(),
        (None, None, _) => return Err("`host` (or `servers`) is missing".into()),
    };
    let only = |field: &str, set: bool, for_: TransportName| {
        if set && transport != for_ {
            Err(format!("`{field}` applies to {for_:?} brokers only").to_lowercase())
        } else {
            Ok(())
        }
    };
    only("vhost", e.vhost.is_some(), TransportName::Amqp)?;
    only("database", e.database.is_some(), TransportName::Redis)?;
    only("path", e.path.is_some(), TransportName::Ws)?;
    only("sentinel", e.sentinel.is_some(), TransportName::Redis)?;
    let path = match transport {
        TransportName::Amqp => {
            get(&e.vhost).map(|v| format!("/{}", encode(&v))).unwrap_or_default()
        }
        TransportName::Redis => get(&e.database).map(|d| format!("/{d}")).unwrap_or_default(),
        TransportName::Ws => get(&e.path).unwrap_or_default(),
        _ => String::new(),
    };
    let mut query = Vec::new();
    if let Some(t) = &e.tls {
        for (key, file) in [("ca", &t.ca), ("cert", &t.cert), ("key", &t.key)] {
            if let Some(path) = get(file) {
                query.push((key, path.display().to_string()));
            }
        }
    }
    match e.server_order {
        Some(_) if transport == TransportName::Kafka => {
            return Err("`server_order` does not apply to Kafka: the client picks among the \
                        bootstrap servers itself"
                .into());
        }
        Some(ServerOrderName::Listed) => query.push(("server_order", "listed".into())),
        Some(ServerOrderName::Random) => query.push(("server_order", "random".into())),
        None => {}
    }
    if let Some(group) = get(&e.sentinel) {
        query.push(("sentinel", group));
    }
    if let Some(k) = get(&e.keep_alive) {
        if !matches!(transport, TransportName::Mqtt | TransportName::Ws) {
            return Err("`keep_alive` applies to MQTT brokers only".into());
        }
        query.push(("keep_alive", k.to_string()));
    }
    Ok(assemble(
        scheme,
        get(&e.username).as_deref(),
        get(&e.password).as_deref(),
        &host,
        get(&e.port),
        &path,
        &query,
    ))
}

/// A URL from its parts; `host` as it goes in a URL (bracketed, or a list).
fn assemble(
    scheme: &str,
    username: Option<&str>,
    password: Option<&str>,
    host: &str,
    port: Option<u16>,
    path: &str,
    query: &[(&str, String)],
) -> String {
    let mut url = format!("{scheme}://");
    if username.is_some() || password.is_some() {
        url.push_str(&encode(username.unwrap_or_default()));
        if let Some(p) = password {
            url.push(':');
            url.push_str(&encode(p));
        }
        url.push('@');
    }
    url.push_str(host);
    if let Some(port) = port {
        url.push_str(&format!(":{port}"));
    }
    url.push_str(path);
    for (i, (key, value)) in query.iter().enumerate() {
        url.push(if i == 0 { '?' } else { '&' });
        url.push_str(key);
        url.push('=');
        url.push_str(&encode(value));
    }
    url
}

/// A host as it goes in a URL: an IPv6 address in brackets.
fn bracketed(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_owned() }
}

/// `servers` as a URL's comma-separated list, each entry checked, so that a bad one is
/// named where the file is read.
fn server_list(list: &[String], port_given: bool) -> std::result::Result<String, String> {
    if port_given {
        return Err("give the port in each entry of `servers` (`host:port`), not in `port`".into());
    }
    if list.is_empty() {
        return Err("`servers` is empty".into());
    }
    for (i, entry) in list.iter().enumerate() {
        let bad = |why: &str| Err(format!("`servers` entry {} ({entry:?}): {why}", i + 1));
        let (host, port) = match entry.strip_prefix('[') {
            Some(rest) => match rest.split_once(']') {
                Some((host, "")) => (host, None),
                Some((host, after)) => match after.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => return bad("expected `:PORT` after the address"),
                },
                None => return bad("an IPv6 address is missing its `]`"),
            },
            None => match entry.rsplit_once(':') {
                Some((host, _)) if host.contains(':') => {
                    return bad("an IPv6 address goes in brackets, as in [::1]:1883");
                }
                Some((host, port)) => (host, Some(port)),
                None => (entry.as_str(), None),
            },
        };
        if host.is_empty() || host.contains(['/', '?', '@', ',', ' ']) {
            return bad("not a host name or address");
        }
        if port.is_some_and(|p| p.parse::<u16>().map_or(true, |p| p == 0)) {
            return bad("the port must be a number from 1 to 65535");
        }
    }
    Ok(list.join(","))
}

/// Puts `other` into the URL as the half of the login the token does not fill.
fn with_other_half(
    url: &str,
    placement: TokenPlacement,
    other: &str,
) -> std::result::Result<String, String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("{} is not a URL", redact(url)));
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    if rest[..authority_end].contains('@') {
        return Err("`token.with` and credentials in the URL cannot be combined".into());
    }
    let login = match placement {
        TokenPlacement::Username => format!(":{}", encode(other)),
        TokenPlacement::Password => encode(other),
    };
    Ok(format!("{scheme}://{login}@{rest}"))
}

fn check_scheme(url: &str) -> std::result::Result<(), String> {
    let Some((scheme, _)) = url.split_once("://") else {
        return Err(format!("{} is not a URL (scheme://...)", redact(url)));
    };
    // Whether this build has the transport is checked when connecting, so that a file stays
    // loadable by builds with fewer transports.
    if crate::registry::is_known_scheme(&scheme.to_ascii_lowercase()) {
        Ok(())
    } else {
        Err(format!("busbar has no transport for {scheme}://"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_are_encoded() {
        let url = assemble(
            "amqp",
            Some("a@b"),
            Some("p:ss/é"),
            &bracketed("::1"),
            Some(5672),
            "/%2f",
            &[],
        );
        assert_eq!(url, "amqp://a%40b:p%3Ass%2F%C3%A9@[::1]:5672/%2f");
    }

    #[test]
    fn server_lists_are_checked_entry_by_entry() {
        let list = |entries: &[&str]| entries.iter().map(|e| (*e).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            server_list(&list(&["a", "b:4223", "[::1]:4224"]), false).as_deref(),
            Ok("a,b:4223,[::1]:4224")
        );
        for (entries, needle) in [
            (&["a", "b:x"][..], "entry 2 (\"b:x\")"),
            (&["a:0"][..], "from 1 to 65535"),
            (&["::1"][..], "brackets"),
            (&["[::1"][..], "`]`"),
            (&["a", ""][..], "entry 2"),
            (&["a/b"][..], "not a host"),
            (&[][..], "empty"),
        ] {
            let err = server_list(&list(entries), false).expect_err(needle);
            assert!(err.contains(needle), "{entries:?}: {err}");
        }
        assert!(server_list(&list(&["a"]), true).is_err_and(|e| e.contains("`port`")));
    }
}
