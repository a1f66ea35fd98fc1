//! Options for connecting and subscribing, and what a transport can do.

use crate::auth::{SharedTokenProvider, TokenPlacement};
use crate::error::{OpError, PublishError, PublishErrorKind};
use crate::message::{Message, QoS};
use crate::queue::{Overflow, QueueConfig};
use crate::topic::{Topic, TopicError, TopicFilter};

/// How a broker's own names are built from busbar's topics: what wire dialects need to know
/// to spell their names the way the broker's other clients do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NativeNames {
    /// The topic as busbar writes it, `/` between levels, and the broker's wildcards see
    /// those levels (MQTT, the in-process bus).
    Slash,
    /// Levels joined with `.`, and the broker's wildcards see the words between dots (NATS
    /// subjects, AMQP routing keys).
    Dotted,
    /// One flat name, busbar's topic taken as it is; the broker has no levels (its patterns,
    /// if any, match characters: Redis channels and globs, Kafka topic names).
    Flat,
}

/// What a transport supports. Patterns consult it; users can too.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// How the broker names topics (see [`NativeNames`]).
    pub native_names: NativeNames,
    /// Load-balanced delivery among subscribers sharing a queue group.
    pub queue_groups: bool,
    /// Queue groups share a topic by its partitions (Kafka): each member takes whole
    /// partitions, so a group spreads only as far as the messages' keys (see
    /// [`Message::key`]) spread them over partitions, and order holds per partition.
    /// Elsewhere each message goes to any member.
    pub partitioned_groups: bool,
    /// Order is kept per topic only (per partition, on Kafka): a subscription whose filter
    /// matches several topics gets each topic's messages in order, but not the messages of
    /// different topics in the order they were published.
    pub topic_order_only: bool,
    /// Retained messages (the last one per topic is kept for new subscribers).
    pub retained: bool,
    /// Request/reply built into the broker rather than emulated.
    pub native_request: bool,
    /// Headers travel natively (otherwise in an envelope).
    pub headers: bool,
    /// Per-message expiry.
    pub expiry: bool,
    /// A last-will message published by the broker when the client vanishes.
    pub last_will: bool,
    /// Typed payloads are delivered without serialisation.
    pub typed_payloads: bool,
    /// Requests to a topic nobody serves fail at once with `NoResponders`.
    pub no_responders: bool,
    /// Subscriptions can refuse messages published on their own connection.
    pub no_local: bool,
    /// Subscriptions can start before now (see [`StartAt`]): the broker keeps what was
    /// published for a while (Kafka's log). Elsewhere only [`StartAt::Now`] is accepted.
    pub replay: bool,
    /// The broker keeps a named subscription's messages while no process reads it, and
    /// redelivers what was not acknowledged ([`SubscribeOptions::durable`]).
    pub durable: bool,
    /// Messages can be acknowledged when read or explicitly, not only when handed over
    /// ([`Acknowledge`]).
    pub acknowledgements: bool,
    /// Where the transport can keep durable subscriptions and acknowledgements in another
    /// configuration than this connection's: what that takes (said when one is refused).
    pub durable_needs: Option<&'static str>,
    /// Topics made by [`Topic::named_queue`](crate::Topic::named_queue) reach the broker's
    /// own named queues (AMQP queues, Redis lists).
    pub named_queues: bool,
    /// Highest QoS honoured.
    pub max_qos: QoS,
    /// Largest payload accepted, if bounded.
    pub max_payload: Option<usize>,
    /// Most levels a topic may have, if the broker bounds them (a broker that meets a deeper
    /// topic drops the connection, so it is refused before sending).
    pub max_topic_levels: Option<usize>,
    /// Longest topic in bytes, if bounded.
    pub max_topic_bytes: Option<usize>,
}

impl Capabilities {
    /// Everything off; transports switch on what they offer. How the broker names topics
    /// has no default: every transport says it.
    pub fn none(native_names: NativeNames) -> Self {
        Capabilities {
            native_names,
            queue_groups: false,
            partitioned_groups: false,
            topic_order_only: false,
            retained: false,
            native_request: false,
            headers: false,
            expiry: false,
            last_will: false,
            typed_payloads: false,
            no_responders: false,
            no_local: false,
            replay: false,
            durable: false,
            acknowledgements: false,
            durable_needs: None,
            named_queues: false,
            max_qos: QoS::AtMostOnce,
            max_payload: None,
            max_topic_levels: None,
            max_topic_bytes: None,
        }
    }

