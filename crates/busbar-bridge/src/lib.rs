//! Bridges between two busbar connections, of any transports: an edge MQTT broker to a cloud
//! RabbitMQ, a robot's Redis to a platform's NATS, the in-process bus to any of them.
//!
//! * [`Bridge::topics`] forwards what matches a filter (a topic or a pattern) from one
//!   connection to the other, renaming topics by a [`Rewrite`] rule.
//! * [`Bridge::two_way`] is a pair of those in opposite directions that never send a message
//!   back where it came from.
//! * [`Bridge::rpc`] serves a topic on one side by calling a service on the other and
//!   returning its reply (errors and deadlines included).
//! * [`TcpBridge`] is of another kind: a bidirectional TCP proxy from a local port to one
//!   address, for protocols busbar does not speak (see [`tcp`]).
//!
//! **Loops.** Every message a bridge forwards carries the bridge's loop id in the header
//! [`VIA_HEADER`]; a bridge never forwards a message that already carries its own id. The
//! two directions of a two-way bridge share one id, so nothing crosses back; chains of
//! bridges that come back to their start stop there too.
//!
//! **Backpressure.** A bridge reads from a subscription with a bounded queue and publishes
//! each message before reading the next, so a slow target slows the bridge. What happens
//! when the queue is full is the bridge's [`Overflow`] policy: `Block` (the default) slows
//! the source (on the in-process bus the publisher itself waits; on a broker, the
//! connection stops reading), `DropOldest` and `DropNewest` drop, and every drop is counted
//! in [`BridgeStats::dropped`].
//!
//! **Restarts.** Connections reconnect and restore their subscriptions on their own, so a
//! bridge outlives a restart of either broker; publishes made while the target is away wait
//! in the target connection's outgoing queue or fail, and failures are counted. A bridge
//! with a durable source ([`BridgeOptions::durable`]) loses nothing the source kept: it
//! tries a message again while the target cannot take it, acknowledges it to the source
//! only once the target has it, and the source keeps what arrives while the bridge is
//! stopped.

#![forbid(unsafe_code)]

mod rewrite;
pub mod tcp;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use busbar_core::RpcError;
use busbar_core::error::PublishErrorKind;
use busbar_core::queue::DropCounter;
use busbar_core::transport::Acknowledge;
use busbar_core::{Codec, Connection, Message, Overflow, SubscribeOptions, TopicFilter};
use tokio::sync::Semaphore;

pub use rewrite::Rewrite;
pub use tcp::{TcpBridge, TcpBridgeOptions, TcpBridgeStats};

/// The header naming the bridges a message has crossed (comma-separated loop ids).
pub const VIA_HEADER: &str = "busbar-via";

/// What can go wrong setting a bridge up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// A rewrite rule cannot work with the bridge's filter.
    #[error("rewrite rule {rule}: {reason}")]
    Rewrite {
        /// The rule.
        rule: String,
        /// Why.
        reason: String,
    },
    /// The filter or topic given is not one.
    #[error("bridge {name}: {reason}")]
    Invalid {
        /// The bridge.
        name: String,
        /// Why.
        reason: String,
    },
    /// A connection refused the subscription.
    #[error(transparent)]
    Busbar(#[from] busbar_core::Error),
}

/// How a topic bridge forwards.
#[derive(Debug, Clone)]
pub struct BridgeOptions {
    /// How topics are renamed (default: kept).
    pub rewrite: Rewrite,
    /// Messages queued between the source and the target (default 1024).
    pub capacity: usize,
    /// What a full queue does (default `Block`: the source slows down).
    pub overflow: Overflow,
    /// The loop id (default: the bridge's name).
    pub loop_id: Option<String>,
    /// Read the source through the durable subscription of this name (see
    /// [`SubscribeOptions::durable`]): the source broker keeps what arrives while the bridge
    /// is stopped, and a message is acknowledged only once the target confirmed it, so a
    /// bridge restarted, or a target away for a while, loses nothing the source kept.
    /// Needs `Overflow::Block` and a source that keeps durable subscriptions.
    pub durable: Option<String>,
}

impl Default for BridgeOptions {
    fn default() -> Self {
        BridgeOptions {
            rewrite: Rewrite::Keep,
            capacity: 1024,
            overflow: Overflow::Block,
            loop_id: None,
            durable: None,
        }
    }
}

/// A bridge's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BridgeStats {
    /// Messages (or calls) forwarded.
    pub forwarded: u64,
    /// Messages dropped by the overflow policy.
    pub dropped: u64,
    /// Forwards that failed (a publish refused, a call unanswered, a topic that could not
    /// be renamed).
    pub failed: u64,
    /// Messages not forwarded because they had crossed this bridge (or its pair) already.
    pub looped: u64,
}

