//! AMQP under faults, against the machine's RabbitMQ: connections closed by the broker
//! (`rabbitmqctl close_connection`, aimed only at this test's own connections, found by
//! their connection names, so other tests on the broker are not disturbed), requests in
//! flight during the fault, wrong credentials.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use busbar_amqp::AmqpTransport;
use busbar_core::error::{ConnectErrorKind, PublishErrorKind, RequestErrorKind};
use busbar_core::patterns::rpc::RpcServer;
use busbar_core::patterns::{RpcClient, RpcError};
use busbar_core::transport::ConnectOptions;
use busbar_core::{Codec, Connection, ConnectionEvent, Message, QoS, Topic};
use busbar_testkit::next_event;
use busbar_testkit::{BrokerKind, TestkitError, shared_broker, skip_if_missing};
use tokio::sync::Notify;

/// A marker unique to one test, put in its connections' names (client ids).
fn marker(test: &str) -> String {
    format!("faults-{test}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

async fn connect(url: &str, client_id: String) -> Connection {
    Connection::new(Arc::new(
        AmqpTransport::connect(url, ConnectOptions::new().client_id(client_id))
            .await
            .expect("connect"),
    ))
}

/// The broker URL and whether `rabbitmqctl` is there to inject faults; `None` skips.
async fn broker(test: &str) -> Option<String> {
    let broker = shared_broker(BrokerKind::Amqp).await?;
    let ctl = std::process::Command::new("rabbitmqctl").arg("help").output();
    skip_if_missing(test, ctl.map_err(|_| TestkitError::BinaryMissing { name: "rabbitmqctl" }))?;
    Some(broker.url().to_owned())
}

/// Has the broker close every connection whose name contains `marker`; returns how many.
fn close_connections(marker: &str) -> usize {
    let listed = std::process::Command::new("rabbitmqctl")
        .args(["list_connections", "pid", "client_properties", "-q"])
        .output()
        .expect("rabbitmqctl list_connections");
    let text = String::from_utf8_lossy(&listed.stdout);
    let mut closed = 0;
    for line in text.lines().filter(|l| l.contains(marker)) {
        let Some(pid) = line.split_whitespace().next() else { continue };
        let status = std::process::Command::new("rabbitmqctl")
            .args(["close_connection", pid, "busbar fault test"])
            .output()
            .expect("rabbitmqctl close_connection");
        assert!(status.status.success(), "close_connection {pid} failed");
        closed += 1;
    }
    closed
}

/// The broker closes both connections mid-stream: the subscription resumes on its own, and
/// every QoS 1 message arrives (at least once: redeliveries of unacknowledged messages and
/// re-sent unconfirmed publishes may repeat some), each first copy in publishing order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_resume_and_nothing_is_lost_when_connections_are_closed() {
    resume_through_closed_connections(1, "resume").await;
}

/// The same with 64 publishes awaiting their confirms at once: they are queued on the
/// channel without waiting for each other's write, and still go again in their order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windowed_publishes_keep_their_order_when_connections_are_closed() {
    resume_through_closed_connections(64, "window").await;
}

