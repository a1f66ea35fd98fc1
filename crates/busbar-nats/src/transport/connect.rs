//! Building async-nats' connect options from the settings: credentials and creds files,
//! tokens (presented by an auth callback at every (re)connect, refreshed before they
//! expire), TLS, reconnects and the event callback; and what a failed connect means.

use std::sync::{Arc, Mutex, Weak};

use busbar_core::auth::{SharedTokenProvider, Token, TokenPlacement};
use busbar_core::error::{BoxError, ConnectError, ConnectErrorKind, OpError};
use busbar_transport_kit::backoff::backoff;
use busbar_transport_kit::endpoint::config_error;
use busbar_transport_kit::login::{Login, Refresher};
use busbar_transport_kit::servers::ServerOrder;
use tokio::time::Instant;

use super::events::EventSink;
use super::pump::lock;
use super::state::Shared;
use crate::settings::{Credentials, Settings};

/// The current token, fetched again once it has expired: what the auth callback presents.
pub(super) struct TokenCache {
    provider: SharedTokenProvider,
    current: Mutex<Token>,
}

impl TokenCache {
    pub(super) fn new(provider: SharedTokenProvider, first: Token) -> Arc<TokenCache> {
        Arc::new(TokenCache { provider, current: Mutex::new(first) })
    }

    async fn valid(self: Arc<Self>) -> Result<Token, BoxError> {
        let current = lock(&self.current).clone();
        if current.expires_at.is_none_or(|at| Instant::now() < at) {
            return Ok(current);
        }
        // The provider's future need not be `Sync`, which async-nats' callback requires:
        // run it in a task of its own and wait for that.
        let provider = self.provider.clone();
        let fresh = tokio::spawn(async move { provider.token().await }).await??;
        *lock(&self.current) = fresh.clone();
        Ok(fresh)
    }
}

/// Puts each token the refresher fetches into the cache, where the auth callback presents
/// it on the reconnect made here, which keeps every subscription.
pub(super) async fn present_fresh_tokens(
    shared: Weak<Shared>,
    cache: Arc<TokenCache>,
    mut refresher: Refresher,
) {
    while let Some(token) = refresher.next().await {
        *lock(&cache.current) = token;
        let Some(s) = shared.upgrade() else { return };
        if let Err(e) = s.client.force_reconnect().await {
            tracing::warn!(error = %e, "could not reconnect with the new token");
        }
    }
}

/// async-nats' options for `settings`: presenting `client_id`, the credentials of the URL or
/// the tokens of `tokens`, and reporting to `sink`.
pub(super) async fn options(
    settings: &Settings,
    client_id: &str,
    tokens: Option<&Arc<TokenCache>>,
    placement: TokenPlacement,
    sink: Arc<EventSink>,
) -> Result<async_nats::ConnectOptions, ConnectError> {
    let mut nats = match tokens {
        Some(cache) => {
            let cache = cache.clone();
            let url_login = url_login(&settings.credentials);
            // Called at every (re)connect, so a reconnect always presents a valid token.
            async_nats::ConnectOptions::with_auth_callback(move |_nonce| {
                let cache = cache.clone();
                let url_login = url_login.clone();
                async move {
                    let token = cache.valid().await.map_err(async_nats::AuthError::new)?;
                    Ok(token_auth(&url_login, &token, placement))
                }
            })
        }
        None => match &settings.credentials {
            Credentials::None => async_nats::ConnectOptions::new(),
            Credentials::UserPassword { user, password } => {
                async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
            }
            Credentials::Token(t) => async_nats::ConnectOptions::with_token(t.clone()),
            Credentials::CredsFile(path) => {
                async_nats::ConnectOptions::with_credentials_file(path).await.map_err(|e| {
                    config_error(format!(
                        "cannot use the NATS credentials file {}: {e}",
                        path.display()
                    ))
                })?
            }
        },
    };
    nats = nats
        .name(client_id)
        .subscription_capacity(settings.subscription_capacity)
        .connection_timeout(settings.connect_timeout)
        .max_reconnects(None)
        .reconnect_delay_callback(|attempt| backoff(attempt as u32))
        .event_callback(move |event| {
            sink.on_event(event);
            std::future::ready(())
        });
    if settings.server_order == ServerOrder::Listed {
        // async-nats shuffles the list unless told; listed means the first is preferred.
        nats = nats.retain_servers_order();
    }
    if let Some(tls) = &settings.tls {
        nats = nats
            .require_tls(true)
            .tls_client_config(Arc::unwrap_or_clone(busbar_tls::client_config(tls)?));
    }
    Ok(nats)
}

