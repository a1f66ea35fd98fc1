//! NATS against servers this test starts, stops and configures itself.

use std::sync::Arc;
use std::time::Duration;

use busbar_core::error::{ConnectErrorKind, PublishErrorKind, RequestErrorKind};
use busbar_core::patterns::rpc::RpcServer;
use busbar_core::patterns::{RpcClient, RpcError};
use busbar_core::transport::{ConnectOptions, SubscribeOptions};
use busbar_core::{Connection, ConnectionEvent, Message, Overflow, Topic, TopicFilter};
use busbar_nats::NatsTransport;
use busbar_testkit::next_event;
use busbar_testkit::{BrokerProcess, NatsConfig, skip_if_missing};
use tokio::sync::Notify;
use tokio::time::Instant;

async fn connect(url: &str) -> Connection {
    Connection::new(Arc::new(
        NatsTransport::connect(url, ConnectOptions::new()).await.expect("connect"),
    ))
}

async fn nats(test: &str, config: NatsConfig) -> Option<BrokerProcess> {
    skip_if_missing(test, BrokerProcess::nats_with_config(config).await)
}

fn numbered(topic: &str, n: u32) -> Message {
    Message::new(Topic::new(topic).expect("topic"), n.to_be_bytes().to_vec())
}

fn number(m: &Message) -> u32 {
    let bytes = m.payload.to_bytes().expect("bytes");
    u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_resume_and_publishing_continues_after_the_server_restarts() {
    let Some(mut server) = nats("server_restart", NatsConfig::new()).await else { return };
    let url = server.url();
    let sub_conn = connect(&url).await;
    let pub_conn = connect(&url).await;
    let mut sub_events = sub_conn.events();
    let mut pub_events = pub_conn.events();
    // A wildcard filter ending in `#` is two NATS subscriptions: both must come back.
    let mut sub = sub_conn.subscribe("plant/#").await.expect("subscribe");
    for n in 0..100 {
        pub_conn.publish(numbered("plant/line/a", n)).await.expect("publish");
    }
    for n in 0..100 {
        let m = tokio::time::timeout(Duration::from_secs(5), sub.recv())
            .await
            .expect("in time")
            .expect("open");
        assert_eq!(number(&m), n, "before the restart");
    }

    server.stop().await.expect("stop");
    next_event(&mut sub_events, |e| matches!(e, ConnectionEvent::Disconnected { .. })).await;
    next_event(&mut pub_events, |e| matches!(e, ConnectionEvent::Disconnected { .. })).await;
    server.restart().await.expect("restart");
    // `Reconnected` comes once the re-subscriptions are in place at the server.
    next_event(&mut sub_events, |e| matches!(e, ConnectionEvent::Reconnected { .. })).await;
    next_event(&mut pub_events, |e| matches!(e, ConnectionEvent::Reconnected { .. })).await;

    // The same stream goes on: everything published now arrives, once, on both halves of
    // the filter, each half in order. (The two halves are two NATS subscriptions, whose
    // relative order async-nats does not keep: see the crate documentation.)
    for n in 100..300 {
        let topic = if n % 2 == 0 { "plant" } else { "plant/line/b" };
        pub_conn.publish(numbered(topic, n)).await.expect("publish after the restart");
    }
    let mut next = [100u32, 101];
    for _ in 100..300 {
        let m = tokio::time::timeout(Duration::from_secs(5), sub.recv())
            .await
            .unwrap_or_else(|_| panic!("lost a message after the restart; next due {next:?}"))
            .expect("open");
        let n = number(&m);
        let half = (n % 2) as usize;
        assert_eq!(n, next[half], "out of order or doubled on {}", m.topic);
        next[half] += 2;
    }
    assert_eq!(next, [300, 301]);
    assert!(sub.try_recv().is_none(), "a message arrived twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_or_made_during_an_outage_end_within_their_deadline() {
    let Some(mut server) = nats("rpc_outage", NatsConfig::new()).await else { return };
    let url = server.url();
    let server_conn = connect(&url).await;
    let client_conn = connect(&url).await;
    let mut events = client_conn.events();
    let mut server_events = server_conn.events();
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let _rpc = {
        let (started, release) = (started.clone(), release.clone());
        RpcServer::spawn(&server_conn, "svc/echo", move |n: u32| {
            let (started, release) = (started.clone(), release.clone());
            async move {
                if n == 1 {
                    started.notify_one();
                    release.notified().await;
                }
                Ok::<_, RpcError>(n)
            }
        })
        .await
        .expect("serve")
    };
    let client = RpcClient::<u32, u32>::new(&client_conn, "svc/echo").expect("client");
    assert_eq!(client.call(7).await.expect("a call before the fault"), 7);

    let deadline = Duration::from_millis(1_500);
    let in_flight = {
        let client = client.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            (client.call_with_timeout(1, deadline).await, t.elapsed())
        })
    };
    started.notified().await;
    server.stop().await.expect("stop");
    release.notify_one();
    let (outcome, took) = in_flight.await.expect("join");
    // The reply cannot cross a dead server: the call ends with a typed error, on time.
    assert!(
        matches!(
            outcome.as_ref().map_err(|e| e.kind()),
            Err(RequestErrorKind::TimedOut | RequestErrorKind::NotConnected)
        ),
        "{outcome:?}"
    );
    assert!(took < deadline + Duration::from_millis(500), "the call took {took:?}");

    next_event(&mut events, |e| matches!(e, ConnectionEvent::Disconnected { .. })).await;
    // A call made during the outage also ends by its deadline, even though the client
    // cannot send anything.
    let t = Instant::now();
    let err = client.call_with_timeout(2, Duration::from_millis(300)).await.expect_err("outage");
    assert_eq!(err.kind(), RequestErrorKind::TimedOut, "{err}");
    assert!(t.elapsed() < Duration::from_millis(800), "took {:?}", t.elapsed());

    server.restart().await.expect("restart");
    next_event(&mut events, |e| matches!(e, ConnectionEvent::Reconnected { .. })).await;
    next_event(&mut server_events, |e| matches!(e, ConnectionEvent::Reconnected { .. })).await;
    // Both sides are back with their subscriptions in place: calls work again.
    assert_eq!(client.call_with_timeout(3, Duration::from_secs(2)).await.expect("call"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_a_clear_error() {
    let config = NatsConfig::new().line("authorization { user: pump, password: s3cret }");
    let Some(server) = nats("wrong_credentials", config).await else { return };
    let port = server.port();
    let good = NatsTransport::connect(
        &format!("nats://pump:s3cret@127.0.0.1:{port}"),
        ConnectOptions::new(),
    )
    .await;
    assert!(good.is_ok(), "right credentials refused: {:?}", good.err());
    for url in [format!("nats://pump:hunter2@127.0.0.1:{port}"), format!("nats://127.0.0.1:{port}")]
    {
        let err = NatsTransport::connect(&url, ConnectOptions::new())
            .await
            .err()
            .expect("wrong credentials accepted");
        assert_eq!(err.kind(), ConnectErrorKind::Refused, "{err}");
        let text = err.to_string();
        assert!(text.contains("authorization violation"), "{text}");
        assert!(!text.contains("hunter2"), "the password leaked into the error: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_not_there_is_a_clear_error() {
    let Some(mut server) = nats("no_server", NatsConfig::new()).await else { return };
    let url = server.url();
    server.stop().await.expect("stop");
    let err = NatsTransport::connect(&url, ConnectOptions::new())
        .await
        .err()
        .expect("connected to a stopped server");
    assert_eq!(err.kind(), ConnectErrorKind::Unreachable, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_over_the_server_maximum_are_refused() {
    let Some(server) = nats("max_payload", NatsConfig::new().line("max_payload: 2048")).await
    else {
        return;
    };
    let conn = connect(&server.url()).await;
    assert_eq!(conn.capabilities().max_payload, Some(2048));
    let mut sub = conn.subscribe("big").await.expect("subscribe");
    conn.publish_bytes("big", vec![1u8; 2000]).await.expect("under the limit");
    let err = conn.publish_bytes("big", vec![0u8; 4096]).await.expect_err("over the limit");
    assert_eq!(err.kind(), PublishErrorKind::TooLarge, "{err}");
    assert!(err.to_string().contains("4096 bytes exceeds the limit of 2048"), "{err}");
    let err = conn
        .request(
            Message::new(Topic::new("big").expect("topic"), vec![0u8; 4096]),
            Duration::from_secs(1),
        )
        .await
        .expect_err("request over the limit");
    assert_eq!(err.kind(), RequestErrorKind::TooLarge, "{err}");
    // The connection is still good, and nothing of the refused messages arrived.
    conn.publish_bytes("big", &b"small"[..]).await.expect("small publish");
    for want in [2000usize, 5] {
        let m = tokio::time::timeout(Duration::from_secs(5), sub.recv())
            .await
            .expect("in time")
            .expect("open");
        assert_eq!(m.payload.to_bytes().expect("bytes").len(), want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drops_in_the_client_buffer_are_counted_and_reported() {
    let Some(server) = nats("client_buffer", NatsConfig::new()).await else { return };
    // A tiny client buffer, and a Block subscription that is not read: once its queue (1)
    // and async-nats' buffer (8) are full, async-nats drops, and busbar must count it.
    let conn = connect(&format!("{}?subscription_capacity=8", server.url())).await;
    let mut events = conn.events();
    let filter = TopicFilter::new("flood/x").expect("filter");
    let _stuck = conn
        .subscribe_with(SubscribeOptions::from(filter).capacity(1).overflow(Overflow::Block))
        .await
        .expect("subscribe");
    let publisher = connect(&server.url()).await;
    for n in 0..500 {
        publisher.publish(numbered("flood/x", n)).await.expect("publish");
    }
    let ev = next_event(&mut events, |e| {
        matches!(e, ConnectionEvent::SlowConsumer { filter, dropped } if filter == "flood/x" && *dropped > 0)
    })
    .await;
    assert!(matches!(ev, ConnectionEvent::SlowConsumer { .. }));
    assert!(conn.stats().dropped > 0, "{:?}", conn.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_during_an_outage_wait_or_drop_as_declared() {
    let Some(mut server) = nats("publish_overflow", NatsConfig::new()).await else { return };
    let blocking = connect(&server.url()).await;
    let dropping =
        connect(&format!("{}?publish_queue=10&publish_overflow=drop-newest", server.url())).await;
    let mut events = (blocking.events(), dropping.events());
    server.stop().await.expect("stop");
    next_event(&mut events.0, |e| matches!(e, ConnectionEvent::Disconnected { .. })).await;
    next_event(&mut events.1, |e| matches!(e, ConnectionEvent::Disconnected { .. })).await;

    const N: u64 = 20_000;
    // A drop policy never makes the publisher wait: every call returns, the excess is counted.
    tokio::time::timeout(Duration::from_secs(10), async {
        for _ in 0..N {
            dropping.publish_bytes("telemetry/x", &b"reading"[..]).await.expect("publish");
        }
    })
    .await
    .expect("drop-newest publishes must not wait for the server");
    assert!(dropping.stats().dropped > 0, "nothing counted as dropped: {:?}", dropping.stats());

    // Block (the default) pushes back: once async-nats' command channel is full, publish
    // waits.
    let waited = tokio::time::timeout(Duration::from_secs(2), async {
        for _ in 0..N {
            blocking.publish_bytes("telemetry/x", &b"reading"[..]).await.expect("publish");
        }
    })
    .await;
    assert!(waited.is_err(), "Block publishes never waited while the server was down");
    assert_eq!(blocking.stats().dropped, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_core_nats_lacks_is_refused() {
    let Some(server) = nats("refusals", NatsConfig::new()).await else { return };
    let will = Message::new(Topic::new("a/will").expect("topic"), &b"gone"[..]);
    let err = NatsTransport::connect(&server.url(), ConnectOptions::new().last_will(will))
        .await
        .err()
        .expect("a last will must be refused");
    assert_eq!(err.kind(), ConnectErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains("last will"), "{err}");
    let conn = connect(&server.url()).await;
    let topic = Topic::new("a/b").expect("topic");
    let err = conn
        .publish(Message::new(topic.clone(), &b"x"[..]).with_retain(true))
        .await
        .expect_err("retained");
    assert_eq!(err.kind(), PublishErrorKind::Unsupported, "{err}");
    let err = conn
        .publish(Message::new(topic, &b"x"[..]).with_expiry(Duration::from_secs(5)))
        .await
        .expect_err("expiry");
    assert_eq!(err.kind(), PublishErrorKind::Unsupported, "{err}");
    // A level NATS cannot spell is a typed topic error, not a different subject.
    let err = conn.publish_bytes("a/b.c", &b"x"[..]).await.expect_err("dot in a level");
    assert_eq!(err.kind(), PublishErrorKind::InvalidTopic, "{err}");
}
