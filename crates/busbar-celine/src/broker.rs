//! Publishing and subscribing as CELINE's `MqttBroker` does, on a busbar connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use busbar_core::{
    Connection, ConnectionEvent, Message, QoS, SubscribeOptions, Subscription, Topic, TopicFilter,
};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{CelineError, Result};
use crate::event::DtEvent;

/// How one message is published.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// Delivery guarantee; `None` (the default) is at least once where the transport can
    /// give it, as CELINE's own default on MQTT. A QoS the transport cannot give is refused.
    pub qos: Option<QoS>,
    /// Keep as the topic's retained message.
    pub retain: bool,
    /// Added to the payload as `correlation_id`, unless the payload has one.
    pub correlation_id: Option<String>,
    /// Added to the payload as `created`, unless it has one (default: now, ISO-8601).
    pub created: Option<String>,
}

/// One message as a CELINE handler receives it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The topic (without the connection's topic prefix, if it has one).
    pub topic: Topic,
    /// The JSON payload, or `{"_raw": <text>}` for a payload that is not JSON.
    pub payload: Value,
    /// The bytes as they arrived.
    pub raw: bytes::Bytes,
    /// The delivery guarantee it came with (at most once where the transport did not say).
    pub qos: QoS,
}

/// One subscription, as CELINE's `get_stats()` lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscriptionStats {
    /// Its id (`sub-<n>`).
    pub id: String,
    /// Its filters.
    pub topics: Vec<String>,
}

/// What CELINE's `get_stats()` reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CelineStats {
    /// Whether the connection is up (as of the last event it reported).
    pub connected: bool,
    /// Messages published.
    pub publish_count: u64,
    /// Messages received, by every subscription.
    pub receive_count: u64,
    /// Publishes that failed.
    pub error_count: u64,
    /// Subscriptions open.
    pub subscription_count: u64,
    /// The subscriptions open.
    pub subscriptions: Vec<SubscriptionStats>,
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    received: AtomicU64,
    errors: AtomicU64,
    next_subscription: AtomicU64,
    subscriptions: std::sync::Mutex<std::collections::BTreeMap<u64, Vec<String>>>,
}

