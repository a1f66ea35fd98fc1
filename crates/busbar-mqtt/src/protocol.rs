//! The two MQTT versions behind one face: a client that queues requests and an event source
//! the supervisor polls. rumqttc has a separate module tree per version; everything version
//! specific lives here so the supervisor and the routing are written once.

use busbar_core::error::{Common, ConnectError, ConnectErrorKind, OpError, PublishError};
use busbar_core::message::{Message, QoS};
use rumqttc::v5::mqttbytes::v5::{
    Filter, Packet as Packet5, RetainForwardRule, SubscribeProperties, SubscribeReasonCode as Code5,
};
use rumqttc::{Outgoing, Packet as Packet4, SubscribeReasonCode as Code4};

use crate::convert::{self, qos_out};

/// Which protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Version {
    /// MQTT 3.1.1 (headers, reply topics and expiry travel in a small envelope).
    V311,
    /// MQTT 5 (the default).
    #[default]
    V5,
}

/// Queues requests to the event loop.
pub(crate) enum Client {
    V5(rumqttc::v5::AsyncClient),
    V4(rumqttc::AsyncClient),
}

/// rumqttc refused to queue a request (its event loop is gone).
fn queue_error<K: Copy + From<Common>>(e: impl std::fmt::Display) -> OpError<K> {
    OpError::broker("mqtt", format!("cannot queue the request: {e}"))
}

impl Client {
    pub(crate) fn try_subscribe(
        &self,
        path: String,
        qos: QoS,
        no_local: bool,
        resend_retained: bool,
        id: usize,
    ) -> Result<(), busbar_core::error::SubscribeError> {
        match self {
            Client::V5(c) => {
                let mut filter = Filter::new(path, qos_out(qos));
                filter.nolocal = no_local;
                filter.retain_forward_rule = if resend_retained {
                    RetainForwardRule::OnEverySubscribe
                } else {
                    RetainForwardRule::OnNewSubscribe
                };
                let props = SubscribeProperties { id: Some(id), user_properties: Vec::new() };
                c.try_subscribe_many_with_properties([filter], props).map_err(queue_error)
            }
            Client::V4(c) => c.try_subscribe(path, qos4(qos)).map_err(queue_error),
        }
    }

    pub(crate) fn try_unsubscribe(&self, path: String) -> Result<(), PublishError> {
        match self {
            Client::V5(c) => c.try_unsubscribe(path).map_err(queue_error),
            Client::V4(c) => c.try_unsubscribe(path).map_err(queue_error),
        }
    }

    pub(crate) fn try_disconnect(&self) -> Result<(), PublishError> {
        match self {
            Client::V5(c) => c.try_disconnect().map_err(queue_error),
            Client::V4(c) => c.try_disconnect().map_err(queue_error),
        }
    }

    /// Publishes `message` (MQTT 5: with properties; 3.1.1: in the envelope when it needs
    /// one), refusing it when its packet would exceed `max_packet`.
    pub(crate) async fn publish(
        &self,
        message: &Message,
        max_packet: usize,
    ) -> Result<(), PublishError> {
        match self {
            Client::V5(c) => {
                let (payload, props) = convert::outgoing(message)?;
                let around =
                    props.user_properties.iter().map(|(k, v)| k.len() + v.len() + 5).sum::<usize>()
                        + props.response_topic.as_ref().map_or(0, |t| t.len() + 3)
                        + props.correlation_data.as_ref().map_or(0, |c| c.len() + 3)
                        + props.content_type.as_ref().map_or(0, |c| c.len() + 3);
                check_size(message, payload.len(), around, max_packet)?;
                c.publish_with_properties(
                    message.topic.as_str(),
                    qos_out(message.effective_qos(QoS::ExactlyOnce)),
                    message.retain,
                    payload,
                    props,
                )
                .await
                .map_err(queue_error)
            }
            Client::V4(c) => {
                // The envelope, if any, counts against the limit as the payload's overhead.
                let (payload, size) = convert::envelope(message)?;
                check_size(message, size, payload.len().saturating_sub(size), max_packet)?;
                c.publish(
                    message.topic.as_str(),
                    qos4(message.effective_qos(QoS::ExactlyOnce)),
                    message.retain,
                    payload,
                )
                .await
                .map_err(queue_error)
            }
        }
    }
}

