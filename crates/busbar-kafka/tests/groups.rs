//! Queue groups are Kafka consumer groups: a member that leaves hands its partitions over,
//! and the next member starts where the group's committed offset says, so between them
//! every record is delivered once.

use std::sync::Arc;
use std::time::Duration;

use busbar_core::transport::{ConnectOptions, SubscribeOptions};
use busbar_core::{Connection, Message, Topic, TopicFilter};
use busbar_kafka::KafkaTransport;
use busbar_testkit::{BrokerKind, shared_broker, unique_name};

async fn connect(url: &str) -> Connection {
    Connection::new(Arc::new(
        KafkaTransport::connect(url, ConnectOptions::new()).await.expect("connect"),
    ))
}

fn number(m: &Message) -> u32 {
    let bytes = m.payload.to_bytes().expect("bytes");
    u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_member_starts_at_the_committed_offset() {
    const N: u32 = 200;
    let Some(broker) = shared_broker(BrokerKind::Kafka).await else { return };
    let topic = format!("groups/{}/jobs", unique_name());
    let filter = TopicFilter::new(&topic).expect("filter");
    let options = || SubscribeOptions::from(filter.clone()).queue_group("workers").capacity(8);
    let publisher = connect(broker.url()).await;
    let first = connect(broker.url()).await;
    let mut sub = first.subscribe_with(options()).await.expect("subscribe");
    for n in 0..N {
        let m = Message::new(Topic::new(&topic).expect("topic"), n.to_be_bytes().to_vec());
        publisher.publish(m).await.expect("confirmed");
    }
    let mut got = Vec::new();
    for _ in 0..N / 4 {
        got.push(number(
            &tokio::time::timeout(Duration::from_secs(20), sub.recv())
                .await
                .expect("in time")
                .expect("open"),
        ));
    }
    // Leaving commits what was handed over, the messages still in the subscription's queue
    // included: they are this member's, and its reader reads them after the close.
    first.close().await.expect("close");
    while let Some(m) = sub.recv().await {
        got.push(number(&m));
    }
    let handed = got.len();
    assert!(handed < N as usize, "the first member took everything");
    let second = connect(broker.url()).await;
    let mut sub = second.subscribe_with(options()).await.expect("subscribe");
    while got.len() < N as usize {
        let m = tokio::time::timeout(Duration::from_secs(20), sub.recv())
            .await
            .unwrap_or_else(|_| {
                panic!("stuck after {} of {N} ({handed} from the first)", got.len())
            })
            .expect("open");
        got.push(number(&m));
    }
    // Nothing lost, nothing twice, in order: one partition, handed from member to member.
    assert_eq!(got, (0..N).collect::<Vec<_>>());
    second.close().await.expect("close");
    publisher.close().await.expect("close");
}

/// A durable subscription is a consumer group: `remove_durable` deletes it with its
/// committed position, so the name starts afresh (what was kept for it is not handed over);
/// while a subscription of the same connection reads it, the removal is refused and names
/// the subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_durable_subscription_deletes_its_group() {
    let Some(broker) = shared_broker(BrokerKind::Kafka).await else { return };
    let topic = format!("groups/{}/kept", unique_name());
    let filter = TopicFilter::new(&topic).expect("filter");
    let name = format!("durable-{}", unique_name());
    let durable = || SubscribeOptions::from(filter.clone()).durable(&name);
    let publish = |conn: Connection, n: u32| {
        let m = Message::new(Topic::new(&topic).expect("topic"), n.to_be_bytes().to_vec());
        async move { conn.publish(m).await.expect("confirmed") }
    };
    let publisher = connect(broker.url()).await;
    let reader = connect(broker.url()).await;
    let mut sub = reader.subscribe_with(durable()).await.expect("subscribe");
    publish(publisher.clone(), 1).await;
    let first = tokio::time::timeout(Duration::from_secs(20), sub.recv()).await.expect("in time");
    assert_eq!(number(&first.expect("open")), 1);
    let err = reader.remove_durable(&name, &topic).await.expect_err("in use here");
    assert!(err.to_string().contains("in use on this connection"), "{err}");
    drop(sub);
    reader.close().await.expect("close");

    // Kept for the name while nobody reads: 2. Removed: the next subscriber never gets it.
    publish(publisher.clone(), 2).await;
    publisher.remove_durable(&name, &topic).await.expect("removed");
    let reader = connect(broker.url()).await;
    let mut sub = reader.subscribe_with(durable()).await.expect("subscribe afresh");
    publish(publisher.clone(), 3).await;
    let next = tokio::time::timeout(Duration::from_secs(20), sub.recv()).await.expect("in time");
    assert_eq!(number(&next.expect("open")), 3, "the removed subscription kept 2");
    drop(sub);
    reader.close().await.expect("close");
    publisher.remove_durable(&name, &topic).await.expect("removed again");
    // Removing what is not there is no error (the name may be gone already).
    publisher.remove_durable(&name, &topic).await.expect("nothing to remove");
}
