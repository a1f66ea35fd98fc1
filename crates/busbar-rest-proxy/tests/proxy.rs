//! The REST proxy against a real HTTP server on loopback (plain and TLS): busbar's wire on
//! the in-process bus, commlib's wire on Mosquitto with a busbar client, and the real
//! commlib-py client of commlib's REST proxy.

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use busbar::{Connection, RpcClient};
use busbar_commlib::CommlibRpcClient;
use busbar_rest_proxy::{RestProxy, RestProxyOptions, RestProxyService, RestResponse, Wire};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// What the test server answers, by path:
/// * `/echo...`: 200, a JSON object of what it was asked (method, target, headers, body);
/// * `/teapot`: 418, a text body and an `X-Why` header;
/// * `/bytes`: 200, four bytes that are not UTF-8;
/// * `/big`: 200, 200 KiB of text;
/// * `/slow`: 200 after 5 s.
async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = request.method().to_string();
    let target = request.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
    let headers: serde_json::Map<String, Value> = request
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), Value::from(v.to_str().unwrap_or("?"))))
        .collect();
    let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let reply = |status: u16, kind: &str, body: Bytes| {
        Response::builder()
            .status(status)
            .header("content-type", kind)
            .body(Full::new(body))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
    };
    Ok(match request_path(&target) {
        "/teapot" => {
            let mut r = reply(418, "text/plain", Bytes::from_static(b"I'm a teapot"));
            r.headers_mut()
                .insert("x-why", hyper::header::HeaderValue::from_static("short and stout"));
            r
        }
        "/bytes" => reply(200, "application/octet-stream", Bytes::from_static(&[0xff, 0, 0x9f, 1])),
        "/big" => reply(200, "text/plain", Bytes::from(vec![b'x'; 200 * 1024])),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            reply(200, "text/plain", Bytes::from_static(b"late"))
        }
        _ => {
            let echo = json!({
                "method": method,
                "target": target,
                "headers": headers,
                "body": String::from_utf8_lossy(&body),
            });
            reply(200, "application/json", Bytes::from(echo.to_string()))
        }
    })
}

fn request_path(target: &str) -> &str {
    target.split('?').next().unwrap_or_default()
}

/// Starts the test server, with TLS when `tls` is given; returns its port.
async fn http_server(tls: Option<tokio_rustls::TlsAcceptor>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let tls = tls.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(answer);
                let builder = hyper::server::conn::http1::Builder::new();
                match tls {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                    }
                }
            });
        }
    });
    port
}

async fn busbar_proxy(options: RestProxyOptions) -> (Connection, RestProxyService, String) {
    let bus = busbar_testkit::unique_name();
    let topic = format!("proxy/rest/{bus}");
    let conn = busbar::connect(&format!("mem://{bus}")).await.expect("connect");
    let service = RestProxyService::spawn(&conn, &topic, RestProxy::new(options), Wire::Busbar)
        .await
        .expect("serve");
    (conn, service, topic)
}

async fn call(conn: &Connection, topic: &str, request: Value) -> busbar::Result<RestResponse> {
    Ok(RpcClient::<Value, RestResponse>::new(conn, topic)?
        .timeout(Duration::from_secs(15))
        .call(request)
        .await?)
}

