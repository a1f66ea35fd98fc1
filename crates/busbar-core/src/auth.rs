//! Credentials that change: tokens fetched from a provider and refreshed before they expire.
//!
//! A transport asks its [`TokenProvider`] for a token when it connects, again shortly before
//! the token expires (then reconnecting with the new one, keeping every subscription), and
//! whenever it reconnects after the token's lifetime. Where the token goes (MQTT user name or
//! password, AMQP/NATS/Redis credentials) is the transport's business, steered by
//! [`TokenPlacement`]; the refreshing itself is written once, in the transport kit.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::BoxError;
use crate::transport::BoxFuture;

/// One token and when it stops being valid.
#[derive(Clone)]
pub struct Token {
    /// The secret.
    pub value: String,
    /// When it expires; `None` for a token that does not.
    pub expires_at: Option<Instant>,
}

impl Token {
    /// A token that never expires.
    pub fn forever(value: impl Into<String>) -> Self {
        Token { value: value.into(), expires_at: None }
    }

    /// A token valid for `lifetime` from now.
    pub fn valid_for(value: impl Into<String>, lifetime: Duration) -> Self {
        Token { value: value.into(), expires_at: Instant::now().checked_add(lifetime) }
    }

    /// When to fetch the next one: after 80 % of the remaining lifetime, and at least one
    /// second before expiry where the lifetime allows.
    pub fn refresh_at(&self) -> Option<Instant> {
        let expires = self.expires_at?;
        let now = Instant::now();
        let left = expires.saturating_duration_since(now);
        let early = (left / 5).max(Duration::from_secs(1)).min(left);
        Some(expires - early)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        f.debug_struct("Token")
            .field("value", &"***")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Supplies tokens on demand.
pub trait TokenProvider: Send + Sync + 'static {
    /// A currently valid token, or why there is none (its text must never contain a
    /// secret: transports show it in their connection errors).
    fn token(&self) -> BoxFuture<'_, Result<Token, BoxError>>;
}

/// A provider that always gives the same token.
#[derive(Clone)]
pub struct StaticToken(pub Token);

impl TokenProvider for StaticToken {
    fn token(&self) -> BoxFuture<'_, Result<Token, BoxError>> {
        let token = self.0.clone();
        Box::pin(async move { Ok(token) })
    }
}

/// Where a transport puts the token when the protocol has a user name and a password (the
/// CELINE broker reads it as the password, SERMAS as the user name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenPlacement {
    /// The token is the user name; the password is the URL's, if any.
    Username,
    /// The token is the password; the user name is the URL's, if any.
    #[default]
    Password,
}

/// A shared provider, as connect options carry it.
pub type SharedTokenProvider = Arc<dyn TokenProvider>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refreshes_before_expiry_and_hides_the_secret() {
        let t = Token::valid_for("s3cret", Duration::from_secs(100));
        let at = t.refresh_at().expect("expires");
        let before = t.expires_at.expect("expires").saturating_duration_since(at);
        assert!(
            before >= Duration::from_secs(19) && before <= Duration::from_secs(21),
            "{before:?}"
        );
        assert!(Token::forever("x").refresh_at().is_none());
        assert!(!format!("{t:?}").contains("s3cret"));
    }
}
