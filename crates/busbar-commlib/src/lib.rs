//! The commlib-py wire profile: talk to a running commlib-py system from busbar.
//!
//! commlib-py names endpoints with dotted names (`sensors.sonar.front`), sends pub/sub bodies
//! as bare JSON objects and RPC bodies in a `header`/`data` envelope, and does request/reply
//! per transport in its own way. This crate reproduces that wire on top of any busbar
//! [`Connection`](busbar_core::Connection), so a busbar node can publish to and subscribe from
//! commlib nodes, call their RPC services and serve their clients, unchanged on the Python
//! side. It speaks both commlib generations in use, 0.13.1 and 0.13.2, which differ on the
//! wire: decoding is tolerant ([`body`]), encoding always takes the form both accept.
//!
//! Supported: MQTT, Redis and AMQP names and pub/sub, RPC both ways on all three (topics on
//! MQTT, lists on Redis, direct reply-to on AMQP; see [`rpc::Wire`]), actions both ways
//! ([`action`], [`action_service`]), node heartbeats and control services, and commlib's
//! zlib compression ([`Compression`]: bodies are inflated on arrival whatever the setting),
//! and commlib's Redis glob patterns (matched as Redis does; see `docs/commlib.md`).

#![forbid(unsafe_code)]

pub mod action;
pub mod action_service;
pub mod body;
mod compression;
pub mod control;
mod error;
pub mod heartbeat;
pub mod names;
pub mod pubsub;
pub mod rpc;

pub use action_service::{CommlibActionService, GoalContext};
pub use compression::Compression;
pub use error::CommlibError;
pub use pubsub::{CommlibPublisher, CommlibSubscriber, Received};
pub use rpc::{CommlibRpcClient, CommlibRpcService};

/// Nanoseconds since the Unix epoch, commlib's timestamp (`time.time_ns()`).
pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}
