//! The Redis transport: one multiplexed RESP3 connection for commands and pub/sub, owned by a
//! supervisor task, plus one dedicated connection per blocking list reader.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use busbar_core::auth::{SharedTokenProvider, TokenPlacement};
use busbar_core::queue::{Pushed, QueueConfig, QueueReceiver, QueueSender, queue};
use busbar_core::stats::Stats;
use busbar_core::topic::{TopicTrie, redis_subscription};
use busbar_core::transport::{BoxFuture, Completion, SubscriptionGuard};
use busbar_core::{
    Capabilities, ConnectOptions, ConnectionEvent, ConnectionEvents, Error, Message, Overflow, QoS,
    Result, StatsSnapshot, SubscribeOptions, Subscription, Topic, TopicFilter, Transport,
};
use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, PushInfo, PushKind, Value};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::envelope;
use crate::settings::Settings;

const KIND: &str = "redis";
/// Control channel: queue-group registrations and departures ("+entry" / "-entry").
const CTL_CHANNEL: &str = "busbar:ctl";

/// How long a graceful close waits for queued publishes to be sent.
const CLOSE_FLUSH: Duration = Duration::from_secs(5);
/// Set of every queue group entry (`group \0 filter`) that has members somewhere.
const GROUPS_KEY: &str = "busbar:groups";
/// Reply topics start with this; replies to them go to a list, not to pub/sub.
const INBOX_PREFIX: &str = "_busbar/inbox/";
/// How long an unread reply list lives (a requester that vanished leaves nothing behind).
const INBOX_TTL_MS: u64 = 60_000;
/// Most messages sent in one pipeline by the forwarder.
const BATCH: usize = 512;
/// Most items one BLMPOP takes from a queue group's list: small, so that members share the
/// load, while still amortising the round trip under a burst.
const GROUP_POP: usize = 16;
/// Longest one BLMPOP blocks: how long a list reader may outlive its last subscriber.
const POP_BLOCK: Duration = Duration::from_millis(500);

/// Most replies one BLMPOP takes from the inbox.
const INBOX_POP: usize = 256;
/// Largest bulk string Redis accepts by default (`proto-max-bulk-len`), less room for the
/// envelope.
const MAX_PAYLOAD: usize = 512 * 1024 * 1024 - 64 * 1024;

/// Leaves a queue group: forget this connection; if it was the last member anywhere, drop
/// the registration and the list, and tell every connection.
const LEAVE_SCRIPT: &str = r"
redis.call('SREM', KEYS[1], ARGV[1])
if redis.call('SCARD', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[2], ARGV[2])
  redis.call('DEL', KEYS[3])
  redis.call('PUBLISH', ARGV[3], '-' .. ARGV[2])
end
return 1";

/// A connection to a Redis server. See the crate documentation for the mapping.
pub struct RedisTransport {
    inner: Arc<Inner>,
}

#[derive(Clone)]
enum Link {
    Up(MultiplexedConnection),
    Down(String),
    Closed,
}

struct Inner {
    client_id: String,
    settings: Settings,
    caps: Capabilities,
    stats: Arc<Stats>,
    events: broadcast::Sender<ConnectionEvent>,
    link: watch::Sender<Link>,
    client: Mutex<redis::Client>,
    token: Option<SharedTokenProvider>,
    token_placement: TokenPlacement,
    closed: AtomicBool,
    cancel: CancellationToken,
    routes: Mutex<Routes>,
    /// Serialises SUBSCRIBE/UNSUBSCRIBE and group joins/leaves with the route changes they
    /// follow, so a late UNSUBSCRIBE can never undo a newer SUBSCRIBE of the same channel.
    sub_lock: tokio::sync::Mutex<()>,
    groups: Arc<RwLock<GroupCache>>,
    outgoing: QueueSender<Outgoing>,
    ctl: mpsc::UnboundedSender<Ctl>,
    /// Bumped on every new main connection, so a disconnect report from an old one is
    /// ignored.
    generation: AtomicU64,
    inbox_topic: Topic,
    inbox_key: String,
    inbox_started: AtomicBool,
    pending: Mutex<HashMap<u64, oneshot::Sender<Message>>>,
    next_correlation: AtomicU64,
    next_sub: AtomicU64,
}

/// Local subscriptions, by the Redis subscription that feeds them.
#[derive(Default)]
struct Routes {
    subs: HashMap<u64, LocalSub>,
    /// (is_pattern, channel or pattern) -> subscription ids.
    by_key: HashMap<(bool, String), Vec<u64>>,
    /// List key -> the local members reading that list (a queue group's or a named queue's).
    groups: HashMap<String, LocalGroup>,
}

struct LocalSub {
    filter: TopicFilter,
    refilter: bool,
    tx: QueueSender<Message>,
    overflow: Overflow,
}

/// The local subscriptions reading one list; each item goes to one of them.
struct LocalGroup {
    role: ListRole,
    members: Vec<(u64, QueueSender<Message>, Overflow, TopicFilter)>,
    next: usize,
    cancel: CancellationToken,
}

/// What a list read by local subscriptions is.
enum ListRole {
    /// A queue group's list: items are envelopes, and the group is in the registry.
    Group { entry: String },
    /// A named queue (`Topic::named_queue`): items are bare payloads, delivered on `topic`.
    Named { topic: Topic },
}

impl LocalGroup {
    /// The group registry entry, for a queue group.
    fn entry(&self) -> Option<&String> {
        match &self.role {
            ListRole::Group { entry } => Some(entry),
            ListRole::Named { .. } => None,
        }
    }
}

/// Queue groups known to exist anywhere, as every connection's publisher sees them.
#[derive(Default)]
struct GroupCache {
    entries: HashSet<String>,
    trie: TopicTrie<Arc<str>>,
}

