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
    let options = || SubscribeOptions::new(filter.clone()).queue_group("workers").capacity(8);
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
