//! Who a connection says it is: the user name and password of its URL, tokens from a
//! provider placed in them, and the task that fetches the next token before the current one
//! expires.

use std::fmt;

use busbar_core::auth::{SharedTokenProvider, Token, TokenPlacement};
use busbar_core::error::{ConnectError, ConnectErrorKind, OpError};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A user name and a password, either of which may be absent. Its `Debug` output never
/// shows the password.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Login {
    /// The user name.
    pub user: Option<String>,
    /// The password.
    pub password: Option<String>,
}

impl Login {
    /// This login with `token` in the place `placement` says: the user name or the password
    /// (the other half stays this login's).
    pub fn with_token(&self, token: &Token, placement: TokenPlacement) -> Login {
        let mut login = self.clone();
        match placement {
            TokenPlacement::Username => login.user = Some(token.value.clone()),
            TokenPlacement::Password => login.password = Some(token.value.clone()),
        }
        login
    }

    /// This login, or with the token (if any) in its place.
    pub fn with(&self, token: Option<&Token>, placement: TokenPlacement) -> Login {
        match token {
            Some(t) => self.with_token(t, placement),
            None => self.clone(),
        }
    }

    /// True when neither half is set.
    pub fn is_empty(&self) -> bool {
        self.user.is_none() && self.password.is_none()
    }
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("user", &self.user.as_ref().map(|_| "***"))
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// The provider's first token, or a connection error of kind `Credentials` (whose text is
/// the provider's, which must never hold the secret).
pub async fn first_token(provider: &SharedTokenProvider) -> Result<Token, ConnectError> {
    provider.token().await.map_err(|e| {
        OpError::new(ConnectErrorKind::Credentials, format!("no token from the provider: {e}"))
            .with_source(e)
    })
}

/// Fetches each next token shortly before the current one expires (see
/// [`Token::refresh_at`]) and hands it to the connection on a channel, so a slow provider
/// never holds the connection up. A failing provider is retried with
/// [`backoff`](crate::backoff::backoff). The task ends at `shutdown`, when the connection
/// stops reading tokens, with a token that never expires, or when the refresher is dropped.
pub struct Refresher {
    tokens: mpsc::Receiver<Token>,
    task: JoinHandle<()>,
}

impl Refresher {
    /// Starts refreshing after `current`.
    pub fn start(
        provider: SharedTokenProvider,
        current: Token,
        shutdown: CancellationToken,
    ) -> Refresher {
        let (tx, tokens) = mpsc::channel(1);
        let task = tokio::spawn(refresh(provider, current, shutdown, tx));
        Refresher { tokens, task }
    }

    /// The next token, once fetched; `None` when no more will come.
    pub async fn next(&mut self) -> Option<Token> {
        self.tokens.recv().await
    }
}

/// The next token from `refresher`, or never when the connection has none: a supervisor
/// selects on it beside its broker's events.
pub async fn next_token(refresher: &mut Option<Refresher>) -> Option<Token> {
    match refresher {
        Some(r) => r.next().await,
        None => std::future::pending().await,
    }
}

impl Drop for Refresher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn refresh(
    provider: SharedTokenProvider,
    mut current: Token,
    shutdown: CancellationToken,
    to_connection: mpsc::Sender<Token>,
) {
    let mut failures: u32 = 0;
    while let Some(at) = current.refresh_at() {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(at) => {}
        }
        match provider.token().await {
            Ok(token) => {
                failures = 0;
                current = token.clone();
                if to_connection.send(token).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "token refresh failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(crate::backoff::backoff(failures)) => {}
                }
                failures = failures.saturating_add(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use busbar_core::auth::TokenProvider;
    use busbar_core::error::BoxError;
    use busbar_core::transport::BoxFuture;

    use super::*;

    #[test]
    fn tokens_go_where_they_are_placed_and_never_show() {
        let url = Login { user: Some("u".into()), password: Some("p".into()) };
        let t = Token::forever("tok");
        let as_password = url.with_token(&t, TokenPlacement::Password);
        assert_eq!(
            (as_password.user.as_deref(), as_password.password.as_deref()),
            (Some("u"), Some("tok"))
        );
        let as_user = url.with(Some(&t), TokenPlacement::Username);
        assert_eq!(
            (as_user.user.as_deref(), as_user.password.as_deref()),
            (Some("tok"), Some("p"))
        );
        assert!(!format!("{as_user:?}").contains("tok"));
    }

    struct Counting(AtomicU32);

    impl TokenProvider for Counting {
        fn token(&self) -> BoxFuture<'_, Result<Token, BoxError>> {
            let n = self.0.fetch_add(1, Ordering::Relaxed);
            Box::pin(async move {
                if n == 0 {
                    return Err("the issuer is down".into());
                }
                Ok(Token::valid_for(format!("t{n}"), Duration::from_secs(10)))
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_next_token_comes_before_expiry_despite_a_failure() {
        let provider: SharedTokenProvider = Arc::new(Counting(AtomicU32::new(0)));
        let first = Token::valid_for("t0", Duration::from_secs(10));
        let mut refresher = Refresher::start(provider, first, CancellationToken::new());
        let next = refresher.next().await.expect("a token");
        assert_eq!(next.value, "t1");
    }
}
