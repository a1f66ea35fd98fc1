//! Bounded delivery queues with an explicit overflow policy.
//!
//! Every subscription (and every action feedback stream) hands messages to its consumer
//! through one of these. The queue is bounded so a slow consumer cannot exhaust memory, and
//! what happens when it is full is the subscriber's choice ([`Overflow`]). Every message the
//! policy discards is counted, and the first drop of a burst is reported so the transport can
//! raise a slow-consumer event: nothing is lost silently.
//!
//! The buffer is a lock-free FIFO (many producers, one consumer). Occupancy is `pushed -
//! popped`, two counters on separate cache lines so producers and the consumer do not fight
//! over one; producers compare against their last view of `popped` and re-read the
//! consumer's counter only when the queue looks full (an old view can only overestimate the
//! occupancy, never let the bound be exceeded). Producers and the consumer never take a
//! lock on the hot path;
//! each side parks, and is woken, only when it actually has to wait (the consumer on an empty
//! queue, a producer on a full `Block` queue). The park/wake handshakes pair a store and a
//! load on both sides with `SeqCst` fences so a wake-up cannot be lost.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crossbeam_queue::SegQueue;
use crossbeam_utils::CachePadded;
use futures_util::task::AtomicWaker;

/// What a full queue does with a new message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Overflow {
    /// The producer waits for room (backpressure). Nothing is dropped. The default.
    #[default]
    Block,
    /// The oldest queued message is discarded to make room (latest values matter most).
    DropOldest,
    /// The new message is discarded (what is already queued matters most).
    DropNewest,
}

impl Overflow {
    /// Parses `block`, `drop-oldest`, `drop-newest`.
    pub fn from_name(name: &str) -> Option<Overflow> {
        match name {
            "block" => Some(Overflow::Block),
            "drop-oldest" | "drop_oldest" => Some(Overflow::DropOldest),
            "drop-newest" | "drop_newest" => Some(Overflow::DropNewest),
            _ => None,
        }
    }
}

/// Size and overflow policy of a delivery queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    /// Most messages held (at least 1).
    pub capacity: usize,
    /// What to do when full.
    pub overflow: Overflow,
}

impl QueueConfig {
    /// Default capacity of a subscription queue.
    pub const DEFAULT_CAPACITY: usize = 1024;

    /// A queue of `capacity` with `overflow`.
    pub fn new(capacity: usize, overflow: Overflow) -> Self {
        QueueConfig { capacity: capacity.max(1), overflow }
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig::new(Self::DEFAULT_CAPACITY, Overflow::Block)
    }
}

/// Result of a non-waiting push.
#[derive(Debug)]
pub enum Pushed<T> {
    /// Queued.
    Queued,
    /// The policy discarded a message (the new one or the oldest). `first_of_burst` is true
    /// for the first drop since the consumer last caught up: the moment to report a slow
    /// consumer.
    Dropped {
        /// First drop since the queue last ran empty.
        first_of_burst: bool,
    },
    /// Full under [`Overflow::Block`]: the message is handed back; wait with
    /// [`QueueSender::push`]. `first_of_burst` as for `Dropped`.
    Full {
        /// The message, not queued.
        item: T,
        /// First time full since the queue last ran empty.
        first_of_burst: bool,
    },
    /// The receiver is gone; the message is handed back.
    Closed(T),
}

struct Shared<T> {
    items: SegQueue<T>,
    /// Slots reserved by producers (a producer reserves before pushing, and gives the slot
    /// back if the queue was full).
    pushed: CachePadded<AtomicUsize>,
    /// The producers' last view of `popped`.
    popped_seen: CachePadded<AtomicUsize>,
    /// Items taken out (by the consumer, or discarded by `DropOldest`).
    popped: CachePadded<AtomicUsize>,
    config: QueueConfig,
    dropped: AtomicU64,
    /// Set at the first drop or full push; cleared when the consumer finds the queue empty.
    congested: AtomicBool,
    senders: AtomicUsize,
    receiver_alive: AtomicBool,
    receiver_waker: AtomicWaker,
    receiver_parked: AtomicBool,
    sender_waiters: Mutex<Vec<Waker>>,
    senders_parked: AtomicUsize,
}

