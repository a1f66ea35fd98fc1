//! Messages as transports move them: a topic, a payload, headers and delivery properties.
//!
//! A [`Payload`] is either bytes or a *typed value*. Typed values let the in-process bus hand
//! a published struct to its subscriber without serialising it; every other transport asks
//! for the bytes, which are produced by the codec the publisher chose.

use std::any::Any;
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::codec::{Codec, CodecError};
use crate::topic::Topic;

/// Delivery guarantee asked of the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum QoS {
    /// Fire and forget.
    AtMostOnce = 0,
    /// Delivered at least once (may be duplicated after a reconnect). What a message that
    /// asks for no QoS travels with where the transport can give it: busbar prefers not
    /// losing messages.
    #[default]
    AtLeastOnce = 1,
    /// Delivered exactly once where the broker can do it.
    ExactlyOnce = 2,
}

impl QoS {
    /// QoS from its MQTT number.
    pub fn from_level(level: u8) -> Option<QoS> {
        match level {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// Well-known header names used by busbar's own protocols.
pub mod header {
    /// MIME type of the payload; absent means JSON.
    pub const CONTENT_TYPE: &str = "content-type";
    /// Set on RPC replies that carry an error body instead of a result.
    pub const STATUS: &str = "busbar-status";
    /// Value of [`STATUS`] on an error reply.
    pub const STATUS_ERROR: &str = "error";
}

/// Ordered string headers. One pointer wide and allocation-free when empty, the common case:
/// every message carries a `Headers`, and messages are moved through queues by value.
#[derive(Clone, Default, PartialEq, Eq)]
#[allow(
    clippy::box_collection,
    reason = "one pointer instead of a Vec's three words: every message carries a Headers"
)]
pub struct Headers(Option<Box<Vec<Header>>>);

/// One header: name and value.
type Header = (Cow<'static, str>, Cow<'static, str>);

impl Headers {
    /// No headers.
    pub const fn new() -> Self {
        Headers(None)
    }

    /// Sets `name` to `value`, replacing any earlier value of that name.
    pub fn insert(
        &mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<Cow<'static, str>>,
    ) {
        let name = name.into();
        let value = value.into();
        let pairs = self.0.get_or_insert_with(Box::default);
        if let Some(slot) = pairs.iter_mut().find(|(n, _)| *n == name) {
            slot.1 = value;
        } else {
            pairs.push((name, value));
        }
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs().iter().find(|(n, _)| n == name).map(|(_, v)| v.as_ref())
    }

    /// Removes `name`, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<Cow<'static, str>> {
        let pairs = self.0.as_mut()?;
        let pos = pairs.iter().position(|(n, _)| n == name)?;
        Some(pairs.remove(pos).1)
    }

    /// Name/value pairs in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs().iter().map(|(n, v)| (n.as_ref(), v.as_ref()))
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        self.pairs().len()
    }

    /// True when there are no headers.
    pub fn is_empty(&self) -> bool {
        self.pairs().is_empty()
    }

    fn pairs(&self) -> &[Header] {
        self.0.as_deref().map(Vec::as_slice).unwrap_or(&[])
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<N, V> FromIterator<(N, V)> for Headers
where
    N: Into<Cow<'static, str>>,
    V: Into<Cow<'static, str>>,
{
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut h = Headers::new();
        for (n, v) in iter {
            h.insert(n, v);
        }
        h
    }
}

/// What a typed value can do without knowing its type: one `'static` table per type, so a
/// `TypedValue` carries a single pointer for it.
struct TypedOps {
    encode: fn(&(dyn Any + Send + Sync), Codec) -> Result<Bytes, CodecError>,
    type_name: fn() -> &'static str,
}

struct OpsFor<T>(std::marker::PhantomData<T>);

impl<T: Serialize + Send + Sync + 'static> OpsFor<T> {
    const OPS: TypedOps =
        TypedOps { encode: encode_erased::<T>, type_name: std::any::type_name::<T> };
}

