//! `mqtt://` and `mqtts://`: busbar's MQTT transport (MQTT 5 over TCP, and over TLS with
//! rustls and the ring provider).
//!
//! Topics are MQTT's own, so busbar names go to the broker unchanged; queue groups are shared
//! subscriptions (`$share/<group>/<filter>`); headers are user properties (`content-type` is
//! the content type property); request/reply uses response topic and correlation data with
//! one reply subscription per connection.

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
