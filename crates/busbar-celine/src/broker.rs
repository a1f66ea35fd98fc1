//! Publishing and subscribing as CELINE's `MqttBroker` does, on a busbar connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use busbar_core::{
    Connection, ConnectionEvent, Message, QoS, SubscribeOptions, Subscription, Topic, TopicFilter,
};
use futures_util::stream::{AbortHandle, Abortable, SelectAll};
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

/// One message as a CELINE handler receives it (CELINE's `ReceivedMessage`).
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
    /// The message's id: a digital-twin event's `id` (busbar does not hand out the MQTT
    /// packet identifier CELINE's client reports, which the broker reuses); `None` for
    /// other payloads.
    pub message_id: Option<String>,
    /// When it was received, ISO-8601 in UTC.
    pub timestamp: String,
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

/// A subscription as the broker lists it: its filters, and the handle that ends it.
struct Listed {
    topics: Vec<String>,
    end: AbortHandle,
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    received: AtomicU64,
    errors: AtomicU64,
    next_subscription: AtomicU64,
    subscriptions: std::sync::Mutex<std::collections::BTreeMap<u64, Listed>>,
}

impl Counters {
    fn subscriptions(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<u64, Listed>> {
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
    /// `correlation_id`. At least once, not retained: see
    /// [`publish_event_with`](Self::publish_event_with).
    pub async fn publish_event<T: Serialize>(
        &self,
        event: &DtEvent<T>,
        topic: Option<&str>,
    ) -> Result<()> {
        self.publish_event_with(event, topic, PublishOptions::default()).await
    }

    /// [`publish_event`](Self::publish_event) with a QoS and the retain flag of `options`
    /// (CELINE's `BrokerMessage` fields); the event gives `created` and `correlation_id`.
    pub async fn publish_event_with<T: Serialize>(
        &self,
        event: &DtEvent<T>,
        topic: Option<&str>,
        options: PublishOptions,
    ) -> Result<()> {
        let topic = topic.map_or_else(|| event.derived_topic(), str::to_owned);
        let options = PublishOptions {
            correlation_id: event.correlation_id.clone(),
            created: Some(event.timestamp.clone()),
            ..options
        };
        self.publish(&topic, event, options).await
    }

    /// Subscribes to `filters` (MQTT wildcards) at least once, as CELINE's `subscribe` does
    /// by default.
    pub async fn subscribe(&self, filters: &[&str]) -> Result<CelineSubscription> {
        self.subscribe_with_qos(filters, QoS::AtLeastOnce).await
    }

    /// Subscribes to `filters` at `qos` (CELINE's `subscribe(topics, handler, qos)`). The
    /// subscription's [`id`](CelineSubscription::id) is what
    /// [`unsubscribe`](Self::unsubscribe) takes. A QoS the transport cannot give is
    /// refused.
    pub async fn subscribe_with_qos(
        &self,
        filters: &[&str],
        qos: QoS,
    ) -> Result<CelineSubscription> {
        let mut subscriptions = Vec::with_capacity(filters.len());
        for filter in filters {
            let filter = TopicFilter::new(filter).map_err(|e| CelineError::Busbar(e.into()))?;
            let options = SubscribeOptions::from(filter).qos(qos);
            subscriptions.push(self.conn.subscribe_with(options).await?);
        }
        let id = self.counters.next_subscription.fetch_add(1, Ordering::Relaxed) + 1;
        let topics = filters.iter().map(|f| (*f).to_owned()).collect();
        let (inner, end) =
            futures_util::stream::abortable(futures_util::stream::select_all(subscriptions));
        self.counters.subscriptions().insert(id, Listed { topics, end });
        Ok(CelineSubscription { inner: Some(inner), counters: self.counters.clone(), id })
    }

    /// Ends the subscription `id` (`sub-<n>`, as [`CelineSubscription::id`] says): its
    /// `recv` returns `None` from now on, and its filters are unsubscribed at the broker
    /// unless another subscription holds them. `false` for an id that names no open
    /// subscription, as CELINE's `unsubscribe` answers.
    pub fn unsubscribe(&self, id: &str) -> bool {
        let Some(n) = id.strip_prefix("sub-").and_then(|n| n.parse::<u64>().ok()) else {
            return false;
        };
        match self.counters.subscriptions().remove(&n) {
            Some(listed) => {
                listed.end.abort();
                true
            }
            None => false,
        }
    }

    /// The counters.
    pub fn stats(&self) -> CelineStats {
        let c = &self.counters;
        let subscriptions: Vec<SubscriptionStats> = c
            .subscriptions()
            .iter()
            .map(|(id, listed)| SubscriptionStats {
                id: format!("sub-{id}"),
                topics: listed.topics.clone(),
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
/// unsubscribes, and so does [`CelineBroker::unsubscribe`] with its id.
pub struct CelineSubscription {
    /// `None` once it ended (its broker subscriptions released).
    inner: Option<Abortable<SelectAll<Subscription>>>,
    counters: Arc<Counters>,
    id: u64,
}

impl Drop for CelineSubscription {
    fn drop(&mut self) {
        self.counters.subscriptions().remove(&self.id);
    }
}

impl CelineSubscription {
    /// Its id, `sub-<n>` (CELINE's `SubscribeResult.subscription_id`).
    pub fn id(&self) -> String {
        format!("sub-{}", self.id)
    }

    /// The next message; `None` once the connection is closed or the subscription was
    /// ended with [`CelineBroker::unsubscribe`].
    pub async fn recv(&mut self) -> Option<Received> {
        use futures_util::StreamExt;
        let next = match self.inner.as_mut() {
            Some(inner) => inner.next().await,
            None => None,
        };
        let Some(message) = next else {
            // Ended: the broker subscriptions go now, not when this value is dropped.
            self.inner = None;
            return None;
        };
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
    // An event's id (`@type` marks one, as the digital twin reads them).
    let message_id =
        payload.get("@type").and(payload.get("id")).and_then(Value::as_str).map(str::to_owned);
    Received {
        topic: message.topic,
        payload,
        raw,
        qos: message.qos.unwrap_or(QoS::AtMostOnce),
        message_id,
        timestamp: crate::now(),
    }
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
        assert_eq!(sub.id(), "sub-1");
        drop(sub);
        assert_eq!(broker.stats().subscription_count, 0);
        // The connection cut as by a crash: the next stats say so.
        assert!(bus.disconnect(conn.client_id()));
        assert!(!broker.stats().connected);
    }

    #[tokio::test]
    async fn unsubscribe_ends_a_subscription_by_its_id() {
        let bus = busbar_mem::MemBus::new();
        let conn = bus.connect(busbar_core::ConnectOptions::new());
        let broker = CelineBroker::new(&conn);
        let mut kept = broker.subscribe(&["dt/#"]).await.expect("subscribe");
        let mut ended =
            broker.subscribe_with_qos(&["dt/#"], QoS::AtMostOnce).await.expect("subscribe");
        assert!(!broker.unsubscribe("sub-99"), "no such subscription");
        assert!(!broker.unsubscribe("nonsense"));
        assert!(broker.unsubscribe(&ended.id()));
        assert!(!broker.unsubscribe(&ended.id()), "once");
        assert!(ended.recv().await.is_none(), "an ended subscription delivers nothing");
        assert_eq!(broker.stats().subscription_count, 1);
        // The other subscription to the same filter still gets its messages.
        let event = DtEvent::new("dt.x.y", crate::EventSource::domain("d"), serde_json::json!({}));
        let options = PublishOptions { qos: Some(QoS::AtMostOnce), ..PublishOptions::default() };
        broker.publish_event_with(&event, Some("dt/x"), options).await.expect("publish");
        let got = kept.recv().await.expect("delivered");
        assert_eq!(got.message_id.as_deref(), Some(event.id.as_str()), "an event's id");
        assert!(got.timestamp.ends_with("+00:00"), "{}", got.timestamp);
    }

    #[test]
    fn non_json_arrives_raw() {
        let topic = Topic::new("celine/dt/echo/a").expect("topic");
        let r = received(Message::new(topic.clone(), &b"not json \xff"[..]));
        assert_eq!(r.payload, serde_json::json!({"_raw": "not json \u{fffd}"}));
        let r = received(Message::new(topic, &br#"{"v":1,"id":"x"}"#[..]));
        assert_eq!(r.payload, serde_json::json!({"v": 1, "id": "x"}));
        assert_eq!(r.message_id, None, "not an event");
    }
}
