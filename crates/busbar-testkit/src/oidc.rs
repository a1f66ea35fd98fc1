//! A real OpenID Connect issuer on loopback, for token tests: Keycloak's shapes
//! (`/realms/plant` with its discovery document and token endpoint), tokens `tok-1`,
//! `tok-2`, ... in the order they are issued, and a log of what was asked.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// How the issuer answers token requests.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// `expires_in` of issued tokens; `None` leaves it out.
    pub expires_in: Option<u64>,
    /// Issue refresh tokens.
    pub refresh_tokens: bool,
    /// Refuse refresh grants (so the provider must fall back).
    pub refuse_refresh: bool,
    /// Refuse every token request with `invalid_client`.
    pub refuse_all: bool,
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

/// What the issuer was asked.
#[derive(Debug, Default)]
pub struct Log {
    /// Discovery documents served.
    pub discoveries: usize,
    /// The form of every token request, in order.
    pub token_requests: Vec<HashMap<String, String>>,
}

/// The running issuer; stops when dropped.
pub struct Issuer {
    /// The issuer URL (`http://127.0.0.1:<port>/realms/plant`).
    pub base: String,
    log: Arc<Mutex<Log>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Issuer {
    /// Serves on a free loopback port.
    pub async fn start(behaviour: Behaviour) -> Issuer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the issuer");
        let addr = listener.local_addr().expect("the issuer's address");
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

    /// What it was asked so far.
    pub fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `grant_type` of every token request, in order.
    pub fn grants(&self) -> Vec<String> {
        let log = self.log();
        log.token_requests
            .iter()
            .map(|f| f.get("grant_type").cloned().unwrap_or_default())
            .collect()
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
        log.lock().unwrap_or_else(|p| p.into_inner()).discoveries += 1;
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
        let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
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
