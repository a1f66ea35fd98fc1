//! Removing a durable subscription, which MQTT keeps in the persistent session of the
//! client that made it: only a connection of that session can remove it.

use std::sync::Arc;
use std::time::Duration;

use busbar_core::error::SubscribeErrorKind;
use busbar_core::transport::ConnectOptions;
use busbar_core::{Connection, Message, QoS, SubscribeOptions, Topic, TopicFilter};
use busbar_mqtt::MqttTransport;
use busbar_testkit::{BrokerKind, shared_broker};

/// More than Mosquitto sends before the first acknowledgements (its in-flight window of
/// 20): the rest waits in the session's queue when the subscription is removed.
const KEPT: u32 = 60;

async fn connect(url: &str, id: &str) -> Connection {
    let options = ConnectOptions::new().client_id(id.to_owned());
    Connection::new(Arc::new(MqttTransport::connect(url, options).await.expect("connect")))
}

fn numbered(topic: &Topic, n: u32) -> Message {
    Message::new(topic.clone(), n.to_be_bytes().to_vec()).with_qos(QoS::AtLeastOnce)
}

async fn removing_drops_what_the_session_kept(version: &str) {
    let Some(broker) = shared_broker(BrokerKind::Mqtt).await else { return };
    let run = format!("rmdurable{}{}", std::process::id(), version.replace('.', ""));
    let url = format!("{}?version={version}&session_expiry=60", broker.url());
    let topic = Topic::new(format!("{run}/t")).expect("topic");
    let filter = TopicFilter::new(topic.as_str()).expect("filter");
    let name = format!("{run}-durable");
    let reader_id = format!("{run}.reader");
    let durable = || SubscribeOptions::from(filter.clone()).durable(name.clone());

    // Made, then left: the session keeps what is published for it.
    let reader = connect(&url, &reader_id).await;
    let sub = reader.subscribe_with(durable()).await.expect("durable subscription");
    // Not removed under its own reader.
    let err = reader.remove_durable(&name, topic.as_str()).await.expect_err("in use here");
    assert_eq!(err.kind(), SubscribeErrorKind::InvalidFilter, "{err}");
    drop(sub);
    reader.close().await.expect("close");
    let publisher = busbar_core::Connection::new(Arc::new(
        MqttTransport::connect(&format!("{}?version={version}", broker.url()), Default::default())
            .await
            .expect("publisher"),
    ));
    for n in 0..KEPT {
        publisher.publish(numbered(&topic, n)).await.expect("publish");
    }

    // Removed from the session: what it kept goes with it, the part the broker had sent
    // and the part still queued.
    let remover = connect(&url, &reader_id).await;
    remover.remove_durable(&name, topic.as_str()).await.expect("removed");
    remover.close().await.expect("close");
    let reader = connect(&url, &reader_id).await;
    let mut sub = reader.subscribe_with(durable()).await.expect("subscribed afresh");
    publisher.publish(numbered(&topic, 1000)).await.expect("publish");
    let m = tokio::time::timeout(Duration::from_secs(10), sub.recv())
        .await
        .expect("the message after the removal arrives")
        .expect("open");
    let first =
        u32::from_be_bytes(m.payload.to_bytes().expect("bytes")[..4].try_into().expect("4"));
    assert_eq!(first, 1000, "MQTT {version}: the removed subscription kept {first}");
    drop(sub);
    reader.remove_durable(&name, topic.as_str()).await.expect("removed again");
    reader.close().await.expect("close");

    // A connection without a session of its own cannot hold one, and says so.
    let clean = connect(&format!("{}?version={version}", broker.url()), &format!("{run}.x")).await;
    let err = clean.remove_durable(&name, topic.as_str()).await.expect_err("no session");
    assert_eq!(err.kind(), SubscribeErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains("session_expiry"), "{err}");
    clean.close().await.expect("close");
    publisher.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_durable_subscription_drops_what_the_session_kept_mqtt_5() {
    removing_drops_what_the_session_kept("5").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_durable_subscription_drops_what_the_session_kept_mqtt_311() {
    removing_drops_what_the_session_kept("3.1.1").await;
}
