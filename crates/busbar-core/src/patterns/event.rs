//! Named events published to topics under a base.

use serde::{Deserialize, Serialize};

use crate::codec::Codec;
use crate::connection::Connection;
use crate::error::Result;
use crate::topic::Topic;

/// One event as it travels: its name, the emitter, when, and the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event<T> {
    /// Event name (the last topic level).
    pub name: String,
    /// Who emitted it (the connection's client id).
    pub source: String,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The event data.
    pub data: T,
}

/// Emits events named `NAME` to `BASE/NAME`. Listen with
/// `Subscriber::<Event<T>>::new(conn, "BASE/+")`.
#[derive(Clone)]
pub struct EventEmitter {
    conn: Connection,
    base: Topic,
    codec: Codec,
}

impl EventEmitter {
    /// An emitter under `base`.
    pub fn new(conn: &Connection, base: &str) -> Result<Self> {
        Ok(EventEmitter { conn: conn.clone(), base: Topic::new(base)?, codec: Codec::default() })
    }

    /// Encodes events with `codec`.
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Emits `name` with `data`. `name` must be one topic level (no `/`, `+`, `#`).
    pub async fn emit<T: Serialize + Send + Sync + 'static>(
        &self,
        name: &str,
        data: T,
    ) -> Result<()> {
        let topic = Topic::new(format!("{}/{}", self.base, name))?;
        if topic.levels().count() != self.base.levels().count() + 1 {
            return Err(crate::Error::Config(format!(
                "event name {name:?} must be a single topic level"
            )));
        }
        let event = Event {
            name: name.to_owned(),
            source: self.conn.client_id().to_owned(),
            timestamp_ms: now_ms(),
            data,
        };
        let m = super::typed_message(&self.conn, topic, event, self.codec)?;
        Ok(self.conn.publish(m).await?)
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
