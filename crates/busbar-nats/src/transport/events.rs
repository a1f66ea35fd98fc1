//! async-nats' events, turned into [`ConnectionEvent`]s and counters.
//!
//! The sink is made before the client exists (async-nats takes its callback in the connect
//! options); what needs the connection, the sync round trip before `Reconnected`, is handed
//! in once it does ([`EventSink::on_reconnect`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use busbar_core::transport::ConnectionEvent;
use busbar_transport_kit::Meter;
use tokio::time::Instant;

use super::pump::lock;

/// A subscription that keeps overflowing in async-nats' buffer is reported at most this often.
const SLOW_EVENT_INTERVAL: Duration = Duration::from_secs(1);

/// Slow-consumer bookkeeping for one NATS subscription.
struct SidInfo {
    filter: String,
    last_event: Option<Instant>,
}

/// What the async-nats event callback needs.
pub(super) struct EventSink {
    meter: Meter,
    sids: Mutex<HashMap<u64, SidInfo>>,
    connected_once: AtomicBool,
    /// Called at every reconnect: confirms the re-subscriptions, then announces
    /// `Reconnected`.
    on_reconnect: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl EventSink {
    pub(super) fn new(meter: &Meter) -> Self {
        EventSink {
            meter: meter.clone(),
            sids: Mutex::default(),
            connected_once: AtomicBool::new(false),
            on_reconnect: OnceLock::new(),
        }
    }

    /// Sets what a reconnect does (once).
    pub(super) fn on_reconnect(&self, f: impl Fn() + Send + Sync + 'static) {
        let _ = self.on_reconnect.set(Box::new(f));
    }

    /// Attributes async-nats' slow-consumer reports for subscription `sid` to `filter`.
    pub(super) fn watch(&self, sid: u64, filter: &str) {
        lock(&self.sids).insert(sid, SidInfo { filter: filter.to_owned(), last_event: None });
    }

    /// Forgets the subscriptions `sids` (they are gone).
    pub(super) fn forget(&self, sids: &[u64]) {
        let mut known = lock(&self.sids);
        for sid in sids {
            known.remove(sid);
        }
    }

    pub(super) fn on_event(&self, event: async_nats::Event) {
        use async_nats::Event as E;
        match event {
            E::Connected => {
                // The first is announced by the transport once its client exists (which
                // names the server).
                if !self.connected_once.swap(true, Ordering::AcqRel) {
                    return;
                }
                // Tell the user only once the re-subscriptions are in place at the server.
                if let Some(reconnected) = self.on_reconnect.get() {
                    reconnected();
                }
            }
            E::Disconnected => {
                self.meter.announce(ConnectionEvent::Disconnected {
                    reason: "the connection to the NATS server was lost".into(),
                });
            }
            E::SlowConsumer(sid) => {
                // async-nats dropped a message because its buffer for this subscription was
                // full (the route waits on a full `Block` queue).
                let now = Instant::now();
                let mut sids = lock(&self.sids);
                let report = match sids.get_mut(&sid) {
                    Some(info)
                        if info
                            .last_event
                            .is_none_or(|t| now.duration_since(t) >= SLOW_EVENT_INTERVAL) =>
                    {
                        info.last_event = Some(now);
                        Some(info.filter.clone())
                    }
                    // Reported lately, or not attributed to a filter (see `sid_of`): counted
                    // only.
                    _ => None,
                };
                drop(sids);
                match report {
                    Some(filter) => self.meter.dropped_upstream(&filter, true),
                    None => self.meter.dropped_upstream("", false),
                }
            }
            E::ServerError(e) => tracing::warn!(error = %e, "NATS server error"),
            E::ClientError(e) => tracing::warn!(error = %e, "NATS client error"),
            E::LameDuckMode => tracing::info!("the NATS server is entering lame duck mode"),
            E::Draining | E::Closed => {}
        }
    }
}