/// A value published without serialisation, with what is needed to serialise it on demand.
#[derive(Clone)]
pub struct TypedValue {
    value: Arc<dyn Any + Send + Sync>,
    ops: &'static TypedOps,
    codec: Codec,
}

fn encode_erased<T: Serialize + Send + Sync + 'static>(
    value: &(dyn Any + Send + Sync),
    codec: Codec,
) -> Result<Bytes, CodecError> {
    match value.downcast_ref::<T>() {
        Some(v) => codec.encode(v),
        // Unreachable by construction: the ops table always matches the value's type.
        None => Err(CodecError::Encode {
            codec,
            type_name: std::any::type_name::<T>(),
            reason: "typed payload does not hold the type it was built for".into(),
        }),
    }
}

impl TypedValue {
    /// Wraps `value`; `codec` is used whenever bytes are needed.
    pub fn new<T: Serialize + Send + Sync + 'static>(value: T, codec: Codec) -> Self {
        TypedValue { value: Arc::new(value), ops: &OpsFor::<T>::OPS, codec }
    }

    /// The codec bytes are produced with.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Rust type name of the value.
    pub fn type_name(&self) -> &'static str {
        (self.ops.type_name)()
    }

    /// Serialises the value with its codec.
    pub fn to_bytes(&self) -> Result<Bytes, CodecError> {
        (self.ops.encode)(self.value.as_ref(), self.codec)
    }

    /// Takes the value out as `T` without serialising when this is the only reference to it
    /// and it has that type; otherwise hands `self` back.
    pub fn take<T: Send + Sync + 'static>(self) -> Result<T, Self> {
        let TypedValue { value, ops, codec } = self;
        match value.downcast::<T>() {
            Ok(arc) => Arc::try_unwrap(arc).map_err(|arc| TypedValue { value: arc, ops, codec }),
            Err(value) => Err(TypedValue { value, ops, codec }),
        }
    }
}

impl fmt::Debug for TypedValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TypedValue<{}>({})", self.type_name(), self.codec)
    }
}

/// A message body: bytes, or a typed value that is serialised only when bytes are needed.
#[derive(Clone)]
pub enum Payload {
    /// Serialised bytes.
    Bytes(Bytes),
    /// A value not yet serialised.
    Typed(TypedValue),
}

impl Default for Payload {
    fn default() -> Self {
        Payload::Bytes(Bytes::new())
    }
}

impl Payload {
    /// The payload as bytes, serialising a typed value if needed (cheap for bytes).
    pub fn to_bytes(&self) -> Result<Bytes, CodecError> {
        match self {
            Payload::Bytes(b) => Ok(b.clone()),
            Payload::Typed(t) => t.to_bytes(),
        }
    }

    /// True for an empty byte payload (used by retained-message deletion).
    pub fn is_empty_bytes(&self) -> bool {
        matches!(self, Payload::Bytes(b) if b.is_empty())
    }

    /// Decodes into `T`: a typed value of type `T` is moved out without serialisation when
    /// possible; otherwise bytes are decoded with `codec` (or the typed value's own codec).
    pub fn decode<T: DeserializeOwned + Send + Sync + 'static>(
        self,
        codec: Codec,
        topic: &str,
    ) -> Result<T, CodecError> {
        match self {
            Payload::Bytes(b) => codec.decode(&b, topic),
            Payload::Typed(t) => match t.take::<T>() {
                Ok(v) => Ok(v),
                Err(t) => {
                    let bytes = t.to_bytes()?;
                    t.codec().decode(&bytes, topic)
                }
            },
        }
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Payload::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            Payload::Typed(t) => t.fmt(f),
        }
    }
}

