//! `mqtt://`, `mqtts://`, `ws://`, `wss://`: busbar's MQTT transport, MQTT 5 (the default)
//! or 3.1.1 (`?version=3.1.1`), over TCP, TLS (rustls with the ring provider) or WebSockets.
//!
//! Topics are MQTT's own, so busbar names go to the broker unchanged; queue groups are shared
//! subscriptions (`$share/<group>/<filter>`); on MQTT 5 headers are user properties
//! (`content-type` is the content type property) and request/reply uses response topic and
//! correlation data, with one reply subscription per connection; on 3.1.1 these travel in a
//! small envelope (see `docs/ARCHITECTURE.md`).

mod convert;
mod protocol;
mod registry;
mod settings;
mod tls;
mod transport;

pub use protocol::Version;
pub use settings::{Settings, TlsSettings};
pub use transport::MqttTransport;

use std::sync::Arc;

use busbar_core::transport::{BoxFuture, ConnectOptions};
use busbar_core::{Connection, Connector, Result};

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
    ) -> BoxFuture<'static, Result<Connection>> {
        let url = url.to_owned();
        Box::pin(async move {
            Ok(Connection::new(Arc::new(MqttTransport::connect(&url, options).await?)))
        })
    }
}
