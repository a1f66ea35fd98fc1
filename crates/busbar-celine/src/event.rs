//! The digital twin's event envelope (`DTEvent`), and how arriving JSON becomes an event.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The `@context` CELINE events carry unless they say otherwise.
pub const DEFAULT_CONTEXT: &str = "https://celine-project.eu/contexts/dt-event.jsonld";

/// Where an event comes from. Read in the SDK's shape (`domain`, `entity_id`, `handler`,
/// `version`) and in the one CELINE's documentation shows (`app_key`, `app_version`,
/// `module`, taken as `domain`, `version` and `handler`); written in the SDK's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventSource {
    /// The domain that emitted it, e.g. `ev-charging`.
    #[serde(alias = "app_key")]
    pub domain: String,
    /// The entity it is about.
    #[serde(default)]
    pub entity_id: Option<String>,
    /// The handler that emitted it.
    #[serde(default, alias = "module")]
    pub handler: Option<String>,
    /// The emitter's version (`unknown` unless set).
    #[serde(default = "unknown", alias = "app_version")]
    pub version: String,
}

fn unknown() -> String {
    "unknown".into()
}

impl EventSource {
    /// A source for `domain`, nothing else known.
    pub fn domain(domain: impl Into<String>) -> Self {
        EventSource { domain: domain.into(), entity_id: None, handler: None, version: unknown() }
    }
}

/// A digital-twin event as CELINE serializes it: `@type`, `@context`, `id`, `source`,
/// `timestamp`, `payload`, `metadata`, and `correlation_id` only when set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DtEvent<T = Value> {
    /// The event type, e.g. `dt.app.execution-completed`.
    #[serde(rename = "@type")]
    pub event_type: String,
    /// The JSON-LD context: a URL or an object.
    #[serde(rename = "@context", default = "default_context")]
    pub context: Value,
    /// A UUID.
    pub id: String,
    /// Who emitted it.
    pub source: EventSource,
    /// When, in ISO-8601.
    pub timestamp: String,
    /// The event's data.
    pub payload: T,
    /// Anything else.
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// Ties the event to a request or a chain of events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

fn default_context() -> Value {
    Value::from(DEFAULT_CONTEXT)
}

impl<T> DtEvent<T> {
    /// A new event of `event_type` from `source`, with a fresh id and the time now.
    pub fn new(event_type: impl Into<String>, source: EventSource, payload: T) -> Self {
        DtEvent {
            event_type: event_type.into(),
            context: default_context(),
            id: uuid::Uuid::new_v4().to_string(),
            source,
            timestamp: crate::now(),
            payload,
            metadata: Map::new(),
            correlation_id: None,
        }
    }

    /// Sets the correlation id.
    pub fn correlated(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }
}

impl<T: Serialize> DtEvent<T> {
    /// The topic CELINE's `publish_event` derives when none is given:
    /// `dt/<type without "dt.", dots as slashes>/<payload.community_id or "unknown">`, or
    /// `dt/events/unknown` for an event without a type.
    pub fn derived_topic(&self) -> String {
        if self.event_type.is_empty() {
            return "dt/events/unknown".into();
        }
        let kind = self.event_type.replacen("dt.", "", 1).replace('.', "/");
        let community = serde_json::to_value(&self.payload)
            .ok()
            .and_then(|p| p.get("community_id").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| "unknown".into());
        format!("dt/{kind}/{community}")
    }
}

/// What a subscription knows about the events it receives, for JSON that is not an event.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionInfo {
    /// The subscription's id, recorded in wrapped events' metadata.
    pub subscription_id: String,
    /// The event type to give wrapped JSON.
    pub event_type: Option<String>,
    /// The fallback for `event_type`.
    pub event_name: Option<String>,
    /// The source domain for events that name none.
    pub source: String,
}

