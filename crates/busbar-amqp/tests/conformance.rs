//! The conformance suite on AMQP 0.9.1 against RabbitMQ (the machine's broker on 5672, or
//! `BUSBAR_TEST_AMQP_URL`).

use std::sync::Arc;

use busbar_amqp::AmqpTransport;
use busbar_conformance::Harness;
use busbar_core::transport::{BoxFuture, ConnectOptions};
use busbar_core::{Connection, Result};
use busbar_testkit::{BrokerKind, shared_broker};

struct Amqp {
    url: String,
}

impl Harness for Amqp {
    fn name(&self) -> &'static str {
        "amqp"
    }

    fn connect(&self, options: ConnectOptions) -> BoxFuture<'_, Result<Connection>> {
        Box::pin(async move {
            Ok(Connection::new(Arc::new(AmqpTransport::connect(&self.url, options).await?)))
        })
    }
    // No `crash`: AMQP has no last will, and the capability says so (the case checks it).
}

async fn rabbitmq() -> Option<Amqp> {
    let broker = shared_broker(BrokerKind::Amqp).await?;
    Some(Amqp { url: broker.url().to_owned() })
}

busbar_conformance::suite!(rabbitmq());
