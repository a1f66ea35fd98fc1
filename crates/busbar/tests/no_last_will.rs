//! Nodes on transports without last wills (Redis, NATS, AMQP): they start with heartbeats,
//! and a node that vanishes is reported down when its heartbeats stop. A last will the caller
//! requires is refused there with a typed error.
#![cfg(any(feature = "redis", feature = "nats", feature = "amqp"))]

use std::time::Duration;

use busbar::ConnectOptions;
use busbar::error::ConnectErrorKind;
use busbar::heartbeat::DownReason;
use busbar::{LivenessEvent, LivenessMonitor, Message, Topic};
use busbar_testkit::{BrokerKind, shared_broker};

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

async fn next_about(monitor: &mut LivenessMonitor, node: &str) -> LivenessEvent {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), monitor.next())
            .await
            .expect("liveness event in time")
            .expect("monitor open");
        match &ev {
            LivenessEvent::Up { node: n } | LivenessEvent::Down { node: n, .. } if n == node => {
                return ev;
            }
            _ => {}
        }
    }
}

async fn vanishing_node_is_missed(kind: BrokerKind) {
    let Some(broker) = shared_broker(kind).await else { return };
    let url = broker.url().to_owned();
    let required = ConnectOptions::new()
        .last_will(Message::new(Topic::new("wills/x").expect("topic"), &b"gone"[..]));
    let err = busbar::connect_with(&url, required).await.expect_err("a required will is refused");
    assert_eq!(err.kind(), ConnectErrorKind::Unsupported, "{err}");

    let watcher = busbar::connect(&url).await.expect("watcher");
    assert!(!watcher.capabilities().last_will);
    let mut monitor = LivenessMonitor::spawn(&watcher, 3).await.expect("monitor");
    let name = unique(kind.name());
    let node = busbar::node(name.clone())
        .url(&url)
        .heartbeat(Some(Duration::from_millis(100)))
        .start()
        .await
        .expect("a node with heartbeats starts without a last will");
    assert_eq!(next_about(&mut monitor, &name).await, LivenessEvent::Up { node: name.clone() });
    // Gone without a word: no stop, no will; the silence gives it away.
    drop(node);
    match next_about(&mut monitor, &name).await {
        LivenessEvent::Down { reason: DownReason::Missed { .. }, .. } => {}
        other => panic!("expected a missed-heartbeats report, got {other:?}"),
    }
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_nodes_are_missed_when_they_vanish() {
    vanishing_node_is_missed(BrokerKind::Redis).await;
}

#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_nodes_are_missed_when_they_vanish() {
    vanishing_node_is_missed(BrokerKind::Nats).await;
}

#[cfg(feature = "amqp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_nodes_are_missed_when_they_vanish() {
    vanishing_node_is_missed(BrokerKind::Amqp).await;
}