impl<T> Shared<T> {
    fn wake_receiver(&self) {
        fence(Ordering::SeqCst);
        if self.receiver_parked.load(Ordering::SeqCst)
            && self.receiver_parked.swap(false, Ordering::SeqCst)
        {
            self.receiver_waker.wake();
        }
    }

    fn wake_senders(&self) {
        fence(Ordering::SeqCst);
        if self.senders_parked.load(Ordering::SeqCst) == 0 {
            return;
        }
        let waiters = {
            let mut w = self.sender_waiters.lock().unwrap_or_else(|p| p.into_inner());
            self.senders_parked.store(0, Ordering::SeqCst);
            std::mem::take(&mut *w)
        };
        for w in waiters {
            w.wake();
        }
    }

    fn mark_congested(&self) -> bool {
        !self.congested.load(Ordering::Relaxed) && !self.congested.swap(true, Ordering::Relaxed)
    }

    fn pop(&self) -> Option<T> {
        let item = self.items.pop()?;
        self.popped.fetch_add(1, Ordering::AcqRel);
        self.wake_senders();
        Some(item)
    }

    /// Reserves a slot if the queue has room; false when full. A compare-and-swap claims the
    /// slot only when it is free, so a failed attempt never inflates `pushed`: an inflated
    /// count would make other producers see a full queue, drop or park, and nobody would
    /// wake them once it was taken back.
    fn reserve(&self) -> bool {
        let cap = self.config.capacity;
        let mut pushed = self.pushed.load(Ordering::Acquire);
        let mut refreshed = false;
        loop {
            let seen = self.popped_seen.load(Ordering::Acquire);
            if pushed.wrapping_sub(seen) >= cap {
                if refreshed {
                    return false;
                }
                // Our view of the consumer may be old: read its counter (after `pushed` was
                // read, so "full" is then true at that moment), then decide.
                let popped = self.popped.load(Ordering::Acquire);
                self.popped_seen.fetch_max(popped, Ordering::AcqRel);
                refreshed = true;
                continue;
            }
            match self.pushed.compare_exchange_weak(
                pushed,
                pushed.wrapping_add(1),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(current) => {
                    // Another producer moved on: decide afresh against the new count.
                    pushed = current;
                    refreshed = false;
                }
            }
        }
    }

    fn len(&self) -> usize {
        let popped = self.popped.load(Ordering::Acquire);
        self.pushed.load(Ordering::Acquire).saturating_sub(popped)
    }
}

/// How often an empty queue is re-checked before the consumer parks, when it is streaming.
const SPINS_BEFORE_PARKING: usize = 64;
/// Consecutive items that make the consumer count as streaming.
const STREAMING_AFTER: u32 = 16;

/// Producer side. Cloneable; the queue closes for the receiver when the last one drops.
pub struct QueueSender<T> {
    shared: Arc<Shared<T>>,
}

/// Consumer side.
pub struct QueueReceiver<T> {
    shared: Arc<Shared<T>>,
    /// Items received since the consumer last had to park.
    streak: u32,
}

/// A shared read-only view of a queue's drop counter (and of its depth).
#[derive(Clone)]
pub struct DropCounter {
    shared: Arc<dyn DropCount + Send + Sync>,
}

trait DropCount {
    fn dropped(&self) -> u64;
    fn queued(&self) -> usize;
}

impl<T> DropCount for Shared<T> {
    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
    fn queued(&self) -> usize {
        self.len()
    }
}

impl DropCounter {
    /// Messages discarded by the overflow policy so far.
    pub fn get(&self) -> u64 {
        self.shared.dropped()
    }

    /// Messages waiting in the queue now (for a metrics gauge).
    pub fn queued(&self) -> usize {
        self.shared.queued()
    }
}

