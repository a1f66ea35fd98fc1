//! The conformance suite on MQTT 5 against Mosquitto (the machine's broker on 1883, or
//! `BUSBAR_TEST_MQTT_URL`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use busbar_conformance::Harness;
use busbar_core::transport::{BoxFuture, ConnectOptions};
use busbar_core::{Connection, Result};
use busbar_mqtt::MqttTransport;
use busbar_testkit::{BrokerKind, shared_broker};

struct Mqtt {
    url: String,
    /// Connections by client id, to crash them for the last-will case.
    opened: Mutex<HashMap<String, Weak<MqttTransport>>>,
}

impl Harness for Mqtt {
    fn name(&self) -> &'static str {
        "mqtt5"
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

async fn mosquitto() -> Option<Mqtt> {
    let broker = shared_broker(BrokerKind::Mqtt).await?;
    Some(Mqtt { url: broker.url().to_owned(), opened: Mutex::default() })
}

busbar_conformance::suite!(mosquitto());
