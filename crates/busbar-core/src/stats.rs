//! Counters every transport keeps, readable at any time as a [`StatsSnapshot`].

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of one connection. Transports bump them; users read snapshots.
#[derive(Debug, Default)]
pub struct Stats {
    /// Messages handed to the broker.
    pub published: AtomicU64,
    /// Messages queued for this connection's subscriptions.
    pub delivered: AtomicU64,
    /// Messages discarded by a subscription's overflow policy.
    pub dropped: AtomicU64,
    /// Messages discarded because their expiry passed before delivery.
    pub expired: AtomicU64,
    /// Requests sent.
    pub requests: AtomicU64,
    /// Requests that got no reply in time.
    pub timeouts: AtomicU64,
    /// Replies this connection published to a requester that had already given up.
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