/// Creates a bounded queue.
pub fn queue<T>(config: QueueConfig) -> (QueueSender<T>, QueueReceiver<T>) {
    let shared = Arc::new(Shared {
        items: SegQueue::new(),
        pushed: CachePadded::new(AtomicUsize::new(0)),
        popped_seen: CachePadded::new(AtomicUsize::new(0)),
        popped: CachePadded::new(AtomicUsize::new(0)),
        config: QueueConfig::new(config.capacity, config.overflow),
        dropped: AtomicU64::new(0),
        congested: AtomicBool::new(false),
        senders: AtomicUsize::new(1),
        receiver_alive: AtomicBool::new(true),
        receiver_waker: AtomicWaker::new(),
        receiver_parked: AtomicBool::new(false),
        sender_waiters: Mutex::new(Vec::new()),
        senders_parked: AtomicUsize::new(0),
    });
    (QueueSender { shared: shared.clone() }, QueueReceiver { shared, streak: 0 })
}

impl<T> QueueSender<T> {
    /// Pushes without waiting, applying the overflow policy.
    pub fn try_push(&self, item: T) -> Pushed<T> {
        let sh = &*self.shared;
        if !sh.receiver_alive.load(Ordering::Acquire) {
            return Pushed::Closed(item);
        }
        if sh.reserve() {
            sh.items.push(item);
            sh.wake_receiver();
            return Pushed::Queued;
        }
        let first_of_burst = sh.mark_congested();
        match sh.config.overflow {
            Overflow::Block => Pushed::Full { item, first_of_burst },
            Overflow::DropNewest => {
                sh.dropped.fetch_add(1, Ordering::Relaxed);
                drop(item);
                Pushed::Dropped { first_of_burst }
            }
            Overflow::DropOldest => {
                // Replace the oldest: the occupancy stays the same. If the consumer emptied
                // the queue meanwhile there is nothing to replace and the push just queues.
                sh.pushed.fetch_add(1, Ordering::AcqRel);
                let outcome = match sh.items.pop() {
                    Some(old) => {
                        sh.popped.fetch_add(1, Ordering::AcqRel);
                        sh.dropped.fetch_add(1, Ordering::Relaxed);
                        drop(old);
                        Pushed::Dropped { first_of_burst }
                    }
                    None => Pushed::Queued,
                };
                sh.items.push(item);
                sh.wake_receiver();
                outcome
            }
        }
    }

    /// Queues `item` even beyond capacity. Only for seeding a new queue (for example with
    /// retained messages at subscribe time), where dropping or waiting would be wrong.
    pub fn force_push(&self, item: T) -> Result<(), T> {
        let sh = &*self.shared;
        if !sh.receiver_alive.load(Ordering::Acquire) {
            return Err(item);
        }
        sh.pushed.fetch_add(1, Ordering::AcqRel);
        sh.items.push(item);
        sh.wake_receiver();
        Ok(())
    }

    /// Pushes, waiting for room when the policy is [`Overflow::Block`]. Returns the item if
    /// the receiver is gone.
    pub async fn push(&self, item: T) -> Result<(), T> {
        let mut slot = Some(item);
        poll_fn(|cx| self.poll_push(cx, &mut slot)).await
    }

    fn poll_push(&self, cx: &mut Context<'_>, slot: &mut Option<T>) -> Poll<Result<(), T>> {
        let Some(item) = slot.take() else {
            return Poll::Ready(Ok(()));
        };
        let item = match self.try_push(item) {
            Pushed::Queued | Pushed::Dropped { .. } => return Poll::Ready(Ok(())),
            Pushed::Closed(item) => return Poll::Ready(Err(item)),
            Pushed::Full { item, .. } => item,
        };
        let sh = &*self.shared;
        {
            let mut waiters = sh.sender_waiters.lock().unwrap_or_else(|p| p.into_inner());
            if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
            sh.senders_parked.fetch_add(1, Ordering::SeqCst);
        }
        fence(Ordering::SeqCst);
        // Room may have been made between the failed push and parking: try once more.
        match self.try_push(item) {
            Pushed::Queued | Pushed::Dropped { .. } => Poll::Ready(Ok(())),
            Pushed::Closed(item) => Poll::Ready(Err(item)),
            Pushed::Full { item, .. } => {
                *slot = Some(item);
                Poll::Pending
            }
        }
    }

