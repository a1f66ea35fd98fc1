//! The conformance suite on Kafka against a Tansu broker (127.0.0.1:9092, started by
//! `scripts/test-all`, or `BUSBAR_TEST_KAFKA_URL`). Topics the suite makes have four
//! partitions, so that queue groups have something to share.

use std::sync::Arc;

use busbar_conformance::Harness;
use busbar_core::transport::{BoxFuture, ConnectOptions};
use busbar_core::{Connection, Result};
use busbar_kafka::KafkaTransport;
use busbar_testkit::{BrokerKind, shared_broker};

struct Kafka {
    url: String,
}

impl Harness for Kafka {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn connect(&self, options: ConnectOptions) -> BoxFuture<'_, Result<Connection>> {
        Box::pin(async move {
            Ok(Connection::new(Arc::new(KafkaTransport::connect(&self.url, options).await?)))
        })
    }

    // No `crash`: Kafka has no last will.
}

async fn kafka() -> Option<Kafka> {
    let broker = shared_broker(BrokerKind::Kafka).await?;
    Some(Kafka { url: format!("{}?partitions=4", broker.url()) })
}

busbar_conformance::suite!(kafka());