/// Reads arriving JSON as the digital twin does: an object with `@type` (or `event_type`)
/// is an event, its missing `source` taken from `info` and its missing `payload` empty; any
/// other JSON becomes the payload of a new event whose type is the subscription's
/// `event_type`, else its `event_name`, else the topic.
pub fn to_event(topic: &str, json: Value, info: &SubscriptionInfo) -> DtEvent<Value> {
    if let Value::Object(mut map) = json.clone()
        && (map.contains_key("@type") || map.contains_key("event_type"))
    {
        if !map.contains_key("@type")
            && let Some(t) = map.remove("event_type")
        {
            map.insert("@type".into(), t);
        }
        if let Some(c) = map.remove("context") {
            map.entry("@context").or_insert(c);
        }
        map.entry("source").or_insert_with(|| {
            serde_json::to_value(EventSource::domain(&info.source)).unwrap_or_default()
        });
        map.entry("payload").or_insert_with(|| Value::Object(Map::new()));
        map.entry("id").or_insert_with(|| Value::from(uuid::Uuid::new_v4().to_string()));
        map.entry("timestamp").or_insert_with(|| Value::from(crate::now()));
        if let Ok(event) = serde_json::from_value::<DtEvent<Value>>(Value::Object(map)) {
            return event;
        }
    }
    let event_type = info
        .event_type
        .clone()
        .or_else(|| info.event_name.clone())
        .unwrap_or_else(|| topic.to_owned());
    let mut event = DtEvent::new(event_type, EventSource::domain(&info.source), json);
    event.metadata.insert("subscription_id".into(), Value::from(info.subscription_id.clone()));
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_in_celines_shape() {
        let mut source = EventSource::domain("ev-charging");
        source.entity_id = Some("rec-folgaria".into());
        let event = DtEvent::new(
            "dt.ev-charging.readiness-computed",
            source,
            serde_json::json!({"community_id": "rec-folgaria", "ready": true}),
        );
        let json = serde_json::to_value(&event).expect("json");
        assert_eq!(json["@type"], "dt.ev-charging.readiness-computed");
        assert_eq!(json["@context"], DEFAULT_CONTEXT);
        assert_eq!(json["source"]["version"], "unknown");
        assert_eq!(json["source"]["handler"], Value::Null);
        assert_eq!(json["metadata"], serde_json::json!({}));
        assert!(json.get("correlation_id").is_none(), "absent unless set");
        assert_eq!(json["id"].as_str().map(str::len), Some(36));
        assert_eq!(event.derived_topic(), "dt/ev-charging/readiness-computed/rec-folgaria");
        let json = serde_json::to_value(event.correlated("c-1")).expect("json");
        assert_eq!(json["correlation_id"], "c-1");

        let untyped = DtEvent::new("", EventSource::domain("x"), serde_json::json!({}));
        assert_eq!(untyped.derived_topic(), "dt/events/unknown");
        let no_community = DtEvent::new("dt.community.updated", EventSource::domain("x"), 1);
        assert_eq!(no_community.derived_topic(), "dt/community/updated/unknown");
    }

    #[test]
    fn arriving_json_becomes_an_event() {
        let info = SubscriptionInfo {
            subscription_id: "sub-1".into(),
            event_type: None,
            event_name: Some("pipeline-run".into()),
            source: "pipelines".into(),
        };
        let typed = serde_json::json!({"@type": "dt.pipeline.finished", "id": "e-1",
            "timestamp": "2026-11-23T07:16:45.985532+00:00", "payload": {"ok": true}});
        let e = to_event("celine/pipelines/runs/7", typed, &info);
        assert_eq!((e.event_type.as_str(), e.id.as_str()), ("dt.pipeline.finished", "e-1"));
        assert_eq!(e.source.domain, "pipelines");

        let legacy = serde_json::json!({"event_type": "dt.x", "source": {"domain": "d"}});
        let e = to_event("t", legacy, &info);
        assert_eq!((e.event_type.as_str(), e.source.domain.as_str()), ("dt.x", "d"));
        assert_eq!(e.payload, serde_json::json!({}));

        // The source as CELINE's documentation shows it.
        let documented = serde_json::json!({"@type": "dt.app.execution-completed",
            "source": {"app_key": "ev-charging", "app_version": "1.2.0", "module": "runner"},
            "payload": {"ok": true}});
        let e = to_event("t", documented, &info);
        assert_eq!(e.event_type, "dt.app.execution-completed", "an event, not wrapped JSON");
        assert_eq!(e.source.domain, "ev-charging");
        assert_eq!(e.source.version, "1.2.0");
        assert_eq!(e.source.handler.as_deref(), Some("runner"));

        let raw = serde_json::json!({"namespace": "n", "status": "done"});
        let e = to_event("celine/pipelines/runs/7", raw.clone(), &info);
        assert_eq!(e.event_type, "pipeline-run");
        assert_eq!(e.payload, raw);
        assert_eq!(e.metadata["subscription_id"], "sub-1");
        let info = SubscriptionInfo { event_name: None, ..info };
        assert_eq!(to_event("a/b", raw, &info).event_type, "a/b");
    }
}
