//! Publishes the broker answers by dropping the connection are not sent again forever.

use super::Happened;
use super::unfinished::Unfinished;

/// How often in a row the broker may drop the connection while a publish is the oldest one
/// it has not acknowledged before that publish is given up as refused.
pub(crate) const MAX_STRIKES: u32 = 3;

/// One publish, recognisable each time it is sent again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    topic: String,
    payload: (usize, usize),
}

impl Identity {
    pub(super) fn of(topic: &str, payload: &bytes::Bytes) -> Identity {
        Identity { topic: topic.to_owned(), payload: (payload.as_ptr() as usize, payload.len()) }
    }
}

/// A publish given up on: the broker dropped the connection every time it was sent.
pub(crate) struct GivenUp {
    pub(crate) topic: String,
}

/// Keeps a publish the broker refuses from being sent again forever.
///
/// Some brokers answer a publish they refuse (a topic too deep, a packet they cannot take)
/// by dropping the connection. Sent again after every reconnect, such a publish would take
/// the connection down in a loop and hold back everything queued behind it. The broker
/// reads a connection in order, so the publish it choked on is the oldest one written and
/// not acknowledged: when the same publish is that one at [`MAX_STRIKES`] drops in a row,
/// it is taken out and reported instead of sent again.
#[derive(Default)]
pub(crate) struct Resends {
    /// The order publishes were written on the current connection, by packet id.
    written: std::collections::HashMap<u16, u64>,
    next: u64,
    suspect: Option<(Identity, u32)>,
    given_up: Vec<GivenUp>,
}

impl Resends {
    fn wrote(&mut self, pkid: u16) {
        if pkid != 0 {
            self.next += 1;
            self.written.insert(pkid, self.next);
        }
    }

    fn acked(&mut self, pkid: u16) {
        self.written.remove(&pkid);
    }

    /// Follows what the event loop did: which publishes are written and not acknowledged.
    pub(super) fn observe(&mut self, happened: &Happened) {
        match happened {
            Happened::SentPublish(pkid) => self.wrote(*pkid),
            Happened::Acked(pkid) | Happened::Received(pkid) | Happened::Refused { pkid, .. } => {
                self.acked(*pkid)
            }
            _ => {}
        }
    }

    /// The publishes given up since the last call.
    pub(super) fn take_given_up(&mut self) -> Vec<GivenUp> {
        std::mem::take(&mut self.given_up)
    }

    /// After a drop: `unfinished` as rumqttc hands it back (the publishes written and not
    /// acknowledged ordered by packet id, which wraps around, then the rest) in the order
    /// it must go again: the written publishes in the order they were written, then `held`
    /// (taken after them, never written), then the rest as it was. Sent by packet id, the
    /// publishes would reach subscribers out of order.
    pub(super) fn in_sending_order<R: Unfinished>(
        &self,
        unfinished: impl Iterator<Item = R>,
        held: Option<R>,
    ) -> Vec<R> {
        let (mut written, rest): (Vec<R>, Vec<R>) =
            unfinished.partition(|r| r.publish_identity().is_some_and(|(pkid, _)| pkid != 0));
        written.sort_by_key(|r| {
            r.publish_identity().and_then(|(pkid, _)| self.written.get(&pkid).copied())
        });
        written.extend(held);
        written.extend(rest);
        written
    }

    /// After a drop: strikes the oldest unacknowledged publish written on the lost
    /// connection, and takes it out of `stranded` once it has struck out.
    /// Returns the packet id of the publish given up, if one was.
    pub(super) fn judge<R: Unfinished>(&mut self, stranded: &mut Vec<R>) -> Option<u16> {
        let oldest = stranded
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let (pkid, identity) = r.publish_identity()?;
                let order = *self.written.get(&pkid)?;
                Some((order, i, pkid, identity))
            })
            .min_by_key(|(order, ..)| *order);
        self.written.clear();
        let Some((_, index, pkid, identity)) = oldest else {
            // Nothing was waiting for the broker: this drop was not a publish's doing.
            self.suspect = None;
            return None;
        };
        let strikes = match self.suspect.take() {
            Some((suspect, n)) if suspect == identity => n + 1,
            _ => 1,
        };
        if strikes < MAX_STRIKES {
            self.suspect = Some((identity, strikes));
            return None;
        }
        stranded.remove(index);
        self.given_up.push(GivenUp { topic: identity.topic });
        Some(pkid)
    }
}