/// Publishes N numbered QoS 1 messages, `window` awaiting confirmation at once, while
/// the broker closes both connections after 500 arrived.
async fn resume_through_closed_connections(window: usize, name: &str) {
    use futures_util::StreamExt;
    const N: u32 = 3_000;
    let test = format!("resume_through_closed_connections({window})");
    let Some(url) = broker(&test).await else { return };
    let mark = marker(name);
    let sub_conn = connect(&url, format!("{mark}-sub")).await;
    let pub_conn = connect(&url, format!("{mark}-pub")).await;
    let mut sub_events = sub_conn.events();
    let mut pub_events = pub_conn.events();
    let topic = format!("{mark}/stream");
    let mut sub = sub_conn.subscribe(&topic).await.expect("subscribe");
    let publisher = {
        let conn = pub_conn.clone();
        let topic = Topic::new(&topic).expect("topic");
        tokio::spawn(async move {
            let mut outcomes =
                futures_util::stream::iter(0..N)
                    .map(|n| {
                        let payload = Codec::Json.encode(&n).expect("encode");
                        let message =
                            Message::new(topic.clone(), payload).with_qos(QoS::AtLeastOnce);
                        let conn = conn.clone();
                        async move {
                            conn.publish(message).await.map_err(|e| format!("publish {n}: {e}"))
                        }
                    })
                    .buffered(window);
            while let Some(outcome) = outcomes.next().await {
                outcome?;
            }
            Ok::<_, String>(())
        })
    };
    let mut seen = HashSet::new();
    let mut order = Vec::new();
    let mut copies = 0u32;
    let mut faulted = false;
    while seen.len() < N as usize {
        let m = tokio::time::timeout(Duration::from_secs(20), sub.recv())
            .await
            .unwrap_or_else(|_| panic!("stalled after {} of {N} messages", seen.len()))
            .expect("the subscription stays open across the fault");
        let n: u32 = Codec::Json.decode(&m.payload.to_bytes().expect("bytes"), &topic).expect("n");
        copies += 1;
        if seen.insert(n) {
            order.push(n);
        }
        if !faulted && seen.len() == 500 {
            faulted = true;
            let closed = close_connections(&mark);
            assert_eq!(closed, 2, "expected to close the test's two connections");
        }
    }
    publisher.await.expect("publisher task").expect("every publish confirmed");
    let ev =
        next_event(&mut sub_events, |e| matches!(e, ConnectionEvent::Disconnected { .. })).await;
    eprintln!("subscriber saw {ev:?}");
    next_event(&mut sub_events, |e| matches!(e, ConnectionEvent::Reconnected { .. })).await;
    next_event(&mut pub_events, |e| matches!(e, ConnectionEvent::Reconnected { .. })).await;
    assert!(order.windows(2).all(|w| w[0] < w[1]), "first copies out of publishing order");
    eprintln!("{N} messages, {} copies ({} repeated after the fault)", copies, copies - N);
    // Nothing more than the stream: a marker published now is the next message after any
    // remaining repeats, and the subscription still works.
    pub_conn.publish_bytes(&topic, &b"\"end\""[..]).await.expect("marker");
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), sub.recv())
            .await
            .expect("the marker in time")
            .expect("open");
        if m.payload.to_bytes().expect("bytes").as_ref() == b"\"end\"" {
            break;
        }
    }
}

/// Queue groups resume too: both members of a group on connections the broker closes get
/// their share again afterwards, each message to exactly one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_groups_resume_after_connections_are_closed() {
    let test = "queue_groups_resume_after_connections_are_closed";
    let Some(url) = broker(test).await else { return };
    let mark = marker("group");
    let a = connect(&url, format!("{mark}-a")).await;
    let b = connect(&url, format!("{mark}-b")).await;
    let publisher = connect(&url, format!("{}-pub", uuid::Uuid::new_v4().simple())).await;
    let filter = busbar_core::TopicFilter::new(format!("{mark}/jobs")).expect("filter");
    let options = || busbar_core::SubscribeOptions::from(filter.clone()).queue_group("workers");
    let mut sa = a.subscribe_with(options()).await.expect("member a");
    let mut sb = b.subscribe_with(options()).await.expect("member b");
    let (mut ea, mut eb) = (a.events(), b.events());
    assert_eq!(close_connections(&mark), 2);
    next_event(&mut ea, |e| matches!(e, ConnectionEvent::Reconnected { .. })).await;
    next_event(&mut eb, |e| matches!(e, ConnectionEvent::Reconnected { .. })).await;
    const N: u32 = 200;
    for n in 0..N {
        publisher
            .publish(Message::new(Topic::new(filter.as_str()).expect("topic"), n.to_string()))
            .await
            .expect("publish");
    }
    let mut got = HashSet::new();
    let (mut from_a, mut from_b) = (0, 0);
    while got.len() < N as usize {
        let m = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::select! {
                m = sa.recv() => { from_a += 1; m }
                m = sb.recv() => { from_b += 1; m }
            }
        })
        .await
        .expect("group deliveries in time")
        .expect("open");
        let n = String::from_utf8(m.payload.to_bytes().expect("bytes").to_vec()).expect("text");
        assert!(got.insert(n.clone()), "message {n} reached two members");
    }
    assert!(from_a > 0 && from_b > 0, "load not shared after the fault: {from_a}/{from_b}");
}

