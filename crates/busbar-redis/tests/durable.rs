//! A durable subscription's reader that died holding messages: after 30 s of idleness its
//! entries are taken by another reader of the same name, in order.

use std::sync::Arc;
use std::time::Duration;

use busbar_core::transport::ConnectOptions;
use busbar_core::{Connection, SubscribeOptions, TopicFilter};
use busbar_redis::RedisTransport;
use busbar_testkit::{BrokerKind, shared_broker};

async fn reader(url: &str, id: &str) -> Connection {
    let options = ConnectOptions::new().client_id(id.to_owned());
    Connection::new(Arc::new(RedisTransport::connect(url, options).await.expect("connect")))
}

/// A reader that read three messages and then vanished (no acknowledgement, no goodbye) is
/// played by a consumer reading the stream by hand; a busbar reader of the same durable
/// subscription gets all three once they have been idle for 30 s (it looks every 10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_readers_messages_go_to_the_next_reader() {
    let Some(broker) = shared_broker(BrokerKind::Redis).await else { return };
    let url = broker.url().to_owned();
    let run = format!("deadreader{}", std::process::id());
    let filter = TopicFilter::new(format!("{run}/t")).expect("filter");
    let name = format!("{run}-durable");
    let durable = || SubscribeOptions::from(filter.clone()).durable(name.clone());

    // Make the subscription (stream, group, registry entry), then leave it.
    let first = reader(&url, &format!("{run}-first")).await;
    drop(first.subscribe_with(durable()).await.expect("durable"));
    first.close().await.expect("close");

    let publisher = reader(&url, &format!("{run}-publisher")).await;
    for i in 1..=3 {
        publisher
            .publish_bytes(filter.as_str(), i.to_string().into_bytes())
            .await
            .expect("publish");
    }
    // The dead reader: takes the three and is never heard of again.
    let client = redis::Client::open(url.as_str()).expect("redis url");
    let mut raw = client.get_multiplexed_async_connection().await.expect("raw connection");
    let key = format!("busbar:durable:{name}:{}", filter.as_str());
    let taken: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("busbar")
        .arg(format!("{run}-dead"))
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(&key)
        .arg(">")
        .query_async(&mut raw)
        .await
        .expect("the dead reader reads");
    assert!(format!("{taken:?}").contains('3'), "the dead reader took the messages: {taken:?}");

    let next = reader(&url, &format!("{run}-next")).await;
    let mut sub = next.subscribe_with(durable()).await.expect("durable again");
    for i in 1..=3 {
        let m = tokio::time::timeout(Duration::from_secs(60), sub.recv())
            .await
            .expect("claimed within 30 s of idleness and a 10 s look")
            .expect("open");
        assert_eq!(m.payload.to_bytes().expect("bytes").as_ref(), i.to_string().as_bytes());
    }
    drop(sub);
    let _ = next.remove_durable(&name, filter.as_str()).await;
    let _ = next.close().await;
}
