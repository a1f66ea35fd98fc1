//! SERMAS clients on real brokers: JWT-as-user-name logins with each client's password,
//! MQTT 5 over secure WebSockets with noLocal, and what MQTT 3.1.1 cannot do refused.

use std::net::SocketAddr;
use std::time::Duration;

use busbar::error::{ConnectErrorKind, SubscribeErrorKind};
use busbar::{Config, Error};
use busbar_sermas::{SermasClient, SermasContext, SermasError, params};
use busbar_testkit::websocket::WebSocketFront;
use busbar_testkit::{BrokerProcess, MosquittoConfig, Pki, skip_if_missing};
use serde_json::json;

/// The token user names and the password each SERMAS client sends with them.
const LOGINS: [(&str, &str); 3] =
    [("jwt-api", "none"), ("jwt-browser", "mqtt"), ("jwt-robot", "sermas")];

async fn broker(test: &str) -> Option<BrokerProcess> {
    let config = LOGINS.iter().fold(MosquittoConfig::new(), |c, (user, pw)| c.user(*user, *pw));
    skip_if_missing(test, BrokerProcess::mosquitto(config).await)
}

fn config(text: String) -> Config {
    Config::parse(&text, "sermas.yaml", |_| None).expect("the configuration loads")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_the_user_name_with_each_clients_password() {
    let Some(broker) = broker("the_token_is_the_user_name_with_each_clients_password").await else {
        return;
    };
    let entry = |token: &str, password: &str| {
        config(format!(
            "brokers:\n  s:\n    transport: mqtt\n    host: 127.0.0.1\n    port: {}\n    token: {{static: {token}, as: username, with: {password}}}\n",
            broker.port()
        ))
    };
    for (token, password) in LOGINS {
        entry(token, password).connect(None).await.unwrap_or_else(|e| panic!("{token}: {e}"));
    }
    let err = entry("jwt-robot", "none").connect(None).await.expect_err("wrong password");
    assert!(matches!(&err, Error::Connect(e) if e.kind() == ConnectErrorKind::Refused), "{err}");
}

/// Two robots on MQTT 5 over `wss://` (the SERMAS robots' transport), through a WebSocket
/// front end with a certificate of the test's own CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn robots_over_secure_websockets_never_hear_themselves() {
    let Some(broker) = broker("robots_over_secure_websockets_never_hear_themselves").await else {
        return;
    };
    let address: SocketAddr = format!("127.0.0.1:{}", broker.port()).parse().expect("address");
    let pki = Pki::make().expect("certificates");
    let front = WebSocketFront::start(address, Some(&pki)).await;
    let robots = config(format!(
        "brokers:\n  sermas:\n    transport: ws\n    host: 127.0.0.1\n    port: {}\n    path: /mqtt\n    tls: {{ca: {}}}\n    token: {{static: jwt-robot, as: username, with: sermas}}\n",
        front.port(),
        pki.path("ca.pem").display()
    ));
    let context = |client: &str| {
        let mut c = SermasContext::app("a1");
        c.client_id = Some(client.into());
        c.session_id = Some("s1".into());
        c
    };
    let a = SermasClient::new(&robots.connect(None).await.expect("a over wss"), context("robot-a"));
    let b = SermasClient::new(&robots.connect(None).await.expect("b over wss"), context("robot-b"));
    let template = "app/:appId/dialogue/messages/:sessionId";
    let mut heard_by_a = a.subscribe(template, &params([])).await.expect("a subscribes");
    let mut heard_by_b = b.subscribe(template, &params([])).await.expect("b subscribes");

    let topic = a.publish(template, &params([]), &json!({"text": "from a"})).await.expect("a");
    assert_eq!(topic.as_str(), "app/a1/dialogue/messages/s1", "filled from the context");
    let first = tokio::time::timeout(Duration::from_secs(5), heard_by_b.recv())
        .await
        .expect("in time")
        .expect("open");
    // Only now does b publish: had noLocal failed, a would hear its own message first.
    b.publish(template, &params([]), &json!({"text": "from b"})).await.expect("b publishes");
    assert_eq!(first.payload["text"], "from a");
    assert_eq!(first.payload["clientId"], "robot-a");
    assert_eq!(first.payload["appId"], "a1");
    assert!(first.payload["ts"].as_str().is_some_and(|t| t.ends_with('Z')), "{}", first.payload);
    let only = tokio::time::timeout(Duration::from_secs(5), heard_by_a.recv())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(only.payload["text"], "from b", "a heard itself");
    assert_eq!(front.paths(), ["/mqtt", "/mqtt"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_records_and_mqtt_3_1_1() {
    let Some(broker) = broker("sessions_records_and_mqtt_3_1_1").await else { return };
    let url = |version: &str| {
        config(format!(
            "brokers:\n  s:\n    url: mqtt://:none@127.0.0.1:{}?version={version}\n    token: {{static: jwt-api, as: username}}\n",
            broker.port()
        ))
    };
    let v5 = url("5");
    let api = SermasClient::new(&v5.connect(None).await.expect("api"), SermasContext::app("a1"));
    let ui = SermasClient::new(&v5.connect(None).await.expect("ui"), SermasContext::app("a1"));

    // A UI that follows session s1 only, as the web toolkit does.
    let template = "app/:appId/session/agent/changed/:agentId";
    let mut changes =
        ui.subscribe(template, &params([])).await.expect("subscribe").only_session("s1");
    for (session, agent) in [("s2", "ag-2"), ("s1", "ag-1")] {
        let event = json!({"record": {"agentId": agent, "sessionId": session}, "operation": "updated", "sessionId": session});
        let topic = api.publish(template, &params([]), &event).await.expect("publish");
        assert_eq!(
            topic.as_str(),
            format!("app/a1/session/agent/changed/{agent}"),
            "from the record"
        );
    }
    let got = tokio::time::timeout(Duration::from_secs(5), changes.recv())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(got.payload["record"]["agentId"], "ag-1", "s2's change was not held back");

    // A leftover placeholder is an error, not a topic with a colon in it.
    let err = api
        .publish("app/:appId/dialogue/speech/:sessionId", &params([]), &json!({}))
        .await
        .expect_err("no session");
    assert!(matches!(err, SermasError::Unmapped { .. }), "{err}");

    // MQTT 3.1.1 has no noLocal: refused, never quietly ignored.
    let old = url("3.1.1");
    let client =
        SermasClient::new(&old.connect(None).await.expect("3.1.1"), SermasContext::app("a1"));
    let err = client.subscribe(template, &params([])).await.err().expect("refused");
    assert!(
        matches!(&err, SermasError::Busbar(Error::Subscribe(e)) if e.kind() == SubscribeErrorKind::Unsupported),
        "{err}"
    );
}

/// Queue groups: two instances of one module subscribe in the group `workers`; what a third
/// client publishes reaches one of them each time, none twice and none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_group_shares_the_messages() {
    let Some(broker) = broker("a_queue_group_shares_the_messages").await else { return };
    let conf = config(format!(
        "brokers:\n  s:\n    url: mqtt://:none@127.0.0.1:{}\n    token: {{static: jwt-api, as: username}}\n",
        broker.port()
    ));
    let client = |conf: &Config| {
        let conf = conf.clone();
        async move {
            SermasClient::new(&conf.connect(None).await.expect("connect"), SermasContext::app("a1"))
        }
    };
    let template = "app/:appId/dialogue/messages/:sessionId";
    let mut members = Vec::new();
    for _ in 0..2 {
        let member = client(&conf).await;
        let sub = member.subscribe_in_group(template, &params([]), "workers").await.expect("join");
        members.push((member, sub));
    }
    let api = client(&conf).await;
    const N: i64 = 20;
    for i in 0..N {
        let body = json!({"n": i, "sessionId": "s1"});
        api.publish(template, &params([]), &body).await.expect("publish");
    }
    let mut got = Vec::new();
    while got.len() < N as usize {
        let (a, b) = members.split_at_mut(1);
        let m = tokio::select! {
            m = a[0].1.recv() => m,
            m = b[0].1.recv() => m,
            () = tokio::time::sleep(Duration::from_secs(10)) => panic!("only {got:?} arrived"),
        };
        got.push(m.expect("open").payload["n"].as_i64().expect("n"));
    }
    got.sort_unstable();
    assert_eq!(got, (0..N).collect::<Vec<_>>(), "each message to one member, once");
}
