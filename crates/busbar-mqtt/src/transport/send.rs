//! Sending: publishes (counted until the broker acknowledges them at QoS 1 and 2), and
//! requests on this connection's reply topic.

use std::sync::atomic::Ordering;
use std::time::Duration;

use busbar_core::error::{PublishError, RequestError};
use busbar_core::message::{Message, QoS};
use busbar_transport_kit::inbox;
use bytes::Bytes;

use super::state::Shared;

impl Shared {
    /// Hands `message` to rumqttc, counting it until the broker acknowledges it.
    async fn publish_tracked(&self, message: &Message) -> Result<(), PublishError> {
        let tracked = message.effective_qos(QoS::ExactlyOnce) != QoS::AtMostOnce;
        if tracked {
            self.unacked.fetch_add(1, Ordering::AcqRel);
        }
        let result = self.client.publish(message, self.max_packet.load(Ordering::Relaxed)).await;
        if result.is_err() && tracked {
            self.on_acked();
        }
        result
    }

    /// The broker acknowledged a publish (PUBACK, or PUBCOMP at QoS 2).
    pub(super) fn on_acked(&self) {
        let _ =
            self.unacked.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        self.acked.notify_waiters();
    }

    /// A publish the broker dropped the connection for, each time it was sent: it is not
    /// sent again. Counted as dropped and said loudly, as nobody waits for it any more.
    pub(super) fn give_up(&self, topic: &str) {
        let shown: String = topic.chars().take(120).collect();
        tracing::error!(
            topic = %shown,
            strikes = crate::protocol::MAX_STRIKES,
            "a publish was given up: the broker dropped the connection each time it was sent"
        );
        self.lost();
    }

    /// A publish the broker refused in its acknowledgement (MQTT 5).
    pub(super) fn refused(&self, reason: &str) {
        tracing::error!(%reason, "the broker refused a publish");
        self.lost();
    }

    /// A publish that will never reach the broker: counted, reported by `close`, and no
    /// longer waited for.
    fn lost(&self) {
        self.meter.publish_dropped();
        self.given_up.fetch_add(1, Ordering::AcqRel);
        self.on_acked();
    }

    /// Waits, up to `limit`, until every counted publish is acknowledged.
    pub(super) async fn all_acked(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.acked.notified();
            if self.unacked.load(Ordering::Acquire) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }

    /// Publishes `message`, waiting while rumqttc's request channel is full.
    pub(super) async fn send(&self, message: Message) -> Result<(), PublishError> {
        self.life.check()?;
        self.publish_tracked(&message).await?;
        self.meter.published();
        Ok(())
    }

    /// Sends `message` as a request on this connection's reply topic and waits for the
    /// reply, all under one deadline.
    pub(super) async fn request(
        &self,
        mut message: Message,
        timeout: Duration,
    ) -> Result<Message, RequestError> {
        self.life.check::<busbar_core::error::RequestErrorKind>()?;
        let topic = message.topic.clone();
        inbox::exchange(&self.meter, topic.as_str(), timeout, async {
            self.ensure_reply_subscription().await?;
            let mut pending = self.inbox.register(0);
            message.reply_to = Some(self.reply_topic.clone());
            message.correlation_id = Some(Bytes::copy_from_slice(pending.id().as_bytes()));
            self.send(message).await?;
            pending.reply().await
        })
        .await
    }
}
