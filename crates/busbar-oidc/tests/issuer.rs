//! The OIDC provider against a real HTTP issuer served on loopback by the test (Keycloak's
//! shapes: `/realms/<realm>` with its discovery document and token endpoint), and a real
//! Mosquitto that accepts the issued tokens as user names.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busbar_core::auth::{TokenPlacement, TokenProvider};
use busbar_core::transport::ConnectOptions;
use busbar_core::{Connection, ConnectionEvent};
use busbar_oidc::{OidcError, OidcProvider, OidcSettings};
use busbar_testkit::{BrokerProcess, MosquittoConfig, TestkitError, skip_if_missing};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// How the test issuer answers token requests.
#[derive(Clone)]
struct Behaviour {
    /// `expires_in` of issued tokens; `None` leaves it out.
    expires_in: Option<u64>,
    /// Issue refresh tokens.
    refresh_tokens: bool,
    /// Refuse refresh grants (so the provider must fall back).
    refuse_refresh: bool,
    /// Refuse every token request with `invalid_client`.
    refuse_all: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            expires_in: Some(60),
            refresh_tokens: false,
            refuse_refresh: false,
            refuse_all: false,
        }
    }
}

#[derive(Default)]
struct Log {
    discoveries: usize,
    /// The form of every token request, in order.
    token_requests: Vec<HashMap<String, String>>,
}

struct Issuer {
    base: String,
    log: Arc<Mutex<Log>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Issuer {
    async fn start(behaviour: Behaviour) -> Issuer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the issuer");
        let addr = listener.local_addr().expect("address");
        let base = format!("http://{addr}/realms/plant");
        let log = Arc::new(Mutex::new(Log::default()));
        let (shared_log, shared_base) = (log.clone(), base.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (log, base, behaviour) =
                    (shared_log.clone(), shared_base.clone(), behaviour.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        answer(req, log.clone(), base.clone(), behaviour.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Issuer { base, log, task }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().expect("log")
    }
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
}

async fn answer(
    req: Request<Incoming>,
    log: Arc<Mutex<Log>>,
    base: String,
    behaviour: Behaviour,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    if path == "/realms/plant/.well-known/openid-configuration" {
        log.lock().expect("log").discoveries += 1;
        return Ok(json(
            StatusCode::OK,
            serde_json::json!({
                "issuer": base,
                "token_endpoint": format!("{base}/protocol/openid-connect/token"),
                "jwks_uri": format!("{base}/protocol/openid-connect/certs"),
            }),
        ));
    }
    if path != "/realms/plant/protocol/openid-connect/token" {
        return Ok(json(StatusCode::NOT_FOUND, serde_json::json!({"error": "not_found"})));
    }
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let form: HashMap<String, String> = String::from_utf8_lossy(&body)
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), decode(v)))
        .collect();
    let grant = form.get("grant_type").cloned().unwrap_or_default();
    let n = {
        let mut log = log.lock().expect("log");
        log.token_requests.push(form);
        log.token_requests.len()
    };
    if behaviour.refuse_all {
        let body = serde_json::json!({"error": "invalid_client", "error_description": "Invalid client credentials"});
        return Ok(json(StatusCode::UNAUTHORIZED, body));
    }
    if grant == "refresh_token" && behaviour.refuse_refresh {
        let body = serde_json::json!({"error": "invalid_grant", "error_description": "Token is not active"});
        return Ok(json(StatusCode::BAD_REQUEST, body));
    }
    let mut token = serde_json::json!({"access_token": format!("tok-{n}"), "token_type": "Bearer"});
    if let Some(s) = behaviour.expires_in {
        token["expires_in"] = s.into();
    }
    if behaviour.refresh_tokens {
        token["refresh_token"] = format!("refresh-{n}").into();
    }
    Ok(json(StatusCode::OK, token))
}

