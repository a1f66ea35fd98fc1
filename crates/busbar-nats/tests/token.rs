//! Token authentication: a token in the URL, a token provider, a wrong token, and a refresh
//! before expiry that reconnects without losing the subscriptions.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use busbar_core::auth::{StaticToken, Token, TokenPlacement, TokenProvider};
use busbar_core::error::{BoxError, ConnectErrorKind};
use busbar_core::transport::{BoxFuture, ConnectOptions};
use busbar_core::{Connection, ConnectionEvent};
use busbar_nats::NatsTransport;
use busbar_testkit::{BrokerProcess, NatsConfig, skip_if_missing};

async fn token_server(test: &str) -> Option<BrokerProcess> {
    let config = NatsConfig::new().line("authorization { token: \"s3cret\" }");
    skip_if_missing(test, BrokerProcess::nats_with_config(config).await)
}

fn static_token(value: &str) -> ConnectOptions {
    ConnectOptions::new()
        .token(Arc::new(StaticToken(Token::forever(value))), TokenPlacement::Password)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_the_url_or_a_provider() {
    let Some(server) = token_server("token_auth").await else { return };
    let port = server.port();
    NatsTransport::connect(&format!("nats://s3cret@127.0.0.1:{port}"), ConnectOptions::new())
        .await
        .expect("the URL's token");
    NatsTransport::connect(&format!("nats://127.0.0.1:{port}"), static_token("s3cret"))
        .await
        .expect("the provider's token");
    for (url, options) in [
        (format!("nats://wrong-token@127.0.0.1:{port}"), ConnectOptions::new()),
        (format!("nats://127.0.0.1:{port}"), static_token("wrong-token")),
    ] {
        let err = NatsTransport::connect(&url, options).await.err().expect("a wrong token");
        assert_eq!(err.kind(), ConnectErrorKind::Refused, "{err}");
        let text = err.to_string();
        assert!(text.contains("authorization violation"), "{text}");
        assert!(!text.contains("wrong-token"), "the token leaked into the error: {text}");
    }
}

/// Hands out short-lived tokens and counts how often it was asked.
struct Expiring {
    calls: AtomicUsize,
}

impl TokenProvider for Expiring {
    fn token(&self) -> BoxFuture<'_, Result<Token, BoxError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(Token::valid_for("s3cret", Duration::from_millis(1_500))) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_refreshed_before_expiry_and_subscriptions_survive() {
    let Some(server) = token_server("token_refresh").await else { return };
    let provider = Arc::new(Expiring { calls: AtomicUsize::new(0) });
    let conn = Connection::new(Arc::new(
        NatsTransport::connect(
            &server.url(),
            ConnectOptions::new().token(provider.clone(), TokenPlacement::Password),
        )
        .await
        .expect("connect"),
    ));
    let mut events = conn.events();
    let mut sub = conn.subscribe("fleet/#").await.expect("subscribe");
    let reconnected = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = events.next().await {
            if matches!(ev, ConnectionEvent::Reconnected { .. }) {
                return true;
            }
        }
        false
    })
    .await
    .expect("a reconnect with the refreshed token");
    assert!(reconnected);
    assert!(provider.calls.load(Ordering::SeqCst) >= 2, "the token was never fetched again");
    conn.publish_bytes("fleet/a", &b"after refresh"[..]).await.expect("publish");
    let m = tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(m.payload.to_bytes().expect("bytes").as_ref(), b"after refresh");
}
