//! Acknowledging a received message, on subscriptions whose broker keeps what is not yet
//! acknowledged and gives it again to the next reader (see
//! [`Acknowledge`](crate::transport::Acknowledge)).

use std::fmt;
use std::sync::{Arc, Mutex};

type Ack = Box<dyn FnOnce() + Send>;

/// What tells the broker that one received message is done with. Clones share it: the
/// message is acknowledged once, by whichever acknowledges first. A receipt dropped
/// without acknowledging leaves the message to the broker, which gives it again once this
/// subscription is gone (a crash between receiving and handling loses nothing).
#[derive(Clone)]
pub struct Receipt(Arc<Mutex<Option<Ack>>>);

impl Receipt {
    /// A receipt that runs `ack` when the message is acknowledged (for transport
    /// implementations). `ack` must not block: it hands the acknowledgement to the
    /// connection.
    pub fn new(ack: impl FnOnce() + Send + 'static) -> Receipt {
        Receipt(Arc::new(Mutex::new(Some(Box::new(ack)))))
    }

    /// Acknowledges the message; true the first time.
    pub fn ack(&self) -> bool {
        let ack = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        match ack {
            Some(ack) => {
                ack();
                true
            }
            None => false,
        }
    }
}

impl fmt::Debug for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pending = self.0.lock().map(|a| a.is_some()).unwrap_or(false);
        f.debug_struct("Receipt").field("pending", &pending).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn a_receipt_acknowledges_once_across_clones() {
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        let receipt = Receipt::new(move || {
            c.fetch_add(1, Ordering::SeqCst);
        });
        let copy = receipt.clone();
        assert!(copy.ack());
        assert!(!receipt.ack());
        assert_eq!(count.load(Ordering::SeqCst), 1);
        assert!(format!("{receipt:?}").contains("pending: false"));
    }
}
