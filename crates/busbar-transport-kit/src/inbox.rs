//! Requests waiting for their replies.
//!
//! A transport sends a request with its own reply address and a fresh [`CorrelationId`]
//! (128 random bits: another client cannot forge a reply for it), registers a waiter here
//! under that id, and hands every reply that comes back to [`Inbox::complete`]. The one
//! definition of the request counters, on the requesting connection:
//!
//! * `requests`: requests started ([`exchange`]), whatever became of them;
//! * `timeouts`: requests whose deadline passed before their reply;
//! * `late_replies`: replies that came back for no waiting request (it gave up, or was
//!   dropped by its caller).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use busbar_core::error::RequestError;
use busbar_core::message::Message;
use busbar_core::stats::Stats;
use tokio::sync::oneshot;

use crate::delivery::Meter;
use crate::ids::CorrelationId;

type Reply = Result<Message, RequestError>;

struct Waiter {
    tx: oneshot::Sender<Reply>,
    /// The transport's own mark (which connection the request went out on, say), for
    /// [`Inbox::fail_where`].
    tag: u64,
}

/// The requests of one connection that wait for replies.
pub struct Inbox {
    waiting: Mutex<HashMap<CorrelationId, Waiter>>,
    meter: Meter,
}

impl Inbox {
    /// An inbox counting on `meter`.
    pub fn new(meter: &Meter) -> Self {
        Inbox { waiting: Mutex::default(), meter: meter.clone() }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<CorrelationId, Waiter>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a reply under a new correlation id; `tag` is the transport's mark for the
    /// request. Dropping the returned [`Pending`] stops waiting.
    pub fn register(&self, tag: u64) -> Pending<'_> {
        let id = CorrelationId::new();
        let (tx, rx) = oneshot::channel();
        self.lock().insert(id, Waiter { tx, tag });
        Pending { inbox: self, id, rx }
    }

    /// A reply arrived carrying `correlation` (bytes as sent, or `None`): hands it to its
    /// waiter, or counts it late. True when a waiter took it.
    pub fn complete(&self, correlation: Option<&[u8]>, reply: Message) -> bool {
        self.complete_id(correlation.and_then(CorrelationId::from_bytes), Ok(reply))
    }

    /// Ends the request `id` (if any still waits) with `outcome`; counts a late reply when
    /// none does.
    pub fn complete_id(&self, id: Option<CorrelationId>, outcome: Reply) -> bool {
        let waiter = id.and_then(|id| self.lock().remove(&id));
        let taken = waiter.is_some_and(|w| w.tx.send(outcome).is_ok());
        if !taken {
            Stats::bump(&self.meter.stats().late_replies);
        }
        taken
    }

    /// Fails every waiting request whose tag `matches` with the error `make` gives (their
    /// replies can no longer come: the channel they were to arrive on is gone).
    pub fn fail_where(&self, matches: impl Fn(u64) -> bool, make: impl Fn() -> RequestError) {
        let failed: Vec<Waiter> = {
            let mut waiting = self.lock();
            let ids: Vec<CorrelationId> =
                waiting.iter().filter(|(_, w)| matches(w.tag)).map(|(id, _)| *id).collect();
            ids.iter().filter_map(|id| waiting.remove(id)).collect()
        };
        for w in failed {
            let _ = w.tx.send(Err(make()));
        }
    }

    /// Fails every waiting request with `make`'s error (the connection closed).
    pub fn fail_all(&self, make: impl Fn() -> RequestError) {
        self.fail_where(|_| true, make);
    }
}

/// One request waiting in an [`Inbox`]; dropping it stops waiting (a reply that comes later
/// is counted late).
pub struct Pending<'a> {
    inbox: &'a Inbox,
    id: CorrelationId,
    rx: oneshot::Receiver<Reply>,
}

impl Pending<'_> {
    /// The correlation id to send with the request.
    pub fn id(&self) -> CorrelationId {
        self.id
    }

    /// The reply (or the failure that ended the wait).
    pub async fn reply(&mut self) -> Reply {
        (&mut self.rx).await.unwrap_or_else(|_| Err(RequestError::closed()))
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.inbox.lock().remove(&self.id);
    }
}

/// Runs one request exchange (send, then wait for the reply) under one deadline that
/// covers everything, connecting or waiting for room included, and counts it on `meter`:
/// `requests` now, `timeouts` if the deadline passes first.
pub async fn exchange<F>(meter: &Meter, topic: &str, timeout: Duration, exchange: F) -> Reply
where
    F: Future<Output = Reply>,
{
    Stats::bump(&meter.stats().requests);
    match tokio::time::timeout(timeout, exchange).await {
        Ok(outcome) => outcome,
        Err(_) => {
            Stats::bump(&meter.stats().timeouts);
            Err(RequestError::timed_out(topic, timeout))
        }
    }
}

#[cfg(test)]
mod tests {
    use busbar_core::Topic;
    use busbar_core::error::RequestErrorKind;

    use super::*;

    fn reply() -> Message {
        Message::new(Topic::new("r").expect("topic"), &b"ok"[..])
    }

    #[tokio::test]
    async fn replies_find_their_request_and_late_ones_are_counted() {
        let meter = Meter::new();
        let inbox = Inbox::new(&meter);
        let mut first = inbox.register(0);
        let id = first.id();
        assert!(inbox.complete(Some(id.as_bytes()), reply()));
        assert!(first.reply().await.is_ok());
        drop(first);
        // Its waiter is gone: a second reply is late, as is one nobody asked for.
        assert!(!inbox.complete(Some(id.as_bytes()), reply()));
        assert!(!inbox.complete(Some(b"forged"), reply()));
        assert!(!inbox.complete(None, reply()));
        assert_eq!(meter.snapshot().late_replies, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_counts_a_timeout() {
        let meter = Meter::new();
        let inbox = Inbox::new(&meter);
        let outcome = exchange(&meter, "svc", Duration::from_secs(1), async {
            let mut pending = inbox.register(0);
            pending.reply().await
        })
        .await;
        assert_eq!(outcome.map_err(|e| e.kind()).err(), Some(RequestErrorKind::TimedOut));
        let s = meter.snapshot();
        assert_eq!((s.requests, s.timeouts), (1, 1));
    }

    #[tokio::test]
    async fn failing_by_tag_ends_only_those() {
        let meter = Meter::new();
        let inbox = Inbox::new(&meter);
        let mut old = inbox.register(1);
        let mut new = inbox.register(2);
        inbox.fail_where(|tag| tag <= 1, RequestError::closed);
        assert!(old.reply().await.is_err());
        assert!(inbox.complete(Some(new.id().as_bytes()), reply()));
        assert!(new.reply().await.is_ok());
    }
}
