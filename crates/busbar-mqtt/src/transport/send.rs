//! Sending: publishes (resolved when the broker acknowledges them at QoS 1 and 2, and
//! counted until then for `close`), and requests on this connection's reply topic.

use std::sync::atomic::Ordering;
use std::time::Duration;

use busbar_core::error::{PublishError, RequestError};
use busbar_core::message::Message;
use busbar_core::transport::Completion;
use busbar_transport_kit::inbox;
use bytes::Bytes;
use tokio::sync::oneshot;

use super::state::Shared;
use crate::protocol::{Confirm, Handed, Place, tracked};

/// The broker's answer to one publish, or `Closed` when the connection closed first.
async fn confirmation(rx: oneshot::Receiver<Result<(), PublishError>>) -> Result<(), PublishError> {
    rx.await.unwrap_or_else(|_| Err(PublishError::closed()))
}

impl Shared {
    /// Publishes `message` for a caller: resolves at once at QoS 0 once rumqttc has it, and
    /// at QoS 1 and 2 when the broker has it (PUBACK, or PUBREC at QoS 2) or refused it.
    /// The message goes to rumqttc when this is called, not when the future first runs, so
    /// that publishes made one after another keep their order however they are awaited.
    pub(super) fn publish(&self, message: Message) -> Completion<'_> {
        if let Err(e) = self.life.check() {
            return Completion::ready(Err(e));
        }
        let (confirm, confirmed) = if tracked(&message) {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let handed = self.count_while(&message, |s| {
            s.client.try_hand_off(&message, s.max_packet.load(Ordering::Relaxed), confirm)
        });
        match handed {
            Err(e) => Completion::ready(Err(e)),
            Ok(Handed::Done) => {
                self.meter.published();
                match confirmed {
                    None => Completion::ready(Ok(())),
                    Some(rx) => Completion::Pending(Box::pin(confirmation(rx))),
                }
            }
            Ok(Handed::Busy(confirm)) => {
                let place = self.client.place();
                Completion::Pending(Box::pin(async move {
                    self.hand_off(place, &message, confirm).await?;
                    match confirmed {
                        None => Ok(()),
                        Some(rx) => confirmation(rx).await,
                    }
                }))
            }
        }
    }

    /// Hands `message` to rumqttc in its turn, counting it until the broker acknowledges it.
    async fn hand_off(
        &self,
        place: Place,
        message: &Message,
        confirm: Confirm,
    ) -> Result<(), PublishError> {
        let limit = self.max_packet.load(Ordering::Relaxed);
        if tracked(message) {
            self.unacked.fetch_add(1, Ordering::AcqRel);
        }
        let result = self.client.hand_off(place, message, limit, confirm).await;
        match &result {
            Ok(()) => self.meter.published(),
            Err(_) if tracked(message) => self.on_acked(),
            Err(_) => {}
        }
        result
    }

    /// Runs `offer` with `message` counted as unacknowledged when it is QoS 1 or 2, and
    /// uncounted again unless it was queued.
    fn count_while(
        &self,
        message: &Message,
        offer: impl FnOnce(&Self) -> Result<Handed, PublishError>,
    ) -> Result<Handed, PublishError> {
        let counted = tracked(message);
        if counted {
            self.unacked.fetch_add(1, Ordering::AcqRel);
        }
        let handed = offer(self);
        if counted && !matches!(handed, Ok(Handed::Done)) {
            self.on_acked();
        }
        handed
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

    /// A publish the broker refused in its acknowledgement (MQTT 5). Logged at error
    /// only when no caller was waiting for it (a request, a forwarded message): a caller
    /// has the error already, and a second report of it would only be noise.
    pub(super) fn refused(&self, reason: &str, caller_told: bool) {
        if caller_told {
            tracing::debug!(%reason, "the broker refused a publish");
        } else {
            tracing::error!(%reason, "the broker refused a publish nobody waited for");
        }
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

    /// Sends `message` without waiting for the broker's acknowledgement (a request, or a
    /// message from a drop-policy queue): resolves once rumqttc has it. A refusal is still
    /// counted and reported by `close`.
    pub(super) async fn send(&self, message: Message) -> Result<(), PublishError> {
        self.life.check()?;
        let handed = self.count_while(&message, |s| {
            s.client.try_hand_off(&message, s.max_packet.load(Ordering::Relaxed), None)
        })?;
        match handed {
            Handed::Done => {
                self.meter.published();
                Ok(())
            }
            Handed::Busy(_) => {
                let place = self.client.place();
                self.hand_off(place, &message, None).await
            }
        }
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
