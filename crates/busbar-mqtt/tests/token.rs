//! Token authentication: the token as MQTT user name, refreshed before expiry with a
//! reconnect that keeps every subscription.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use busbar_core::auth::{Token, TokenPlacement, TokenProvider};
use busbar_core::error::{BoxError, ConnectErrorKind};
use busbar_core::transport::{BoxFuture, ConnectOptions};
use busbar_core::{Connection, ConnectionEvent};
use busbar_mqtt::MqttTransport;
use busbar_testkit::{BrokerProcess, MosquittoConfig, next_event_within, skip_if_missing};

/// Hands out `tok-1` (valid for two seconds), then `tok-2` for good.
#[derive(Default)]
struct Rotating {
    calls: AtomicUsize,
}

impl TokenProvider for Rotating {
    fn token(&self) -> BoxFuture<'_, Result<Token, BoxError>> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        Box::pin(async move {
            Ok(match n {
                1 => Token::valid_for("tok-1", Duration::from_secs(2)),
                _ => Token::forever("tok-2"),
            })
        })
    }
}

/// A broker whose only users are the two tokens, both with password `pw`.
async fn broker(test: &str) -> Option<BrokerProcess> {
    let config = MosquittoConfig::new().user("tok-1", "pw").user("tok-2", "pw");
    skip_if_missing(test, BrokerProcess::mosquitto(config).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refreshed_token_reconnects_and_keeps_subscriptions() {
    let Some(broker) = broker("a_refreshed_token_reconnects_and_keeps_subscriptions").await else {
        return;
    };
    let url = format!("mqtt://:pw@127.0.0.1:{}", broker.port());
    let provider = Arc::new(Rotating::default());
    let options = ConnectOptions::new().token(provider.clone(), TokenPlacement::Username);
    let conn = Connection::new(Arc::new(
        MqttTransport::connect(&url, options).await.expect("tok-1 accepted"),
    ));
    let mut events = conn.events();
    let mut sub = conn.subscribe("fleet/#").await.expect("subscribe");
    // Reconnected with the new token before the old one expired.
    next_event_within(&mut events, Duration::from_secs(10), |e| {
        matches!(e, ConnectionEvent::Reconnected { .. })
    })
    .await;
    assert_eq!(provider.calls.load(Ordering::SeqCst), 2, "the provider was asked for a new token");
    // Same connection handle, same subscription, new credentials.
    let other = Connection::new(Arc::new(
        MqttTransport::connect(
            &url,
            ConnectOptions::new().token(Arc::new(Rotating::default()), TokenPlacement::Username),
        )
        .await
        .expect("second client"),
    ));
    let mut delivered = false;
    for _ in 0..50 {
        other.publish_bytes("fleet/truck-1", &b"after refresh"[..]).await.expect("publish");
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), sub.recv()).await {
            assert_eq!(m.payload.to_bytes().expect("bytes").as_ref(), b"after refresh");
            delivered = true;
            break;
        }
    }
    assert!(delivered, "the subscription did not survive the token refresh");
}

struct Fixed(&'static str);

impl TokenProvider for Fixed {
    fn token(&self) -> BoxFuture<'_, Result<Token, BoxError>> {
        let value = self.0;
        Box::pin(async move { Ok(Token::forever(value)) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_is_a_clear_error() {
    let Some(broker) = broker("a_rejected_token_is_a_clear_error").await else { return };
    let url = format!("mqtt://:pw@127.0.0.1:{}", broker.port());
    let options = ConnectOptions::new().token(Arc::new(Fixed("stolen")), TokenPlacement::Username);
    let err = MqttTransport::connect(&url, options).await.err().expect("refused");
    assert_eq!(err.kind(), ConnectErrorKind::Refused, "{err}");
    let text = err.to_string();
    assert!(text.contains("user name or password") || text.contains("not authorized"), "{text}");
    assert!(!text.contains("stolen"), "the token leaked into the error: {text}");
}
