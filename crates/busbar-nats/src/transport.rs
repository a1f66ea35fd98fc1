//! The NATS transport on async-nats.
//!
//! async-nats owns the socket in its own connection task: it reconnects (with busbar's
//! jittered backoff) and re-sends every subscription itself, and user calls only enqueue
//! commands to it. On top of that busbar keeps:
//!
//! * **Routes**: one NATS subscription (two for `a/#`) per distinct (filter, queue group) on
//!   this connection, shared by any number of local subscriptions. The route's waker,
//!   registered with async-nats' per-subscription buffers, moves each message on to every
//!   local delivery queue in arrival order as async-nats hands it over (no task hop),
//!   applying the queue's overflow policy; a queue group's copy goes to one local member.
//!   Only a message that meets a full `Block` queue is handed to the route's stall task,
//!   which waits for room while the route takes nothing more. Sharing the route means every local subscription to one filter is
//!   offered the same messages in the same order, and leaving a group on this connection
//!   never has to race an UNSUB against later publishes.
//! * **Sync**: NATS has no SUBACK. A subscribe resolves once a message this connection
//!   published to its own private sync subject (after the SUB) has come back: the server
//!   handles a connection's commands in order, so by then the subscription is in place.
//! * **Events**: async-nats' events become [`ConnectionEvent`]s; `Reconnected` is sent only
//!   after a sync round trip on the new connection, so the re-subscriptions are in place.
//!   async-nats' slow-consumer drops (its per-subscription buffer overflowed) are counted in
//!   `dropped`.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use async_nats::client::{PublishErrorKind, RequestErrorKind};
use busbar_core::auth::{SharedTokenProvider, Token, TokenPlacement};
use busbar_core::message::Message;
use busbar_core::queue::{Pushed, QueueReceiver, QueueSender, queue};
use busbar_core::stats::{Stats, StatsSnapshot};
use busbar_core::topic::{Topic, TopicFilter, nats_filters, nats_subject, topic_from_nats};
use busbar_core::transport::{
    BoxFuture, Capabilities, Completion, ConnectOptions, ConnectionEvent, ConnectionEvents,
    SubscribeOptions, Subscription, SubscriptionGuard, Transport,
};
use busbar_core::{Error, Overflow, QoS, Result};
use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::{broadcast, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::convert::{headers_out, message_in};
use crate::settings::{Credentials, Settings};

/// How long a subscribe waits for the server to confirm it.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `close` waits for buffered publishes to reach the server.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// A subscription that keeps overflowing in async-nats' buffer is reported at most this often.
const SLOW_EVENT_INTERVAL: Duration = Duration::from_secs(1);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn broker_error(message: String, source: Option<busbar_core::error::BoxError>) -> Error {
    Error::Broker { transport: "nats", message, source }
}

/// One local subscription on a route.
struct Local {
    id: u64,
    tx: QueueSender<Message>,
}

struct RouteState {
    locals: Vec<Local>,
    /// The NATS subscriptions; `None` once the last local subscription left (dropping them
    /// sends the UNSUBs).
    nats: Option<Vec<async_nats::Subscriber>>,
    /// The queue group member to offer the next message to first.
    next_member: usize,
    /// Set while a message waits for room in a full `Block` queue: nothing else is taken
    /// from async-nats meanwhile, so order is kept.
    blocked: bool,
    /// That message and the queues it still has to reach.
    stalled: Option<(Message, Vec<QueueSender<Message>>)>,
}

/// One NATS subscription (or two, for `a/#`) shared by the local subscriptions to one
/// filter and queue group.
struct Route {
    filter: TopicFilter,
    group: Option<String>,
    /// For each NATS subscription, the topic of its messages when its subject is literal.
    literal: Vec<Option<Topic>>,
    /// NATS wildcards ignore MQTT's `$` rule: a filter starting with a wildcard must not
    /// deliver `$` topics.
    recheck: bool,
    sids: Vec<u64>,
    state: Mutex<RouteState>,
    /// Stops the route's stall task (a child of the connection's shutdown token).
    stop: CancellationToken,
    /// Wakes the stall task when a message waits for room.
    unstall: tokio::sync::Notify,
    /// Set by a wake that found a drain already running; that drain then asks the stall task
    /// (`redrain`) to drain once more.
    again: AtomicBool,
    /// Wakes the stall task to drain from a task of its own.
    redrain: tokio::sync::Notify,
    /// The waker registered with async-nats' buffers: it drains them (see [`Route::drain`]).
    waker: OnceLock<Waker>,
    stats: Arc<Stats>,
    events: broadcast::Sender<ConnectionEvent>,
}

/// Wakes a route by draining it, right where async-nats hands a message over.
struct RouteWaker(Weak<Route>);

impl Wake for RouteWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(route) = self.0.upgrade() {
            route.drain();
        }
    }
}

