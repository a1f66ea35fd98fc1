//! Rule-based gateways with the semantics of CSTBox's MQTT gateway: events of a local bus go
//! out to an MQTT broker by regex rules, and MQTT topics come back as events.
//!
//! * [`OutboundRules`]: per event channel, rules `[pattern, topic_format, extra?, builder?]`
//!   tried in order against `var_type:var_name` (anchored at the start, named groups
//!   allowed); the first match wins and fills the topic format (`%(group)s`,
//!   `%(__system_id__)s`); an event no rule takes is not published; a payload
//!   [`Builders`] entry makes the body.
//! * [`InboundRules`]: per subscription prefix, regexes on the rest of the topic, producing
//!   events `[var_type, var_name, builder, channel?]` (an empty list blocks the topic).
//! * Configuration errors read as CSTBox's do: incomplete rule, empty member(s) found, bad
//!   regex, builder not found, topic format parameter(s) not found in rule regex.
//! * [`OutboundFilter`] and [`InboundFilter`]: the same decisions in code, for what rules
//!   cannot say (CSTBox's "subclass the filters"); the rules are one implementation of each.
//! * [`Gateway`] runs both between an event bus (any busbar URL; events are JSON
//!   [`BusEvent`]s on `<events.topic>/<channel>`) and the broker, from CSTBox's
//!   configuration shape (`busbar gateway -c FILE`).
//!
//! busbar topics have no empty levels, so the leading `/` of CSTBox topics
//! (`/data/observation/...`) is dropped on the wire (`data/observation/...`).

#![forbid(unsafe_code)]

mod error;
mod event;
mod filters;
mod format;
mod inbound;
mod outbound;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use busbar_core::url::percent_encode as encode;
use busbar_core::{
    ConnectOptions, Connection, Connector, Message, QoS, SubscribeOptions, Topic, TopicFilter,
};
use serde::Deserialize;
use serde_json::{Map, Value};

pub use error::GatewayError;
pub use event::{BusEvent, CONTROL_CHANNEL, SENSOR_CHANNEL};
pub use filters::{Filters, InboundFilter, OutboundFilter};
pub use inbound::{InboundRules, Produced};
pub use outbound::{Builder, Builders, OutboundRules, Routed, RuleSpec};

/// CSTBox's default broker port.
pub const DEFAULT_PORT: u16 = 61613;

/// A gateway's configuration: CSTBox's `mqtt_gateway.cfg` keys, and `events`, where the
/// local bus is.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// The local event bus.
    pub events: EventsConfig,
    /// The MQTT broker.
    pub broker: BrokerConfig,
    /// Its login.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// TLS files (`ca_certs`, `certfile`, `keyfile`).
    #[serde(default)]
    pub tls: Option<BTreeMap<String, String>>,
    /// QoS of outbound publishes (CSTBox's default: 2).
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// What `%(__system_id__)s` stands for (default: the client id).
    #[serde(default)]
    pub system_id: Option<String>,
    /// CSTBox's service class: accepted and not used.
    #[serde(default)]
    pub svcobj_class: Option<String>,
    /// CSTBox's dry-run switch: accepted and not used.
    #[serde(default)]
    pub simulate: Option<bool>,
    /// The rules.
    pub adapters: AdaptersConfig,
    /// The MQTT topics (or patterns) the gateway subscribes to for its inbound rules, as
    /// CSTBox's documentation names them; without it, each inbound prefix is subscribed.
    #[serde(default)]
    pub listened_topics: Option<Vec<String>>,
}

fn default_qos() -> u8 {
    2
}

/// Where events are read and written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// The event bus's URL (`mem://`, `redis://...`, ...).
    pub url: String,
    /// Events of channel `c` travel on `<topic>/c` (default `cstbox/events`).
    #[serde(default = "default_events_topic")]
    pub topic: String,
}

fn default_events_topic() -> String {
    "cstbox/events".into()
}

/// The broker: `host`, `port` (default 61613), `client_id` (default: the host name).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// Host name or address.
    pub host: String,
    /// Port.
    #[serde(default)]
    pub port: Option<u16>,
    /// Client id.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Keep-alive in seconds (CSTBox's connector: 60).
    #[serde(default)]
    pub keep_alive: Option<u64>,
}

/// `user` (or `username`, as CSTBox's documentation writes it) and `password`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// User name.
    #[serde(alias = "username")]
    pub user: String,
    /// Password.
    pub password: String,
}

/// `inbound` and `outbound` adapters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptersConfig {
    /// `{rules: {prefix: [...]}}`.
    #[serde(default)]
    pub inbound: Option<InboundConfig>,
    /// `{channels: {channel: {default_builder, rules}}}`.
    #[serde(default)]
    pub outbound: Option<OutboundConfig>,
}

/// Inbound rules by subscription prefix.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundConfig {
    /// See [`InboundRules::new`].
    pub rules: Map<String, Value>,
}

/// Outbound rules by channel.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    /// Channel name -> its rules.
    pub channels: BTreeMap<String, ChannelConfig>,
}