impl GroupCache {
    fn apply(&mut self, notice: &[u8]) {
        let Some((&sign, entry)) = notice.split_first() else { return };
        let Ok(entry) = std::str::from_utf8(entry) else { return };
        let Some((_, filter)) = entry.split_once('\0') else { return };
        let Ok(filter) = TopicFilter::new(filter) else { return };
        match sign {
            b'+' if self.entries.insert(entry.to_owned()) => {
                self.trie.insert(&filter, Arc::from(list_key(entry)));
            }
            b'-' if self.entries.remove(entry) => {
                let key = list_key(entry);
                self.trie.remove(&filter, |k| **k == *key);
            }
            _ => {}
        }
    }
}

fn list_key(entry: &str) -> String {
    format!("busbar:q:{entry}")
}

fn members_key(entry: &str) -> String {
    format!("busbar:qm:{entry}")
}

enum Outgoing {
    Publish(Message),
    /// A request: the forwarder reports how many receivers it reached.
    Request(Message, oneshot::Sender<Result<usize>>),
    /// Answered once everything queued before it has been sent (a graceful close waits for
    /// it, so that publishes that returned are not lost).
    Flush(oneshot::Sender<()>),
}

enum Ctl {
    /// The main connection of this generation is gone.
    Lost(u64),
    /// No local subscription needs this Redis subscription any more.
    Unsubscribe(bool, String),
    /// No local member of this queue group remains.
    Leave(String),
}

/// What the socket reader hands to the dispatcher.
struct Inbound {
    pattern: Option<Vec<u8>>,
    channel: Vec<u8>,
    payload: Vec<u8>,
}

impl RedisTransport {
    /// Connects to `url` (`redis://` or `rediss://`). The first connection attempt is made
    /// here and its failure returned; later losses are repaired in the background.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`] for a bad URL, [`Error::Broker`] when the server refuses the
    /// credentials, [`Error::NotConnected`] when it cannot be reached.
    pub async fn connect(url: &str, options: ConnectOptions) -> Result<RedisTransport> {
        let settings = Settings::parse(url)?;
        if options.requires_last_will() {
            // Redis has no last will (an optional one, like the node's, is left out).
            return Err(Error::Unsupported { transport: "redis", feature: "last will" });
        }
        let client_id =
            options.client_id.clone().unwrap_or_else(|| format!("busbar-{}", short_uuid()));
        let token = match &options.token {
            Some(p) => Some(p.token().await?),
            None => None,
        };
        let client = crate::tls::client(
            &settings,
            token.as_ref().map(|t| t.value.as_str()),
            options.token_placement,
        )?;
        let (outgoing, out_rx) =
            queue(QueueConfig::new(settings.publish_queue, settings.publish_overflow));
        let (inbound_tx, inbound_rx) =
            queue(QueueConfig::new(settings.push_buffer, Overflow::DropNewest));
        let (ctl, ctl_rx) = mpsc::unbounded_channel();
        let inbox_id = uuid::Uuid::new_v4().simple().to_string();
        let inbox_topic = Topic::new(format!("{INBOX_PREFIX}{inbox_id}"))?;
        let inner = Arc::new(Inner {
            client_id,
            caps: capabilities(),
            stats: Arc::new(Stats::default()),
            events: ConnectionEvents::channel(),
            link: watch::channel(Link::Down("connecting".into())).0,
            client: Mutex::new(client),
            token: options.token.clone(),
            token_placement: options.token_placement,
            closed: AtomicBool::new(false),
            cancel: CancellationToken::new(),
            routes: Mutex::default(),
            sub_lock: tokio::sync::Mutex::new(()),
            groups: Arc::default(),
            outgoing,
            ctl,
            generation: AtomicU64::new(0),
            inbox_key: format!("busbar:{}", inbox_topic.as_str()),
            inbox_topic,
            inbox_started: AtomicBool::new(false),
            pending: Mutex::default(),
            next_correlation: AtomicU64::new(1),
            next_sub: AtomicU64::new(1),
            settings,
        });
        let inbound_tx = Arc::new(inbound_tx);
        let conn = inner.open_main(&inbound_tx).await?;
        inner.link.send_replace(Link::Up(conn));
        let _ = inner.events.send(ConnectionEvent::Connected);
        tokio::spawn(inner.clone().supervise(ctl_rx, inbound_tx));
        tokio::spawn(inner.clone().forward(out_rx));
        tokio::spawn(inner.clone().dispatch(inbound_rx));
        if let (Some(provider), Some(t)) = (&inner.token, token) {
            let me = inner.clone();
            tokio::spawn(busbar_core::auth::keep_fresh(
                provider.clone(),
                t,
                inner.cancel.clone(),
                move |token| {
                    let me = me.clone();
                    async move {
                        me.apply_token(token).await;
                        true
                    }
                },
            ));
        }
        Ok(RedisTransport { inner })
    }

    /// The settings parsed from the URL.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }
}

impl Drop for RedisTransport {
    fn drop(&mut self) {
        // The tasks hold the shared state; stopping them lets it go.
        self.inner.shutdown();
    }
}

fn capabilities() -> Capabilities {
    let mut c = Capabilities::none();
    c.queue_groups = true;
    c.named_queues = true;
    c.expiry = true;
    c.no_responders = true;
    c.max_qos = QoS::AtMostOnce;
    c.max_payload = Some(MAX_PAYLOAD);
    c
}

fn short_uuid() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

fn broker_error(message: impl Into<String>, e: redis::RedisError) -> Error {
    Error::Broker { transport: KIND, message: message.into(), source: Some(Box::new(e)) }
}

impl Inner {
    fn not_connected(&self, reason: impl Into<String>) -> Error {
        Error::NotConnected { url: self.settings.redacted_url.clone(), reason: reason.into() }
    }

