//! `amqp://`, `amqps://`: busbar's AMQP 0.9.1 transport (RabbitMQ), on lapin.
//!
//! busbar topics are routing keys on a topic exchange (`amq.topic` unless the URL says
//! `?exchange=NAME`), `/` becoming `.` and `+` becoming `*`. Every subscription has its own
//! queue bound to that exchange; queue groups share one queue named from the group and the
//! filter. Headers are the AMQP headers table (`content-type` the content-type property),
//! expiry the per-message TTL, and request/reply uses RabbitMQ's direct reply-to with
//! `mandatory` requests, so a request nobody serves fails at once with `NoResponders`.
//! Publishes at QoS 1 wait for the broker's confirm. Retained messages, last wills and
//! no-local subscriptions do not exist in AMQP and are refused with `Unsupported`.
//!
//! A supervisor task owns the connection and restores it (queues, bindings, consumers)
//! after the broker closes it or restarts; see `docs/ARCHITECTURE.md`.

#![forbid(unsafe_code)]

mod convert;
mod settings;
mod tls;
mod transport;

pub use settings::{DEFAULT_EXCHANGE, DEFAULT_MAX_PAYLOAD, Settings, TlsSettings};
pub use transport::AmqpTransport;

use std::sync::Arc;

use busbar_core::error::ConnectError;
use busbar_core::transport::{BoxFuture, ConnectOptions};
use busbar_core::{Connection, Connector};

/// Connects `amqp://` and `amqps://` URLs.
#[derive(Debug, Default, Clone, Copy)]
pub struct AmqpConnector;

impl Connector for AmqpConnector {
    fn schemes(&self) -> &[&'static str] {
        &["amqp", "amqps"]
    }

    fn connect(
        &self,
        url: &str,
        options: ConnectOptions,
    ) -> BoxFuture<'static, Result<Connection, ConnectError>> {
        let url = url.to_owned();
        Box::pin(async move {
            Ok(Connection::new(Arc::new(AmqpTransport::connect(&url, options).await?)))
        })
    }
}
