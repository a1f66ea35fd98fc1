//! A durable subscription on a RabbitMQ node of its own that is killed and started again:
//! what the subscriber had received but not acknowledged, and what was published after it,
//! is given in order to the next subscriber of the name (a durable queue keeps it on disk,
//! and QoS 1 publishes are persistent).

use std::sync::Arc;
use std::time::Duration;

use busbar_amqp::AmqpTransport;
use busbar_core::transport::{Acknowledge, ConnectOptions, SubscribeOptions};
use busbar_core::{Connection, Message, Subscription, Topic, TopicFilter};
use busbar_testkit::{BrokerProcess, skip_if_missing};

async fn connect(url: &str) -> Connection {
    let transport = AmqpTransport::connect(url, ConnectOptions::new()).await.expect("connects");
    Connection::new(Arc::new(transport))
}

async fn next_text(sub: &mut Subscription) -> (String, Message) {
    let m = tokio::time::timeout(Duration::from_secs(20), sub.recv())
        .await
        .expect("a message in time")
        .expect("the subscription stays open");
    let text = String::from_utf8(m.payload.to_bytes().expect("bytes").to_vec()).expect("text");
    (text, m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_subscription_survives_a_crash_and_a_broker_restart() {
    let test = "a_durable_subscription_survives_a_crash_and_a_broker_restart";
    let Some(mut node) = skip_if_missing(test, BrokerProcess::rabbitmq().await) else { return };
    let url = node.url();
    let filter = TopicFilter::new("plant/durable/+").expect("filter");
    let options = || {
        SubscribeOptions::from(filter.clone()).durable("keeper").acknowledge(Acknowledge::Explicit)
    };

    let subscriber = connect(&url).await;
    let mut sub = subscriber.subscribe_with(options()).await.expect("subscribe");
    let publisher = connect(&url).await;
    for text in ["one", "two", "three"] {
        let topic = Topic::new(format!("plant/durable/{text}")).expect("topic");
        publisher.publish(Message::new(topic, text)).await.expect("confirmed");
    }
    // Received, never acknowledged: the subscriber "crashes" with the broker.
    let (first, _unacknowledged) = next_text(&mut sub).await;
    assert_eq!(first, "one");
    node.stop().await.expect("kill the node");
    drop(sub);
    drop(subscriber);
    drop(publisher);
    node.restart().await.expect("the node starts again with its data");

    let subscriber = connect(&url).await;
    let mut sub = subscriber.subscribe_with(options()).await.expect("subscribe again");
    let mut got = Vec::new();
    for _ in 0..3 {
        let (text, m) = next_text(&mut sub).await;
        assert!(m.ack(), "{text} had nothing to acknowledge");
        got.push(text);
    }
    assert_eq!(got, ["one", "two", "three"]);
    subscriber.close().await.expect("close");
}
