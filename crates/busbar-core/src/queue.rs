//! Bounded delivery queues with an explicit overflow policy.
//!
//! Every subscription (and every action feedback stream) hands messages to its consumer
//! through one of these. The queue is bounded so a slow consumer cannot exhaust memory, and
//! what happens when it is full is the subscriber's choice ([`Overflow`]). Every message the
//! policy discards is counted, and the first drop of a burst is reported so the transport can
//! raise a slow-consumer event: nothing is lost silently.
//!
//! One mutex guards the shared buffer: a push is a few instructions under it, and each side
//! wakes the other only when it is actually waiting. The consumer takes everything queued in
//! one go (swapping buffers) and then reads its batch without touching the lock, so a busy
//! consumer does not contend with its producers message by message. The capacity bounds what
//! waits in the shared buffer; a consumer's current batch has already left it, so at most
//! twice the capacity is ever held in memory.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// What a full queue does with a new message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
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

struct State<T> {
    buf: VecDeque<T>,
    config: QueueConfig,
    receiver_waker: Option<Waker>,
    sender_wakers: Vec<Waker>,
    senders: usize,
    receiver_alive: bool,
    /// Set at the first drop or full push; cleared when the consumer empties the queue.
    congested: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    dropped: AtomicU64,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding this lock leaves the buffer consistent (no invariant spans
        // an await or a user callback), so a poisoned lock is still safe to use.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Producer side. Cloneable; the queue closes for the receiver when the last one drops.
pub struct QueueSender<T> {
    shared: Arc<Shared<T>>,
}

/// Consumer side.
pub struct QueueReceiver<T> {
    shared: Arc<Shared<T>>,
    /// The batch taken from the shared buffer, read without locking.
    batch: VecDeque<T>,
}

/// A shared read-only view of a queue's drop counter.
#[derive(Clone)]
pub struct DropCounter {
    shared: Arc<dyn DropCount + Send + Sync>,
}

trait DropCount {
    fn dropped(&self) -> u64;
}

impl<T> DropCount for Shared<T> {
    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl DropCounter {
    /// Messages discarded by the overflow policy so far.
    pub fn get(&self) -> u64 {
        self.shared.dropped()
    }
}

/// Creates a bounded queue.
pub fn queue<T>(config: QueueConfig) -> (QueueSender<T>, QueueReceiver<T>) {
    let config = QueueConfig::new(config.capacity, config.overflow);
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            buf: VecDeque::with_capacity(config.capacity.min(64)),
            config,
            receiver_waker: None,
            sender_wakers: Vec::new(),
            senders: 1,
            receiver_alive: true,
            congested: false,
        }),
        dropped: AtomicU64::new(0),
    });
    (QueueSender { shared: shared.clone() }, QueueReceiver { shared, batch: VecDeque::new() })
}

impl<T> QueueSender<T> {
    /// Pushes without waiting, applying the overflow policy.
    pub fn try_push(&self, item: T) -> Pushed<T> {
        let mut st = self.shared.lock();
        if !st.receiver_alive {
            return Pushed::Closed(item);
        }
        let outcome = if st.buf.len() < st.config.capacity {
            st.buf.push_back(item);
            Pushed::Queued
        } else {
            let first_of_burst = !st.congested;
            st.congested = true;
            match st.config.overflow {
                Overflow::Block => {
                    return Pushed::Full { item, first_of_burst };
                }
                Overflow::DropNewest => {
                    drop(item);
                    Pushed::Dropped { first_of_burst }
                }
                Overflow::DropOldest => {
                    st.buf.pop_front();
                    st.buf.push_back(item);
                    Pushed::Dropped { first_of_burst }
                }
            }
        };
        if matches!(outcome, Pushed::Dropped { .. }) {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
        let waker = st.receiver_waker.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
        outcome
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
        match self.try_push(item) {
            Pushed::Queued | Pushed::Dropped { .. } => Poll::Ready(Ok(())),
            Pushed::Closed(item) => Poll::Ready(Err(item)),
            Pushed::Full { item, .. } => {
                let mut st = self.shared.lock();
                // Re-check under the lock: the consumer may have made room meanwhile.
                if !st.receiver_alive {
                    return Poll::Ready(Err(item));
                }
                if st.buf.len() < st.config.capacity {
                    st.buf.push_back(item);
                    let waker = st.receiver_waker.take();
                    drop(st);
                    if let Some(w) = waker {
                        w.wake();
                    }
                    return Poll::Ready(Ok(()));
                }
                if !st.sender_wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    st.sender_wakers.push(cx.waker().clone());
                }
                *slot = Some(item);
                Poll::Pending
            }
        }
    }

    /// Queues `item` even beyond capacity. Only for seeding a new queue (for example with
    /// retained messages at subscribe time), where dropping or waiting would be wrong.
    pub fn force_push(&self, item: T) -> Result<(), T> {
        let mut st = self.shared.lock();
        if !st.receiver_alive {
            return Err(item);
        }
        st.buf.push_back(item);
        let waker = st.receiver_waker.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// True when a push would be queued now without applying the overflow policy.
    pub fn has_room(&self) -> bool {
        let st = self.shared.lock();
        st.buf.len() < st.config.capacity
    }

    /// Messages discarded by the overflow policy so far.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// True once the receiver is gone.
    pub fn is_closed(&self) -> bool {
        !self.shared.lock().receiver_alive
    }
}

impl<T> Clone for QueueSender<T> {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        QueueSender { shared: self.shared.clone() }
    }
}

impl<T> Drop for QueueSender<T> {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.senders -= 1;
        let waker = if st.senders == 0 { st.receiver_waker.take() } else { None };
        drop(st);
        if let Some(w) = waker {
            w.wake();
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
        if let Some(item) = self.batch.pop_front() {
            return Poll::Ready(Some(item));
        }
        let mut st = self.shared.lock();
        if st.buf.is_empty() {
            if st.senders == 0 {
                return Poll::Ready(None);
            }
            st.receiver_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(take_batch(&mut self.batch, st))
    }

    /// An item if one is queued now.
    pub fn try_recv(&mut self) -> Option<T> {
        if let Some(item) = self.batch.pop_front() {
            return Some(item);
        }
        let st = self.shared.lock();
        if st.buf.is_empty() {
            return None;
        }
        take_batch(&mut self.batch, st)
    }

    /// Items queued now (including the batch already taken).
    pub fn len(&self) -> usize {
        self.batch.len() + self.shared.lock().buf.len()
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
        self.shared.lock().config
    }
}

/// Moves everything queued into the consumer's `batch` and returns its first item.
fn take_batch<T>(batch: &mut VecDeque<T>, mut st: MutexGuard<'_, State<T>>) -> Option<T> {
    std::mem::swap(&mut st.buf, batch);
    st.congested = false;
    let wakers = std::mem::take(&mut st.sender_wakers);
    drop(st);
    for w in wakers {
        w.wake();
    }
    batch.pop_front()
}

impl<T> Drop for QueueReceiver<T> {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.receiver_alive = false;
        // Free queued items now rather than when the last sender goes.
        let buf = std::mem::take(&mut st.buf);
        let wakers = std::mem::take(&mut st.sender_wakers);
        drop(st);
        drop(buf);
        for w in wakers {
            w.wake();
        }
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
