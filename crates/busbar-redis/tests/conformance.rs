//! The conformance suite against the machine's Redis (127.0.0.1:6379, or
//! `BUSBAR_TEST_REDIS_URL`).

use std::sync::Arc;

use busbar_conformance::Harness;
use busbar_core::transport::{BoxFuture, ConnectOptions};
use busbar_core::{Connection, Result};
use busbar_redis::RedisTransport;
use busbar_testkit::{BrokerKind, shared_broker};

struct Redis {
    url: String,
}

impl Harness for Redis {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn connect(&self, options: ConnectOptions) -> BoxFuture<'_, Result<Connection>> {
        Box::pin(async move {
            Ok(Connection::new(Arc::new(RedisTransport::connect(&self.url, options).await?)))
        })
    }
    // No crash(): Redis has no last will, so the last-will case returns on the capability.
}

async fn redis() -> Option<Redis> {
    let broker = shared_broker(BrokerKind::Redis).await?;
    Some(Redis { url: broker.url().to_owned() })
}

busbar_conformance::suite!(redis());
