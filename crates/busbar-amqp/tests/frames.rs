//! Frames smaller than RabbitMQ's: a message larger than a frame travels in several body
//! frames and arrives whole, at the default frame size and at the smallest AMQP allows.

use busbar_amqp::AmqpTransport;
use busbar_core::transport::ConnectOptions;
use busbar_core::{Connection, Message, Topic};
use busbar_testkit::{BrokerKind, shared_broker};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_larger_than_a_frame_arrives_whole() {
    let Some(broker) = shared_broker(BrokerKind::Amqp).await else { return };
    for query in ["", "?frame_max=4096"] {
        let url = format!("{}{query}", broker.url());
        let connect = || async {
            let t = AmqpTransport::connect(&url, ConnectOptions::new()).await.expect("connect");
            Connection::new(Arc::new(t))
        };
        let (sub_conn, pub_conn) = (connect().await, connect().await);
        let topic = format!("frames/{}", uuid::Uuid::new_v4().simple());
        let mut sub = sub_conn.subscribe(&topic).await.expect("subscribe");
        // 300 KiB of a pattern that shows a reordered or lost frame.
        let payload: Vec<u8> = (0..300 * 1024u32).map(|i| (i % 251) as u8).collect();
        let message = Message::new(Topic::new(&topic).expect("topic"), payload.clone());
        pub_conn.publish(message).await.expect("publish");
        let got = tokio::time::timeout(Duration::from_secs(10), sub.recv())
            .await
            .expect("in time")
            .expect("open");
        assert_eq!(got.payload.to_bytes().expect("bytes").as_ref(), payload.as_slice(), "{query}");
        pub_conn.close().await.expect("close");
        sub_conn.close().await.expect("close");
    }
}
