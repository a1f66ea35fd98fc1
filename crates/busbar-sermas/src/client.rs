//! Publishing and subscribing as SERMAS clients do.

use busbar_core::{Connection, Message, QoS, SubscribeOptions, Subscription, Topic};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{Result, SermasError};
use crate::template::{Params, TopicTemplate};

/// Who a client is, stamped on what it publishes (SERMAS's `SermasBaseDto`).
#[derive(Debug, Clone, Default)]
pub struct SermasContext {
    /// The application: `appId`, and the `:appId` of every topic.
    pub app_id: String,
    /// `clientId`.
    pub client_id: Option<String>,
    /// `userId`.
    pub user_id: Option<String>,
    /// `sessionId`; also what [`SermasSubscription::only_session`] keeps.
    pub session_id: Option<String>,
    /// `source`: the publishing module's id.
    pub source: Option<String>,
}

impl SermasContext {
    /// A context for `app_id`, nothing else known.
    pub fn app(app_id: impl Into<String>) -> Self {
        SermasContext { app_id: app_id.into(), ..SermasContext::default() }
    }

    /// Adds `appId`, `clientId`, `userId`, `sessionId`, `source` and `ts` where the payload
    /// has none of its own.
    pub fn stamp(&self, payload: &mut Map<String, Value>) {
        let mut put = |key: &str, value: Option<&String>| {
            if let Some(v) = value {
                payload.entry(key).or_insert_with(|| Value::from(v.clone()));
            }
        };
        put("appId", Some(&self.app_id));
        put("clientId", self.client_id.as_ref());
        put("userId", self.user_id.as_ref());
        put("sessionId", self.session_id.as_ref());
        put("source", self.source.as_ref());
        payload.entry("ts").or_insert_with(|| Value::from(now()));
    }
}

fn now() -> String {
    busbar_core::time::iso8601_millis(std::time::SystemTime::now())
}

/// A SERMAS client on a busbar connection: topics from templates, payloads stamped with the
/// client's context, QoS 1, and subscriptions that never deliver the connection's own
/// publishes (MQTT 5 noLocal).
#[derive(Clone)]
pub struct SermasClient {
    conn: Connection,
    context: SermasContext,
}

impl SermasClient {
    /// A client on `conn` (an MQTT 5 connection, for noLocal) as `context`.
    pub fn new(conn: &Connection, context: SermasContext) -> Self {
        SermasClient { conn: conn.clone(), context }
    }

    /// The context stamped on payloads.
    pub fn context(&self) -> &SermasContext {
        &self.context
    }

    /// The values for a template: `params` first, then what the payload gives, then the
    /// context's `appId`.
    fn params_for(&self, template: &TopicTemplate, params: &Params, payload: &Value) -> Params {
        let mut all = template.params_from(payload);
        all.extend(params.iter().map(|(k, v)| (k.clone(), v.clone())));
        all.entry("appId".to_owned()).or_insert_with(|| self.context.app_id.clone());
        all
    }

    /// Publishes `payload` (a JSON object) to `template` filled from `params`, the payload and
    /// the context; returns the topic it went to.
    pub async fn publish(
        &self,
        template: &str,
        params: &Params,
        payload: &impl Serialize,
    ) -> Result<Topic> {
        let template = TopicTemplate::new(template)?;
        let mut map = match serde_json::to_value(payload) {
            Ok(Value::Object(map)) => map,
            _ => return Err(SermasError::NotAnObject { topic: template.as_str().to_owned() }),
        };
        self.context.stamp(&mut map);
        let payload = Value::Object(map);
        let topic = template.fill(&self.params_for(&template, params, &payload))?;
        let bytes = serde_json::to_vec(&payload)
            .map_err(|_| SermasError::NotAnObject { topic: topic.as_str().to_owned() })?;
        self.conn.publish(Message::new(topic.clone(), bytes)).await?;
        Ok(topic)
    }

