//! [`Connection`]: the cheap, cloneable handle every endpoint holds, and [`Connector`]: how
//! a URL becomes one.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::error::{
    CloseError, Common, ConnectError, OpError, PublishError, PublishErrorKind, RequestError,
    Result, SubscribeError, SubscribeErrorKind,
};
use crate::message::{Message, QoS};
use crate::stats::StatsSnapshot;
use crate::topic::{Topic, TopicFilter};
use crate::transport::{
    Acknowledge, BoxFuture, Capabilities, Completion, ConnectOptions, ConnectionEvents, StartAt,
    SubscribeOptions, Subscription, Transport,
};

/// A handle to one broker connection. Clones share the connection; every endpoint of a node
/// holds one, so a node uses a single connection however many endpoints it has.
#[derive(Clone)]
pub struct Connection {
    transport: Arc<dyn Transport>,
}

impl Connection {
    /// Wraps a transport.
    pub fn new(transport: Arc<dyn Transport>) -> Self {
        Connection { transport }
    }

    /// The same connection with every topic under `prefix`: published and subscribed topics
    /// get `prefix/` put before them, and arriving messages have it taken off (see
    /// [`Prefixed`](crate::transport::Prefixed)).
    pub fn with_topic_prefix(&self, prefix: &str) -> Result<Connection> {
        let layer = crate::transport::Prefixed::new(self.transport.clone(), prefix)?;
        Ok(Connection::new(Arc::new(layer)))
    }

