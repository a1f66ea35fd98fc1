//! Sending: publishes (confirmed by the broker at QoS 1, sent again on the next connection
//! when the confirm never came), and requests over RabbitMQ's direct reply-to.

use std::time::Duration;

use busbar_core::error::{PublishError, RequestError, RequestErrorKind};
use busbar_core::message::{Message, QoS};
use busbar_transport_kit::inbox;
use bytes::Bytes;
use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use lapin::{BasicProperties, Confirmation};

use super::failure::describe;
use super::order::{Held, Ticket};
use super::state::{Link, Shared};
use crate::convert;

/// Why a publish on one link failed.
enum PublishFailure {
    /// The link broke; the publish may be retried on the next one.
    Link(lapin::Error),
    /// The broker refused the message itself.
    Refused(PublishError),
}

impl Shared {
    /// What `message` goes out as: the exchange and routing key, and the payload bytes
    /// within the size limit.
    fn outgoing(
        &self,
        message: &Message,
    ) -> Result<(ShortString, ShortString, Bytes), PublishError> {
        let (exchange, key) = convert::target(&message.topic, &self.exchange)?;
        let payload = message.payload.to_bytes()?;
        if payload.len() > self.settings.max_payload {
            return Err(PublishError::too_large(payload.len(), self.settings.max_payload));
        }
        Ok((exchange, key, payload))
    }