/// Bytes a publish needs besides payload, topic and properties (fixed header, lengths, ids).
const PUBLISH_OVERHEAD: usize = 16;

/// Refuses a publish larger than `max`: a broker answers one by dropping the connection
/// (taking every other call on it down too) or by discarding it unseen. `around` is what the
/// message adds besides payload and topic (properties or envelope).
fn check_size(
    message: &Message,
    payload: usize,
    around: usize,
    max: usize,
) -> Result<(), PublishError> {
    let around = PUBLISH_OVERHEAD + message.topic.as_str().len() + around;
    if payload.saturating_add(around) > max {
        return Err(OpError::too_large(payload, max.saturating_sub(around)));
    }
    Ok(())
}

fn qos4(q: QoS) -> rumqttc::QoS {
    match q {
        QoS::AtMostOnce => rumqttc::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::QoS::ExactlyOnce,
    }
}

/// What the event loop reported, in version-free terms.
pub(crate) enum Happened {
    Connected {
        max_packet: Option<u32>,
        /// Requests left unfinished by the previous connection and sent again on this one.
        resent: usize,
    },
    /// A message (or why it cannot be one) and the subscription identifiers it matched.
    Message(Result<(Message, Vec<usize>), String>),
    SubAck {
        pkid: u16,
        refused: Option<String>,
    },
    SentSubscribe(u16),
    SentDisconnect,
    /// The broker acknowledged a publish of ours (PUBACK, or PUBCOMP for QoS 2).
    Acked,
    /// The broker refused a publish of ours (an MQTT 5 reason code of 0x80 or more in its
    /// PUBACK or PUBREC: not authorized, topic name invalid, quota exceeded...).
    Refused(String),
    Other,
}

/// The event loop of one connection, with the requests a dropped connection left unfinished.
///
/// When a connection drops, rumqttc moves its unacknowledged publishes and every request still
/// in its channel into `pending`, and on the next CONNACK without a resumed session it clears
/// that list: publishes the user was told were accepted would vanish without a trace. So the
/// supervisor takes them out at the drop and puts them back after the CONNACK: all of them to
/// a resumed session, and to a new session the publishes alone, as new packets (the broker no
/// longer knows their packet ids; subscriptions are restored from the registry instead).
pub(crate) enum Events {
    V5(Box<rumqttc::v5::EventLoop>, Vec<rumqttc::v5::Request>, Resends),
    V4(Box<rumqttc::EventLoop>, Vec<rumqttc::Request>, Resends),
}

impl Events {
    pub(crate) async fn poll(&mut self) -> Result<Happened, ConnectionFailure> {
        match self {
            Events::V5(l, stranded, resends) => {
                use rumqttc::v5::Event;
                let event = match l.poll().await {
                    Ok(event) => event,
                    Err(e) => {
                        stranded.extend(l.pending.drain(..));
                        resends.judge(stranded);
                        return Err(describe5(&e));
                    }
                };
                resends.observe(&event);
                Ok(match event {
                    Event::Incoming(Packet5::ConnAck(ack)) => {
                        let resent = restore(&mut l.pending, stranded, ack.session_present);
                        Happened::Connected {
                            max_packet: ack.properties.and_then(|p| p.max_packet_size),
                            resent,
                        }
                    }
                    Event::Incoming(Packet5::Publish(p)) => Happened::Message(convert::incoming(p)),
                    Event::Incoming(Packet5::PubAck(ack)) => match refused_ack(&ack.reason) {
                        Some(reason) => Happened::Refused(reason),
                        None => Happened::Acked,
                    },
                    // A refused QoS 2 publish ends at its PUBREC: no PUBCOMP follows.
                    Event::Incoming(Packet5::PubRec(rec)) => match refused_rec(&rec.reason) {
                        Some(reason) => Happened::Refused(reason),
                        None => Happened::Other,
                    },
                    Event::Incoming(Packet5::PubComp(_)) => Happened::Acked,
                    Event::Incoming(Packet5::SubAck(ack)) => Happened::SubAck {
                        pkid: ack.pkid,
                        refused: ack
                            .return_codes
                            .iter()
                            .find(|c| !matches!(c, Code5::Success(_)))
                            .map(|c| format!("{c:?}")),
                    },
                    Event::Outgoing(Outgoing::Subscribe(pkid)) => Happened::SentSubscribe(pkid),
                    Event::Outgoing(Outgoing::Disconnect) => Happened::SentDisconnect,
                    _ => Happened::Other,
                })
            }
            Events::V4(l, stranded, resends) => {
                use rumqttc::Event;
                let event = match l.poll().await {
                    Ok(event) => event,
                    Err(e) => {
                        stranded.extend(l.pending.drain(..));
                        resends.judge(stranded);
                        return Err(describe4(&e));
                    }
                };
                resends.observe4(&event);
                Ok(match event {
                    Event::Incoming(Packet4::ConnAck(ack)) => {
                        let resent = restore(&mut l.pending, stranded, ack.session_present);
                        Happened::Connected { max_packet: None, resent }
                    }
                    Event::Incoming(Packet4::Publish(p)) => {
                        Happened::Message(convert::incoming_v4(p))
                    }
                    Event::Incoming(Packet4::PubAck(_) | Packet4::PubComp(_)) => Happened::Acked,
                    Event::Incoming(Packet4::SubAck(ack)) => Happened::SubAck {
                        pkid: ack.pkid,
                        refused: ack
                            .return_codes
                            .iter()
                            .find(|c| !matches!(c, Code4::Success(_)))
                            .map(|c| format!("{c:?}")),
                    },
                    Event::Outgoing(Outgoing::Subscribe(pkid)) => Happened::SentSubscribe(pkid),
                    Event::Outgoing(Outgoing::Disconnect) => Happened::SentDisconnect,
                    _ => Happened::Other,
                })
            }
        }
    }

