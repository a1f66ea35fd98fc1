//! The routing table of one bus: subscriptions in a topic trie, and retained messages.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use busbar_core::message::Message;
use busbar_core::queue::QueueSender;
use busbar_core::stats::Stats;
use busbar_core::topic::{Topic, TopicFilter, TopicTrie};
use busbar_core::transport::ConnectionEvent;
use smallvec::SmallVec;
use tokio::sync::broadcast;

/// The connection a subscription belongs to: where its counters and events go.
pub(crate) struct Owner {
    pub(crate) stats: Arc<Stats>,
    pub(crate) events: broadcast::Sender<ConnectionEvent>,
}

/// One subscription's delivery point.
pub(crate) struct Entry {
    pub(crate) id: u64,
    pub(crate) filter: TopicFilter,
    pub(crate) tx: QueueSender<Message>,
    pub(crate) owner: Arc<Owner>,
    /// Skip messages its own connection published.
    pub(crate) no_local: bool,
}

/// What the trie stores under a filter: a plain subscription, or a queue group whose
/// members share the messages.
pub(crate) enum Slot {
    One(Entry),
    Group { name: Arc<str>, members: Vec<Entry>, next: AtomicUsize },
}

impl Slot {
    /// The member of a group that should get the next message: round-robin, skipping
    /// members whose queue is full when another has room.
    fn pick(&self) -> Option<&Entry> {
        match self {
            Slot::One(e) => Some(e),
            Slot::Group { members, next, .. } => {
                let n = members.len();
                if n == 0 {
                    return None;
                }
                let start = next.fetch_add(1, Ordering::Relaxed) % n;
                (0..n)
                    .map(|i| &members[(start + i) % n])
                    .find(|e| e.tx.has_room())
                    .or(Some(&members[start]))
            }
        }
    }
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
pub(crate) type Targets<'a> = SmallVec<[&'a Entry; 4]>;

impl Routes {
    /// Every subscription (one member per group) that `topic` reaches from `publisher`.
    pub(crate) fn targets(&self, topic: &str, publisher: &Arc<Owner>) -> Targets<'_> {
        let mut out = Targets::new();
        self.trie.for_each_match(topic, |slot| {
            if let Some(e) = slot.pick()
                && !(e.no_local && Arc::ptr_eq(&e.owner, publisher))
            {
                out.push(e);
            }
        });
        out
    }

    pub(crate) fn insert(&mut self, entry: Entry, group: Option<Arc<str>>) {
        let filter = entry.filter.clone();
        match group {
            None => self.trie.insert(&filter, Slot::One(entry)),
            Some(group) => {
                let existing = self
                    .trie
                    .remove(&filter, |s| matches!(s, Slot::Group { name, .. } if *name == group));
                let slot = match existing {
                    Some(Slot::Group { name, mut members, next }) => {
                        members.push(entry);
                        Slot::Group { name, members, next }
                    }
                    _ => {
                        Slot::Group { name: group, members: vec![entry], next: AtomicUsize::new(0) }
                    }
                };
                self.trie.insert(&filter, slot);
            }
        }
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
                let Some(Slot::Group { name, mut members, next }) = self.trie.remove(filter, |s| {
                    matches!(s, Slot::Group { name, members, .. }
                        if name == group && members.iter().any(|e| e.id == id))
                }) else {
                    return false;
                };
                members.retain(|e| e.id != id);
                if !members.is_empty() {
                    self.trie.insert(filter, Slot::Group { name, members, next });
                }
                true
            }
        }
    }
}
