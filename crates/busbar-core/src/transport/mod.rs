//! The transport contract: what every broker binding provides.
//!
//! A [`Transport`] is one connection to one broker (or to the in-process bus). It moves
//! [`Message`]s; it knows nothing of typed values beyond passing them through, nor of RPC or
//! actions, which the [patterns](crate::patterns) build on top. The trait is object safe so a
//! [`Connection`](crate::Connection) can hold any transport chosen at run time from a URL.
//!
//! What a transport cannot do it declares in its [`Capabilities`] and refuses with an error
//! of kind `Unsupported`, never by silently doing something else.

mod events;
mod options;
mod prefix;
mod subscription;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

pub use events::{ConnectionEvent, ConnectionEvents};
pub use options::{
    Acknowledge, Capabilities, ConnectOptions, NativeNames, StartAt, SubscribeOptions,
};
pub use prefix::Prefixed;
pub use subscription::{Subscription, SubscriptionGuard};

use crate::error::{CloseError, OpError, PublishError, RequestError, Result, SubscribeError};
use crate::message::Message;
use crate::stats::StatsSnapshot;
use crate::topic::{Topic, TopicFilter};

/// A boxed, sendable future: the return type of the object-safe transport methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The outcome of a publish, which often completes at once (a message into a queue with
/// room): `Ready` costs no allocation, `Pending` is a boxed future for the cases that must
/// wait.
#[must_use = "a publish does nothing until awaited, and its error says if the message was refused"]
pub enum Completion<'a> {
    /// Done already.
    Ready(Option<Result<(), PublishError>>),
    /// Still to be awaited.
    Pending(BoxFuture<'a, Result<(), PublishError>>),
}

impl Completion<'_> {
    /// A completed publish.
    pub fn ready(result: Result<(), PublishError>) -> Self {
        Completion::Ready(Some(result))
    }
}

impl Future for Completion<'_> {
    type Output = Result<(), PublishError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            // A completion is a future like any other: polled again after it finished, it
            // answers Ok, having nothing left to do (futures may panic there; this one need
            // not).
            Completion::Ready(result) => Poll::Ready(result.take().unwrap_or(Ok(()))),
            Completion::Pending(fut) => fut.as_mut().poll(cx),
        }
    }
}

/// One connection to a broker.
///
/// Implementations must be cheap to share (`Arc`) and safe to call from many tasks at once.
pub trait Transport: Send + Sync + 'static {
    /// Short transport kind, e.g. `mem`, `mqtt`.
    fn kind(&self) -> &'static str;

    /// The client identifier this connection presents to the broker.
    fn client_id(&self) -> &str;

    /// The server in use now (`HOST:PORT`; on Kafka the bootstrap list), as the last
    /// [`ConnectionEvent::Connected`] or `Reconnected` named it; `None` for a transport
    /// without servers.
    fn server(&self) -> Option<String> {
        None
    }

    /// What this transport can do.
    fn capabilities(&self) -> &Capabilities;

    /// Publishes one message. Resolves when the transport has taken responsibility for it
    /// (for the in-process bus: queued to every matching subscriber, waiting where a
    /// subscriber's overflow policy is `Block`).
    fn publish(&self, message: Message) -> Completion<'_>;

    /// Whether messages can be published to `topic` here, checked without sending (the
    /// check `publish` makes). A server calls it on a reply topic that came off the wire
    /// before answering: a broker that drops the connection for a topic it refuses would
    /// otherwise take every other call on it down too.
    fn check_destination(&self, topic: &Topic) -> Result<(), PublishError> {
        self.capabilities().check_topic(topic)
    }

    /// Subscribes; the returned [`Subscription`] unsubscribes when dropped.
    fn subscribe(
        &self,
        options: SubscribeOptions,
    ) -> BoxFuture<'_, Result<Subscription, SubscribeError>>;

    /// Deletes the durable subscription `name` of `filter` at the broker, with what it
    /// kept (see [`SubscribeOptions::durable`]). By default refused with `Unsupported`.
    fn remove_durable<'a>(
        &'a self,
        name: &'a str,
        filter: &'a TopicFilter,
    ) -> BoxFuture<'a, Result<(), SubscribeError>> {
        let _ = (name, filter);
        Box::pin(
            async move { Err(OpError::unsupported(self.kind(), "removing durable subscriptions")) },
        )
    }

    /// Publishes `message` as a request and waits up to `timeout` for its reply. The
    /// transport sets `reply_to` and `correlation_id`. Dropping the future abandons the
    /// request; a reply arriving afterwards is counted as late and discarded.
    fn request(
        &self,
        message: Message,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Message, RequestError>>;

    /// A stream of connection state changes and slow-consumer warnings.
    fn events(&self) -> ConnectionEvents;

    /// Current counters.
    fn stats(&self) -> StatsSnapshot;

    /// Closes gracefully: no last will is sent, subscriptions end, later calls fail with
    /// errors of kind `Closed`.
    fn close(&self) -> BoxFuture<'_, Result<(), CloseError>>;
}