    /// Turns a failed connection attempt into the error a user can act on.
    fn connect_error(&self, e: redis::RedisError) -> Error {
        let auth = e.kind() == redis::ErrorKind::AuthenticationFailed
            || matches!(e.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"));
        if auth {
            broker_error(
                format!(
                    "{} refused the credentials (wrong user name, password or token): {e}",
                    self.settings.redacted_url
                ),
                e,
            )
        } else if e.is_io_error() || e.is_connection_refusal() || e.is_timeout() {
            self.not_connected(e.to_string())
        } else {
            broker_error(format!("connecting to {}: {e}", self.settings.redacted_url), e)
        }
    }

    fn current(&self) -> Result<MultiplexedConnection> {
        match &*self.link.borrow() {
            Link::Up(c) => Ok(c.clone()),
            Link::Down(reason) => Err(self.not_connected(reason.clone())),
            Link::Closed => Err(Error::Closed),
        }
    }

    /// Waits until the main connection is up (or the transport closed).
    async fn wait_up(&self) -> Result<MultiplexedConnection> {
        let mut rx = self.link.subscribe();
        loop {
            match &*rx.borrow_and_update() {
                Link::Up(c) => return Ok(c.clone()),
                Link::Closed => return Err(Error::Closed),
                Link::Down(_) => {}
            }
            if rx.changed().await.is_err() {
                return Err(Error::Closed);
            }
        }
    }

    fn client(&self) -> redis::Client {
        self.client.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Opens the main connection, subscribes the control channel and everything local
    /// subscriptions need, re-joins queue groups and reloads the group registry.
    async fn open_main(
        self: &Arc<Self>,
        inbound: &Arc<QueueSender<Inbound>>,
    ) -> Result<MultiplexedConnection> {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let push = {
            let inbound = inbound.clone();
            let ctl = self.ctl.clone();
            let groups = self.groups.clone();
            let stats = self.stats.clone();
            let events = self.events.clone();
            move |info: PushInfo| -> std::result::Result<(), ()> {
                on_push(info, generation, &inbound, &ctl, &groups, &stats, &events);
                Ok(())
            }
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(self.settings.response_timeout))
            .set_push_sender(push);
        let mut conn = self
            .client()
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| self.connect_error(e))?;
        let _guard = self.sub_lock.lock().await;
        // The control channel first, then the registry: no notice can fall in between.
        conn.subscribe(CTL_CHANNEL).await.map_err(|e| self.connect_error(e))?;
        let keys: Vec<(bool, String)> = self.lock_routes().by_key.keys().cloned().collect();
        for (pattern, key) in keys {
            let r = if pattern { conn.psubscribe(&key).await } else { conn.subscribe(&key).await };
            r.map_err(|e| self.connect_error(e))?;
        }
        let entries: Vec<String> =
            self.lock_routes().groups.values().filter_map(|g| g.entry().cloned()).collect();
        for entry in entries {
            self.join(&mut conn, &entry).await?;
        }
        let all: Vec<Vec<u8>> = redis::cmd("SMEMBERS")
            .arg(GROUPS_KEY)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.connect_error(e))?;
        self.replace_groups(all);
        Ok(conn)
    }

    /// Replaces the cached group registry with `entries`, read from `busbar:groups`.
    fn replace_groups(&self, entries: Vec<Vec<u8>>) {
        let mut cache = self.groups.write().unwrap_or_else(|p| p.into_inner());
        *cache = GroupCache::default();
        for e in entries {
            let mut notice = Vec::with_capacity(e.len() + 1);
            notice.push(b'+');
            notice.extend_from_slice(&e);
            cache.apply(&notice);
        }
    }

    /// Reads the group registry again from Redis, the authority. A group registered on
    /// another connection reaches this one's cache through a notice on `busbar:ctl`, which
    /// may come after a request that needed it: a request that reached nobody checks here
    /// before it reports `NoResponders`.
    async fn refresh_groups(&self) -> Result<()> {
        let mut conn = self.current()?;
        let all: Vec<Vec<u8>> = redis::cmd("SMEMBERS")
            .arg(GROUPS_KEY)
            .query_async(&mut conn)
            .await
            .map_err(|e| broker_error("cannot read the queue-group registry", e))?;
        self.replace_groups(all);
        Ok(())
    }

    async fn join(&self, conn: &mut MultiplexedConnection, entry: &str) -> Result<()> {
        let mut notice = String::with_capacity(entry.len() + 1);
        notice.push('+');
        notice.push_str(entry);
        redis::pipe()
            .cmd("SADD")
            .arg(members_key(entry))
            .arg(&self.client_id)
            .ignore()
            .cmd("SADD")
            .arg(GROUPS_KEY)
            .arg(entry)
            .ignore()
            .cmd("PUBLISH")
            .arg(CTL_CHANNEL)
            .arg(notice)
            .ignore()
            .exec_async(conn)
            .await
            .map_err(|e| self.connect_error(e))
    }

    async fn leave(&self, conn: &mut MultiplexedConnection, entry: &str) -> Result<()> {
        redis::cmd("EVAL")
            .arg(LEAVE_SCRIPT)
            .arg(3)
            .arg(members_key(entry))
            .arg(GROUPS_KEY)
            .arg(list_key(entry))
            .arg(&self.client_id)
            .arg(entry)
            .arg(CTL_CHANNEL)
            .exec_async(conn)
            .await
            .map_err(|e| broker_error("leaving a queue group", e))
    }

