//! MQTT against brokers this test starts, stops and configures itself.

use std::time::Duration;

use busbar_core::transport::ConnectOptions;
use busbar_core::{Connection, ConnectionEvent, Error, Message, Topic};
use busbar_mqtt::MqttTransport;
use busbar_testkit::{BrokerProcess, MosquittoConfig, skip_if_missing};

async fn connect(url: &str) -> Connection {
    Connection::new(std::sync::Arc::new(
        MqttTransport::connect(url, ConnectOptions::new()).await.expect("connect"),
    ))
}

async fn mosquitto(test: &str, config: MosquittoConfig) -> Option<BrokerProcess> {
    skip_if_missing(test, BrokerProcess::mosquitto(config).await)
}

async fn next_event(
    events: &mut busbar_core::ConnectionEvents,
    want: fn(&ConnectionEvent) -> bool,
) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(ev) = events.next().await {
            if want(&ev) {
                return;
            }
        }
        panic!("connection events ended");
    })
    .await
    .expect("the event came in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_resume_after_the_broker_restarts() {
    let Some(mut broker) =
        mosquitto("subscribers_resume_after_the_broker_restarts", MosquittoConfig::new()).await
    else {
        return;
    };
    let url = broker.url();
    let sub_conn = connect(&url).await;
    let pub_conn = connect(&url).await;
    let mut events = sub_conn.events();
    let mut sub = sub_conn.subscribe("plant/#").await.expect("subscribe");
    pub_conn.publish_bytes("plant/a", &b"before"[..]).await.expect("publish");
    let m = tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(m.payload.to_bytes().expect("bytes").as_ref(), b"before");

    broker.stop().await.expect("stop");
    next_event(&mut events, |e| matches!(e, ConnectionEvent::Disconnected { .. })).await;
    // A call during the outage ends within its deadline with a typed error, never hangs.
    let err = pub_conn
        .request(
            Message::new(Topic::new("plant/svc").expect("topic"), &b"?"[..]),
            Duration::from_millis(300),
        )
        .await
        .expect_err("no broker");
    assert!(matches!(err, Error::Timeout { .. }), "{err}");

    broker.restart().await.expect("restart");
    next_event(&mut events, |e| matches!(e, ConnectionEvent::Reconnected)).await;
    // The subscription was restored: messages flow again, to the same stream.
    let mut resumed = false;
    for _ in 0..50 {
        pub_conn.publish_bytes("plant/a", &b"after"[..]).await.expect("publish");
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), sub.recv()).await {
            assert_eq!(m.payload.to_bytes().expect("bytes").as_ref(), b"after");
            resumed = true;
            break;
        }
    }
    assert!(resumed, "the subscription did not resume after the broker restarted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_a_clear_error() {
    let dir =
        std::env::temp_dir().join(format!("busbar-mqtt-auth-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let passwords = dir.join("passwords");
    let made = std::process::Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&passwords)
        .args(["pump", "s3cret"])
        .status();
    let Some(status) = skip_if_missing(
        "wrong_credentials_are_a_clear_error",
        made.map_err(|_| busbar_testkit::TestkitError::BinaryMissing { name: "mosquitto_passwd" }),
    ) else {
        return;
    };
    assert!(status.success(), "mosquitto_passwd failed");
    let config = MosquittoConfig::new()
        .line("allow_anonymous false")
        .line(format!("password_file {}", passwords.display()));
    let Some(broker) = mosquitto("wrong_credentials_are_a_clear_error", config).await else {
        return;
    };
    let port = broker.port();
    let good = MqttTransport::connect(
        &format!("mqtt://pump:s3cret@127.0.0.1:{port}"),
        ConnectOptions::new(),
    )
    .await;
    assert!(good.is_ok(), "right credentials refused: {:?}", good.err());
    let bad = MqttTransport::connect(
        &format!("mqtt://pump:wrong@127.0.0.1:{port}"),
        ConnectOptions::new(),
    )
    .await
    .err()
    .expect("wrong password accepted");
    let text = bad.to_string();
    assert!(text.contains("user name or password") || text.contains("not authorized"), "{text}");
    assert!(!text.contains("wrong"), "the password leaked into the error: {text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_over_the_broker_maximum_are_refused_and_large_ones_arrive() {
    let config = MosquittoConfig::new().line("max_packet_size 100000");
    let Some(broker) = mosquitto("payloads_over_the_broker_maximum_are_refused", config).await
    else {
        return;
    };
    let conn = connect(&broker.url()).await;
    let mut sub = conn.subscribe("big").await.expect("subscribe");
    // Larger than rumqttc's own default incoming limit (10 KiB), within the broker's.
    let large = vec![7u8; 64 * 1024];
    conn.publish_bytes("big", large.clone()).await.expect("64 KiB publish");
    let m = tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(m.payload.to_bytes().expect("bytes").len(), large.len());
    let err = conn.publish_bytes("big", vec![0u8; 200_000]).await.expect_err("over the limit");
    assert!(matches!(err, Error::PayloadTooLarge { size: 200_000, .. }), "{err}");
    // The connection is still good.
    conn.publish_bytes("big", &b"small"[..]).await.expect("small publish");
    let m = tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(m.payload.to_bytes().expect("bytes").as_ref(), b"small");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_and_a_no_local_subscription_to_one_filter_conflict_clearly() {
    let Some(broker) = mosquitto("no_local_conflict", MosquittoConfig::new()).await else { return };
    let conn = connect(&broker.url()).await;
    let filter = busbar_core::TopicFilter::new("t/#").expect("filter");
    let _plain = conn
        .subscribe_with(busbar_core::SubscribeOptions::new(filter.clone()))
        .await
        .expect("plain");
    let err = conn
        .subscribe_with(busbar_core::SubscribeOptions::new(filter).no_local(true))
        .await
        .expect_err("conflicting options on one filter");
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
}
