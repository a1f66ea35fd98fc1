//! Acknowledgements on their way to the broker. A [`Receipt`] must not block (it runs in
//! whatever task the application reads in), so each acknowledgement is a task on the
//! runtime; they are counted so that unsubscribing and closing can let them finish first.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use busbar_core::Receipt;
use tokio::sync::Notify;

/// One receipt for each of `copies` subscriptions one message goes to: `ack` runs once
/// every one of them was acknowledged (a message read by two local subscriptions is done
/// with when both are done with it). A receipt dropped unacknowledged keeps it from running.
pub fn receipts_for_copies(copies: usize, ack: impl FnOnce() + Send + 'static) -> Vec<Receipt> {
    if copies <= 1 {
        return vec![Receipt::new(ack)];
    }
    let left = Arc::new(AtomicUsize::new(copies));
    let ack = Arc::new(std::sync::Mutex::new(Some(ack)));
    (0..copies)
        .map(|_| {
            let left = left.clone();
            let ack = ack.clone();
            Receipt::new(move || {
                if left.fetch_sub(1, Ordering::AcqRel) == 1 {
                    let ack = ack.lock().unwrap_or_else(|p| p.into_inner()).take();
                    if let Some(ack) = ack {
                        ack();
                    }
                }
            })
        })
        .collect()
}

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

    #[test]
    fn copies_acknowledge_once_all_did() {
        let done = Arc::new(AtomicUsize::new(0));
        let d = done.clone();
        let receipts = receipts_for_copies(3, move || {
            d.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(receipts.len(), 3);
        assert!(receipts[0].ack());
        assert!(!receipts[0].ack(), "one copy counts once");
        assert!(receipts[2].ack());
        assert_eq!(done.load(Ordering::SeqCst), 0, "one copy still unacknowledged");
        assert!(receipts[1].ack());
        assert_eq!(done.load(Ordering::SeqCst), 1);
    }

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
