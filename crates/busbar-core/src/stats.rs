//! Counters every transport keeps, readable at any time as a [`StatsSnapshot`].

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of one connection. Transports bump them; users read snapshots.
#[derive(Debug, Default)]
pub struct Stats {
    /// Messages (requests and replies included) handed to the broker.
    pub published: AtomicU64,
    /// Messages put into this connection's subscription queues for their readers (a
    /// message that replaces an older one under `DropOldest` is not a second delivery).
    pub delivered: AtomicU64,
    /// Messages discarded: by a subscription's overflow policy, by a publish queue's, or
    /// because they could not be read or kept.
    pub dropped: AtomicU64,
    /// Messages discarded because their expiry passed before delivery.
    pub expired: AtomicU64,
    /// Requests this connection started.
    pub requests: AtomicU64,
    /// This connection's requests that got no reply before their deadline.
    pub timeouts: AtomicU64,
    /// Replies that reached this connection after its request had given up (or for no
    /// request of its own).
    pub late_replies: AtomicU64,
}

/// A copy of [`Stats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StatsSnapshot {
    /// See [`Stats::published`].
    pub published: u64,
    /// See [`Stats::delivered`].
    pub delivered: u64,
    /// See [`Stats::dropped`].
    pub dropped: u64,
    /// See [`Stats::expired`].
    pub expired: u64,
    /// See [`Stats::requests`].
    pub requests: u64,
    /// See [`Stats::timeouts`].
    pub timeouts: u64,
    /// See [`Stats::late_replies`].
    pub late_replies: u64,
}

impl Stats {
    /// Adds one to `counter`.
    #[inline]
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            published: r(&self.published),
            delivered: r(&self.delivered),
            dropped: r(&self.dropped),
            expired: r(&self.expired),
            requests: r(&self.requests),
            timeouts: r(&self.timeouts),
            late_replies: r(&self.late_replies),
        }
    }
}