impl Route {
    /// Moves what async-nats holds for this route into the local delivery queues, without
    /// waiting, until its buffers are empty (the route's waker is then registered with them),
    /// a `Block` queue is full (the stall task takes over), or the route is gone.
    ///
    /// This runs in the waker: async-nats' connection task, handing a message to the
    /// subscription's buffer, wakes the route, and the message goes on to the delivery queue
    /// there and then, with no task of busbar's in between. Nothing here waits or takes a
    /// lock that is held across an await, so the connection task is never held up by user
    /// code.
    ///
    /// A wake can arrive while a drain runs: from another thread, or from this very drain,
    /// because tokio's cooperative budget makes `poll_next` wake the waker at once when the
    /// current task has used up its budget. Taking the state lock again there would deadlock
    /// the thread, and draining again at once would spin against the same exhausted budget.
    /// So such a wake only marks the route, and the drain that holds it hands the rest to
    /// the stall task, which drains with a budget of its own.
    fn drain(&self) {
        let Some(waker) = self.waker.get() else { return };
        self.again.store(true, Ordering::Release);
        let mut state = match self.state.try_lock() {
            Ok(state) => state,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        self.again.store(false, Ordering::Release);
        self.drain_locked(&mut state, &mut Context::from_waker(waker));
        drop(state);
        if self.again.swap(false, Ordering::AcqRel) {
            self.redrain.notify_one();
        }
    }

    fn drain_locked(&self, state: &mut RouteState, cx: &mut Context<'_>) {
        if state.blocked {
            return;
        }
        let RouteState { locals, nats, next_member, blocked, stalled } = state;
        let Some(subscribers) = nats.as_mut() else { return };
        // In subscription order: for `a/#`, what came on `a` goes before what came on
        // `a.>` in the same drain.
        for (i, sub) in subscribers.iter_mut().enumerate() {
            while let Poll::Ready(Some(m)) = Pin::new(&mut *sub).poll_next(cx) {
                if let Some(stall) = self.route_one(i, m, locals, next_member) {
                    *blocked = true;
                    *stalled = Some(stall);
                    self.unstall.notify_one();
                    return;
                }
            }
        }
    }

    /// Offers one message to the local subscriptions; returns what must wait for room.
    fn route_one(
        &self,
        i: usize,
        m: async_nats::Message,
        locals: &[Local],
        next_member: &mut usize,
    ) -> Option<(Message, Vec<QueueSender<Message>>)> {
        let message = match message_in(m, self.literal.get(i).and_then(Option::as_ref)) {
            Ok(m) => m,
            Err(e) => {
                Stats::bump(&self.stats.dropped);
                tracing::warn!(error = %e, "message on a subject busbar cannot name was dropped");
                return None;
            }
        };
        if self.recheck && !self.filter.matches(&message.topic) {
            return None;
        }
        let filter = self.filter.as_str();
        if self.group.is_some() {
            // One local member takes the group's copy: the next in turn with room, else the
            // next still open.
            let n = locals.len();
            let open = |k: &usize| !locals[*k].tx.is_closed();
            let order = (0..n).map(|k| (*next_member + k) % n);
            let pick = order
                .clone()
                .find(|k| open(k) && locals[*k].tx.has_room())
                .or_else(|| order.clone().find(open))?;
            *next_member = pick + 1;
            let tx = &locals[pick].tx;
            return offer(tx, filter, message, &self.stats, &self.events)
                .map(|item| (item, vec![tx.clone()]));
        }
        let (last, rest) = locals.split_last()?;
        for (k, local) in rest.iter().enumerate() {
            if let Some(item) = offer(&local.tx, filter, message.clone(), &self.stats, &self.events)
            {
                let waiting = locals[k..].iter().map(|l| l.tx.clone()).collect();
                drop(item);
                return Some((message, waiting));
            }
        }
        offer(&last.tx, filter, message, &self.stats, &self.events)
            .map(|item| (item, vec![last.tx.clone()]))
    }
}

type RouteKey = (String, Option<String>);

/// Slow-consumer bookkeeping for one NATS subscription.
struct SidInfo {
    filter: String,
    last_event: Option<Instant>,
}

/// What the async-nats event callback needs. Made before the client exists; the shared
/// state is filled in once it does.
struct EventSink {
    events: broadcast::Sender<ConnectionEvent>,
    stats: Arc<Stats>,
    sids: Mutex<HashMap<u64, SidInfo>>,
    connected_once: AtomicBool,
    shared: OnceLock<Weak<Shared>>,
}

impl EventSink {
    fn on_event(&self, event: async_nats::Event) {
        use async_nats::Event as E;
        match event {
            E::Connected => {
                if !self.connected_once.swap(true, Ordering::AcqRel) {
                    let _ = self.events.send(ConnectionEvent::Connected);
                    return;
                }
                // Tell the user only once the re-subscriptions are in place at the server.
                let shared = self.shared.get().and_then(Weak::upgrade);
                let events = self.events.clone();
                tokio::spawn(async move {
                    if let Some(s) = shared {
                        if let Err(e) = s.sync().await {
                            tracing::debug!(error = %e, "no sync after reconnecting");
                        }
                        if s.open.load(Ordering::Acquire) {
                            let _ = events.send(ConnectionEvent::Reconnected);
                        }
                    }
                });
            }
            E::Disconnected => {
                let _ = self.events.send(ConnectionEvent::Disconnected {
                    reason: "the connection to the NATS server was lost".into(),
                });
            }
            E::SlowConsumer(sid) => {
                // async-nats dropped a message because its buffer for this subscription was
                // full (the dispatcher waits on a full `Block` queue).
                Stats::bump(&self.stats.dropped);
                let now = Instant::now();
                let mut sids = lock(&self.sids);
                if let Some(info) = sids.get_mut(&sid)
                    && info.last_event.is_none_or(|t| now.duration_since(t) >= SLOW_EVENT_INTERVAL)
                {
                    info.last_event = Some(now);
                    let filter = info.filter.clone();
                    drop(sids);
                    let dropped = self.stats.dropped.load(Ordering::Relaxed);
                    let _ = self.events.send(ConnectionEvent::SlowConsumer { filter, dropped });
                }
            }
            E::ServerError(e) => tracing::warn!(error = %e, "NATS server error"),
            E::ClientError(e) => tracing::warn!(error = %e, "NATS client error"),
            E::LameDuckMode => tracing::info!("the NATS server is entering lame duck mode"),
            E::Draining | E::Closed => {}
        }
    }
}

/// Confirms subscriptions: see the module documentation.
struct SyncPoint {
    subject: String,
    next: AtomicU64,
    waiters: Mutex<BTreeMap<u64, oneshot::Sender<()>>>,
}

struct Shared {
    client: async_nats::Client,
    client_id: String,
    settings: Settings,
    sink: Arc<EventSink>,
    stats: Arc<Stats>,
    routes: Mutex<HashMap<RouteKey, Arc<Route>>>,
    next_id: AtomicU64,
    open: AtomicBool,
    shutdown: CancellationToken,
    sync: SyncPoint,
    /// The subject of the topic published last: publishers usually repeat their topic, and
    /// this spares the mapping and its allocation.
    last_subject: Mutex<Option<(Topic, async_nats::Subject)>>,
}

impl Shared {
    fn check_open(&self) -> Result<()> {
        if self.open.load(Ordering::Acquire) { Ok(()) } else { Err(Error::Closed) }
    }