#[derive(Default)]
struct Counters {
    forwarded: AtomicU64,
    failed: AtomicU64,
    looped: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A running bridge. Stops when dropped.
pub struct Bridge {
    name: String,
    counters: Arc<Counters>,
    drops: Option<DropCounter>,
    /// Tells the task to stop taking messages (see [`Bridge::stop`]).
    stop: Arc<tokio::sync::Notify>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge").field("name", &self.name).field("stats", &self.stats()).finish()
    }
}

impl Bridge {
    /// Forwards what matches `filter` on `from` to `to`. The subscription is in place when
    /// this returns.
    pub async fn topics(
        name: &str,
        from: &Connection,
        to: &Connection,
        filter: &str,
        options: BridgeOptions,
    ) -> Result<Bridge, BridgeError> {
        let filter = TopicFilter::new(filter)
            .map_err(|e| BridgeError::Invalid { name: name.to_owned(), reason: e.to_string() })?;
        options.rewrite.check(&filter)?;
        let mut subscribe = SubscribeOptions::from(filter.clone())
            .capacity(options.capacity)
            .overflow(options.overflow)
            .qos(busbar_core::QoS::AtLeastOnce);
        if let Some(durable) = &options.durable {
            if options.overflow != Overflow::Block {
                return Err(BridgeError::Invalid {
                    name: name.to_owned(),
                    reason: "a durable bridge keeps every message: its overflow must be block"
                        .into(),
                });
            }
            subscribe = subscribe.durable(durable).acknowledge(Acknowledge::Explicit);
        }
        let durable = options.durable.is_some();
        let mut sub = from.subscribe_with(subscribe).await?;
        let drops = sub.drop_counter();
        let counters = Arc::new(Counters::default());
        let loop_id = options.loop_id.unwrap_or_else(|| name.to_owned());
        let (to, stats, rewrite) = (to.clone(), counters.clone(), options.rewrite);
        let bridge_name = name.to_owned();
        // The bridge keeps its source connection open: a connection closes with its last
        // handle, and its subscriptions with it.
        let source = from.clone();
        let stop = Arc::new(tokio::sync::Notify::new());
        let stopping = stop.clone();
        let task = tokio::spawn(async move {
            let _source = source;
            let route =
                Route { name: &bridge_name, loop_id: &loop_id, rewrite: &rewrite, filter: &filter };
            loop {
                // A stop is looked at between messages: the one being forwarded is finished.
                let message = tokio::select! {
                    () = stopping.notified() => break,
                    m = sub.recv() => match m {
                        Some(m) => m,
                        None => break,
                    },
                };
                if durable {
                    if !route.deliver(&to, &stats, message).await {
                        return;
                    }
                } else {
                    route.forward(&to, &stats, message).await;
                }
            }
        });
        Ok(Bridge { name: name.to_owned(), counters, drops: Some(drops), stop, task: Some(task) })
    }

    /// Two bridges in opposite directions sharing one loop id, so that what one forwards the
    /// other never sends back: `filter` on `a` goes to `b` with `rewrite`, and `back_filter`
    /// on `b` to `a` with `back_rewrite`.
    pub async fn two_way(
        name: &str,
        a: &Connection,
        b: &Connection,
        (filter, rewrite): (&str, Rewrite),
        (back_filter, back_rewrite): (&str, Rewrite),
    ) -> Result<(Bridge, Bridge), BridgeError> {
        let options = |rewrite| BridgeOptions {
            rewrite,
            loop_id: Some(name.to_owned()),
            ..BridgeOptions::default()
        };
        let there = Bridge::topics(&format!("{name}>"), a, b, filter, options(rewrite)).await?;
        let back =
            Bridge::topics(&format!("{name}<"), b, a, back_filter, options(back_rewrite)).await?;
        Ok((there, back))
    }