    /// Whether messages can be published to `topic` under these limits: the check every
    /// publish makes, and the one a server makes on a reply topic that came off the wire
    /// before it does any work for the request.
    pub fn check_topic(&self, topic: &Topic) -> Result<(), PublishError> {
        let name = topic.as_str();
        if crate::topic::is_queue_namespace(name) {
            // A named queue's topic spells its name in hex: the transport checks the name.
            return Ok(());
        }
        if let Some(max) = self.max_topic_bytes
            && name.len() > max
        {
            return Err(OpError::new(
                PublishErrorKind::InvalidTopic,
                format!("the topic is {} bytes long; this broker takes at most {max}", name.len()),
            ));
        }
        // A topic of n bytes has at most n + 1 levels: short ones (nearly all) are not
        // counted on this per-publish path.
        if let Some(max) = self.max_topic_levels
            && name.len() >= max
        {
            let levels = name.split('/').count();
            if levels > max {
                return Err(OpError::new(
                    PublishErrorKind::InvalidTopic,
                    format!("the topic has {levels} levels; this broker takes at most {max}"),
                ));
            }
        }
        Ok(())
    }
}

/// How to connect.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// Client identifier; a unique one is generated when absent.
    pub client_id: Option<String>,
    /// Published by the broker if this connection ends without a graceful close.
    pub last_will: Option<Message>,
    /// The last will is a nicety, not a requirement: a transport without last wills connects
    /// without it instead of refusing (set by [`last_will_if_supported`](Self::last_will_if_supported)).
    pub last_will_optional: bool,
    /// Supplies (and refreshes) the credential token, where the transport uses one.
    pub token: Option<SharedTokenProvider>,
    /// Where the token goes.
    pub token_placement: TokenPlacement,
    /// How long connecting may take in all (address, handshake, login, first
    /// subscriptions); overrides the URL's `connect_timeout` (default 10 s on every
    /// transport). Past it, connecting fails with kind `TimedOut`.
    pub connect_timeout: Option<std::time::Duration>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("client_id", &self.client_id)
            .field("last_will", &self.last_will)
            .field("last_will_optional", &self.last_will_optional)
            .field("token", &self.token.as_ref().map(|_| "<provider>"))
            .field("token_placement", &self.token_placement)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl ConnectOptions {
    /// Default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the client identifier.
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = Some(id.into());
        self
    }

    /// Bounds how long connecting may take (see [`connect_timeout`](Self::connect_timeout)
    /// the field).
    pub fn connect_timeout(mut self, limit: std::time::Duration) -> Self {
        self.connect_timeout = Some(limit);
        self
    }

    /// Sets the last will. A transport that has none (see
    /// [`Capabilities::last_will`]) refuses to connect with `Unsupported`.
    pub fn last_will(mut self, will: Message) -> Self {
        self.last_will = Some(will);
        self.last_will_optional = false;
        self
    }

    /// Sets a last will where the transport has them, and connects without one where it does
    /// not. For wills that only speed something up, like the node's liveness report: without
    /// one, watchers notice the silence when heartbeats stop.
    pub fn last_will_if_supported(mut self, will: Message) -> Self {
        self.last_will = Some(will);
        self.last_will_optional = true;
        self
    }

    /// Whether a transport without last wills must refuse these options: true when a will
    /// was set with [`last_will`](Self::last_will).
    pub fn requires_last_will(&self) -> bool {
        self.last_will.is_some() && !self.last_will_optional
    }

    /// Authenticates with tokens from `provider`, placed as `placement` says.
    pub fn token(mut self, provider: SharedTokenProvider, placement: TokenPlacement) -> Self {
        self.token = Some(provider);
        self.token_placement = placement;
        self
    }
}

/// What to subscribe to and how deliveries are queued.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SubscribeOptions {
    /// Topic filter (`+` one level, `#` the rest).
    pub filter: TopicFilter,
    /// Subscribers with the same group on the same filter share the messages: each goes to
    /// exactly one of them.
    pub queue_group: Option<String>,
    /// Delivery queue size and overflow policy.
    pub queue: QueueConfig,
    /// Requested QoS.
    pub qos: QoS,
    /// Do not deliver messages published on this same connection.
    pub no_local: bool,
    /// Where reading starts (see [`StartAt`]; only [`StartAt::Now`] where the broker keeps
    /// no log, see [`Capabilities::replay`]).
    pub start: StartAt,
    /// When the broker is told a message is done with (see [`Acknowledge`]).
    pub acknowledge: Acknowledge,
    /// The name of a durable subscription (see [`SubscribeOptions::durable`]).
    pub durable: Option<String>,
}

impl From<TopicFilter> for SubscribeOptions {
    /// Defaults: no group, a 1024-message queue that blocks when full, QoS 1.
    fn from(filter: TopicFilter) -> Self {
        SubscribeOptions {
            filter,
            queue_group: None,
            queue: QueueConfig::default(),
            qos: QoS::default(),
            no_local: false,
            start: StartAt::Now,
            acknowledge: Acknowledge::OnHandOver,
            durable: None,
        }
    }
}