#[tokio::test]
async fn calls_carry_method_query_headers_and_body_and_return_what_came_back() {
    let port = http_server(None).await;
    let (conn, _service, topic) = busbar_proxy(RestProxyOptions::default()).await;

    // commlib's shape: a GET with query and headers.
    let r = call(
        &conn,
        &topic,
        json!({
            "host": "127.0.0.1", "port": port, "base_url": "/echo", "path": "/rooms/{room}",
            "path_params": {"room": "hall 2"}, "query_params": {"on": true, "tag": ["a", "b"]},
            "headers": {"X-Trace": "t-1"},
        }),
    )
    .await
    .expect("answered");
    assert_eq!(r.status_code, 200);
    assert_eq!(r.error, None);
    assert_eq!(r.data["method"], "GET");
    assert_eq!(r.data["target"], "/echo/rooms/hall%202?on=true&tag=a&tag=b");
    assert_eq!(r.data["headers"]["x-trace"], "t-1");
    assert_eq!(r.headers["Content-Type"], "application/json");

    // A form, as commlib sends body_params.
    let r = call(
        &conn,
        &topic,
        json!({
            "host": "127.0.0.1", "port": port, "path": "/echo", "verb": "POST",
            "body_params": {"name": "a&b", "n": 2},
        }),
    )
    .await
    .expect("answered");
    assert_eq!(r.data["body"], "n=2&name=a%26b");
    assert_eq!(r.data["headers"]["content-type"], "application/x-www-form-urlencoded");

    // JSON bodies, and methods commlib's proxy does not make.
    for verb in ["put", "PATCH", "DELETE"] {
        let r = call(&conn, &topic, json!({
            "host": "127.0.0.1", "port": port, "path": "/echo", "verb": verb, "json": {"level": [1, 2]},
        }))
        .await
        .expect("answered");
        assert_eq!(r.data["method"], verb.to_uppercase());
        assert_eq!(r.data["body"], r#"{"level":[1,2]}"#);
        assert_eq!(r.data["headers"]["content-type"], "application/json");
    }
}

#[tokio::test]
async fn server_errors_come_back_as_answers_and_binary_bodies_as_base64() {
    let port = http_server(None).await;
    let (conn, _service, topic) = busbar_proxy(RestProxyOptions::default()).await;
    let r = call(&conn, &topic, json!({"host": "127.0.0.1", "port": port, "path": "/teapot"}))
        .await
        .expect("a 418 is an answer");
    assert_eq!((r.status_code, r.data.as_str()), (418, Some("I'm a teapot")));
    assert_eq!(r.headers["X-Why"], "short and stout");
    assert_eq!(r.error, None);
    let r = call(&conn, &topic, json!({"host": "127.0.0.1", "port": port, "path": "/bytes"}))
        .await
        .expect("answered");
    assert_eq!((r.data.as_str(), r.encoding.as_deref()), (Some("/wCfAQ=="), Some("base64")));
}

#[tokio::test]
async fn failures_of_the_proxy_are_error_replies_that_say_why() {
    let port = http_server(None).await;
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr").port()
    };
    let options = RestProxyOptions {
        timeout: Duration::from_millis(500),
        max_body: 64 * 1024,
        allow: vec!["127.0.0.1".into()],
        ..RestProxyOptions::default()
    };
    let (conn, _service, topic) = busbar_proxy(options).await;
    for (request, code, says) in [
        (json!({"host": "127.0.0.1", "port": closed}), "unavailable", "cannot connect"),
        (
            json!({"host": "127.0.0.1", "port": port, "path": "/slow"}),
            "deadline_exceeded",
            "no answer within",
        ),
        (
            json!({"host": "127.0.0.1", "port": port, "path": "/big"}),
            "unavailable",
            "larger than 65536 bytes",
        ),
        (json!({"host": "localhost", "port": port}), "permission_denied", "localhost:"),
        (json!({"host": "127.0.0.1", "port": port, "verb": "BREW"}), "invalid_argument", "BREW"),
        (
            json!({"host": "127.0.0.1", "port": "eighty"}),
            "invalid_argument",
            "not a REST proxy request",
        ),
        (
            json!({"host": "127.0.0.1", "port": port, "ssl": true}),
            "invalid_argument",
            "no TLS configuration",
        ),
    ] {
        match call(&conn, &topic, request.clone()).await.map_err(|e| e.remote_error().cloned()) {
            Err(Some(e)) => {
                assert_eq!(e.code, code, "{request}: {e}");
                assert!(e.message.contains(says), "{request}: {e}");
            }
            other => panic!("{request}: {other:?}"),
        }
    }
    // The proxy goes on after its failures.
    let r = call(&conn, &topic, json!({"host": "127.0.0.1", "port": port, "path": "/echo"}))
        .await
        .expect("answered");
    assert_eq!(r.status_code, 200);
}