/// What a failed first connect means, shown with the URL without its secrets.
pub(super) fn connect_error(e: async_nats::ConnectError, shown: &str) -> ConnectError {
    use async_nats::ConnectErrorKind as K;
    let (kind, reason) = match e.kind() {
        K::AuthorizationViolation => (
            ConnectErrorKind::Refused,
            "authorization violation: the server refused the credentials".to_owned(),
        ),
        // Signing the server's nonce failed, or the token provider gave no token.
        K::Authentication => (ConnectErrorKind::Credentials, format!("authentication failed: {e}")),
        K::Tls => (ConnectErrorKind::Tls, format!("TLS handshake failed: {e}")),
        // async-nats reports a certificate that does not verify, and a TLS alert from the
        // server (a client certificate it refused), as I/O errors.
        K::Io if is_tls_failure(&e.to_string()) => {
            (ConnectErrorKind::Tls, format!("TLS handshake failed: {e}"))
        }
        K::TimedOut => (ConnectErrorKind::TimedOut, "no answer from the server in time".to_owned()),
        K::Io | K::Dns | K::MaxReconnects => (ConnectErrorKind::Unreachable, e.to_string()),
        K::ServerParse => (ConnectErrorKind::Broker, e.to_string()),
    };
    OpError::new(kind, format!("not connected to {shown}: {reason}")).with_source(e)
}

/// True for the text of an I/O error that is a TLS failure.
fn is_tls_failure(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    text.contains("certificate") || text.contains("fatal alert")
}

/// The user name and password of the URL (a token in the URL gives none: a token provider
/// takes its place).
fn url_login(credentials: &Credentials) -> Login {
    match credentials {
        Credentials::UserPassword { user, password } => {
            Login { user: Some(user.clone()), password: Some(password.clone()) }
        }
        _ => Login::default(),
    }
}

/// The NATS credentials for a token: NATS' own token field, unless the URL names a user (then
/// the token is that user's password) or the token is to be the user name.
fn token_auth(url_login: &Login, token: &Token, placement: TokenPlacement) -> async_nats::Auth {
    let mut auth = async_nats::Auth::new();
    match (placement, &url_login.user) {
        (TokenPlacement::Password, None) => auth.token = Some(token.value.clone()),
        _ => {
            let login = url_login.with_token(token, placement);
            auth.username = login.user;
            auth.password = Some(login.password.unwrap_or_default());
        }
    }
    auth
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_goes_where_the_url_and_placement_say() {
        let t = Token::forever("tok");
        let none = url_login(&Credentials::None);
        let a = token_auth(&none, &t, TokenPlacement::Password);
        assert_eq!((a.token.as_deref(), a.username.as_deref()), (Some("tok"), None));
        let up = url_login(&Credentials::UserPassword { user: "u".into(), password: "p".into() });
        let a = token_auth(&up, &t, TokenPlacement::Password);
        assert_eq!((a.username.as_deref(), a.password.as_deref()), (Some("u"), Some("tok")));
        let a = token_auth(&up, &t, TokenPlacement::Username);
        assert_eq!((a.username.as_deref(), a.password.as_deref()), (Some("tok"), Some("p")));
        let a = token_auth(&none, &t, TokenPlacement::Username);
        assert_eq!((a.username.as_deref(), a.password.as_deref()), (Some("tok"), Some("")));
        let token_url = url_login(&Credentials::Token("url-token".into()));
        assert!(token_url.is_empty(), "a provider's token takes the URL token's place");
    }
}
