//! The queue-group registry: which groups exist anywhere (the set `busbar:groups`, with
//! notices on `busbar:ctl`), this connection's cache of it, and the commands that join and
//! leave a group. Durable subscriptions are in the same registry (their entries end in
//! [`DURABLE_MARK`]) with a stream instead of a list, and stay there when their readers
//! leave. At the bottom of the rooms with the routes: it reaches into none of them.

use std::collections::HashSet;
use std::sync::Arc;

use busbar_core::topic::{TopicFilter, TopicTrie};
use redis::RedisResult;
use redis::aio::MultiplexedConnection;

/// Control channel: queue-group registrations and departures ("+entry" / "-entry").
pub(super) const CTL_CHANNEL: &str = "busbar:ctl";
/// Set of every queue group entry (`group \0 filter`) that has members somewhere.
const GROUPS_KEY: &str = "busbar:groups";
/// Counts registrations (a group joined, a durable subscription made): a publisher reads
/// it in every pipeline, ahead of its publishes, and so learns that its cache of the
/// registry may have missed an entry those publishes were for (see `send`).
pub(super) const GENERATION_KEY: &str = "busbar:groups:generation";

/// Leaves a queue group: forget this connection; if it was the last member anywhere, drop
/// the registration and the list, and tell every connection.
const LEAVE_SCRIPT: &str = r"
redis.call('SREM', KEYS[1], ARGV[1])
if redis.call('SCARD', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[2], ARGV[2])
  redis.call('DEL', KEYS[3])
  redis.call('PUBLISH', ARGV[3], '-' .. ARGV[2])
end
return 1";

/// The end of a durable subscription's registry entry (`name \0 filter \0 durable`).
pub(super) const DURABLE_MARK: &str = "\0durable";
/// The consumer group every reader of a durable subscription's stream reads in.
pub(super) const STREAM_GROUP: &str = "busbar";
/// What a durable subscription's stream key starts with.
const STREAM_PREFIX: &str = "busbar:durable:";

/// Registers a durable subscription: its stream and consumer group (reading from the
/// stream's start, which is empty when new), then the registry entry, so that every
/// publish after the notice lands in the stream.
const REGISTER_SCRIPT: &str = r"
redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[3], '0', 'MKSTREAM')
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then
  redis.call('INCR', KEYS[3])
  redis.call('PUBLISH', ARGV[2], '+' .. ARGV[1])
end
return 1";

/// Removes a durable subscription with what its stream kept.
const REMOVE_SCRIPT: &str = r"
if redis.call('SREM', KEYS[2], ARGV[1]) == 1 then
  redis.call('PUBLISH', ARGV[2], '-' .. ARGV[1])
end
redis.call('DEL', KEYS[1])
return 1";

/// The registry entry of durable subscription `name` of `filter`.
pub(super) fn durable_entry(name: &str, filter: &TopicFilter) -> String {
    format!("{name}\0{}{DURABLE_MARK}", filter.as_str())
}

/// The stream a durable subscription's messages wait in (names have no `:`, so the key is
/// one subscription's only).
pub(super) fn stream_key(name: &str, filter: &str) -> String {
    format!("{STREAM_PREFIX}{name}:{filter}")
}

/// True for a durable subscription's stream key (a publish adds to it with `XADD`).
pub(super) fn is_stream(key: &str) -> bool {
    key.starts_with(STREAM_PREFIX)
}

/// Registers durable subscription `entry` with its stream `key` (see [`REGISTER_SCRIPT`]).
pub(super) async fn register_durable(
    conn: &mut MultiplexedConnection,
    entry: &str,
    key: &str,
) -> RedisResult<()> {
    redis::cmd("EVAL")
        .arg(REGISTER_SCRIPT)
        .arg(3)
        .arg(key)
        .arg(GROUPS_KEY)
        .arg(GENERATION_KEY)
        .arg(entry)
        .arg(CTL_CHANNEL)
        .arg(STREAM_GROUP)
        .exec_async(conn)
        .await
}

/// Removes durable subscription `entry` and its stream `key` (see [`REMOVE_SCRIPT`]).
pub(super) async fn remove_durable(
    conn: &mut MultiplexedConnection,
    entry: &str,
    key: &str,
) -> RedisResult<()> {
    redis::cmd("EVAL")
        .arg(REMOVE_SCRIPT)
        .arg(2)
        .arg(key)
        .arg(GROUPS_KEY)
        .arg(entry)
        .arg(CTL_CHANNEL)
        .exec_async(conn)
        .await
}