    /// Subscribes to `template`: `params` and the context's `appId` filled in, every other
    /// placeholder `+`. The connection's own publishes are never delivered (noLocal); on a
    /// connection without noLocal (MQTT 3.1.1, other brokers) this is refused with
    /// `Unsupported` rather than quietly delivering them.
    pub async fn subscribe(&self, template: &str, params: &Params) -> Result<SermasSubscription> {
        let template = TopicTemplate::new(template)?;
        let mut all = params.clone();
        all.entry("appId".to_owned()).or_insert_with(|| self.context.app_id.clone());
        let filter = template.filter(&all)?;
        let options = SubscribeOptions::from(filter).qos(QoS::AtLeastOnce).no_local(true);
        let sub = self.conn.subscribe_with(options).await?;
        Ok(SermasSubscription { sub, session: None })
    }

    /// Subscribes to `template` as a member of the queue group `group`: each message goes
    /// to one member of the group (an MQTT 5 shared subscription), so that instances of one
    /// module share the work. Not noLocal: MQTT 5 forbids it on shared subscriptions, and a
    /// member dropping what its own connection published would lose it for the whole
    /// group, so a member gets its share of everything, its own publishes included.
    pub async fn subscribe_in_group(
        &self,
        template: &str,
        params: &Params,
        group: &str,
    ) -> Result<SermasSubscription> {
        let template = TopicTemplate::new(template)?;
        let mut all = params.clone();
        all.entry("appId".to_owned()).or_insert_with(|| self.context.app_id.clone());
        let filter = template.filter(&all)?;
        let options = SubscribeOptions::from(filter).qos(QoS::AtLeastOnce).queue_group(group);
        let sub = self.conn.subscribe_with(options).await?;
        Ok(SermasSubscription { sub, session: None })
    }
}

/// One message as a SERMAS client receives it.
#[derive(Debug, Clone)]
pub struct Received {
    /// Its topic.
    pub topic: Topic,
    /// The JSON payload, with `appId` taken from an `app/<appId>/...` topic when it has none
    /// (as the SERMAS API does); `null` for a payload that is not JSON.
    pub payload: Value,
}

/// Messages of a [`SermasClient::subscribe`]; dropping it unsubscribes.
pub struct SermasSubscription {
    sub: Subscription,
    session: Option<String>,
}

impl SermasSubscription {
    /// Keeps only messages of session `id` (and those that name no session), as the SERMAS
    /// web toolkit does.
    pub fn only_session(mut self, id: impl Into<String>) -> Self {
        self.session = Some(id.into());
        self
    }

    /// The next message; `None` once the connection is closed.
    pub async fn recv(&mut self) -> Option<Received> {
        loop {
            let message = self.sub.recv().await?;
            let raw = message.payload.to_bytes().unwrap_or_default();
            let mut payload = serde_json::from_slice::<Value>(&raw).unwrap_or(Value::Null);
            if let (Value::Object(map), Some(app)) = (&mut payload, app_of(&message.topic)) {
                map.entry("appId").or_insert_with(|| Value::from(app));
            }
            let session = payload.get("sessionId").and_then(Value::as_str);
            if let (Some(wanted), Some(got)) = (&self.session, session)
                && wanted != got
            {
                continue;
            }
            return Some(Received { topic: message.topic, payload });
        }
    }
}

/// The `<appId>` of `app/<appId>/...`.
fn app_of(topic: &Topic) -> Option<String> {
    let mut levels = topic.as_str().split('/');
    (levels.next() == Some("app")).then(|| levels.next().map(str::to_owned)).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_context_never_overwrites() {
        let mut ctx = SermasContext::app("a1");
        ctx.client_id = Some("robot-1".into());
        let mut map = Map::new();
        map.insert("appId".into(), Value::from("mine"));
        ctx.stamp(&mut map);
        assert_eq!(map["appId"], "mine");
        assert_eq!(map["clientId"], "robot-1");
        assert!(!map.contains_key("sessionId"));
        assert!(map["ts"].as_str().is_some_and(|t| t.ends_with('Z')));
    }

    #[test]
    fn the_app_comes_from_the_topic() {
        let t = |s: &str| Topic::new(s).expect("topic");
        assert_eq!(app_of(&t("app/a1/detection/user")).as_deref(), Some("a1"));
        assert_eq!(app_of(&t("system/platform/module/changed/m")), None);
    }
}
