//! commlib node heartbeats: `{"ts": <ns>}` on `<node>.heartbeat`, at QoS 0, once when the
//! node starts and then every interval (commlib's default is 10 s).
//!
//! commlib itself consumes none of them; busbar publishes them so commlib-side tools that
//! watch the topic see a busbar node like any other, and reads them to watch commlib nodes.

use std::time::Duration;

use busbar_core::Connection;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::pubsub::{CommlibPublisher, CommlibSubscriber};

/// commlib's heartbeat body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// When it was sent, in nanoseconds since the epoch.
    pub ts: i64,
}

/// The commlib name a node's heartbeats go to (under the name commlib gives the node:
/// [`node_name`](crate::names::node_name)).
pub fn heartbeat_name(node: &str) -> String {
    format!("{}.heartbeat", crate::names::node_name(node))
}

/// Publishes a node's heartbeats until dropped.
pub struct HeartbeatSender {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HeartbeatSender {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HeartbeatSender {
    /// Starts publishing `node`'s heartbeats every `interval`, the first one now.
    pub fn spawn(conn: &Connection, node: &str, interval: Duration) -> Result<Self> {
        let publisher = CommlibPublisher::<Heartbeat>::new(conn, &heartbeat_name(node))?;
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = publisher.publish(&Heartbeat { ts: crate::now_ns() }).await {
                    tracing::debug!(error = %e, "commlib heartbeat not sent");
                }
            }
        });
        Ok(HeartbeatSender { task })
    }
}

/// Subscribes to `node`'s heartbeats.
pub async fn watch(conn: &Connection, node: &str) -> Result<CommlibSubscriber<Heartbeat>> {
    CommlibSubscriber::new(conn, &heartbeat_name(node)).await
}
