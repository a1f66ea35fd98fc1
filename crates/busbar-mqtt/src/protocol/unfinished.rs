//! Requests a dropped connection left unfinished, and how they go back after a reconnect.

use super::confirms::Unfinished as Key;
use super::resends::Identity;

/// A request a dropped connection left unfinished, as it may go to a new session.
pub(super) trait Unfinished: Sized {
    /// The request for a new session: a publish as a new packet (the broker no longer knows
    /// its id); nothing else (subscriptions come back from the registry, acknowledgements
    /// belong to the old session).
    fn for_new_session(self) -> Option<Self>;

    /// For a publish: its packet id and what tells it apart from other publishes across
    /// reconnects (the payload's buffer is shared by every copy rumqttc makes).
    fn publish_identity(&self) -> Option<(u16, Identity)>;

    /// For a publish: its packet id and whether it waits for an acknowledgement.
    fn publish_key(&self) -> Option<Key>;

    /// A publish the event loop held back (its packet id was in use), never written: as a
    /// request to send again.
    fn unwritten(publish: Self::PublishPacket) -> Self;

    /// The publish packet type of this version.
    type PublishPacket;
}

impl Unfinished for rumqttc::v5::Request {
    type PublishPacket = rumqttc::v5::mqttbytes::v5::Publish;

    fn publish_key(&self) -> Option<Key> {
        match self {
            rumqttc::v5::Request::Publish(p) => Some(Key {
                pkid: p.pkid,
                tracked: p.qos != rumqttc::v5::mqttbytes::QoS::AtMostOnce,
            }),
            _ => None,
        }
    }

    fn unwritten(mut publish: Self::PublishPacket) -> Self {
        (publish.pkid, publish.dup) = (0, false);
        rumqttc::v5::Request::Publish(publish)
    }

    fn publish_identity(&self) -> Option<(u16, Identity)> {
        match self {
            rumqttc::v5::Request::Publish(p) => {
                Some((p.pkid, Identity::of(&String::from_utf8_lossy(&p.topic), &p.payload)))
            }
            _ => None,
        }
    }

    fn for_new_session(self) -> Option<Self> {
        match self {
            rumqttc::v5::Request::Publish(mut p) => {
                (p.pkid, p.dup) = (0, false);
                Some(rumqttc::v5::Request::Publish(p))
            }
            _ => None,
        }
    }
}

impl Unfinished for rumqttc::Request {
    type PublishPacket = rumqttc::Publish;

    fn publish_key(&self) -> Option<Key> {
        match self {
            rumqttc::Request::Publish(p) => {
                Some(Key { pkid: p.pkid, tracked: p.qos != rumqttc::QoS::AtMostOnce })
            }
            _ => None,
        }
    }

    fn unwritten(mut publish: Self::PublishPacket) -> Self {
        (publish.pkid, publish.dup) = (0, false);
        rumqttc::Request::Publish(publish)
    }

    fn publish_identity(&self) -> Option<(u16, Identity)> {
        match self {
            rumqttc::Request::Publish(p) => Some((p.pkid, Identity::of(&p.topic, &p.payload))),
            _ => None,
        }
    }

    fn for_new_session(self) -> Option<Self> {
        match self {
            rumqttc::Request::Publish(mut p) => {
                (p.pkid, p.dup) = (0, false);
                Some(rumqttc::Request::Publish(p))
            }
            _ => None,
        }
    }
}

/// Puts the requests a dropped connection left unfinished back in front of the event loop's
/// queue after a CONNACK: all of them to a resumed session, otherwise what a new session can
/// take. Returns how many went back.
pub(super) fn restore<R: Unfinished>(
    pending: &mut std::collections::VecDeque<R>,
    stranded: &mut Vec<R>,
    resumed: bool,
) -> usize {
    let before = pending.len();
    if resumed {
        pending.extend(stranded.drain(..));
    } else {
        pending.extend(stranded.drain(..).filter_map(R::for_new_session));
    }
    pending.len() - before
}
