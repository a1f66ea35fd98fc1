//! Sending: publishes, and requests on this connection's reply inbox.

use std::sync::Arc;
use std::time::Duration;

use async_nats::client::PublishErrorKind as NatsPublishErrorKind;
use busbar_core::error::{
    OpError, PublishError, PublishErrorKind, RequestError, RequestErrorKind, SubscribeError,
    SubscribeErrorKind,
};
use busbar_core::message::Message;
use busbar_core::topic::{Topic, nats_subject};
use busbar_transport_kit::{PublishQueue, ids, inbox};
use bytes::Bytes;

use super::replies::Replies;
use super::state::Shared;
use crate::convert::headers_out;

impl Shared {
    /// Publishes `message` now, waiting while async-nats' bounded command channel is full.
    pub(super) async fn publish_now(&self, message: Message) -> Result<(), PublishError> {
        self.life.check()?;
        let subject = self.subject(&message.topic)?;
        let reply = match &message.reply_to {
            Some(r) => Some(async_nats::Subject::from(nats_subject(r)?)),
            None => None,
        };
        self.send(subject, reply, &message).await
    }

    /// Hands `message` to the publish queue of a drop policy: never waits.
    pub(super) fn enqueue(
        &self,
        queue: &PublishQueue,
        message: Message,
    ) -> Result<(), PublishError> {
        self.life.check()?;
        // Refuse what could never be sent now, not later in the forwarding task.
        nats_subject(&message.topic)?;
        queue.enqueue(message)
    }

    /// Sends `message` to `subject`, with `reply` as its reply subject, and counts it
    /// published.
    async fn send(
        &self,
        subject: async_nats::Subject,
        reply: Option<async_nats::Subject>,
        message: &Message,
    ) -> Result<(), PublishError> {
        let payload = message.payload.to_bytes()?;
        let headers = headers_out(message)?;
        self.check_control_line(&subject, reply.as_ref())?;
        self.check_size(&payload, headers.as_ref())?;
        if reply.is_none() && self.kept.covers(subject.as_str()) {
            return self.send_confirmed(subject, headers, payload, message).await;
        }
        let c = &self.client;
        let sent = match (reply, headers) {
            (None, None) => c.publish(subject, payload).await,
            (None, Some(h)) => c.publish_with_headers(subject, h, payload).await,
            (Some(r), None) => c.publish_with_reply(subject, r, payload).await,
            (Some(r), Some(h)) => c.publish_with_reply_and_headers(subject, r, h, payload).await,
        };
        sent.map_err(|e| match e.kind() {
            NatsPublishErrorKind::MaxPayloadExceeded => {
                PublishError::too_large(message_size(message), self.client.max_payload())
            }
            NatsPublishErrorKind::InvalidSubject => OpError::new(
                PublishErrorKind::InvalidTopic,
                format!("{} is not a valid NATS subject", message.topic),
            ),
            NatsPublishErrorKind::Send => self.life.not_connected(e),
        })?;
        self.meter.published();
        Ok(())
    }

    /// Publishes to a subject a durable subscription keeps, through JetStream: done when
    /// the stream confirmed storing it. Without that confirmation the publish fails, and
    /// says whether the stream may still have it; it is not sent again here, which would
    /// give it twice to subscribers without a durable subscription.
    async fn send_confirmed(
        &self,
        subject: async_nats::Subject,
        headers: Option<async_nats::HeaderMap>,
        payload: Bytes,
        message: &Message,
    ) -> Result<(), PublishError> {
        use async_nats::jetstream::context::PublishErrorKind as Js;
        let mut publish = async_nats::jetstream::message::PublishMessage::build().payload(payload);
        if let Some(headers) = headers {
            publish = publish.headers(headers);
        }
        let patience = self.settings.confirm_timeout;
        let attempt = async { self.js.send_publish(subject.clone(), publish).await?.await };
        let failed = |kind, what: String| {
            Err(OpError::new(
                kind,
                format!(
                    "the JetStream stream of a durable subscription to {} {what}",
                    message.topic
                ),
            ))
        };
        match tokio::time::timeout(patience, attempt).await {
            Ok(Ok(_)) => {
                self.meter.published();
                Ok(())
            }
            Ok(Err(e)) => match e.kind() {
                Js::MaxPayloadExceeded => {
                    Err(PublishError::too_large(message_size(message), self.client.max_payload()))
                }
                // Nobody listens: the stream is gone (known to `kept` once its deletion is
                // announced) or between leaders, and nothing else subscribes.
                Js::StreamNotFound if !self.kept.covers(subject.as_str()) => {
                    self.meter.published();
                    Ok(())
                }
                Js::StreamNotFound | Js::BrokenPipe => failed(
                    PublishErrorKind::NotConnected,
                    format!("cannot be reached now, and did not store the message: {e}"),
                ),
                Js::TimedOut | Js::MaxAckPending => failed(
                    PublishErrorKind::TimedOut,
                    format!("did not confirm storing the message (it may have): {e}"),
                ),
                _ => failed(PublishErrorKind::Refused, format!("did not take the message: {e}")),
            },
            Err(_) => failed(
                PublishErrorKind::TimedOut,
                format!("did not confirm storing the message within {patience:?} (it may have)"),
            ),
        }
    }

