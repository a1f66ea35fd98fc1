//! What the exporter reports when spans do not reach a collector: counted and explained,
//! never dropped silently.

use std::time::Duration;

use busbar_otel::OtlpConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing_subscriber::layer::SubscriberExt;

/// Sends one busbar publish event through a subscriber with `layer`.
fn publish_event(layer: busbar_otel::OtlpLayer) {
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        tracing::debug!(
            target: "busbar_core::connection",
            topic = "plant/boiler",
            trace_id = "4bf92f3577b34da6a3ce929d0e0e4736",
            span_id = "00f067aa0ba902b7",
            parent_span_id = "",
            "busbar.publish"
        );
        // Not busbar's: not exported.
        tracing::debug!(target: "elsewhere", trace_id = "x", span_id = "y", "busbar.publish");
    });
}

fn config(url: &str) -> OtlpConfig {
    let mut config = OtlpConfig::new(url, "export-test").expect("config");
    config.timeout = Duration::from_secs(2);
    config
}

#[tokio::test]
async fn an_unreachable_collector_is_counted_and_named() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let (layer, exporter) =
        busbar_otel::layer(config(&format!("http://otel:hunter2@127.0.0.1:{port}/v1/traces")));
    publish_event(layer);
    let report = exporter.flush(Duration::from_secs(5)).await;
    assert_eq!((report.exported, report.failed, report.dropped), (0, 1, 0), "{report}");
    assert!(!report.complete());
    assert!(report.last_error.is_some(), "{report}");
    assert!(report.to_string().contains("1 not accepted by the collector"), "{report}");
    assert!(!report.to_string().contains("hunter2"), "no password in the report: {report}");
}

#[tokio::test]
async fn a_collector_refusing_the_spans_is_counted_with_its_status() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/v1/traces", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 65536];
            let _ = stream.read(&mut buf).await;
            let _ = stream
                .write_all(
                    b"HTTP/1.1 503 Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
        }
    });
    let (layer, exporter) = busbar_otel::layer(config(&url));
    publish_event(layer);
    let report = exporter.flush(Duration::from_secs(5)).await;
    assert_eq!((report.exported, report.failed), (0, 1), "{report}");
    assert_eq!(report.last_error.as_deref(), Some("the collector answered 503"));
}
