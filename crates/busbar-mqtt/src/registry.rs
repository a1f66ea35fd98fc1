//! Which local subscriptions hang off which broker subscription, and dispatch to them.
//!
//! One broker subscription exists per distinct (filter, queue group); any number of local
//! subscriptions share it. Each broker subscription carries an MQTT 5 subscription
//! identifier, so an incoming message names exactly the broker subscriptions it matched and
//! is delivered once to each of their local subscriptions (overlapping filters do not
//! double-deliver, and a queue group's copy goes to one member only).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};

use busbar_core::message::{Message, QoS};
use busbar_core::queue::{Pushed, QueueSender};
use busbar_core::stats::Stats;
use busbar_core::topic::TopicFilter;
use busbar_core::transport::ConnectionEvent;
use tokio::sync::broadcast;

/// One local subscription.
pub(crate) struct Local {
    pub(crate) id: u64,
    pub(crate) tx: QueueSender<Message>,
}

/// One broker subscription and the local subscriptions it feeds.
pub(crate) struct BrokerSub {
    pub(crate) filter: TopicFilter,
    pub(crate) group: Option<String>,
    pub(crate) qos: QoS,
    pub(crate) no_local: bool,
    pub(crate) locals: Vec<Local>,
    next: AtomicUsize,
}

impl BrokerSub {
    /// The filter as sent to the broker (`$share/<group>/<filter>` for a queue group).
    pub(crate) fn path(&self) -> String {
        match &self.group {
            Some(g) => format!("$share/{g}/{}", self.filter),
            None => self.filter.as_str().to_owned(),
        }
    }
}

/// All subscriptions of one connection.
pub(crate) struct Registry {
    pub(crate) subs: HashMap<usize, BrokerSub>,
    by_key: HashMap<(TopicFilter, Option<String>), usize>,
    next_sub_id: usize,
    /// Messages a persistent session delivered before anything here subscribed to them
    /// (queued by the broker while this client was away), kept until a local subscription
    /// wants them.
    orphans: VecDeque<Message>,
}

/// Most messages kept for subscriptions not made yet; beyond that the oldest go (counted).
pub(crate) const ORPHANS: usize = 10_000;

impl Default for Registry {
    fn default() -> Self {
        // Identifiers start at a random point: a persistent session may still deliver
        // messages tagged with a previous connection's identifiers, which must not be
        // mistaken for this connection's (a match on the filter is checked as well).
        let start = (uuid::Uuid::new_v4().as_u128() % 200_000_000) as usize;
        Registry {
            subs: HashMap::new(),
            by_key: HashMap::new(),
            next_sub_id: start,
            orphans: VecDeque::new(),
        }
    }
}

/// What `add` did.
pub(crate) struct Added {
    /// The broker subscription's identifier.
    pub(crate) sub_id: usize,
    /// True when the broker must be asked to subscribe (first local subscription).
    pub(crate) new: bool,
}

impl Registry {
    pub(crate) fn add(
        &mut self,
        filter: TopicFilter,
        group: Option<String>,
        qos: QoS,
        no_local: bool,
        local: Local,
    ) -> busbar_core::Result<Added> {
        // MQTT keeps one subscription per filter and session: a second SUBSCRIBE to the same
        // filter replaces the first, options included. Local subscriptions therefore share
        // it, and must agree on what the broker applies for all of them.
        let key = (filter.clone(), group.clone());
        if let Some(&sub_id) = self.by_key.get(&key)
            && let Some(sub) = self.subs.get_mut(&sub_id)
        {
            if sub.no_local != no_local {
                return Err(busbar_core::Error::Unsupported {
                    transport: "mqtt",
                    feature: "a no-local and a plain subscription to the same filter on one connection",
                });
            }
            sub.locals.push(local);
            return Ok(Added { sub_id, new: false });
        }
        // Identifiers run 1..=268,435,455 (a variable byte integer); wrapping is harmless
        // because an identifier is reused only after its subscription is gone.
        self.next_sub_id = self.next_sub_id % 268_435_455 + 1;
        let sub_id = self.next_sub_id;
        self.by_key.insert(key, sub_id);
        self.subs.insert(
            sub_id,
            BrokerSub {
                filter,
                group,
                qos,
                no_local,
                locals: vec![local],
                next: AtomicUsize::new(0),
            },
        );
        Ok(Added { sub_id, new: true })
    }

