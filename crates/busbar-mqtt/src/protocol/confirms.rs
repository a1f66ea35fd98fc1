//! Which publish the broker confirmed: the bridge between a caller waiting for its QoS 1 or 2
//! publish and the packet id rumqttc gives that publish when it writes it.
//!
//! rumqttc assigns packet ids inside its event loop and reports, in the order it takes
//! requests, one event per publish it handles: `Outgoing::Publish(pkid)` when written, or
//! `Outgoing::AwaitAck(pkid)` when held back because the id is still in use (it writes that
//! one after the id's acknowledgement, with another `Outgoing::Publish`). The event loop
//! takes requests in the order they were queued (those a dropped connection left unfinished
//! first), so a FIFO of confirms in queueing order, popped at each of those events, names the
//! publish behind every packet id. The client queues a confirm and its request under one
//! lock, so the two orders are the same.
//!
//! After a dropped connection the unfinished requests go back in rumqttc's own order
//! (acknowledged or not, by packet id), which is not the order they were written in:
//! [`Confirms::requeue`] rebuilds the FIFO in the order they will be taken again.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use busbar_core::error::{OpError, PublishError, PublishErrorKind};
use tokio::sync::oneshot;

/// Where a publish's outcome goes; `None` for a publish nobody waits for (a request, or a
/// message forwarded from a drop-policy queue), which still takes its place in the order.
pub(crate) type Confirm = Option<oneshot::Sender<Result<(), PublishError>>>;

/// A publish left unfinished by a dropped connection, as the requeue sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unfinished {
    /// The packet id it was given (0: never written, or a QoS 0 publish).
    pub(crate) pkid: u16,
    /// QoS 1 or 2: it has a confirm.
    pub(crate) tracked: bool,
}

/// The confirms of QoS 1 and 2 publishes between queueing and the broker's answer.
#[derive(Default)]
pub(crate) struct Confirms {
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    /// Queued to the event loop, not handled yet, in the order it takes them.
    queued: VecDeque<Confirm>,
    /// Written, waiting for the broker's PUBACK or PUBREC, by packet id.
    written: HashMap<u16, Confirm>,
    /// The publish rumqttc holds back until its packet id is free (at most one: while it
    /// holds one back it takes no new requests).
    held: Option<(u16, Confirm)>,
}

fn answer(confirm: Confirm, outcome: Result<(), PublishError>) {
    if let Some(tx) = confirm {
        // The caller may have stopped waiting; the outcome is counted elsewhere too.
        let _ = tx.send(outcome);
    }
}

