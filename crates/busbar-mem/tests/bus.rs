//! Behaviour specific to the in-process bus, beyond the shared conformance suite.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use busbar_core::error::{PublishErrorKind, RequestErrorKind};
use busbar_core::message::Message;
use busbar_core::patterns::{Publisher, Subscriber};
use busbar_core::transport::{ConnectOptions, SubscribeOptions};
use busbar_core::{Connector, Overflow, Topic, TopicFilter};
use busbar_mem::{MemBus, MemConnector};
use serde::{Deserialize, Serialize, Serializer};

static SERIALISED: AtomicUsize = AtomicUsize::new(0);

/// Counts how often it is serialised.
#[derive(Debug, PartialEq, Deserialize)]
struct Pose {
    x: i32,
}

impl Serialize for Pose {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        SERIALISED.fetch_add(1, Ordering::SeqCst);
        s.serialize_i32(self.x)
    }
}

#[tokio::test]
async fn typed_values_reach_a_subscriber_without_serialisation() {
    let bus = MemBus::new();
    let conn = bus.connect(ConnectOptions::new());
    let mut sub = Subscriber::<Pose>::new(&conn, "robot/pose").await.expect("subscribe");
    let out = Publisher::<Pose>::new(&conn, "robot/pose").expect("publisher");
    for x in 0..100 {
        out.publish(Pose { x }).await.expect("publish");
        assert_eq!(sub.recv().await.expect("open").expect("decode").value, Pose { x });
    }
    assert_eq!(SERIALISED.load(Ordering::SeqCst), 0, "a typed value was serialised");
}

#[tokio::test]
async fn a_full_group_member_is_skipped_while_another_has_room() {
    let bus = MemBus::new();
    let conn = bus.connect(ConnectOptions::new());
    let filter = TopicFilter::new("jobs").expect("filter");
    let group = |capacity| {
        SubscribeOptions::from(filter.clone())
            .queue_group("workers")
            .capacity(capacity)
            .overflow(Overflow::DropNewest)
    };
    let full = conn.subscribe_with(group(1)).await.expect("a");
    let roomy = conn.subscribe_with(group(100)).await.expect("b");
    for _ in 0..10 {
        conn.publish_bytes("jobs", &b"x"[..]).await.expect("publish");
    }
    assert_eq!(full.dropped(), 0, "a message was dropped while another member had room");
    assert_eq!(full.queued() + roomy.queued(), 10);
}

#[tokio::test]
async fn a_reply_after_the_deadline_is_counted_as_late() {
    let bus = MemBus::new();
    let server = bus.connect(ConnectOptions::new());
    let client = bus.connect(ConnectOptions::new());
    let mut requests = server.subscribe("svc").await.expect("subscribe");
    let topic = Topic::new("svc").expect("topic");
    let err = client
        .request(Message::new(topic, &b"?"[..]), Duration::from_millis(10))
        .await
        .expect_err("no reply in time");
    assert_eq!(err.kind(), RequestErrorKind::TimedOut, "{err}");
    let request = requests.recv().await.expect("request queued");
    let reply = Message::reply(&request, &b"late"[..]).expect("has reply_to");
    server.publish(reply).await.expect("publish");
    // The requesting connection counts what came back after it gave up.
    assert_eq!(client.stats().late_replies, 1);
    assert_eq!(server.stats().late_replies, 0);
    assert_eq!(client.stats().timeouts, 1);
}

#[tokio::test]
async fn a_second_connection_with_the_same_client_id_takes_over() {
    let bus = MemBus::new();
    let first = bus.connect(ConnectOptions::new().client_id("pump"));
    let _second = bus.connect(ConnectOptions::new().client_id("pump"));
    let err = first.publish_bytes("x", &b"1"[..]).await.expect_err("taken over");
    assert_eq!(err.kind(), PublishErrorKind::NotConnected, "{err}");
    assert!(err.to_string().contains("same client id"), "{err}");
    assert!(!bus.disconnect("nobody"));
}