/// The registry entry of queue group `group` on `filter`.
pub(super) fn entry(group: &str, filter: &TopicFilter) -> String {
    format!("{group}\0{}", filter.as_str())
}

/// The list a queue group's messages wait in.
pub(super) fn list_key(entry: &str) -> String {
    format!("busbar:q:{entry}")
}

/// The set of connections with members in a queue group.
fn members_key(entry: &str) -> String {
    format!("busbar:qm:{entry}")
}

/// Queue groups known to exist anywhere, as every connection's publisher sees them.
#[derive(Default)]
pub(super) struct GroupCache {
    entries: HashSet<String>,
    trie: TopicTrie<Arc<str>>,
    /// The registry's generation when it was last read whole.
    pub(super) generation: i64,
}

impl GroupCache {
    /// Applies a notice from `busbar:ctl` ("+entry" or "-entry").
    pub(super) fn apply(&mut self, notice: &[u8]) {
        let Some((&sign, entry)) = notice.split_first() else { return };
        let Ok(entry) = std::str::from_utf8(entry) else { return };
        let (key, filter) = match entry.strip_suffix(DURABLE_MARK) {
            Some(durable) => {
                let Some((name, filter)) = durable.split_once('\0') else { return };
                (stream_key(name, filter), filter)
            }
            None => {
                let Some((_, filter)) = entry.split_once('\0') else { return };
                (list_key(entry), filter)
            }
        };
        let Ok(filter) = TopicFilter::new(filter) else { return };
        match sign {
            b'+' if self.entries.insert(entry.to_owned()) => {
                self.trie.insert(&filter, Arc::from(key));
            }
            b'-' if self.entries.remove(entry) => {
                self.trie.remove(&filter, |k| **k == *key);
            }
            _ => {}
        }
    }

    /// This cache, replaced by the registry as read (its generation and `busbar:groups`).
    pub(super) fn replace(&mut self, (generation, entries): (i64, Vec<Vec<u8>>)) {
        *self = GroupCache { generation, ..GroupCache::default() };
        for e in entries {
            let mut notice = Vec::with_capacity(e.len() + 1);
            notice.push(b'+');
            notice.extend_from_slice(&e);
            self.apply(&notice);
        }
    }

    /// Calls `f` with the list of every group, and the stream of every durable
    /// subscription, whose filter matches `topic`.
    pub(super) fn for_each_list(&self, topic: &str, f: impl FnMut(&Arc<str>)) {
        if !self.entries.is_empty() {
            self.trie.for_each_match(topic, f);
        }
    }
}

/// Reads the registry, the authority the caches follow: its generation (read first, so a
/// registration in between makes the next publish read it again), and its entries.
pub(super) async fn registry(conn: &mut MultiplexedConnection) -> RedisResult<(i64, Vec<Vec<u8>>)> {
    redis::pipe()
        .cmd("INCRBY")
        .arg(GENERATION_KEY)
        .arg(0)
        .cmd("SMEMBERS")
        .arg(GROUPS_KEY)
        .query_async(conn)
        .await
}

/// Registers connection `client_id` as a member of `entry`, and tells every connection.
pub(super) async fn join(
    conn: &mut MultiplexedConnection,
    client_id: &str,
    entry: &str,
) -> RedisResult<()> {
    let mut notice = String::with_capacity(entry.len() + 1);
    notice.push('+');
    notice.push_str(entry);
    redis::pipe()
        .cmd("SADD")
        .arg(members_key(entry))
        .arg(client_id)
        .ignore()
        .cmd("SADD")
        .arg(GROUPS_KEY)
        .arg(entry)
        .ignore()
        .cmd("INCR")
        .arg(GENERATION_KEY)
        .ignore()
        .cmd("PUBLISH")
        .arg(CTL_CHANNEL)
        .arg(notice)
        .ignore()
        .exec_async(conn)
        .await
}

/// Takes connection `client_id` out of `entry` (see [`LEAVE_SCRIPT`]).
pub(super) async fn leave(
    conn: &mut MultiplexedConnection,
    client_id: &str,
    entry: &str,
) -> RedisResult<()> {
    redis::cmd("EVAL")
        .arg(LEAVE_SCRIPT)
        .arg(3)
        .arg(members_key(entry))
        .arg(GROUPS_KEY)
        .arg(list_key(entry))
        .arg(client_id)
        .arg(entry)
        .arg(CTL_CHANNEL)
        .exec_async(conn)
        .await
}
