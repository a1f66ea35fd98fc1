//! `mqtt://`, `mqtts://`, `ws://`, `wss://`: busbar's MQTT transport, MQTT 5 (the default)
//! or 3.1.1 (`?version=3.1.1`), over TCP, TLS (rustls with the ring provider) or WebSockets.
//!
//! Topics are MQTT's own, so busbar names go to the broker unchanged; queue groups are shared
//! subscriptions (`$share/<group>/<filter>`); on MQTT 5 headers are user properties
//! (`content-type` is the content type property) and request/reply uses response topic and
//! correlation data, with one reply subscription per connection; on 3.1.1 these travel in a
//! small envelope (see `docs/ARCHITECTURE.md`).
//!
//! # URLs
//!
//! `SCHEME://[USER[:PASSWORD]@]HOST[:PORT][/PATH][?PARAM=VALUE&...]`, with default ports 1883
//! (`mqtt`), 8883 (`mqtts`), 80 (`ws`) and 443 (`wss`), and for WebSockets the path `/mqtt`.
//!
//! | Parameter | Meaning | Default |
//! |---|---|---|
//! | `version` | `5` or `3.1.1` | `5` |
//! | `keep_alive` | keep-alive interval, whole seconds (at least 5) | `30` |
//! | `session_expiry` | keep the session this many seconds after a disconnect (persistent session: incoming messages are acknowledged only once handed over, and with a client id of your own, durable subscriptions and acknowledgements on read or explicit are accepted); absent: a clean session every time | absent |
//! | `connect_timeout` | how long one connect may take | `10s` |
//! | `reconnect_interval` | after a lost connection, the wait between failed rounds of attempts instead of the backoff (100 ms doubling to 5 s) | backoff |
//! | `max_reconnect_attempts` | failed attempts after which a lost connection gives up and closes (`Closed` announced, every call then fails as closed); `0`: never | `0` |
//! | `publish_queue` | messages a drop policy holds while the broker cannot take them | `1024` |
//! | `publish_overflow` | `block` (publish waits), `drop-oldest` or `drop-newest` (never wait; drops counted) | `block` |
//! | `max_packet` | largest packet to send, in bytes; larger publishes fail with `PayloadTooLarge` (MQTT 5 also applies the broker's CONNACK maximum) | MQTT's limit |
//! | `ca` | PEM file of the authorities to trust instead of the system's (`mqtts`, `wss`) | system roots |
//! | `cert`, `key` | PEM client certificate and key (`mqtts`, `wss`) | none |
//!
//! An unknown parameter or a bad value is an [`Error::InvalidUrl`](busbar_core::Error) that
//! names it.

// One `unsafe` block in the crate, allowed where it is: setsockopt(TCP_QUICKACK) on
// rumqttc's socket (`protocol/quick_ack.rs`).
#![deny(unsafe_code)]

mod convert;
mod protocol;
mod registry;
mod settings;
mod transport;

pub use protocol::Version;
pub use settings::{Settings, TlsSettings};
pub use transport::MqttTransport;

use std::sync::Arc;

use busbar_core::error::ConnectError;
use busbar_core::transport::{BoxFuture, ConnectOptions};
use busbar_core::{Connection, Connector};

/// Connects `mqtt://` URLs.
#[derive(Debug, Default, Clone, Copy)]
pub struct MqttConnector;

impl Connector for MqttConnector {
    fn schemes(&self) -> &[&'static str] {
        &["mqtt", "mqtts", "ws", "wss"]
    }

    fn connect(
        &self,
        url: &str,
        options: ConnectOptions,
    ) -> BoxFuture<'static, Result<Connection, ConnectError>> {
        let url = url.to_owned();
        Box::pin(async move {
            Ok(Connection::new(Arc::new(MqttTransport::connect(&url, options).await?)))
        })
    }
}
