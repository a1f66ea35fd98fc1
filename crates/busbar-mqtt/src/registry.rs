//! Which local subscriptions hang off which broker subscription, and dispatch to them.
//!
//! One broker subscription exists per distinct (filter, queue group); any number of local
//! subscriptions share it. Each broker subscription carries an MQTT 5 subscription
//! identifier, so an incoming message names exactly the broker subscriptions it matched and
//! is delivered once to each of their local subscriptions (overlapping filters do not
//! double-deliver, and a queue group's copy goes to one member only).

use std::collections::{HashMap, VecDeque};

use busbar_core::error::{OpError, SubscribeError, SubscribeErrorKind};
use busbar_core::message::{Message, QoS};
use busbar_core::topic::{TopicFilter, TopicTrie};
use busbar_core::transport::Acknowledge;
use busbar_transport_kit::Target;
use busbar_transport_kit::fanout::{Fanout, Targets};

use crate::protocol::Incoming;

/// One broker subscription and the local subscriptions it feeds.
pub(crate) struct BrokerSub {
    pub(crate) filter: TopicFilter,
    pub(crate) group: Option<String>,
    pub(crate) qos: QoS,
    pub(crate) no_local: bool,
    /// When its messages are acknowledged to the broker (in a persistent session).
    pub(crate) acknowledge: Acknowledge,
    pub(crate) locals: Fanout,
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
    /// The broker subscriptions by filter, for messages that name none (MQTT 3.1.1 has no
    /// subscription identifiers): a lookup per topic level instead of a match against every
    /// filter, so a connection with 10,000 subscriptions dispatches as fast as one with one.
    by_filter: TopicTrie<usize>,
    next_sub_id: usize,
    /// Messages a persistent session delivered before anything here subscribed to them
    /// (queued by the broker while this client was away), kept until a local subscription
    /// wants them.
    orphans: VecDeque<(Message, Incoming)>,
    /// Filters of durable subscriptions removed on this connection and not subscribed
    /// again: what the broker still sends for them is nobody's.
    removed_durables: Vec<TopicFilter>,
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
            by_filter: TopicTrie::new(),
            next_sub_id: start,
            orphans: VecDeque::new(),
            removed_durables: Vec::new(),
        }
    }
}

/// The local subscriptions one message goes to, by when it is acknowledged.
#[derive(Default)]
pub(crate) struct Routed {
    /// Acknowledged once handed over to all of them.
    pub(crate) handed_over: Targets,
    /// Acknowledged through the message's receipt, once every one of them acknowledged.
    pub(crate) by_receipt: Targets,
}

impl Routed {
    pub(crate) fn is_empty(&self) -> bool {
        self.handed_over.is_empty() && self.by_receipt.is_empty()
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
        acknowledge: Acknowledge,
        local: (u64, Target),
    ) -> Result<Added, SubscribeError> {
        // MQTT keeps one subscription per filter and session: a second SUBSCRIBE to the same
        // filter replaces the first, options included. Local subscriptions therefore share
        // it, and must agree on what the broker applies for all of them.
        self.removed_durables.retain(|f| *f != filter);
        let key = (filter.clone(), group.clone());
        if let Some(&sub_id) = self.by_key.get(&key)
            && let Some(sub) = self.subs.get_mut(&sub_id)
        {
            if sub.no_local != no_local {
                return Err(OpError::new(
                    SubscribeErrorKind::Unsupported,
                    "MQTT keeps one subscription per filter: a no-local and a plain \
                     subscription to the same filter cannot share one connection",
                ));
            }
            if sub.acknowledge != acknowledge {
                return Err(OpError::new(
                    SubscribeErrorKind::Unsupported,
                    "subscriptions sharing one broker subscription (the same filter and group \
                     or durable name) must acknowledge the same way",
                ));
            }
            sub.locals.add(local.0, local.1);
            return Ok(Added { sub_id, new: false });
        }
        // Identifiers run 1..=268,435,455 (a variable byte integer); wrapping is harmless
        // because an identifier is reused only after its subscription is gone.
        self.next_sub_id = self.next_sub_id % 268_435_455 + 1;
        let sub_id = self.next_sub_id;
        self.by_key.insert(key, sub_id);
        self.by_filter.insert(&filter, sub_id);
        let mut locals = Fanout::new(group.is_some());
        locals.add(local.0, local.1);
        self.subs.insert(sub_id, BrokerSub { filter, group, qos, no_local, acknowledge, locals });
        Ok(Added { sub_id, new: true })
    }

    /// Removes local subscription `id` from broker subscription `sub_id`; returns the broker
    /// path to unsubscribe when it was the last one.
    pub(crate) fn remove(&mut self, sub_id: usize, id: u64) -> Option<String> {
        let sub = self.subs.get_mut(&sub_id)?;
        if !sub.locals.remove(id) {
            return None;
        }
        let sub = self.subs.remove(&sub_id)?;
        let path = sub.path();
        self.by_filter.remove(&sub.filter, |id| *id == sub_id);
        self.by_key.remove(&(sub.filter, sub.group));
        Some(path)
    }

