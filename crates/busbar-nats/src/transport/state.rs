//! What every part of the NATS transport shares: one connection's state. The subscribe, send
//! and connect rooms all read it without reaching into each other; it holds the parts that
//! know nothing of it (routes, the reply inbox, the sync point, the event sink).

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use busbar_core::error::SubscribeError;
use busbar_core::topic::{Topic, nats_subject};
use busbar_core::transport::ConnectionEvent;
use busbar_transport_kit::{Inbox, Lifecycle, Meter};
use tokio::sync::OnceCell;

use super::events::EventSink;
use super::pump::lock;
use super::replies::Replies;
use super::routes::{Route, RouteKey};
use super::sync::SyncPoint;
use crate::settings::Settings;

/// One connection's state.
pub(super) struct Shared {
    pub(super) client: async_nats::Client,
    pub(super) client_id: String,
    pub(super) settings: Settings,
    pub(super) sink: Arc<EventSink>,
    pub(super) meter: Meter,
    pub(super) routes: Mutex<HashMap<RouteKey, Arc<Route>>>,
    pub(super) next_id: AtomicU64,
    pub(super) life: Lifecycle,
    pub(super) sync: Arc<SyncPoint>,
    /// Requests waiting for replies on the reply inbox.
    pub(super) inbox: Arc<Inbox>,
    /// The reply inbox subscription, made on the first request.
    pub(super) replies: OnceCell<Arc<Replies>>,
    /// The subject of the topic published last: publishers usually repeat their topic, and
    /// this spares the mapping and its allocation.
    pub(super) last_subject: Mutex<Option<(Topic, async_nats::Subject)>>,
    /// Acknowledgements (and deliveries given back) on their way to the server.
    pub(super) acks: Arc<busbar_transport_kit::AcksInFlight>,
    /// The durable subscriptions' deliveries not yet acknowledged, given back on close.
    pub(super) durables: Mutex<Vec<std::sync::Weak<super::durable::Outstanding>>>,
    /// The subjects durable subscriptions keep: publishes to them are confirmed by JetStream.
    pub(super) kept: Arc<super::kept::KeptSubjects>,
    /// JetStream, for those confirmed publishes.
    pub(super) js: async_nats::jetstream::Context,
}

impl Shared {
    /// Returns once the server has handled everything this connection sent before.
    pub(super) async fn sync(&self) -> Result<(), SubscribeError> {
        self.sync.round_trip(&self.client, &self.settings.shown).await
    }

    /// The server this connection is on, as `host:port`, from what the server said of
    /// itself. A server listening on every interface names none; then the port is matched
    /// against the servers given.
    pub(super) fn server_in_use(&self) -> String {
        let info = self.client.server_info();
        let unspecified = info.host.is_empty()
            || info.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_unspecified());
        if !unspecified {
            return busbar_transport_kit::Server { host: info.host, port: info.port }.to_string();
        }
        match self.settings.servers.iter().find(|s| s.port == info.port) {
            Some(given) => given.to_string(),
            None => format!("{} (port {})", info.server_name, info.port),
        }
    }

    /// After a reconnect: announces `Reconnected` once the re-subscriptions are in place at
    /// the server.
    pub(super) fn reconnected(self: Arc<Self>) {
        tokio::spawn(async move {
            if let Err(e) = self.sync().await {
                tracing::debug!(error = %e, "no sync after reconnecting");
            }
            if self.life.is_open() {
                self.meter.announce(ConnectionEvent::Reconnected { server: self.server_in_use() });
            }
        });
    }

    /// The NATS subject for `topic`.
    pub(super) fn subject(
        &self,
        topic: &Topic,
    ) -> Result<async_nats::Subject, busbar_core::TopicError> {
        let mut last = lock(&self.last_subject);
        if let Some((t, subject)) = &*last
            && t == topic
        {
            return Ok(subject.clone());
        }
        let subject = async_nats::Subject::from(nats_subject(topic)?);
        *last = Some((topic.clone(), subject.clone()));
        Ok(subject)
    }
}
