//! busbar's broker-independent core.
//!
//! * [`topic`]: canonical topic names and filters, validation, matching, broker mappings.
//! * [`message`] and [`codec`]: what travels, and how typed values become bytes.
//! * [`queue`]: bounded delivery queues with an explicit overflow policy.
//! * [`transport`]: the contract every broker binding implements.
//! * [`Connection`]: the shared handle to one transport.
//! * [`patterns`]: publish/subscribe, RPC, actions, events, heartbeats — generic over any
//!   transport.
//! * [`node`]: a named component owning one connection and its endpoints.

#![forbid(unsafe_code)]

pub mod auth;
pub mod codec;
pub mod connection;
pub mod error;
pub mod limits;
pub mod message;
pub mod node;
pub mod patterns;
pub mod pipeline;
pub mod queue;
pub mod receipt;
pub mod stats;
pub mod time;
pub mod topic;
pub mod trace;
pub mod transport;
pub mod url;

pub use codec::{Codec, CodecError};
pub use connection::{Connection, Connector};
pub use error::{Error, Result, RpcError};
pub use message::{Headers, Message, Payload, QoS, TypedValue};
pub use node::{Node, NodeBuilder};
pub use pipeline::Pipeline;
pub use queue::{Overflow, QueueConfig};
pub use receipt::Receipt;
pub use stats::StatsSnapshot;
pub use topic::{Topic, TopicError, TopicFilter};
pub use transport::{
    Acknowledge, Capabilities, Completion, ConnectOptions, ConnectionEvent, ConnectionEvents,
    StartAt, SubscribeOptions, Subscription, Transport,
};
