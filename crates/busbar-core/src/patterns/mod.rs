//! Communication patterns built on the transport contract, usable over any transport.

pub mod action;
pub mod event;
pub mod heartbeat;
pub mod pubsub;
pub mod rpc;

pub use crate::error::RpcError;
pub use action::{ActionClient, ActionServer, GoalContext, GoalHandle, GoalHandler, GoalStatus};
pub use event::{Event, EventEmitter};
pub use heartbeat::{Heartbeat, LivenessEvent, LivenessMonitor};
pub use pubsub::{Publisher, Received, Subscriber};
pub use rpc::{RpcClient, RpcHandler, RpcServer};

use crate::codec::Codec;
use crate::connection::Connection;
use crate::message::{Message, Payload, TypedValue};
use crate::topic::Topic;
use serde::Serialize;

/// Builds a message carrying `value`: typed when the transport passes typed values through
/// (no serialisation), encoded with `codec` otherwise.
pub(crate) fn typed_message<T: Serialize + Send + Sync + 'static>(
    conn: &Connection,
    topic: Topic,
    value: T,
    codec: Codec,
) -> Result<Message, crate::codec::CodecError> {
    let payload = if conn.capabilities().typed_payloads {
        Payload::Typed(TypedValue::new(value, codec))
    } else {
        Payload::Bytes(codec.encode(&value)?)
    };
    let mut m = Message::new(topic, payload);
    if codec != Codec::Json {
        m.headers.insert(crate::message::header::CONTENT_TYPE, codec.content_type());
    }
    Ok(m)
}