#[tokio::test]
async fn urls_name_separate_buses() {
    let a1 = MemConnector.connect("mem://bus-a", ConnectOptions::new()).await.expect("a1");
    let a2 = MemConnector.connect("mem://bus-a", ConnectOptions::new()).await.expect("a2");
    let b = MemConnector.connect("mem://bus-b", ConnectOptions::new()).await.expect("b");
    let mut on_a = a2.subscribe("t").await.expect("sub a");
    let mut on_b = b.subscribe("t").await.expect("sub b");
    b.publish_bytes("t", &b"from b"[..]).await.expect("publish b");
    a1.publish_bytes("t", &b"from a"[..]).await.expect("publish a");
    let got = on_a.recv().await.expect("a message");
    assert_eq!(got.payload.to_bytes().expect("bytes").as_ref(), b"from a");
    let got = on_b.recv().await.expect("b message");
    assert_eq!(got.payload.to_bytes().expect("bytes").as_ref(), b"from b");
    assert!(on_a.try_recv().is_none(), "bus a saw bus b's message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_server_refuses_queued_requests_at_once() {
    use busbar_core::patterns::rpc::RpcServer;
    use busbar_core::patterns::{RpcClient, RpcError};
    use futures_util::FutureExt;
    use std::sync::Arc;
    use tokio::sync::Notify;

    let bus = MemBus::new();
    let conn = bus.connect(ConnectOptions::new());
    let (started, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let server = {
        let (started, release) = (started.clone(), release.clone());
        RpcServer::builder(&conn, "svc")
            .concurrency(1)
            .serve(move |n: u32| {
                let (started, release) = (started.clone(), release.clone());
                async move {
                    started.notify_one();
                    release.notified().await;
                    Ok::<_, RpcError>(n)
                }
            })
            .await
            .expect("serve")
    };
    let client =
        RpcClient::<u32, u32>::new(&conn, "svc").expect("client").timeout(Duration::from_secs(30));
    let mut first = Box::pin(client.call(1));
    assert!((&mut first).now_or_never().is_none(), "the first call is in flight");
    started.notified().await;
    // On mem:// the first poll publishes: these two now wait in the server's queue.
    let mut queued: Vec<_> = (2..4).map(|n| Box::pin(client.call(n))).collect();
    for q in &mut queued {
        assert!(q.now_or_never().is_none());
    }
    let stopping = tokio::spawn(server.stop(Duration::from_secs(5)));
    for q in queued {
        let outcome =
            tokio::time::timeout(Duration::from_secs(5), q).await.expect("refused promptly");
        let err = outcome.expect_err("expected unavailable");
        let remote = err.remote_error().expect("a remote error");
        assert_eq!(remote.code, RpcError::UNAVAILABLE, "{err}");
    }
    release.notify_one();
    assert_eq!(first.await.expect("drained call"), 1);
    let report = stopping.await.expect("join");
    assert_eq!(report.aborted, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_covers_a_full_server_queue() {
    let bus = MemBus::new();
    let server = bus.connect(ConnectOptions::new());
    let client = bus.connect(ConnectOptions::new());
    // A server that never reads, with room for one request, blocking publishers when full.
    let _requests = server
        .subscribe_with(
            SubscribeOptions::from(TopicFilter::new("busy").expect("filter")).capacity(1),
        )
        .await
        .expect("subscribe");
    let topic = Topic::new("busy").expect("topic");
    for _ in 0..2 {
        let err = tokio::time::timeout(
            Duration::from_secs(5),
            client.request(Message::new(topic.clone(), &b"?"[..]), Duration::from_millis(50)),
        )
        .await
        .expect("the request deadline must fire even while the queue is full")
        .expect_err("no reply");
        assert_eq!(err.kind(), RequestErrorKind::TimedOut, "{err}");
    }
}

#[tokio::test]
async fn serialize_always_catches_values_a_broker_could_not_carry() {
    use std::collections::HashMap;
    // JSON object keys must be strings: this map cannot be sent through any broker.
    let map: HashMap<(u8, u8), u8> = HashMap::from([((1, 2), 3)]);
    let typed =
        MemConnector.connect("mem://strict-test", ConnectOptions::new()).await.expect("typed");
    let strict = MemConnector
        .connect("mem://strict-test?serialize=always", ConnectOptions::new())
        .await
        .expect("strict");
    assert!(!strict.capabilities().typed_payloads);
    Publisher::<HashMap<(u8, u8), u8>>::new(&typed, "m")
        .expect("p")
        .publish(map.clone())
        .await
        .expect("typed path");
    let err = Publisher::<HashMap<(u8, u8), u8>>::new(&strict, "m")
        .expect("p")
        .publish(map)
        .await
        .expect_err("must fail to serialise");
    assert_eq!(err.kind(), PublishErrorKind::Codec, "{err}");
}
