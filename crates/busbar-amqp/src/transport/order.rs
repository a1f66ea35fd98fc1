//! Publishes keep their order across a reconnect. They are written in the order they were
//! made: each takes a ticket ([`Turnstile`]) and writes when no earlier one is still
//! waiting to (publishes made during an outage wake together when the next connection
//! comes, and must not race). A confirmed publish whose connection
//! broke before its confirm came is sent again on the next connection, by its own caller,
//! once lapin has told it the confirm will not come, which can be after the next connection
//! is up: a publish made meanwhile must not overtake it. So every link counts the confirmed
//! publishes written on it and not yet settled (confirmed, refused, or written again on a
//! newer link), and a first attempt on a newer link waits until the links before it have
//! none left (bounded by the publish's own wait for the connection).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use busbar_core::error::{Common, OpError};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::state::{Shared, lock};

/// The confirmed publishes written on one link and not yet settled, by their place in the
/// order the connection's publishes were made in.
#[derive(Default)]
pub(super) struct Unsettled {
    seqs: Mutex<BTreeSet<u64>>,
    changed: Notify,
    /// Set once the link is withdrawn: only then can anyone wait for its publishes.
    withdrawn: AtomicBool,
}

impl Unsettled {
    /// Counts publish `seq` until the guard is dropped.
    pub(super) fn hold(self: &Arc<Self>, seq: u64) -> Held {
        lock(&self.seqs).insert(seq);
        Held { seq, link: self.clone() }
    }

    fn is_empty(&self) -> bool {
        lock(&self.seqs).is_empty()
    }

    /// Whether no publish made before `seq` is unsettled here.
    fn none_before(&self, seq: u64) -> bool {
        lock(&self.seqs).first().is_none_or(|first| *first >= seq)
    }

    async fn wait_none_before(&self, seq: u64) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.none_before(seq) {
                return;
            }
            notified.await;
        }
    }
}

/// The publishes of a connection not yet written, in the order they were made.
#[derive(Default)]
pub(super) struct Turnstile {
    waiting: Mutex<BTreeSet<u64>>,
    next: std::sync::atomic::AtomicU64,
    changed: Notify,
}

impl Turnstile {
    /// A ticket for a new publish, behind every publish made before it.
    pub(super) fn enter(self: &Arc<Self>) -> Ticket {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.waiting).insert(seq);
        Ticket { seq, turnstile: self.clone(), waiting: true }
    }
}

/// One publish's place in the order of its connection's publishes.
pub(super) struct Ticket {
    pub(super) seq: u64,
    turnstile: Arc<Turnstile>,
    waiting: bool,
}

impl Ticket {
    /// Waits until no publish made before this one is still waiting to be written.
    pub(super) async fn my_turn(&self) {
        loop {
            let notified = self.turnstile.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if lock(&self.turnstile.waiting).first().is_none_or(|first| *first >= self.seq) {
                return;
            }
            notified.await;
        }
    }

    /// Written (or given up): the next may go.
    pub(super) fn written(&mut self) {
        if std::mem::take(&mut self.waiting) {
            lock(&self.turnstile.waiting).remove(&self.seq);
            self.turnstile.changed.notify_waiters();
        }
    }

    /// To be written again (its connection was lost): publishes after it wait again.
    pub(super) fn again(&mut self) {
        if !self.waiting {
            self.waiting = true;
            lock(&self.turnstile.waiting).insert(self.seq);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.written();
    }
}

/// One publish counted as unsettled on its link.
pub(super) struct Held {
    seq: u64,
    link: Arc<Unsettled>,
}

impl Drop for Held {
    fn drop(&mut self) {
        lock(&self.link.seqs).remove(&self.seq);
        if self.link.withdrawn.load(Ordering::Acquire) {
            self.link.changed.notify_waiters();
        }
    }
}

impl Shared {
    /// A link was withdrawn: what was written on it settles before newer publishes go.
    pub(super) fn settle_before_newer(&self, unsettled: &Arc<Unsettled>) {
        unsettled.withdrawn.store(true, Ordering::Release);
        if !unsettled.is_empty() {
            lock(&self.settling).push(unsettled.clone());
        }
    }

    /// Waits (until `deadline`) until every publish made before publish `seq` and written
    /// on an earlier link has settled or been written again: a publish sent again after a
    /// lost connection keeps its place, and a new one comes after all of them.
    pub(super) async fn after_earlier_publishes<K: Copy + From<Common>>(
        &self,
        seq: u64,
        deadline: Instant,
    ) -> Result<(), OpError<K>> {
        let earlier: Vec<Arc<Unsettled>> = {
            let mut settling = lock(&self.settling);
            settling.retain(|u| !u.is_empty());
            settling.clone()
        };
        for link in earlier {
            if tokio::time::timeout_at(deadline, link.wait_none_before(seq)).await.is_err() {
                return Err(self.life.not_connected(
                    "publishes sent before the connection was lost had not settled in time",
                ));
            }
        }
        Ok(())
    }
}