    /// The publishes given up since the last call (see [`Resends`]).
    pub(crate) fn take_given_up(&mut self) -> Vec<GivenUp> {
        match self {
            Events::V5(.., r) | Events::V4(.., r) => std::mem::take(&mut r.given_up),
        }
    }

    pub(crate) fn set_credentials(&mut self, user: String, pass: String) {
        match self {
            Events::V5(l, ..) => {
                l.options.set_credentials(user, pass);
            }
            Events::V4(l, ..) => {
                l.mqtt_options.set_credentials(user, pass);
            }
        }
    }
}

/// A request a dropped connection left unfinished, as it may go to a new session.
trait Unfinished: Sized {
    /// The request for a new session: a publish as a new packet (the broker no longer knows
    /// its id); nothing else (subscriptions come back from the registry, acknowledgements
    /// belong to the old session).
    fn for_new_session(self) -> Option<Self>;

    /// For a publish: its packet id and what tells it apart from other publishes across
    /// reconnects (the payload's buffer is shared by every copy rumqttc makes).
    fn publish_identity(&self) -> Option<(u16, Identity)>;
}

impl Unfinished for rumqttc::v5::Request {
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

/// The reason an MQTT 5 PUBACK refuses a publish with, if it does.
fn refused_ack(reason: &rumqttc::v5::mqttbytes::v5::PubAckReason) -> Option<String> {
    use rumqttc::v5::mqttbytes::v5::PubAckReason as R;
    match reason {
        R::Success | R::NoMatchingSubscribers => None,
        other => Some(format!("{other:?}")),
    }
}

/// The reason an MQTT 5 PUBREC refuses a publish with, if it does.
fn refused_rec(reason: &rumqttc::v5::mqttbytes::v5::PubRecReason) -> Option<String> {
    use rumqttc::v5::mqttbytes::v5::PubRecReason as R;
    match reason {
        R::Success | R::NoMatchingSubscribers => None,
        other => Some(format!("{other:?}")),
    }
}

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
    fn of(topic: &str, payload: &bytes::Bytes) -> Identity {
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

    fn observe(&mut self, event: &rumqttc::v5::Event) {
        use rumqttc::v5::Event;
        match event {
            Event::Outgoing(Outgoing::Publish(pkid)) => self.wrote(*pkid),
            Event::Incoming(Packet5::PubAck(a)) => self.acked(a.pkid),
            Event::Incoming(Packet5::PubRec(a)) => self.acked(a.pkid),
            _ => {}
        }
    }

    fn observe4(&mut self, event: &rumqttc::Event) {
        use rumqttc::Event;
        match event {
            Event::Outgoing(Outgoing::Publish(pkid)) => self.wrote(*pkid),
            Event::Incoming(Packet4::PubAck(a)) => self.acked(a.pkid),
            Event::Incoming(Packet4::PubRec(a)) => self.acked(a.pkid),
            _ => {}
        }
    }

    /// After a drop: strikes the oldest unacknowledged publish written on the lost
    /// connection, and takes it out of `stranded` once it has struck out.
    fn judge<R: Unfinished>(&mut self, stranded: &mut Vec<R>) {
        let oldest = stranded
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let (pkid, identity) = r.publish_identity()?;
                let order = *self.written.get(&pkid)?;
                Some((order, i, identity))
            })
            .min_by_key(|(order, ..)| *order);
        self.written.clear();
        let Some((_, index, identity)) = oldest else {
            // Nothing was waiting for the broker: this drop was not a publish's doing.
            self.suspect = None;
            return;
        };
        let strikes = match self.suspect.take() {
            Some((suspect, n)) if suspect == identity => n + 1,
            _ => 1,
        };
        if strikes < MAX_STRIKES {
            self.suspect = Some((identity, strikes));
            return;
        }
        stranded.remove(index);
        self.given_up.push(GivenUp { topic: identity.topic });
    }
}