    fn not_connected(&self, reason: String) -> Error {
        Error::NotConnected { url: self.settings.shown.clone(), reason }
    }

    /// Returns once the server has handled everything this connection sent before.
    async fn sync(&self) -> Result<()> {
        let n = self.sync.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.sync.waiters).insert(n, tx);
        let round_trip = async {
            self.client
                .publish(self.sync.subject.clone(), Bytes::copy_from_slice(&n.to_be_bytes()))
                .await
                .map_err(|e| self.not_connected(e.to_string()))?;
            rx.await.map_err(|_| Error::Closed)
        };
        let outcome = tokio::time::timeout(SYNC_TIMEOUT, round_trip).await;
        lock(&self.sync.waiters).remove(&n);
        match outcome {
            Ok(result) => result,
            Err(_) => Err(self.not_connected(format!(
                "the server did not confirm the subscription within {SYNC_TIMEOUT:?}"
            ))),
        }
    }

    /// A local subscription left: the route goes when it was the last one.
    fn remove_local(&self, key: &RouteKey, id: u64) {
        let mut routes = lock(&self.routes);
        let Some(route) = routes.get(key).cloned() else { return };
        let mut state = lock(&route.state);
        state.locals.retain(|l| l.id != id);
        if state.locals.is_empty() {
            // Dropping the subscribers sends their UNSUBs now, ahead of anything this
            // connection sends later.
            let subscribers = state.nats.take();
            drop(state);
            route.stop.cancel();
            routes.remove(key);
            drop(routes);
            let mut sids = lock(&self.sink.sids);
            for sid in &route.sids {
                sids.remove(sid);
            }
            drop(subscribers);
        }
    }

    /// The NATS subject for `topic`.
    fn subject(&self, topic: &Topic) -> Result<async_nats::Subject> {
        let mut last = lock(&self.last_subject);
        if let Some((t, subject)) = &*last
            && t == topic
        {
            return Ok(subject.clone());
        }
        let subject = async_nats::Subject::from(nats_subject(topic)?);
        *last = Some((topic.clone(), subject.clone()));
        Ok(subject)
    }