    /// The underlying transport.
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    /// Transport kind, e.g. `mem`.
    pub fn kind(&self) -> &'static str {
        self.transport.kind()
    }

    /// This connection's client id.
    pub fn client_id(&self) -> &str {
        self.transport.client_id()
    }

    /// The server in use now (`HOST:PORT`; on Kafka the bootstrap list); `None` for the
    /// in-process bus.
    pub fn server(&self) -> Option<String> {
        self.transport.server()
    }

    /// What the transport supports.
    pub fn capabilities(&self) -> &Capabilities {
        self.transport.capabilities()
    }

    /// Publishes a message. The completion resolves when the promise of the message's QoS
    /// is kept: at QoS 0 when the transport has taken it, at QoS 1 and 2 when the broker
    /// has it (or with an error, `Refused` when the broker refused it); see
    /// `docs/delivery.md` per transport. To keep many in flight, use
    /// [`pipeline`](Self::pipeline). (A plain function returning the transport's completion
    /// rather than an `async fn`: the message then moves once, straight to the transport.)
    pub fn publish(&self, mut message: Message) -> Completion<'_> {
        if let Some(sent) = crate::trace::outgoing(&mut message) {
            tracing::debug!(
                topic = %message.topic,
                trace_id = %sent.span.trace_id(),
                span_id = %sent.span.span_id(),
                parent_span_id = %sent.parent_span_id(),
                "busbar.publish"
            );
        }
        match self.check(&message) {
            Ok(()) => self.transport.publish(message),
            Err(e) => Completion::ready(Err(e)),
        }
    }

    /// A [`Pipeline`](crate::Pipeline): publishes with up to `window` awaiting the broker's
    /// confirmation at once.
    pub fn pipeline(&self, window: usize) -> crate::Pipeline<'_> {
        crate::Pipeline::new(self, window)
    }

    /// Publishes raw bytes on `topic` with default properties.
    pub async fn publish_bytes(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
    ) -> Result<(), PublishError> {
        let topic = Topic::new(topic)?;
        self.publish(Message::new(topic, payload.into())).await
    }

    /// Subscribes with full options.
    pub async fn subscribe_with(
        &self,
        options: SubscribeOptions,
    ) -> Result<Subscription, SubscribeError> {
        if options.queue_group.is_some() && !self.capabilities().queue_groups {
            return Err(self.unsupported("queue groups"));
        }
        if options.no_local && !self.capabilities().no_local {
            return Err(self.unsupported("no-local subscriptions"));
        }
        if options.start != StartAt::Now && !self.capabilities().replay {
            return Err(
                self.unsupported("subscriptions starting before now (the broker keeps no log)")
            );
        }
        check_durability(&options, self.capabilities(), self.transport.kind())?;
        match self
            .named_queue_problem(options.filter.as_str(), || options.filter.queue_name().is_some())
        {
            Some(QueueProblem::Unsupported) => Err(self.unsupported("named queues")),
            Some(QueueProblem::NamesNone(why)) => {
                Err(OpError::new(SubscribeErrorKind::InvalidFilter, why))
            }
            None => self.transport.subscribe(options).await,
        }
    }

    /// Deletes the durable subscription `name` of `filter` at the broker, with every
    /// message it kept: subscribing under the name again starts afresh. Refused with
    /// `Unsupported` where the broker keeps none, and with `InvalidFilter` while a
    /// subscription of this connection reads it. MQTT keeps it in the persistent session
    /// of the client that made it: remove it on a connection of that client id.
    pub async fn remove_durable(&self, name: &str, filter: &str) -> Result<(), SubscribeError> {
        if !self.capabilities().durable {
            let mut e = self.unsupported("durable subscriptions");
            if let Some(needs) = self.capabilities().durable_needs {
                e = OpError::new(e.kind(), format!("{} on this connection: {needs}", e.message()));
            }
            return Err(e);
        }
        let filter = TopicFilter::new(filter)?;
        self.transport.remove_durable(name, &filter).await
    }

    /// Subscribes to `filter` with default options.
    pub async fn subscribe(&self, filter: &str) -> Result<Subscription, SubscribeError> {
        self.subscribe_with(SubscribeOptions::new(filter)?).await
    }

    /// Sends a request and waits for its reply.
    pub async fn request(
        &self,
        mut message: Message,
        timeout: Duration,
    ) -> Result<Message, RequestError> {
        self.check(&message)?;
        match crate::trace::outgoing(&mut message) {
            None => self.transport.request(message, timeout).await,
            Some(sent) => {
                use tracing::Instrument;
                let topic = message.topic.clone();
                let request = self.transport.request(message, timeout);
                request
                    .instrument(tracing::info_span!(
                        "busbar.request",
                        topic = %topic,
                        trace_id = %sent.span.trace_id(),
                        span_id = %sent.span.span_id(),
                        parent_span_id = %sent.parent_span_id()
                    ))
                    .await
            }
        }
    }

    /// Connection events.
    pub fn events(&self) -> ConnectionEvents {
        self.transport.events()
    }

    /// Counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.transport.stats()
    }

    /// Closes the connection for every clone of this handle.
    pub async fn close(&self) -> Result<(), CloseError> {
        self.transport.close().await
    }

    /// The error for a feature this transport lacks, as the failing operation's kind.
    pub fn unsupported<K: Copy + From<Common>>(&self, feature: &'static str) -> OpError<K> {
        OpError::unsupported(self.kind(), feature)
    }

    /// Whether messages can be published to `topic` on this connection, checked without
    /// sending. Servers call it on reply topics that came off the wire before they answer.
    pub fn check_destination(&self, topic: &Topic) -> Result<(), PublishError> {
        self.transport.check_destination(topic)
    }

    /// Refuses what the transport cannot honour instead of silently degrading it.
    fn check(&self, message: &Message) -> Result<(), PublishError> {
        self.transport.check_destination(&message.topic)?;
        let caps = self.capabilities();
        if let Some(asked) = message.qos
            && asked > caps.max_qos
        {
            return Err(OpError::new(
                Common::Unsupported.into(),
                format!(
                    "the {} transport carries messages at QoS {} at most ({}); QoS {} was asked \
                     for: ask for QoS {} or less, or leave the QoS unset for the transport's best",
                    self.kind(),
                    caps.max_qos as u8,
                    qos_words(caps.max_qos),
                    asked as u8,
                    caps.max_qos as u8,
                ),
            ));
        }
        if message.retain && !caps.retained {
            return Err(self.unsupported("retained messages"));
        }
        if message.expires_at.is_some() && !caps.expiry {
            return Err(self.unsupported("message expiry"));
        }
        match self
            .named_queue_problem(message.topic.as_str(), || message.topic.queue_name().is_some())
        {
            Some(QueueProblem::Unsupported) => Err(self.unsupported("named queues")),
            Some(QueueProblem::NamesNone(why)) => {
                Err(OpError::new(PublishErrorKind::InvalidTopic, why))
            }
            None => Ok(()),
        }
    }

    /// Why a topic or filter in the named-queue namespace cannot be used here: the
    /// transport has no named queues, or it names no queue (`names_one` is false because it
    /// was not made by `Topic::named_queue`). `names_one` is asked only of names in that
    /// namespace: every publish passes through here, and almost none is.
    fn named_queue_problem(
        &self,
        name: &str,
        names_one: impl FnOnce() -> bool,
    ) -> Option<QueueProblem> {
        if !crate::topic::is_queue_namespace(name) {
            None
        } else if !self.capabilities().named_queues {
            Some(QueueProblem::Unsupported)
        } else if !names_one() {
            Some(QueueProblem::NamesNone(format!(
                "{name} is in the named-queue namespace but names no queue; make it with \
                 Topic::named_queue"
            )))
        } else {
            None
        }
    }
}