    /// Refuses a subject whose command line (`HPUB subject reply hdr_len total_len`) the
    /// server would not read: it answers such a line with `-ERR` and drops the message.
    fn check_control_line(
        &self,
        subject: &async_nats::Subject,
        reply: Option<&async_nats::Subject>,
    ) -> Result<(), PublishError> {
        let line = control_line_len(subject.len(), reply.map(|r| r.len()));
        let max = self.settings.max_control_line;
        if line > max {
            return Err(OpError::new(
                PublishErrorKind::InvalidTopic,
                format!(
                    "the subject is {} bytes; its NATS command line would be {line} bytes, over \
                     the server's max_control_line of {max} (if the server allows more, say so \
                     with ?max_control_line=)",
                    subject.len()
                ),
            ));
        }
        Ok(())
    }

    /// Refuses a message larger than the server takes (its INFO says), instead of letting
    /// the client fail it later.
    fn check_size(
        &self,
        payload: &Bytes,
        headers: Option<&async_nats::HeaderMap>,
    ) -> Result<(), PublishError> {
        let max = self.client.max_payload();
        let header_len = headers.map_or(0, header_wire_len);
        let size = payload.len() + header_len;
        if max > 0 && size > max {
            return Err(PublishError::too_large(size, max));
        }
        Ok(())
    }

    /// Sends `message` as a request with a reply subject on this connection's reply inbox
    /// and waits for the reply, all under one deadline (which covers a wait for room in
    /// async-nats' command channel while the connection is down).
    pub(super) async fn request(
        &self,
        message: Message,
        timeout: Duration,
    ) -> Result<Message, RequestError> {
        self.life.check::<RequestErrorKind>()?;
        let topic = message.topic.as_str();
        inbox::exchange(&self.meter, topic, timeout, async {
            let subject = async_nats::Subject::from(nats_subject(&message.topic)?);
            // Subscribed before the request goes out: async-nats sends its commands in order.
            let replies = self.replies().await?;
            let mut pending = self.inbox.register(0);
            let reply = async_nats::Subject::from(replies.reply_subject(pending.id()));
            self.send(subject, Some(reply), &message).await?;
            match pending.reply().await {
                // The inbox does not know the topic: the request names it.
                Err(e) if e.kind() == RequestErrorKind::NoResponders => {
                    Err(RequestError::no_responders(topic))
                }
                outcome => outcome,
            }
        })
        .await
    }

    /// The reply inbox, subscribed to on the first request.
    async fn replies(&self) -> Result<&Arc<Replies>, SubscribeError> {
        self.replies
            .get_or_try_init(|| async {
                let subject = nats_subject(&Topic::inbox(ids::random_bytes()))?;
                let subscriber = self
                    .client
                    .subscribe(format!("{subject}.*"))
                    .await
                    .map_err(|e| self.life.not_connected::<SubscribeErrorKind>(e))?;
                Ok(Replies::start(
                    subject,
                    subscriber,
                    self.inbox.clone(),
                    self.life.token().child_token(),
                ))
            })
            .await
    }
}

/// The longest `HPUB` command line for a subject and reply subject of these lengths: the
/// verb, the two sizes at their widest and the spaces and line end between.
pub(crate) fn control_line_len(subject: usize, reply: Option<usize>) -> usize {
    "HPUB ".len() + subject + reply.map_or(0, |r| r + 1) + 2 * (1 + 20) + 2
}

/// The size NATS counts for a header block: `NATS/1.0\r\n`, `name: value\r\n` per value,
/// and the closing `\r\n`.
fn header_wire_len(headers: &async_nats::HeaderMap) -> usize {
    let mut len = "NATS/1.0\r\n".len() + 2;
    for (name, values) in headers.iter() {
        for v in values {
            len += AsRef::<str>::as_ref(name).len() + 2 + v.as_str().len() + 2;
        }
    }
    len
}

fn message_size(message: &Message) -> usize {
    message.payload.to_bytes().map_or(0, |b| b.len())
}
