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

use std::sync::Arc;

pub use busbar_core::patterns::action::ActionError;
pub use busbar_core::patterns::{
    ActionClient, ActionServer, Event, EventEmitter, GoalContext, GoalHandle, GoalHandler,
    GoalStatus, Heartbeat, LivenessEvent, LivenessMonitor, Publisher, Received, RpcClient,
    RpcError, RpcHandler, RpcServer, Subscriber,
};
pub use busbar_core::*;

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
#[cfg(feature = "redis")]
pub use busbar_redis as redis;

pub use busbar_bridge as bridge;
#[cfg(feature = "gateway")]
pub use busbar_gateway as gateway;
pub mod config;
mod registry;
pub use config::Config;
pub use registry::Registry;

/// Connects to `url` with default options. Schemes: `mem://` (in-process), and each broker
/// transport compiled in.
pub async fn connect(url: &str) -> Result<Connection> {
    connect_with(url, ConnectOptions::new()).await
}

/// Connects to `url` with `options`.
pub async fn connect_with(url: &str, options: ConnectOptions) -> Result<Connection> {
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
