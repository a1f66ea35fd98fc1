//! MQTT against brokers this test starts, stops and configures itself.

use std::time::Duration;

use busbar_core::error::{PublishErrorKind, RequestErrorKind, SubscribeErrorKind};
use busbar_core::transport::ConnectOptions;
use busbar_core::{Connection, ConnectionEvent, Message, QoS, Topic};
use busbar_mqtt::MqttTransport;
use busbar_testkit::next_event;
use busbar_testkit::{BrokerProcess, MosquittoConfig, skip_if_missing};

async fn connect(url: &str) -> Connection {
    Connection::new(std::sync::Arc::new(
        MqttTransport::connect(url, ConnectOptions::new()).await.expect("connect"),
    ))
}

async fn mosquitto(test: &str, config: MosquittoConfig) -> Option<BrokerProcess> {
    skip_if_missing(test, BrokerProcess::mosquitto(config).await)
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
    // Many subscriptions, so that restoring them takes the broker a while: the last one is
    // the one a too-early `Reconnected` would report before it is back.
    let mut zones = Vec::new();
    for i in 0..300 {
        zones.push(sub_conn.subscribe(&format!("zone/{i}")).await.expect("subscribe"));
    }
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
    assert_eq!(err.kind(), RequestErrorKind::TimedOut, "{err}");

    let mut pub_events = pub_conn.events();
    broker.restart().await.expect("restart");
    // `Reconnected` promises a restored subscription (the broker has acknowledged it): the
    // first message published once both connections are back must arrive. At least once: a
    // copy of "before" whose PUBACK the stop cut off is sent again; nothing else may come.
    next_event(&mut events, |e| matches!(e, ConnectionEvent::Reconnected { .. })).await;
    next_event(&mut pub_events, |e| matches!(e, ConnectionEvent::Reconnected { .. })).await;
    pub_conn.publish_bytes("zone/299", &b"last"[..]).await.expect("publish");
    pub_conn.publish_bytes("plant/a", &b"after"[..]).await.expect("publish");
    let last = zones.last_mut().expect("zones");
    let m = tokio::time::timeout(Duration::from_secs(10), last.recv())
        .await
        .expect("the last subscription restored when Reconnected says so")
        .expect("open");
    assert_eq!(m.payload.to_bytes().expect("bytes").as_ref(), b"last");
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), sub.recv())
            .await
            .expect("the first message after the restart arrives")
            .expect("open");
        match m.payload.to_bytes().expect("bytes").as_ref() {
            b"after" => break,
            b"before" => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_a_clear_error() {
    let config = MosquittoConfig::new().user("pump", "s3cret");
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
}

/// MQTT 5 learns the broker's limit from its CONNACK; over 3.1.1 the URL declares it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_over_the_broker_maximum_are_refused_and_large_ones_arrive() {
    let config = MosquittoConfig::new().line("max_packet_size 100000");
    let Some(broker) = mosquitto("payloads_over_the_broker_maximum_are_refused", config).await
    else {
        return;
    };
    for query in ["", "?version=3.1.1&max_packet=100000"] {
        let conn = connect(&format!("{}{query}", broker.url())).await;
        let mut sub = conn.subscribe("big").await.expect("subscribe");
        // Larger than rumqttc's own default incoming limit (10 KiB), within the broker's.
        let large = vec![7u8; 64 * 1024];
        conn.publish_bytes("big", large.clone()).await.expect("64 KiB publish");
        let m = tokio::time::timeout(Duration::from_secs(5), sub.recv())
            .await
            .expect("in time")
            .expect("open");
        assert_eq!(m.payload.to_bytes().expect("bytes").len(), large.len(), "{query}");
        let err = conn.publish_bytes("big", vec![0u8; 200_000]).await.expect_err("over the limit");
        assert_eq!(err.kind(), PublishErrorKind::TooLarge, "{query}: {err}");
        assert!(err.to_string().contains("200000 bytes"), "{query}: {err}");
        // The connection is still good.
        conn.publish_bytes("big", &b"small"[..]).await.expect("small publish");
        let m = tokio::time::timeout(Duration::from_secs(5), sub.recv())
            .await
            .expect("in time")
            .expect("open");
        assert_eq!(m.payload.to_bytes().expect("bytes").as_ref(), b"small", "{query}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_and_a_no_local_subscription_to_one_filter_conflict_clearly() {
    let Some(broker) = mosquitto("no_local_conflict", MosquittoConfig::new()).await else { return };
    let conn = connect(&broker.url()).await;
    let filter = busbar_core::TopicFilter::new("t/#").expect("filter");
    let _plain = conn
        .subscribe_with(busbar_core::SubscribeOptions::from(filter.clone()))
        .await
        .expect("plain");
    let err = conn
        .subscribe_with(busbar_core::SubscribeOptions::from(filter).no_local(true))
        .await
        .expect_err("conflicting options on one filter");
    assert_eq!(err.kind(), SubscribeErrorKind::Unsupported, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_session_gets_what_was_published_while_it_was_away() {
    persistent_session_hand_over("5").await;
}

/// MQTT 3.1.1 tags no message with a subscription: what the broker hands over right after
/// the CONNACK must still be kept for the subscription to come (it was once dropped as
/// "for no local subscription", Mosquitto's whole in-flight window of it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_session_on_mqtt_311_gets_what_was_published_while_it_was_away() {
    persistent_session_hand_over("3.1.1").await;
}

async fn persistent_session_hand_over(version: &str) {
    let Some(broker) = mosquitto("persistent_session", MosquittoConfig::new()).await else {
        return;
    };
    let url = format!("{}?session_expiry=60&version={version}", broker.url());
    let id = format!("persistent-{}", uuid::Uuid::new_v4().simple());
    let away = MqttTransport::connect(&url, ConnectOptions::new().client_id(id.clone()))
        .await
        .expect("connect");
    let away = Connection::new(std::sync::Arc::new(away));
    let sub = away
        .subscribe_with(busbar_core::SubscribeOptions::from(
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

/// A Mosquitto that saves its state every second, with a subscriber on `pipe/#` whose session
/// outlives its connection, both up and the subscription acknowledged.
struct DurableSetup {
    broker: BrokerProcess,
    store: std::path::PathBuf,
    /// Kept open: the subscriber's connection.
    _sub_conn: Connection,
    sub: busbar_core::Subscription,
    /// Sequence numbers received so far.
    got: std::collections::BTreeSet<u32>,
}

impl DurableSetup {
    /// A broker with persistence and an MQTT 5 subscriber with a session.
    async fn start(test: &str) -> Option<DurableSetup> {
        DurableSetup::start_with(test, "5").await
    }

    /// A broker with persistence and a subscriber with a session, speaking `version`.
    async fn start_with(test: &str, version: &str) -> Option<DurableSetup> {
        let store =
            std::env::temp_dir().join(format!("busbar-persist-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&store).expect("store dir");
        // Mosquitto started as root drops to its own user, which must be able to write here.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o777))
                .expect("chmod");
        }
        let config = MosquittoConfig::new()
            .line("persistence true")
            .line(format!("persistence_location {}/", store.display()))
            .line("autosave_interval 1");
        let broker = mosquitto(test, config).await?;
        let id = format!("durable-{}", uuid::Uuid::new_v4().simple());
        let sub_conn = Connection::new(std::sync::Arc::new(
            MqttTransport::connect(
                &format!("{}?session_expiry=300&version={version}", broker.url()),
                ConnectOptions::new().client_id(id),
            )
            .await
            .expect("subscriber"),
        ));
        let sub = sub_conn.subscribe("pipe/#").await.expect("subscribe");
        Some(DurableSetup { broker, store, _sub_conn: sub_conn, sub, got: Default::default() })
    }

    /// Receives until every number below `n` has arrived (duplicates allowed: QoS 1).
    async fn receive_up_to(&mut self, n: u32) {
        while self.got.len() < n as usize {
            let m = tokio::time::timeout(Duration::from_secs(10), self.sub.recv())
                .await
                .unwrap_or_else(|_| {
                    let lost: Vec<u32> = (0..n).filter(|k| !self.got.contains(k)).collect();
                    panic!("lost {lost:?}")
                })
                .expect("open");
            self.got.insert(u32::from_be_bytes(
                m.payload.to_bytes().expect("bytes")[..4].try_into().expect("4 bytes"),
            ));
        }
    }

    /// Waits until the broker has saved its state (the subscriber's session included).
    async fn wait_saved(&self) {
        let db = self.store.join("mosquitto.db");
        let saved_after = std::time::SystemTime::now();
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if std::fs::metadata(&db).and_then(|m| m.modified()).is_ok_and(|t| t > saved_after)
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .expect("the broker saved its state");
    }
}

impl Drop for DurableSetup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

fn numbered(n: u32) -> Message {
    Message::new(Topic::new("pipe/x").expect("topic"), n.to_be_bytes().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_persistent_session_nothing_published_during_a_broker_outage_is_lost() {
    // MQTT 5 (session expiry) and 3.1.1 (clean session off): the same promise.
    for version in ["5", "3.1.1"] {
        let test = format!("persistent_outage_v{}", version.replace('.', ""));
        let Some(mut setup) = DurableSetup::start_with(&test, version).await else { return };
        let publisher = connect(&setup.broker.url()).await;
        let mut pub_events = publisher.events();
        for n in 0..20 {
            publisher.publish(numbered(n)).await.expect("publish");
        }
        setup.receive_up_to(20).await;
        setup.wait_saved().await;

        setup.broker.stop().await.expect("stop");
        next_event(&mut pub_events, |e| matches!(e, ConnectionEvent::Disconnected { .. })).await;
        // A QoS 1 publish resolves when the broker has it: these wait through the outage.
        let during: Vec<_> = (20..60).map(|n| publisher.publish(numbered(n))).collect();
        setup.broker.restart().await.expect("restart");
        for outcome in futures_util::future::join_all(during).await {
            outcome.expect("confirmed once the broker is back");
        }
        setup.receive_up_to(60).await;
    }
}

/// A call in flight when the broker dies ends with a typed error by its deadline (not after
/// a connect timeout or never), and calls work again once the broker is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_in_flight_when_the_broker_dies_ends_by_its_deadline() {
    let Some(mut broker) = mosquitto("call_in_flight", MosquittoConfig::new()).await else {
        return;
    };
    let server = connect(&broker.url()).await;
    let mut server_events = server.events();
    let client = connect(&broker.url()).await;
    let mut client_events = client.events();
    let mut requests = server.subscribe("svc/echo").await.expect("server subscribes");
    // The server holds the first request back, so that it is in flight at the kill, and
    // answers the later ones.
    let (held_tx, held_rx) = tokio::sync::oneshot::channel();
    let answering = {
        let server = server.clone();
        tokio::spawn(async move {
            let mut held_tx = Some(held_tx);
            while let Some(request) = requests.recv().await {
                if let Some(tx) = held_tx.take() {
                    let _ = tx.send(());
                    continue;
                }
                if let Some(reply) = Message::reply(&request, "pong") {
                    let _ = server.publish(reply).await;
                }
            }
        })
    };
    let deadline = Duration::from_secs(2);
    let call = {
        let client = client.clone();
        tokio::spawn(async move {
            let request = Message::new(Topic::new("svc/echo").expect("topic"), "ping");
            client.request(request, deadline).await
        })
    };
    held_rx.await.expect("the request reached the server");
    broker.stop().await.expect("the broker is killed");
    // Bounded well past the deadline, so that a call that never ends fails the test.
    let outcome =
        tokio::time::timeout(deadline * 5, call).await.expect("the call ended").expect("call task");
    let e = outcome.expect_err("no reply can come from a dead broker");
    assert!(matches!(e.kind(), RequestErrorKind::TimedOut | RequestErrorKind::NotConnected), "{e}");
    broker.restart().await.expect("the broker starts again");
    next_event(&mut server_events, |e| matches!(e, ConnectionEvent::Reconnected { .. })).await;
    next_event(&mut client_events, |e| matches!(e, ConnectionEvent::Reconnected { .. })).await;
    let request = Message::new(Topic::new("svc/echo").expect("topic"), "ping");
    let reply = client.request(request, Duration::from_secs(10)).await.expect("answered again");
    assert_eq!(reply.payload.to_bytes().expect("bytes").as_ref(), b"pong");
    answering.abort();
}

/// A publisher with a clean session, whose QoS 1 messages were accepted but not yet
/// acknowledged when the broker died: it sends them again on its new session instead of
/// dropping them with the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_publishes_survive_a_broker_crash_on_a_clean_session() {
    for version in ["5", "3.1.1"] {
        let test = "unacknowledged_publishes_survive_a_broker_crash";
        let Some(mut setup) = DurableSetup::start(test).await else { return };
        let publisher = connect(&format!("{}?version={version}", setup.broker.url())).await;
        let mut pub_events = publisher.events();
        for n in 0..20 {
            publisher
                .publish(numbered(n).with_qos(busbar_core::QoS::AtLeastOnce))
                .await
                .expect("publish");
        }
        setup.receive_up_to(20).await;
        setup.wait_saved().await;

        // Freeze the broker: the next publishes are written but never acknowledged, and the
        // rest wait in the client, when the broker dies.
        let pid = setup.broker.pid().expect("broker pid");
        let frozen = std::process::Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()
            .expect("kill -STOP");
        assert!(frozen.success());
        let unconfirmed: Vec<_> = (20..60)
            .map(|n| publisher.publish(numbered(n).with_qos(busbar_core::QoS::AtLeastOnce)))
            .collect();
        setup.broker.stop().await.expect("stop");
        next_event(&mut pub_events, |e| matches!(e, ConnectionEvent::Disconnected { .. })).await;
        setup.broker.restart().await.expect("restart");
        // Each is confirmed by the broker that finally took it, none by the one that died.
        for outcome in futures_util::future::join_all(unconfirmed).await {
            outcome.expect("confirmed by the restarted broker");
        }
        next_event(&mut pub_events, |e| matches!(e, ConnectionEvent::Reconnected { .. })).await;
        setup.receive_up_to(60).await;
    }
}

/// QoS 0 promises at most once: a broker killed mid-stream loses what it held and what
/// reached it while the subscriber was away. The test counts those losses and checks what
/// QoS 0 does promise: no duplicates, publisher order kept, and once both sides are back,
/// everything arriving again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_across_a_broker_kill_loses_only_the_outage_and_resumes_in_order() {
    let Some(mut broker) = mosquitto("qos0_across_a_broker_kill", MosquittoConfig::new()).await
    else {
        return;
    };
    let sub_conn = connect(&broker.url()).await;
    let mut sub_events = sub_conn.events();
    let mut sub = sub_conn.subscribe("flow/#").await.expect("subscribe");
    let publisher = connect(&broker.url()).await;
    let mut pub_events = publisher.events();
    // Sent before the kill, during the outage, and after both sides are back.
    const KILLED_AT: u32 = 1_000;
    const BACK_AT: u32 = 1_500;
    const TOTAL: u32 = 3_000;
    // Explicitly QoS 0: the default, QoS 1, would rightly re-send the last unacknowledged
    // message after the restart, a duplicate this test must not see.
    let numbered = |n: u32| {
        Message::new(Topic::new("flow/x").expect("topic"), n.to_be_bytes().to_vec())
            .with_qos(QoS::AtMostOnce)
    };
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    for n in 0..KILLED_AT {
        tick.tick().await;
        publisher.publish(numbered(n)).await.expect("publish");
    }
    broker.stop().await.expect("stop");
    next_event(&mut pub_events, |e| matches!(e, ConnectionEvent::Disconnected { .. })).await;
    for n in KILLED_AT..BACK_AT {
        publisher.publish(numbered(n)).await.expect("publish during the outage");
    }
    broker.restart().await.expect("restart");
    next_event(&mut sub_events, |e| matches!(e, ConnectionEvent::Reconnected { .. })).await;
    next_event(&mut pub_events, |e| matches!(e, ConnectionEvent::Reconnected { .. })).await;

    let mut received: Vec<u32> = Vec::new();
    let mut take = |m: Message| {
        if m.topic.as_str() == "flow/x" {
            let bytes = m.payload.to_bytes().expect("bytes");
            received.push(u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes")));
        }
        m.topic.as_str().to_owned()
    };
    // The subscriber is back once a probe gets through.
    'probing: for _ in 0..100 {
        publisher.publish_bytes("flow/probe", &b""[..]).await.expect("probe");
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(100), sub.recv()).await {
            if take(m) == "flow/probe" {
                break 'probing;
            }
        }
    }
    for n in BACK_AT..TOTAL {
        tick.tick().await;
        publisher.publish(numbered(n)).await.expect("publish");
    }
    publisher.publish_bytes("flow/end", &b""[..]).await.expect("end");
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), sub.recv())
            .await
            .expect("the end marker arrives")
            .expect("open");
        if take(m) == "flow/end" {
            break;
        }
    }
    let disorder: Vec<(usize, u32, u32)> = received
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[0] >= w[1])
        .map(|(i, w)| (i, w[0], w[1]))
        .collect();
    assert!(
        disorder.is_empty(),
        "duplicated or out of order at (index, before, after): {disorder:?}"
    );
    let after: Vec<u32> = received.iter().copied().filter(|n| *n >= BACK_AT).collect();
    assert_eq!(after, (BACK_AT..TOTAL).collect::<Vec<_>>(), "lost after both sides were back");
    let lost = BACK_AT as usize - (received.len() - after.len());
    eprintln!("QoS 0 across a broker kill: {lost} of the {BACK_AT} sent before the restart lost");
    // The outage's messages, plus the few the broker held when it died (paced at 1 ms, the
    // stream before the kill is nearly all delivered).
    let bound = (BACK_AT - KILLED_AT) as usize + 50;
    assert!(lost <= bound, "{lost} lost: more than the outage ({bound})");
}

/// A topic of `levels` levels.
fn deep_topic(levels: usize) -> Topic {
    Topic::new(vec!["r"; levels].join("/")).expect("a deep topic")
}

/// Mosquitto drops a client that publishes to a topic of more than 200 levels. Such a
/// publish is refused before sending by default; let through (a broker with a lower limit
/// than busbar knows of), it is sent again a bounded number of times, then given up and
/// reported, and what was published after it goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_the_broker_drops_the_connection_for_is_not_sent_forever() {
    let Some(broker) = mosquitto("poison_publish", MosquittoConfig::new()).await else {
        return;
    };
    let deep = deep_topic(300);
    for version in ["5", "3.1.1"] {
        let plain = connect(&format!("{}?version={version}", broker.url())).await;
        let err = plain
            .publish(Message::new(deep.clone(), &b"poison"[..]).with_qos(QoS::AtLeastOnce))
            .await
            .expect_err("a topic deeper than the broker takes");
        assert_eq!(err.kind(), PublishErrorKind::InvalidTopic, "{version}: {err}");
        assert!(err.to_string().contains("300 levels"), "{version}: {err}");

        let listener = connect(&broker.url()).await;
        let mut after = listener.subscribe("after/#").await.expect("subscribe");
        let unchecked =
            connect(&format!("{}?version={version}&max_topic_levels=1000", broker.url())).await;
        // Both go out at once; the poison resolves only when it is given up.
        let poison = unchecked
            .publish(Message::new(deep.clone(), &b"poison"[..]).with_qos(QoS::AtLeastOnce));
        let next = unchecked.publish(
            Message::new(Topic::new("after/1").expect("topic"), &b"next"[..])
                .with_qos(QoS::AtLeastOnce),
        );
        let (poison, next) =
            tokio::time::timeout(Duration::from_secs(15), async { tokio::join!(poison, next) })
                .await
                .unwrap_or_else(|_| panic!("{version}: the publishes did not resolve"));
        let err = poison.expect_err("the poison is not confirmed");
        assert_eq!(err.kind(), PublishErrorKind::Refused, "{version}: {err}");
        assert!(err.to_string().contains("given up"), "{version}: {err}");
        next.expect("the publish behind the poison is confirmed");
        let m = tokio::time::timeout(Duration::from_secs(15), after.recv())
            .await
            .unwrap_or_else(|_| panic!("{version}: the publish behind the poison never arrived"))
            .expect("open");
        assert_eq!(m.payload.to_bytes().expect("bytes").as_ref(), b"next", "{version}");
        let closed = unchecked.close().await;
        assert_eq!(unchecked.stats().dropped, 1, "{version}: the poison is counted: {closed:?}");
        let err = closed.expect_err("close reports the publish given up");
        assert_eq!(err.kind(), busbar_core::error::CloseErrorKind::Unconfirmed, "{version}");
        assert!(err.to_string().contains("given up"), "{version}: {err}");
    }
}

