//! The two MQTT versions behind one face: a client that queues requests and an event source
//! the supervisor polls. rumqttc has a separate module tree per version; everything version
//! specific lives here so the supervisor and the routing are written once.

mod confirms;
mod failure;
mod quick_ack;
mod repair;
mod resends;
mod unfinished;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use busbar_core::error::{Common, OpError, PublishError};
use busbar_core::message::{Message, QoS};
use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{
    Filter, Packet as Packet5, PublishProperties, RetainForwardRule, SubscribeProperties,
    SubscribeReasonCode as Code5, UnsubAckReason,
};
use rumqttc::{Outgoing, Packet as Packet4, SubscribeReasonCode as Code4};

pub(crate) use self::confirms::{Confirm, Confirms};
pub(crate) use self::failure::ConnectionFailure;
use self::failure::{describe4, describe5};
use self::quick_ack::{PacketKind, QuickAck};
use self::repair::Repair;
use self::resends::Resends;
pub(crate) use self::resends::{GivenUp, MAX_STRIKES};
use self::unfinished::{Unfinished, restore};
use crate::convert::{self, qos_out};
use busbar_transport_kit::Server;

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
///
/// Publishes are queued one at a time under `gate`, each with its confirm, so that the
/// confirms line up with the order the event loop takes the publishes in (see `confirms`).
/// A publish goes to the event loop's channel at once when there is room and nothing waits
/// before it; otherwise it takes a [`Place`] in line and waits for room, and every later
/// publish lines up behind it, so none overtakes another.
pub(crate) struct Client {
    api: Api,
    confirms: Arc<Confirms>,
    gate: tokio::sync::Mutex<()>,
    waiting: Arc<AtomicUsize>,
}

#[derive(Clone)]
enum Api {
    V5(rumqttc::v5::AsyncClient),
    V4(rumqttc::AsyncClient),
}

/// What acknowledging one incoming message takes (in a persistent session busbar
/// acknowledges only once the message was handed over, or when its receipt says so).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Incoming {
    qos: QoS,
    pkid: u16,
}

impl Incoming {
    /// True when the broker waits for an acknowledgement (QoS 1 and 2).
    pub(crate) fn awaits_ack(&self) -> bool {
        self.qos != QoS::AtMostOnce
    }
}

/// Sends acknowledgements of incoming messages (a cheap clone of the client's handle).
#[derive(Clone)]
pub(crate) struct Acker(Api);

impl Acker {
    /// Queues the acknowledgement of `incoming` (PUBACK, or PUBREC at QoS 2) if the event
    /// loop's channel has room; gives it back when it has none.
    pub(crate) fn try_ack(&self, incoming: Incoming) -> Result<(), Incoming> {
        if !incoming.awaits_ack() {
            return Ok(());
        }
        let queued = match &self.0 {
            Api::V5(c) => c.try_ack(&publish5(incoming)).is_ok(),
            Api::V4(c) => c.try_ack(&publish4(incoming)).is_ok(),
        };
        if queued { Ok(()) } else { Err(incoming) }
    }

    /// Queues the acknowledgement of `incoming`, waiting for room; false if the event loop
    /// is gone (the broker then gives the message again to the session's next connection).
    pub(crate) async fn ack(&self, incoming: Incoming) -> bool {
        if !incoming.awaits_ack() {
            return true;
        }
        match &self.0 {
            Api::V5(c) => c.ack(&publish5(incoming)).await.is_ok(),
            Api::V4(c) => c.ack(&publish4(incoming)).await.is_ok(),
        }
    }
}

/// rumqttc builds an acknowledgement from a publish's QoS and packet id alone.
fn publish5(incoming: Incoming) -> rumqttc::v5::mqttbytes::v5::Publish {
    let mut p =
        rumqttc::v5::mqttbytes::v5::Publish::new("", qos_out(incoming.qos), Bytes::new(), None);
    p.pkid = incoming.pkid;
    p
}

fn publish4(incoming: Incoming) -> rumqttc::Publish {
    let mut p = rumqttc::Publish::new("", qos4(incoming.qos), Vec::new());
    p.pkid = incoming.pkid;
    p
}

/// A publish built for the event loop.
enum Packet {
    V5 { qos: rumqttc::v5::mqttbytes::QoS, payload: Bytes, props: PublishProperties },
    V4 { qos: rumqttc::QoS, payload: Bytes },
}

