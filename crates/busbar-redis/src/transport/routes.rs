//! Which local subscriptions each Redis subscription and each list feeds. Plain data, at the
//! bottom of the rooms: it reaches into none of them.

use std::collections::HashMap;

use busbar_core::topic::{Topic, TopicFilter};
use busbar_core::transport::Acknowledge;
use busbar_transport_kit::Target;
use busbar_transport_kit::fanout::{Fanout, Targets};
use tokio_util::sync::CancellationToken;

/// A Redis subscription: (is it a pattern, the channel or pattern).
pub(super) type SubKey = (bool, String);

/// The local subscriptions to one busbar filter under a Redis subscription. Several filters
/// can share one glob (`a/+` and `a/+/#` are both `a/*`), and each keeps its own check.
struct Feed {
    filter: TopicFilter,
    /// The glob matches more than the filter: check each message again.
    refilter: bool,
    locals: Fanout,
}

/// What a list read by local subscriptions is.
pub(super) enum ListRole {
    /// A queue group's list: items are envelopes, and the group is in the registry.
    Group { entry: String },
    /// A named queue (`Topic::named_queue`): items are bare payloads, delivered on `topic`.
    Named { topic: Topic },
    /// A durable subscription's stream, read in its consumer group (see `streams`).
    Durable { entry: String, acknowledge: Acknowledge },
}

/// The local subscriptions reading one list; each item goes to one of them.
pub(super) struct ListReader {
    pub(super) role: ListRole,
    pub(super) members: Fanout,
    /// Stops the task reading the list.
    pub(super) cancel: CancellationToken,
}

impl ListReader {
    /// The group registry entry, for a queue group.
    pub(super) fn entry(&self) -> Option<&String> {
        match &self.role {
            ListRole::Group { entry } => Some(entry),
            ListRole::Named { .. } | ListRole::Durable { .. } => None,
        }
    }
}

/// Local subscriptions, by the Redis subscription or the list that feeds them.
#[derive(Default)]
pub(super) struct Routes {
    channels: HashMap<SubKey, Vec<Feed>>,
    /// List key -> the local members reading that list (a queue group's or a named queue's).
    pub(super) lists: HashMap<String, ListReader>,
}

impl Routes {
    /// Adds local subscription `id` to `filter` under the Redis subscription `key`.
    pub(super) fn add_plain(
        &mut self,
        key: SubKey,
        filter: TopicFilter,
        refilter: bool,
        id: u64,
        target: Target,
    ) {
        let feeds = self.channels.entry(key).or_default();
        match feeds.iter_mut().find(|f| f.filter == filter) {
            Some(feed) => feed.locals.add(id, target),
            None => {
                let mut locals = Fanout::new(false);
                locals.add(id, target);
                feeds.push(Feed { filter, refilter, locals });
            }
        }
    }

    /// Removes local subscription `id` to `filter`; true when the Redis subscription `key`
    /// has no local subscription left (it is forgotten here, and may be unsubscribed).
    pub(super) fn remove_plain(&mut self, key: &SubKey, filter: &TopicFilter, id: u64) -> bool {
        let Some(feeds) = self.channels.get_mut(key) else { return false };
        if let Some(i) = feeds.iter().position(|f| f.filter == *filter)
            && feeds[i].locals.remove(id)
        {
            feeds.swap_remove(i);
        }
        if feeds.is_empty() {
            self.channels.remove(key);
            return true;
        }
        false
    }

    /// True while some local subscription needs the Redis subscription `key`.
    pub(super) fn has_channel(&self, key: &SubKey) -> bool {
        self.channels.contains_key(key)
    }

    /// Every Redis subscription the local subscriptions need.
    pub(super) fn channel_keys(&self) -> Vec<SubKey> {
        self.channels.keys().cloned().collect()
    }

    /// Where a message on `channel` that came through `key` goes: every local subscription
    /// whose filter matches the channel.
    pub(super) fn targets(&self, key: &SubKey, channel: &str) -> Targets {
        let mut out = Targets::new();
        for feed in self.channels.get(key).into_iter().flatten() {
            if !feed.refilter || feed.filter.matches_str(channel) {
                out.extend(feed.locals.targets());
            }
        }
        out
    }

