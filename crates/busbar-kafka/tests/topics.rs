//! Topics the broker does not have are created on first use, with the partitions the URL
//! asks for, as a standard Kafka client (kafka-python) sees them.
//!
//! `?create_topics=false` (refuse instead) cannot be shown against Tansu: it creates any
//! topic a metadata request names, whatever the request says (Apache Kafka does so only
//! with `auto.create.topics.enable`).

use std::path::PathBuf;
use std::sync::Arc;

use busbar_core::transport::ConnectOptions;
use busbar_core::{Connection, Message, Topic};
use busbar_kafka::KafkaTransport;
use busbar_testkit::peer::{Peer, python};
use busbar_testkit::{BrokerKind, shared_broker, unique_name};

#[tokio::test]
async fn topics_are_created_with_the_partitions_asked_for() {
    let test = "topics_are_created_with_the_partitions_asked_for";
    let Some(broker) = shared_broker(BrokerKind::Kafka).await else { return };
    let Some(py) = python(test, "BUSBAR_KAFKA_PYTHON", "kafka-venv") else { return };
    for partitions in [1, 3] {
        let url = format!("{}?partitions={partitions}", broker.url());
        let conn = Connection::new(Arc::new(
            KafkaTransport::connect(&url, ConnectOptions::new()).await.expect("connect"),
        ));
        let topic = Topic::new(format!("topics/{}/made", unique_name())).expect("topic");
        conn.publish(Message::new(topic.clone(), "x")).await.expect("publish");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peer/kafka_peer.py");
        let args = [
            script.display().to_string(),
            format!("{}:{}", broker.host(), broker.port()),
            "partitions".into(),
            topic.as_str().replace('/', "."),
        ];
        let mut peer = Peer::start(&py, &args, &[]).await;
        assert_eq!(peer.next().await, partitions, "partitions of {topic}");
        conn.close().await.expect("close");
    }
}