/// One channel's outbound rules.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// CSTBox's adapter class: accepted and not used.
    #[serde(default)]
    pub adapter_class: Option<String>,
    /// The builder of rules that name none.
    #[serde(default)]
    pub default_builder: Option<String>,
    /// `[pattern, topic_format, extra?, builder?]` each.
    pub rules: Vec<RuleSpec>,
}

impl GatewayConfig {
    /// Reads a configuration (JSON, as CSTBox writes it).
    pub fn from_json(text: &str) -> Result<GatewayConfig, GatewayError> {
        busbar_core::limits::check_document(text).map_err(|e| error::config("configuration", e))?;
        serde_json::from_str(text).map_err(|e| error::config("configuration", e.to_string()))
    }

    /// Reads a configuration written in YAML, the same shape as the JSON.
    pub fn from_yaml(text: &str) -> Result<GatewayConfig, GatewayError> {
        busbar_core::limits::check_document(text).map_err(|e| error::config("configuration", e))?;
        yaml_serde::from_str(text).map_err(|e| error::config("configuration", e.to_string()))
    }

    /// Reads a configuration in JSON (text that starts with `{`, as CSTBox writes it) or in
    /// YAML (anything else), like every other busbar file. Errors give the line and column.
    pub fn parse(text: &str) -> Result<GatewayConfig, GatewayError> {
        if text.trim_start().starts_with('{') {
            GatewayConfig::from_json(text)
        } else {
            GatewayConfig::from_yaml(text)
        }
    }

    /// The filters the configuration's rules make (`builders` serve their payloads).
    pub fn filters(&self, builders: &Builders) -> Result<Filters, GatewayError> {
        let mut filters = Filters::new();
        if let Some(o) = &self.adapters.outbound {
            for (channel, c) in &o.channels {
                let rules = OutboundRules::new(
                    channel,
                    &c.rules,
                    c.default_builder.as_deref(),
                    builders,
                    &self.system_id(),
                )?;
                filters = filters.outbound(channel.clone(), rules);
            }
        }
        if let Some(i) = self.adapters.inbound.as_ref().filter(|i| !i.rules.is_empty()) {
            filters = filters.inbound(InboundRules::new(&i.rules)?);
        }
        Ok(filters)
    }

    /// The client id: the configuration's, or the host name as CSTBox takes it.
    fn client_id(&self) -> String {
        self.broker
            .client_id
            .clone()
            .unwrap_or_else(|| std::env::var("HOSTNAME").unwrap_or_else(|_| "cstbox".to_owned()))
    }

    /// What `%(__system_id__)s` stands for.
    fn system_id(&self) -> String {
        self.system_id.clone().unwrap_or_else(|| self.client_id())
    }

    /// The broker's URL without its password, for messages.
    pub fn broker_url_redacted(&self) -> String {
        busbar_core::url::redact(&self.broker_url())
    }

    /// The broker's URL.
    pub fn broker_url(&self) -> String {
        let tls = self.tls.is_some();
        let mut url = String::from(if tls { "mqtts://" } else { "mqtt://" });
        if let Some(a) = &self.auth {
            url.push_str(&format!("{}:{}@", encode(&a.user), encode(&a.password)));
        }
        url.push_str(&format!("{}:{}", self.broker.host, self.broker.port.unwrap_or(DEFAULT_PORT)));
        let mut sep = '?';
        if let Some(seconds) = self.broker.keep_alive {
            url.push_str(&format!("?keep_alive={seconds}"));
            sep = '&';
        }
        if let Some(files) = &self.tls {
            for (key, param) in [("ca_certs", "ca"), ("certfile", "cert"), ("keyfile", "key")] {
                if let Some(path) = files.get(key) {
                    url.push_str(&format!("{sep}{param}={}", encode(path)));
                    sep = '&';
                }
            }
        }
        url
    }
}

/// A gateway's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GatewayStats {
    /// Events published to the broker.
    pub published: u64,
    /// Events no rule took.
    pub unrouted: u64,
    /// Events put on the bus from MQTT.
    pub produced: u64,
    /// Messages that could not be read or sent.
    pub failed: u64,
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    unrouted: AtomicU64,
    produced: AtomicU64,
    failed: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A running gateway; stops when dropped.
pub struct Gateway {
    counters: Arc<Counters>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A CSTBox topic on busbar's wire: without its leading `/`.
fn wire(topic: &str) -> &str {
    topic.trim_start_matches('/')
}

impl Gateway {
    /// Checks `config`'s rules, connects to the event bus and the broker through
    /// `connector`, and starts forwarding both ways. The subscriptions are in place when it
    /// returns.
    pub async fn start(
        config: &GatewayConfig,
        connector: &dyn Connector,
        builders: &Builders,
    ) -> Result<Gateway, GatewayError> {
        let filters = config.filters(builders)?;
        Self::start_with_filters(config, connector, filters).await
    }