/// A QoS level in words, for error messages.
fn qos_words(qos: QoS) -> &'static str {
    match qos {
        QoS::AtMostOnce => "at most once",
        QoS::AtLeastOnce => "at least once",
        QoS::ExactlyOnce => "exactly once",
    }
}

/// See [`Connection::named_queue_problem`].
enum QueueProblem {
    Unsupported,
    NamesNone(String),
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("kind", &self.kind())
            .field("client_id", &self.client_id())
            .finish()
    }
}

/// Turns URLs of some schemes into connections. Each transport crate provides one; the
/// `busbar` crate combines those compiled in.
pub trait Connector: Send + Sync + 'static {
    /// URL schemes handled, lowercase, without `://`.
    fn schemes(&self) -> &[&'static str];

    /// Connects to `url`.
    fn connect(
        &self,
        url: &str,
        options: ConnectOptions,
    ) -> BoxFuture<'static, Result<Connection, ConnectError>>;
}

/// The scheme of `url` (before `://`), lowercased.
pub fn url_scheme(url: &str) -> Result<String, ConnectError> {
    match url.split_once("://") {
        Some((scheme, _)) if !scheme.is_empty() => Ok(scheme.to_ascii_lowercase()),
        _ => Err(ConnectError::invalid_url(
            &crate::url::redact(url),
            "expected SCHEME://..., for example mem:// or mqtt://127.0.0.1:1883",
        )),
    }
}

/// What a durable or acknowledged subscription asks for, checked against what the broker
/// can keep.
fn check_durability(
    options: &SubscribeOptions,
    capabilities: &Capabilities,
    transport: &str,
) -> Result<(), SubscribeError> {
    let unsupported = |what: &str| {
        let mut e = OpError::unsupported(transport, what);
        if let Some(needs) = capabilities.durable_needs {
            e = OpError::new(e.kind(), format!("{} on this connection: {needs}", e.message()));
        }
        Err(e)
    };
    if let Some(name) = &options.durable {
        if !capabilities.durable {
            return unsupported(
                "durable subscriptions (the broker keeps nothing for a subscriber that is away)",
            );
        }
        let valid = !name.is_empty()
            && name.len() <= 100
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(OpError::new(
                SubscribeErrorKind::InvalidFilter,
                format!(
                    "{name:?} cannot name a durable subscription: use 1 to 100 letters, digits, \
                     '-', '_' and '.'"
                ),
            ));
        }
        if options.queue_group.is_some() {
            return Err(OpError::new(
                SubscribeErrorKind::InvalidFilter,
                "a durable subscription is shared by its name: give it no queue group too",
            ));
        }
    }
    if options.acknowledge != Acknowledge::OnHandOver {
        if !capabilities.acknowledgements {
            return unsupported(
                "acknowledging on read or explicitly (the broker tracks no acknowledgements)",
            );
        }
        if options.queue.overflow != crate::Overflow::Block {
            return Err(OpError::new(
                SubscribeErrorKind::Unsupported,
                "an acknowledged subscription keeps every message: its queue must block \
                 (Overflow::Block), not drop",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_is_required() {
        assert_eq!(url_scheme("MQTT://h:1").expect("scheme"), "mqtt");
        let err = url_scheme("localhost:1883").expect_err("no scheme");
        assert!(err.to_string().contains("SCHEME://"), "{err}");
    }
}
