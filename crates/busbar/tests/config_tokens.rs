//! A configuration's token login, end to end: a real OIDC issuer on loopback, a Mosquitto
//! that accepts only the issued tokens, and the CELINE `brokers.yaml` shape as well as
//! busbar's own.
#![cfg(feature = "oidc")]

use std::time::Duration;

use busbar::{Config, ConnectionEvent};
use busbar_testkit::oidc::{Behaviour, Issuer};
use busbar_testkit::{BrokerProcess, MosquittoConfig, next_event_within, skip_if_missing};

async fn setup(test: &str) -> Option<(BrokerProcess, Issuer)> {
    let config = ["tok-1", "tok-2", "tok-3", "tok-4"]
        .iter()
        .fold(MosquittoConfig::new(), |c, t| c.user(*t, "jwt"));
    let broker = skip_if_missing(test, BrokerProcess::mosquitto(config).await)?;
    let behaviour = Behaviour { expires_in: Some(3), refresh_tokens: true, ..Behaviour::default() };
    Some((broker, Issuer::start(behaviour).await))
}

/// Connects to the file's default broker, then waits for the token renewal's reconnect and
/// checks that the subscription made before it still delivers.
async fn connect_and_renew(config: &Config) {
    let conn = config.connect(None).await.expect("the first token is accepted");
    let mut events = conn.events();
    let mut sub = conn.subscribe("twin/#").await.expect("subscribe");
    // Reconnected with a renewed token.
    next_event_within(&mut events, Duration::from_secs(10), |e| {
        matches!(e, ConnectionEvent::Reconnected { .. })
    })
    .await;
    conn.publish_bytes("twin/meter-1", &b"42"[..]).await.expect("publish");
    let m = tokio::time::timeout(Duration::from_secs(10), sub.recv())
        .await
        .expect("delivered after the renewal")
        .expect("open");
    assert_eq!(m.topic.as_str(), "twin/meter-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celine_brokers_yaml_logs_in_with_issued_tokens() {
    let Some((broker, issuer)) = setup("celine_brokers_yaml_logs_in_with_issued_tokens").await
    else {
        return;
    };
    let text = format!(
        r#"
oidc:
  issuer: {issuer}
  client_id: digital-twin
  client_secret: ${{DT_SECRET:-not-so-secret}}
  scope: openid
brokers:
  celine_mqtt:
    enabled: true
    auth_with_token: true
    config:
      host: "${{MQTT_HOST:-127.0.0.1}}"
      port: "{port}"
      use_tls: "false"
      token_refresh_margin: 1
      topic_prefix: celine/dt
default_broker: celine_mqtt
"#,
        issuer = issuer.base,
        port = broker.port()
    );
    let config = Config::parse(&text, "brokers.yaml", |_| None).expect("loads");
    connect_and_renew(&config).await;
    let log = issuer.log();
    assert_eq!(log.discoveries, 1);
    // CELINE asks for its broker tokens with `mqtt` added to the scope.
    let scopes: Vec<_> = log.token_requests.iter().map(|f| f.get("scope").cloned()).collect();
    assert_eq!(scopes[0].as_deref(), Some("openid mqtt"), "{scopes:?}");
    assert_eq!(
        log.token_requests[0].get("client_secret").map(String::as_str),
        Some("not-so-secret")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busbar_config_logs_in_with_issued_tokens() {
    let Some((broker, issuer)) = setup("busbar_config_logs_in_with_issued_tokens").await else {
        return;
    };
    let text = format!(
        r#"
oidc: {{issuer: "{issuer}", client_id: gw, client_secret: s, margin: 1}}
brokers:
  plant:
    transport: mqtt
    host: 127.0.0.1
    port: {port}
    token: {{oidc: {{}}, as: username, with: jwt}}
"#,
        issuer = issuer.base,
        port = broker.port()
    );
    let config = Config::parse(&text, "busbar.yaml", |_| None).expect("loads");
    connect_and_renew(&config).await;
    assert_eq!(issuer.grants()[..2], ["client_credentials", "refresh_token"]);
    // Without the token the broker refuses: the login really is the token's.
    let plain = format!("mqtt://:jwt@127.0.0.1:{}", broker.port());
    assert!(busbar::connect(&plain).await.is_err(), "anonymous login accepted");
}
