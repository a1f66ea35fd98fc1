//! The OIDC provider against a real HTTP issuer served on loopback by the test (Keycloak's
//! shapes: `/realms/<realm>` with its discovery document and token endpoint), and a real
//! Mosquitto that accepts the issued tokens as user names.

use std::sync::Arc;
use std::time::Duration;

use busbar_core::auth::{TokenPlacement, TokenProvider};
use busbar_core::transport::ConnectOptions;
use busbar_core::{Connection, ConnectionEvent};
use busbar_oidc::{OidcError, OidcProvider, OidcSettings};
use busbar_testkit::oidc::{Behaviour, Issuer};
use busbar_testkit::{BrokerProcess, MosquittoConfig, next_event_within, skip_if_missing};
use tokio::net::TcpListener;

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
    let grants = issuer.grants();
    assert_eq!(grants, ["client_credentials", "refresh_token", "client_credentials"]);
}

#[tokio::test]
async fn failures_are_clear_and_keep_the_secret() {
    let issuer = Issuer::start(Behaviour { refuse_all: true, ..Behaviour::default() }).await;
    let provider = OidcProvider::new(settings(&issuer)).expect("provider");
    let err = provider.token().await.expect_err("refused");
    let text = err.to_string();
    assert!(err.downcast_ref::<OidcError>().is_some(), "{text}");
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
async fn broker_for_tokens(test: &str, tokens: &[&str]) -> Option<BrokerProcess> {
    let config = tokens.iter().fold(MosquittoConfig::new(), |c, t| c.user(*t, "jwt"));
    skip_if_missing(test, BrokerProcess::mosquitto(config).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_accepts_issued_tokens_and_a_renewal_keeps_subscriptions() {
    let test = "mosquitto_accepts_issued_tokens_and_a_renewal_keeps_subscriptions";
    let Some(broker) = broker_for_tokens(test, &["tok-1", "tok-2", "tok-3"]).await else {
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
    // Reconnected with the renewed token before the first expired.
    next_event_within(&mut events, Duration::from_secs(10), |e| {
        matches!(e, ConnectionEvent::Reconnected { .. })
    })
    .await;
    {
        let log = issuer.log();
        assert_eq!(log.discoveries, 1);
        drop(log);
        let grants = issuer.grants();
        assert_eq!(grants[..2], ["client_credentials", "refresh_token"]);
    }
    // The renewed session still has the subscription: publish from the same connection.
    conn.publish_bytes("fleet/truck-1", &b"after renewal"[..]).await.expect("publish");
    let m = tokio::time::timeout(Duration::from_secs(10), sub.recv())
        .await
        .expect("delivered after the renewal")
        .expect("open");
    assert_eq!(m.payload.to_bytes().expect("bytes").as_ref(), b"after renewal");
}
