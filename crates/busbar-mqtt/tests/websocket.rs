//! MQTT over WebSockets against a real broker with a WebSocket listener: rumqttd, run in the
//! test (Debian's Mosquitto is built without WebSockets). rumqttd speaks MQTT 3.1.1.

use std::time::Duration;

use busbar_core::Connection;
use busbar_core::transport::ConnectOptions;
use busbar_mqtt::MqttTransport;

/// Starts rumqttd with one WebSocket listener on a free loopback port.
fn rumqttd_ws() -> u16 {
    let port = busbar_testkit::free_port().expect("free port");
    let config: rumqttd::Config = serde_json::from_value(serde_json::json!({
        "id": 0,
        "router": {
            "max_connections": 100,
            "max_outgoing_packet_count": 200,
            "max_segment_size": 1_048_576,
            "max_segment_count": 10
        },
        "ws": {
            "1": {
                "name": "ws-1",
                "listen": format!("127.0.0.1:{port}"),
                "next_connection_delay_ms": 1,
                "connections": {
                    "connection_timeout_ms": 60000,
                    "max_payload_size": 1_048_576,
                    "max_inflight_count": 100,
                    "dynamic_filters": true
                }
            }
        }
    }))
    .expect("rumqttd configuration");
    // The broker runs its own threads for the rest of the test process.
    std::thread::spawn(move || {
        let mut broker = rumqttd::Broker::new(config);
        if let Err(e) = broker.start() {
            eprintln!("rumqttd stopped: {e}");
        }
    });
    port
}

async fn connect(url: &str) -> Connection {
    // The listener comes up in the background: retry briefly until it accepts.
    let mut last = None;
    for _ in 0..50 {
        match MqttTransport::connect(url, ConnectOptions::new()).await {
            Ok(t) => return Connection::new(std::sync::Arc::new(t)),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no WebSocket connection to rumqttd: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_travel_over_websockets() {
    let port = rumqttd_ws();
    let url = format!("ws://127.0.0.1:{port}/mqtt?version=3.1.1");
    let sub_conn = connect(&url).await;
    let pub_conn = connect(&url).await;
    let mut sub = sub_conn.subscribe("ws/#").await.expect("subscribe");
    pub_conn.publish_bytes("ws/hello", &b"over a websocket"[..]).await.expect("publish");
    let m = tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(m.topic.as_str(), "ws/hello");
    assert_eq!(m.payload.to_bytes().expect("bytes").as_ref(), b"over a websocket");
}

#[tokio::test]
async fn wss_never_falls_back_to_plain_text() {
    // A wss:// URL to a plain WebSocket listener must fail the TLS handshake, not connect in
    // clear text.
    let port = rumqttd_ws();
    let url = format!("wss://127.0.0.1:{port}/mqtt?version=3.1.1");
    let mut outcome = None;
    for _ in 0..20 {
        match MqttTransport::connect(&url, ConnectOptions::new()).await {
            Ok(_) => panic!("wss:// connected to a plain-text listener"),
            Err(e) => {
                let text = e.to_string();
                // Wait until the listener is up: then the failure is about TLS.
                if !text.contains("refused") {
                    outcome = Some(text);
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = outcome.expect("the listener came up");
    assert!(text.to_lowercase().contains("tls"), "expected a TLS failure, got: {text}");
}
