//! The receive path: replies to this connection's requests, and every other message routed
//! to the local subscriptions it is for.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use busbar_core::message::Message;
use busbar_transport_kit::delivery::deliver_all;

use super::state::{Shared, lock};
use crate::protocol::{Incoming, Version};

impl Shared {
    /// Routes one incoming message (or counts the one that could not be read), then
    /// acknowledges it unless subscriptions acknowledging by receipt took it.
    pub(super) async fn dispatch(
        self: &Arc<Self>,
        received: Result<(Message, Vec<usize>), String>,
        incoming: Incoming,
    ) {
        let (message, mut ids) = match received {
            Ok(m) => m,
            Err(reason) => {
                self.meter.discard("a message busbar cannot represent", &reason);
                self.acknowledge(incoming);
                return;
            }
        };
        if message.topic == self.reply_topic {
            let correlation = message.correlation_id.clone();
            self.inbox.complete(correlation.as_deref(), message);
            self.acknowledge(incoming);
            return;
        }
        if message.is_expired() {
            self.meter.expired();
            self.acknowledge(incoming);
            return;
        }
        let routed = {
            let mut registry = lock(&self.registry);
            if ids.is_empty() {
                // MQTT 3.1.1: attribute a retained copy to the subscription just made.
                if message.retain {
                    let last = self.last_subacked.load(Ordering::Relaxed);
                    if registry.subs.get(&last).is_some_and(|s| s.filter.matches(&message.topic)) {
                        ids.push(last);
                    }
                } else {
                    self.last_subacked.store(0, Ordering::Relaxed);
                }
            }
            let persistent = self.settings.session_expiry.is_some();
            // Which messages can be the session's hand-over: on MQTT 5 those tagged with an
            // earlier connection's subscription identifiers; MQTT 3.1.1 tags nothing, so
            // there any message nothing here subscribed to yet may be one.
            let handed_over =
                persistent && (!ids.is_empty() || self.settings.version == Version::V311);
            let mut routed = registry.targets(&ids, &message);
            if routed.is_empty() && persistent && !ids.is_empty() {
                // Tagged by an earlier connection of this session: route by filter instead.
                routed = registry.targets(&[], &message);
            }
            if routed.is_empty() {
                // A persistent session hands over what the broker kept while we were away,
                // possibly before the application has subscribed again: keep it for them,
                // unacknowledged until a subscription takes it.
                if handed_over && !registry.for_removed_durable(&message) {
                    if let Some((_, oldest)) = registry.keep_orphan(message, incoming) {
                        self.meter.discard(
                            "a message the persistent session kept",
                            &"more arrived before a subscription than are kept; the oldest went",
                        );
                        self.acknowledge(oldest);
                    }
                    return;
                }
                tracing::debug!(topic = %message.topic, "message for no local subscription");
                drop(registry);
                self.acknowledge(incoming);
                return;
            }
            routed
        };
        // Waiting here (a full `Block` subscription) holds back reading from the socket:
        // backpressure reaches the broker.
        if routed.by_receipt.is_empty() {
            deliver_all(&routed.handed_over, message).await;
            self.acknowledge(incoming);
            return;
        }
        if !routed.handed_over.is_empty() {
            deliver_all(&routed.handed_over, message.clone()).await;
        }
        let receipts = self.receipts(incoming, routed.by_receipt.len());
        for (target, receipt) in routed.by_receipt.iter().zip(receipts) {
            target.deliver(message.clone().with_receipt(receipt)).await;
        }
    }
}
