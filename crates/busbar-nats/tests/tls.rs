//! `tls://` against a nats-server TLS listener with certificates made for the test: a real
//! handshake, a custom CA, client certificates, and the errors for a certificate that does
//! not verify.

use std::sync::Arc;
use std::time::Duration;

use busbar_core::Connection;
use busbar_core::error::ConnectErrorKind;
use busbar_core::transport::ConnectOptions;
use busbar_nats::NatsTransport;
use busbar_testkit::{BrokerProcess, NatsConfig, Pki, skip_if_missing};

async fn tls_server(test: &str, pki: &Pki, verify_clients: bool) -> Option<BrokerProcess> {
    let mut block = format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n",
        pki.path("server.pem").display(),
        pki.path("server.key").display()
    );
    if verify_clients {
        block.push_str(&format!(
            "  ca_file: \"{}\"\n  verify: true\n",
            pki.path("ca.pem").display()
        ));
    }
    block.push('}');
    skip_if_missing(test, BrokerProcess::nats_with_config(NatsConfig::new().line(block)).await)
}

async fn round_trip(conn: &Connection) {
    let mut sub = conn.subscribe("secure/x").await.expect("subscribe");
    conn.publish_bytes("secure/x", &b"over tls"[..]).await.expect("publish");
    let m = tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(m.payload.to_bytes().expect("bytes").as_ref(), b"over tls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_handshake_against_a_custom_ca() {
    let pki = Pki::make().expect("certificates");
    let Some(server) = tls_server("tls_handshake", &pki, false).await else { return };
    let port = server.port();
    let url = format!("tls://127.0.0.1:{port}?ca={}", pki.path("ca.pem").display());
    let conn = Connection::new(Arc::new(
        NatsTransport::connect(&url, ConnectOptions::new()).await.expect("TLS connect"),
    ));
    round_trip(&conn).await;

    // A server certificate from a CA we were not told to trust is refused.
    let untrusted = format!("tls://127.0.0.1:{port}?ca={}", pki.path("other-ca.pem").display());
    let err = NatsTransport::connect(&untrusted, ConnectOptions::new())
        .await
        .err()
        .expect("an untrusted certificate was accepted");
    assert_eq!(err.kind(), ConnectErrorKind::Tls, "{err}");
    assert!(err.to_string().contains("TLS"), "{err}");

    // A missing CA file is a clear configuration error, before any connection.
    let missing = format!("tls://127.0.0.1:{port}?ca=/nonexistent/ca.pem");
    let err = NatsTransport::connect(&missing, ConnectOptions::new())
        .await
        .err()
        .expect("a missing CA file was accepted");
    assert_eq!(err.kind(), ConnectErrorKind::Config, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_when_the_server_verifies_clients() {
    let pki = Pki::make().expect("certificates");
    let Some(server) = tls_server("tls_client_cert", &pki, true).await else { return };
    let port = server.port();
    let ca = pki.path("ca.pem");
    let ca = ca.display();
    let with_cert = format!(
        "tls://127.0.0.1:{port}?ca={ca}&cert={}&key={}",
        pki.path("client.pem").display(),
        pki.path("client.key").display()
    );
    let conn = Connection::new(Arc::new(
        NatsTransport::connect(&with_cert, ConnectOptions::new()).await.expect("mutual TLS"),
    ));
    round_trip(&conn).await;
    let without = format!("tls://127.0.0.1:{port}?ca={ca}");
    let err = NatsTransport::connect(&without, ConnectOptions::new())
        .await
        .err()
        .expect("a client without a certificate was accepted");
    assert_eq!(err.kind(), ConnectErrorKind::Tls, "{err}");
}
