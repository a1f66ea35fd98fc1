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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_session_gets_what_was_published_while_it_was_away() {
    let Some(broker) = mosquitto("persistent_session", MosquittoConfig::new()).await else {
        return;
    };
    let url = format!("{}?session_expiry=60", broker.url());
    let id = format!("persistent-{}", uuid::Uuid::new_v4().simple());
    let away = MqttTransport::connect(&url, ConnectOptions::new().client_id(id.clone()))
        .await
        .expect("connect");
    let away = Connection::new(std::sync::Arc::new(away));
    let sub = away
        .subscribe_with(busbar_core::SubscribeOptions::new(
            busbar_core::TopicFilter::new("plant/#").expect("filter"),
        ))
        .await
        .expect("subscribe");
    // Closing ends the connection but not the session: the broker keeps the subscription.
    // (The local subscription is dropped only after the close, so it sends no UNSUBSCRIBE.)
    away.close().await.expect("close");
    drop(sub);
    let publisher = connect(&broker.url()).await;
    for i in 0..5u8 {
        publisher
            .publish(
                Message::new(Topic::new("plant/log").expect("topic"), vec![i])
                    .with_qos(busbar_core::QoS::AtLeastOnce),
            )
            .await
            .expect("publish");
    }
    // Make sure the broker has taken them all before the client comes back.
    let mut probe = publisher.subscribe("plant/probe").await.expect("probe");
    publisher.publish_bytes("plant/probe", &b"."[..]).await.expect("probe publish");
    tokio::time::timeout(Duration::from_secs(5), probe.recv()).await.expect("probe in time");

    let back =
        MqttTransport::connect(&url, ConnectOptions::new().client_id(id)).await.expect("reconnect");
    let back = Connection::new(std::sync::Arc::new(back));
    // The broker hands the queued messages over right after the connection is accepted; a
    // probe round trip on this connection proves they have arrived before we subscribe, so
    // they must have been kept for the subscription to come.
    let mut ready = back.subscribe("handover/probe").await.expect("probe subscribe");
    publisher.publish_bytes("handover/probe", &b"."[..]).await.expect("probe publish");
    tokio::time::timeout(Duration::from_secs(5), ready.recv()).await.expect("probe in time");
    let mut sub = back.subscribe("plant/#").await.expect("subscribe again");
    let mut got = Vec::new();
    while got.len() < 5 {
        let m = tokio::time::timeout(Duration::from_secs(5), sub.recv())
            .await
            .expect("the queued messages arrive")
            .expect("open");
        if m.topic.as_str() == "plant/log" {
            got.push(m.payload.to_bytes().expect("bytes")[0]);
        }
    }
    assert_eq!(got, [0, 1, 2, 3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_during_an_outage_wait_or_drop_as_declared() {
    let Some(mut broker) = mosquitto("publish_overflow", MosquittoConfig::new()).await else {
        return;
    };
    let blocking = connect(&broker.url()).await;
    let dropping =
        connect(&format!("{}?publish_queue=10&publish_overflow=drop-newest", broker.url())).await;
    let mut events = (blocking.events(), dropping.events());
    broker.stop().await.expect("stop");
    next_event(&mut events.0, |e| matches!(e, ConnectionEvent::Disconnected { .. })).await;
    next_event(&mut events.1, |e| matches!(e, ConnectionEvent::Disconnected { .. })).await;

    const N: u64 = 3_000;
    // A drop policy never makes the publisher wait: every call returns, the excess is counted.
    tokio::time::timeout(Duration::from_secs(10), async {
        for _ in 0..N {
            dropping.publish_bytes("telemetry/x", &b"reading"[..]).await.expect("publish");
        }
    })
    .await
    .expect("drop-newest publishes must not wait for the broker");
    let dropped = dropping.stats().dropped;
    // What is not dropped waits in rumqttc's channel (1,024) and our queue (10).
    assert!(dropped >= N - 1_024 - 10 - 2, "only {dropped} of {N} counted as dropped");

    // Block (the default) pushes back: once the channel is full, publish waits.
    let waited = tokio::time::timeout(Duration::from_secs(2), async {
        for _ in 0..N {
            blocking.publish_bytes("telemetry/x", &b"reading"[..]).await.expect("publish");
        }
    })
    .await;
    assert!(waited.is_err(), "Block publishes never waited while the broker was down");
    assert_eq!(blocking.stats().dropped, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_persistent_session_nothing_published_during_a_broker_outage_is_lost() {
    let store =
        std::env::temp_dir().join(format!("busbar-persist-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&store).expect("store dir");
    // Mosquitto started as root drops to its own user, which must be able to write here.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    }
    let config = MosquittoConfig::new()
        .line("persistence true")
        .line(format!("persistence_location {}/", store.display()))
        .line("autosave_interval 1");
    let Some(mut broker) = mosquitto("persistent_outage", config).await else { return };
    let url = broker.url();
    let id = format!("durable-{}", uuid::Uuid::new_v4().simple());
    let sub_conn = Connection::new(std::sync::Arc::new(
        MqttTransport::connect(
            &format!("{url}?session_expiry=300"),
            ConnectOptions::new().client_id(id),
        )
        .await
        .expect("subscriber"),
    ));
    let mut sub = sub_conn.subscribe("pipe/#").await.expect("subscribe");
    let publisher = connect(&url).await;
    let mut pub_events = publisher.events();
    let send =
        |n: u32| Message::new(Topic::new("pipe/x").expect("topic"), n.to_be_bytes().to_vec());
    let mut got = std::collections::BTreeSet::new();
    for n in 0..20 {
        publisher.publish(send(n)).await.expect("publish");
    }
    while got.len() < 20 {
        let m = tokio::time::timeout(Duration::from_secs(5), sub.recv())
            .await
            .expect("in time")
            .expect("open");
        got.insert(u32::from_be_bytes(
            m.payload.to_bytes().expect("bytes")[..4].try_into().expect("4 bytes"),
        ));
    }
    // The broker saves its state every second: wait until it has saved the session.
    let db = store.join("mosquitto.db");
    let saved_after = std::time::SystemTime::now();
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if std::fs::metadata(&db).and_then(|m| m.modified()).is_ok_and(|t| t > saved_after) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the broker saved its state");

    broker.stop().await.expect("stop");
    next_event(&mut pub_events, |e| matches!(e, ConnectionEvent::Disconnected { .. })).await;
    for n in 20..60 {
        publisher.publish(send(n)).await.expect("publish during the outage");
    }
    broker.restart().await.expect("restart");
    while got.len() < 60 {
        let m = tokio::time::timeout(Duration::from_secs(10), sub.recv())
            .await
            .unwrap_or_else(|_| {
                panic!("lost {:?}", (0..60).filter(|n| !got.contains(n)).collect::<Vec<_>>())
            })
            .expect("open");
        got.insert(u32::from_be_bytes(
            m.payload.to_bytes().expect("bytes")[..4].try_into().expect("4 bytes"),
        ));
    }
    let _ = std::fs::remove_dir_all(&store);
}
