//! Heartbeats and liveness.
//!
//! A node publishes a [`Heartbeat`] on `busbar/heartbeat/<node>` every interval, a final
//! DOWN heartbeat when it stops, and registers a DOWN heartbeat as its last will where the
//! transport has one. A [`LivenessMonitor`] turns these into UP/DOWN events: a node is down
//! when it says so, when its last will arrives, or when `tolerance` intervals pass in silence.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::pubsub::{Publisher, Subscriber};
use crate::connection::Connection;
use crate::error::{Error, PublishErrorKind, Result};
use crate::message::{Message, Payload};
use crate::queue::{Overflow, Pushed, QueueConfig, QueueReceiver, queue};
use crate::topic::Topic;

/// Topic prefix of heartbeats.
pub const HEARTBEAT_PREFIX: &str = "busbar/heartbeat";

/// Whether a node says it is up or going down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum NodeState {
    /// Alive.
    Up,
    /// Stopped or lost.
    Down,
}

/// Why a node is down: the reason a DOWN heartbeat carries for a graceful stop.
pub const REASON_STOPPED: &str = "stopped";
/// The reason carried by the last will.
pub const REASON_LOST: &str = "connection lost";

/// One heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Node name.
    pub node: String,
    /// Increments with every heartbeat of one run of the node.
    pub seq: u64,
    /// The node's heartbeat interval in milliseconds (monitors derive their deadline).
    pub interval_ms: u64,
    /// Up or down.
    pub state: NodeState,
    /// Why it is down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The broker server the node's connection uses (`HOST:PORT`), where it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
}

/// The topic `node` heartbeats on. Node names are one topic level.
pub fn heartbeat_topic(node: &str) -> Result<Topic> {
    let topic = Topic::new(format!("{HEARTBEAT_PREFIX}/{node}"))?;
    if topic.levels().count() != 3 {
        return Err(Error::Config(format!("node name {node:?} must be a single topic level")));
    }
    Ok(topic)
}

/// The last will a node registers: a DOWN heartbeat, already serialised (the broker keeps it).
pub fn last_will(node: &str, interval: Duration) -> Result<Message> {
    let hb = Heartbeat {
        node: node.to_owned(),
        seq: 0,
        interval_ms: interval.as_millis() as u64,
        state: NodeState::Down,
        reason: Some(REASON_LOST.to_owned()),
        server: None,
    };
    let bytes = crate::codec::Codec::Json.encode(&hb)?;
    // No QoS asked: the transport's best, at least once where it can.
    Ok(Message::new(heartbeat_topic(node)?, Payload::Bytes(bytes)))
}

/// Publishes heartbeats every `interval` until `stop` fires, then one DOWN heartbeat.
pub fn spawn_heartbeat(
    conn: &Connection,
    node: &str,
    interval: Duration,
    stop: CancellationToken,
) -> Result<JoinHandle<()>> {
    if interval < MIN_INTERVAL {
        return Err(Error::Config(format!(
            "heartbeat interval {interval:?} is below the minimum of {MIN_INTERVAL:?}"
        )));
    }
    let publisher = Publisher::<Heartbeat>::new(conn, heartbeat_topic(node)?.as_str())?;
    let conn = conn.clone();
    let node = node.to_owned();
    let interval_ms = interval.as_millis() as u64;
    Ok(tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seq = 0;
        let mut failing = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticker.tick() => {
                    seq += 1;
                    let hb = Heartbeat {
                        node: node.clone(),
                        seq,
                        interval_ms,
                        state: NodeState::Up,
                        reason: None,
                        server: conn.server(),
                    };
                    match publisher.publish(hb).await {
                        Ok(()) => failing = false,
                        Err(e) if e.kind() == PublishErrorKind::Closed => return,
                        // Said once per outage: a transport that reconnects will recover.
                        Err(e) if !failing => {
                            failing = true;
                            tracing::warn!(node = %node, error = %e, "heartbeat not published");
                        }
                        Err(_) => {}
                    }
                }
            }
        }
        let down = Heartbeat {
            node: node.clone(),
            seq: seq + 1,
            interval_ms,
            state: NodeState::Down,
            reason: Some(REASON_STOPPED.to_owned()),
            server: conn.server(),
        };
        if let Err(e) = publisher.publish(down).await {
            tracing::warn!(node = %node, error = %e, "final heartbeat not published");
        }
    }))
}

/// Why a node is considered down.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DownReason {
    /// It announced a graceful stop.
    Stopped,
    /// Its last will arrived (the broker saw it vanish).
    LastWill,
    /// No heartbeat for `tolerance` intervals.
    Missed {
        /// Intervals missed.
        intervals: u32,
    },
}

/// A change in a node's liveness.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LivenessEvent {
    /// The node's first heartbeat, or its first after being down.
    Up {
        /// Node name.
        node: String,
    },
    /// The node went down.
    Down {
        /// Node name.
        node: String,
        /// Why.
        reason: DownReason,
    },
}

