//! MQTT over WebSockets against real brokers. Debian's Mosquitto is built without WebSockets,
//! so two set-ups stand in for a broker's own WebSocket listener:
//!
//! * rumqttd, run in the test, whose WebSocket listener speaks MQTT 3.1.1;
//! * Mosquitto (MQTT 5) behind the testkit's WebSocket front end, the way nginx or HAProxy
//!   front brokers in deployments (`busbar_testkit::websocket`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use busbar_core::error::ConnectErrorKind;
use busbar_core::transport::{ConnectOptions, SubscribeOptions};
use busbar_core::{Connection, Message, Topic, TopicFilter};
use busbar_mqtt::MqttTransport;
use busbar_testkit::websocket::WebSocketFront;
use busbar_testkit::{BrokerKind, Pki, shared_broker};

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

/// The machine's Mosquitto (MQTT 5), or `None` when the test is skipped.
async fn mosquitto() -> Option<SocketAddr> {
    let broker = shared_broker(BrokerKind::Mqtt).await?;
    tokio::net::lookup_host((broker.host(), broker.port())).await.ok()?.next()
}

/// Checks that a message with a header (an MQTT 5 user property) and a response topic
/// crosses `url` intact, and that noLocal, MQTT 5 only, holds back the connection's own
/// publish.
async fn mqtt5_round_trip(url: &str) {
    let a = Connection::new(Arc::new(
        MqttTransport::connect(url, ConnectOptions::new()).await.expect("connect over WebSocket"),
    ));
    let b = Connection::new(Arc::new(
        MqttTransport::connect(url, ConnectOptions::new()).await.expect("connect over WebSocket"),
    ));
    let prefix = format!("ws5/{}", uuid::Uuid::new_v4().simple());
    let filter = TopicFilter::new(format!("{prefix}/#")).expect("filter");
    let mut heard_by_a =
        a.subscribe_with(SubscribeOptions::from(filter.clone()).no_local(true)).await.expect("sub");
    let mut heard_by_b = b.subscribe_with(SubscribeOptions::from(filter)).await.expect("sub");

    let topic = |t: &str| Topic::new(format!("{prefix}/{t}")).expect("topic");
    let mut own = Message::new(topic("from-a"), &b"a"[..]);
    own.reply_to = Some(topic("replies"));
    a.publish(own.with_header("trace", "t-1")).await.expect("publish");
    let wait = Duration::from_secs(5);
    let first =
        tokio::time::timeout(wait, heard_by_b.recv()).await.expect("in time").expect("open");
    // Only now does b publish, so a's own message reached the broker first: had noLocal
    // failed, a would hear it before b's.
    b.publish(Message::new(topic("from-b"), &b"b"[..])).await.expect("publish");
    assert_eq!(first.topic.as_str(), format!("{prefix}/from-a"));
    assert_eq!(first.headers.get("trace"), Some("t-1"), "user property lost");
    assert_eq!(first.reply_to.as_ref().map(Topic::as_str), Some(&*format!("{prefix}/replies")));
    // a hears only b's message: its own was held back by the broker (noLocal).
    let only = tokio::time::timeout(wait, heard_by_a.recv()).await.expect("in time").expect("open");
    assert_eq!(only.topic.as_str(), format!("{prefix}/from-b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_over_websockets_on_a_configured_path() {
    let Some(broker) = mosquitto().await else { return };
    let front = WebSocketFront::start(broker, None).await;
    mqtt5_round_trip(&format!("ws://127.0.0.1:{}/brokers/mqtt", front.port())).await;
    assert_eq!(front.paths(), ["/brokers/mqtt", "/brokers/mqtt"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_path_defaults_to_mqtt() {
    let Some(broker) = mosquitto().await else { return };
    let front = WebSocketFront::start(broker, None).await;
    let url = format!("ws://127.0.0.1:{}", front.port());
    let conn = MqttTransport::connect(&url, ConnectOptions::new()).await.expect("connect");
    drop(conn);
    assert_eq!(front.paths(), ["/mqtt"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_over_secure_websockets_with_a_custom_ca() {
    let Some(broker) = mosquitto().await else { return };
    let pki = Pki::make().expect("certificates");
    let front = WebSocketFront::start(broker, Some(&pki)).await;
    let ca = pki.path("ca.pem");
    mqtt5_round_trip(&format!("wss://127.0.0.1:{}/mqtt?ca={}", front.port(), ca.display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_websockets_refuse_a_server_the_ca_did_not_sign() {
    let Some(broker) = mosquitto().await else { return };
    let pki = Pki::make().expect("certificates");
    let front = WebSocketFront::start(broker, Some(&pki)).await;
    let other = pki.path("other-ca.pem");
    let url = format!("wss://127.0.0.1:{}/mqtt?ca={}", front.port(), other.display());
    let err = MqttTransport::connect(&url, ConnectOptions::new()).await.err().expect("refused");
    assert_eq!(err.kind(), ConnectErrorKind::Tls, "{err}");
    assert!(err.to_string().to_lowercase().contains("certificate"), "{err}");
    assert!(front.paths().is_empty(), "no request was sent");
}
