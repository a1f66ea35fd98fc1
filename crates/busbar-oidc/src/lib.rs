//! OpenID Connect client-credentials tokens for busbar connections.
//!
//! [`OidcProvider`] is a [`TokenProvider`]: give it to a connection's options and the
//! transport logs in with the access token, and reconnects (or re-authenticates) with a new
//! one before the current one expires, keeping its subscriptions. It
//!
//! * fetches the issuer's discovery document (`/.well-known/openid-configuration`) once, for
//!   the token endpoint;
//! * asks for a token with the client-credentials grant, sending `scope` only when one is
//!   configured;
//! * keeps the token until its refresh point, computed from its lifetime less a safety
//!   margin (300 s of lifetime when the issuer does not say);
//! * renews with the refresh-token grant when the issuer gave a refresh token, and falls back
//!   to client credentials when that fails.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use busbar_core::auth::TokenPlacement;
//! use busbar_core::transport::ConnectOptions;
//! use busbar_oidc::{OidcProvider, OidcSettings};
//!
//! let provider = OidcProvider::new(OidcSettings::new(
//!     "https://id.example.com/realms/plant",
//!     "gateway-7",
//!     std::env::var("OIDC_SECRET")?,
//! ))?
//! .with_scope("mqtt");
//! let options = ConnectOptions::new().token(Arc::new(provider), TokenPlacement::Username);
//! # let _ = options; Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod error;
mod http;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busbar_core::auth::{Token, TokenProvider};
use busbar_core::transport::BoxFuture;
use busbar_tls::TlsSettings;
use serde::Deserialize;
use tokio::sync::OnceCell;
use tokio::time::Instant;

pub use error::OidcError;

/// Where and how to get tokens.
#[derive(Clone)]
pub struct OidcSettings {
    /// The issuer URL (e.g. `https://id.example.com/realms/plant`); discovery is read below it.
    pub issuer: String,
    /// The OAuth client id.
    pub client_id: String,
    /// The OAuth client secret.
    pub client_secret: String,
    /// Space-separated scopes to ask for; `None` sends no `scope` at all.
    pub scope: Option<String>,
    /// How long before its expiry a token counts as used up (30 s by default).
    pub margin: Duration,
    /// The deadline of each HTTP request (10 s by default).
    pub timeout: Duration,
    /// Certificate authorities for an `https` issuer (the system's when `ca` is unset).
    pub tls: TlsSettings,
}

impl OidcSettings {
    /// Settings with the default margin and timeout and no scope.
    pub fn new(
        issuer: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        OidcSettings {
            issuer: issuer.into(),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            scope: None,
            margin: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            tls: TlsSettings::default(),
        }
    }

    /// Asks for `scope` (space-separated).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Sets the safety margin before expiry.
    pub fn margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }
}

impl fmt::Debug for OidcSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcSettings")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &"***")
            .field("scope", &self.scope)
            .field("margin", &self.margin)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A lifetime the issuer does not state is taken as this (what common issuers default to).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

/// Client-credentials tokens from an OIDC issuer. Cheap to clone; clones share the cache.
#[derive(Clone)]
pub struct OidcProvider {
    inner: Arc<Inner>,
}

