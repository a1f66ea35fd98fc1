//! The conformance suite on MQTT 5 against Mosquitto (the machine's broker on 1883, or
//! `BUSBAR_TEST_MQTT_URL`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use busbar_conformance::Harness;
use busbar_core::transport::{BoxFuture, ConnectOptions};
use busbar_core::{Connection, Result};
use busbar_mqtt::MqttTransport;
use busbar_testkit::{BrokerKind, BrokerProcess, MosquittoConfig, shared_broker, skip_if_missing};

struct Mqtt {
    url: String,
    name: &'static str,
    /// A broker started for this case, if any (stopped when the case ends).
    _owned: Option<BrokerProcess>,
    /// Connections by client id, to crash them for the last-will case.
    opened: Mutex<HashMap<String, Weak<MqttTransport>>>,
}

impl Harness for Mqtt {
    fn name(&self) -> &'static str {
        self.name
    }

    fn connect(&self, options: ConnectOptions) -> BoxFuture<'_, Result<Connection>> {
        Box::pin(async move {
            let transport = Arc::new(MqttTransport::connect(&self.url, options).await?);
            let id = busbar_core::Transport::client_id(&*transport).to_owned();
            self.opened
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, Arc::downgrade(&transport));
            Ok(Connection::new(transport))
        })
    }

    fn crash<'a>(&'a self, conn: &'a Connection) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let found = self
                .opened
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(conn.client_id())
                .and_then(Weak::upgrade);
            match found {
                Some(t) => {
                    t.kill();
                    true
                }
                None => false,
            }
        })
    }
}

async fn mosquitto(name: &'static str, query: &str) -> Option<Mqtt> {
    let broker = shared_broker(BrokerKind::Mqtt).await?;
    Some(Mqtt {
        url: format!("{}{query}", broker.url()),
        name,
        _owned: None,
        opened: Mutex::default(),
    })
}

/// A Mosquitto of the case's own that never drops QoS 1 messages for a client that falls
/// behind. Debian's default (`max_queued_messages 1000`) does drop them, and over MQTT 3.1.1,
/// where the broker may only have 20 messages in flight to a client, a burst of a few
/// thousand (the many-goals case) overflows that queue: a broker setting, not client loss.
async fn own_mosquitto(name: &'static str, query: &str) -> Option<Mqtt> {
    let config = MosquittoConfig::new().line("max_queued_messages 0");
    let broker = skip_if_missing(name, BrokerProcess::mosquitto(config).await)?;
    Some(Mqtt {
        url: format!("{}{query}", broker.url()),
        name,
        _owned: Some(broker),
        opened: Mutex::default(),
    })
}

busbar_conformance::suite!(mosquitto("mqtt5", ""));

/// The same suite over MQTT 3.1.1.
mod v311 {
    use super::*;
    busbar_conformance::suite!(own_mosquitto("mqtt3.1.1", "?version=3.1.1"));
}

/// Durable subscriptions live in persistent sessions: the durable case again, on
/// connections that keep theirs (the suites above check that it is refused without).
mod persistent {
    use super::*;
    busbar_conformance::suite!(@cases mosquitto("mqtt5-persistent", "?session_expiry=60");
        durable_subscriptions);

    mod v311 {
        use super::*;
        busbar_conformance::suite!(@cases
            own_mosquitto("mqtt3.1.1-persistent", "?version=3.1.1&session_expiry=60");
            durable_subscriptions);
    }
}
