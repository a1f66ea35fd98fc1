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

/// The OpenTelemetry export: the same kind of call, from a client on one broker through an
/// RPC bridge to a server on another, exported to the test kit's loopback OTLP/HTTP
/// collector. The spans must form the call's tree: the client's request, the bridge's
/// request below it, the server's handling below that, the replies below the handling,
/// every span id used once, and every parent a span of the trace.
#[cfg(feature = "otel")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_through_a_bridge_is_exported_as_one_tree() {
    use std::collections::HashMap;

    use busbar::otel::OtlpConfig;
    use busbar_testkit::otlp::{Collector, ExportedSpan};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let collector = Collector::start().await.expect("collector");
    let mut config = OtlpConfig::new(&collector.traces_url(), "otel-test").expect("config");
    config.delay = Duration::from_millis(100);
    let (layer, exporter) = busbar::otel::layer(config);
    tracing_subscriber::registry().with(layer).init();

    let (a, b, _) = two_brokers().await;
    let run = format!("otel{}", std::process::id());
    let server = RpcServer::builder(&b, &format!("{run}/svc"))
        .serve(|n: i64| async move { Ok(n * 2) })
        .await
        .expect("serve");
    let _bridge =
        Bridge::rpc("otel", &a, &b, &format!("{run}/front"), &format!("{run}/svc"), PATIENCE)
            .await
            .expect("bridge");
    let client = RpcClient::<i64, i64>::new(&a, &format!("{run}/front")).expect("client");
    let root = TraceContext::new_root();
    let answer = root.in_scope(client.call(21)).await.expect("call");
    assert_eq!(answer, 42);

    let report = exporter.flush(PATIENCE).await;
    assert!(report.complete(), "{report}");
    assert!(report.exported > 0, "{report}");
    let spans = collector.spans_of(&root.trace_id());
    assert!(spans.iter().all(|s| s.service == "otel-test"), "{spans:?}");
    let ids: HashMap<&str, &ExportedSpan> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    assert_eq!(ids.len(), spans.len(), "a span id used twice: {spans:?}");
    let children = |parent: &str, name: &str| -> Vec<&ExportedSpan> {
        spans
            .iter()
            .filter(|s| s.name == name && s.parent_span_id.as_deref() == Some(parent))
            .collect()
    };
    // The client's request, below the scope's span (the root, the caller's own).
    let client_request = children(&root.span_id(), "busbar.request");
    assert_eq!(client_request.len(), 1, "the client's request: {spans:?}");
    let bridged = children(&client_request[0].span_id, "busbar.request");
    assert_eq!(bridged.len(), 1, "the bridge's request below the client's: {spans:?}");
    let handled = children(&bridged[0].span_id, "busbar.handle");
    assert_eq!(handled.len(), 1, "the server's handling below the bridge's request: {spans:?}");
    let reply = children(&handled[0].span_id, "busbar.publish");
    assert_eq!(reply.len(), 1, "the server's reply below its handling: {spans:?}");
    let back = children(&reply[0].span_id, "busbar.publish");
    assert_eq!(back.len(), 1, "the bridge's reply below the server's: {spans:?}");
    for span in &spans {
        let parent = span.parent_span_id.as_deref().unwrap_or_default();
        assert!(
            parent == root.span_id() || ids.contains_key(parent),
            "{span:?}: its parent is no span of the trace: {spans:?}"
        );
    }
    server.stop(Duration::from_secs(1)).await;
    let _ = a.close().await;
    let _ = b.close().await;
}