    async fn publish_now(&self, message: Message) -> Result<()> {
        self.check_open()?;
        let subject = self.subject(&message.topic)?;
        let payload = message.payload.to_bytes()?;
        let headers = headers_out(&message)?;
        self.check_size(&payload, headers.as_ref())?;
        let reply = match &message.reply_to {
            Some(r) => Some(nats_subject(r)?),
            None => None,
        };
        let c = &self.client;
        let sent = match (reply, headers) {
            (None, None) => c.publish(subject, payload).await,
            (None, Some(h)) => c.publish_with_headers(subject, h, payload).await,
            (Some(r), None) => c.publish_with_reply(subject, r, payload).await,
            (Some(r), Some(h)) => c.publish_with_reply_and_headers(subject, r, h, payload).await,
        };
        sent.map_err(|e| match e.kind() {
            PublishErrorKind::MaxPayloadExceeded => Error::PayloadTooLarge {
                size: message_size(&message),
                max: self.client.max_payload(),
            },
            PublishErrorKind::InvalidSubject => {
                Error::Config(format!("{} is not a valid NATS subject", message.topic))
            }
            PublishErrorKind::Send => {
                if self.open.load(Ordering::Acquire) {
                    self.not_connected(e.to_string())
                } else {
                    Error::Closed
                }
            }
        })?;
        Stats::bump(&self.stats.published);
        Ok(())
    }

    /// Refuses a message larger than the server takes (its INFO says), instead of letting
    /// the client fail it later.
    fn check_size(&self, payload: &Bytes, headers: Option<&async_nats::HeaderMap>) -> Result<()> {
        let max = self.client.max_payload();
        let header_len = headers.map_or(0, header_wire_len);
        let size = payload.len() + header_len;
        if max > 0 && size > max {
            return Err(Error::PayloadTooLarge { size, max });
        }
        Ok(())
    }
}

/// The size NATS counts for a header block: `NATS/1.0\r\n`, `name: value\r\n` per value,
/// and the closing `\r\n`.
fn header_wire_len(headers: &async_nats::HeaderMap) -> usize {
    let mut len = "NATS/1.0\r\n".len() + 2;
    for (name, values) in headers.iter() {
        for v in values {
            len += AsRef::<str>::as_ref(name).len() + 2 + v.as_str().len() + 2;
        }
    }
    len
}

fn message_size(message: &Message) -> usize {
    message.payload.to_bytes().map_or(0, |b| b.len())
}

/// A connection to a NATS server.
pub struct NatsTransport {
    shared: Arc<Shared>,
    capabilities: Capabilities,
    /// The publish queue when a drop policy is configured (`Block` publishes go straight to
    /// async-nats' bounded command channel and wait there).
    publish_queue: Option<QueueSender<Message>>,
}

fn capabilities(max_payload: usize) -> Capabilities {
    let mut c = Capabilities::none();
    c.queue_groups = true;
    c.native_request = true;
    c.headers = true;
    c.no_responders = true;
    // Core NATS: at most once, nothing retained, no expiry, no last will, and no-echo is per
    // connection rather than per subscription.
    c.max_qos = QoS::AtMostOnce;
    c.max_payload = (max_payload > 0).then_some(max_payload);
    c
}

