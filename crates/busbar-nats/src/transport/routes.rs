//! Routes: one NATS subscription (two for `a/#`) per distinct (filter, queue group) on a
//! connection, shared by any number of local subscriptions.
//!
//! The route's waker, registered with async-nats' per-subscription buffers, moves each
//! message on to every local delivery queue in arrival order as async-nats hands it over (no
//! task hop: see the `pump` room), applying the queue's overflow policy; a queue group's copy
//! goes to one local member. Only a message that meets a full `Block` queue is handed to the
//! route's stall task, which waits for room while the route takes nothing more. Sharing the
//! route means every local subscription to one filter is offered the same messages in the
//! same order, and leaving a group on this connection never has to race an UNSUB against
//! later publishes.

use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use busbar_core::message::Message;
use busbar_core::topic::{Topic, TopicFilter, topic_from_nats};
use busbar_transport_kit::delivery::deliver_all;
use busbar_transport_kit::{Fanout, Meter, Offer, Target};
use futures_util::Stream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::pump::{Drain, Pump, lock};
use crate::convert::message_in;

/// A route's key: the filter and the queue group.
pub(super) type RouteKey = (String, Option<String>);

/// A message that waits for room in a full `Block` queue, and the queues it still has to
/// reach (the full one first).
type Stall = (Message, Vec<Target>);

struct RouteState {
    /// The local subscriptions.
    fanout: Fanout,
    /// The NATS subscriptions; `None` once the last local subscription left (dropping them
    /// sends the UNSUBs).
    nats: Option<Vec<async_nats::Subscriber>>,
    /// Set while a message waits for room in a full `Block` queue: nothing else is taken
    /// from async-nats meanwhile, so order is kept.
    blocked: bool,
    /// That message and the queues it still has to reach.
    stalled: Option<Stall>,
}

/// One NATS subscription (or two, for `a/#`) shared by the local subscriptions to one
/// filter and queue group.
pub(super) struct Route {
    filter: TopicFilter,
    /// For each NATS subscription, the topic of its messages when its subject is literal.
    literal: Vec<Option<Topic>>,
    /// NATS wildcards ignore MQTT's `$` rule: a filter starting with a wildcard must not
    /// deliver `$` topics.
    recheck: bool,
    /// async-nats' ids of the NATS subscriptions (its slow-consumer reports name them).
    pub(super) sids: Vec<u64>,
    state: Mutex<RouteState>,
    /// Stops the route's stall task (a child of the connection's shutdown token).
    stop: CancellationToken,
    /// Wakes the stall task when a message waits for room.
    unstall: Notify,
    pump: Pump,
    meter: Meter,
}

impl Route {
    /// A route for `filter` (a queue group's when `group`) over the NATS `subscribers` to
    /// `subjects`, whose ids are `sids`. It takes nothing until [`start`](Self::start)ed.
    pub(super) fn new(
        filter: &TopicFilter,
        group: bool,
        subjects: &[String],
        subscribers: Vec<async_nats::Subscriber>,
        sids: Vec<u64>,
        stop: CancellationToken,
        meter: &Meter,
    ) -> Arc<Route> {
        let literal = subjects
            .iter()
            .map(|subject| {
                let wild = subject.split('.').any(|t| t == "*" || t == ">");
                if wild { None } else { topic_from_nats(subject).ok() }
            })
            .collect();
        let recheck = filter.levels().next().is_some_and(|l| l == "+" || l == "#");
        Arc::new(Route {
            filter: filter.clone(),
            literal,
            recheck,
            sids,
            state: Mutex::new(RouteState {
                fanout: Fanout::new(group),
                nats: Some(subscribers),
                blocked: false,
                stalled: None,
            }),
            stop,
            unstall: Notify::new(),
            pump: Pump::new(),
            meter: meter.clone(),
        })
    }

    /// Registers the route's waker with async-nats (taking anything already buffered) and
    /// starts its stall task.
    pub(super) fn start(self: &Arc<Self>) {
        self.pump.arm(self);
        tokio::spawn(unstall(Arc::downgrade(self), self.stop.clone()));
        self.drain();
    }