fn decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1..i + 3)) {
            (b'%', Some(hex)) => {
                let hex = std::str::from_utf8(hex).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn settings(issuer: &Issuer) -> OidcSettings {
    OidcSettings::new(issuer.base.clone(), "gateway-7", "s3cret&=")
}

#[tokio::test]
async fn discovery_once_then_cached_client_credentials() {
    let issuer = Issuer::start(Behaviour::default()).await;
    // A trailing slash on the issuer changes nothing.
    let mut s = settings(&issuer);
    s.issuer.push('/');
    let provider = OidcProvider::new(s).expect("provider");
    let first = provider.access_token().await.expect("a token");
    let again = provider.access_token().await.expect("a token");
    assert_eq!((first.value.as_str(), again.value.as_str()), ("tok-1", "tok-1"), "cached");
    let log = issuer.log();
    assert_eq!(log.discoveries, 1);
    assert_eq!(log.token_requests.len(), 1);
    let form = &log.token_requests[0];
    assert_eq!(form.get("grant_type").map(String::as_str), Some("client_credentials"));
    assert_eq!(form.get("client_id").map(String::as_str), Some("gateway-7"));
    assert_eq!(form.get("client_secret").map(String::as_str), Some("s3cret&="));
    assert!(!form.contains_key("scope"), "no scope configured, none sent: {form:?}");
    // 60 s less the 30 s margin.
    let left =
        first.expires_at.expect("expires").saturating_duration_since(tokio::time::Instant::now());
    assert!(left > Duration::from_secs(25) && left <= Duration::from_secs(30), "{left:?}");
}

#[tokio::test]
async fn a_missing_lifetime_counts_as_300_seconds() {
    let issuer = Issuer::start(Behaviour { expires_in: None, ..Behaviour::default() }).await;
    let provider = OidcProvider::new(settings(&issuer)).expect("provider");
    let token = provider.access_token().await.expect("a token");
    let left =
        token.expires_at.expect("expires").saturating_duration_since(tokio::time::Instant::now());
    assert!(left > Duration::from_secs(265) && left <= Duration::from_secs(270), "{left:?}");
}

#[tokio::test]
async fn scopes_are_sent_and_extended_once() {
    let issuer = Issuer::start(Behaviour::default()).await;
    let provider =
        OidcProvider::new(settings(&issuer).scope("openid a.events.read")).expect("provider");
    let broker = provider.with_scope("mqtt").with_scope("mqtt");
    assert_eq!(broker.scope(), Some("openid a.events.read mqtt"));
    provider.access_token().await.expect("a token");
    broker.access_token().await.expect("a token");
    let log = issuer.log();
    // Discovery is shared; the caches are not.
    assert_eq!(log.discoveries, 1);
    let scopes: Vec<_> = log.token_requests.iter().map(|f| f.get("scope").cloned()).collect();
    assert_eq!(
        scopes,
        [Some("openid a.events.read".to_owned()), Some("openid a.events.read mqtt".to_owned())]
    );
}

#[tokio::test]
async fn renewal_tries_the_refresh_grant_first_then_falls_back() {
    // Tokens of 2 s with a 1 s margin are due for renewal after 0.8 s.
    let behaviour = Behaviour { expires_in: Some(2), refresh_tokens: true, ..Behaviour::default() };
    let issuer = Issuer::start(behaviour).await;
    let provider =
        OidcProvider::new(settings(&issuer).margin(Duration::from_secs(1))).expect("provider");
    let first = provider.access_token().await.expect("a token");
    tokio::time::sleep_until(first.refresh_at().expect("due")).await;
    let second = provider.access_token().await.expect("a renewed token");
    assert_eq!((first.value.as_str(), second.value.as_str()), ("tok-1", "tok-2"));
    {
        let log = issuer.log();
        let renewal = &log.token_requests[1];
        assert_eq!(renewal.get("grant_type").map(String::as_str), Some("refresh_token"));
        assert_eq!(renewal.get("refresh_token").map(String::as_str), Some("refresh-1"));
        assert_eq!(renewal.get("client_id").map(String::as_str), Some("gateway-7"));
    }

    let behaviour = Behaviour {
        expires_in: Some(2),
        refresh_tokens: true,
        refuse_refresh: true,
        ..Behaviour::default()
    };
    let issuer = Issuer::start(behaviour).await;
    let provider =
        OidcProvider::new(settings(&issuer).margin(Duration::from_secs(1))).expect("provider");
    let first = provider.access_token().await.expect("a token");
    tokio::time::sleep_until(first.refresh_at().expect("due")).await;
    let second = provider.access_token().await.expect("a token after the fallback");
    assert_eq!(second.value, "tok-3");
    let grants: Vec<_> = issuer
        .log()
        .token_requests
        .iter()
        .map(|f| f.get("grant_type").cloned().unwrap_or_default())
        .collect();
    assert_eq!(grants, ["client_credentials", "refresh_token", "client_credentials"]);
}

#[tokio::test]
async fn failures_are_clear_and_keep_the_secret() {
    let issuer = Issuer::start(Behaviour { refuse_all: true, ..Behaviour::default() }).await;
    let provider = OidcProvider::new(settings(&issuer)).expect("provider");
    let err = provider.token().await.expect_err("refused");
    let text = err.to_string();
    assert!(matches!(err, busbar_core::Error::Auth { .. }), "{text}");
    assert!(text.contains("401") && text.contains("invalid_client"), "{text}");
    assert!(!text.contains("s3cret"), "the secret leaked: {text}");

    // An issuer that is not there.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let gone = format!("http://{}/realms/x", closed.local_addr().expect("addr"));
    drop(closed);
    let provider = OidcProvider::new(OidcSettings::new(gone, "c", "s")).expect("provider");
    let err = provider.access_token().await.expect_err("unreachable");
    assert!(matches!(err, OidcError::Http { .. }), "{err}");
    assert!(err.to_string().contains("openid-configuration"), "{err}");

    assert!(OidcProvider::new(OidcSettings::new("id.example.com", "c", "s")).is_err());
    assert!(OidcProvider::new(OidcSettings::new("http://id", "", "s")).is_err());
}

/// A Mosquitto whose only users are the tokens the issuer hands out, with the password `jwt`
/// (the CELINE placement: token as user name).
async fn broker_for_tokens(
    test: &str,
    tokens: &[&str],
) -> Option<(BrokerProcess, std::path::PathBuf)> {
    let dir = std::env::temp_dir().join(format!("busbar-oidc-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("passwords");
    for (i, user) in tokens.iter().enumerate() {
        let mut cmd = std::process::Command::new("mosquitto_passwd");
        cmd.arg("-b");
        if i == 0 {
            cmd.arg("-c");
        }
        let status = cmd.arg(&file).args([user, "jwt"]).status();
        let status = skip_if_missing(
            test,
            status.map_err(|_| TestkitError::BinaryMissing { name: "mosquitto_passwd" }),
        )?;
        assert!(status.success(), "mosquitto_passwd failed");
    }
    let config = MosquittoConfig::new()
        .line("allow_anonymous false")
        .line(format!("password_file {}", file.display()));
    let broker = skip_if_missing(test, BrokerProcess::mosquitto(config).await)?;
    Some((broker, dir))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_accepts_issued_tokens_and_a_renewal_keeps_subscriptions() {
    let test = "mosquitto_accepts_issued_tokens_and_a_renewal_keeps_subscriptions";
    let Some((broker, dir)) = broker_for_tokens(test, &["tok-1", "tok-2", "tok-3"]).await else {
        return;
    };
    let behaviour = Behaviour { expires_in: Some(3), refresh_tokens: true, ..Behaviour::default() };
    let issuer = Issuer::start(behaviour).await;
    let provider =
        OidcProvider::new(settings(&issuer).margin(Duration::from_secs(1))).expect("provider");
    let url = format!("mqtt://:jwt@127.0.0.1:{}", broker.port());
    let options = ConnectOptions::new().token(Arc::new(provider), TokenPlacement::Username);
    let conn = Connection::new(Arc::new(
        busbar_mqtt::MqttTransport::connect(&url, options).await.expect("tok-1 accepted"),
    ));
    let mut events = conn.events();
    let mut sub = conn.subscribe("fleet/#").await.expect("subscribe");
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = events.next().await {
            if ev == ConnectionEvent::Reconnected {
                return;
            }
        }
    })
    .await
    .expect("reconnected with the renewed token before the first expired");
    {
        let log = issuer.log();
        assert_eq!(log.discoveries, 1);
        let grants: Vec<_> = log
            .token_requests
            .iter()
            .map(|f| f.get("grant_type").cloned().unwrap_or_default())
            .collect();
        assert_eq!(grants[..2], ["client_credentials", "refresh_token"]);
    }
    // The renewed session still has the subscription: publish from the same connection.
    conn.publish_bytes("fleet/truck-1", &b"after renewal"[..]).await.expect("publish");
    let m = tokio::time::timeout(Duration::from_secs(10), sub.recv())
        .await
        .expect("delivered after the renewal")
        .expect("open");
    assert_eq!(m.payload.to_bytes().expect("bytes").as_ref(), b"after renewal");
    let _ = std::fs::remove_dir_all(&dir);
}