    /// Like [`start`](Self::start), with `filters` given in code instead of the
    /// configuration's rules (which it ignores): `config` says where the bus and the broker
    /// are, the QoS and `listened_topics`. A gateway with no filter at all is refused, as
    /// CSTBox refuses it: it would let nothing through either way.
    pub async fn start_with_filters(
        config: &GatewayConfig,
        connector: &dyn Connector,
        filters: Filters,
    ) -> Result<Gateway, GatewayError> {
        if filters.is_empty() {
            return Err(error::config(
                "adapters",
                "no filter at all: give inbound rules, outbound channels or both (a gateway that \
                 lets nothing through either way is useless)",
            ));
        }
        if config.listened_topics.is_some() && filters.inbound.is_none() {
            return Err(error::config(
                "listened_topics",
                "needs inbound rules: without them nothing heard becomes an event",
            ));
        }
        let qos = match config.qos {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            2 => QoS::ExactlyOnce,
            q => return Err(error::config("qos", format!("{q} is not 0, 1 or 2"))),
        };
        let bus = connector.connect(&config.events.url, ConnectOptions::new()).await?;
        let broker = connector
            .connect(&config.broker_url(), ConnectOptions::new().client_id(config.client_id()))
            .await?;
        let counters = Arc::new(Counters::default());
        let mut tasks = Vec::new();
        for (channel, filter) in filters.outbound {
            let topic = topic_filter(&format!("{}/{channel}", config.events.topic))?;
            let mut events = bus.subscribe_with(SubscribeOptions::from(topic)).await?;
            let (broker, counters, bus) = (broker.clone(), counters.clone(), bus.clone());
            tasks.push(tokio::spawn(async move {
                let _bus = bus;
                while let Some(m) = events.recv().await {
                    publish_out(filter.as_ref(), &broker, qos, &counters, &m).await;
                }
            }));
        }
        if let Some(filter) = filters.inbound {
            let subscriptions =
                config.listened_topics.clone().unwrap_or_else(|| filter.subscriptions());
            for subscription in &subscriptions {
                let topic = topic_filter(wire(subscription))?;
                let options = SubscribeOptions::from(topic).qos(QoS::AtMostOnce);
                let mut messages = broker.subscribe_with(options).await?;
                let (filter, bus, counters, broker) =
                    (filter.clone(), bus.clone(), counters.clone(), broker.clone());
                let base = config.events.topic.clone();
                tasks.push(tokio::spawn(async move {
                    let _broker = broker;
                    while let Some(m) = messages.recv().await {
                        produce_in(filter.as_ref(), &bus, &base, &counters, &m).await;
                    }
                }));
            }
        }
        Ok(Gateway { counters, tasks })
    }

    /// The counters.
    pub fn stats(&self) -> GatewayStats {
        self.stats_reader().read()
    }

    /// A handle that reads its counters from elsewhere (a metrics endpoint).
    pub fn stats_reader(&self) -> GatewayStatsReader {
        GatewayStatsReader { counters: self.counters.clone() }
    }
}

/// Reads a gateway's counters (see [`Gateway::stats_reader`]).
#[derive(Clone)]
pub struct GatewayStatsReader {
    counters: Arc<Counters>,
}

impl GatewayStatsReader {
    /// The counters now.
    pub fn read(&self) -> GatewayStats {
        let c = &self.counters;
        GatewayStats {
            published: c.published.load(Ordering::Relaxed),
            unrouted: c.unrouted.load(Ordering::Relaxed),
            produced: c.produced.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
        }
    }
}

fn topic_filter(text: &str) -> Result<TopicFilter, GatewayError> {
    TopicFilter::new(text).map_err(|e| GatewayError::Busbar(e.into()))
}

async fn publish_out(
    rules: &dyn OutboundFilter,
    broker: &Connection,
    qos: QoS,
    counters: &Counters,
    message: &Message,
) {
    let bytes = message.payload.to_bytes().unwrap_or_default();
    let Ok(event) = serde_json::from_slice::<BusEvent>(&bytes) else {
        tracing::warn!(topic = %message.topic, "not a bus event");
        bump(&counters.failed);
        return;
    };
    let Some(routed) = rules.route(&event) else {
        bump(&counters.unrouted);
        return;
    };
    let sent = match (Topic::new(wire(&routed.topic)), serde_json::to_vec(&routed.payload)) {
        (Ok(topic), Ok(body)) => {
            broker.publish(Message::new(topic, body).with_qos(qos)).await.is_ok()
        }
        _ => false,
    };
    bump(if sent { &counters.published } else { &counters.failed });
}

async fn produce_in(
    rules: &dyn InboundFilter,
    bus: &Connection,
    base: &str,
    counters: &Counters,
    message: &Message,
) {
    let bytes = message.payload.to_bytes().unwrap_or_default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    // Rules are written for CSTBox's topics, leading `/` included.
    let topic = format!("/{}", message.topic.as_str());
    let mut produced = rules.produce(&topic, &bytes, Value::from(now));
    if produced.is_empty() {
        produced = rules.produce(message.topic.as_str(), &bytes, Value::from(now));
    }
    for (channel, event) in produced {
        let sent = match (Topic::new(format!("{base}/{channel}")), serde_json::to_vec(&event)) {
            (Ok(topic), Ok(body)) => bus.publish(Message::new(topic, body)).await.is_ok(),
            _ => false,
        };
        bump(if sent { &counters.produced } else { &counters.failed });
    }
}