    fn lock_routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Owns the main connection: repairs it with jittered exponential backoff when lost and
    /// carries out unsubscriptions.
    async fn supervise(
        self: Arc<Self>,
        mut ctl: mpsc::UnboundedReceiver<Ctl>,
        inbound: Arc<QueueSender<Inbound>>,
    ) {
        loop {
            let msg = tokio::select! {
                _ = self.cancel.cancelled() => return,
                m = ctl.recv() => match m { Some(m) => m, None => return },
            };
            match msg {
                Ctl::Lost(generation) => {
                    if generation != self.generation.load(Ordering::Acquire) {
                        continue;
                    }
                    let reason = "the connection to the Redis server was lost".to_owned();
                    self.link.send_replace(Link::Down(reason.clone()));
                    let _ = self.events.send(ConnectionEvent::Disconnected { reason });
                    let mut attempt = 0;
                    loop {
                        let wait = busbar_core::backoff::backoff(attempt);
                        tokio::select! {
                            _ = self.cancel.cancelled() => return,
                            _ = tokio::time::sleep(wait) => {}
                        }
                        match self.open_main(&inbound).await {
                            Ok(conn) => {
                                if self.cancel.is_cancelled() {
                                    return;
                                }
                                self.link.send_replace(Link::Up(conn));
                                let _ = self.events.send(ConnectionEvent::Reconnected);
                                break;
                            }
                            Err(e) => {
                                tracing::debug!(error = %e, "reconnect to Redis failed");
                                attempt += 1;
                            }
                        }
                    }
                }
                Ctl::Unsubscribe(pattern, key) => {
                    let _guard = self.sub_lock.lock().await;
                    if self.lock_routes().by_key.contains_key(&(pattern, key.clone())) {
                        continue; // subscribed again meanwhile
                    }
                    if let Ok(mut conn) = self.current() {
                        let r = if pattern {
                            conn.punsubscribe(&key).await
                        } else {
                            conn.unsubscribe(&key).await
                        };
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "unsubscribe failed");
                        }
                    }
                }
                Ctl::Leave(entry) => {
                    let _guard = self.sub_lock.lock().await;
                    if self.lock_routes().groups.values().any(|g| g.entry() == Some(&entry)) {
                        continue;
                    }
                    if let Ok(mut conn) = self.current()
                        && let Err(e) = self.leave(&mut conn, &entry).await
                    {
                        tracing::debug!(error = %e, "leaving a queue group failed");
                    }
                }
            }
        }
    }

    /// Moves publishes from the bounded publish queue to the server, pipelining whatever
    /// has accumulated while the previous batch was on the wire.
    async fn forward(self: Arc<Self>, mut rx: QueueReceiver<Outgoing>) {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let first = tokio::select! {
                _ = self.cancel.cancelled() => return,
                item = std::future::poll_fn(|cx| rx.poll_recv(cx)) => match item {
                    Some(i) => i,
                    None => return,
                },
            };
            let mut flushes = Vec::new();
            let mut next = Some(first);
            while let Some(item) = next.take() {
                match item {
                    Outgoing::Flush(done) => flushes.push(done),
                    item => batch.push(item),
                }
                if batch.len() < BATCH {
                    next = rx.try_recv();
                }
            }
            if !batch.is_empty() {
                self.send_batch(&mut batch).await;
                batch.clear();
            }
            // Everything queued before the flush markers has been sent.
            for done in flushes {
                let _ = done.send(());
            }
        }
    }

    async fn send_batch(&self, batch: &mut Vec<Outgoing>) {
        let mut pipe = redis::pipe();
        // For each item: index of its PUBLISH result among the non-ignored results, and the
        // number of queue-group lists it went to.
        let mut counts: Vec<Option<(usize, usize)>> = Vec::with_capacity(batch.len());
        let mut results = 0;
        {
            let groups = self.groups.read().unwrap_or_else(|p| p.into_inner());
            for item in batch.iter() {
                let m = match item {
                    Outgoing::Publish(m) | Outgoing::Request(m, _) => m,
                    Outgoing::Flush(_) => {
                        counts.push(None);
                        continue;
                    }
                };
                let payload = match m.payload.to_bytes() {
                    Ok(p) => p,
                    Err(e) => {
                        // Checked in `publish` already; a typed value that fails here is
                        // reported and skipped.
                        tracing::warn!(topic = %m.topic, error = %e, "could not encode a message");
                        counts.push(None);
                        continue;
                    }
                };
                if let Some(list) = m.topic.queue_name() {
                    // A named queue is a Redis list of bare payloads, as other clients use it.
                    pipe.cmd("RPUSH").arg(list).arg(payload.as_ref());
                    counts.push(Some((results, 0)));
                    results += 1;
                    continue;
                }
                let topic = m.topic.as_str();
                if topic.starts_with(INBOX_PREFIX) {
                    let key = format!("busbar:{topic}");
                    pipe.cmd("RPUSH").arg(&key).arg(envelope::encode(m, &payload, true).as_ref());
                    pipe.cmd("PEXPIRE").arg(&key).arg(INBOX_TTL_MS).ignore();
                    counts.push(Some((results, 0)));
                    results += 1;
                    continue;
                }
                pipe.cmd("PUBLISH").arg(topic).arg(envelope::encode(m, &payload, false).as_ref());
                let mut lists = 0;
                if !groups.entries.is_empty() {
                    let mut item_env = None;
                    groups.trie.for_each_match(topic, |key| {
                        let env =
                            item_env.get_or_insert_with(|| envelope::encode(m, &payload, true));
                        pipe.cmd("RPUSH").arg(&**key).arg(env.as_ref()).ignore();
                        lists += 1;
                    });
                }
                counts.push(Some((results, lists)));
                results += 1;
            }
        }
        let outcome: std::result::Result<Vec<i64>, Error> = loop {
            let mut conn = match self.wait_up().await {
                Ok(c) => c,
                Err(e) => break Err(e),
            };
            match pipe.query_async::<Vec<i64>>(&mut conn).await {
                Ok(v) => break Ok(v),
                Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() => {
                    // The batch is sent again once the connection is back (at least once:
                    // part of it may have reached the server before the loss).
                    tracing::debug!(error = %e, "publish batch interrupted; retrying after reconnect");
                    let mut rx = self.link.subscribe();
                    let still_up = matches!(&*rx.borrow_and_update(), Link::Up(_));
                    if still_up {
                        tokio::select! {
                            _ = self.cancel.cancelled() => break Err(Error::Closed),
                            _ = rx.changed() => {}
                            // The supervisor may not have noticed a timeout: try again soon.
                            _ = tokio::time::sleep(busbar_core::backoff::MIN) => {}
                        }
                    }
                }
                Err(e) => break Err(broker_error("publishing", e)),
            }
        };
        match outcome {
            Ok(values) => {
                for (item, count) in batch.drain(..).zip(counts) {
                    Stats::bump(&self.stats.published);
                    if let (Outgoing::Request(_, ack), Some((i, lists))) = (item, count) {
                        let reached = values.get(i).copied().unwrap_or(0).max(0) as usize;
                        let _ = ack.send(Ok(reached + lists));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, dropped = batch.len(), "a publish batch failed");
                for item in batch.drain(..) {
                    if let Outgoing::Request(_, ack) = item {
                        let _ = ack.send(Err(match &e {
                            Error::Broker { message, .. } => Error::Broker {
                                transport: KIND,
                                message: message.clone(),
                                source: None,
                            },
                            Error::Closed => Error::Closed,
                            other => self.not_connected(other.to_string()),
                        }));
                    }
                }
            }
        }
    }

    /// Routes pub/sub messages to local subscriptions, in arrival order.
    async fn dispatch(self: Arc<Self>, mut rx: QueueReceiver<Inbound>) {
        let mut targets: Vec<(QueueSender<Message>, Overflow, TopicFilter)> = Vec::new();
        loop {
            let item = tokio::select! {
                _ = self.cancel.cancelled() => return,
                item = std::future::poll_fn(|cx| rx.poll_recv(cx)) => match item {
                    Some(i) => i,
                    None => return,
                },
            };
            let Ok(channel) = std::str::from_utf8(&item.channel) else { continue };
            {
                let routes = self.lock_routes();
                let key = match &item.pattern {
                    Some(p) => match std::str::from_utf8(p) {
                        Ok(p) => (true, p.to_owned()),
                        Err(_) => continue,
                    },
                    None => (false, channel.to_owned()),
                };
                if let Some(ids) = routes.by_key.get(&key) {
                    for id in ids {
                        if let Some(s) = routes.subs.get(id)
                            && (!s.refilter || s.filter.matches_str(channel))
                        {
                            targets.push((s.tx.clone(), s.overflow, s.filter.clone()));
                        }
                    }
                }
            }
            if targets.is_empty() {
                continue;
            }
            let Ok(topic) = Topic::new(channel) else {
                tracing::debug!(channel, "message on a channel that is not a busbar topic skipped");
                targets.clear();
                continue;
            };
            let message = match envelope::decode(Bytes::from(item.payload)) {
                Ok(d) => d.into_message(topic),
                Err(e) => {
                    tracing::warn!(channel, reason = e.0, "malformed envelope skipped");
                    targets.clear();
                    continue;
                }
            };
            let last = targets.len() - 1;
            let mut message = Some(message);
            for (i, (tx, overflow, filter)) in targets.drain(..).enumerate() {
                let m = if i == last { message.take() } else { message.clone() };
                let Some(m) = m else { break };
                self.deliver(&tx, overflow, &filter, m).await;
            }
        }
    }

    async fn deliver(
        &self,
        tx: &QueueSender<Message>,
        overflow: Overflow,
        filter: &TopicFilter,
        m: Message,
    ) {
        // Counted before the push and taken back if the message was not queued: a reader
        // that has just taken the message must already see it counted.
        Stats::bump(&self.stats.delivered);
        let uncount = || self.stats.delivered.fetch_sub(1, Ordering::Relaxed);
        match tx.try_push(m) {
            Pushed::Queued => {}
            Pushed::Dropped { first_of_burst } => {
                Stats::bump(&self.stats.dropped);
                // Under DropOldest the new message was queued (an older one went).
                if overflow != Overflow::DropOldest {
                    uncount();
                }
                if first_of_burst {
                    self.slow(filter, tx.dropped());
                }
            }
            Pushed::Full { item, first_of_burst } => {
                if first_of_burst {
                    self.slow(filter, 0);
                }
                // Block: wait for room. Redis keeps sending meanwhile; what arrives waits in
                // the bounded push buffer (and then in the server's output buffer).
                if tx.push(item).await.is_err() {
                    uncount();
                }
            }
            Pushed::Closed(_) => {
                uncount();
            }
        }
    }

    fn slow(&self, filter: &TopicFilter, dropped: u64) {
        let _ = self
            .events
            .send(ConnectionEvent::SlowConsumer { filter: filter.as_str().to_owned(), dropped });
    }

    /// A connection of its own for a blocking list read (a blocked command would hold up
    /// everything pipelined behind it on the shared connection).
    async fn blocking_connection(&self) -> Result<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(None);
        self.client()
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| self.connect_error(e))
    }

    /// Pops up to `count` items from `key`, blocking until there is one. `None` when the
    /// transport or `cancel` ends; connection losses are repaired here.
    ///
    /// A pop in flight is never abandoned: the server may already have taken items for it,
    /// which would then be lost. Each pop blocks for at most [`POP_BLOCK`], `cancel` is looked
    /// at between pops, and items that arrive after it are pushed back to the head of the
    /// list, in order, for the next reader.
    async fn pop(
        &self,
        conn: &mut Option<MultiplexedConnection>,
        key: &str,
        count: usize,
        cancel: &CancellationToken,
    ) -> Option<Vec<Vec<u8>>> {
        let mut attempt = 0;
        loop {
            if cancel.is_cancelled() {
                return None;
            }
            if conn.is_none() {
                tokio::select! {
                    _ = cancel.cancelled() => return None,
                    r = self.wait_up() => if r.is_err() { return None },
                }
                match self.blocking_connection().await {
                    Ok(c) => {
                        *conn = Some(c);
                        attempt = 0;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "list reader could not connect");
                        tokio::select! {
                            _ = cancel.cancelled() => return None,
                            _ = tokio::time::sleep(busbar_core::backoff::backoff(attempt)) => {}
                        }
                        attempt += 1;
                        continue;
                    }
                }
            }
            let c = conn.as_mut()?;
            let mut cmd = redis::cmd("BLMPOP");
            cmd.arg(POP_BLOCK.as_secs_f64()).arg(1).arg(key).arg("LEFT").arg("COUNT").arg(count);
            match cmd.query_async::<Option<(String, Vec<Vec<u8>>)>>(c).await {
                Ok(Some((_, items))) if cancel.is_cancelled() => {
                    let mut back = redis::cmd("LPUSH");
                    back.arg(key);
                    for item in items.iter().rev() {
                        back.arg(item.as_slice());
                    }
                    if let Err(e) = back.query_async::<i64>(c).await {
                        tracing::warn!(error = %e, key, lost = items.len(), "could not return items taken after a reader stopped");
                    }
                    return None;
                }
                Ok(Some((_, items))) => return Some(items),
                Ok(None) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, key, "list read failed; reconnecting");
                    *conn = None;
                }
            }
        }
    }

    /// Starts the reply reader the first time a request is made.
    fn ensure_inbox(self: &Arc<Self>) {
        if self.inbox_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = self.clone();
        tokio::spawn(async move {
            let mut conn = None;
            let cancel = inner.cancel.clone();
            while let Some(items) = inner.pop(&mut conn, &inner.inbox_key, INBOX_POP, &cancel).await
            {
                for item in items {
                    let Ok(d) = envelope::decode(Bytes::from(item)) else {
                        tracing::warn!("malformed reply skipped");
                        continue;
                    };
                    let id = d
                        .correlation_id
                        .as_ref()
                        .and_then(|c| <[u8; 8]>::try_from(c.as_ref()).ok())
                        .map(u64::from_be_bytes);
                    let waiter = id.and_then(|id| {
                        inner.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id)
                    });
                    match waiter {
                        Some(tx) => {
                            let m = d.into_message(inner.inbox_topic.clone());
                            if tx.send(m).is_err() {
                                Stats::bump(&inner.stats.late_replies);
                            }
                        }
                        None => Stats::bump(&inner.stats.late_replies),
                    }
                }
            }
        });
    }

    /// Reads one list (a queue group's or a named queue's) for this connection's members.
    async fn serve_group(self: Arc<Self>, key: String, cancel: CancellationToken) {
        let named = match self.lock_routes().groups.get(&key).map(|g| &g.role) {
            Some(ListRole::Named { topic }) => Some(topic.clone()),
            Some(ListRole::Group { .. }) => None,
            None => return,
        };
        let mut conn = None;
        while let Some(items) = self.pop(&mut conn, &key, GROUP_POP, &cancel).await {
            for item in items {
                let m = match &named {
                    // A named queue holds bare payloads, as other Redis clients push them.
                    Some(topic) => Message::new(topic.clone(), Bytes::from(item)),
                    None => {
                        let Ok(d) = envelope::decode(Bytes::from(item)) else {
                            tracing::warn!(key, "malformed queue-group item skipped");
                            continue;
                        };
                        let Some(topic) = d.topic.clone() else { continue };
                        d.into_message(topic)
                    }
                };
                // Round robin over the local members, preferring one with room.
                let chosen = {
                    let mut routes = self.lock_routes();
                    let Some(g) = routes.groups.get_mut(&key) else { return };
                    let n = g.members.len();
                    if n == 0 {
                        return;
                    }
                    let start = g.next;
                    let pick = (0..n)
                        .map(|i| (start + i) % n)
                        .find(|i| g.members[*i].1.has_room())
                        .unwrap_or(start % n);
                    g.next = pick + 1;
                    let (_, tx, overflow, filter) = &g.members[pick];
                    (tx.clone(), *overflow, filter.clone())
                };
                self.deliver(&chosen.0, chosen.1, &chosen.2, m).await;
            }
        }
    }

    /// Puts a fresh token to use: kept for the next reconnect, and the live connection
    /// re-authenticates with it (Redis keeps subscriptions across AUTH).
    async fn apply_token(&self, token: busbar_core::auth::Token) {
        match crate::tls::client(&self.settings, Some(&token.value), self.token_placement) {
            Ok(c) => *self.client.lock().unwrap_or_else(|p| p.into_inner()) = c,
            Err(e) => tracing::warn!(error = %e, "could not apply the new token"),
        }
        if let Ok(mut conn) = self.current() {
            let (user, pass) =
                crate::tls::credentials(&self.settings, Some(&token.value), self.token_placement);
            let mut auth = redis::cmd("AUTH");
            if let Some(u) = user {
                auth.arg(u);
            }
            auth.arg(pass.unwrap_or_default());
            if let Err(e) = auth.exec_async(&mut conn).await {
                tracing::warn!(error = %e, "re-AUTH with the new token failed");
            }
        }
    }

    fn shutdown(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.cancel.cancel();
        self.link.send_replace(Link::Closed);
        let mut routes = self.lock_routes();
        routes.subs.clear();
        routes.by_key.clear();
        for (_, g) in routes.groups.drain() {
            g.cancel.cancel();
        }
        drop(routes);
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).clear();
        let _ = self.events.send(ConnectionEvent::Closed);
    }
}

