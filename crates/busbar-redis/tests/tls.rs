//! `rediss://` against a redis-server TLS port with certificates made for the test: a real
//! handshake with a custom CA (`?ca=`), and a clear error when the certificate does not
//! verify.

use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use busbar_core::Connection;
use busbar_core::error::ConnectErrorKind;
use busbar_core::transport::ConnectOptions;
use busbar_redis::RedisTransport;
use busbar_testkit::{BrokerProcess, Pki, skip_if_missing};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_handshakes_with_a_custom_ca_and_refuses_an_unknown_one() {
    let pki = Pki::make().expect("certificates");
    let args: Vec<OsString> = vec![
        "--tls-cert-file".into(),
        pki.path("server.pem").into(),
        "--tls-key-file".into(),
        pki.path("server.key").into(),
        "--tls-ca-cert-file".into(),
        pki.path("ca.pem").into(),
        "--tls-auth-clients".into(),
        "no".into(),
        "--requirepass".into(),
        "tls-pw".into(),
    ];
    let Some(redis) = skip_if_missing(
        "rediss_handshakes_with_a_custom_ca_and_refuses_an_unknown_one",
        BrokerProcess::redis_with(args, true).await,
    ) else {
        return;
    };
    let port = redis.port();
    let url = |ca: &str| format!("rediss://:tls-pw@127.0.0.1:{port}?ca={}", pki.path(ca).display());
    let conn = Connection::new(Arc::new(
        RedisTransport::connect(&url("ca.pem"), ConnectOptions::new()).await.expect("TLS connect"),
    ));
    let mut sub = conn.subscribe("secure/+").await.expect("subscribe");
    conn.publish_bytes("secure/a", &b"over tls"[..]).await.expect("publish");
    let m = tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(m.payload.to_bytes().expect("bytes").as_ref(), b"over tls");
    // RPC uses the list readers' own connections, which must speak TLS as well.
    let _server =
        busbar_core::patterns::rpc::RpcServer::spawn(&conn, "secure/double", |n: u32| async move {
            Ok::<_, busbar_core::patterns::RpcError>(n * 2)
        })
        .await
        .expect("serve");
    let client =
        busbar_core::patterns::RpcClient::<u32, u32>::new(&conn, "secure/double").expect("client");
    assert_eq!(client.call(21).await.expect("call over TLS"), 42);

    // A CA that did not sign the server's certificate: refused, with a typed error.
    match RedisTransport::connect(&url("other-ca.pem"), ConnectOptions::new()).await {
        Ok(_) => panic!("a server certificate from an unknown CA was accepted"),
        Err(e) => {
            assert_eq!(e.kind(), ConnectErrorKind::Tls, "{e}");
            assert!(!e.to_string().contains("tls-pw"), "the password leaked: {e}");
        }
    }
    // Plain text to a TLS port does not silently work either.
    let plain = format!("redis://:tls-pw@127.0.0.1:{port}?response_timeout_ms=1000");
    assert!(RedisTransport::connect(&plain, ConnectOptions::new()).await.is_err());
    // A missing CA file is a configuration error naming the file.
    match RedisTransport::connect(&url("missing.pem"), ConnectOptions::new()).await {
        Err(e) => {
            assert_eq!(e.kind(), ConnectErrorKind::Config, "{e}");
            assert!(e.to_string().contains("missing.pem"), "{e}");
        }
        Ok(_) => panic!("connected with a missing CA file"),
    }
}
