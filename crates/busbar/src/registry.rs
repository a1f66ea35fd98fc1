//! Which transport handles which URL scheme.

use std::sync::Arc;

use busbar_core::connection::url_scheme;
use busbar_core::error::{ConnectError, ConnectErrorKind, OpError};
use busbar_core::transport::{BoxFuture, ConnectOptions};
use busbar_core::{Connection, Connector};

/// Schemes busbar knows, with the cargo feature that brings each.
const PLANNED: &[(&str, &str)] = &[
    ("mqtt", "mqtt"),
    ("mqtts", "mqtt"),
    ("ws", "mqtt"),
    ("wss", "mqtt"),
    ("amqp", "amqp"),
    ("amqps", "amqp"),
    ("redis", "redis"),
    ("rediss", "redis"),
    ("redis+unix", "redis"),
    ("unix", "redis"),
    ("nats", "nats"),
    ("tls", "nats"),
    ("kafka", "kafka"),
    ("kafka+tls", "kafka"),
];

/// Whether `scheme` is one busbar has a transport for, in this build or another.
pub(crate) fn is_known_scheme(scheme: &str) -> bool {
    scheme == "mem" || PLANNED.iter().any(|(s, _)| *s == scheme)
}

/// A set of connectors dispatching on the URL scheme. `Registry::default()` holds every
/// transport compiled into this build.
#[derive(Clone)]
pub struct Registry {
    connectors: Vec<Arc<dyn Connector>>,
}

impl Default for Registry {
    fn default() -> Self {
        #[allow(unused_mut)]
        let mut r = Registry { connectors: Vec::new() };
        #[cfg(feature = "mem")]
        r.connectors.push(Arc::new(busbar_mem::MemConnector));
        #[cfg(feature = "mqtt")]
        r.connectors.push(Arc::new(busbar_mqtt::MqttConnector));
        #[cfg(feature = "redis")]
        r.connectors.push(Arc::new(busbar_redis::RedisConnector));
        #[cfg(feature = "nats")]
        r.connectors.push(Arc::new(busbar_nats::NatsConnector));
        #[cfg(feature = "amqp")]
        r.connectors.push(Arc::new(busbar_amqp::AmqpConnector));
        #[cfg(feature = "kafka")]
        r.connectors.push(Arc::new(busbar_kafka::KafkaConnector));
        r
    }
}

impl Registry {
    /// An empty registry.
    pub fn empty() -> Self {
        Registry { connectors: Vec::new() }
    }

    /// Adds a connector (later ones win for a scheme both handle).
    pub fn with(mut self, connector: Arc<dyn Connector>) -> Self {
        self.connectors.insert(0, connector);
        self
    }

    /// Every scheme handled, sorted.
    pub fn known_schemes(&self) -> Vec<&'static str> {
        let mut all: Vec<_> =
            self.connectors.iter().flat_map(|c| c.schemes().iter().copied()).collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    fn find(&self, url: &str) -> Result<Arc<dyn Connector>, ConnectError> {
        let scheme = url_scheme(url)?;
        if let Some(c) = self.connectors.iter().find(|c| c.schemes().contains(&scheme.as_str())) {
            return Ok(c.clone());
        }
        let mut known = self.known_schemes().join(", ");
        if let Some((_, feature)) = PLANNED.iter().find(|(s, _)| *s == scheme) {
            known.push_str(&format!(
                "; {scheme}:// needs the `{feature}` transport, which this build does not include"
            ));
        }
        Err(OpError::new(
            ConnectErrorKind::UnknownScheme,
            format!("no transport for {scheme}:// in this build (known: {known})"),
        ))
    }
}

impl Connector for Registry {
    fn schemes(&self) -> &[&'static str] {
        // Dispatch is by `find`; a registry does not advertise a fixed list here.
        &[]
    }

    fn connect(
        &self,
        url: &str,
        options: ConnectOptions,
    ) -> BoxFuture<'static, Result<Connection, ConnectError>> {
        match self.find(url) {
            Ok(c) => c.connect(url, options),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "mem")]
    #[tokio::test]
    async fn unknown_scheme_names_what_is_known() {
        // A scheme of a transport this build lacks names the feature that brings it.
        let registry = Registry::empty().with(Arc::new(busbar_mem::MemConnector));
        let err = registry
            .connect("kafka://127.0.0.1:9092", ConnectOptions::new())
            .await
            .expect_err("no kafka transport in this registry");
        let text = err.to_string();
        assert!(text.contains("`kafka`"), "{text}");
        assert!(text.contains("mem"), "{text}");
        #[cfg(feature = "kafka")]
        assert!(Registry::default().known_schemes().contains(&"kafka+tls"));
        let err = Registry::default()
            .connect("gopher://x", ConnectOptions::new())
            .await
            .expect_err("unknown");
        assert_eq!(err.kind(), ConnectErrorKind::UnknownScheme, "{err}");
    }

    #[tokio::test]
    async fn mem_urls_connect() {
        let conn = Registry::default()
            .connect("mem://registry-test", ConnectOptions::new())
            .await
            .expect("mem");
        assert_eq!(conn.kind(), "mem");
    }
}