/// Called by redis-rs's connection driver for every push (it must not block).
fn on_push(
    info: PushInfo,
    generation: u64,
    inbound: &QueueSender<Inbound>,
    ctl: &mpsc::UnboundedSender<Ctl>,
    groups: &RwLock<GroupCache>,
    stats: &Stats,
    events: &broadcast::Sender<ConnectionEvent>,
) {
    let mut data = info.data.into_iter();
    let (pattern, channel, payload) = match info.kind {
        PushKind::Disconnection => {
            let _ = ctl.send(Ctl::Lost(generation));
            return;
        }
        PushKind::Message => match (data.next(), data.next()) {
            (Some(c), Some(p)) => (None, bulk(c), bulk(p)),
            _ => return,
        },
        PushKind::PMessage => match (data.next(), data.next(), data.next()) {
            (Some(pat), Some(c), Some(p)) => (Some(bulk(pat)), bulk(c), bulk(p)),
            _ => return,
        },
        _ => return,
    };
    let (Some(channel), Some(payload)) = (channel, payload) else { return };
    if pattern.is_none() && channel == CTL_CHANNEL.as_bytes() {
        // Applied here, in socket order: a reply read after this notice (say to a
        // SUBSCRIBE) can only be seen once the publisher's view includes the change.
        groups.write().unwrap_or_else(|p| p.into_inner()).apply(&payload);
        return;
    }
    let pattern = match pattern {
        Some(Some(p)) => Some(p),
        Some(None) => return,
        None => None,
    };
    if let Pushed::Dropped { first_of_burst } =
        inbound.try_push(Inbound { pattern, channel, payload })
    {
        Stats::bump(&stats.dropped);
        if first_of_burst {
            let _ = events.send(ConnectionEvent::SlowConsumer {
                filter: "(redis push buffer)".into(),
                dropped: inbound.dropped(),
            });
        }
    }
}