impl Confirms {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        busbar_transport_kit::lock(&self.table)
    }

    /// A QoS 1 or 2 publish is about to be queued to the event loop.
    pub(crate) fn queue(&self, confirm: Confirm) {
        self.table().queued.push_back(confirm);
    }

    /// The publish just queued did not reach the event loop after all: its confirm back.
    /// (The caller holds the queueing lock, so nothing was queued after it.)
    pub(crate) fn unqueue_last(&self) -> Confirm {
        self.table().queued.pop_back().flatten()
    }

    /// `Outgoing::Publish(pkid)` for a QoS 1 or 2 publish.
    pub(crate) fn written(&self, pkid: u16) {
        let mut t = self.table();
        let confirm = match t.held.take() {
            Some((held, confirm)) if held == pkid => confirm,
            other => {
                t.held = other;
                t.queued.pop_front().flatten()
            }
        };
        if let Some(stale) = t.written.insert(pkid, confirm) {
            // rumqttc never reuses an id still in use; if it did, the older publish's fate
            // can no longer be told, and that is said rather than guessed.
            answer(
                stale,
                Err(OpError::broker(
                    "mqtt",
                    "the client reused the packet id of a publish the broker had not \
                     acknowledged; its outcome is unknown",
                )),
            );
        }
    }

    /// `Outgoing::AwaitAck(pkid)`: the next publish waits for `pkid` to be acknowledged.
    pub(crate) fn held_back(&self, pkid: u16) {
        let mut t = self.table();
        let confirm = t.queued.pop_front().flatten();
        t.held = Some((pkid, confirm));
    }

    /// The broker has the publish written with `pkid` (PUBACK at QoS 1, PUBREC at QoS 2).
    pub(crate) fn confirmed(&self, pkid: u16) {
        let confirm = self.table().written.remove(&pkid).flatten();
        answer(confirm, Ok(()));
    }

    /// The broker refused the publish written with `pkid`. Returns whether a caller was
    /// waiting for it (and has been told).
    pub(crate) fn refused(&self, pkid: u16, reason: &str) -> bool {
        let confirm = self.table().written.remove(&pkid).flatten();
        let told = confirm.as_ref().is_some_and(|tx| !tx.is_closed());
        answer(confirm, Err(OpError::refused(format!("the broker refused the publish: {reason}"))));
        told
    }

    /// After a dropped connection: `given_up` (written with these ids) will not be sent
    /// again and fail; the confirms of `stranded`, the publishes about to be queued again in
    /// that order, go back to the front of the FIFO in the same order.
    ///
    /// Running it again with the same `stranded` (a reconnect that failed before anything
    /// was written) leaves the order as it was.
    pub(crate) fn requeue(&self, stranded: &[Unfinished], given_up: &[u16]) {
        let mut t = self.table();
        for pkid in given_up {
            if let Some(confirm) = t.written.remove(pkid) {
                answer(
                    confirm,
                    Err(OpError::new(
                        PublishErrorKind::Refused,
                        "the broker dropped the connection each time this publish was sent; \
                         it was given up",
                    )),
                );
            }
        }
        let mut unwritten = std::mem::take(&mut t.queued);
        // The held-back publish was taken before anything still queued.
        if let Some((_, confirm)) = t.held.take() {
            unwritten.push_front(confirm);
        }
        let mut order = VecDeque::with_capacity(stranded.len() + unwritten.len());
        for u in stranded.iter().filter(|u| u.tracked) {
            let confirm = match t.written.remove(&u.pkid) {
                Some(confirm) if u.pkid != 0 => confirm,
                _ => unwritten.pop_front().flatten(),
            };
            order.push_back(confirm);
        }
        order.extend(unwritten);
        // Written publishes rumqttc did not hand back cannot be confirmed any more.
        for (_, confirm) in t.written.drain() {
            answer(
                confirm,
                Err(OpError::broker(
                    "mqtt",
                    "the connection dropped and the client did not keep this publish to send \
                     it again",
                )),
            );
        }
        t.queued = order;
    }

    /// The connection is closed: every caller still waiting learns so.
    pub(crate) fn close(&self) {
        let mut t = self.table();
        t.queued.clear();
        t.written.clear();
        t.held = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(confirms: &Confirms) -> oneshot::Receiver<Result<(), PublishError>> {
        let (tx, rx) = oneshot::channel();
        confirms.queue(Some(tx));
        rx
    }

    fn outcome(rx: &mut oneshot::Receiver<Result<(), PublishError>>) -> Option<bool> {
        rx.try_recv().ok().map(|r| r.is_ok())
    }

    #[test]
    fn acknowledgements_reach_the_publish_written_with_that_id() {
        let c = Confirms::default();
        let (mut a, mut b) = (waiter(&c), waiter(&c));
        c.written(7);
        c.written(8);
        c.confirmed(8);
        assert_eq!((outcome(&mut a), outcome(&mut b)), (None, Some(true)));
        c.refused(7, "NotAuthorized");
        assert_eq!(outcome(&mut a), Some(false));
    }

    #[test]
    fn a_held_back_publish_keeps_its_confirm_until_written() {
        let c = Confirms::default();
        let (mut a, mut b, mut d) = (waiter(&c), waiter(&c), waiter(&c));
        c.written(1);
        c.held_back(1);
        c.confirmed(1);
        assert_eq!(outcome(&mut a), Some(true));
        c.written(1);
        c.written(2);
        c.confirmed(2);
        assert_eq!(outcome(&mut d), Some(true));
        c.confirmed(1);
        assert_eq!(outcome(&mut b), Some(true));
    }

    #[test]
    fn a_drop_rebuilds_the_order_the_publishes_go_again_in() {
        let c = Confirms::default();
        let (mut a, mut b, mut d) = (waiter(&c), waiter(&c), waiter(&c));
        c.written(1);
        c.written(2);
        // rumqttc hands back 2 before 1, and the never-written third after them.
        let stranded = [
            Unfinished { pkid: 2, tracked: true },
            Unfinished { pkid: 0, tracked: false },
            Unfinished { pkid: 1, tracked: true },
            Unfinished { pkid: 0, tracked: true },
        ];
        c.requeue(&stranded, &[]);
        // A reconnect that fails before writing anything changes nothing.
        c.requeue(&stranded, &[]);
        c.written(5);
        c.written(6);
        c.written(7);
        c.confirmed(6);
        assert_eq!(outcome(&mut a), Some(true), "the second one written again was pkid 1");
        c.confirmed(5);
        assert_eq!(outcome(&mut b), Some(true));
        c.confirmed(7);
        assert_eq!(outcome(&mut d), Some(true));
    }

    #[test]
    fn a_given_up_publish_fails_and_the_rest_go_again() {
        let c = Confirms::default();
        let (mut a, mut b) = (waiter(&c), waiter(&c));
        c.written(1);
        c.written(2);
        c.requeue(&[Unfinished { pkid: 2, tracked: true }], &[1]);
        assert_eq!(outcome(&mut a), Some(false));
        c.written(1);
        c.confirmed(1);
        assert_eq!(outcome(&mut b), Some(true));
    }

    #[test]
    fn closing_tells_every_waiter() {
        let c = Confirms::default();
        let mut a = waiter(&c);
        c.written(3);
        c.close();
        assert!(matches!(a.try_recv(), Err(oneshot::error::TryRecvError::Closed)));
    }
}