/// A request whose reply topic the broker would drop the connection for is refused by the
/// server before any work; the server goes on answering everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_reply_topic_does_not_stall_a_server() {
    use busbar_core::patterns::{RpcClient, RpcServer};
    let Some(broker) = mosquitto("hostile_reply_topic", MosquittoConfig::new()).await else {
        return;
    };
    let server_conn = connect(&broker.url()).await;
    let _server = RpcServer::spawn(&server_conn, "svc/echo", |x: u32| async move {
        Ok::<_, busbar_core::RpcError>(x)
    })
    .await
    .expect("server");
    let attacker = connect(&format!("{}?max_topic_levels=1000", broker.url())).await;
    for _ in 0..3 {
        let mut hostile = Message::new(Topic::new("svc/echo").expect("topic"), &b"1"[..])
            .with_qos(QoS::AtLeastOnce);
        hostile.reply_to = Some(deep_topic(300));
        hostile.correlation_id = Some(bytes::Bytes::from_static(b"poison"));
        attacker.publish(hostile).await.expect("hostile request");
    }
    let client = RpcClient::<u32, u32>::new(&connect(&broker.url()).await, "svc/echo")
        .expect("client")
        .timeout(Duration::from_secs(5));
    for i in 0..3 {
        assert_eq!(client.call(i).await.expect("the server still answers"), i);
    }
    assert_eq!(server_conn.stats().dropped, 0, "no reply was given up: none was sent");
}