impl Counters {
    fn subscriptions(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<u64, Vec<String>>> {
        self.subscriptions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The connection's state, brought up to date from its events when asked.
struct Link {
    events: busbar_core::ConnectionEvents,
    up: bool,
}

impl Link {
    fn up(&mut self) -> bool {
        while let Some(event) = self.events.try_next() {
            match event {
                ConnectionEvent::Connected { .. } | ConnectionEvent::Reconnected { .. } => {
                    self.up = true
                }
                ConnectionEvent::Disconnected { .. } | ConnectionEvent::Closed => self.up = false,
                _ => {}
            }
        }
        self.up
    }
}

/// CELINE's broker behaviour over a busbar connection (usually MQTT, and usually made from
/// a configuration whose broker has CELINE's `topic_prefix`). Cheap to clone.
#[derive(Clone)]
pub struct CelineBroker {
    conn: Connection,
    counters: Arc<Counters>,
    link: Arc<std::sync::Mutex<Link>>,
}

impl CelineBroker {
    /// CELINE's behaviour on `conn`.
    pub fn new(conn: &Connection) -> Self {
        // A connection is handed over connected; its events say what happens next.
        let link = Link { events: conn.events(), up: true };
        CelineBroker {
            conn: conn.clone(),
            counters: Arc::default(),
            link: Arc::new(std::sync::Mutex::new(link)),
        }
    }

    /// The connection underneath.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Publishes `payload` (a JSON object) to `topic`, enriched as CELINE does: `created` and
    /// (when given) `correlation_id` are added, never overwriting keys the payload has.
    pub async fn publish(
        &self,
        topic: &str,
        payload: &impl Serialize,
        options: PublishOptions,
    ) -> Result<()> {
        let result = self.try_publish(topic, payload, options).await;
        let counter = if result.is_ok() { &self.counters.published } else { &self.counters.errors };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }

    async fn try_publish(
        &self,
        topic: &str,
        payload: &impl Serialize,
        options: PublishOptions,
    ) -> Result<()> {
        let topic = Topic::new(topic).map_err(|e| CelineError::Busbar(e.into()))?;
        let mut map = match serde_json::to_value(payload) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err(CelineError::NotAnObject { topic: topic.as_str().to_owned() }),
            Err(e) => {
                return Err(CelineError::Serialize {
                    topic: topic.as_str().to_owned(),
                    reason: e.to_string(),
                });
            }
        };
        enrich(&mut map, options.created, options.correlation_id);
        let bytes = serde_json::to_vec(&map).map_err(|e| CelineError::Serialize {
            topic: topic.as_str().to_owned(),
            reason: e.to_string(),
        })?;
        let mut message = Message::new(topic, bytes);
        message.qos = options.qos;
        message.retain = options.retain;
        Ok(self.conn.publish(message).await?)
    }

    /// Publishes an event, to `topic` or to the topic CELINE derives from it
    /// ([`DtEvent::derived_topic`]); its timestamp becomes `created`, its correlation id
    /// `correlation_id`.
    pub async fn publish_event<T: Serialize>(
        &self,
        event: &DtEvent<T>,
        topic: Option<&str>,
    ) -> Result<()> {
        let topic = topic.map_or_else(|| event.derived_topic(), str::to_owned);
        let options = PublishOptions {
            correlation_id: event.correlation_id.clone(),
            created: Some(event.timestamp.clone()),
            ..PublishOptions::default()
        };
        self.publish(&topic, event, options).await
    }

    /// Subscribes to `filters` (MQTT wildcards) at least once, as CELINE's `subscribe` does.
    pub async fn subscribe(&self, filters: &[&str]) -> Result<CelineSubscription> {
        let mut subscriptions = Vec::with_capacity(filters.len());
        for filter in filters {
            let filter = TopicFilter::new(filter).map_err(|e| CelineError::Busbar(e.into()))?;
            let options = SubscribeOptions::from(filter).qos(QoS::AtLeastOnce);
            subscriptions.push(self.conn.subscribe_with(options).await?);
        }
        let id = self.counters.next_subscription.fetch_add(1, Ordering::Relaxed) + 1;
        let topics = filters.iter().map(|f| (*f).to_owned()).collect();
        self.counters.subscriptions().insert(id, topics);
        Ok(CelineSubscription {
            inner: futures_util::stream::select_all(subscriptions),
            counters: self.counters.clone(),
            id,
        })
    }

    /// The counters.
    pub fn stats(&self) -> CelineStats {
        let c = &self.counters;
        let subscriptions: Vec<SubscriptionStats> = c
            .subscriptions()
            .iter()
            .map(|(id, topics)| SubscriptionStats {
                id: format!("sub-{id}"),
                topics: topics.clone(),
            })
            .collect();
        CelineStats {
            connected: self.link.lock().unwrap_or_else(|p| p.into_inner()).up(),
            publish_count: c.published.load(Ordering::Relaxed),
            receive_count: c.received.load(Ordering::Relaxed),
            error_count: c.errors.load(Ordering::Relaxed),
            subscription_count: subscriptions.len() as u64,
            subscriptions,
        }
    }
}

/// Adds `created` and `correlation_id` where the payload has none.
fn enrich(map: &mut Map<String, Value>, created: Option<String>, correlation: Option<String>) {
    map.entry("created").or_insert_with(|| Value::from(created.unwrap_or_else(crate::now)));
    if let Some(id) = correlation {
        map.entry("correlation_id").or_insert(Value::from(id));
    }
}

/// Messages for one [`CelineBroker::subscribe`] call, from all its filters. Dropping it
/// unsubscribes.
pub struct CelineSubscription {
    inner: futures_util::stream::SelectAll<Subscription>,
    counters: Arc<Counters>,
    id: u64,
}

impl Drop for CelineSubscription {
    fn drop(&mut self) {
        self.counters.subscriptions().remove(&self.id);
    }
}

impl CelineSubscription {
    /// The next message; `None` once the connection is closed.
    pub async fn recv(&mut self) -> Option<Received> {
        use futures_util::StreamExt;
        let message = self.inner.next().await?;
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        Some(received(message))
    }
}

/// A message as CELINE hands it over: JSON parsed, anything else as `{"_raw": text}`.
fn received(message: Message) -> Received {
    let raw = message.payload.to_bytes().unwrap_or_default();
    let payload = match serde_json::from_slice::<Value>(&raw) {
        Ok(v) => v,
        Err(_) => {
            let mut map = Map::new();
            map.insert("_raw".into(), Value::from(String::from_utf8_lossy(&raw).into_owned()));
            Value::Object(map)
        }
    };
    Received { topic: message.topic, payload, raw, qos: message.qos.unwrap_or(QoS::AtMostOnce) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enrichment_never_overwrites() {
        let mut map = Map::new();
        map.insert("v".into(), Value::from(1));
        map.insert("created".into(), Value::from("mine"));
        enrich(&mut map, Some("then".into()), Some("c-1".into()));
        assert_eq!(
            Value::Object(map),
            serde_json::json!({"v": 1, "created": "mine", "correlation_id": "c-1"})
        );
        let mut map = Map::new();
        enrich(&mut map, None, None);
        assert!(map["created"].as_str().is_some_and(|c| c.ends_with("+00:00")));
        assert!(!map.contains_key("correlation_id"));
    }

    #[tokio::test]
    async fn stats_list_subscriptions_and_follow_the_connection() {
        let bus = busbar_mem::MemBus::new();
        let conn = bus.connect(busbar_core::ConnectOptions::new());
        let broker = CelineBroker::new(&conn);
        let sub = broker.subscribe(&["echo/+", "dt/#"]).await.expect("subscribe");
        let stats = broker.stats();
        assert!(stats.connected);
        assert_eq!(stats.subscription_count, 1);
        assert_eq!(
            stats.subscriptions,
            [SubscriptionStats {
                id: "sub-1".into(),
                topics: vec!["echo/+".into(), "dt/#".into()]
            }]
        );
        drop(sub);
        assert_eq!(broker.stats().subscription_count, 0);
        // The connection cut as by a crash: the next stats say so.
        assert!(bus.disconnect(conn.client_id()));
        assert!(!broker.stats().connected);
    }

    #[test]
    fn non_json_arrives_raw() {
        let topic = Topic::new("celine/dt/echo/a").expect("topic");
        let r = received(Message::new(topic.clone(), &b"not json \xff"[..]));
        assert_eq!(r.payload, serde_json::json!({"_raw": "not json \u{fffd}"}));
        let r = received(Message::new(topic, &br#"{"v":1}"#[..]));
        assert_eq!(r.payload, serde_json::json!({"v": 1}));
    }
}
