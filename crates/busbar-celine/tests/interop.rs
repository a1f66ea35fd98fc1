//! busbar and the real celine-sdk 2.2.0 `MqttBroker`, both ways, on a Mosquitto that accepts
//! only OIDC tokens as user names with the password `jwt` (CELINE's login), the tokens issued
//! by a real OIDC issuer on loopback to both sides.
//!
//! The Python side is `tests/peer/celine_peer.py`, run with the venv `scripts/test-all`
//! creates in `target/celine-venvs/2.2.0` (or `BUSBAR_CELINE_PYTHON`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use busbar::Config;
use busbar_celine::{CelineBroker, DtEvent, EventSource, PublishOptions, SubscriptionInfo};
use busbar_testkit::oidc::{Behaviour, Issuer};
use busbar_testkit::peer::Peer;
use busbar_testkit::{BrokerProcess, MosquittoConfig, skip_if_missing};
use serde_json::{Value, json};

const PREFIX: &str = "celine/dt";

fn python(test: &str) -> Option<PathBuf> {
    busbar_testkit::peer::python(test, "BUSBAR_CELINE_PYTHON", "celine-venvs/2.2.0")
}

/// Mosquitto accepting `tok-1` ... `tok-20` with the password `jwt`, and the issuer.
async fn setup(test: &str) -> Option<(BrokerProcess, Issuer, PathBuf)> {
    let py = python(test)?;
    let config = (1..=20).fold(MosquittoConfig::new(), |c, n| c.user(format!("tok-{n}"), "jwt"));
    let broker = skip_if_missing(test, BrokerProcess::mosquitto(config).await)?;
    let issuer = Issuer::start(Behaviour { expires_in: Some(300), ..Behaviour::default() }).await;
    Some((broker, issuer, py))
}

/// busbar's side, configured as the digital twin is: CELINE's `brokers.yaml` shape with a
/// token login and the `celine/dt` prefix.
async fn busbar_side(broker: &BrokerProcess, issuer: &Issuer) -> CelineBroker {
    let text = format!(
        r#"
oidc: {{issuer: "{}", client_id: digital-twin, client_secret: s}}
brokers:
  celine_mqtt:
    auth_with_token: true
    config: {{host: 127.0.0.1, port: {}, topic_prefix: {PREFIX}}}
default_broker: celine_mqtt
"#,
        issuer.base,
        broker.port()
    );
    let config = Config::parse(&text, "brokers.yaml", |_| None).expect("the configuration loads");
    let conn = config.connect(None).await.expect("busbar logs in with its token");
    CelineBroker::new(&conn)
}

