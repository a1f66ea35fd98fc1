//! The OpenTelemetry export: a traced call from a client on one broker, through an RPC
//! bridge, to a server on another, exported to a collector (the test kit's loopback OTLP/HTTP
//! receiver). The spans must form the call's tree: the client's request, the bridge's
//! request below it, the server's handling below that, the replies below the handling,
//! every span id used once, and every parent a span of the trace.

#![cfg(feature = "otel")]

use std::collections::HashMap;
use std::time::Duration;

use busbar::bridge::Bridge;
use busbar::otel::OtlpConfig;
use busbar::trace::TraceContext;
use busbar::{Connection, RpcClient, RpcServer};
use busbar_testkit::otlp::{Collector, ExportedSpan};
use busbar_testkit::{BrokerKind, shared_broker};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

const PATIENCE: Duration = Duration::from_secs(10);

/// Two brokers (Mosquitto and Redis) when this machine runs them, else two in-process buses.
async fn two_brokers() -> (Connection, Connection) {
    let (mqtt, redis) = if cfg!(all(feature = "mqtt", feature = "redis")) {
        (shared_broker(BrokerKind::Mqtt).await, shared_broker(BrokerKind::Redis).await)
    } else {
        (None, None)
    };
    match (mqtt, redis) {
        (Some(m), Some(r)) => (
            busbar::connect(m.url()).await.expect("mqtt"),
            busbar::connect(r.url()).await.expect("redis"),
        ),
        _ => (
            busbar::connect("mem://otel-a").await.expect("mem"),
            busbar::connect("mem://otel-b").await.expect("mem"),
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_through_a_bridge_is_exported_as_one_tree() {
    let collector = Collector::start().await.expect("collector");
    let mut config = OtlpConfig::new(&collector.traces_url(), "otel-test").expect("config");
    config.delay = Duration::from_millis(100);
    let (layer, exporter) = busbar::otel::layer(config);
    tracing_subscriber::registry().with(layer).init();

    let (a, b) = two_brokers().await;
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
