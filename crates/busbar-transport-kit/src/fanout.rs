//! The local subscriptions one broker subscription feeds.
//!
//! Transports keep one broker subscription per distinct (filter, queue group) on a
//! connection, however many local subscriptions share it: every local subscription is
//! offered each message in the same order, and leaving never has to race an unsubscribe
//! against later publishes. A plain subscription's message goes to all of its local
//! subscriptions; a queue group's to one of them.

use std::sync::atomic::{AtomicUsize, Ordering};

use smallvec::SmallVec;

use crate::delivery::Target;

/// Targets of one message; most have few, so they live on the stack.
pub type Targets = SmallVec<[Target; 4]>;

/// The local subscriptions of one broker subscription.
pub struct Fanout {
    members: Vec<(u64, Target)>,
    group: bool,
    /// Where the next pick starts looking (a queue group's round robin).
    next: AtomicUsize,
}

impl Fanout {
    /// An empty set; `group` makes each message go to one member.
    pub fn new(group: bool) -> Self {
        Fanout { members: Vec::new(), group, next: AtomicUsize::new(0) }
    }

    /// True for a queue group's set.
    pub fn is_group(&self) -> bool {
        self.group
    }

    /// Adds local subscription `id`.
    pub fn add(&mut self, id: u64, target: Target) {
        self.members.push((id, target));
    }

    /// Removes local subscription `id`; true when none is left.
    pub fn remove(&mut self, id: u64) -> bool {
        self.members.retain(|(i, _)| *i != id);
        self.members.is_empty()
    }

    /// True when no local subscription is left.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// How many local subscriptions there are.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// The queue of local subscription `id`.
    pub fn target(&self, id: u64) -> Option<&Target> {
        self.members.iter().find(|(i, _)| *i == id).map(|(_, t)| t)
    }

    /// The queue-group member to give the next message: the next in turn with room, else
    /// the next still open, so a full member does not hold the group back while another
    /// waits idle, and a member that just left never takes a message. `None` when every
    /// member is gone.
    pub fn pick(&self) -> Option<&Target> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let in_turn = (0..n).map(|i| &self.members[(start + i) % n].1);
        let chosen = in_turn
            .clone()
            .find(|t| t.has_room() && !t.is_closed())
            .or_else(|| in_turn.clone().find(|t| !t.is_closed()))?;
        Some(chosen)
    }

    /// Where one message goes: every member, or for a queue group the one [`pick`](Self::pick)
    /// chooses. Cloned out, so the caller can deliver after releasing its lock.
    pub fn targets(&self) -> Targets {
        if self.group {
            self.pick().cloned().into_iter().collect()
        } else {
            self.members.iter().map(|(_, t)| t.clone()).collect()
        }
    }

    /// Every member, whatever the kind of set (for seeding, or ending them all).
    pub fn all(&self) -> impl Iterator<Item = &Target> {
        self.members.iter().map(|(_, t)| t)
    }
}

#[cfg(test)]
mod tests {
    use busbar_core::message::Message;
    use busbar_core::queue::{QueueConfig, QueueReceiver, queue};
    use busbar_core::{Overflow, Topic};

    use super::*;

    fn member(capacity: usize) -> (Target, QueueReceiver<Message>) {
        let (tx, rx) = queue(QueueConfig::new(capacity, Overflow::Block));
        (Target::new(tx, "a", &crate::Meter::new()), rx)
    }

    fn m() -> Message {
        Message::new(Topic::new("a").expect("topic"), &b""[..])
    }

    #[test]
    fn a_group_takes_turns_and_skips_the_full_and_the_gone() {
        let mut group = Fanout::new(true);
        let (a, _ra) = member(1);
        let (b, rb) = member(8);
        let (c, rc) = member(8);
        group.add(1, a.clone());
        group.add(2, b);
        group.add(3, c);
        assert!(a.seed(m()));
        // `a` is full: every pick lands on b or c, alternating.
        let picks: Vec<bool> =
            (0..4).map(|_| group.pick().is_some_and(|t| t.has_room() && !t.is_closed())).collect();
        assert_eq!(picks, [true; 4]);
        drop(rb);
        drop(rc);
        // Only the full one is still open: it is the one left to take messages.
        assert!(group.pick().is_some_and(|t| !t.is_closed()));
        assert_eq!(group.targets().len(), 1);
        assert!(!group.remove(1));
        assert!(group.pick().is_none(), "every member left is gone");
    }

    #[test]
    fn a_plain_set_gives_every_member_a_copy() {
        let mut plain = Fanout::new(false);
        let (a, _ra) = member(4);
        let (b, _rb) = member(4);
        plain.add(1, a);
        plain.add(2, b);
        assert_eq!(plain.targets().len(), 2);
        assert!(!plain.remove(1));
        assert!(plain.remove(2));
    }
}