    /// Adds member `id` to the reader of list `key`, made with `role` and `cancel` if there
    /// is none yet; returns the new reader's cancel token when one was made (its task is the
    /// caller's to start).
    pub(super) fn join_list(
        &mut self,
        key: &str,
        role: impl FnOnce() -> ListRole,
        cancel: impl FnOnce() -> CancellationToken,
        id: u64,
        target: Target,
    ) -> Option<CancellationToken> {
        let mut started = None;
        let reader = self.lists.entry(key.to_owned()).or_insert_with(|| {
            let token = cancel();
            started = Some(token.clone());
            ListReader { role: role(), members: Fanout::new(true), cancel: token }
        });
        reader.members.add(id, target);
        started
    }

    /// Removes member `id` from the reader of list `key`; when none is left the reader is
    /// stopped, forgotten, and returned.
    pub(super) fn leave_list(&mut self, key: &str, id: u64) -> Option<ListReader> {
        if !self.lists.get_mut(key)?.members.remove(id) {
            return None;
        }
        let reader = self.lists.remove(key)?;
        reader.cancel.cancel();
        Some(reader)
    }

    /// The registry entries of the queue groups with local members.
    pub(super) fn group_entries(&self) -> Vec<String> {
        self.lists.values().filter_map(|r| r.entry().cloned()).collect()
    }

    /// The registry entries and stream keys of the durable subscriptions read here.
    pub(super) fn durable_entries(&self) -> Vec<(String, String)> {
        self.lists
            .iter()
            .filter_map(|(key, r)| match &r.role {
                ListRole::Durable { entry, .. } => Some((entry.clone(), key.clone())),
                _ => None,
            })
            .collect()
    }

    /// Stops the durable stream readers (each gives back what it held).
    pub(super) fn stop_durable_readers(&mut self) {
        self.lists.retain(|_, r| {
            let durable = matches!(r.role, ListRole::Durable { .. });
            if durable {
                r.cancel.cancel();
            }
            !durable
        });
    }

    /// True while queue group `entry` has local members.
    pub(super) fn has_group(&self, entry: &str) -> bool {
        self.lists.values().any(|r| r.entry().is_some_and(|e| e == entry))
    }

    /// Forgets everything (subscriptions end) and stops every list reader.
    pub(super) fn clear(&mut self) {
        self.channels.clear();
        for (_, reader) in self.lists.drain() {
            reader.cancel.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use busbar_core::queue::{QueueConfig, queue};
    use busbar_core::topic::redis_subscription;
    use busbar_transport_kit::Meter;

    use super::*;

    fn add(routes: &mut Routes, filter: &str, id: u64) -> SubKey {
        let filter = TopicFilter::new(filter).expect("filter");
        let rs = redis_subscription(&filter);
        let key = (rs.is_pattern, rs.pattern_or_channel);
        let (tx, _rx) = queue(QueueConfig::default());
        let target = Target::new(tx, filter.as_str(), &Meter::new());
        routes.add_plain(key.clone(), filter, rs.needs_refilter, id, target);
        key
    }

    #[test]
    fn filters_sharing_a_glob_keep_their_own_check() {
        let mut routes = Routes::default();
        let one = add(&mut routes, "a/+", 1);
        let deep = add(&mut routes, "a/+/#", 2);
        let twin = add(&mut routes, "a/+", 3);
        assert!(one == deep && deep == twin, "one glob: {one:?} {deep:?}");
        assert_eq!(routes.targets(&one, "a/b").len(), 3);
        assert_eq!(routes.targets(&one, "a/b/c").len(), 1);
        assert_eq!(routes.targets(&one, "ab").len(), 0, "the glob matches, the filters do not");
        let a_plus = TopicFilter::new("a/+").expect("filter");
        assert!(!routes.remove_plain(&one, &a_plus, 1));
        assert!(!routes.remove_plain(&one, &a_plus, 3));
        assert_eq!(routes.targets(&one, "a/b").len(), 1);
        let a_deep = TopicFilter::new("a/+/#").expect("filter");
        assert!(routes.remove_plain(&one, &a_deep, 2), "the last one: unsubscribe");
        assert!(!routes.has_channel(&one));
    }
}