async fn peer(py: &Path, broker: &BrokerProcess, issuer: &Issuer, args: &[&str]) -> Peer {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peer/celine_peer.py");
    let mut all = vec![
        script.display().to_string(),
        "127.0.0.1".to_owned(),
        broker.port().to_string(),
        issuer.base.clone(),
    ];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    Peer::start(py, &all, &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busbar_publishes_to_a_celine_subscriber() {
    let test = "busbar_publishes_to_a_celine_subscriber";
    let Some((broker, issuer, py)) = setup(test).await else { return };
    let ours = busbar_side(&broker, &issuer).await;
    // A retained event, published before CELINE subscribes: the broker hands it over first.
    let snapshot = DtEvent::new(
        "dt.community.snapshot",
        EventSource::domain("community"),
        json!({"community_id": "rec-1", "members": 3}),
    );
    let retained = PublishOptions { retain: true, ..PublishOptions::default() };
    ours.publish_event_with(&snapshot, Some("echo/r"), retained).await.expect("retained");
    let mut theirs = peer(&py, &broker, &issuer, &["sub", "celine/dt/", "echo/+", "4"]).await;
    let got = theirs.next().await;
    assert_eq!(got["topic"], "celine/dt/echo/r", "the retained event first: {got}");
    assert_eq!(got["payload"]["@type"], "dt.community.snapshot", "{got}");

    let options =
        PublishOptions { correlation_id: Some("c-9".into()), ..PublishOptions::default() };
    ours.publish("echo/a", &json!({"v": 1, "text": "café"}), options).await.expect("publish");
    ours.connection().publish_bytes("echo/b", &b"plain text"[..]).await.expect("publish");
    let event = DtEvent::new(
        "dt.community.updated",
        EventSource::domain("community"),
        json!({"community_id": "rec-1"}),
    )
    .correlated("c-10");
    ours.publish_event(&event, Some("echo/c")).await.expect("publish the event");

    let got = theirs.next().await;
    assert_eq!(got["topic"], "celine/dt/echo/a", "{got}");
    let payload = &got["payload"];
    assert_eq!((payload["v"].as_i64(), payload["text"].as_str()), (Some(1), Some("café")));
    assert_eq!(payload["correlation_id"], "c-9");
    assert!(payload["created"].as_str().is_some_and(|c| c.ends_with("+00:00")), "{got}");

    let got = theirs.next().await;
    assert_eq!(got["payload"], json!({"_raw": "plain text"}), "{got}");

    let got = theirs.next().await;
    let payload = &got["payload"];
    assert_eq!(payload["@type"], "dt.community.updated", "{got}");
    assert_eq!(payload["source"]["domain"], "community");
    assert_eq!(payload["correlation_id"], "c-10");
    assert_eq!(payload["created"], Value::from(event.timestamp.clone()), "the event's own time");

    let stats = theirs.next().await;
    assert_eq!(stats["stats"]["receive_count"], 4, "{stats}");
    assert_eq!(ours.stats().publish_count, 3, "three through CelineBroker, one raw");
    // Both sides asked for broker tokens: with `mqtt` in the scope.
    let scopes: Vec<_> =
        issuer.log().token_requests.iter().map(|f| f.get("scope").cloned()).collect();
    assert!(scopes.iter().all(|s| s.as_deref() == Some("mqtt")), "{scopes:?}");
    assert!(scopes.len() >= 2, "{scopes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_celine_publisher_reaches_busbar() {
    let test = "a_celine_publisher_reaches_busbar";
    let Some((broker, issuer, py)) = setup(test).await else { return };
    let ours = busbar_side(&broker, &issuer).await;
    let mut sub = ours.subscribe(&["echo/+", "dt/#"]).await.expect("subscribe");
    let mut theirs = peer(&py, &broker, &issuer, &["pub", "celine/dt/", "echo/x"]).await;
    theirs.go().await;

    let plain = tokio::time::timeout(Duration::from_secs(10), sub.recv())
        .await
        .expect("in time")
        .expect("open");
    // The prefix is the connection's business: busbar hands over the topic without it.
    assert_eq!(plain.topic.as_str(), "echo/x");
    assert_eq!(plain.payload["v"], 1);
    assert_eq!(plain.payload["text"], "café");
    assert_eq!(plain.payload["correlation_id"], "c-1");
    assert!(plain.payload["created"].is_string(), "{}", plain.payload);

    let event = tokio::time::timeout(Duration::from_secs(10), sub.recv())
        .await
        .expect("in time")
        .expect("open");
    // celine-sdk's publish_event derives dt/<type>/<community>.
    assert_eq!(event.topic.as_str(), "dt/community/updated/rec-1");
    let info = SubscriptionInfo { source: "celine-peer".into(), ..SubscriptionInfo::default() };
    let read = busbar_celine::to_event(event.topic.as_str(), event.payload.clone(), &info);
    assert_eq!(read.event_type, "dt.community.updated");
    assert_eq!(read.payload["members"], 3);
    assert_eq!(read.source.domain, "celine-peer", "no source given: the subscription's");
    assert_eq!(event.payload["correlation_id"], "c-2");
    assert_eq!(theirs.next().await, Value::from("DONE"));
    assert_eq!(ours.stats().receive_count, 2);
    assert_eq!(ours.stats().subscription_count, 1);
}

/// The login order is configurable, and it matters: the same token as the password with the
/// user name `jwt` (the order CELINE's docs once gave) is refused by this broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_login_order_is_configurable() {
    let test = "the_token_login_order_is_configurable";
    let Some((broker, _issuer, _py)) = setup(test).await else { return };
    let login = |placement: &str| {
        format!(
            "brokers:\n  b:\n    transport: mqtt\n    host: 127.0.0.1\n    port: {}\n    token: {{static: tok-7, as: {placement}, with: jwt}}\n",
            broker.port()
        )
    };
    let right = Config::parse(&login("username"), "b.yaml", |_| None).expect("loads");
    right.connect(None).await.expect("token as user name, password jwt");
    let swapped = Config::parse(&login("password"), "b.yaml", |_| None).expect("loads");
    let err = swapped.connect(None).await.expect_err("user name jwt, token as password");
    assert!(!err.to_string().contains("tok-7"), "the token leaked: {err}");
}