struct Inner {
    settings: OidcSettings,
    http: busbar_http::HttpClient,
    /// The token endpoint, from discovery (read once, shared with scoped siblings).
    endpoint: Arc<OnceCell<String>>,
    cache: Mutex<Option<Cached>>,
    /// One fetch at a time: callers that wait find the fresh token in the cache.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
struct Cached {
    token: Token,
    refresh_token: Option<String>,
}

#[derive(Deserialize)]
struct Discovery {
    token_endpoint: String,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<f64>,
    #[serde(default)]
    refresh_token: Option<String>,
}

#[derive(Deserialize)]
struct OAuthError {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

impl OidcProvider {
    /// A provider for `settings`; nothing is fetched until the first token is asked for.
    pub fn new(settings: OidcSettings) -> Result<Self, OidcError> {
        let issuer = settings.issuer.trim();
        let secure = issuer.starts_with("https://");
        if !secure && !issuer.starts_with("http://") {
            return Err(OidcError::Settings(format!(
                "the issuer must be an http:// or https:// URL, not {issuer:?}"
            )));
        }
        if settings.client_id.is_empty() {
            return Err(OidcError::Settings("the client id is empty".into()));
        }
        let tls = if secure {
            Some(
                busbar_tls::client_config(&settings.tls)
                    .map_err(|e| OidcError::Settings(e.to_string()))?,
            )
        } else {
            None
        };
        let http = http::client(settings.timeout, tls);
        Ok(OidcProvider {
            inner: Arc::new(Inner {
                settings,
                http,
                endpoint: Arc::new(OnceCell::new()),
                cache: Mutex::new(None),
                fetching: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// A provider for the same client whose scope also holds `scope` (added once), with a
    /// cache of its own, so tokens for a broker audience never serve other requests. The
    /// discovery document is shared.
    pub fn with_scope(&self, scope: &str) -> OidcProvider {
        let mut settings = self.inner.settings.clone();
        let mut words: Vec<&str> =
            settings.scope.as_deref().unwrap_or_default().split_whitespace().collect();
        for extra in scope.split_whitespace() {
            if !words.contains(&extra) {
                words.push(extra);
            }
        }
        settings.scope = (!words.is_empty()).then(|| words.join(" "));
        OidcProvider {
            inner: Arc::new(Inner {
                settings,
                http: self.inner.http.clone(),
                endpoint: self.inner.endpoint.clone(),
                cache: Mutex::new(None),
                fetching: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The scope this provider asks for.
    pub fn scope(&self) -> Option<&str> {
        self.inner.settings.scope.as_deref()
    }

    /// A valid access token: the cached one until its refresh point, else a new one.
    pub async fn access_token(&self) -> Result<Token, OidcError> {
        if let Some(token) = self.fresh() {
            return Ok(token);
        }
        let _one_at_a_time = self.inner.fetching.lock().await;
        if let Some(token) = self.fresh() {
            return Ok(token);
        }
        let endpoint = self.token_endpoint().await?;
        let refresh = self.cached().and_then(|c| c.refresh_token);
        let response = match refresh {
            Some(refresh_token) => match self.refresh(&endpoint, &refresh_token).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "refresh grant failed; using client credentials");
                    self.client_credentials(&endpoint).await?
                }
            },
            None => self.client_credentials(&endpoint).await?,
        };
        let token = self.to_token(&response);
        let cached = Cached { token: token.clone(), refresh_token: response.refresh_token };
        *self.inner.cache.lock().unwrap_or_else(|p| p.into_inner()) = Some(cached);
        Ok(token)
    }

    fn cached(&self) -> Option<Cached> {
        self.inner.cache.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The cached token while it is before its refresh point: after it, whoever asks (the
    /// transport's refresher first of all) gets a new one.
    fn fresh(&self) -> Option<Token> {
        let cached = self.cached()?;
        let due = cached.token.refresh_at()?;
        (Instant::now() < due).then_some(cached.token)
    }

    /// The token as busbar uses it: valid until the issuer's expiry less the margin (half the
    /// lifetime where the margin would take more).
    fn to_token(&self, response: &TokenResponse) -> Token {
        let lifetime = response
            .expires_in
            .filter(|s| s.is_finite() && *s > 0.0)
            .map_or(DEFAULT_LIFETIME, Duration::from_secs_f64);
        let usable = lifetime.saturating_sub(self.inner.settings.margin).max(lifetime / 2);
        Token::valid_for(response.access_token.clone(), usable)
    }

    async fn token_endpoint(&self) -> Result<String, OidcError> {
        let issuer = self.inner.settings.issuer.trim().trim_end_matches('/');
        let url = format!("{issuer}/.well-known/openid-configuration");
        let endpoint = self
            .inner
            .endpoint
            .get_or_try_init(|| async {
                let response = http::get(&self.inner.http, &url).await?;
                let discovery: Discovery = parse(&url, response)?;
                Ok::<_, OidcError>(discovery.token_endpoint)
            })
            .await?;
        Ok(endpoint.clone())
    }

    async fn client_credentials(&self, endpoint: &str) -> Result<TokenResponse, OidcError> {
        let s = &self.inner.settings;
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", s.client_id.as_str()),
            ("client_secret", s.client_secret.as_str()),
        ];
        if let Some(scope) = s.scope.as_deref() {
            form.push(("scope", scope));
        }
        parse(endpoint, http::post_form(&self.inner.http, endpoint, &form).await?)
    }

    async fn refresh(
        &self,
        endpoint: &str,
        refresh_token: &str,
    ) -> Result<TokenResponse, OidcError> {
        let s = &self.inner.settings;
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", s.client_id.as_str()),
            ("client_secret", s.client_secret.as_str()),
        ];
        parse(endpoint, http::post_form(&self.inner.http, endpoint, &form).await?)
    }
}

/// Reads a JSON answer, or turns an error status into [`OidcError::Refused`] with the OAuth
/// error it names.
fn parse<T: serde::de::DeserializeOwned>(
    url: &str,
    response: busbar_http::HttpResponse,
) -> Result<T, OidcError> {
    if !response.is_success() {
        let detail = match serde_json::from_slice::<OAuthError>(&response.body) {
            Ok(e) => match e.error_description {
                Some(d) => format!("{}: {d}", e.error),
                None => e.error,
            },
            Err(_) => String::from_utf8_lossy(&response.body).chars().take(200).collect(),
        };
        return Err(OidcError::Refused { url: url.to_owned(), status: response.status, detail });
    }
    serde_json::from_slice(&response.body)
        .map_err(|e| OidcError::BadResponse { url: url.to_owned(), reason: e.to_string() })
}

impl TokenProvider for OidcProvider {
    fn token(&self) -> BoxFuture<'_, Result<Token, busbar_core::error::BoxError>> {
        Box::pin(async move { Ok(self.access_token().await?) })
    }
}

impl fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcProvider").field("settings", &self.inner.settings).finish()
    }
}
