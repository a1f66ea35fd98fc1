//! Handing messages to subscriptions, and what every transport counts while doing it.
//!
//! One definition for every transport (the conformance suite checks it):
//!
//! * `delivered` counts messages put into a subscription's queue for its reader. A message
//!   is counted before it is pushed, so a reader that has taken it sees it counted.
//! * `dropped` counts messages an overflow policy discarded: under `DropNewest` the new
//!   message; under `DropOldest` the oldest queued one, which the new message replaces (so
//!   the replacement is not counted as a second delivery). For every subscription, what was
//!   offered is `delivered + dropped`, and what its reader can still take or has taken is
//!   `delivered`.
//! * A slow consumer is reported ([`ConnectionEvent::SlowConsumer`]) at the first drop, or
//!   the first wait under `Block`, since the reader last caught up.
//! * A message for a subscription that is going away is neither.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use busbar_core::message::Message;
use busbar_core::queue::{Pushed, QueueSender};
use busbar_core::stats::{Stats, StatsSnapshot};
use busbar_core::transport::{ConnectionEvent, ConnectionEvents};
use tokio::sync::broadcast;

/// One subscription's delivery queue, with the filter its slow-consumer reports name and
/// the [`Meter`] of the connection it belongs to, where its deliveries are counted.
#[derive(Clone)]
pub struct Target {
    tx: QueueSender<Message>,
    filter: Arc<str>,
    meter: Meter,
}

impl Target {
    /// The queue `tx` of a subscription to `filter` on the connection of `meter`.
    pub fn new(tx: QueueSender<Message>, filter: &str, meter: &Meter) -> Self {
        Target { tx, filter: filter.into(), meter: meter.clone() }
    }

    /// The meter of the connection the subscription belongs to.
    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    /// True when a message would be queued now without the overflow policy applying.
    pub fn has_room(&self) -> bool {
        self.tx.has_room()
    }

    /// True once the subscription's reader is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// The filter of the subscription.
    pub fn filter(&self) -> &str {
        &self.filter
    }

    /// Queues `message` beyond the queue's capacity, for seeding a new subscription (with
    /// retained messages, or what a persistent session kept for it); false if the
    /// subscription is gone. Not for live traffic: that goes through [`Target::offer`].
    pub fn seed(&self, message: Message) -> bool {
        self.tx.force_push(message).is_ok()
    }
}

/// What [`Target::offer`] did with a message.
pub enum Offer {
    /// Queued (under `DropOldest` possibly in place of an older message, counted dropped).
    Queued,
    /// Discarded by `DropNewest`, counted.
    Dropped,
    /// The queue is full under `Block`: the message comes back, to be delivered with
    /// [`Target::deliver`] by a task that may wait.
    Full(Message),
    /// The subscription is gone.
    Gone,
}

/// A connection's counters and its event channel: where deliveries, publishes and requests
/// are counted and connection changes announced. Cheap to clone.
#[derive(Clone)]
pub struct Meter {
    stats: Arc<Stats>,
    events: broadcast::Sender<ConnectionEvent>,
    /// The server the last `Connected` or `Reconnected` named.
    server: Arc<std::sync::Mutex<Option<Arc<str>>>>,
}

impl Default for Meter {
    fn default() -> Self {
        Meter::new()
    }
}

impl Meter {
    /// Fresh counters and an event channel.
    pub fn new() -> Self {
        Meter {
            stats: Arc::new(Stats::default()),
            events: ConnectionEvents::channel(),
            server: Arc::default(),
        }
    }

    /// The counters (subscriptions count expired messages there).
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// True when `other` is this same meter (the same connection's).
    pub fn is(&self, other: &Meter) -> bool {
        Arc::ptr_eq(&self.stats, &other.stats)
    }

    /// A new receiver of this connection's events.
    pub fn events(&self) -> ConnectionEvents {
        ConnectionEvents::new(self.events.subscribe())
    }

    /// Announces `event` to everyone watching (and notes the server it names, if any).
    pub fn announce(&self, event: ConnectionEvent) {
        if let ConnectionEvent::Connected { server } | ConnectionEvent::Reconnected { server } =
            &event
        {
            *crate::lock(&self.server) = Some(server.as_str().into());
        }
        let _ = self.events.send(event);
    }

    /// The server in use, as the last `Connected` or `Reconnected` event named it.
    pub fn server(&self) -> Option<String> {
        crate::lock(&self.server).as_deref().map(str::to_owned)
    }

    /// Counts a message put into a subscription's queue outside [`Target::offer`] (seeding
    /// it with retained or kept messages).
    pub fn delivered(&self) {
        Stats::bump(&self.stats.delivered);
    }

    /// Counts a publish that a drop policy discarded before it reached the broker (or that
    /// failed after its caller was told it was queued), in `dropped`.
    pub fn publish_dropped(&self) {
        Stats::bump(&self.stats.dropped);
    }

    /// Counts a publish the broker took (see `Stats::published`).
    pub fn published(&self) {
        Stats::bump(&self.stats.published);
    }

    /// Counts a message whose expiry passed before it could be delivered.
    pub fn expired(&self) {
        Stats::bump(&self.stats.expired);
    }

    /// Counts a received message dropped before it reached any subscription (one busbar
    /// cannot represent, one over a transport's own bound), and logs `what` and why.
    pub fn discard(&self, what: &str, why: &dyn std::fmt::Display) {
        Stats::bump(&self.stats.dropped);
        tracing::warn!(%why, "{what} dropped");
    }

