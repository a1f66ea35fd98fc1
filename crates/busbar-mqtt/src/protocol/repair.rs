//! Keeps an MQTT 5 connection moving after the broker refuses a publish in its
//! acknowledgement.
//!
//! rumqttc 0.25 handles a refusing PUBACK or PUBREC (reason code 0x80 or more) in two ways
//! that would stall the connection:
//!
//! - A publish held back because it drew the refused publish's packet id is released only
//!   by a successful acknowledgement, so it would wait until rumqttc gives up on the
//!   collision two keep-alives later and drops the connection. Here it is put back at the
//!   head of the event loop's pending requests, which rumqttc sends even while it holds
//!   other requests back.
//! - A refused PUBREC never lowers rumqttc's count of publishes in flight (only a PUBCOMP
//!   does, and none follows a refusal). Each refusal shrinks the window the broker allows
//!   by one, and once it is gone no publish is sent again. Before that happens, when half
//!   the window is lost, the connection is closed with a DISCONNECT (so no will is sent)
//!   and opened again, which starts the count afresh; what was not yet acknowledged is
//!   sent again on the new connection like after any other drop.

use rumqttc::v5::{EventLoop, Request};

/// What has been repaired on the current connection.
#[derive(Default)]
pub(super) struct Repair {
    /// Refused PUBRECs on this connection: the slots rumqttc will not give back.
    lost_slots: u16,
    /// Publishes the broker lets this client have in flight (its receive maximum).
    window: u16,
    /// A DISCONNECT of ours is on its way to renew the connection.
    renewing: bool,
}

impl Repair {
    /// A new connection: rumqttc counts from zero again, within the broker's receive
    /// maximum (or the client's own limit).
    pub(super) fn connected(&mut self, receive_max: Option<u16>, client_limit: Option<u16>) {
        let window = receive_max.unwrap_or(u16::MAX).min(client_limit.unwrap_or(u16::MAX));
        *self = Repair { lost_slots: 0, window, renewing: false };
    }

    /// The broker refused the publish written with `pkid` (at its PUBREC when `qos2`).
    pub(super) fn refused(&mut self, l: &mut EventLoop, pkid: u16, qos2: bool) {
        if l.state.collision.as_ref().is_some_and(|held| held.pkid == pkid)
            && let Some(held) = l.state.collision.take()
        {
            l.pending.push_front(Request::Publish(held));
        }
        if !qos2 {
            return;
        }
        self.lost_slots = self.lost_slots.saturating_add(1);
        if !self.renewing && self.lost_slots >= (self.window / 2).max(1) {
            self.renewing = true;
            l.pending.push_back(Request::Disconnect);
        }
    }

    /// Whether a DISCONNECT just sent was ours (the connection is to be opened again, not
    /// ended).
    pub(super) fn sent_disconnect(&self) -> bool {
        self.renewing
    }

    /// The connection ended: why, when it was ours to renew it.
    pub(super) fn dropped(&mut self) -> Option<String> {
        let renewing = std::mem::take(&mut self.renewing);
        renewing.then(|| {
            format!(
                "renewing the connection: the broker refused {} QoS 2 publishes, whose slots \
                 the MQTT client does not give back",
                self.lost_slots
            )
        })
    }
}