/// Puts the requests a dropped connection left unfinished back in front of the event loop's
/// queue after a CONNACK: all of them to a resumed session, otherwise what a new session can
/// take. Returns how many went back.
fn restore<R: Unfinished>(
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

/// Why a connection attempt failed or a live connection dropped: the kind a caller of
/// `connect` matches on, and the reason in words.
pub(crate) struct ConnectionFailure {
    kind: ConnectErrorKind,
    reason: String,
}

impl ConnectionFailure {
    /// The reason, in words.
    pub(crate) fn reason(&self) -> &str {
        &self.reason
    }

    /// The failure of connecting to `url` (shown without its password).
    pub(crate) fn into_connect_error(self, url: &str) -> ConnectError {
        OpError::new(self.kind, format!("not connected to {url}: {}", self.reason))
    }
}

/// Why a broker refused a connection, whichever version's code it sent.
fn refusal(
    bad_credentials: bool,
    not_authorized: bool,
    code: &dyn std::fmt::Debug,
) -> ConnectionFailure {
    let (kind, reason) = if bad_credentials {
        (ConnectErrorKind::Refused, "the broker refused the user name or password".to_owned())
    } else if not_authorized {
        (ConnectErrorKind::Refused, "the broker refused the connection: not authorized".to_owned())
    } else {
        (ConnectErrorKind::Broker, format!("the broker refused the connection: {code:?}"))
    };
    ConnectionFailure { kind, reason }
}

/// The kind of a failure that is not a refusal: TLS, a timeout, an unreachable broker.
fn classify(tls: bool, timeout: bool, io: bool, text: String) -> ConnectionFailure {
    // A certificate that does not verify can surface as an I/O or WebSocket error too.
    let kind = if tls || text.to_ascii_lowercase().contains("certificate") {
        ConnectErrorKind::Tls
    } else if timeout {
        ConnectErrorKind::TimedOut
    } else if io {
        ConnectErrorKind::Unreachable
    } else {
        ConnectErrorKind::Broker
    };
    ConnectionFailure { kind, reason: text }
}

fn describe5(e: &rumqttc::v5::ConnectionError) -> ConnectionFailure {
    use rumqttc::v5::ConnectionError as E;
    use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as Code;
    match e {
        E::ConnectionRefused(code) => refusal(
            matches!(code, Code::BadUserNamePassword),
            matches!(code, Code::NotAuthorized),
            code,
        ),
        other => classify(
            matches!(other, E::Tls(_)),
            matches!(other, E::Timeout(_)),
            matches!(other, E::Io(_)),
            other.to_string(),
        ),
    }
}

fn describe4(e: &rumqttc::ConnectionError) -> ConnectionFailure {
    use rumqttc::ConnectReturnCode as Code;
    use rumqttc::ConnectionError as E;
    match e {
        E::ConnectionRefused(code) => refusal(
            matches!(code, Code::BadUserNamePassword),
            matches!(code, Code::NotAuthorized),
            code,
        ),
        other => classify(
            matches!(other, E::Tls(_)),
            matches!(other, E::NetworkTimeout | E::FlushTimeout),
            matches!(other, E::Io(_)),
            other.to_string(),
        ),
    }
}