fn bulk(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

impl Transport for RedisTransport {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn client_id(&self) -> &str {
        &self.inner.client_id
    }

    fn capabilities(&self) -> &Capabilities {
        &self.inner.caps
    }

    fn publish(&self, message: Message) -> Completion<'_, ()> {
        let inner = &self.inner;
        if let Err(e) = inner.check_outgoing(&message) {
            return Completion::ready(Err(e));
        }
        match inner.outgoing.try_push(Outgoing::Publish(message)) {
            Pushed::Queued => Completion::ready(Ok(())),
            Pushed::Dropped { .. } => {
                Stats::bump(&inner.stats.dropped);
                Completion::ready(Ok(()))
            }
            Pushed::Full { item, .. } => Completion::Pending(Box::pin(async move {
                inner.outgoing.push(item).await.map_err(|_| Error::Closed)
            })),
            Pushed::Closed(_) => Completion::ready(Err(Error::Closed)),
        }
    }

    fn subscribe(&self, options: SubscribeOptions) -> BoxFuture<'_, Result<Subscription>> {
        Box::pin(async move {
            let inner = &self.inner;
            if inner.closed.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            if options.no_local {
                return Err(Error::Unsupported {
                    transport: KIND,
                    feature: "no-local subscriptions",
                });
            }
            let (tx, rx) = queue(options.queue);
            let id = inner.next_sub.fetch_add(1, Ordering::Relaxed);
            let filter = options.filter.clone();
            let overflow = options.queue.overflow;
            let guard = match (filter.queue_name(), options.queue_group) {
                (Some(list), _) => inner.subscribe_list(id, list, filter.clone(), tx, overflow)?,
                (None, Some(group)) => {
                    inner.subscribe_group(id, group, filter.clone(), tx, overflow).await?
                }
                (None, None) => inner.subscribe_plain(id, filter.clone(), tx, overflow).await?,
            };
            Ok(Subscription::new(filter, rx, inner.stats.clone(), guard))
        })
    }

    fn request(&self, mut message: Message, timeout: Duration) -> BoxFuture<'_, Result<Message>> {
        Box::pin(async move {
            let inner = &self.inner;
            inner.check_outgoing(&message)?;
            if message.topic.queue_name().is_some() {
                return Err(Error::Unsupported {
                    transport: KIND,
                    feature: "requests to a named queue (a Redis list item carries no reply \
                              address; put one in the payload and read it from another list)",
                });
            }
            inner.current()?;
            inner.ensure_inbox();
            let id = inner.next_correlation.fetch_add(1, Ordering::Relaxed);
            message.reply_to = Some(inner.inbox_topic.clone());
            message.correlation_id = Some(Bytes::copy_from_slice(&id.to_be_bytes()));
            let topic = message.topic.as_str().to_owned();
            let (tx, rx) = oneshot::channel();
            inner.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(id, tx);
            // Removes the waiter however this future ends (reply, timeout, drop).
            struct Pending<'a>(&'a Inner, u64);
            impl Drop for Pending<'_> {
                fn drop(&mut self) {
                    self.0.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.1);
                }
            }
            let _pending = Pending(inner, id);
            Stats::bump(&inner.stats.requests);
            let exchange = async {
                let send = |message: Message| async {
                    let (ack_tx, ack_rx) = oneshot::channel();
                    inner
                        .outgoing
                        .push(Outgoing::Request(message, ack_tx))
                        .await
                        .map_err(|_| Error::Closed)?;
                    ack_rx.await.map_err(|_| Error::Closed)?
                };
                let mut reached = send(message.clone()).await?;
                if reached == 0 {
                    // Maybe a server's group is newer than this connection's cache of them.
                    inner.refresh_groups().await?;
                    reached = send(message).await?;
                }
                if reached == 0 {
                    return Err(Error::NoResponders { topic: topic.clone() });
                }
                rx.await.map_err(|_| Error::Closed)
            };
            match tokio::time::timeout(timeout, exchange).await {
                Ok(r) => r,
                Err(_) => {
                    Stats::bump(&inner.stats.timeouts);
                    Err(Error::Timeout { topic, timeout })
                }
            }
        })
    }

    fn events(&self) -> ConnectionEvents {
        ConnectionEvents::new(self.inner.events.subscribe())
    }

    fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    fn close(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let inner = &self.inner;
            if inner.closed.load(Ordering::Acquire) {
                return Ok(());
            }
            // What was published before the close goes out first (publishes return once
            // queued): wait, within reason, for the publish queue to be sent.
            let (done, sent) = oneshot::channel();
            if inner.outgoing.push(Outgoing::Flush(done)).await.is_ok()
                && tokio::time::timeout(CLOSE_FLUSH, sent).await.is_err()
            {
                tracing::warn!("closing with publishes not yet sent ({CLOSE_FLUSH:?} passed)");
            }
            // Leave queue groups first so their lists stop receiving for us.
            let entries: Vec<String> =
                inner.lock_routes().groups.values().filter_map(|g| g.entry().cloned()).collect();
            if let Ok(mut conn) = inner.current() {
                for entry in entries {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        inner.leave(&mut conn, &entry),
                    )
                    .await;
                }
            }
            inner.shutdown();
            Ok(())
        })
    }
}