impl From<Bytes> for Payload {
    fn from(b: Bytes) -> Self {
        Payload::Bytes(b)
    }
}
impl From<Vec<u8>> for Payload {
    fn from(b: Vec<u8>) -> Self {
        Payload::Bytes(Bytes::from(b))
    }
}
impl From<&'static [u8]> for Payload {
    fn from(b: &'static [u8]) -> Self {
        Payload::Bytes(Bytes::from_static(b))
    }
}
impl From<&'static str> for Payload {
    fn from(s: &'static str) -> Self {
        Payload::Bytes(Bytes::from_static(s.as_bytes()))
    }
}
impl From<String> for Payload {
    fn from(s: String) -> Self {
        Payload::Bytes(Bytes::from(s))
    }
}

/// One message on the bus.
#[derive(Clone, Debug)]
pub struct Message {
    /// Where it is published.
    pub topic: Topic,
    /// The body.
    pub payload: Payload,
    /// String headers (carried natively or in an envelope, depending on the transport).
    pub headers: Headers,
    /// The delivery guarantee asked for; `None` asks for the transport's best up to
    /// [`QoS::AtLeastOnce`] (at least once on MQTT, AMQP and `mem://`, at most once on Redis
    /// and NATS, which can give no more). A QoS above the transport's
    /// [`max_qos`](crate::transport::Capabilities::max_qos) is refused with an error of kind
    /// `Unsupported`, never carried at a lower one. On a received message: the QoS it
    /// travelled with.
    pub qos: Option<QoS>,
    /// Keep as the topic's retained message; on delivery, true when it came from the store.
    pub retain: bool,
    /// After this instant the message is dropped instead of delivered.
    pub expires_at: Option<Instant>,
    /// Where a reply should be published (request/reply).
    pub reply_to: Option<Topic>,
    /// Ties a reply to its request.
    pub correlation_id: Option<Bytes>,
    /// The partitioning key, on brokers that split a topic into partitions (Kafka's record
    /// key): messages with the same key go to the same partition, so they keep their order
    /// and reach the same member of a queue group. Brokers without partitions do not carry
    /// it. On a received message: the key it travelled with.
    pub key: Option<Bytes>,
    /// Acknowledges this message to the broker, on subscriptions that acknowledge on read or
    /// explicitly (see [`Message::ack`]).
    receipt: Option<crate::receipt::Receipt>,
}

impl Message {
    /// A message with default properties.
    pub fn new(topic: Topic, payload: impl Into<Payload>) -> Self {
        Message {
            topic,
            payload: payload.into(),
            headers: Headers::new(),
            qos: None,
            retain: false,
            expires_at: None,
            reply_to: None,
            correlation_id: None,
            key: None,
            receipt: None,
        }
    }

    /// Tells the broker this received message is done with, on a subscription made with
    /// [`Acknowledge::Explicit`](crate::transport::Acknowledge::Explicit): until then the
    /// broker keeps it, and gives it again once this subscription is gone. True the first
    /// time; false for a message with nothing to acknowledge (one published here, or from
    /// a subscription that acknowledges by itself).
    pub fn ack(&self) -> bool {
        self.receipt.as_ref().is_some_and(crate::receipt::Receipt::ack)
    }

    /// Attaches what acknowledges this message (for transport implementations).
    pub fn with_receipt(mut self, receipt: crate::receipt::Receipt) -> Self {
        self.receipt = Some(receipt);
        self
    }

    /// A reply to `request`: published on its `reply_to` with its correlation id. `None` when
    /// the request asked for no reply.
    pub fn reply(request: &Message, payload: impl Into<Payload>) -> Option<Message> {
        let topic = request.reply_to.clone()?;
        let mut m = Message::new(topic, payload);
        m.qos = request.qos;
        m.correlation_id = request.correlation_id.clone();
        Some(m)
    }

    /// Asks for `qos` (refused where the transport cannot give it).
    pub fn with_qos(mut self, qos: QoS) -> Self {
        self.qos = Some(qos);
        self
    }

    /// The QoS this message travels with on a transport whose best is `max`: the one it
    /// asks for, or else at least once where `max` allows (see [`Message::qos`]).
    pub fn effective_qos(&self, max: QoS) -> QoS {
        self.qos.unwrap_or(QoS::AtLeastOnce.min(max))
    }