impl NatsTransport {
    /// Connects; resolves once the server accepted the connection.
    pub async fn connect(url: &str, options: ConnectOptions) -> Result<NatsTransport> {
        let settings = Settings::parse(url)?;
        if options.token.is_some() && matches!(settings.credentials, Credentials::CredsFile(_)) {
            return Err(Error::Config(
                "a NATS connection takes a token provider or a creds file, not both".into(),
            ));
        }
        if options.requires_last_will() {
            // Core NATS has no last will; publishing one ourselves on a crash is impossible.
            // An optional one (the node's) is left out.
            return Err(Error::Unsupported { transport: "nats", feature: "last will" });
        }
        let client_id = options
            .client_id
            .clone()
            .unwrap_or_else(|| format!("busbar-{}", uuid::Uuid::new_v4().simple()));
        let stats = Arc::new(Stats::default());
        let sink = Arc::new(EventSink {
            events: ConnectionEvents::channel(),
            stats: stats.clone(),
            sids: Mutex::default(),
            connected_once: AtomicBool::new(false),
            shared: OnceLock::new(),
        });
        let shutdown = CancellationToken::new();

        let tokens = match &options.token {
            Some(provider) => Some(Arc::new(TokenCache {
                provider: provider.clone(),
                current: Mutex::new(provider.token().await?),
            })),
            None => None,
        };
        let mut nats = match &tokens {
            Some(cache) => {
                let cache = cache.clone();
                let credentials = settings.credentials.clone();
                let placement = options.token_placement;
                // Called at every (re)connect, so a reconnect always presents a valid token.
                async_nats::ConnectOptions::with_auth_callback(move |_nonce| {
                    let cache = cache.clone();
                    let credentials = credentials.clone();
                    async move {
                        let token = cache.valid().await.map_err(async_nats::AuthError::new)?;
                        Ok(token_auth(&credentials, &token, placement))
                    }
                })
            }
            None => match &settings.credentials {
                Credentials::None => async_nats::ConnectOptions::new(),
                Credentials::UserPassword { user, password } => {
                    async_nats::ConnectOptions::with_user_and_password(
                        user.clone(),
                        password.clone(),
                    )
                }
                Credentials::Token(t) => async_nats::ConnectOptions::with_token(t.clone()),
                Credentials::CredsFile(path) => {
                    async_nats::ConnectOptions::with_credentials_file(path).await.map_err(|e| {
                        Error::Config(format!(
                            "cannot use the NATS credentials file {}: {e}",
                            path.display()
                        ))
                    })?
                }
            },
        };
        let events_sink = sink.clone();
        nats = nats
            .name(&client_id)
            .subscription_capacity(settings.subscription_capacity)
            .connection_timeout(settings.connect_timeout)
            .max_reconnects(None)
            .reconnect_delay_callback(|attempt| busbar_core::backoff::backoff(attempt as u32))
            .event_callback(move |event| {
                events_sink.on_event(event);
                std::future::ready(())
            });
        if let Some(tls) = &settings.tls {
            nats = nats.require_tls(true).tls_client_config(std::sync::Arc::unwrap_or_clone(
                busbar_tls::client_config(tls)?,
            ));
        }
        let client = nats.connect(settings.server_address()).await.map_err(|e| {
            use async_nats::ConnectErrorKind as K;
            let reason = match e.kind() {
                K::AuthorizationViolation => {
                    "authorization violation: the server refused the credentials".to_owned()
                }
                K::Authentication => format!("authentication failed: {e}"),
                K::Tls => format!("TLS handshake failed: {e}"),
                // async-nats reports a certificate that does not verify as an I/O error.
                K::Io if e.to_string().contains("certificate") => {
                    format!("TLS handshake failed: {e}")
                }
                K::TimedOut => "no answer from the server in time".to_owned(),
                _ => e.to_string(),
            };
            Error::NotConnected { url: settings.shown.clone(), reason }
        })?;

        let sync_subject = format!("$BUSBAR.sync.{}", uuid::Uuid::new_v4().simple());
        let sync_sub = client
            .subscribe(sync_subject.clone())
            .await
            .map_err(|e| broker_error(format!("cannot subscribe: {e}"), Some(Box::new(e))))?;
        let max_payload = client.max_payload();
        let shared = Arc::new(Shared {
            client,
            client_id,
            settings,
            sink: sink.clone(),
            stats,
            routes: Mutex::default(),
            next_id: AtomicU64::new(1),
            open: AtomicBool::new(true),
            shutdown,
            sync: SyncPoint {
                subject: sync_subject,
                next: AtomicU64::new(0),
                waiters: Mutex::default(),
            },
            last_subject: Mutex::new(None),
        });
        let _ = sink.shared.set(Arc::downgrade(&shared));
        tokio::spawn(confirm_syncs(Arc::downgrade(&shared), sync_sub, shared.shutdown.clone()));
        if let Some(cache) = tokens {
            // The next token goes into the cache, where the auth callback presents it on the
            // reconnect made here, which keeps every subscription.
            let current = lock(&cache.current).clone();
            let weak = Arc::downgrade(&shared);
            tokio::spawn(busbar_core::auth::keep_fresh(
                cache.provider.clone(),
                current,
                shared.shutdown.clone(),
                move |token| {
                    *lock(&cache.current) = token;
                    let shared = weak.upgrade();
                    async move {
                        let Some(s) = shared else { return false };
                        if let Err(e) = s.client.force_reconnect().await {
                            tracing::warn!(error = %e, "could not reconnect with the new token");
                        }
                        true
                    }
                },
            ));
        }
        let publish_queue = match shared.settings.publish_queue.overflow {
            Overflow::Block => None,
            _ => {
                let (tx, rx) = queue(shared.settings.publish_queue);
                tokio::spawn(forward_publishes(shared.clone(), rx));
                Some(tx)
            }
        };
        Ok(NatsTransport { shared, capabilities: capabilities(max_payload), publish_queue })
    }

    /// The parsed settings this connection was made with.
    pub fn settings(&self) -> &Settings {
        &self.shared.settings
    }

    fn end(&self) -> bool {
        if !self.shared.open.swap(false, Ordering::AcqRel) {
            return false;
        }
        self.shared.shutdown.cancel();
        // Subscriptions end: their senders go with the routes (and the dispatchers, which
        // stop on the shutdown token).
        let routes = std::mem::take(&mut *lock(&self.shared.routes));
        for route in routes.values() {
            let mut state = lock(&route.state);
            state.locals.clear();
            state.nats = None;
        }
        lock(&self.shared.sync.waiters).clear();
        let _ = self.shared.sink.events.send(ConnectionEvent::Closed);
        true
    }