    /// Adds local subscription `id`, delivering to `target`.
    pub(super) fn add(&self, id: u64, target: Target) {
        lock(&self.state).fanout.add(id, target);
    }

    /// Removes local subscription `id`. When it was the last one the route ends: its stall
    /// task stops, and the NATS subscriptions come back for the caller to drop (which sends
    /// their UNSUBs).
    pub(super) fn remove(&self, id: u64) -> Option<Vec<async_nats::Subscriber>> {
        let mut state = lock(&self.state);
        if !state.fanout.remove(id) {
            return None;
        }
        let subscribers = state.nats.take();
        drop(state);
        self.stop.cancel();
        subscribers
    }

    /// Ends the route with the connection: its local subscriptions end (their senders go),
    /// and so do its NATS subscriptions.
    pub(super) fn end(&self) {
        let mut state = lock(&self.state);
        state.fanout = Fanout::new(state.fanout.is_group());
        state.nats = None;
        state.stalled = None;
    }

    /// Moves what async-nats holds for this route into the local delivery queues, without
    /// waiting, until its buffers are empty (the route's waker is then registered with them),
    /// a `Block` queue is full (the stall task takes over), or the route is gone.
    fn drain_locked(&self, state: &mut RouteState, cx: &mut Context<'_>) {
        if state.blocked {
            return;
        }
        let RouteState { fanout, nats, blocked, stalled } = state;
        let Some(subscribers) = nats.as_mut() else { return };
        // In subscription order: for `a/#`, what came on `a` goes before what came on
        // `a.>` in the same drain.
        for (i, sub) in subscribers.iter_mut().enumerate() {
            while let Poll::Ready(Some(m)) = Pin::new(&mut *sub).poll_next(cx) {
                if let Some(stall) = self.route_one(i, m, fanout) {
                    *blocked = true;
                    *stalled = Some(stall);
                    self.unstall.notify_one();
                    return;
                }
            }
        }
    }

    /// Offers one message to the local subscriptions; returns what must wait for room.
    fn route_one(&self, i: usize, m: async_nats::Message, fanout: &Fanout) -> Option<Stall> {
        let message = match message_in(m, self.literal.get(i).and_then(Option::as_ref)) {
            Ok(m) => m,
            Err(e) => {
                self.meter.discard("a message on a subject busbar cannot name", &e);
                return None;
            }
        };
        if self.recheck && !self.filter.matches(&message.topic) {
            return None;
        }
        if fanout.is_group() {
            // One local member takes the group's copy.
            let member = fanout.pick()?;
            return match member.offer(message) {
                Offer::Full(m) => Some((m, vec![member.clone()])),
                Offer::Queued | Offer::Dropped | Offer::Gone => None,
            };
        }
        // Every member in turn; the last takes the original, so one reader costs no copy.
        let n = fanout.len();
        let mut message = Some(message);
        for (k, member) in fanout.all().enumerate() {
            let m = if k + 1 == n { message.take()? } else { message.clone()? };
            if let Offer::Full(m) = member.offer(m) {
                return Some((m, fanout.all().skip(k).cloned().collect()));
            }
        }
        None
    }
}

impl Drain for Route {
    fn drain(&self) {
        self.pump.run(&self.state, |state, cx| self.drain_locked(state, cx));
    }
}

/// Delivers a message that waits for room in a full `Block` queue, then lets the route
/// drain again. Waiting here leaves later messages in async-nats' buffer for the
/// subscription, which drops (and counts) beyond `subscription_capacity`.
async fn unstall(route: Weak<Route>, stop: CancellationToken) {
    loop {
        let Some(r) = route.upgrade() else { return };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = r.unstall.notified() => {}
            _ = r.pump.redrain_wanted() => {
                // A fresh, unconstrained budget: see the `pump` room.
                tokio::task::unconstrained(async { r.drain() }).await;
                continue;
            }
        }
        let stalled = lock(&r.state).stalled.take();
        if let Some((message, targets)) = stalled {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = deliver_all(&targets, message) => {}
            }
        }
        lock(&r.state).blocked = false;
        r.drain();
    }
}
