//! Heartbeats, liveness and last wills.

use std::sync::Arc;
use std::time::Duration;

use busbar_core::patterns::Publisher;
use busbar_core::patterns::heartbeat::{
    DownReason, Heartbeat, LivenessEvent, LivenessMonitor, NodeState, heartbeat_topic,
    last_will as will_message, spawn_heartbeat,
};
use busbar_core::transport::ConnectOptions;
use tokio_util::sync::CancellationToken as Token;

use super::{connect, ensure, prefix};
use crate::{Harness, TestResult};

async fn expect(
    monitor: &mut LivenessMonitor,
    node: &str,
    what: &str,
) -> Result<LivenessEvent, String> {
    loop {
        let ev = crate::within(Duration::from_secs(10), what, monitor.next())
            .await?
            .ok_or("the monitor ended")?;
        if ev.node() == node {
            return Ok(ev);
        }
    }
}

/// A node with heartbeats is reported up, with the server its connection uses; a graceful
/// stop reports it down as stopped; a node that falls silent is reported down after the
/// tolerated number of intervals.
pub async fn heartbeats_and_liveness(h: Arc<impl Harness>) -> TestResult {
    let p = prefix("liveness");
    let node = p.rsplit('/').next().unwrap_or("node").to_owned();
    let watcher = connect(&*h).await?;
    let mut monitor = LivenessMonitor::spawn(&watcher, 3).await?;

    let conn = connect(&*h).await?;
    let stop = Token::new();
    let beating = spawn_heartbeat(&conn, &node, Duration::from_millis(50), stop.clone())?;
    let up = expect(&mut monitor, &node, "the node to come up").await?;
    ensure(up == LivenessEvent::Up { node: node.clone() }, || format!("{up:?}"))?;
    // Heartbeats name the server the node's connection uses.
    ensure(monitor.server(&node) == conn.server(), || {
        format!("the monitor says {:?}, the connection {:?}", monitor.server(&node), conn.server())
    })?;
    ensure(conn.server().is_some() || h.name().starts_with("mem"), || {
        format!("a connection to {} names no server", h.name())
    })?;
    stop.cancel();
    beating.await?;
    let down = expect(&mut monitor, &node, "the node to go down").await?;
    ensure(
        down == LivenessEvent::Down { node: node.clone(), reason: DownReason::Stopped },
        || format!("{down:?}"),
    )?;

    // One heartbeat, then silence: down after 3 intervals.
    let silent = format!("{node}-silent");
    Publisher::<Heartbeat>::new(&conn, heartbeat_topic(&silent)?.as_str())?
        .publish(Heartbeat {
            node: silent.clone(),
            seq: 1,
            interval_ms: 30,
            state: NodeState::Up,
            reason: None,
            server: None,
        })
        .await?;
    let up = expect(&mut monitor, &silent, "the silent node to come up").await?;
    ensure(matches!(up, LivenessEvent::Up { .. }), || format!("{up:?}"))?;
    let down = expect(&mut monitor, &silent, "the silent node to be declared down").await?;
    ensure(
        down == LivenessEvent::Down {
            node: silent.clone(),
            reason: DownReason::Missed { intervals: 3 },
        },
        || format!("{down:?}"),
    )?;
    Ok(())
}

/// A connection that vanishes has its last will published by the broker, which the monitor
/// reports as the node going down.
pub async fn last_will(h: Arc<impl Harness>) -> TestResult {
    let p = prefix("will");
    let node = p.rsplit('/').next().unwrap_or("node").to_owned();
    let watcher = connect(&*h).await?;
    if !watcher.capabilities().last_will {
        return Ok(());
    }
    // A graceful close sends no last will: the marker must be the first message on the topic.
    let quiet_topic = format!("{p}/quiet-will");
    let mut watch_quiet = watcher.subscribe(&quiet_topic).await?;
    let will = busbar_core::Message::new(busbar_core::Topic::new(&quiet_topic)?, &b"will"[..]);
    let closing = h.connect(ConnectOptions::new().last_will(will)).await?;
    closing.close().await?;
    watcher.publish_bytes(&quiet_topic, &b"marker"[..]).await?;
    let first = super::next(&mut watch_quiet, "the marker after a graceful close").await?;
    ensure(first.payload.to_bytes()?.as_ref() == b"marker", || {
        "the last will was published on a graceful close".into()
    })?;

    let mut monitor = LivenessMonitor::spawn(&watcher, 100).await?;
    let conn = h
        .connect(
            ConnectOptions::new()
                .client_id(format!("will-{node}"))
                .last_will(will_message(&node, Duration::from_secs(1))?),
        )
        .await?;
    Publisher::<Heartbeat>::new(&conn, heartbeat_topic(&node)?.as_str())?
        .publish(Heartbeat {
            node: node.clone(),
            seq: 1,
            interval_ms: 1_000,
            state: NodeState::Up,
            reason: None,
            server: None,
        })
        .await?;
    expect(&mut monitor, &node, "the node to come up").await?;
    if !h.crash(&conn).await {
        eprintln!("SKIPPED: last_will on {}: the harness cannot crash a connection", h.name());
        return Ok(());
    }
    let down = expect(&mut monitor, &node, "the last will").await?;
    ensure(
        down == LivenessEvent::Down { node: node.clone(), reason: DownReason::LastWill },
        || format!("{down:?}"),
    )?;
    Ok(())
}