    /// True when a push would be queued now without applying the overflow policy.
    pub fn has_room(&self) -> bool {
        self.shared.len() < self.shared.config.capacity
    }

    /// Messages discarded by the overflow policy so far.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// True once the receiver is gone.
    pub fn is_closed(&self) -> bool {
        !self.shared.receiver_alive.load(Ordering::Acquire)
    }
}

impl<T> Clone for QueueSender<T> {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        QueueSender { shared: self.shared.clone() }
    }
}

impl<T> Drop for QueueSender<T> {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.receiver_parked.store(false, Ordering::SeqCst);
            self.shared.receiver_waker.wake();
        }
    }
}

impl<T> QueueReceiver<T> {
    /// Next item; `None` once every sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next item.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let sh = &*self.shared;
        // While items stream in, a producer on another core is usually a few hundred
        // nanoseconds from its next push: re-checking that long is far cheaper than parking
        // and being woken. A consumer that is not streaming (request/response traffic) parks
        // at once, since spinning would only delay the tasks that produce its next item.
        let spins = if self.streak >= STREAMING_AFTER { SPINS_BEFORE_PARKING } else { 0 };
        for i in 0..=spins {
            if let Some(item) = sh.pop() {
                self.streak = self.streak.saturating_add(1);
                return Poll::Ready(Some(item));
            }
            if i < spins {
                std::hint::spin_loop();
            }
        }
        self.streak = 0;
        sh.receiver_waker.register(cx.waker());
        sh.receiver_parked.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        // Re-check after announcing the park: a push that did not see the flag is visible now.
        if let Some(item) = sh.pop() {
            sh.receiver_parked.store(false, Ordering::Relaxed);
            return Poll::Ready(Some(item));
        }
        if sh.congested.load(Ordering::Relaxed) {
            sh.congested.store(false, Ordering::Relaxed);
        }
        if sh.senders.load(Ordering::Acquire) == 0 {
            // Senders may have pushed just before leaving.
            return Poll::Ready(sh.pop());
        }
        Poll::Pending
    }

    /// An item if one is queued now.
    pub fn try_recv(&mut self) -> Option<T> {
        let item = self.shared.pop();
        if item.is_none() && self.shared.congested.load(Ordering::Relaxed) {
            self.shared.congested.store(false, Ordering::Relaxed);
        }
        item
    }

    /// Items queued now.
    pub fn len(&self) -> usize {
        self.shared.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages discarded by the overflow policy so far.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// A handle that reads the drop counter after the receiver moved elsewhere.
    pub fn drop_counter(&self) -> DropCounter
    where
        T: Send + 'static,
    {
        DropCounter { shared: self.shared.clone() }
    }

    /// The queue's configuration.
    pub fn config(&self) -> QueueConfig {
        self.shared.config
    }
}