    /// The local subscriptions a message matched through broker subscriptions `ids` (or,
    /// when the broker sent none, through every filter matching its topic), one member per
    /// queue group. Queue groups share live traffic only: a message from the retained store
    /// (flagged retained, since busbar never asks for retain-as-published) is not given to a
    /// group even if the broker sends it.
    pub(crate) fn targets(&self, ids: &[usize], message: &Message) -> Routed {
        let topic = message.topic.as_str();
        let mut out = Routed::default();
        let mut take = |sub: &BrokerSub| {
            if !(sub.locals.is_group() && message.retain) {
                let into = match sub.acknowledge {
                    Acknowledge::OnHandOver => &mut out.handed_over,
                    _ => &mut out.by_receipt,
                };
                into.extend(sub.locals.targets());
            }
        };
        if ids.is_empty() {
            self.by_filter.for_each_match(topic, |id| {
                if let Some(sub) = self.subs.get(id) {
                    take(sub);
                }
            });
        } else {
            ids.iter()
                .filter_map(|id| self.subs.get(id))
                .filter(|s| s.filter.matches_str(topic))
                .for_each(&mut take);
        }
        out
    }

    /// The queue of local subscription `id` under broker subscription `sub_id`.
    pub(crate) fn target(&self, sub_id: usize, id: u64) -> Option<Target> {
        self.subs.get(&sub_id)?.locals.target(id).cloned()
    }

    /// Keeps a message nobody here subscribed to yet, not acknowledged; returns the older
    /// one that had to go to make room.
    pub(crate) fn keep_orphan(
        &mut self,
        message: Message,
        incoming: Incoming,
    ) -> Option<(Message, Incoming)> {
        let gone = if self.orphans.len() >= ORPHANS { self.orphans.pop_front() } else { None };
        self.orphans.push_back((message, incoming));
        gone
    }

    /// A durable subscription of `filter` was removed: returns what was kept for it, and
    /// remembers it so that what still comes for it is known to be nobody's.
    pub(crate) fn forget_durable(&mut self, filter: &TopicFilter) -> Vec<(Message, Incoming)> {
        if !self.removed_durables.contains(filter) {
            self.removed_durables.push(filter.clone());
        }
        self.take_orphans(filter)
    }

    /// Whether `message` is for a durable subscription removed on this connection.
    pub(crate) fn for_removed_durable(&self, message: &Message) -> bool {
        self.removed_durables.iter().any(|f| f.matches(&message.topic))
    }

    /// Takes the kept messages `filter` matches.
    pub(crate) fn take_orphans(&mut self, filter: &TopicFilter) -> Vec<(Message, Incoming)> {
        let (matching, rest): (Vec<_>, Vec<_>) =
            self.orphans.drain(..).partition(|(m, _)| filter.matches(&m.topic));
        self.orphans = rest.into();
        matching
    }
}

#[cfg(test)]
mod tests {
    use busbar_core::queue::{QueueConfig, QueueReceiver, queue};
    use busbar_core::{Overflow, Topic};
    use busbar_transport_kit::Meter;

    use super::*;

    fn local(id: u64, filter: &str) -> ((u64, Target), QueueReceiver<Message>) {
        let (tx, rx) = queue(QueueConfig::new(8, Overflow::Block));
        ((id, Target::new(tx, filter, &Meter::new())), rx)
    }

    fn add(registry: &mut Registry, id: u64, filter: &str) -> (usize, QueueReceiver<Message>) {
        let (l, rx) = local(id, filter);
        let filter = TopicFilter::new(filter).expect("filter");
        let added = registry
            .add(filter, None, QoS::AtMostOnce, false, Acknowledge::OnHandOver, l)
            .expect("added");
        (added.sub_id, rx)
    }

    fn matched(registry: &Registry, topic: &str) -> usize {
        let message = Message::new(Topic::new(topic).expect("topic"), &b""[..]);
        registry.targets(&[], &message).handed_over.len()
    }

    /// Without subscription identifiers (MQTT 3.1.1) a message goes to every filter that
    /// matches its topic, looked up by topic, and to nothing once unsubscribed.
    #[test]
    fn messages_without_identifiers_find_their_filters() {
        let mut registry = Registry::default();
        let (exact, _a) = add(&mut registry, 1, "plant/line1/temp");
        let (_, _b) = add(&mut registry, 2, "plant/+/temp");
        let (_, _c) = add(&mut registry, 3, "plant/#");
        for i in 0..1000 {
            let (_, _) = add(&mut registry, 100 + i, &format!("other/{i}"));
        }
        assert_eq!(matched(&registry, "plant/line1/temp"), 3);
        assert_eq!(matched(&registry, "plant/line2/temp"), 2);
        assert_eq!(matched(&registry, "plant"), 1, "# matches its parent level");
        assert_eq!(matched(&registry, "other/7"), 1);
        assert_eq!(matched(&registry, "nowhere"), 0);
        assert_eq!(registry.remove(exact, 1).as_deref(), Some("plant/line1/temp"));
        assert_eq!(matched(&registry, "plant/line1/temp"), 2, "the removed filter is gone");
    }
}