    async fn do_subscribe(&self, options: SubscribeOptions) -> Result<Subscription> {
        let s = &self.shared;
        s.check_open()?;
        let filter = options.filter.clone();
        let key: RouteKey = (filter.as_str().to_owned(), options.queue_group.clone());
        let id = s.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = queue(options.queue);
        let mut local = Some(Local { id, tx });
        {
            let routes = lock(&s.routes);
            if let Some(route) = routes.get(&key) {
                lock(&route.state).locals.extend(local.take());
            }
        }
        if let Some(local) = local {
            let route = self.new_route(&filter, options.queue_group.clone()).await?;
            let mut routes = lock(&s.routes);
            s.check_open()?;
            match routes.get(&key) {
                // Another subscribe made the same route meanwhile: join it, drop ours.
                Some(existing) => {
                    lock(&existing.state).locals.push(local);
                    let mut sids = lock(&s.sink.sids);
                    for sid in &route.sids {
                        sids.remove(sid);
                    }
                }
                None => {
                    lock(&route.state).locals.push(local);
                    routes.insert(key.clone(), route.clone());
                    let _ =
                        route.waker.set(Waker::from(Arc::new(RouteWaker(Arc::downgrade(&route)))));
                    tokio::spawn(unstall(Arc::downgrade(&route), route.stop.clone()));
                    drop(routes);
                    // Registers the waker (and takes anything already buffered).
                    route.drain();
                }
            }
        }
        let weak = Arc::downgrade(s);
        let guard_key = key.clone();
        let guard = SubscriptionGuard::new(move || {
            if let Some(s) = weak.upgrade() {
                s.remove_local(&guard_key, id);
            }
        });
        // The subscription is returned only once the server has it, so whatever is
        // published after this returns, from any connection, reaches it.
        s.sync().await?;
        Ok(Subscription::new(filter, rx, s.stats.clone(), guard))
    }

    async fn new_route(&self, filter: &TopicFilter, group: Option<String>) -> Result<Arc<Route>> {
        let s = &self.shared;
        let subjects = nats_filters(filter)?;
        let mut subscribers = Vec::with_capacity(subjects.len());
        let mut sids = Vec::with_capacity(subjects.len());
        for subject in &subjects {
            let made = match &group {
                Some(g) => s.client.queue_subscribe(subject.clone(), g.clone()).await,
                None => s.client.subscribe(subject.clone()).await,
            };
            let subscriber = made.map_err(|e| {
                use async_nats::client::SubscribeErrorKind as K;
                match e.kind() {
                    K::InvalidQueueName => Error::Config(format!(
                        "{:?} cannot be a NATS queue group name (no whitespace, not empty)",
                        group.as_deref().unwrap_or("")
                    )),
                    K::InvalidSubject => {
                        Error::Config(format!("{subject} is not a valid NATS subject"))
                    }
                    K::Other => s.not_connected(e.to_string()),
                }
            })?;
            if let Some(sid) = sid_of(&subscriber) {
                lock(&s.sink.sids)
                    .insert(sid, SidInfo { filter: filter.as_str().to_owned(), last_event: None });
                sids.push(sid);
            }
            subscribers.push(subscriber);
        }
        let literal = subjects
            .iter()
            .map(|subject| {
                let wild = subject.split('.').any(|t| t == "*" || t == ">");
                if wild { None } else { topic_from_nats(subject).ok() }
            })
            .collect();
        let recheck = filter.levels().next().is_some_and(|l| l == "+" || l == "#");
        Ok(Arc::new(Route {
            filter: filter.clone(),
            group,
            literal,
            recheck,
            sids,
            state: Mutex::new(RouteState {
                locals: Vec::new(),
                nats: Some(subscribers),
                next_member: 0,
                blocked: false,
                stalled: None,
            }),
            stop: s.shutdown.child_token(),
            unstall: tokio::sync::Notify::new(),
            again: AtomicBool::new(false),
            redrain: tokio::sync::Notify::new(),
            waker: OnceLock::new(),
            stats: s.stats.clone(),
            events: s.sink.events.clone(),
        }))
    }

    async fn do_request(&self, message: Message, timeout: Duration) -> Result<Message> {
        let s = &self.shared;
        s.check_open()?;
        Stats::bump(&s.stats.requests);
        let topic = message.topic.as_str().to_owned();
        let timed_out = || {
            Stats::bump(&s.stats.timeouts);
            Error::Timeout { topic: topic.clone(), timeout }
        };
        let subject = nats_subject(&message.topic)?;
        let payload = message.payload.to_bytes()?;
        let headers = headers_out(&message)?;
        s.check_size(&payload, headers.as_ref())?;
        let mut request = async_nats::Request::new().payload(payload).timeout(Some(timeout));
        if let Some(h) = headers {
            request = request.headers(h);
        }
        // One deadline for everything, including a wait for room in async-nats' command
        // channel while the connection is down (async-nats' own timeout starts later).
        let reply =
            match tokio::time::timeout(timeout, s.client.send_request(subject, request)).await {
                Err(_) => return Err(timed_out()),
                Ok(Err(e)) => {
                    return Err(match e.kind() {
                        RequestErrorKind::TimedOut => timed_out(),
                        RequestErrorKind::NoResponders => Error::NoResponders { topic },
                        RequestErrorKind::MaxPayloadExceeded => Error::PayloadTooLarge {
                            size: message_size(&message),
                            max: s.client.max_payload(),
                        },
                        RequestErrorKind::InvalidSubject => {
                            Error::Config(format!("{topic} is not a valid NATS subject"))
                        }
                        RequestErrorKind::Other if !s.open.load(Ordering::Acquire) => Error::Closed,
                        RequestErrorKind::Other => s.not_connected(e.to_string()),
                    });
                }
                Ok(Ok(reply)) => reply,
            };
        message_in(reply, None)
    }

