//! What a consumer group member may commit when its messages are acknowledged one by one
//! (`Acknowledge::OnRead` or `Explicit`). Kafka keeps one position per partition, so the
//! position moves past an offset only once it and every offset before it were
//! acknowledged: one not yet acknowledged holds its partition back, and after a crash
//! everything from it on comes again (at least once, nothing skipped).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

/// One partition's records handed over and not yet acknowledged.
struct Partition {
    unacked: BTreeSet<i64>,
    /// One past the highest offset handed over.
    next: i64,
    /// The position last stored for committing.
    stored: i64,
    /// Which assignment the records belong to (see [`Pending::revoked`]).
    generation: u64,
    moved: bool,
}

#[derive(Default)]
struct State {
    partitions: HashMap<(Arc<str>, i32), Partition>,
    generation: u64,
}

/// The records of one group member handed over and not acknowledged yet.
#[derive(Default)]
pub(crate) struct Pending(Mutex<State>);

impl Pending {
    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes the record at `offset` as handed over; the returned acknowledgement lets the
    /// position move past it (called from any thread, never blocks for long).
    pub(crate) fn handed_over(
        self: &Arc<Self>,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> impl FnOnce() + Send + 'static {
        let key: (Arc<str>, i32) = (topic.into(), partition);
        let generation = {
            let mut state = self.state();
            let generation = state.generation;
            let p = state.partitions.entry(key.clone()).or_insert_with(|| Partition {
                unacked: BTreeSet::new(),
                next: offset,
                // The first record handed over is where the group stood.
                stored: offset,
                generation,
                moved: false,
            });
            p.unacked.insert(offset);
            p.next = p.next.max(offset + 1);
            generation
        };
        let pending = Arc::downgrade(self);
        move || {
            let Some(pending) = pending.upgrade() else { return };
            let mut state = pending.state();
            if let Some(p) = state.partitions.get_mut(&key)
                && p.generation == generation
                && p.unacked.remove(&offset)
            {
                p.moved = true;
            }
        }
    }

    /// The positions to store for committing (topic, partition, next offset to read) that
    /// moved since the last call.
    pub(crate) fn settle(&self) -> Vec<(Arc<str>, i32, i64)> {
        let mut state = self.state();
        let mut out = Vec::new();
        for ((topic, partition), p) in &mut state.partitions {
            if !std::mem::take(&mut p.moved) {
                continue;
            }
            let position = p.unacked.first().copied().unwrap_or(p.next);
            if position > p.stored {
                p.stored = position;
                out.push((topic.clone(), *partition, position));
            }
        }
        out
    }

    /// The group took the partitions away: what is still unacknowledged goes to their next
    /// reader from the last commit, and acknowledgements still to come for it no longer
    /// move anything (the same offsets may be read again here after a later assignment).
    pub(crate) fn revoked(&self) {
        let mut state = self.state();
        state.partitions.clear();
        state.generation += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_position_moves_only_past_what_all_was_acknowledged() {
        let pending = Arc::new(Pending::default());
        let a = pending.handed_over("t", 0, 10);
        let b = pending.handed_over("t", 0, 11);
        let c = pending.handed_over("t", 0, 12);
        b();
        c();
        assert!(pending.settle().is_empty(), "10 is not acknowledged: nothing moves");
        a();
        assert_eq!(pending.settle(), vec![("t".into(), 0, 13)]);
        assert!(pending.settle().is_empty(), "stored once");
    }

    #[test]
    fn acknowledgements_from_before_a_rebalance_do_not_count() {
        let pending = Arc::new(Pending::default());
        let old = pending.handed_over("t", 1, 5);
        pending.revoked();
        let _new = pending.handed_over("t", 1, 5);
        old();
        assert!(pending.settle().is_empty(), "the copy read again is not acknowledged");
    }
}
