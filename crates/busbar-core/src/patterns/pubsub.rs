//! Typed publish/subscribe.

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::Codec;
use crate::codec::CodecError;
use crate::connection::Connection;
use crate::error::{Error, PublishError, Result};
use crate::message::{Headers, Message, QoS};
use crate::topic::Topic;
use crate::transport::{SubscribeOptions, Subscription};

/// Publishes values of type `T` on one topic.
pub struct Publisher<T> {
    conn: Connection,
    topic: Topic,
    codec: Codec,
    qos: Option<QoS>,
    retain: bool,
    _type: PhantomData<fn(T)>,
}

impl<T> Clone for Publisher<T> {
    fn clone(&self) -> Self {
        Publisher {
            conn: self.conn.clone(),
            topic: self.topic.clone(),
            codec: self.codec,
            qos: self.qos,
            retain: self.retain,
            _type: PhantomData,
        }
    }
}

impl<T: Serialize + Send + Sync + 'static> Publisher<T> {
    /// A publisher on `topic` (JSON, QoS 1, not retained).
    pub fn new(conn: &Connection, topic: &str) -> Result<Self> {
        Ok(Publisher {
            conn: conn.clone(),
            topic: Topic::new(topic)?,
            codec: Codec::default(),
            qos: None,
            retain: false,
            _type: PhantomData,
        })
    }

    /// Uses `codec` for the payload.
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Publishes with `qos`.
    pub fn qos(mut self, qos: QoS) -> Self {
        self.qos = Some(qos);
        self
    }

    /// Publishes retained messages (refused by transports without retained messages).
    pub fn retain(mut self, retain: bool) -> Self {
        self.retain = retain;
        self
    }

    /// The topic published on.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// Publishes `value`.
    pub async fn publish(&self, value: T) -> Result<(), PublishError> {
        let m = self.message(value)?;
        self.conn.publish(m).await
    }

    /// The message `publish` would send, for callers that add headers or expiry.
    pub fn message(&self, value: T) -> Result<Message, CodecError> {
        let mut m = super::typed_message(&self.conn, self.topic.clone(), value, self.codec)?;
        m.qos = self.qos;
        m.retain = self.retain;
        Ok(m)
    }
}

/// One value received by a [`Subscriber`].
#[derive(Debug, Clone, PartialEq)]
pub struct Received<T> {
    /// The concrete topic it was published on (useful with wildcard filters).
    pub topic: Topic,
    /// The decoded value.
    pub value: T,
    /// The message headers.
    pub headers: Headers,
    /// True when it came from the retained store rather than a live publish.
    pub retained: bool,
}

/// Receives values of type `T` from every topic matching a filter.
///
/// A payload that does not decode yields `Some(Err(Error::Codec(..)))` naming the topic, and
/// the subscriber carries on with the next message.
pub struct Subscriber<T> {
    sub: Subscription,
    codec: Codec,
    _type: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned + Send + Sync + 'static> Subscriber<T> {
    /// Subscribes to `filter` with default options.
    pub async fn new(conn: &Connection, filter: &str) -> Result<Self> {
        Self::with_options(conn, SubscribeOptions::new(filter)?).await
    }

    /// Subscribes with full options (queue group, queue size, overflow policy, QoS).
    pub async fn with_options(conn: &Connection, options: SubscribeOptions) -> Result<Self> {
        Ok(Subscriber {
            sub: conn.subscribe_with(options).await?,
            codec: Codec::default(),
            _type: PhantomData,
        })
    }

    /// Decodes byte payloads with `codec` when they carry no `content-type` header.
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// The next value; `None` when the subscription has ended.
    pub async fn recv(&mut self) -> Option<Result<Received<T>>> {
        let m = self.sub.recv().await?;
        Some(decode(m, self.codec))
    }

    /// The untyped subscription underneath (drop counts, filter).
    pub fn subscription(&self) -> &Subscription {
        &self.sub
    }
}

fn decode<T: DeserializeOwned + Send + Sync + 'static>(
    m: Message,
    codec: Codec,
) -> Result<Received<T>> {
    let codec = m.codec_or(codec);
    let Message { topic, payload, headers, retain, .. } = m;
    let value = payload.decode(codec, topic.as_str()).map_err(Error::from)?;
    Ok(Received { topic, value, headers, retained: retain })
}

impl<T: DeserializeOwned + Send + Sync + 'static> Stream for Subscriber<T> {
    type Item = Result<Received<T>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        Pin::new(&mut this.sub).poll_next(cx).map(|m| m.map(|m| decode(m, this.codec)))
    }
}
