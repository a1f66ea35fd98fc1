//! The SERMAS platform's own token service, as its clients (the ROS proxy) use it: an app
//! client's access token from `POST <api>/platform/token/access_token` with
//! `{appId, clientId, clientSecret}`, renewed with `POST <api>/platform/token/refresh` and
//! `{appId, clientId, refreshToken, accessToken}` while the refresh token lasts, and asked
//! for afresh when it does not (or the platform refuses it). The answers are Keycloak token
//! responses (`access_token`, `expires_in`, `refresh_token`, `refresh_expires_in`).
//!
//! A connection given this provider renews its login before the token expires, as with any
//! busbar token provider (the token is the MQTT user name on SERMAS:
//! `TokenPlacement::Username`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use busbar_core::auth::{Token, TokenProvider};
use busbar_core::error::BoxError;
use busbar_core::transport::BoxFuture;
use busbar_http::{HttpClient, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;

/// A Keycloak token response, as the platform passes it on.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    refresh_expires_in: Option<u64>,
}

/// When a token response gives no lifetime: Keycloak's default access token lifespan.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

/// A refresh token and until when it may be used.
struct Refresh {
    token: String,
    access_token: String,
    until: Option<Instant>,
}

/// Tokens for one app client from the SERMAS platform's token service.
#[derive(Clone)]
pub struct SermasTokenProvider {
    inner: Arc<Inner>,
}

struct Inner {
    /// The API's base, `http(s)://host[:port]/api`.
    api: String,
    app_id: String,
    client_id: String,
    client_secret: String,
    http: HttpClient,
    refresh: Mutex<Option<Refresh>>,
}

impl std::fmt::Debug for SermasTokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("SermasTokenProvider")
            .field("api", &self.inner.api)
            .field("app_id", &self.inner.app_id)
            .field("client_id", &self.inner.client_id)
            .finish_non_exhaustive()
    }
}

impl SermasTokenProvider {
    /// Tokens for the client `client_id` of the app `app_id` from the platform whose API is
    /// at `api` (`https://sermas.example/api`; `http://` for a local one), each exchange
    /// bounded by 10 s.
    ///
    /// # Errors
    ///
    /// A message naming what is wrong with `api` (not http or https, or no TLS settings
    /// could be made for it).
    pub fn new(
        api: &str,
        app_id: &str,
        client_id: &str,
        client_secret: &str,
    ) -> Result<SermasTokenProvider, String> {
        let api = api.trim_end_matches('/').to_owned();
        let mut http = HttpClient::new(Duration::from_secs(10));
        http.max_body = 256 * 1024;
        if api.starts_with("https://") {
            let tls = busbar_tls::client_config(&busbar_tls::TlsSettings::default())
                .map_err(|e| format!("TLS for the SERMAS token service: {e}"))?;
            http.tls = Some(tls);
        } else if !api.starts_with("http://") {
            return Err(format!(
                "the SERMAS API must be an http:// or https:// URL, not {:?}",
                busbar_core::url::redact(&api)
            ));
        }
        Ok(SermasTokenProvider {
            inner: Arc::new(Inner {
                api,
                app_id: app_id.to_owned(),
                client_id: client_id.to_owned(),
                client_secret: client_secret.to_owned(),
                http,
                refresh: Mutex::new(None),
            }),
        })
    }

    /// A fresh access token: renewed with the refresh token while it lasts, asked for with
    /// the client's secret otherwise (or when the platform refuses the refresh).
    pub async fn access_token(&self) -> Result<Token, String> {
        let refresh = {
            let held = self.inner.refresh.lock().unwrap_or_else(|p| p.into_inner());
            held.as_ref()
                .filter(|r| r.until.is_none_or(|until| Instant::now() < until))
                .map(|r| (r.token.clone(), r.access_token.clone()))
        };
        if let Some((refresh_token, access_token)) = refresh {
            let body = json!({
                "appId": self.inner.app_id,
                "clientId": self.inner.client_id,
                "refreshToken": refresh_token,
                "accessToken": access_token,
            });
            match self.exchange("platform/token/refresh", &body).await {
                Ok(token) => return Ok(token),
                Err(why) => tracing::debug!("SERMAS token refresh refused, asking afresh: {why}"),
            }
        }
        let body = json!({
            "appId": self.inner.app_id,
            "clientId": self.inner.client_id,
            "clientSecret": self.inner.client_secret,
        });
        self.exchange("platform/token/access_token", &body).await
    }

    /// POSTs `body` to `<api>/<path>` and keeps the refresh token of the answer.
    async fn exchange(&self, path: &str, body: &serde_json::Value) -> Result<Token, String> {
        let url = format!("{}/{path}", self.inner.api);
        let request = HttpRequest::new("POST", &url)
            .header("accept", "application/json")
            .header("content-type", "application/json")
            .body(body.to_string());
        // Messages name the service without what its URL may carry (a user and password).
        let shown = busbar_core::url::redact(&url);
        let response =
            self.inner.http.send(request).await.map_err(|e| e.to_string().replace(&url, &shown))?;
        let answer = parse(&shown, &response)?;
        let lifetime = answer.expires_in.map_or(DEFAULT_LIFETIME, Duration::from_secs);
        let token = Token::valid_for(answer.access_token.clone(), lifetime);
        let refresh = answer.refresh_token.map(|refresh| Refresh {
            token: refresh,
            access_token: answer.access_token,
            until: answer
                .refresh_expires_in
                .filter(|s| *s > 0)
                .map(|s| Instant::now() + Duration::from_secs(s)),
        });
        *self.inner.refresh.lock().unwrap_or_else(|p| p.into_inner()) = refresh;
        Ok(token)
    }
}

/// The token response of a successful exchange; why not, otherwise (without any secret:
/// the platform's own message is not repeated, only the status).
fn parse(url: &str, response: &HttpResponse) -> Result<TokenResponse, String> {
    if !response.is_success() {
        return Err(format!("the SERMAS token service at {url} answered {}", response.status));
    }
    let answer: TokenResponse = serde_json::from_slice(&response.body)
        .map_err(|e| format!("the SERMAS token service at {url} sent no token: {e}"))?;
    if answer.access_token.is_empty() {
        return Err(format!("the SERMAS token service at {url} sent an empty token"));
    }
    Ok(answer)
}

impl TokenProvider for SermasTokenProvider {
    fn token(&self) -> BoxFuture<'_, Result<Token, BoxError>> {
        Box::pin(async move { self.access_token().await.map_err(BoxError::from) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_service_without_its_secrets() {
        let err = SermasTokenProvider::new("ftp://user:s3cret@host/api", "app", "client", "x")
            .expect_err("not http");
        assert!(!err.contains("s3cret"), "{err}");
        let shown = busbar_core::url::redact("https://user:s3cret@host/api/platform/token");
        let response = HttpResponse { status: 500, headers: Vec::new(), body: Default::default() };
        let err = parse(&shown, &response).err().unwrap_or_default();
        assert!(err.contains("answered 500") && !err.contains("s3cret"), "{err}");
    }
}
