//! Filters in code: what crosses the gateway and in what form, as CSTBox lets applications
//! subclass its `InboundFilter` and `OutboundFilter`. The regex rules of the configuration
//! ([`OutboundRules`], [`InboundRules`]) are one implementation of each; an application
//! gives its own to [`Gateway::start_with_filters`](crate::Gateway::start_with_filters).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::event::BusEvent;
use crate::inbound::{InboundRules, Produced};
use crate::outbound::{OutboundRules, Routed};

/// From the event bus to the broker, for one event channel: where an event goes and with
/// what payload.
pub trait OutboundFilter: Send + Sync {
    /// The MQTT topic (a CSTBox topic: a leading `/` is allowed) and JSON payload `event`
    /// goes out as, or `None` to keep it in (counted as unrouted).
    fn route(&self, event: &BusEvent) -> Option<Routed>;
}

/// From the broker to the event bus: which topics are listened to, and the events (each
/// with its channel) a message becomes.
pub trait InboundFilter: Send + Sync {
    /// The MQTT topics or patterns to subscribe to (CSTBox topics: a leading `/` allowed).
    fn subscriptions(&self) -> Vec<String>;

    /// The events a message on `topic` (with its leading `/`, as CSTBox topics are written)
    /// produces, stamped `timestamp`; none keeps it out.
    fn produce(&self, topic: &str, payload: &[u8], timestamp: Value) -> Produced;
}

impl OutboundFilter for OutboundRules {
    fn route(&self, event: &BusEvent) -> Option<Routed> {
        OutboundRules::route(self, event)
    }
}

impl InboundFilter for InboundRules {
    fn subscriptions(&self) -> Vec<String> {
        self.filters.clone()
    }

    fn produce(&self, topic: &str, payload: &[u8], timestamp: Value) -> Produced {
        InboundRules::produce(self, topic, payload, timestamp)
    }
}

/// A gateway's filters: an outbound one per event channel, at most one inbound. CSTBox
/// refuses a gateway with none at all, and so does [`Gateway`](crate::Gateway).
#[derive(Clone, Default)]
pub struct Filters {
    /// By event channel (`sensor`, `control`, ...).
    pub outbound: BTreeMap<String, Arc<dyn OutboundFilter>>,
    /// MQTT to the bus.
    pub inbound: Option<Arc<dyn InboundFilter>>,
}

impl Filters {
    /// No filter yet.
    pub fn new() -> Filters {
        Filters::default()
    }

    /// Adds `filter` for the events of `channel`.
    pub fn outbound(
        mut self,
        channel: impl Into<String>,
        filter: impl OutboundFilter + 'static,
    ) -> Filters {
        self.outbound.insert(channel.into(), Arc::new(filter));
        self
    }

    /// Sets the inbound filter.
    pub fn inbound(mut self, filter: impl InboundFilter + 'static) -> Filters {
        self.inbound = Some(Arc::new(filter));
        self
    }

    /// Whether nothing would cross either way.
    pub fn is_empty(&self) -> bool {
        self.outbound.is_empty() && self.inbound.is_none()
    }
}