    /// Sets the partitioning key (see [`Message::key`]).
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Marks the message to be retained.
    pub fn with_retain(mut self, retain: bool) -> Self {
        self.retain = retain;
        self
    }

    /// Drops the message if it is not delivered within `ttl` (a `ttl` too long to represent
    /// means no expiry).
    pub fn with_expiry(mut self, ttl: Duration) -> Self {
        self.expires_at = Instant::now().checked_add(ttl);
        self
    }

    /// Adds a header.
    pub fn with_header(
        mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<Cow<'static, str>>,
    ) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// True once the expiry has passed.
    pub fn is_expired(&self) -> bool {
        self.expires_at.is_some_and(|t| Instant::now() >= t)
    }

    /// Time left before expiry (`None` without expiry; zero once expired).
    pub fn remaining_ttl(&self) -> Option<Duration> {
        self.expires_at.map(|t| t.saturating_duration_since(Instant::now()))
    }

    /// The codec the payload is in: the typed value's own, else the `content-type` header,
    /// else `fallback`.
    pub fn codec_or(&self, fallback: Codec) -> Codec {
        match &self.payload {
            Payload::Typed(t) => t.codec(),
            Payload::Bytes(_) => self
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(Codec::from_content_type)
                .unwrap_or(fallback),
        }
    }

    /// Decodes the payload into `T` (see [`Payload::decode`]), choosing the codec with
    /// [`Message::codec_or`].
    pub fn decode<T: DeserializeOwned + Send + Sync + 'static>(
        self,
        fallback: Codec,
    ) -> Result<T, CodecError> {
        let codec = self.codec_or(fallback);
        self.payload.decode(codec, self.topic.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Pose {
        x: i32,
        y: i32,
    }

    fn topic() -> Topic {
        Topic::new("robot/pose").expect("valid")
    }

    #[test]
    fn typed_value_moves_out_without_encoding_when_unique() {
        let m = Message::new(
            topic(),
            Payload::Typed(TypedValue::new(Pose { x: 1, y: 2 }, Codec::Json)),
        );
        let p: Pose = m.decode(Codec::Json).expect("decode");
        assert_eq!(p, Pose { x: 1, y: 2 });
    }

    #[test]
    fn shared_typed_value_falls_back_to_its_codec() {
        let tv = TypedValue::new(Pose { x: 3, y: 4 }, Codec::MsgPack);
        let keep = tv.clone();
        let m = Message::new(topic(), Payload::Typed(tv));
        let p: Pose = m.decode(Codec::Json).expect("decode via msgpack");
        assert_eq!(p, Pose { x: 3, y: 4 });
        drop(keep);
    }

    #[test]
    fn typed_value_of_other_type_decodes_through_bytes() {
        #[derive(Debug, PartialEq, Deserialize)]
        struct OnlyX {
            x: i32,
        }
        let m = Message::new(
            topic(),
            Payload::Typed(TypedValue::new(Pose { x: 5, y: 6 }, Codec::Json)),
        );
        let p: OnlyX = m.decode(Codec::Json).expect("decode");
        assert_eq!(p, OnlyX { x: 5 });
    }

    #[test]
    fn content_type_header_selects_codec() {
        let bytes = Codec::MsgPack.encode(&Pose { x: 7, y: 8 }).expect("encode");
        let m = Message::new(topic(), bytes)
            .with_header(header::CONTENT_TYPE, Codec::MsgPack.content_type());
        let p: Pose = m.decode(Codec::Json).expect("decode");
        assert_eq!(p, Pose { x: 7, y: 8 });
    }

    #[test]
    fn headers_replace_and_remove() {
        let mut h = Headers::new();
        h.insert("a", "1");
        h.insert("b", "2");
        h.insert("a", "3");
        assert_eq!(h.get("a"), Some("3"));
        assert_eq!(h.len(), 2);
        assert_eq!(h.remove("a").as_deref(), Some("3"));
        assert_eq!(h.get("a"), None);
    }
}