/// A call in flight when its connection is closed ends at once with a typed error (its
/// reply can no longer come), well within its deadline; calls work again afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_during_a_fault_ends_with_a_typed_error_in_time() {
    let test = "a_request_in_flight_during_a_fault_ends_with_a_typed_error_in_time";
    let Some(url) = broker(test).await else { return };
    let mark = marker("rpc");
    let server_conn = connect(&url, format!("{}-server", uuid::Uuid::new_v4().simple())).await;
    let client_conn = connect(&url, format!("{mark}-client")).await;
    let topic = format!("{mark}/echo");
    let started = Arc::new(Notify::new());
    let _server = {
        let started = started.clone();
        RpcServer::spawn(&server_conn, &topic, move |n: u32| {
            let started = started.clone();
            async move {
                if n == 1 {
                    // Holds the first call until well after the fault (rabbitmqctl itself
                    // takes a good part of a second to start).
                    started.notify_one();
                    tokio::time::sleep(Duration::from_secs(4)).await;
                }
                Ok::<_, RpcError>(n)
            }
        })
        .await
        .expect("server")
    };
    let client = RpcClient::<u32, u32>::new(&client_conn, &topic)
        .expect("client")
        .timeout(Duration::from_secs(5));
    let mut events = client_conn.events();
    let call = {
        let client = client.clone();
        tokio::spawn(async move {
            let t = tokio::time::Instant::now();
            (client.call(1).await, t.elapsed())
        })
    };
    started.notified().await;
    assert_eq!(close_connections(&mark), 1);
    let (result, took) = call.await.expect("call task");
    // Its reply cannot come (direct reply-to dies with the channel): the call fails at
    // once instead of waiting for the handler and then its deadline.
    match &result {
        Err(e) if e.kind() == RequestErrorKind::NotConnected => {}
        other => panic!("a call during the fault ended with {other:?}"),
    }
    assert!(took < Duration::from_secs(4), "the call did not end at the fault: {took:?}");
    eprintln!("call in flight ended after {took:?}: {result:?}");
    next_event(&mut events, |e| matches!(e, ConnectionEvent::Reconnected { .. })).await;
    assert_eq!(client.call(7).await.expect("a call after the reconnect"), 7);
}

/// Wrong credentials fail the connect with an error that says so, without the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_a_clear_error() {
    let Some(broker) = shared_broker(BrokerKind::Amqp).await else { return };
    let port = broker.port();
    for url in [
        format!("amqp://guest:wr0ng-secret@127.0.0.1:{port}/%2f"),
        format!(
            "amqp://nobody-{}:wr0ng-secret@127.0.0.1:{port}/%2f",
            uuid::Uuid::new_v4().simple()
        ),
    ] {
        let started = tokio::time::Instant::now();
        let err = AmqpTransport::connect(&url, ConnectOptions::new())
            .await
            .expect_err("wrong credentials accepted");
        let text = err.to_string();
        assert_eq!(err.kind(), ConnectErrorKind::Refused, "{err:?}");
        assert!(text.contains("user name or password"), "{text}");
        assert!(!text.contains("wr0ng-secret"), "the password leaked into the error: {text}");
        assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    }
    // A virtual host that does not exist is named as the problem.
    let err = AmqpTransport::connect(
        &format!("amqp://guest:guest@127.0.0.1:{port}/no-such-vhost"),
        ConnectOptions::new(),
    )
    .await
    .expect_err("unknown vhost accepted");
    assert_eq!(err.kind(), ConnectErrorKind::Refused, "{err:?}");
    assert!(err.to_string().contains("virtual host"), "{err}");
}

/// Nobody listening on the port: a typed `Unreachable`, quickly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_broker_is_not_connected() {
    let port = busbar_testkit::free_port().expect("port");
    let err = AmqpTransport::connect(&format!("amqp://127.0.0.1:{port}"), ConnectOptions::new())
        .await
        .expect_err("connected to nothing");
    assert_eq!(err.kind(), ConnectErrorKind::Unreachable, "{err:?}");
}

/// A payload over the limit is refused before it reaches the broker (which would close the
/// channel), and the connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_payloads_are_refused_and_the_connection_goes_on() {
    let Some(broker) = shared_broker(BrokerKind::Amqp).await else { return };
    let url = format!("{}?max_payload=1000", broker.url());
    let conn = connect(&url, format!("big-{}", uuid::Uuid::new_v4().simple())).await;
    assert_eq!(conn.capabilities().max_payload, Some(1000));
    let topic = format!("big/{}", uuid::Uuid::new_v4().simple());
    let mut sub = conn.subscribe(&topic).await.expect("subscribe");
    let err = conn.publish_bytes(&topic, vec![0u8; 1001]).await.expect_err("oversized accepted");
    assert_eq!(err.kind(), PublishErrorKind::TooLarge, "{err:?}");
    assert!(err.to_string().contains("1001 bytes exceeds the limit of 1000"), "{err}");
    conn.publish_bytes(&topic, vec![1u8; 1000]).await.expect("at the limit");
    let m = tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(m.payload.to_bytes().expect("bytes").len(), 1000);
    // Retained messages and last wills do not exist in AMQP: refused, typed.
    let err = conn
        .publish(Message::new(Topic::new(&topic).expect("t"), &b"x"[..]).with_retain(true))
        .await
        .expect_err("retained accepted");
    assert_eq!(err.kind(), PublishErrorKind::Unsupported, "{err:?}");
    let will = Message::new(Topic::new("w").expect("t"), &b"x"[..]);
    let err = AmqpTransport::connect(broker.url(), ConnectOptions::new().last_will(will))
        .await
        .expect_err("last will accepted");
    assert_eq!(err.kind(), ConnectErrorKind::Unsupported, "{err:?}");
}