/// A broker that refuses a QoS 1 publish in its PUBACK (MQTT 5: "not authorized" from an
/// ACL) once saw it counted as delivered. It is counted as dropped, and `close` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_refused_in_its_acknowledgement_is_reported() {
    let acl = std::env::temp_dir().join(format!("busbar-acl-{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&acl, "topic readwrite allowed/#\n").expect("ACL file");
    let config = MosquittoConfig::new().line(format!("acl_file {}", acl.display()));
    let Some(broker) = mosquitto("refused_in_puback", config).await else {
        let _ = std::fs::remove_file(&acl);
        return;
    };
    let conn = connect(&broker.url()).await;
    let mut allowed = conn.subscribe("allowed/#").await.expect("subscribe");
    let err = conn
        .publish(
            Message::new(Topic::new("forbidden/x").expect("topic"), &b"no"[..])
                .with_qos(QoS::AtLeastOnce),
        )
        .await
        .expect_err("the broker's refusal reaches the publisher");
    assert_eq!(err.kind(), PublishErrorKind::Refused, "{err}");
    assert!(err.to_string().contains("NotAuthorized"), "{err}");
    // At QoS 2 the refusal comes in the PUBREC.
    let err = conn
        .publish(
            Message::new(Topic::new("forbidden/y").expect("topic"), &b"no"[..])
                .with_qos(QoS::ExactlyOnce),
        )
        .await
        .expect_err("refused at QoS 2 too");
    assert_eq!(err.kind(), PublishErrorKind::Refused, "{err}");
    conn.publish(
        Message::new(Topic::new("allowed/x").expect("topic"), &b"yes"[..])
            .with_qos(QoS::AtLeastOnce),
    )
    .await
    .expect("publish");
    let m = tokio::time::timeout(Duration::from_secs(5), allowed.recv())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(m.payload.to_bytes().expect("bytes").as_ref(), b"yes");
    let err = conn.close().await.expect_err("close reports the refused publish");
    assert_eq!(err.kind(), busbar_core::error::CloseErrorKind::Unconfirmed, "{err}");
    assert!(err.to_string().contains("refused"), "{err}");
    assert_eq!(conn.stats().dropped, 2);
    let _ = std::fs::remove_file(&acl);
}

/// Publishes kept in flight under a window: every one the broker refuses is reported (once),
/// everything else arrives in order, and nothing resolves before the broker answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_reports_each_refusal_and_delivers_the_rest_in_order() {
    let acl = std::env::temp_dir().join(format!("busbar-acl-{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&acl, "topic readwrite allowed/#\n").expect("ACL file");
    let config = MosquittoConfig::new().line(format!("acl_file {}", acl.display()));
    let Some(broker) = mosquitto("pipeline_refusals", config).await else {
        let _ = std::fs::remove_file(&acl);
        return;
    };
    let conn = connect(&broker.url()).await;
    const N: u32 = 4_000;
    // Every 75th from the 7th: QoS 2 and QoS 1 in turn, more QoS 2 refusals (27) than
    // Mosquitto's receive maximum (20).
    let forbidden = |n: u32| n % 75 == 7;
    let expected_refused = (0..N).filter(|n| forbidden(*n)).count();
    // Read on its own connection and task: an unread subscription holds its connection
    // back (the default overflow policy), which would stall the publishes' acknowledgements.
    let reader = connect(&broker.url()).await;
    let mut allowed = reader.subscribe("allowed/#").await.expect("subscribe");
    let arrivals = tokio::spawn(async move {
        let mut got = Vec::new();
        while got.len() < N as usize - expected_refused {
            let m = tokio::time::timeout(Duration::from_secs(10), allowed.recv())
                .await
                .expect("in time")
                .expect("open");
            let bytes = m.payload.to_bytes().expect("bytes");
            got.push(u32::from_be_bytes(bytes.as_ref().try_into().expect("4 bytes")));
        }
        got
    });
    // Bounded, so that a connection that stops moving fails the test instead of hanging it.
    let publishing = async {
        let mut pipeline = conn.pipeline(64);
        let mut refused = 0;
        for n in 0..N {
            let topic = if forbidden(n) { "forbidden/x" } else { "allowed/x" };
            let message = Message::new(Topic::new(topic).expect("topic"), n.to_be_bytes().to_vec())
                .with_qos(if n % 2 == 0 { QoS::AtLeastOnce } else { QoS::ExactlyOnce });
            if let Err(e) = pipeline.publish(message).await {
                assert_eq!(e.kind(), PublishErrorKind::Refused, "{e}");
                refused += 1;
            }
        }
        if let Err((e, failed)) = pipeline.finish().await {
            assert_eq!(e.kind(), PublishErrorKind::Refused, "{e}");
            refused += failed;
        }
        refused
    };
    let refused = tokio::time::timeout(Duration::from_secs(60), publishing)
        .await
        .expect("every publish resolved: the connection kept moving after the refusals");
    assert_eq!(refused, expected_refused, "each refusal reported once");
    let got = arrivals.await.expect("reader");
    // MQTT orders messages of one QoS; Mosquitto passes a QoS 2 publish on only after
    // its PUBREL, so the two QoS levels interleave. The client renews its connection after
    // every 10 refused QoS 2 publishes (see `protocol::repair`); without a persistent
    // session, what was in flight then may arrive twice, never out of order or not at all.
    for qos2 in [false, true] {
        let of = |n: &u32| (n % 2 == 1) == qos2;
        let sent: Vec<u32> = (0..N).filter(|n| !forbidden(*n) && of(n)).collect();
        let arrived: Vec<u32> = got.iter().copied().filter(of).collect();
        let mut seen = std::collections::HashSet::new();
        let first_arrivals: Vec<u32> =
            arrived.iter().copied().filter(|n| seen.insert(*n)).collect();
        let twice = arrived.len() - first_arrivals.len();
        let first_difference = sent.iter().zip(&first_arrivals).position(|(s, a)| s != a);
        assert!(
            first_arrivals == sent,
            "QoS {}: {} sent, {} arrived, first difference at {first_difference:?}",
            1 + qos2 as u8,
            sent.len(),
            first_arrivals.len(),
        );
        assert!(twice <= 2 * 64, "at most what was in flight at the two renewals arrives twice");
    }
    assert_eq!(conn.stats().dropped, expected_refused as u64);
    let _ = std::fs::remove_file(&acl);
}

/// `?max_reconnect_attempts=` (CELINE's setting): a connection whose broker stays away
/// tries that many times, `reconnect_interval` apart, then closes and says so; every call
/// then fails as closed instead of waiting for a broker that will not come back. Without
/// the bound it keeps trying (and comes back when the broker does: the test above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_gives_up_after_the_reconnect_attempts_allowed() {
    let test = "a_connection_gives_up_after_the_reconnect_attempts_allowed";
    let Some(mut broker) = mosquitto(test, MosquittoConfig::new()).await else { return };
    let url = format!("{}?reconnect_interval=200ms&max_reconnect_attempts=3", broker.url());
    let conn = connect(&url).await;
    let mut events = conn.events();
    let mut sub = conn.subscribe("plant/#").await.expect("subscribe");
    let started = tokio::time::Instant::now();
    broker.stop().await.expect("stop");
    next_event(&mut events, |e| matches!(e, ConnectionEvent::Disconnected { .. })).await;
    next_event(&mut events, |e| matches!(e, ConnectionEvent::Closed)).await;
    // Three attempts 200 ms apart: not before 600 ms.
    assert!(started.elapsed() >= Duration::from_millis(600), "{:?}", started.elapsed());
    let err = conn.publish_bytes("plant/a", &b"x"[..]).await.expect_err("closed");
    assert_eq!(err.kind(), PublishErrorKind::Closed, "{err}");
    assert!(sub.recv().await.is_none(), "the subscription ends with the connection");
    // A bad value is refused, naming the parameter.
    let bad = format!("{}?max_reconnect_attempts=many", broker.url());
    let err = MqttTransport::connect(&bad, ConnectOptions::new()).await.err().expect("refused");
    assert!(err.to_string().contains("max_reconnect_attempts"), "{err}");
}
