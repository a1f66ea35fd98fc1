//! W3C trace context across a bridge between two brokers and through an RPC: the trace id
//! stays, each hop gets a span of its own, and what a server does while handling a traced
//! request belongs to the same trace.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use busbar::bridge::{Bridge, BridgeOptions};
use busbar::trace::{TRACEPARENT, TraceContext};
use busbar::{Connection, Message, RpcClient, RpcServer, Topic};
use busbar_testkit::{BrokerKind, shared_broker};

const PATIENCE: Duration = Duration::from_secs(10);

async fn next(sub: &mut busbar::Subscription) -> Message {
    tokio::time::timeout(PATIENCE, sub.recv()).await.expect("in time").expect("open")
}

/// Two brokers (Mosquitto and Redis, whose messages carry headers in busbar's envelope)
/// when this machine runs them; else two in-process buses, which carry the same headers.
async fn two_brokers() -> (Connection, Connection, &'static str) {
    let (mqtt, redis) = if cfg!(all(feature = "mqtt", feature = "redis")) {
        (shared_broker(BrokerKind::Mqtt).await, shared_broker(BrokerKind::Redis).await)
    } else {
        (None, None)
    };
    match (mqtt, redis) {
        (Some(m), Some(r)) => (
            busbar::connect(m.url()).await.expect("mqtt"),
            busbar::connect(r.url()).await.expect("redis"),
            "MQTT to Redis",
        ),
        _ => (
            busbar::connect("mem://trace-a").await.expect("mem"),
            busbar::connect("mem://trace-b").await.expect("mem"),
            "two in-process buses",
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_crosses_a_bridge_and_an_rpc() {
    let (a, b, what) = two_brokers().await;
    let run = format!("trace{}", std::process::id());
    let _bridge = Bridge::topics("trace", &a, &b, &format!("{run}/#"), BridgeOptions::default())
        .await
        .expect("bridge");
    let mut far = b.subscribe(&format!("{run}/#")).await.expect("subscribe");

    // Untraced traffic stays untraced.
    let topic = Topic::new(format!("{run}/plain")).expect("topic");
    a.publish(Message::new(topic, "x")).await.expect("publish");
    let m = next(&mut far).await;
    assert_eq!(m.headers.get(TRACEPARENT), None, "{what}: no header nobody asked for");

    // A message published in a trace arrives across the bridge in the same trace, as a
    // span of its own.
    let root = TraceContext::new_root();
    let topic = Topic::new(format!("{run}/traced")).expect("topic");
    let sent = root
        .in_scope(async {
            let mut m = Message::new(topic, "x");
            m.headers.insert("note", "kept");
            a.publish(m).await
        })
        .await;
    sent.expect("publish");
    let m = next(&mut far).await;
    let arrived = TraceContext::of(&m).unwrap_or_else(|| panic!("{what}: no traceparent"));
    assert_eq!(arrived.trace_id(), root.trace_id(), "{what}: the trace crossed the bridge");
    assert_ne!(arrived.span_id(), root.span_id(), "{what}: the hop is a span of its own");
    assert_eq!(m.headers.get("note"), Some("kept"));

    // An RPC: the handler works in the caller's trace, what it publishes is part of it, and
    // the reply carries it back.
    let seen = Arc::new(Mutex::new(None));
    let in_handler = seen.clone();
    let b_for_handler = b.clone();
    // Not under the far subscriber's filter: it sees only what the handler publishes.
    let service = format!("{run}-rpc/svc");
    let note_topic = Topic::new(format!("{run}/from-handler")).expect("topic");
    let server = RpcServer::builder(&b, &service)
        .serve(move |n: i64| {
            let seen = in_handler.clone();
            let conn = b_for_handler.clone();
            let note_topic = note_topic.clone();
            async move {
                *seen.lock().expect("lock") = TraceContext::current();
                conn.publish(Message::new(note_topic, "handled"))
                    .await
                    .map_err(|e| busbar::RpcError::internal(e.to_string()))?;
                Ok(n * 2)
            }
        })
        .await
        .expect("serve");
    let client = RpcClient::<i64, i64>::new(&b, &service).expect("client");
    let call = TraceContext::new_root();
    let answer = call.in_scope(client.call(21)).await.expect("call");
    assert_eq!(answer, 42);
    let handled = seen.lock().expect("lock").expect("the handler ran in a trace");
    assert_eq!(handled.trace_id(), call.trace_id(), "{what}: the handler is in the caller's trace");
    let note = next(&mut far).await;
    assert_eq!(note.topic.as_str(), format!("{run}/from-handler"));
    let noted = TraceContext::of(&note).expect("the handler's publish is traced");
    assert_eq!(noted.trace_id(), call.trace_id());
    // The reply itself: a raw request shows its header.
    let raw = call
        .in_scope(
            b.request(Message::new(Topic::new(service.clone()).expect("topic"), "5"), PATIENCE),
        )
        .await
        .expect("request");
    let replied = TraceContext::of(&raw).expect("the reply is traced");
    assert_eq!(replied.trace_id(), call.trace_id());
    server.stop(Duration::from_secs(1)).await;
    let _ = a.close().await;
    let _ = b.close().await;
}

#[test]
fn a_bad_traceparent_starts_no_trace() {
    let m = Message::new(Topic::new("t").expect("topic"), "x")
        .with_header(TRACEPARENT, "00-zz-00f067aa0ba902b7-01");
    assert_eq!(TraceContext::of(&m), None);
}
