//! Acknowledgements on their way to the broker. A [`Receipt`] must not block (it runs in
//! whatever task the application reads in), so each acknowledgement is a task on the
//! runtime; they are counted so that unsubscribing and closing can let them finish first.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use busbar_core::Receipt;
use tokio::sync::Notify;

/// The acknowledgements of one connection still on their way.
#[derive(Default)]
pub struct AcksInFlight {
    count: AtomicUsize,
    idle: Notify,
}

impl AcksInFlight {
    /// A receipt that, when the message is acknowledged, runs `ack` as a task on the
    /// runtime current now (call it from the task that delivers the message).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn receipt<F>(self: &Arc<Self>, ack: F) -> Receipt
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let runtime = tokio::runtime::Handle::current();
        let acks = self.clone();
        Receipt::new(move || acks.spawn_on(&runtime, ack))
    }

    /// Runs `work` (an acknowledgement, or a message given back) as a counted task on the
    /// current runtime. Outside one it does not run: the broker gives the message again
    /// later instead.
    pub fn spawn<F>(self: &Arc<Self>, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            self.spawn_on(&runtime, work);
        }
    }

    /// Runs `work` as a counted task on `runtime` (from any thread).
    pub fn spawn_on<F>(self: &Arc<Self>, runtime: &tokio::runtime::Handle, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.count.fetch_add(1, Ordering::AcqRel);
        let acks = self.clone();
        runtime.spawn(async move {
            work.await;
            if acks.count.fetch_sub(1, Ordering::AcqRel) == 1 {
                acks.idle.notify_waiters();
            }
        });
    }

    /// Waits until none is on its way.
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_waits_for_the_acknowledgements_made() {
        let acks = Arc::new(AcksInFlight::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let done = Arc::new(AtomicUsize::new(0));
        let d = done.clone();
        let receipt = acks.receipt(async move {
            let _ = rx.await;
            d.fetch_add(1, Ordering::SeqCst);
        });
        acks.idle().await; // nothing acknowledged yet
        assert!(receipt.ack());
        let waiting = tokio::spawn({
            let acks = acks.clone();
            async move { acks.idle().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        let _ = tx.send(());
        waiting.await.expect("idle");
        assert_eq!(done.load(Ordering::SeqCst), 1);
    }
}