    /// Serves `topic` on `from` by calling `target` on `to` within `timeout`, up to
    /// `concurrency` calls at once, and returns each reply (or the error a caller of a busbar
    /// RPC service gets: `unavailable` when the other side does not answer).
    pub async fn rpc(
        name: &str,
        from: &Connection,
        to: &Connection,
        topic: &str,
        target: &str,
        timeout: Duration,
    ) -> Result<Bridge, BridgeError> {
        let invalid = |e: busbar_core::TopicError| BridgeError::Invalid {
            name: name.to_owned(),
            reason: e.to_string(),
        };
        let filter = TopicFilter::new(topic).map_err(invalid)?;
        let target = busbar_core::Topic::new(target).map_err(invalid)?;
        let options = SubscribeOptions::from(filter).qos(busbar_core::QoS::AtLeastOnce);
        let mut requests = from.subscribe_with(options).await?;
        let counters = Arc::new(Counters::default());
        let (from, to, stats) = (from.clone(), to.clone(), counters.clone());
        let calls = Arc::new(Semaphore::new(64));
        let bridge_name = name.to_owned();
        let task = tokio::spawn(async move {
            while let Some(request) = requests.recv().await {
                let Ok(permit) = calls.clone().acquire_owned().await else { return };
                let (from, to, target, stats) =
                    (from.clone(), to.clone(), target.clone(), stats.clone());
                let name = bridge_name.clone();
                tokio::spawn(async move {
                    call_across(&name, &from, &to, target, &stats, request, timeout).await;
                    drop(permit);
                });
            }
        });
        let stop = Arc::new(tokio::sync::Notify::new());
        Ok(Bridge { name: name.to_owned(), counters, drops: None, stop, task: Some(task) })
    }

    /// Stops gracefully: the message being forwarded is finished (and, from a durable
    /// source, acknowledged) before the bridge ends, so a bridge started again under the
    /// same durable name does not forward it twice. Dropping a bridge stops it at once
    /// instead (from a durable source, a message forwarded but not yet acknowledged then
    /// comes again: at least once).
    pub async fn stop(mut self) {
        self.stop.notify_one();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its counters.
    pub fn stats(&self) -> BridgeStats {
        self.stats_reader().read()
    }

    /// A handle that reads its counters from elsewhere (a metrics endpoint), also after the
    /// bridge stopped (the counters then keep their last values).
    pub fn stats_reader(&self) -> StatsReader {
        StatsReader { counters: self.counters.clone(), drops: self.drops.clone() }
    }
}

/// Reads a bridge's counters (see [`Bridge::stats_reader`]).
#[derive(Clone)]
pub struct StatsReader {
    counters: Arc<Counters>,
    drops: Option<DropCounter>,
}

impl StatsReader {
    /// The counters now.
    pub fn read(&self) -> BridgeStats {
        let c = &self.counters;
        BridgeStats {
            forwarded: c.forwarded.load(Ordering::Relaxed),
            dropped: self.drops.as_ref().map_or(0, DropCounter::get),
            failed: c.failed.load(Ordering::Relaxed),
            looped: c.looped.load(Ordering::Relaxed),
        }
    }
}

/// What one topic bridge does with each message.
struct Route<'a> {
    name: &'a str,
    loop_id: &'a str,
    rewrite: &'a Rewrite,
    filter: &'a TopicFilter,
}

/// What became of one message.
enum Forwarded {
    /// The target has it.
    Done,
    /// Not forwarded, for good (it crossed this bridge already, or cannot cross: counted).
    Skipped,
    /// The target could not take it now (away, or slow to confirm): worth trying again.
    Later,
    /// The target connection was closed.
    Closed,
}

/// The first wait before trying a message again, and the longest.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MOST: Duration = Duration::from_secs(5);

impl Route<'_> {
    /// Forwards one message once: what could not go is counted as failed.
    async fn forward(&self, to: &Connection, stats: &Counters, message: Message) {
        if let Forwarded::Later | Forwarded::Closed = self.try_forward(to, stats, message).await {
            bump(&stats.failed);
        }
    }

    /// Forwards one message from a durable subscription: tried again, with backoff, while
    /// the target cannot take it, and acknowledged to the source only once the target has
    /// it (or it was skipped for good, counted). False when the target connection closed:
    /// the message stays with the source for the bridge's next run.
    async fn deliver(&self, to: &Connection, stats: &Counters, message: Message) -> bool {
        let mut wait = RETRY_FIRST;
        loop {
            match self.try_forward(to, stats, message.clone()).await {
                Forwarded::Done | Forwarded::Skipped => {
                    message.ack();
                    return true;
                }
                Forwarded::Closed => return false,
                Forwarded::Later => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(RETRY_MOST);
                }
            }
        }
    }

    /// Forwards one message, unless it has crossed this bridge already.
    async fn try_forward(
        &self,
        to: &Connection,
        stats: &Counters,
        mut message: Message,
    ) -> Forwarded {
        let name = self.name;
        let via = message.headers.get(VIA_HEADER).unwrap_or_default().to_owned();
        if via.split(',').any(|id| id == self.loop_id) {
            bump(&stats.looped);
            return Forwarded::Skipped;
        }
        message.topic = match self.rewrite.apply(self.filter, &message.topic) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(bridge = name, error = %e, "message not forwarded");
                bump(&stats.failed);
                return Forwarded::Skipped;
            }
        };
        let via = if via.is_empty() {
            self.loop_id.to_owned()
        } else {
            format!("{via},{}", self.loop_id)
        };
        message.headers.insert(VIA_HEADER, via);
        let arrived = arrived_in_trace(name, &mut message);
        // A reply address names an inbox of the source's transport: meaningless on the other
        // side. Conversations cross through RPC bridges.
        message.reply_to = None;
        message.qos = crossing_qos(message.qos, to);
        let sent = match arrived {
            Some(arrived) => arrived.in_scope(async { to.publish(message).await }).await,
            None => to.publish(message).await,
        };
        match sent {
            Ok(()) => {
                bump(&stats.forwarded);
                Forwarded::Done
            }
            Err(e) => {
                tracing::warn!(bridge = name, error = %e, "message not forwarded");
                match e.kind() {
                    PublishErrorKind::Closed => Forwarded::Closed,
                    PublishErrorKind::NotConnected
                    | PublishErrorKind::TimedOut
                    | PublishErrorKind::Broker => Forwarded::Later,
                    _ => {
                        bump(&stats.failed);
                        Forwarded::Skipped
                    }
                }
            }
        }
    }
}

