//! The routing table of one bus: subscriptions in a topic trie, and retained messages.

use std::collections::BTreeMap;
use std::sync::Arc;

use busbar_core::message::Message;
use busbar_core::topic::{Topic, TopicFilter, TopicTrie};
use busbar_transport_kit::{Fanout, Meter, Target};
use smallvec::SmallVec;

/// One plain subscription's delivery point.
pub(crate) struct Entry {
    pub(crate) id: u64,
    pub(crate) target: Target,
    /// Skip messages its own connection published.
    pub(crate) no_local: bool,
}

/// What the trie stores under a filter: a plain subscription, or a queue group whose
/// members share the messages.
pub(crate) enum Slot {
    One(Entry),
    Group { name: Arc<str>, members: Fanout },
}

/// Subscriptions and retained messages. Guarded by one `RwLock` in the bus: publishing takes
/// it shared, subscribing exclusive, so a retained message and a new subscription never race
/// (the subscriber gets it either from the store or live, exactly once).
#[derive(Default)]
pub(crate) struct Routes {
    pub(crate) trie: TopicTrie<Slot>,
    pub(crate) retained: std::sync::Mutex<BTreeMap<Topic, Message>>,
}

/// Targets of one publish; most messages have few, so they live on the stack.
pub(crate) type Targets<'a> = SmallVec<[&'a Target; 4]>;

impl Routes {
    /// Every subscription (one member per group) that `topic` reaches from the connection
    /// of `publisher`.
    pub(crate) fn targets(&self, topic: &str, publisher: &Meter) -> Targets<'_> {
        let mut out = Targets::new();
        self.trie.for_each_match(topic, |slot| match slot {
            Slot::One(e) => {
                if !(e.no_local && e.target.meter().is(publisher)) {
                    out.push(&e.target);
                }
            }
            Slot::Group { members, .. } => out.extend(members.pick()),
        });
        out
    }

    pub(crate) fn insert_one(&mut self, filter: &TopicFilter, entry: Entry) {
        self.trie.insert(filter, Slot::One(entry));
    }

    pub(crate) fn insert_member(
        &mut self,
        filter: &TopicFilter,
        group: Arc<str>,
        id: u64,
        target: Target,
    ) {
        let existing =
            self.trie.remove(filter, |s| matches!(s, Slot::Group { name, .. } if *name == group));
        let (name, mut members) = match existing {
            Some(Slot::Group { name, members }) => (name, members),
            _ => (group, Fanout::new(true)),
        };
        members.add(id, target);
        self.trie.insert(filter, Slot::Group { name, members });
    }

    /// Removes subscription `id`; true if it was there.
    pub(crate) fn remove(
        &mut self,
        filter: &TopicFilter,
        group: Option<&Arc<str>>,
        id: u64,
    ) -> bool {
        match group {
            None => self.trie.remove(filter, |s| matches!(s, Slot::One(e) if e.id == id)).is_some(),
            Some(group) => {
                let Some(Slot::Group { name, mut members }) = self.trie.remove(filter, |s| {
                    matches!(s, Slot::Group { name, members } if name == group && members.target(id).is_some())
                }) else {
                    return false;
                };
                if !members.remove(id) {
                    self.trie.insert(filter, Slot::Group { name, members });
                }
                true
            }
        }
    }
}