    /// Publishes one message on `link`, awaiting the broker's confirm for QoS >= 1. A
    /// message for a named queue (the default exchange) is always confirmed and `mandatory`:
    /// when no such queue exists the broker returns it, and the caller hears so.
    ///
    /// `held` counts a confirmed message as unsettled on the link it was last written on
    /// (see [`super::order`]): it moves to this link as the message is written here, stays
    /// when this link breaks too, and is let go once the broker answered.
    #[allow(clippy::too_many_arguments)]
    async fn publish_on(
        &self,
        link: &Link,
        exchange: &ShortString,
        key: &ShortString,
        payload: &[u8],
        props: BasicProperties,
        qos: QoS,
        ticket: &mut Ticket,
        held: &mut Option<Held>,
    ) -> Result<(), PublishFailure> {
        // RabbitMQ delivers a message to a direct reply-to name (`amq.rabbitmq.reply-to.*`)
        // and still returns it NO_ROUTE when it is mandatory, since no queue routed it: so
        // replies go out without `mandatory` (a caller that has gone cannot be told apart).
        let direct_reply = key.as_str().starts_with(convert::DIRECT_REPLY_TO);
        let to_queue = exchange.as_str().is_empty() && !direct_reply;
        let confirmed = to_queue || qos != QoS::AtMostOnce;
        // A confirmed publish holds the confirm channel until its frames are queued: a
        // renewal (see `renew`) waits for that, so nothing written before it is overtaken.
        let lease = if confirmed { Some(link.confirm.lease().await) } else { None };
        let leased = lease.as_deref().cloned();
        let channel = leased.as_ref().unwrap_or(&link.plain);
        let options = BasicPublishOptions { mandatory: to_queue, ..BasicPublishOptions::default() };
        let mut written = std::pin::pin!(channel.basic_publish(
            exchange.clone(),
            key.clone(),
            options,
            payload,
            props
        ));
        if confirmed {
            // Counted here from now on, no longer on the link before (and still when the
            // write fails: it goes again, ahead of anything newer).
            *held = Some(link.unsettled.hold(ticket.seq));
        }
        // lapin takes the publish's delivery tag and queues its frames on the channel, in
        // order, when the future is first polled; only then does it wait for the write. So
        // the next publish may go once this one is queued: publishes are written in batches
        // instead of one io-loop round trip each. A failed write fails every publish queued
        // after it on the same connection too, and each goes again in its place.
        let queued = futures_util::poll!(written.as_mut());
        ticket.written();
        drop(lease);
        let confirm = match queued {
            std::task::Poll::Ready(outcome) => outcome,
            std::task::Poll::Pending => written.await,
        }
        .map_err(PublishFailure::Link)?;
        if !confirmed {
            return Ok(());
        }
        let answer = confirm.await.map_err(PublishFailure::Link)?;
        // Settled: nothing newer need wait for it any more.
        *held = None;
        match answer {
            // Only a `mandatory` publish can come back; lapin has been seen to attach a
            // return to the confirm of another publish on the channel, so others ignore it.
            Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_)) if to_queue => {
                Err(PublishFailure::Refused(PublishError::refused(format!(
                    "no queue named {} exists: the broker returned the message",
                    key.as_str()
                ))))
            }
            Confirmation::Ack(_) | Confirmation::NotRequested => Ok(()),
            Confirmation::Nack(_) => {
                link.confirm.renew_after_nack(&link.conn, channel).await;
                Err(PublishFailure::Refused(PublishError::refused(format!(
                    "the broker refused (nacked) a message for {}",
                    key.as_str()
                ))))
            }
        }
    }

    /// Publishes `message`, waiting (up to `reconnect_wait`) for a lost connection to come
    /// back.
    pub(super) async fn send(&self, message: Message) -> Result<(), PublishError> {
        self.life.check()?;
        self.settle_teardowns().await;
        let (exchange, key, payload) = self.outgoing(&message)?;
        let qos = message.effective_qos(QoS::AtLeastOnce);
        let mut props = convert::properties(&message, None, None)?;
        if qos != QoS::AtMostOnce {
            // Persistent: a durable queue keeps it on disk (confirmed once written there),
            // so a durable subscription gets it after a broker restart. Queues that are not
            // durable keep it in memory as before.
            props = props.with_delivery_mode(2);
        }
        let deadline = self.reconnect_deadline();
        let mut after = 0;
        // Its place in the order of this connection's publishes, and (while it is written
        // and unsettled on some link) its count there.
        let mut ticket = self.turnstile.enter();
        let mut held = None;
        loop {
            let link = match self.current() {
                Some(l) if l.generation > after => l,
                _ => self.link_after(after, deadline).await?,
            };
            // After the earlier ones a lost connection left to be sent again, and after
            // every earlier one still to be written.
            self.after_earlier_publishes(ticket.seq, deadline).await?;
            if tokio::time::timeout_at(deadline, ticket.my_turn()).await.is_err() {
                return Err(self.life.not_connected("earlier publishes were not written in time"));
            }
            let props = props.clone();
            let attempt = self.publish_on(
                &link,
                &exchange,
                &key,
                &payload,
                props,
                qos,
                &mut ticket,
                &mut held,
            );
            match attempt.await {
                Ok(()) => {
                    self.meter.published();
                    return Ok(());
                }
                Err(PublishFailure::Refused(e)) => return Err(e),
                Err(PublishFailure::Link(e)) => {
                    // The connection broke under this publish. At QoS >= 1 it was not
                    // confirmed, so it goes again on the next connection (at least once);
                    // at QoS 0 it is reported lost rather than silently dropped.
                    let _ = self.trouble.send(link.generation);
                    self.life.check()?;
                    if qos == QoS::AtMostOnce {
                        return Err(self.life.not_connected(describe(&e)));
                    }
                    after = link.generation;
                    ticket.again();
                }
            }
        }
    }

    /// Sends `message` as a request whose reply comes over direct reply-to, and waits for
    /// it, all under one deadline. The request is `mandatory`: when no queue is bound to its
    /// topic the broker returns it, and the request fails at once with `NoResponders`.
    pub(super) async fn request(
        &self,
        message: Message,
        timeout: Duration,
    ) -> Result<Message, RequestError> {
        self.life.check::<RequestErrorKind>()?;
        let topic = message.topic.clone();
        inbox::exchange(&self.meter, topic.as_str(), timeout, async {
            self.settle_teardowns().await;
            let (exchange, key, payload) = self.outgoing(&message)?;
            let link = match self.current() {
                Some(l) => l,
                None => self.link_after::<RequestErrorKind>(0, self.reconnect_deadline()).await?,
            };
            // Tagged with the link: when it goes, so does the reply's way back.
            let mut pending = self.inbox.register(link.generation);
            let props = convert::properties(
                &message,
                Some(convert::DIRECT_REPLY_TO),
                Some(pending.id().to_hex()),
            )?;
            let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
            let sent = async {
                link.rpc.basic_publish(exchange, key, options, &payload, props).await?.await
            };
            match sent.await {
                Ok(Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_))) => {
                    // Returned as unroutable: no queue is bound to the topic.
                    return Err(RequestError::no_responders(topic.as_str()));
                }
                Ok(Confirmation::Nack(None)) => {
                    return Err(RequestError::refused(format!(
                        "the broker refused (nacked) the request to {topic}"
                    )));
                }
                Ok(_) => self.meter.published(),
                Err(e) => {
                    let _ = self.trouble.send(link.generation);
                    return Err(self.life.not_connected(describe(&e)));
                }
            }
            pending.reply().await
        })
        .await
    }
}
