//! Token authentication against the machine's RabbitMQ: the token is the password of a user
//! made for the test (`rabbitmqctl add_user`, deleted afterwards), and a refreshed token is
//! presented by a reconnect that keeps the subscriptions.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use busbar_amqp::AmqpTransport;
use busbar_core::auth::{StaticToken, Token, TokenPlacement, TokenProvider};
use busbar_core::error::{BoxError, ConnectErrorKind};
use busbar_core::transport::{BoxFuture, ConnectOptions};
use busbar_core::{Connection, ConnectionEvent};
use busbar_testkit::{BrokerKind, TestkitError, next_event_within, shared_broker, skip_if_missing};

fn rabbitmqctl(args: &[&str]) -> bool {
    std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A RabbitMQ user that exists for one test.
struct TestUser(String);

impl TestUser {
    fn add(password: &str) -> TestUser {
        let name = format!("busbar-token-{}", uuid::Uuid::new_v4().simple());
        assert!(rabbitmqctl(&["add_user", &name, password]), "add_user");
        assert!(rabbitmqctl(&["set_permissions", "-p", "/", &name, ".*", ".*", ".*"]), "perms");
        TestUser(name)
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = rabbitmqctl(&["delete_user", &self.0]);
    }
}

async fn broker(test: &str) -> Option<u16> {
    let broker = shared_broker(BrokerKind::Amqp).await?;
    let ctl = std::process::Command::new("rabbitmqctl").arg("help").output();
    skip_if_missing(test, ctl.map_err(|_| TestkitError::BinaryMissing { name: "rabbitmqctl" }))?;
    Some(broker.port())
}

/// Tokens in turn, each valid for `lifetime`; the last one forever.
struct Rotating {
    tokens: Vec<String>,
    next: AtomicUsize,
    lifetime: Duration,
}

impl TokenProvider for Rotating {
    fn token(&self) -> BoxFuture<'_, Result<Token, BoxError>> {
        Box::pin(async move {
            let i = self.next.fetch_add(1, Ordering::SeqCst);
            let last = self.tokens.len() - 1;
            let value = self.tokens[i.min(last)].clone();
            Ok(if i >= last {
                Token::forever(value)
            } else {
                Token::valid_for(value, self.lifetime)
            })
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_presented_as_the_password() {
    let Some(port) = broker("a_token_is_presented_as_the_password").await else { return };
    let token = format!("tok-{}", uuid::Uuid::new_v4().simple());
    let user = TestUser::add(&token);
    let url = format!("amqp://{}@127.0.0.1:{port}/%2f", user.0);
    let provider = Arc::new(StaticToken(Token::forever(token.clone())));
    let conn = AmqpTransport::connect(
        &url,
        ConnectOptions::new().token(provider, TokenPlacement::Password),
    )
    .await
    .expect("the token is accepted");
    drop(conn);
    // A wrong token is refused, clearly, without showing it.
    let wrong = Arc::new(StaticToken(Token::forever("not-the-token")));
    let err =
        AmqpTransport::connect(&url, ConnectOptions::new().token(wrong, TokenPlacement::Password))
            .await
            .expect_err("a wrong token was accepted");
    assert_eq!(err.kind(), ConnectErrorKind::Refused, "{err:?}");
    assert!(err.to_string().contains("user name or password"), "{err}");
    assert!(!err.to_string().contains("not-the-token"), "{err}");
}

/// Before the first token expires the transport fetches the next and reconnects with it
/// (the broker now accepts only the new one); the subscription carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refreshed_token_reconnects_and_keeps_subscriptions() {
    let Some(port) = broker("a_refreshed_token_reconnects_and_keeps_subscriptions").await else {
        return;
    };
    let first = format!("first-{}", uuid::Uuid::new_v4().simple());
    let second = format!("second-{}", uuid::Uuid::new_v4().simple());
    let user = TestUser::add(&first);
    let url = format!("amqp://{}@127.0.0.1:{port}/%2f", user.0);
    let provider = Arc::new(Rotating {
        tokens: vec![first, second.clone()],
        next: AtomicUsize::new(0),
        lifetime: Duration::from_secs(4),
    });
    let conn = Connection::new(Arc::new(
        AmqpTransport::connect(
            &url,
            ConnectOptions::new().token(provider, TokenPlacement::Password),
        )
        .await
        .expect("connect with the first token"),
    ));
    let mut events = conn.events();
    let topic = format!("token/{}", uuid::Uuid::new_v4().simple());
    let mut sub = conn.subscribe(&topic).await.expect("subscribe");
    // Only the second token works from now on: the reconnect must present it.
    assert!(rabbitmqctl(&["change_password", &user.0, &second]), "change_password");
    // Reconnected with the refreshed token.
    next_event_within(&mut events, Duration::from_secs(20), |e| {
        matches!(e, ConnectionEvent::Reconnected { .. })
    })
    .await;
    conn.publish_bytes(&topic, &b"after refresh"[..]).await.expect("publish");
    let m = tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .expect("in time")
        .expect("the subscription survived the refresh");
    assert_eq!(m.payload.to_bytes().expect("bytes").as_ref(), b"after refresh");
}