#[tokio::test]
async fn https_calls_verify_the_server() {
    let pki = busbar_testkit::pki::Pki::make().expect("pki");
    let (certs, key) = pki.server_identity();
    let server = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    let port = http_server(Some(tokio_rustls::TlsAcceptor::from(Arc::new(server)))).await;
    let trusting =
        |ca: &str| RestProxyOptions::default().https(Some(pki.path(ca))).expect("tls settings");
    let request = json!({"host": "127.0.0.1", "port": port, "ssl": true, "path": "/echo"});
    let (conn, _service, topic) = busbar_proxy(trusting("ca.pem")).await;
    let r = call(&conn, &topic, request.clone()).await.expect("answered over TLS");
    assert_eq!((r.status_code, &r.data["method"]), (200, &json!("GET")));
    // A server whose certificate another authority signed is refused.
    let (conn, _service, topic) = busbar_proxy(trusting("other-ca.pem")).await;
    match call(&conn, &topic, request).await.map_err(|e| e.remote_error().cloned()) {
        Err(Some(e)) => assert!(e.message.contains("TLS handshake failed"), "{e}"),
        other => panic!("an untrusted server was called: {other:?}"),
    }
}

/// commlib's wire on Mosquitto, with busbar's commlib client: answers, and the proxy's own
/// failures as answers with `error`, since commlib has no error replies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commlib_wire_answers_with_statuses() {
    use busbar_testkit::{BrokerKind, shared_broker};
    let Some(broker) = shared_broker(BrokerKind::Mqtt).await else { return };
    let port = http_server(None).await;
    let conn = busbar::connect(broker.url()).await.expect("connect");
    let name = format!("{}.proxy.rest", busbar_testkit::unique_name());
    let proxy = RestProxy::new(RestProxyOptions::default());
    let _service =
        RestProxyService::spawn(&conn, &name, proxy, Wire::Commlib).await.expect("serve");
    let client = CommlibRpcClient::<Value, RestResponse>::new(&conn, &name)
        .expect("client")
        .timeout(Duration::from_secs(15));
    let r = client
        .call(
            &json!({"host": "127.0.0.1", "port": port, "path": "/echo", "query_params": {"q": 1}}),
        )
        .await
        .expect("answered");
    assert_eq!((r.status_code, &r.data["target"]), (200, &json!("/echo?q=1")));
    let r = client
        .call(&json!({"host": "127.0.0.1", "port": port, "verb": "BREW"}))
        .await
        .expect("answered");
    assert_eq!(r.status_code, 400);
    assert!(r.error.as_deref().is_some_and(|e| e.contains("BREW")), "{r:?}");
}

/// The real commlib-py client of commlib's REST proxy (its own message type) calls busbar's
/// proxy on MQTT and reads status, headers and body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commlib_py_clients_use_the_proxy() {
    use busbar_testkit::{BrokerKind, shared_broker};
    let Some(broker) = shared_broker(BrokerKind::Mqtt).await else { return };
    let port = http_server(None).await;
    let conn = busbar::connect(broker.url()).await.expect("connect");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../busbar-commlib/tests/peer/peer.py");
    for version in ["0.13.1", "0.13.2"] {
        let var = format!("BUSBAR_COMMLIB_{}_PYTHON", version.replace('.', ""));
        let Some(python) = busbar_testkit::peer::python(
            "rest proxy interop",
            &var,
            &format!("commlib-venvs/{version}"),
        ) else {
            return;
        };
        let name = format!("{}.proxy.rest", busbar_testkit::unique_name());
        let proxy = RestProxy::new(RestProxyOptions::default());
        let _service =
            RestProxyService::spawn(&conn, &name, proxy, Wire::Commlib).await.expect("serve");
        for (request, status) in [
            (
                json!({"host": "127.0.0.1", "port": port, "path": "/echo", "verb": "POST", "body_params": {"a": 1}}),
                200,
            ),
            (json!({"host": "127.0.0.1", "port": port, "path": "/teapot"}), 418),
        ] {
            let args = vec![
                script.display().to_string(),
                format!("mqtt:{}:{}", broker.host(), broker.port()),
                "rest-call".to_owned(),
                name.clone(),
                request.to_string(),
            ];
            let mut peer = busbar_testkit::peer::Peer::start(&python, &args, &[]).await;
            let got = peer.next().await;
            let response = &got["response"];
            assert_eq!(response["status_code"], status, "{version}: {got}");
            if status == 200 {
                assert_eq!(response["data"]["method"], "POST", "{version}: {got}");
                assert_eq!(response["data"]["body"], "a=1", "{version}: {got}");
                assert_eq!(response["headers"]["Content-Type"], "application/json", "{version}");
            } else {
                assert_eq!(response["data"], "I'm a teapot", "{version}: {got}");
                assert_eq!(response["headers"]["X-Why"], "short and stout", "{version}");
            }
        }
    }
}