/// The QoS a message crosses to `to` with: the one it came with, or the target's best
/// where that is lower. Each hop has its own guarantee, and the bridge's configuration chose
/// the target: a bridge into Redis or NATS carries at most once (as documented), where a
/// publish asking for more than its transport gives would be refused.
fn crossing_qos(came_with: Option<busbar_core::QoS>, to: &Connection) -> Option<busbar_core::QoS> {
    came_with.map(|q| q.min(to.capabilities().max_qos))
}

/// One call across an RPC bridge.
async fn call_across(
    name: &str,
    from: &Connection,
    to: &Connection,
    target: busbar_core::Topic,
    stats: &Counters,
    request: Message,
    timeout: Duration,
) {
    if request.reply_to.is_none() {
        tracing::debug!(bridge = name, "request without a reply address dropped");
        return;
    }
    let mut outgoing = Message::new(target, request.payload.clone());
    outgoing.headers = request.headers.clone();
    let arrived = arrived_in_trace(name, &mut outgoing);
    outgoing.qos = crossing_qos(request.qos, to);
    let answered = match arrived {
        Some(arrived) => arrived.in_scope(to.request(outgoing, timeout)).await,
        None => to.request(outgoing, timeout).await,
    };
    let mut replied_in = None;
    let reply = match answered {
        Ok(answer) => {
            bump(&stats.forwarded);
            let Some(mut reply) = Message::reply(&request, answer.payload) else { return };
            reply.headers = answer.headers;
            replied_in = arrived_in_trace(name, &mut reply);
            reply
        }
        Err(e) => {
            bump(&stats.failed);
            tracing::debug!(bridge = name, error = %e, "call across the bridge failed");
            let error = RpcError::new(
                RpcError::UNAVAILABLE,
                format!("bridge {name}: the service on the other side failed: {e}"),
            );
            let Ok(body) = Codec::Json.encode(&error) else { return };
            let Some(reply) = Message::reply(&request, body) else { return };
            reply.with_header(
                busbar_core::message::header::STATUS,
                busbar_core::message::header::STATUS_ERROR,
            )
        }
    };
    let sent = match replied_in {
        Some(arrived) => arrived.in_scope(async { from.publish(reply).await }).await,
        None => from.publish(reply).await,
    };
    if let Err(e) = sent {
        tracing::debug!(bridge = name, error = %e, "reply not delivered");
    }
}

/// The span a traced message arrived as, taken off it: the bridge sends it on in that
/// span's scope, so that what it sends is a new span of the same trace below it (one hop,
/// one span, and no span id used twice).
fn arrived_in_trace(name: &str, message: &mut Message) -> Option<busbar_core::trace::TraceContext> {
    let arrived = busbar_core::trace::TraceContext::of(message)?;
    message.headers.remove(busbar_core::trace::TRACEPARENT);
    tracing::debug!(
        bridge = name,
        trace_id = %arrived.trace_id(),
        from_span_id = %arrived.span_id(),
        "busbar.bridge"
    );
    Some(arrived)
}

impl<K> From<busbar_core::error::OpError<K>> for BridgeError
where
    busbar_core::Error: From<busbar_core::error::OpError<K>>,
{
    fn from(e: busbar_core::error::OpError<K>) -> Self {
        BridgeError::Busbar(e.into())
    }
}