/// What became of a publish offered to the event loop at once.
pub(crate) enum Handed {
    /// It is in the event loop's channel.
    Done,
    /// It must wait for its turn (the confirm comes back).
    Busy(Confirm),
}

/// A publish's place in line while it waits for room in the event loop's channel.
pub(crate) struct Place(Arc<AtomicUsize>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// rumqttc refused to queue a request (its event loop is gone).
fn queue_error<K: Copy + From<Common>>(e: impl std::fmt::Display) -> OpError<K> {
    OpError::broker("mqtt", format!("cannot queue the request: {e}"))
}

impl Client {
    pub(crate) fn v5(client: rumqttc::v5::AsyncClient, confirms: Arc<Confirms>) -> Client {
        Client::with(Api::V5(client), confirms)
    }

    pub(crate) fn v4(client: rumqttc::AsyncClient, confirms: Arc<Confirms>) -> Client {
        Client::with(Api::V4(client), confirms)
    }

    fn with(api: Api, confirms: Arc<Confirms>) -> Client {
        Client { api, confirms, gate: tokio::sync::Mutex::new(()), waiting: Arc::default() }
    }

    /// What acknowledges incoming messages on this connection.
    pub(crate) fn acker(&self) -> Acker {
        Acker(self.api.clone())
    }

    /// The confirms of this connection's publishes (for closing).
    pub(crate) fn confirms(&self) -> &Confirms {
        &self.confirms
    }

    pub(crate) fn try_subscribe(
        &self,
        path: String,
        qos: QoS,
        no_local: bool,
        resend_retained: bool,
        id: usize,
    ) -> Result<(), busbar_core::error::SubscribeError> {
        match &self.api {
            Api::V5(c) => {
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
            Api::V4(c) => c.try_subscribe(path, qos4(qos)).map_err(queue_error),
        }
    }

    pub(crate) fn try_unsubscribe(
        &self,
        path: String,
    ) -> Result<(), busbar_core::error::SubscribeError> {
        match &self.api {
            Api::V5(c) => c.try_unsubscribe(path).map_err(queue_error),
            Api::V4(c) => c.try_unsubscribe(path).map_err(queue_error),
        }
    }

    pub(crate) fn try_disconnect(&self) -> Result<(), PublishError> {
        match &self.api {
            Api::V5(c) => c.try_disconnect().map_err(queue_error),
            Api::V4(c) => c.try_disconnect().map_err(queue_error),
        }
    }

    /// Builds the packet for `message` (MQTT 5: with properties; 3.1.1: in the envelope
    /// when it needs one), refusing it when it would exceed `max_packet`.
    fn packet(&self, message: &Message, max_packet: usize) -> Result<Packet, PublishError> {
        let qos = message.effective_qos(QoS::ExactlyOnce);
        match &self.api {
            Api::V5(_) => {
                let (payload, props) = convert::outgoing(message)?;
                let around =
                    props.user_properties.iter().map(|(k, v)| k.len() + v.len() + 5).sum::<usize>()
                        + props.response_topic.as_ref().map_or(0, |t| t.len() + 3)
                        + props.correlation_data.as_ref().map_or(0, |c| c.len() + 3)
                        + props.content_type.as_ref().map_or(0, |c| c.len() + 3);
                check_size(message, payload.len(), around, max_packet)?;
                Ok(Packet::V5 { qos: qos_out(qos), payload, props })
            }
            Api::V4(_) => {
                // The envelope, if any, counts against the limit as the payload's overhead.
                let (payload, size) = convert::envelope(message)?;
                check_size(message, size, payload.len().saturating_sub(size), max_packet)?;
                Ok(Packet::V4 { qos: qos4(qos), payload })
            }
        }
    }

    /// Offers `message` to the event loop at once: `Done` when it is in the channel, `Busy`
    /// when the channel is full or earlier publishes wait for room (then
    /// [`hand_off`](Self::hand_off) it). A QoS 1 or 2 publish queues `confirm`, which is
    /// answered when the broker has it or refused it.
    pub(crate) fn try_hand_off(
        &self,
        message: &Message,
        max_packet: usize,
        confirm: Confirm,
    ) -> Result<Handed, PublishError> {
        if self.waiting.load(Ordering::Acquire) > 0 {
            return Ok(Handed::Busy(confirm));
        }
        let Ok(_gate) = self.gate.try_lock() else {
            return Ok(Handed::Busy(confirm));
        };
        let packet = self.packet(message, max_packet)?;
        let tracked = tracked(message);
        if tracked {
            self.confirms.queue(confirm);
        }
        let (topic, retain) = (message.topic.as_str(), message.retain);
        let queued = match (&self.api, packet) {
            (Api::V5(c), Packet::V5 { qos, payload, props }) => {
                c.try_publish_with_properties(topic, qos, retain, payload, props).is_ok()
            }
            (Api::V4(c), Packet::V4 { qos, payload }) => {
                c.try_publish(topic, qos, retain, payload).is_ok()
            }
            _ => false,
        };
        if queued {
            return Ok(Handed::Done);
        }
        Ok(Handed::Busy(if tracked { self.confirms.unqueue_last() } else { None }))
    }

    /// A place in line for a publish that [`try_hand_off`](Self::try_hand_off) found busy.
    /// Taken when the publish is made, not when its future first runs, so that publishes
    /// made later line up behind it.
    pub(crate) fn place(&self) -> Place {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        Place(self.waiting.clone())
    }

    /// Queues `message` to the event loop in its turn, waiting for room.
    pub(crate) async fn hand_off(
        &self,
        place: Place,
        message: &Message,
        max_packet: usize,
        confirm: Confirm,
    ) -> Result<(), PublishError> {
        let _gate = self.gate.lock().await;
        drop(place);
        let packet = self.packet(message, max_packet)?;
        let tracked = tracked(message);
        if tracked {
            self.confirms.queue(confirm);
        }
        let (topic, retain) = (message.topic.as_str(), message.retain);
        let queued = match (&self.api, packet) {
            (Api::V5(c), Packet::V5 { qos, payload, props }) => c
                .publish_with_properties(topic, qos, retain, payload, props)
                .await
                .map_err(queue_error),
            (Api::V4(c), Packet::V4 { qos, payload }) => {
                c.publish(topic, qos, retain, payload).await.map_err(queue_error)
            }
            _ => Err(queue_error("the packet was built for the other protocol version")),
        };
        if queued.is_err() && tracked {
            drop(self.confirms.unqueue_last());
        }
        queued
    }
}

/// Whether the broker acknowledges `message` (QoS 1 or 2), so that a caller waits for it.
pub(crate) fn tracked(message: &Message) -> bool {
    message.effective_qos(QoS::ExactlyOnce) != QoS::AtMostOnce
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
    /// A message (or why it cannot be one) and the subscription identifiers it matched,
    /// with what acknowledges it (sent by rumqttc itself unless acknowledgements are manual).
    Message(Result<(Message, Vec<usize>), String>, Incoming),
    SubAck {
        pkid: u16,
        refused: Option<String>,
    },
    SentSubscribe(u16),
    SentDisconnect,
    /// A publish of ours was written with this packet id (0 at QoS 0).
    SentPublish(u16),
    /// A publish of ours waits until this packet id, still in use, is acknowledged.
    HeldBack(u16),
    /// The broker acknowledged a QoS 1 publish of ours (PUBACK).
    Acked(u16),
    /// The broker has a QoS 2 publish of ours (PUBREC); its PUBCOMP follows.
    Received(u16),
    /// The QoS 2 exchange of a publish of ours is complete (PUBCOMP).
    Completed,
    /// The broker refused a publish of ours (an MQTT 5 reason code of 0x80 or more in its
    /// PUBACK or PUBREC: not authorized, topic name invalid, quota exceeded...).
    Refused {
        pkid: u16,
        reason: String,
        /// Whether a caller waiting for this publish was told (set by the books, not by
        /// the event): then the refusal needs no louder report.
        caller_told: bool,
    },
    /// An UNSUBSCRIBE of ours went out with this packet id.
    SentUnsubscribe(u16),
    /// The broker answered an UNSUBSCRIBE (UNSUBACK); on MQTT 5 it may refuse it.
    Unsubscribed {
        pkid: u16,
        refused: Option<String>,
    },
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
pub(crate) struct Events {
    inner: Loop,
    resends: Resends,
    confirms: Arc<Confirms>,
    /// MQTT 5 only: what rumqttc leaves stuck after a refused publish.
    repair: Repair,
    /// Events a dropped connection had produced but not yet reported (rumqttc keeps them
    /// across the reconnect): reported before the drop, as they happened before it.
    backlog: VecDeque<Happened>,
    /// The drop, reported once the backlog is empty.
    failure: Option<ConnectionFailure>,
    /// Our socket, to acknowledge the broker's acknowledgements at once.
    quick: QuickAck,
}

enum Loop {
    V5(Box<rumqttc::v5::EventLoop>, Vec<rumqttc::v5::Request>),
    V4(Box<rumqttc::EventLoop>, Vec<rumqttc::Request>),
}

/// rumqttc's connection options of either version (3.1.1 keeps its socket options apart).
pub(crate) enum Options {
    V5(Box<rumqttc::v5::MqttOptions>),
    V4(Box<rumqttc::MqttOptions>, rumqttc::NetworkOptions),
}

impl Events {
    pub(crate) fn v5(
        l: rumqttc::v5::EventLoop,
        confirms: Arc<Confirms>,
        server: &Server,
    ) -> Events {
        Events::with(Loop::V5(Box::new(l), Vec::new()), confirms, server)
    }

    pub(crate) fn v4(l: rumqttc::EventLoop, confirms: Arc<Confirms>, server: &Server) -> Events {
        Events::with(Loop::V4(Box::new(l), Vec::new()), confirms, server)
    }

    fn with(inner: Loop, confirms: Arc<Confirms>, server: &Server) -> Events {
        Events {
            quick: QuickAck::new(server),
            inner,
            resends: Resends::default(),
            confirms,
            repair: Repair::default(),
            backlog: VecDeque::new(),
            failure: None,
        }
    }

    pub(crate) async fn poll(&mut self) -> Result<Happened, ConnectionFailure> {
        if let Some(happened) = self.backlog.pop_front() {
            return Ok(happened);
        }
        if let Some(failure) = self.failure.take() {
            return Err(failure);
        }
        let connecting = self.quick.before_poll().await;
        let Events { inner, resends, confirms, repair, backlog, failure, quick } = self;
        let happened = match inner {
            Loop::V5(l, stranded) => match l.poll().await {
                Ok(event) => event5(event, l, stranded, repair, true),
                Err(e) => {
                    let stale: Vec<_> = l.state.events.drain(..).collect();
                    for event in stale {
                        let happened = event5(event, l, stranded, repair, false);
                        backlog.push_back(account(happened, resends, confirms));
                    }
                    let held = l.state.collision.take();
                    dropped(stranded, l.pending.drain(..), held, resends, confirms);
                    quick.dropped();
                    *failure = Some(match repair.dropped() {
                        Some(reason) => ConnectionFailure::renewed(reason),
                        None => describe5(&e),
                    });
                    return self.after_drop();
                }
            },
            Loop::V4(l, stranded) => match l.poll().await {
                Ok(event) => happened4(event, &mut l.pending, stranded),
                Err(e) => {
                    let stale: Vec<_> = l.state.events.drain(..).collect();
                    for event in stale {
                        let happened = happened4(event, &mut l.pending, stranded);
                        backlog.push_back(account(happened, resends, confirms));
                    }
                    let held = l.state.collision.take();
                    dropped(stranded, l.pending.drain(..), held, resends, confirms);
                    quick.dropped();
                    *failure = Some(describe4(&e));
                    return self.after_drop();
                }
            },
        };
        quick.after_poll(packet_kind(&happened), connecting);
        Ok(account(happened, resends, confirms))
    }

    /// What the dropped connection reported before it dropped, then the drop itself.
    fn after_drop(&mut self) -> Result<Happened, ConnectionFailure> {
        match (self.backlog.pop_front(), self.failure.take()) {
            (Some(happened), failure) => {
                self.failure = failure;
                Ok(happened)
            }
            (None, Some(failure)) => Err(failure),
            (None, None) => Ok(Happened::Other),
        }
    }

    /// The socket found for acknowledging at once, while connected (see `quick_ack`).
    #[cfg(all(test, target_os = "linux"))]
    pub(crate) fn quick_ack_socket(&self) -> Option<std::os::fd::RawFd> {
        self.quick.socket()
    }

    /// The publishes given up since the last call (see [`Resends`]).
    pub(crate) fn take_given_up(&mut self) -> Vec<GivenUp> {
        self.resends.take_given_up()
    }

    /// Makes the next connection with `options` (another server of the list). Options of
    /// the other protocol version are ignored: one connection keeps its version.
    pub(crate) fn aim(&mut self, options: Options, server: &Server) {
        self.quick.aim(server);
        match (&mut self.inner, options) {
            (Loop::V5(l, ..), Options::V5(o)) => l.options = *o,
            (Loop::V4(l, ..), Options::V4(o, network)) => {
                l.mqtt_options = *o;
                l.set_network_options(network);
            }
            _ => {}
        }
    }

    pub(crate) fn set_credentials(&mut self, user: String, pass: String) {
        match &mut self.inner {
            Loop::V5(l, ..) => {
                l.options.set_credentials(user, pass);
            }
            Loop::V4(l, ..) => {
                l.mqtt_options.set_credentials(user, pass);
            }
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

/// What a report means for acknowledging at once (see `quick_ack`).
fn packet_kind(happened: &Happened) -> PacketKind {
    match happened {
        Happened::Connected { .. } => PacketKind::Connected,
        Happened::Acked(_)
        | Happened::Received(_)
        | Happened::Completed
        | Happened::Refused { .. }
        | Happened::SubAck { .. }
        | Happened::Unsubscribed { .. } => PacketKind::Acknowledgement,
        _ => PacketKind::Other,
    }
}

/// Keeps the books on what the event loop reported: which publishes were written, held
/// back, confirmed or refused, and which keep getting the connection dropped.
fn account(mut happened: Happened, resends: &mut Resends, confirms: &Confirms) -> Happened {
    resends.observe(&happened);
    match &mut happened {
        Happened::SentPublish(pkid) if *pkid != 0 => confirms.written(*pkid),
        Happened::HeldBack(pkid) => confirms.held_back(*pkid),
        Happened::Acked(pkid) | Happened::Received(pkid) => confirms.confirmed(*pkid),
        Happened::Refused { pkid, reason, caller_told } => {
            *caller_told = confirms.refused(*pkid, reason);
        }
        _ => {}
    }
    happened
}

/// An MQTT 5 event in version-free terms, with rumqttc's state repaired after a refusal
/// while the connection is `live`.
fn event5(
    event: rumqttc::v5::Event,
    l: &mut rumqttc::v5::EventLoop,
    stranded: &mut Vec<rumqttc::v5::Request>,
    repair: &mut Repair,
    live: bool,
) -> Happened {
    let refused_at_pubrec = matches!(
        &event,
        rumqttc::v5::Event::Incoming(Packet5::PubRec(rec)) if refused_rec(&rec.reason).is_some()
    );
    if let rumqttc::v5::Event::Incoming(Packet5::ConnAck(ack)) = &event {
        repair.connected(
            ack.properties.as_ref().and_then(|p| p.receive_max),
            l.options.get_outgoing_inflight_upper_limit(),
        );
    }
    match happened5(event, &mut l.pending, stranded) {
        Happened::Refused { pkid, reason, caller_told } => {
            if live {
                repair.refused(l, pkid, refused_at_pubrec);
            }
            Happened::Refused { pkid, reason, caller_told }
        }
        // Ours, to renew the connection: the supervisor goes on to reconnect.
        Happened::SentDisconnect if repair.sent_disconnect() => Happened::Other,
        other => other,
    }
}

/// After a dropped connection: takes out what it left unfinished (with the publish rumqttc
/// held back, which its own clean-up forgets; never written, it goes as a new packet) in
/// the order it is to be sent again, gives up the publish the broker keeps choking on, and
/// lines the confirms up with that order.
fn dropped<R: Unfinished>(
    stranded: &mut Vec<R>,
    pending: impl Iterator<Item = R>,
    held: Option<R::PublishPacket>,
    resends: &mut Resends,
    confirms: &Confirms,
) {
    let unfinished = resends.in_sending_order(pending, held.map(R::unwritten));
    stranded.extend(unfinished);
    let given_up = resends.judge(stranded);
    let keys: Vec<_> = stranded.iter().filter_map(R::publish_key).collect();
    confirms.requeue(&keys, given_up.as_slice());
}

fn happened5(
    event: rumqttc::v5::Event,
    pending: &mut std::collections::VecDeque<rumqttc::v5::Request>,
    stranded: &mut Vec<rumqttc::v5::Request>,
) -> Happened {
    use rumqttc::v5::Event;
    match event {
        Event::Incoming(Packet5::ConnAck(ack)) => {
            let resent = restore(pending, stranded, ack.session_present);
            Happened::Connected {
                max_packet: ack.properties.and_then(|p| p.max_packet_size),
                resent,
            }
        }
        Event::Incoming(Packet5::Publish(p)) => {
            let incoming = Incoming { qos: convert::qos_in(p.qos), pkid: p.pkid };
            Happened::Message(convert::incoming(p), incoming)
        }
        Event::Incoming(Packet5::PubAck(ack)) => match refused_ack(&ack.reason) {
            Some(reason) => Happened::Refused { pkid: ack.pkid, reason, caller_told: false },
            None => Happened::Acked(ack.pkid),
        },
        // A refused QoS 2 publish ends at its PUBREC: no PUBCOMP follows.
        Event::Incoming(Packet5::PubRec(rec)) => match refused_rec(&rec.reason) {
            Some(reason) => Happened::Refused { pkid: rec.pkid, reason, caller_told: false },
            None => Happened::Received(rec.pkid),
        },
        Event::Incoming(Packet5::PubComp(_)) => Happened::Completed,
        Event::Incoming(Packet5::UnsubAck(ack)) => Happened::Unsubscribed {
            pkid: ack.pkid,
            // Nothing to unsubscribe from is not a failure: it is gone either way.
            refused: ack
                .reasons
                .iter()
                .find(|r| {
                    !matches!(r, UnsubAckReason::Success | UnsubAckReason::NoSubscriptionExisted)
                })
                .map(|r| format!("{r:?}")),
        },
        Event::Incoming(Packet5::SubAck(ack)) => Happened::SubAck {
            pkid: ack.pkid,
            refused: ack
                .return_codes
                .iter()
                .find(|c| !matches!(c, Code5::Success(_)))
                .map(|c| format!("{c:?}")),
        },
        Event::Outgoing(Outgoing::Publish(pkid)) => Happened::SentPublish(pkid),
        Event::Outgoing(Outgoing::AwaitAck(pkid)) => Happened::HeldBack(pkid),
        Event::Outgoing(Outgoing::Subscribe(pkid)) => Happened::SentSubscribe(pkid),
        Event::Outgoing(Outgoing::Unsubscribe(pkid)) => Happened::SentUnsubscribe(pkid),
        Event::Outgoing(Outgoing::Disconnect) => Happened::SentDisconnect,
        _ => Happened::Other,
    }
}

fn happened4(
    event: rumqttc::Event,
    pending: &mut std::collections::VecDeque<rumqttc::Request>,
    stranded: &mut Vec<rumqttc::Request>,
) -> Happened {
    use rumqttc::Event;
    match event {
        Event::Incoming(Packet4::ConnAck(ack)) => {
            let resent = restore(pending, stranded, ack.session_present);
            Happened::Connected { max_packet: None, resent }
        }
        Event::Incoming(Packet4::Publish(p)) => {
            let qos = match p.qos {
                rumqttc::QoS::AtMostOnce => QoS::AtMostOnce,
                rumqttc::QoS::AtLeastOnce => QoS::AtLeastOnce,
                rumqttc::QoS::ExactlyOnce => QoS::ExactlyOnce,
            };
            let incoming = Incoming { qos, pkid: p.pkid };
            Happened::Message(convert::incoming_v4(p), incoming)
        }
        Event::Incoming(Packet4::PubAck(ack)) => Happened::Acked(ack.pkid),
        Event::Incoming(Packet4::PubRec(rec)) => Happened::Received(rec.pkid),
        Event::Incoming(Packet4::PubComp(_)) => Happened::Completed,
        Event::Incoming(Packet4::UnsubAck(ack)) => {
            Happened::Unsubscribed { pkid: ack.pkid, refused: None }
        }
        Event::Incoming(Packet4::SubAck(ack)) => Happened::SubAck {
            pkid: ack.pkid,
            refused: ack
                .return_codes
                .iter()
                .find(|c| !matches!(c, Code4::Success(_)))
                .map(|c| format!("{c:?}")),
        },
        Event::Outgoing(Outgoing::Publish(pkid)) => Happened::SentPublish(pkid),
        Event::Outgoing(Outgoing::AwaitAck(pkid)) => Happened::HeldBack(pkid),
        Event::Outgoing(Outgoing::Subscribe(pkid)) => Happened::SentSubscribe(pkid),
        Event::Outgoing(Outgoing::Unsubscribe(pkid)) => Happened::SentUnsubscribe(pkid),
        Event::Outgoing(Outgoing::Disconnect) => Happened::SentDisconnect,
        _ => Happened::Other,
    }
}