impl LivenessEvent {
    /// The node the event is about.
    pub fn node(&self) -> &str {
        match self {
            LivenessEvent::Up { node } | LivenessEvent::Down { node, .. } => node,
        }
    }
}

/// Watches heartbeats and reports nodes going up and down.
pub struct LivenessMonitor {
    events: QueueReceiver<LivenessEvent>,
    /// The server each node's latest heartbeat named.
    servers: Arc<Mutex<HashMap<String, String>>>,
    task: JoinHandle<()>,
}

/// Unread liveness events kept per monitor; beyond that the oldest go (and are counted). A
/// monitor never waits for its reader, so it never holds up the heartbeats it watches.
pub const MONITOR_QUEUE: usize = 1024;

/// Longest heartbeat interval a monitor believes; longer claims are clamped, so a malformed
/// heartbeat cannot push a deadline out of range.
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// Shortest heartbeat interval a node may use.
pub const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// Default number of silent intervals before a node is declared down.
pub const DEFAULT_TOLERANCE: u32 = 3;

struct Watched {
    up: bool,
    deadline: Instant,
}

impl LivenessMonitor {
    /// Starts watching every node's heartbeats on `conn`; a node is down after `tolerance`
    /// of its own intervals without a heartbeat.
    pub async fn spawn(conn: &Connection, tolerance: u32) -> Result<Self> {
        let mut sub = Subscriber::<Heartbeat>::new(conn, &format!("{HEARTBEAT_PREFIX}/+")).await?;
        let tolerance = tolerance.max(1);
        let (tx, events) = queue(QueueConfig::new(MONITOR_QUEUE, Overflow::DropOldest));
        let servers: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        let seen = servers.clone();
        let task = tokio::spawn(async move {
            let mut nodes: HashMap<String, Watched> = HashMap::new();
            loop {
                let next_deadline = nodes.values().filter(|w| w.up).map(|w| w.deadline).min();
                let expired = async {
                    match next_deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                };
                let event = tokio::select! {
                    hb = sub.recv() => match hb {
                        None => break,
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "undecodable heartbeat ignored");
                            continue;
                        }
                        Some(Ok(hb)) => {
                            if let Some(server) = &hb.value.server
                                && hb.topic.levels().next_back() == Some(hb.value.node.as_str())
                            {
                                seen.lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .insert(hb.value.node.clone(), server.clone());
                            }
                            observe(&mut nodes, &hb.topic, hb.value, tolerance)
                        }
                    },
                    _ = expired => {
                        let now = Instant::now();
                        let late = nodes.iter_mut().find(|(_, w)| w.up && w.deadline <= now);
                        late.map(|(node, w)| {
                            w.up = false;
                            LivenessEvent::Down { node: node.clone(), reason: DownReason::Missed { intervals: tolerance } }
                        })
                    }
                };
                if let Some(event) = event
                    && let Pushed::Closed(_) = tx.try_push(event)
                {
                    break;
                }
            }
        });
        Ok(LivenessMonitor { events, servers, task })
    }

    /// The next liveness change; `None` when the connection closed.
    pub async fn next(&mut self) -> Option<LivenessEvent> {
        self.events.recv().await
    }

    /// The broker server `node`'s connection uses, as its latest heartbeat said (a node
    /// that names none, or one not heard yet: `None`).
    pub fn server(&self, node: &str) -> Option<String> {
        self.servers.lock().unwrap_or_else(|p| p.into_inner()).get(node).cloned()
    }

    /// Events discarded because they were not read in time.
    pub fn dropped(&self) -> u64 {
        self.events.dropped()
    }
}

/// Applies one heartbeat. The node is named by the topic it arrived on (the payload's own
/// `node` field must agree), so one node cannot speak for another.
fn observe(
    nodes: &mut HashMap<String, Watched>,
    topic: &Topic,
    hb: Heartbeat,
    tolerance: u32,
) -> Option<LivenessEvent> {
    if topic.levels().next_back() != Some(hb.node.as_str()) {
        tracing::warn!(topic = %topic, node = %hb.node, "heartbeat names another node; ignored");
        return None;
    }
    let interval = Duration::from_millis(hb.interval_ms).clamp(MIN_INTERVAL, MAX_INTERVAL);
    let now = Instant::now();
    let watched = nodes.entry(hb.node.clone()).or_insert(Watched { up: false, deadline: now });
    match hb.state {
        NodeState::Up => {
            let silence = interval.saturating_mul(tolerance);
            watched.deadline = now.checked_add(silence).unwrap_or(now + MAX_INTERVAL);
            if watched.up {
                None
            } else {
                watched.up = true;
                Some(LivenessEvent::Up { node: hb.node })
            }
        }
        NodeState::Down => {
            if !watched.up {
                return None;
            }
            watched.up = false;
            let reason = if hb.reason.as_deref() == Some(REASON_STOPPED) {
                DownReason::Stopped
            } else {
                DownReason::LastWill
            };
            Some(LivenessEvent::Down { node: hb.node, reason })
        }
    }
}

impl Drop for LivenessMonitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}
