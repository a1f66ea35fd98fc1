//! Draining async-nats subscriptions right where async-nats hands a message over.
//!
//! A route (and the reply inbox) registers a waker of its own with async-nats'
//! per-subscription buffers. async-nats' connection task, handing a message to such a
//! buffer, wakes it, and the waker takes the message on there and then, with no task of
//! busbar's in between. Nothing done there waits or takes a lock that is held across an
//! await, so the connection task is never held up by user code.
//!
//! A wake can arrive while a drain runs: from another thread, or from this very drain,
//! because tokio's cooperative budget makes `poll_next` wake the waker at once when the
//! current task has used up its budget. Taking the state lock again there would deadlock
//! the thread, and draining again at once would spin against the same exhausted budget. So
//! such a wake only marks the pump, and the drain that holds the lock asks the owner's task
//! ([`Pump::redrain_wanted`]) to drain once more, with a budget of its own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Wake, Waker};

use tokio::sync::Notify;

pub(super) use busbar_transport_kit::lock;

/// What a pump drains: the owner of the subscriptions and their state.
pub(super) trait Drain: Send + Sync + 'static {
    /// Takes what async-nats holds for the owner (see [`Pump::run`]).
    fn drain(&self);
}

/// Wakes its owner by draining it.
struct PumpWaker<T>(Weak<T>);

impl<T: Drain> Wake for PumpWaker<T> {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(owner) = self.0.upgrade() {
            owner.drain();
        }
    }
}

/// The waker of one owner of async-nats subscriptions, and its bookkeeping for wakes that
/// come while a drain runs.
pub(super) struct Pump {
    waker: OnceLock<Waker>,
    /// Set by a wake that found a drain already running; that drain then asks the owner's
    /// task (`redrain`) to drain once more.
    again: AtomicBool,
    redrain: Notify,
}

impl Pump {
    pub(super) fn new() -> Self {
        Pump { waker: OnceLock::new(), again: AtomicBool::new(false), redrain: Notify::new() }
    }

    /// Makes `owner`'s waker. Until then [`run`](Self::run) does nothing.
    pub(super) fn arm<T: Drain>(&self, owner: &Arc<T>) {
        let _ = self.waker.set(Waker::from(Arc::new(PumpWaker(Arc::downgrade(owner)))));
    }

    /// Runs `body` on `state` with the owner's waker as the polling context, unless another
    /// drain holds the state (see the module documentation).
    pub(super) fn run<S>(&self, state: &Mutex<S>, body: impl FnOnce(&mut S, &mut Context<'_>)) {
        let Some(waker) = self.waker.get() else { return };
        self.again.store(true, Ordering::Release);
        let mut state = match state.try_lock() {
            Ok(state) => state,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        self.again.store(false, Ordering::Release);
        body(&mut state, &mut Context::from_waker(waker));
        drop(state);
        if self.again.swap(false, Ordering::AcqRel) {
            self.redrain.notify_one();
        }
    }

    /// Resolves when a drain must run again from the owner's task, which does so in
    /// `tokio::task::unconstrained` (a fresh budget: see the module documentation).
    pub(super) async fn redrain_wanted(&self) {
        self.redrain.notified().await;
    }
}
