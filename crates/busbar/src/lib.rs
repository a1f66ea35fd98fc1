//! busbar: one async API for publish/subscribe, RPC, preemptable actions, events and
//! heartbeats over message brokers.
//!
//! ```no_run
//! # async fn demo() -> busbar::Result<()> {
//! let conn = busbar::connect("mem://").await?;
//! let mut temps = busbar::Subscriber::<f64>::new(&conn, "plant/+/temperature").await?;
//! busbar::Publisher::<f64>::new(&conn, "plant/boiler/temperature")?.publish(81.5).await?;
//! let got = temps.recv().await.expect("open")?;
//! assert_eq!(got.topic.as_str(), "plant/boiler/temperature");
//! # Ok(()) }
//! ```
//!
//! This crate gathers the core ([`busbar_core`]) and the transports compiled in (cargo
//! features named after them), and turns URLs into connections: see [`connect`].
//!
//! # Cargo features
//!
//! | feature | what it adds | default |
//! |---|---|---|
//! | `mem` | the in-process transport, `mem://` | yes |
//! | `mqtt` | MQTT 3.1.1 and 5: `mqtt://`, `mqtts://`, `ws://`, `wss://` | yes |
//! | `msgpack` | the MessagePack codec | yes |
//! | `redis` | Redis: `redis://`, `rediss://`, `redis+unix://` | |
//! | `nats` | NATS: `nats://`, `tls://` | |
//! | `amqp` | AMQP 0.9.1 (RabbitMQ): `amqp://`, `amqps://` | |
//! | `kafka` | Kafka on librdkafka: `kafka://`, `kafka+tls://` (builds C: a compiler, `make`, OpenSSL's and zlib's headers) | |
//! | `oidc` | OIDC client-credentials tokens (`token: {oidc: ...}` in configuration files) | |
//! | `gateway` | rule-based gateways with CSTBox's semantics (`busbar::gateway`) | |
//! | `otel` | OpenTelemetry export of busbar's traces over OTLP/HTTP (`busbar::otel`) | |
//! | `full` | all of the above but `kafka` | |
//!
//! A URL whose transport is not compiled in is refused by [`connect`] with an error naming
//! the feature to turn on.

#![forbid(unsafe_code)]

use std::sync::Arc;

// The user API, named one by one: what an application needs to connect, publish,
// subscribe, call, act and watch. Transport authors find the rest in `transport`.
pub use busbar_core::codec::{Codec, CodecError};
pub use busbar_core::connection::{Connection, Connector};
pub use busbar_core::error::{Error, Result, RpcError};
pub use busbar_core::message::{Headers, Message, Payload, QoS, header};
pub use busbar_core::node::{Node, NodeBuilder, StopReport};
pub use busbar_core::patterns::action::ActionError;
pub use busbar_core::patterns::{
    ActionClient, ActionServer, Event, EventEmitter, GoalContext, GoalHandle, GoalHandler,
    GoalStatus, Heartbeat, LivenessEvent, LivenessMonitor, Publisher, Received, RpcClient,
    RpcHandler, RpcServer, Subscriber,
};
pub use busbar_core::pipeline::Pipeline;
pub use busbar_core::queue::{Overflow, QueueConfig};
pub use busbar_core::stats::StatsSnapshot;
pub use busbar_core::topic::{Topic, TopicError, TopicFilter};
pub use busbar_core::transport::{
    Acknowledge, Capabilities, ConnectOptions, ConnectionEvent, ConnectionEvents, NativeNames,
    StartAt, SubscribeOptions, Subscription,
};

/// What each operation can fail with: one error type per operation, each with a kind to
/// match on (see [`busbar_core::error`]).
pub mod error {
    pub use busbar_core::error::{
        CloseError, CloseErrorKind, ConnectError, ConnectErrorKind, Error, GoalError,
        GoalErrorKind, OpError, PublishError, PublishErrorKind, RequestError, RequestErrorKind,
        Result, RpcError, SubscribeError, SubscribeErrorKind,
    };
}

/// Node liveness: the heartbeat message, its topic, and why a node is reported down.
pub mod heartbeat {
    pub use busbar_core::patterns::heartbeat::{
        DownReason, HEARTBEAT_PREFIX, Heartbeat, LivenessEvent, LivenessMonitor, MAX_INTERVAL,
        MIN_INTERVAL, NodeState, heartbeat_topic,
    };
}

/// Credentials that change: tokens and the providers that fetch them.
pub mod auth {
    pub use busbar_core::auth::{
        SharedTokenProvider, StaticToken, Token, TokenPlacement, TokenProvider,
    };
}

/// Topic names and filters, and how they map to each broker's native names.
pub mod topic {
    pub use busbar_core::topic::*;
}

/// W3C trace context in message headers: follow one request through bridges and servers.
pub mod trace {
    pub use busbar_core::trace::{TRACEPARENT, TRACESTATE, TraceContext, handle};
}

/// Bounds on the files busbar reads whole (configuration, gateway rules, modules).
pub mod limits {
    pub use busbar_core::limits::*;
}

/// Spans of time as people write them (`500ms`, `30s`, `2m`, or plain seconds), and
/// timestamps as the systems busbar joins write them.
pub mod time {
    pub use busbar_core::time::{iso8601_micros, iso8601_millis, parse_duration};
}

/// URLs as they may be shown: [`url::redact`] hides passwords and lone tokens.
pub mod url {
    pub use busbar_core::url::redact;
}

/// For transport authors: the contract a transport implements and the pieces of the core it
/// builds on (delivery queues, counters, the subscription stream). Applications do not need
/// this module; the plumbing transports share is in the `busbar-transport-kit` crate.
pub mod transport {
    pub use busbar_core::error::Common;
    pub use busbar_core::queue::{DropCounter, Pushed, QueueReceiver, QueueSender, queue};
    pub use busbar_core::receipt::Receipt;
    pub use busbar_core::stats::Stats;
    pub use busbar_core::transport::*;
}

#[cfg(feature = "amqp")]
pub use busbar_amqp as amqp;
#[cfg(feature = "mem")]
pub use busbar_mem as mem;
#[cfg(feature = "mqtt")]
pub use busbar_mqtt as mqtt;
#[cfg(feature = "nats")]
pub use busbar_nats as nats;
#[cfg(feature = "oidc")]
pub use busbar_oidc as oidc;
#[cfg(feature = "otel")]
pub use busbar_otel as otel;
#[cfg(feature = "redis")]
pub use busbar_redis as redis;

pub use busbar_bridge as bridge;
#[cfg(feature = "gateway")]
pub use busbar_gateway as gateway;
pub mod config;
pub mod metrics;
mod registry;
pub use config::Config;
pub use registry::Registry;

/// Connects to `url` with default options. Schemes: `mem://` (in-process), and each broker
/// transport compiled in.
pub async fn connect(url: &str) -> Result<Connection, error::ConnectError> {
    connect_with(url, ConnectOptions::new()).await
}

/// Connects to `url` with `options`.
pub async fn connect_with(
    url: &str,
    options: ConnectOptions,
) -> Result<Connection, error::ConnectError> {
    Registry::default().connect(url, options).await
}

/// Configures a node whose URL is resolved by every transport compiled in.
pub fn node(name: impl Into<String>) -> NodeBuilder {
    NodeBuilder::new(name).connector(Arc::new(Registry::default()))
}

/// The README's examples, compiled and run as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
