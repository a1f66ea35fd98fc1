//! A connection under a topic prefix: what the application names `a/b` is `<prefix>/a/b` on
//! the wire, arrives back as `a/b`, and RPC replies still find their inboxes. On the
//! in-process bus and on Mosquitto.

use std::time::Duration;

use busbar::{Connection, RpcClient, RpcError, RpcServer};
use busbar_testkit::{BrokerKind, shared_broker};

async fn check(plain: Connection, site: Connection, prefix: &str) {
    let mut wire = plain.subscribe(&format!("{prefix}/plant/#")).await.expect("subscribe");
    let mut ours = site.subscribe("plant/+/temperature").await.expect("subscribe");
    assert_eq!(ours.filter().as_str(), "plant/+/temperature");
    // Something outside the prefix is not seen through it.
    plain.publish_bytes("plant/boiler/temperature", &b"elsewhere"[..]).await.expect("publish");
    site.publish_bytes("plant/boiler/temperature", &b"81.5"[..]).await.expect("publish");
    let on_wire = tokio::time::timeout(Duration::from_secs(5), wire.recv())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(on_wire.topic.as_str(), format!("{prefix}/plant/boiler/temperature"));
    let got = tokio::time::timeout(Duration::from_secs(5), ours.recv())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(got.topic.as_str(), "plant/boiler/temperature");
    assert_eq!(got.payload.to_bytes().expect("bytes").as_ref(), b"81.5");

    // RPC through the prefix, both ends prefixed; the reply inbox is the transport's own.
    let _server =
        RpcServer::spawn(
            &site,
            "plant/valve/set",
            |open: bool| async move { Ok::<_, RpcError>(!open) },
        )
        .await
        .expect("serve");
    let client = RpcClient::<bool, bool>::new(&site, "plant/valve/set").expect("client");
    let mut answered = None;
    for _ in 0..20 {
        if let Ok(v) = client.call_with_timeout(true, Duration::from_millis(500)).await {
            answered = Some(v);
            break;
        }
    }
    assert_eq!(answered, Some(false), "the prefixed service answered");
}

#[tokio::test]
async fn a_prefix_on_the_in_process_bus() {
    let plain = busbar::connect("mem://prefix-test").await.expect("connect");
    let site = busbar::connect("mem://prefix-test")
        .await
        .expect("connect")
        .with_topic_prefix("/site-a/")
        .expect("prefix");
    check(plain, site, "site-a").await;
    let err = busbar::connect("mem://prefix-test")
        .await
        .expect("connect")
        .with_topic_prefix("site/#")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("topic prefix"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_on_mosquitto() {
    let Some(broker) = shared_broker(BrokerKind::Mqtt).await else { return };
    let prefix = format!("celine-{}/dt", std::process::id());
    let plain = busbar::connect(broker.url()).await.expect("connect");
    let site = busbar::connect(broker.url())
        .await
        .expect("connect")
        .with_topic_prefix(&prefix)
        .expect("prefix");
    check(plain, site, &prefix).await;
}