impl<T> Drop for QueueReceiver<T> {
    fn drop(&mut self) {
        let sh = &*self.shared;
        sh.receiver_alive.store(false, Ordering::SeqCst);
        // Free queued items now rather than when the last sender goes.
        while sh.items.pop().is_some() {}
        sh.senders_parked.store(1, Ordering::SeqCst);
        sh.wake_senders();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(rx: &mut QueueReceiver<u32>) -> Vec<u32> {
        std::iter::from_fn(|| rx.try_recv()).collect()
    }

    #[test]
    fn drop_newest_keeps_the_first_and_counts() {
        let (tx, mut rx) = queue(QueueConfig::new(3, Overflow::DropNewest));
        let mut firsts = 0;
        for i in 0..10 {
            if let Pushed::Dropped { first_of_burst: true } = tx.try_push(i) {
                firsts += 1;
            }
        }
        assert_eq!(drain(&mut rx), vec![0, 1, 2]);
        assert_eq!(rx.dropped(), 7);
        assert_eq!(firsts, 1, "one slow-consumer signal per burst");
        // After the consumer caught up a new burst is reported again.
        for i in 0..4 {
            tx.try_push(i);
        }
        assert!(matches!(tx.try_push(9), Pushed::Dropped { first_of_burst: false }));
        drain(&mut rx);
        for i in 0..3 {
            tx.try_push(i);
        }
        assert!(matches!(tx.try_push(9), Pushed::Dropped { first_of_burst: true }));
    }

    #[test]
    fn drop_oldest_keeps_the_latest() {
        let (tx, mut rx) = queue(QueueConfig::new(3, Overflow::DropOldest));
        for i in 0..10 {
            tx.try_push(i);
        }
        assert_eq!(drain(&mut rx), vec![7, 8, 9]);
        assert_eq!(tx.dropped(), 7);
    }

    #[tokio::test]
    async fn block_waits_for_room_and_loses_nothing() {
        let (tx, mut rx) = queue(QueueConfig::new(2, Overflow::Block));
        let producer = tokio::spawn(async move {
            for i in 0..100u32 {
                tx.push(i).await.expect("receiver alive");
            }
        });
        let mut got = Vec::new();
        while let Some(i) = rx.recv().await {
            got.push(i);
        }
        producer.await.expect("producer");
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        assert_eq!(rx.dropped(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_producers_keep_their_order_and_lose_nothing() {
        const PER: u32 = 20_000;
        let (tx, mut rx) = queue(QueueConfig::new(8, Overflow::Block));
        let mut producers = Vec::new();
        for p in 0..3u32 {
            let tx = tx.clone();
            producers.push(tokio::spawn(async move {
                for i in 0..PER {
                    tx.push((p, i)).await.expect("receiver alive");
                }
            }));
        }
        drop(tx);
        let mut next = [0u32; 3];
        while let Some((p, i)) = rx.recv().await {
            assert_eq!(i, next[p as usize], "producer {p} out of order");
            next[p as usize] += 1;
        }
        for p in producers {
            p.await.expect("producer");
        }
        assert_eq!(next, [PER; 3]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_producers_on_a_one_slot_queue_never_stall() {
        // Competing producers on a full queue once could hide a free slot from each other
        // and all park with nobody left to wake them.
        const PER: u32 = 5_000;
        let (tx, mut rx) = queue(QueueConfig::new(1, Overflow::Block));
        for _ in 0..4 {
            let tx = tx.clone();
            tokio::spawn(async move {
                for i in 0..PER {
                    tx.push(i).await.expect("receiver alive");
                }
            });
        }
        drop(tx);
        let drained = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            let mut n = 0;
            while rx.recv().await.is_some() {
                n += 1;
            }
            n
        })
        .await
        .expect("producers and consumer stalled");
        assert_eq!(drained, 4 * PER);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_drops_are_counted_exactly() {
        const N: u64 = 50_000;
        for overflow in [Overflow::DropNewest, Overflow::DropOldest] {
            let (tx, mut rx) = queue(QueueConfig::new(16, overflow));
            let producer = tokio::spawn(async move {
                for i in 0..N {
                    tx.try_push(i);
                    if i % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            });
            let mut received = 0u64;
            let mut last = None;
            while let Some(i) = rx.recv().await {
                assert!(last.is_none_or(|l| i > l), "{overflow:?}: {i} after {last:?}");
                last = Some(i);
                received += 1;
            }
            producer.await.expect("producer");
            assert_eq!(
                received + rx.dropped(),
                N,
                "{overflow:?}: every message delivered or counted"
            );
        }
    }

    #[tokio::test]
    async fn blocked_push_fails_when_receiver_goes() {
        let (tx, rx) = queue(QueueConfig::new(1, Overflow::Block));
        tx.push(1u32).await.expect("room");
        // Whether the push is already waiting or not yet polled, it must fail the same way.
        let pending = tokio::spawn(async move { tx.push(2).await });
        tokio::task::yield_now().await;
        drop(rx);
        assert_eq!(pending.await.expect("join"), Err(2));
    }

    #[tokio::test]
    async fn receiver_ends_when_senders_drop() {
        let (tx, mut rx) = queue::<u32>(QueueConfig::default());
        let tx2 = tx.clone();
        tx.try_push(1);
        drop(tx);
        tx2.try_push(2);
        drop(tx2);
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, Some(2));
        assert_eq!(rx.recv().await, None);
    }
}
