//! The conformance suite on core NATS against the machine's nats-server (127.0.0.1:4222, or
//! `BUSBAR_TEST_NATS_URL`).

use std::sync::Arc;

use busbar_conformance::Harness;
use busbar_core::transport::{BoxFuture, ConnectOptions};
use busbar_core::{Connection, Result};
use busbar_nats::NatsTransport;
use busbar_testkit::{BrokerKind, shared_broker};

struct Nats {
    url: String,
}

impl Harness for Nats {
    fn name(&self) -> &'static str {
        "nats"
    }

    fn connect(&self, options: ConnectOptions) -> BoxFuture<'_, Result<Connection>> {
        Box::pin(async move {
            Ok(Connection::new(Arc::new(NatsTransport::connect(&self.url, options).await?)))
        })
    }

    // No `crash`: core NATS has no last will, so the last-will case has nothing to observe
    // (the transport declares `last_will: false`).
}

async fn nats() -> Option<Nats> {
    let broker = shared_broker(BrokerKind::Nats).await?;
    Some(Nats { url: broker.url().to_owned() })
}

busbar_conformance::suite!(nats());