impl Inner {
    fn check_outgoing(&self, message: &Message) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if message.retain {
            return Err(Error::Unsupported { transport: KIND, feature: "retained messages" });
        }
        if message.topic.queue_name().is_some()
            && (!message.headers.is_empty()
                || message.reply_to.is_some()
                || message.correlation_id.is_some()
                || message.expires_at.is_some())
        {
            // Refused rather than dropped: a list item is the payload alone.
            return Err(Error::Unsupported {
                transport: KIND,
                feature: "headers, reply topics, correlation ids or expiry on a named queue \
                          (a Redis list item is the payload alone)",
            });
        }
        if let busbar_core::Payload::Bytes(b) = &message.payload
            && b.len() > MAX_PAYLOAD
        {
            return Err(Error::PayloadTooLarge { size: b.len(), max: MAX_PAYLOAD });
        }
        if let Link::Down(reason) = &*self.link.borrow() {
            // Redis pub/sub keeps nothing for later: say so instead of queueing into a void.
            return Err(self.not_connected(reason.clone()));
        }
        Ok(())
    }

    async fn subscribe_plain(
        self: &Arc<Self>,
        id: u64,
        filter: TopicFilter,
        tx: QueueSender<Message>,
        overflow: Overflow,
    ) -> Result<SubscriptionGuard> {
        let rs = redis_subscription(&filter);
        let key = (rs.is_pattern, rs.pattern_or_channel);
        let _guard = self.sub_lock.lock().await;
        {
            let mut routes = self.lock_routes();
            routes.subs.insert(id, LocalSub { filter, refilter: rs.needs_refilter, tx, overflow });
            routes.by_key.entry(key.clone()).or_default().push(id);
        }
        let remove = {
            let inner = Arc::downgrade(self);
            let key = key.clone();
            move || {
                let Some(inner) = inner.upgrade() else { return };
                let mut routes = inner.lock_routes();
                routes.subs.remove(&id);
                if let Some(ids) = routes.by_key.get_mut(&key) {
                    ids.retain(|i| *i != id);
                    if ids.is_empty() {
                        routes.by_key.remove(&key);
                        let _ = inner.ctl.send(Ctl::Unsubscribe(key.0, key.1.clone()));
                    }
                }
            }
        };
        // Sent even when another local subscription has it already: the call then returns
        // only once the server has confirmed (Redis ignores the repeat).
        let r = match self.current() {
            Ok(mut conn) => {
                if key.0 {
                    conn.psubscribe(&key.1).await
                } else {
                    conn.subscribe(&key.1).await
                }
            }
            // Down: the reconnect subscribes everything in the routes.
            Err(Error::Closed) => {
                remove();
                return Err(Error::Closed);
            }
            Err(_) => Ok(()),
        };
        if let Err(e) = r
            && !(e.is_io_error() || e.is_connection_dropped())
        {
            remove();
            return Err(broker_error(format!("subscribing to {}", key.1), e));
        }
        Ok(SubscriptionGuard::new(remove))
    }

    /// Reads the named queue (Redis list) `list`, sharing its items among this connection's
    /// subscribers to it; other connections reading it compete for the items.
    fn subscribe_list(
        self: &Arc<Self>,
        id: u64,
        list: String,
        filter: TopicFilter,
        tx: QueueSender<Message>,
        overflow: Overflow,
    ) -> Result<SubscriptionGuard> {
        let topic = Topic::new(filter.as_str())?;
        {
            let mut routes = self.lock_routes();
            let g = routes.groups.entry(list.clone()).or_insert_with(|| LocalGroup {
                role: ListRole::Named { topic },
                members: Vec::new(),
                next: 0,
                cancel: self.cancel.child_token(),
            });
            g.members.push((id, tx, overflow, filter));
            if g.members.len() == 1 {
                tokio::spawn(self.clone().serve_group(list.clone(), g.cancel.clone()));
            }
        }
        let inner = Arc::downgrade(self);
        Ok(SubscriptionGuard::new(move || {
            let Some(inner) = inner.upgrade() else { return };
            let mut routes = inner.lock_routes();
            let Some(g) = routes.groups.get_mut(&list) else { return };
            g.members.retain(|m| m.0 != id);
            if g.members.is_empty()
                && let Some(g) = routes.groups.remove(&list)
            {
                g.cancel.cancel();
            }
        }))
    }

    async fn subscribe_group(
        self: &Arc<Self>,
        id: u64,
        group: String,
        filter: TopicFilter,
        tx: QueueSender<Message>,
        overflow: Overflow,
    ) -> Result<SubscriptionGuard> {
        let entry = format!("{group}\0{}", filter.as_str());
        let key = list_key(&entry);
        let _guard = self.sub_lock.lock().await;
        let is_new = {
            let mut routes = self.lock_routes();
            let is_new = !routes.groups.contains_key(&key);
            let g = routes.groups.entry(key.clone()).or_insert_with(|| LocalGroup {
                role: ListRole::Group { entry: entry.clone() },
                members: Vec::new(),
                next: 0,
                cancel: self.cancel.child_token(),
            });
            g.members.push((id, tx, overflow, filter));
            if is_new {
                tokio::spawn(self.clone().serve_group(key.clone(), g.cancel.clone()));
            }
            is_new
        };
        let remove = {
            let inner = Arc::downgrade(self);
            let key = key.clone();
            move || {
                let Some(inner) = inner.upgrade() else { return };
                let mut routes = inner.lock_routes();
                let Some(g) = routes.groups.get_mut(&key) else { return };
                g.members.retain(|m| m.0 != id);
                if g.members.is_empty()
                    && let Some(g) = routes.groups.remove(&key)
                {
                    g.cancel.cancel();
                    if let ListRole::Group { entry } = g.role {
                        let _ = inner.ctl.send(Ctl::Leave(entry));
                    }
                }
            }
        };
        if is_new {
            match self.current() {
                Ok(mut conn) => {
                    if let Err(e) = self.join(&mut conn, &entry).await {
                        remove();
                        return Err(e);
                    }
                }
                Err(Error::Closed) => {
                    remove();
                    return Err(Error::Closed);
                }
                Err(_) => {} // joined by the reconnect
            }
        }
        Ok(SubscriptionGuard::new(remove))
    }
}
