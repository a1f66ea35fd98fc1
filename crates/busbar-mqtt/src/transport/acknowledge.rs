//! Acknowledging incoming messages in a persistent session. There the broker gives what
//! was not acknowledged to the session's next connection, so busbar acknowledges a QoS 1
//! or 2 message only once it was handed over to every subscription it is for, or, on a
//! subscription that acknowledges on read or explicitly, once its receipt says so: a crash
//! between reading a message off the socket and handling it loses nothing.
//!
//! MQTT has no way to give one message back: one never acknowledged stays with the
//! broker (taking a place in its in-flight window for this client) until the connection
//! ends, and comes again to the session's next connection.

use std::sync::{Arc, Weak};

use busbar_core::Receipt;
use busbar_transport_kit::acks::receipts_for_copies;

use super::state::{Shared, lock};
use crate::protocol::Incoming;

impl Shared {
    /// Acknowledges `incoming` now, if acknowledging is busbar's to do on this connection.
    /// Never waits: when the event loop's channel is full the acknowledgement goes out as
    /// a task (the supervisor, which calls this, is what empties that channel).
    pub(super) fn acknowledge(&self, incoming: Incoming) {
        if !self.settings.acknowledges_after_hand_over() || !incoming.awaits_ack() {
            return;
        }
        if let Err(incoming) = self.acker.try_ack(incoming) {
            let acker = self.acker.clone();
            self.acks.spawn(async move {
                acker.ack(incoming).await;
            });
        }
    }

    /// One receipt for each of `copies` subscriptions a message goes to; `incoming` is
    /// acknowledged when every one of them was. An acknowledgement made after the
    /// connection it came on was lost is not sent: the packet id may name another message
    /// by then, and the broker gives this one again anyway.
    pub(super) fn receipts(self: &Arc<Self>, incoming: Incoming, copies: usize) -> Vec<Receipt> {
        let epoch = *lock(&self.epoch);
        let runtime = tokio::runtime::Handle::try_current().ok();
        let shared: Weak<Shared> = Arc::downgrade(self);
        receipts_for_copies(copies, move || {
            let Some(shared) = shared.upgrade() else { return };
            if *lock(&shared.epoch) != epoch {
                return;
            }
            if let Err(incoming) = shared.acker.try_ack(incoming) {
                let acker = shared.acker.clone();
                let ack = async move {
                    acker.ack(incoming).await;
                };
                match &runtime {
                    Some(rt) => shared.acks.spawn_on(rt, ack),
                    None => shared.acks.spawn(ack),
                }
            }
        })
    }
}
