//! The stream of messages a subscription delivers.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;

use crate::message::Message;
use crate::queue::{DropCounter, QueueReceiver};
use crate::stats::Stats;
use crate::topic::TopicFilter;

/// What a layer does to each message a subscription delivers.
type Rewrite = dyn Fn(Message) -> Message + Send + Sync;

/// Runs an unsubscribe action when dropped. Transports hand one to each [`Subscription`].
pub struct SubscriptionGuard(Option<Box<dyn FnOnce() + Send + Sync>>);

impl SubscriptionGuard {
    /// A guard that runs `f` on drop.
    pub fn new(f: impl FnOnce() + Send + Sync + 'static) -> Self {
        SubscriptionGuard(Some(Box::new(f)))
    }

    /// A guard that does nothing.
    pub fn noop() -> Self {
        SubscriptionGuard(None)
    }
}

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

/// Messages matching one filter, in the order the transport received them.
///
/// Ends (`None`) when the connection closes. Dropping it unsubscribes. Expired messages are
/// skipped and counted in the connection's stats (`expired`).
pub struct Subscription {
    rx: QueueReceiver<Message>,
    filter: TopicFilter,
    stats: Arc<Stats>,
    /// Applied to every message delivered (a layer's view of it, e.g. a prefix taken off).
    rewrite: Option<Arc<Rewrite>>,
    /// Acknowledges each message as the application takes it ([`Acknowledge::OnRead`]).
    ///
    /// [`Acknowledge::OnRead`]: crate::transport::Acknowledge::OnRead
    ack_on_read: bool,
    // Declared last: dropped after the receiver, so the transport sees the queue closed
    // before it is told to unsubscribe.
    _guard: SubscriptionGuard,
}

impl Subscription {
    /// Assembles a subscription (for transport implementations); expired messages are
    /// counted in the connection's `stats`.
    pub fn new(
        filter: TopicFilter,
        rx: QueueReceiver<Message>,
        stats: Arc<Stats>,
        guard: SubscriptionGuard,
    ) -> Self {
        Subscription { rx, filter, stats, rewrite: None, ack_on_read: false, _guard: guard }
    }

    /// The same subscription, acknowledging as `acknowledge` says (for transports whose
    /// messages carry a [`Receipt`](crate::Receipt)): under
    /// [`Acknowledge::OnRead`](crate::transport::Acknowledge::OnRead) each message as the
    /// application takes it; the other policies leave it to the transport or the application.
    pub fn acknowledging(mut self, acknowledge: crate::transport::Acknowledge) -> Self {
        self.ack_on_read = acknowledge == crate::transport::Acknowledge::OnRead;
        self
    }

    /// The same subscription as a layer presents it: reporting `filter`, and delivering each
    /// message through `rewrite` (after the layers below, if any).
    pub fn rewritten(
        mut self,
        filter: TopicFilter,
        rewrite: impl Fn(Message) -> Message + Send + Sync + 'static,
    ) -> Self {
        self.filter = filter;
        self.rewrite = Some(match self.rewrite.take() {
            Some(inner) => Arc::new(move |m| rewrite(inner(m))),
            None => Arc::new(rewrite),
        });
        self
    }

    fn deliver(&self, m: Message) -> Message {
        if self.ack_on_read {
            m.ack();
        }
        if let Some(sent) = crate::trace::TraceContext::of(&m) {
            // Receiving is a span of its own, below the one the message was sent as.
            tracing::debug!(
                topic = %m.topic,
                trace_id = %sent.trace_id(),
                span_id = %sent.child().span_id(),
                parent_span_id = %sent.span_id(),
                "busbar.deliver"
            );
        }
        match &self.rewrite {
            Some(f) => f(m),
            None => m,
        }
    }

    /// The filter subscribed to.
    pub fn filter(&self) -> &TopicFilter {
        &self.filter
    }

    /// Next message; `None` when the subscription has ended.
    pub async fn recv(&mut self) -> Option<Message> {
        std::future::poll_fn(|cx| self.poll_message(cx)).await
    }

    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        loop {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(m)) if m.is_expired() => {
                    // Done with: never to be delivered again.
                    m.ack();
                    Stats::bump(&self.stats.expired);
                }
                Poll::Ready(Some(m)) => return Poll::Ready(Some(self.deliver(m))),
                other => return other,
            }
        }
    }

    /// A message if one is queued now, without waiting.
    pub fn try_recv(&mut self) -> Option<Message> {
        while let Some(m) = self.rx.try_recv() {
            if !m.is_expired() {
                return Some(self.deliver(m));
            }
            m.ack();
            Stats::bump(&self.stats.expired);
        }
        None
    }

    /// Messages discarded by this subscription's overflow policy.
    pub fn dropped(&self) -> u64 {
        self.rx.dropped()
    }

    /// A handle to read the drop count after the subscription moved into another task.
    pub fn drop_counter(&self) -> DropCounter {
        self.rx.drop_counter()
    }

    /// Messages waiting to be read.
    pub fn queued(&self) -> usize {
        self.rx.len()
    }

    /// Unsubscribes now (same as dropping).
    pub fn unsubscribe(self) {}
}

impl Stream for Subscription {
    type Item = Message;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.get_mut().poll_message(cx)
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("filter", &self.filter.as_str())
            .field("queued", &self.rx.len())
            .field("dropped", &self.rx.dropped())
            .finish()
    }
}
