//! `kafka+tls://` with a real TLS handshake (librdkafka's OpenSSL against a rustls server
//! holding a test certificate), in front of a Tansu broker that advertises the TLS port.
//! Tansu 0.6 cannot serve TLS itself (its command line refuses `--cert` with `--key`).

use std::sync::Arc;
use std::time::Duration;

use busbar_core::error::ConnectErrorKind;
use busbar_core::transport::ConnectOptions;
use busbar_core::{Connection, Message, Topic};
use busbar_kafka::KafkaTransport;
use busbar_testkit::tls_front::TlsFront;
use busbar_testkit::{BrokerProcess, Pki, skip_if_missing};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verifies_the_broker_and_carries_messages() {
    let pki = Pki::make().expect("certificates");
    let front = TlsFront::bind().await;
    let port = front.port();
    let Some(broker) =
        skip_if_missing("kafka tls", BrokerProcess::tansu_advertising(Some(port)).await)
    else {
        return;
    };
    front.relay_to(([127, 0, 0, 1], broker.port()).into(), &pki);
    let ca = pki.path("ca.pem").display().to_string();
    let url = format!("kafka+tls://127.0.0.1:{port}?ca={ca}");
    let conn = Connection::new(Arc::new(
        KafkaTransport::connect(&url, ConnectOptions::new()).await.expect("connect over TLS"),
    ));
    let mut sub = conn.subscribe("secure/line").await.expect("subscribe");
    conn.publish(Message::new(Topic::new("secure/line").expect("topic"), "over tls"))
        .await
        .expect("confirmed");
    let m = tokio::time::timeout(Duration::from_secs(20), sub.recv())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(m.payload.to_bytes().expect("bytes").as_ref(), b"over tls");
    conn.close().await.expect("close");

    // A broker certificate from another authority is refused, and the error says TLS.
    let other = pki.path("other-ca.pem").display().to_string();
    let url = format!("kafka+tls://127.0.0.1:{port}?ca={other}&connect_timeout=3s");
    let err = KafkaTransport::connect(&url, ConnectOptions::new()).await.err().expect("refused");
    assert_eq!(err.kind(), ConnectErrorKind::Tls, "{err}");
}