    /// Counts a message a transport's own buffer discarded before it reached any
    /// subscription (a client library's per-subscription buffer overflowing), and reports
    /// the slow consumer on `filter` when `first_of_burst`.
    pub fn dropped_upstream(&self, filter: &str, first_of_burst: bool) {
        Stats::bump(&self.stats.dropped);
        if first_of_burst {
            self.announce(ConnectionEvent::SlowConsumer {
                filter: filter.to_owned(),
                dropped: self.stats.dropped.load(Ordering::Relaxed),
            });
        }
    }
}

impl Target {
    fn slow(&self, dropped: u64) {
        self.meter
            .announce(ConnectionEvent::SlowConsumer { filter: self.filter.to_string(), dropped });
    }

    /// Offers `message` without waiting, under the queue's overflow policy, counting what
    /// happens (see the module documentation).
    pub fn offer(&self, message: Message) -> Offer {
        let stats = &self.meter.stats;
        // Counted before the push, so whoever reads the message sees it counted; taken back
        // when it does not stay queued as a new delivery.
        Stats::bump(&stats.delivered);
        let uncount = || stats.delivered.fetch_sub(1, Ordering::Relaxed);
        match self.tx.try_push(message) {
            Pushed::Queued => Offer::Queued,
            Pushed::Dropped { first_of_burst } => {
                uncount();
                Stats::bump(&stats.dropped);
                if first_of_burst {
                    self.slow(self.tx.dropped());
                }
                Offer::Dropped
            }
            Pushed::Full { item, first_of_burst } => {
                uncount();
                if first_of_burst {
                    self.slow(0);
                }
                Offer::Full(item)
            }
            Pushed::Closed(_) => {
                uncount();
                Offer::Gone
            }
        }
    }

    /// Delivers `message`, waiting for room under `Block` (which holds the caller, and so
    /// the broker, back). False when the subscription is gone.
    pub async fn deliver(&self, message: Message) -> bool {
        let message = match self.offer(message) {
            Offer::Queued | Offer::Dropped => return true,
            Offer::Gone => return false,
            Offer::Full(m) => m,
        };
        let stats = &self.meter.stats;
        Stats::bump(&stats.delivered);
        if self.tx.push(message).await.is_ok() {
            true
        } else {
            stats.delivered.fetch_sub(1, Ordering::Relaxed);
            false
        }
    }
}

/// Delivers `message` to every target in turn (the last one takes the original, so a typed
/// payload with one reader is never copied), waiting under `Block`. Returns how many
/// subscriptions took it.
pub async fn deliver_all(targets: &[Target], message: Message) -> usize {
    let Some((last, rest)) = targets.split_last() else { return 0 };
    let mut reached = 0;
    for t in rest {
        reached += usize::from(t.deliver(message.clone()).await);
    }
    reached + usize::from(last.deliver(message).await)
}

/// Offers `message` to every target without waiting; the ones that were full under `Block`
/// come back with their copy, in order, for a task that may wait.
pub fn offer_all(targets: &[Target], message: Message) -> Vec<(Target, Message)> {
    let mut blocked = Vec::new();
    let Some((last, rest)) = targets.split_last() else { return blocked };
    for t in rest {
        if let Offer::Full(m) = t.offer(message.clone()) {
            blocked.push((t.clone(), m));
        }
    }
    if let Offer::Full(m) = last.offer(message) {
        blocked.push((last.clone(), m));
    }
    blocked
}

#[cfg(test)]
mod tests {
    use busbar_core::queue::{QueueConfig, queue};
    use busbar_core::{Overflow, Topic};

    use super::*;

    fn message(n: u8) -> Message {
        Message::new(Topic::new("a/b").expect("topic"), vec![n])
    }

    #[tokio::test]
    async fn every_policy_counts_the_same_way() {
        for overflow in [Overflow::DropNewest, Overflow::DropOldest] {
            let meter = Meter::new();
            let mut events = meter.events();
            let (tx, mut rx) = queue(QueueConfig::new(2, overflow));
            let target = Target::new(tx, "a/b", &meter);
            for n in 0..5 {
                assert!(target.deliver(message(n)).await);
            }
            let s = meter.snapshot();
            assert_eq!((s.delivered, s.dropped), (2, 3), "{overflow:?}");
            let mut read = 0;
            while rx.try_recv().is_some() {
                read += 1;
            }
            assert_eq!(
                read, s.delivered,
                "{overflow:?}: what the reader got is what was delivered"
            );
            assert!(matches!(events.try_next(), Some(ConnectionEvent::SlowConsumer { .. })));
            assert!(events.try_next().is_none(), "one report per burst");
        }
    }

    #[tokio::test]
    async fn block_waits_and_a_gone_reader_is_not_counted() {
        let meter = Meter::new();
        let (tx, mut rx) = queue(QueueConfig::new(1, Overflow::Block));
        let target = Target::new(tx, "a/b", &meter);
        assert!(matches!(target.offer(message(0)), Offer::Queued));
        let Offer::Full(m) = target.offer(message(1)) else { panic!("full") };
        let waiting = {
            let target = target.clone();
            tokio::spawn(async move { target.deliver(m).await })
        };
        assert_eq!(rx.recv().await.map(|m| m.payload.to_bytes().ok()), Some(Some(vec![0].into())));
        assert!(waiting.await.expect("join"));
        assert_eq!(meter.snapshot().delivered, 2);
        drop(rx);
        assert!(matches!(target.offer(message(2)), Offer::Gone));
        assert_eq!(meter.snapshot().delivered, 2);
    }
}
