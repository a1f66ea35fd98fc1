//! busbar and a standard Kafka client nobody here wrote (kafka-python, in target/kafka-venv,
//! made by `scripts/test-all`), on the shared Tansu broker: each reads what the other
//! writes, with the same keys, headers and values, in order; and kafka-python answers a
//! busbar request from the reply topic and correlation id in its headers.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use busbar_core::transport::{ConnectOptions, SubscribeOptions};
use busbar_core::{Connection, Message, Topic, TopicFilter};
use busbar_kafka::KafkaTransport;
use busbar_testkit::peer::{Peer, python};
use busbar_testkit::{BrokerKind, shared_broker, unique_name};

const N: usize = 20;

fn script() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peer/kafka_peer.py").display().to_string()
}

async fn setup(test: &str) -> Option<(Connection, String, PathBuf)> {
    let broker = shared_broker(BrokerKind::Kafka).await?;
    let py = python(test, "BUSBAR_KAFKA_PYTHON", "kafka-venv")?;
    let conn = Connection::new(Arc::new(
        KafkaTransport::connect(broker.url(), ConnectOptions::new()).await.expect("connect"),
    ));
    Some((conn, format!("{}:{}", broker.host(), broker.port()), py))
}

async fn peer(py: &std::path::Path, bootstrap: &str, mode: &str, topic: &str, n: usize) -> Peer {
    let args = [script(), bootstrap.to_owned(), mode.to_owned(), topic.to_owned(), n.to_string()];
    Peer::start(py, &args, &[]).await
}

#[tokio::test]
async fn kafka_python_reads_what_busbar_writes() {
    let Some((conn, bootstrap, py)) = setup("kafka_python_reads_what_busbar_writes").await else {
        return;
    };
    let topic = Topic::new(format!("interop/{}/out", unique_name())).expect("topic");
    for i in 0..N {
        let m = Message::new(topic.clone(), format!("m{i}"))
            .with_key(format!("k{}", i % 3))
            .with_header("trace", format!("t{i}"));
        conn.publish(m).await.expect("publish confirmed");
    }
    let name = busbar_core::topic::kafka_topic(&topic).expect("name");
    let mut reader = peer(&py, &bootstrap, "consume", &name, N).await;
    let mut per_key: std::collections::HashMap<String, Vec<usize>> = Default::default();
    for _ in 0..N {
        let r = reader.next().await;
        let value = r["value"].as_str().expect("value");
        let i: usize = value.trim_start_matches('m').parse().expect("numbered");
        assert_eq!(r["key"], format!("k{}", i % 3), "{r}");
        assert_eq!(r["headers"], serde_json::json!([["trace", format!("t{i}")]]), "{r}");
        per_key.entry(format!("k{}", i % 3)).or_default().push(i);
    }
    // Every record once, and each key's records in the order they were published.
    let mut all: Vec<usize> = per_key.values().flatten().copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..N).collect::<Vec<_>>());
    for (key, seen) in per_key {
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{key} out of order: {seen:?}");
    }
    conn.close().await.expect("close");
}

#[tokio::test]
async fn busbar_reads_what_kafka_python_writes() {
    let Some((conn, bootstrap, py)) = setup("busbar_reads_what_kafka_python_writes").await else {
        return;
    };
    let topic = format!("interop/{}/in", unique_name());
    let filter = TopicFilter::new(&topic).expect("filter");
    let mut sub = conn.subscribe_with(SubscribeOptions::from(filter)).await.expect("subscribe");
    let name = topic.replace('/', ".");
    let mut writer = peer(&py, &bootstrap, "produce", &name, N).await;
    writer.go().await;
    assert_eq!(writer.next().await, "SENT");
    for i in 0..N {
        let m = tokio::time::timeout(Duration::from_secs(10), sub.recv())
            .await
            .expect("in time")
            .expect("a record");
        assert_eq!(m.topic.as_str(), topic);
        assert_eq!(m.key.as_deref(), Some(format!("k{i}").as_bytes()));
        assert_eq!(m.headers.get("trace"), Some(format!("t{i}").as_str()));
        assert_eq!(m.headers.get("content-type"), Some("application/json"));
        let body: serde_json::Value =
            serde_json::from_slice(&m.payload.to_bytes().expect("bytes")).expect("json");
        assert_eq!(body, serde_json::json!({"n": i}));
    }
    conn.close().await.expect("close");
}

#[tokio::test]
async fn kafka_python_answers_a_busbar_request() {
    let Some((conn, bootstrap, py)) = setup("kafka_python_answers_a_busbar_request").await else {
        return;
    };
    let topic = Topic::new(format!("interop/{}/svc", unique_name())).expect("topic");
    // The service's topic exists before its server reads it.
    conn.publish(Message::new(topic.clone(), "warm-up")).await.expect("create the topic");
    let name = busbar_core::topic::kafka_topic(&topic).expect("name");
    let mut server = peer(&py, &bootstrap, "serve", &name, 0).await;
    let reply = conn
        .request(Message::new(topic.clone(), "ping"), Duration::from_secs(20))
        .await
        .expect("a reply from kafka-python");
    assert_eq!(reply.payload.to_bytes().expect("bytes").as_ref(), b"echo:ping");
    assert_eq!(server.next().await, "ANSWERED");
    conn.close().await.expect("close");
}
