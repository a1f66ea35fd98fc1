//! `mqtts://` against a Mosquitto TLS listener with certificates made for the test: a real
//! handshake, client certificates, and the errors for a certificate that does not verify.

use std::path::Path;
use std::time::Duration;

use busbar_core::error::ConnectErrorKind;
use busbar_core::transport::ConnectOptions;
use busbar_mqtt::MqttTransport;
use busbar_testkit::{BrokerProcess, MosquittoConfig, Pki, skip_if_missing};

async fn tls_broker(test: &str, pki: &Pki) -> Option<BrokerProcess> {
    let config = MosquittoConfig::new()
        .line(format!("cafile {}", pki.path("ca.pem").display()))
        .line(format!("certfile {}", pki.path("server.pem").display()))
        .line(format!("keyfile {}", pki.path("server.key").display()))
        .line("require_certificate true");
    skip_if_missing(test, BrokerProcess::mosquitto(config).await)
}

fn url(port: u16, ca: &Path, client: Option<(&Path, &Path)>) -> String {
    let mut url = format!("mqtts://127.0.0.1:{port}?ca={}", ca.display());
    if let Some((cert, key)) = client {
        url.push_str(&format!("&cert={}&key={}", cert.display(), key.display()));
    }
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_handshake_with_a_client_certificate_carries_messages() {
    let pki = Pki::make().expect("certificates");
    let Some(broker) = tls_broker("a_real_handshake_with_a_client_certificate", &pki).await else {
        return;
    };
    let (cert, key) = (pki.path("client.pem"), pki.path("client.key"));
    let url = url(broker.port(), &pki.path("ca.pem"), Some((&cert, &key)));
    let conn = busbar_core::Connection::new(std::sync::Arc::new(
        MqttTransport::connect(&url, ConnectOptions::new()).await.expect("TLS connect"),
    ));
    let mut sub = conn.subscribe("secure/#").await.expect("subscribe");
    conn.publish_bytes("secure/x", &b"over TLS"[..]).await.expect("publish");
    let m = tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(m.payload.to_bytes().expect("bytes").as_ref(), b"over TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_another_ca_is_refused() {
    let pki = Pki::make().expect("certificates");
    let Some(broker) = tls_broker("a_server_certificate_from_another_ca_is_refused", &pki).await
    else {
        return;
    };
    let (cert, key) = (pki.path("client.pem"), pki.path("client.key"));
    let url = url(broker.port(), &pki.path("other-ca.pem"), Some((&cert, &key)));
    let err =
        MqttTransport::connect(&url, ConnectOptions::new()).await.err().expect("must not verify");
    assert_eq!(err.kind(), ConnectErrorKind::Tls, "{err}");
    assert!(err.to_string().to_lowercase().contains("certificate"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_requiring_a_client_certificate_refuses_one_without() {
    let pki = Pki::make().expect("certificates");
    let Some(broker) = tls_broker("a_broker_requiring_a_client_certificate", &pki).await else {
        return;
    };
    let url = url(broker.port(), &pki.path("ca.pem"), None);
    let err =
        MqttTransport::connect(&url, ConnectOptions::new()).await.err().expect("must be refused");
    assert_eq!(err.kind(), ConnectErrorKind::Tls, "{err}");
}

#[tokio::test]
async fn unreadable_tls_files_are_a_clear_error() {
    let err =
        MqttTransport::connect("mqtts://127.0.0.1:1?ca=/nonexistent/ca.pem", ConnectOptions::new())
            .await
            .err()
            .expect("no CA file");
    let text = err.to_string();
    assert!(text.contains("/nonexistent/ca.pem"), "{text}");
}