impl SubscribeOptions {
    /// Options for `filter` (`+` one level, `#` the rest), checked as a topic filter, with
    /// the defaults of [`SubscribeOptions::from`]: `SubscribeOptions::new("plant/#")?`.
    pub fn new(filter: impl AsRef<str>) -> Result<Self, TopicError> {
        Ok(SubscribeOptions::from(TopicFilter::new(filter)?))
    }

    /// Makes the subscription durable, under `name`: the broker keeps its messages while no
    /// process reads it and gives what was not acknowledged to the next reader, so a
    /// subscriber that stops (or crashes) and comes back with the same name loses nothing.
    /// Processes subscribing with the same name (and filter) share it, each message going to
    /// one of them. The broker keeps the subscription until it is deleted there. Refused
    /// with `Unsupported` where the broker cannot keep it ([`Capabilities::durable`]).
    /// A name is 1 to 100 letters, digits, `-`, `_` and `.`.
    pub fn durable(mut self, name: impl Into<String>) -> Self {
        self.durable = Some(name.into());
        self
    }

    /// Sets when messages are acknowledged (see [`Acknowledge`]).
    pub fn acknowledge(mut self, acknowledge: Acknowledge) -> Self {
        self.acknowledge = acknowledge;
        self
    }

    /// Joins a queue group.
    pub fn queue_group(mut self, group: impl Into<String>) -> Self {
        self.queue_group = Some(group.into());
        self
    }

    /// Sets the delivery queue capacity.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.queue = QueueConfig::new(capacity, self.queue.overflow);
        self
    }

    /// Sets the overflow policy.
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.queue = QueueConfig::new(self.queue.capacity, overflow);
        self
    }

    /// Sets the QoS.
    pub fn qos(mut self, qos: QoS) -> Self {
        self.qos = qos;
        self
    }

    /// Skips messages this same connection published (MQTT 5's noLocal). Refused with
    /// `Unsupported` by transports that cannot honour it.
    pub fn no_local(mut self, no_local: bool) -> Self {
        self.no_local = no_local;
        self
    }

    /// Sets where reading starts. Anything but [`StartAt::Now`] is refused with
    /// `Unsupported` by transports whose broker keeps no log ([`Capabilities::replay`]).
    pub fn start(mut self, start: StartAt) -> Self {
        self.start = start;
        self
    }
}

/// Where a subscription starts reading.
///
/// Brokers that keep a log of what was published (Kafka) can hand a new subscription what
/// came before it; the others deliver only what is published once the subscription is in
/// place. A queue group on a broker that tracks its members' positions (a Kafka consumer
/// group) resumes where the group left off: the start applies only where the group has
/// recorded no position yet, such as the first time the group reads a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum StartAt {
    /// What is published once the subscription is in place: every transport's default.
    #[default]
    Now,
    /// The oldest message the broker still keeps.
    Earliest,
    /// The first message the broker stamped at or after this time (Kafka record
    /// timestamps, to the millisecond); where none is that recent yet, what comes next.
    Time(std::time::SystemTime),
}

/// When the broker is told that a subscription is done with a message, on brokers that
/// track it (a durable subscription, a Kafka consumer group, an AMQP queue). What is not
/// acknowledged when a reader leaves or fails goes to the next one: delivery is at least
/// once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Acknowledge {
    /// Once the message is in the subscription's delivery queue (the default). A broker
    /// connection that fails before that redelivers it; a process that ends with messages
    /// queued but not yet read does not get them again.
    #[default]
    OnHandOver,
    /// When the application takes the message from the subscription
    /// ([`Subscription::recv`](crate::transport::Subscription::recv)): what was still
    /// queued when the process ended is given again.
    OnRead,
    /// When the application calls [`Message::ack`](crate::Message::ack), after handling it:
    /// a crash between receiving and handling loses nothing. A message never acknowledged
    /// stays with this subscription until it is gone (and the broker may stop sending once
    /// too many are outstanding).
    Explicit,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_options_take_a_filter_string_and_check_it() {
        let options = SubscribeOptions::new("plant/+/temperature").expect("a valid filter");
        assert_eq!(options.filter.as_str(), "plant/+/temperature");
        assert_eq!(options.qos, QoS::default());
        let from_filter = SubscribeOptions::from(TopicFilter::new("plant/#").expect("filter"));
        assert_eq!(from_filter.filter.as_str(), "plant/#");
        let bad = SubscribeOptions::new("plant/#/temperature").expect_err("# must be last");
        assert!(bad.to_string().contains('#'), "the error names the problem: {bad}");
    }
}