    /// Hands `message` to the publish queue of a drop policy: never waits.
    fn enqueue(&self, queue: &QueueSender<Message>, message: Message) -> Result<()> {
        let s = &self.shared;
        s.check_open()?;
        // Refuse what could never be sent now, not later in the forwarding task.
        nats_subject(&message.topic)?;
        match queue.try_push(message) {
            Pushed::Queued => Ok(()),
            Pushed::Dropped { .. } => {
                Stats::bump(&s.stats.dropped);
                Ok(())
            }
            Pushed::Full { .. } | Pushed::Closed(_) => Err(Error::Closed),
        }
    }
}

/// The sid async-nats gave a subscription. async-nats keeps it private but reports slow
/// consumers by sid, so it is read from the subscriber's `Debug` output
/// (`Subscriber { sid: N, .. }`); if that ever changes, drops are still counted, only not
/// attributed to a filter.
fn sid_of(subscriber: &async_nats::Subscriber) -> Option<u64> {
    let text = format!("{subscriber:?}");
    let rest = &text[text.find("sid: ")? + 5..];
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Delivers a message that waits for room in a full `Block` queue, then lets the route
/// drain again. Waiting here leaves later messages in async-nats' buffer for the
/// subscription, which drops (and counts) beyond `subscription_capacity`.
async fn unstall(route: Weak<Route>, stop: CancellationToken) {
    loop {
        let Some(r) = route.upgrade() else { return };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = r.unstall.notified() => {}
            _ = r.redrain.notified() => {
                // A fresh, unconstrained budget: see `Route::drain`.
                tokio::task::unconstrained(async { r.drain() }).await;
                continue;
            }
        }
        let stalled = lock(&r.state).stalled.take();
        if let Some((message, targets)) = stalled {
            let filter = r.filter.as_str().to_owned();
            if let Some((last, rest)) = targets.split_last() {
                for tx in rest {
                    deliver(tx, &filter, message.clone(), &r.stats, &r.events, &stop).await;
                }
                deliver(last, &filter, message, &r.stats, &r.events, &stop).await;
            }
        }
        lock(&r.state).blocked = false;
        r.drain();
    }
}

/// Offers `message` to one delivery queue under its overflow policy without waiting; hands
/// it back when the queue is full under `Block`.
fn offer(
    tx: &QueueSender<Message>,
    filter: &str,
    message: Message,
    stats: &Stats,
    events: &broadcast::Sender<ConnectionEvent>,
) -> Option<Message> {
    let slow = |dropped| {
        let _ = events.send(ConnectionEvent::SlowConsumer { filter: filter.to_owned(), dropped });
    };
    // Counted before the push, so whoever reads a message also sees it counted; taken back
    // when the message does not end up queued.
    Stats::bump(&stats.delivered);
    let uncount = || stats.delivered.fetch_sub(1, Ordering::Relaxed);
    match tx.try_push(message) {
        Pushed::Queued => {}
        Pushed::Dropped { first_of_burst } => {
            uncount();
            Stats::bump(&stats.dropped);
            if first_of_burst {
                slow(tx.dropped());
            }
        }
        Pushed::Full { item, first_of_burst } => {
            uncount();
            if first_of_burst {
                slow(0);
            }
            return Some(item);
        }
        Pushed::Closed(_) => {
            uncount();
        }
    }
    None
}

