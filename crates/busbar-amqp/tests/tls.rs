//! `amqps://` with a real TLS handshake. The machine's RabbitMQ has no TLS listener, so the
//! test runs a TLS-terminating proxy (tokio-rustls, ring) on a free loopback port in front
//! of 127.0.0.1:5672, with certificates made for the test: the client does a real handshake
//! and then speaks AMQP to the real broker through the tunnel.

use std::sync::Arc;
use std::time::Duration;

use busbar_amqp::AmqpTransport;
use busbar_core::Connection;
use busbar_core::error::{ConnectErrorKind, RequestErrorKind};
use busbar_core::transport::ConnectOptions;
use busbar_testkit::{BrokerKind, Pki, shared_broker};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Accepts TLS on a free loopback port (requiring a client certificate from `pki`'s CA) and
/// forwards the plaintext to `broker_port`. Returns the port; stops with the test's runtime.
async fn tls_proxy(pki: &Pki, broker_port: u16) -> u16 {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (certs, key) = pki.server_identity();
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(pki.path("ca.pem")).expect("ca") {
        roots.add(ca.expect("ca")).expect("add ca");
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("client verifier");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A failed handshake just ends this connection: the client reports it.
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let Ok(mut upstream) =
                    tokio::net::TcpStream::connect(("127.0.0.1", broker_port)).await
                else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
            });
        }
    });
    port
}

fn url(port: u16, pki: &Pki, ca: &str, client_cert: bool) -> String {
    let mut url = format!("amqps://guest:guest@127.0.0.1:{port}/%2f?ca={}", pki.path(ca).display());
    if client_cert {
        url.push_str(&format!(
            "&cert={}&key={}",
            pki.path("client.pem").display(),
            pki.path("client.key").display()
        ));
    }
    url
}

/// A real handshake with a client certificate, then publish/subscribe and a request through
/// the tunnel to the real broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_handshake_with_client_certificate_carries_traffic() {
    let Some(broker) = shared_broker(BrokerKind::Amqp).await else { return };
    let pki = Pki::make().expect("certificates");
    let port = tls_proxy(&pki, broker.port()).await;
    let conn = Connection::new(Arc::new(
        AmqpTransport::connect(&url(port, &pki, "ca.pem", true), ConnectOptions::new())
            .await
            .expect("amqps connect"),
    ));
    let topic = format!("tls/{}", uuid::Uuid::new_v4().simple());
    let mut sub = conn.subscribe(&topic).await.expect("subscribe over TLS");
    conn.publish_bytes(&topic, &b"secret"[..]).await.expect("publish over TLS");
    let m = tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(m.payload.to_bytes().expect("bytes").as_ref(), b"secret");
    // Nobody serves this: the mandatory request comes back through the tunnel at once.
    let err = conn
        .request(
            busbar_core::Message::new(
                busbar_core::Topic::new(format!("{topic}/nobody")).expect("topic"),
                &b"?"[..],
            ),
            Duration::from_secs(5),
        )
        .await
        .expect_err("nobody serves it");
    assert_eq!(err.kind(), RequestErrorKind::NoResponders, "{err:?}");
    conn.close().await.expect("close");
}

/// A server certificate from a CA the client does not trust fails the handshake: no
/// connection, a typed error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_refuses_a_server_it_cannot_verify() {
    let Some(broker) = shared_broker(BrokerKind::Amqp).await else { return };
    let pki = Pki::make().expect("certificates");
    let port = tls_proxy(&pki, broker.port()).await;
    let err = AmqpTransport::connect(&url(port, &pki, "other-ca.pem", true), ConnectOptions::new())
        .await
        .expect_err("an unverifiable server was accepted");
    assert_eq!(err.kind(), ConnectErrorKind::Tls, "{err:?}");
    let text = err.to_string();
    assert!(text.to_lowercase().contains("certificate"), "{text}");
}

/// The proxy requires a client certificate: connecting without one fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_without_the_required_client_certificate_fails() {
    let Some(broker) = shared_broker(BrokerKind::Amqp).await else { return };
    let pki = Pki::make().expect("certificates");
    let port = tls_proxy(&pki, broker.port()).await;
    let err = AmqpTransport::connect(&url(port, &pki, "ca.pem", false), ConnectOptions::new())
        .await
        .expect_err("connected without a client certificate");
    assert_eq!(err.kind(), ConnectErrorKind::Tls, "{err:?}");
}

/// amqps:// pointed at the plain AMQP port never falls back to plain text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_to_a_plain_listener_fails() {
    let Some(broker) = shared_broker(BrokerKind::Amqp).await else { return };
    let pki = Pki::make().expect("certificates");
    let url = format!(
        "amqps://guest:guest@127.0.0.1:{}/%2f?ca={}&connect_timeout=3",
        broker.port(),
        pki.path("ca.pem").display()
    );
    let err = AmqpTransport::connect(&url, ConnectOptions::new())
        .await
        .expect_err("TLS to a plain listener succeeded");
    assert_eq!(err.kind(), ConnectErrorKind::Tls, "{err:?}");
}
