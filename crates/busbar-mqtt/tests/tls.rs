//! `mqtts://` against a Mosquitto TLS listener with certificates made for the test: a real
//! handshake, client certificates, and the errors for a certificate that does not verify.

use std::path::{Path, PathBuf};
use std::time::Duration;

use busbar_core::Error;
use busbar_core::transport::ConnectOptions;
use busbar_mqtt::MqttTransport;
use busbar_testkit::{BrokerProcess, MosquittoConfig, skip_if_missing};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// A throwaway PKI: a CA, a server certificate for 127.0.0.1, a client certificate, and an
/// unrelated CA.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn make() -> Pki {
        let dir =
            std::env::temp_dir().join(format!("busbar-tls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let write =
            |name: &str, text: String| std::fs::write(dir.join(name), text).expect("write pem");
        let ca = ca("busbar test CA");
        write("ca.pem", ca.pem());
        let other = ca_only("someone else's CA");
        write("other-ca.pem", other);
        for (name, sans) in [
            ("server", vec!["127.0.0.1".to_owned(), "localhost".to_owned()]),
            ("client", vec!["client".to_owned()]),
        ] {
            let key = KeyPair::generate().expect("key");
            let params = CertificateParams::new(sans).expect("params");
            let cert = params.signed_by(&key, &ca).expect("sign");
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}.key"), key.serialize_pem());
        }
        Pki { dir }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA")
}

fn ca_only(name: &str) -> String {
    ca(name).pem()
}

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
    let pki = Pki::make();
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
    let pki = Pki::make();
    let Some(broker) = tls_broker("a_server_certificate_from_another_ca_is_refused", &pki).await
    else {
        return;
    };
    let (cert, key) = (pki.path("client.pem"), pki.path("client.key"));
    let url = url(broker.port(), &pki.path("other-ca.pem"), Some((&cert, &key)));
    let err =
        MqttTransport::connect(&url, ConnectOptions::new()).await.err().expect("must not verify");
    assert!(matches!(err, Error::NotConnected { .. }), "{err}");
    assert!(err.to_string().to_lowercase().contains("certificate"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_requiring_a_client_certificate_refuses_one_without() {
    let pki = Pki::make();
    let Some(broker) = tls_broker("a_broker_requiring_a_client_certificate", &pki).await else {
        return;
    };
    let url = url(broker.port(), &pki.path("ca.pem"), None);
    let err =
        MqttTransport::connect(&url, ConnectOptions::new()).await.err().expect("must be refused");
    assert!(matches!(err, Error::NotConnected { .. }), "{err}");
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