/// Delivers `message` to one delivery queue, waiting for room under `Block`.
async fn deliver(
    tx: &QueueSender<Message>,
    filter: &str,
    message: Message,
    stats: &Stats,
    events: &broadcast::Sender<ConnectionEvent>,
    stop: &CancellationToken,
) {
    let Some(item) = offer(tx, filter, message, stats, events) else { return };
    // Counted before the push, so whoever reads a message also sees it counted; taken back
    // when the message does not end up queued.
    Stats::bump(&stats.delivered);
    let pushed = tokio::select! {
        _ = stop.cancelled() => false,
        r = tx.push(item) => r.is_ok(),
    };
    if !pushed {
        stats.delivered.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Completes sync round trips as their echoes come back (in order, so one echo completes
/// every earlier one too).
async fn confirm_syncs(
    shared: Weak<Shared>,
    mut sub: async_nats::Subscriber,
    shutdown: CancellationToken,
) {
    use futures_util::StreamExt;
    loop {
        let m = tokio::select! {
            _ = shutdown.cancelled() => return,
            m = sub.next() => m,
        };
        let Some(m) = m else { return };
        let Some(shared) = shared.upgrade() else { return };
        let Ok(n) = <[u8; 8]>::try_from(m.payload.as_ref()).map(u64::from_be_bytes) else {
            continue;
        };
        let done = {
            let mut waiters = lock(&shared.sync.waiters);
            let later = waiters.split_off(&(n + 1));
            std::mem::replace(&mut *waiters, later)
        };
        for tx in done.into_values() {
            let _ = tx.send(());
        }
    }
}

/// Moves publishes from the drop-policy queue to async-nats, waiting there as needed; the
/// waiting happens here, never in the caller of `publish`.
async fn forward_publishes(shared: Arc<Shared>, mut queue: QueueReceiver<Message>) {
    let shutdown = shared.shutdown.clone();
    while let Some(message) = tokio::select! {
        _ = shutdown.cancelled() => None,
        m = queue.recv() => m,
    } {
        let topic = message.topic.clone();
        if let Err(e) = shared.publish_now(message).await {
            tracing::warn!(topic = %topic, error = %e, "queued publish failed");
        }
    }
}

/// The current token, fetched again once it has expired.
struct TokenCache {
    provider: SharedTokenProvider,
    current: Mutex<Token>,
}

impl TokenCache {
    async fn valid(self: Arc<Self>) -> Result<Token> {
        let current = lock(&self.current).clone();
        if current.expires_at.is_none_or(|at| Instant::now() < at) {
            return Ok(current);
        }
        // The provider's future need not be `Sync`, which async-nats' callback requires:
        // run it in a task of its own and wait for that.
        let provider = self.provider.clone();
        let fresh = tokio::spawn(async move { provider.token().await })
            .await
            .map_err(|e| Error::Config(format!("the token provider failed: {e}")))??;
        *lock(&self.current) = fresh.clone();
        Ok(fresh)
    }
}

/// The NATS credentials for a token: NATS' own token field, unless the URL names a user (then
/// the token is that user's password) or the token is to be the user name.
fn token_auth(
    credentials: &Credentials,
    token: &Token,
    placement: TokenPlacement,
) -> async_nats::Auth {
    let mut auth = async_nats::Auth::new();
    let (user, password) = match credentials {
        Credentials::UserPassword { user, password } => {
            (Some(user.clone()), Some(password.clone()))
        }
        _ => (None, None),
    };
    match (placement, user) {
        (TokenPlacement::Username, _) => {
            auth.username = Some(token.value.clone());
            auth.password = Some(password.unwrap_or_default());
        }
        (TokenPlacement::Password, Some(user)) => {
            auth.username = Some(user);
            auth.password = Some(token.value.clone());
        }
        (TokenPlacement::Password, None) => auth.token = Some(token.value.clone()),
    }
    auth
}

impl Drop for NatsTransport {
    fn drop(&mut self) {
        // Dropped without close: everything stops; async-nats closes the socket once the
        // last client handle is gone.
        self.end();
    }
}

impl Transport for NatsTransport {
    fn kind(&self) -> &'static str {
        "nats"
    }

    fn client_id(&self) -> &str {
        &self.shared.client_id
    }

    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn publish(&self, message: Message) -> Completion<'_, ()> {
        match &self.publish_queue {
            Some(queue) => Completion::ready(self.enqueue(queue, message)),
            None => Completion::Pending(Box::pin(self.shared.publish_now(message))),
        }
    }

    fn subscribe(&self, options: SubscribeOptions) -> BoxFuture<'_, Result<Subscription>> {
        Box::pin(self.do_subscribe(options))
    }

    fn request(&self, message: Message, timeout: Duration) -> BoxFuture<'_, Result<Message>> {
        Box::pin(self.do_request(message, timeout))
    }

    fn events(&self) -> ConnectionEvents {
        ConnectionEvents::new(self.shared.sink.events.subscribe())
    }

    fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    fn close(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if !self.end() {
                return Ok(());
            }
            // Publishes already handed to async-nats go out before the connection closes:
            // flush (written and seen by the server, a PING answered) before draining, which
            // alone was seen to close with a fresh publish still in the client's buffer.
            match tokio::time::timeout(CLOSE_TIMEOUT, self.shared.client.flush()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "flush on close"),
                Err(_) => tracing::debug!("flush on close took too long"),
            }
            match tokio::time::timeout(CLOSE_TIMEOUT, self.shared.client.drain()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "drain on close"),
                Err(_) => tracing::debug!("drain on close took too long"),
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_say_what_core_nats_lacks() {
        let c = capabilities(1024);
        assert!(c.queue_groups && c.native_request && c.headers && c.no_responders);
        assert!(!c.retained && !c.expiry && !c.last_will && !c.no_local && !c.typed_payloads);
        assert_eq!(c.max_payload, Some(1024));
    }

    #[test]
    fn token_goes_where_the_url_and_placement_say() {
        let t = Token::forever("tok");
        let a = token_auth(&Credentials::None, &t, TokenPlacement::Password);
        assert_eq!((a.token.as_deref(), a.username.as_deref()), (Some("tok"), None));
        let up = Credentials::UserPassword { user: "u".into(), password: "p".into() };
        let a = token_auth(&up, &t, TokenPlacement::Password);
        assert_eq!((a.username.as_deref(), a.password.as_deref()), (Some("u"), Some("tok")));
        let a = token_auth(&up, &t, TokenPlacement::Username);
        assert_eq!((a.username.as_deref(), a.password.as_deref()), (Some("tok"), Some("p")));
    }
}