    /// Removes local subscription `id` from broker subscription `sub_id`; returns the broker
    /// path to unsubscribe when it was the last one.
    pub(crate) fn remove(&mut self, sub_id: usize, id: u64) -> Option<String> {
        let sub = self.subs.get_mut(&sub_id)?;
        sub.locals.retain(|l| l.id != id);
        if !sub.locals.is_empty() {
            return None;
        }
        let sub = self.subs.remove(&sub_id)?;
        let path = sub.path();
        self.by_key.remove(&(sub.filter, sub.group));
        Some(path)
    }

    /// The local subscriptions a message matched through broker subscriptions `ids` (or,
    /// when the broker sent none, through every filter matching its topic), one member per
    /// queue group. Queue groups share live traffic only: a message from the retained store
    /// (flagged retained, since busbar never asks for retain-as-published) is not given to a
    /// group even if the broker sends it.
    pub(crate) fn targets(
        &self,
        ids: &[usize],
        message: &Message,
    ) -> Vec<(QueueSender<Message>, String)> {
        let topic = message.topic.as_str();
        let mut out = Vec::new();
        let mut take = |sub: &BrokerSub| {
            if sub.group.is_some() && message.retain {
                return;
            }
            if sub.group.is_some() {
                let n = sub.locals.len();
                if n == 0 {
                    return;
                }
                let start = sub.next.fetch_add(1, Ordering::Relaxed) % n;
                let chosen = (0..n)
                    .map(|i| &sub.locals[(start + i) % n])
                    .find(|l| l.tx.has_room())
                    .unwrap_or(&sub.locals[start]);
                out.push((chosen.tx.clone(), sub.filter.as_str().to_owned()));
            } else {
                out.extend(
                    sub.locals.iter().map(|l| (l.tx.clone(), sub.filter.as_str().to_owned())),
                );
            }
        };
        if ids.is_empty() {
            self.subs.values().filter(|s| s.filter.matches_str(topic)).for_each(&mut take);
        } else {
            ids.iter()
                .filter_map(|id| self.subs.get(id))
                .filter(|s| s.filter.matches_str(topic))
                .for_each(&mut take);
        }
        out
    }

    /// The queue of local subscription `id` under broker subscription `sub_id`.
    pub(crate) fn sender(&self, sub_id: usize, id: u64) -> Option<QueueSender<Message>> {
        self.subs.get(&sub_id)?.locals.iter().find(|l| l.id == id).map(|l| l.tx.clone())
    }

    /// Keeps a message nobody here subscribed to yet; returns true if an older one had to go.
    pub(crate) fn keep_orphan(&mut self, message: Message) -> bool {
        let full = self.orphans.len() >= ORPHANS;
        if full {
            self.orphans.pop_front();
        }
        self.orphans.push_back(message);
        full
    }

    /// Takes the kept messages `filter` matches (not for queue groups: only live traffic).
    pub(crate) fn take_orphans(&mut self, filter: &TopicFilter) -> Vec<Message> {
        let (matching, rest): (Vec<_>, Vec<_>) =
            self.orphans.drain(..).partition(|m| filter.matches(&m.topic));
        self.orphans = rest.into();
        matching
    }
}

/// Queues `message` for one local subscription, waiting for room under `Block` (which holds
/// back reading from the broker: backpressure reaches the socket), counting drops and
/// reporting the first of a burst.
pub(crate) async fn deliver(
    tx: QueueSender<Message>,
    filter: String,
    message: Message,
    stats: &Stats,
    events: &broadcast::Sender<ConnectionEvent>,
) {
    let slow = |dropped| {
        let _ = events.send(ConnectionEvent::SlowConsumer { filter: filter.clone(), dropped });
    };
    // Counted before the push, so whoever reads a message also sees it counted; taken back
    // when the message does not end up queued.
    Stats::bump(&stats.delivered);
    let uncount = || stats.delivered.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    match tx.try_push(message) {
        Pushed::Queued => {}
        Pushed::Dropped { first_of_burst } => {
            uncount();
            Stats::bump(&stats.dropped);
            if first_of_burst {
                slow(tx.dropped());
            }
        }
        Pushed::Full { item, first_of_burst } => {
            if first_of_burst {
                slow(0);
            }
            if tx.push(item).await.is_err() {
                uncount();
            }
        }
        Pushed::Closed(_) => {
            uncount();
        }
    }
}
