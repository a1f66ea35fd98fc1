//! What every part of the MQTT transport shares: one connection's state. At the bottom of
//! the crate's rooms, so the supervisor, the receive path and the send path all read it
//! without reaching into each other.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};

use busbar_core::error::{Common, OpError, SubscribeError};
use busbar_core::topic::Topic;
use busbar_transport_kit::acks::AcksInFlight;
use busbar_transport_kit::{Inbox, Lifecycle, Meter};
use tokio::sync::{Notify, OnceCell, oneshot};

use crate::protocol::{Acker, Client};
use crate::registry::Registry;
use crate::settings::Settings;

/// The largest packet MQTT can express (a 4-byte variable byte integer).
pub(super) const MQTT_MAX_PACKET: u32 = 268_435_455;

pub(super) use busbar_transport_kit::lock;

pub(super) type Ack = oneshot::Sender<Result<(), SubscribeError>>;

/// Subscribe acknowledgements in flight: the broker answers by packet id, which rumqttc
/// assigns when it sends; it reports sends in request order, so a FIFO of subscription ids
/// in request order maps packet ids back to subscriptions.
#[derive(Default)]
pub(super) struct SubAcks {
    pub(super) sent_order: VecDeque<usize>,
    /// Subscriptions by the packet id their SUBSCRIBE went out with. rumqttc reuses packet
    /// ids in a small cycle (its inflight bound), so with many subscribes in flight one id can
    /// stand for several, acknowledged in the order they were sent.
    pub(super) by_pkid: HashMap<u16, VecDeque<usize>>,
    pub(super) waiting: HashMap<usize, Vec<Ack>>,
}

/// Unsubscribe acknowledgements in flight, mapped to packet ids as `SubAcks` are: every
/// UNSUBSCRIBE has its place in `sent_order`, with a waiter when someone awaits its UNSUBACK
/// (removing a durable subscription) and none when nobody does (a subscription dropped).
#[derive(Default)]
pub(super) struct UnsubAcks {
    pub(super) sent_order: VecDeque<Option<Ack>>,
    pub(super) by_pkid: HashMap<u16, Ack>,
}

/// One connection's state.
pub(super) struct Shared {
    pub(super) client: Client,
    /// Acknowledges incoming messages (in a persistent session; see `acknowledge`).
    pub(super) acker: Acker,
    /// Acknowledgements on their way (a close lets them go out before its DISCONNECT).
    pub(super) acks: Arc<AcksInFlight>,
    /// Held by the supervisor while it hands a message over and acknowledges it, so that a
    /// close, which takes it before its DISCONNECT, never overtakes an acknowledgement
    /// for a message the application already has.
    pub(super) handing_over: tokio::sync::Mutex<()>,
    pub(super) client_id: String,
    pub(super) settings: Settings,
    pub(super) registry: Mutex<Registry>,
    pub(super) subacks: Mutex<SubAcks>,
    pub(super) unsubacks: Mutex<UnsubAcks>,
    /// Requests waiting for replies on `reply_topic`.
    pub(super) inbox: Inbox,
    pub(super) reply_topic: Topic,
    /// The broker subscription to `reply_topic`, made on first use.
    pub(super) reply_sub: OnceCell<usize>,
    pub(super) next_id: AtomicU64,
    pub(super) meter: Meter,
    pub(super) life: Lifecycle,
    /// The broker's maximum packet size from its CONNACK, or the user's, whichever is less.
    pub(super) max_packet: AtomicUsize,
    /// QoS 1 and 2 publishes handed to rumqttc and not acknowledged yet: a graceful close
    /// waits for them (rumqttc's MQTT 3.1.1 event loop sends its DISCONNECT ahead of
    /// publishes still in its channel, which the broker then never gets).
    pub(super) unacked: AtomicUsize,
    pub(super) acked: Notify,
    /// Publishes given up on (the broker dropped the connection each time they were sent):
    /// `close` reports them.
    pub(super) given_up: AtomicUsize,
    /// The subscription whose SUBACK came last (0: none since the last live message). On
    /// MQTT 3.1.1 messages name no subscription, but a broker sends a new subscription's
    /// retained messages right after its SUBACK: those copies belong to it alone.
    pub(super) last_subacked: AtomicUsize,
    /// Counts connections made. Held while the epoch is compared and an event sent, so
    /// that a `Reconnected` for a connection already lost never follows the `Disconnected`
    /// of a newer loss.
    pub(super) epoch: Mutex<u64>,
}

impl Shared {
    /// The packet size limit before the broker's: the user's, or what MQTT can encode.
    pub(super) fn packet_limit(&self) -> usize {
        self.settings.max_packet.unwrap_or(MQTT_MAX_PACKET as usize)
    }

    /// An error from the MQTT client library, as operation kind `K`.
    pub(super) fn broker<K: Copy + From<Common>>(message: impl std::fmt::Display) -> OpError<K> {
        OpError::broker("mqtt", message)
    }
}
