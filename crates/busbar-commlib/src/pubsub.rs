//! commlib publish/subscribe: bare JSON objects at QoS 0 on commlib's names.

use std::marker::PhantomData;

use busbar_core::transport::NativeNames;
use busbar_core::{Connection, Message, QoS, SubscribeOptions, Subscription, Topic, TopicFilter};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::body;
use crate::compression::Compression;
use crate::error::{CommlibError, Result};
use crate::names;

/// The transport's spelling of a commlib name, from how the broker names topics: where its
/// names have levels, commlib's dots become busbar's levels (`sensors/sonar` on MQTT; on
/// AMQP the routing key `sensors.sonar`, which is commlib's name again); where they are
/// flat, the name is one level, dots and all (the Redis channel `sensors.sonar`).
pub(crate) fn topic_for(conn: &Connection, name: &str) -> Result<Topic> {
    match conn.capabilities().native_names {
        NativeNames::Slash | NativeNames::Dotted => names::mqtt_topic(name),
        NativeNames::Flat => names::redis_topic(name),
    }
}

/// The filter to subscribe to for a commlib pattern, and where names are flat the glob that
/// messages must match besides ([`names::redis_filter`]).
pub(crate) fn filter_for(
    conn: &Connection,
    pattern: &str,
) -> Result<(TopicFilter, Option<String>)> {
    match conn.capabilities().native_names {
        NativeNames::Slash => Ok((names::mqtt_filter(pattern)?, None)),
        NativeNames::Dotted => Ok((names::amqp_filter(pattern)?, None)),
        NativeNames::Flat => names::redis_filter(pattern).map(|s| (s.filter, s.glob)),
    }
}

/// Publishes `T` as a commlib publisher does: the bare JSON object at QoS 0.
pub struct CommlibPublisher<T> {
    conn: Connection,
    topic: Topic,
    compression: Compression,
    _type: PhantomData<fn(T)>,
}

impl<T: Serialize> CommlibPublisher<T> {
    /// A publisher for the commlib name `name` (e.g. `sensors.sonar.front`).
    pub fn new(conn: &Connection, name: &str) -> Result<Self> {
        Ok(CommlibPublisher {
            conn: conn.clone(),
            topic: topic_for(conn, name)?,
            compression: Compression::None,
            _type: PhantomData,
        })
    }

    /// Compresses what it publishes, for commlib subscribers built with the same compression.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Publishes one message.
    pub async fn publish(&self, value: &T) -> Result<()> {
        let payload = body::encode_with(self.topic.as_str(), value, self.compression)?;
        let message = Message::new(self.topic.clone(), payload).with_qos(QoS::AtMostOnce);
        Ok(self.conn.publish(message).await?)
    }
}

/// One message from a commlib publisher.
#[derive(Debug, Clone, PartialEq)]
pub struct Received<T> {
    /// The topic as the transport names it (MQTT: with slashes, as commlib's pattern
    /// subscribers report it).
    pub topic: Topic,
    /// The decoded body.
    pub value: T,
}

/// Subscribes as a commlib subscriber does (a name, or a pattern with `*`).
pub struct CommlibSubscriber<T> {
    sub: Subscription,
    /// Redis: the commlib glob a message's channel must match to be kept.
    glob: Option<String>,
    _type: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> CommlibSubscriber<T> {
    /// Subscribes to the commlib name or pattern `pattern` (e.g. `sensors.*`).
    pub async fn new(conn: &Connection, pattern: &str) -> Result<Self> {
        let (filter, glob) = filter_for(conn, pattern)?;
        let options = SubscribeOptions::from(filter).qos(QoS::AtMostOnce);
        let sub = conn.subscribe_with(options).await?;
        Ok(CommlibSubscriber { sub, glob, _type: PhantomData })
    }

    /// The next message; `None` once the subscription has ended. A zlib-compressed body is
    /// inflated first. A body that does not decode is an error for that message only.
    pub async fn recv(&mut self) -> Option<Result<Received<T>>> {
        let message = loop {
            let message = self.sub.recv().await?;
            match &self.glob {
                Some(glob) if !names::redis_glob_matches(glob, message.topic.as_str()) => {}
                _ => break message,
            }
        };
        let bytes = match message.payload.to_bytes() {
            Ok(b) => b,
            Err(e) => return Some(Err(CommlibError::Busbar(e.into()))),
        };
        Some(
            body::decode(message.topic.as_str(), &bytes)
                .map(|value| Received { topic: message.topic, value }),
        )
    }
}
