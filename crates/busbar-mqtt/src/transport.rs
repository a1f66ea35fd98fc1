//! The MQTT 5 transport: one supervisor task owns the rumqttc event loop.
//!
//! The supervisor is the only task that polls the event loop, and it never waits on user
//! code except to hand a message to a `Block` subscription that is full (which holds back
//! reading from the broker: backpressure reaches the socket). User calls only enqueue
//! requests to rumqttc. The supervisor reconnects with jittered exponential backoff and
//! re-subscribes every subscription after each reconnect (asking the broker not to resend
//! retained messages for subscriptions it kept).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use busbar_core::auth::{Token, TokenPlacement};
use busbar_core::message::Message;
use busbar_core::queue::{Pushed, QueueReceiver, QueueSender, queue};
use busbar_core::stats::{Stats, StatsSnapshot};
use busbar_core::topic::Topic;
use busbar_core::transport::{
    BoxFuture, Capabilities, Completion, ConnectOptions, ConnectionEvent, ConnectionEvents,
    SubscribeOptions, Subscription, SubscriptionGuard, Transport,
};
use busbar_core::{Error, QoS, Result};
use bytes::Bytes;
use rumqttc::NetworkOptions;
use tokio::sync::{OnceCell, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::convert::qos_out;
use crate::protocol::{Client, Events, Happened, Version};
use crate::registry::{Local, Registry, deliver};
use crate::settings::Settings;

/// Requests rumqttc may hold before user calls wait (its own bounded channel).
const REQUEST_CHANNEL: usize = 1024;
/// How long a subscribe waits for the broker's acknowledgement.
const SUBACK_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest packet MQTT can express (a 4-byte variable byte integer).
const MQTT_MAX_PACKET: u32 = 268_435_455;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn broker_error(message: String) -> Error {
    Error::Broker { transport: "mqtt", message, source: None }
}

/// Subscribe acknowledgements in flight: the broker answers by packet id, which rumqttc
/// assigns when it sends; it reports sends in request order, so a FIFO of subscription ids
/// in request order maps packet ids back to subscriptions.
#[derive(Default)]
struct SubAcks {
    sent_order: VecDeque<usize>,
    /// Subscriptions by the packet id their SUBSCRIBE went out with. rumqttc reuses packet
    /// ids in a small cycle (its inflight bound), so with many subscribes in flight one id can
    /// stand for several, acknowledged in the order they were sent.
    by_pkid: HashMap<u16, VecDeque<usize>>,
    waiting: HashMap<usize, Vec<oneshot::Sender<Result<()>>>>,
}

/// How long a graceful close waits for the broker to acknowledge what was published.
const CLOSE_FLUSH: Duration = Duration::from_secs(5);

struct Shared {
    client: Client,
    client_id: String,
    settings: Settings,
    registry: Mutex<Registry>,
    subacks: Mutex<SubAcks>,
    inbox: Mutex<HashMap<u64, oneshot::Sender<Message>>>,
    next_id: AtomicU64,
    reply_topic: Topic,
    reply_sub: OnceCell<usize>,
    stats: Arc<Stats>,
    events: tokio::sync::broadcast::Sender<ConnectionEvent>,
    open: AtomicBool,
    shutdown: CancellationToken,
    /// The broker's maximum packet size from its CONNACK (`usize::MAX` when it set none).
    max_packet: AtomicUsize,
    /// QoS 1 and 2 publishes handed to rumqttc and not acknowledged yet: a graceful close
    /// waits for them (rumqttc's MQTT 3.1.1 event loop sends its DISCONNECT ahead of
    /// publishes still in its channel, which the broker then never gets).
    unacked: AtomicUsize,
    acked: tokio::sync::Notify,
    /// The subscription whose SUBACK came last (0: none since the last live message). On
    /// MQTT 3.1.1 messages name no subscription, but a broker sends a new subscription's
    /// retained messages right after its SUBACK: those copies belong to it alone.
    last_subacked: AtomicUsize,
    /// Counts connections made, so that a late `Reconnected` for a connection already lost
    /// is not sent.
    /// Held while the epoch is compared and an event sent, so that a `Reconnected` can
    /// never follow the `Disconnected` of a newer loss.
    epoch: Mutex<u64>,
}

impl Shared {
    /// Hands `message` to rumqttc, counting it until the broker acknowledges it.
    async fn publish_tracked(&self, message: &Message) -> Result<()> {
        let tracked = message.qos != QoS::AtMostOnce;
        if tracked {
            self.unacked.fetch_add(1, Ordering::AcqRel);
        }
        let result = self.client.publish(message, self.max_packet.load(Ordering::Relaxed)).await;
        if result.is_err() && tracked {
            self.on_acked();
        }
        result
    }

    fn on_acked(&self) {
        let _ =
            self.unacked.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        self.acked.notify_waiters();
    }

    /// Waits, up to `limit`, until every counted publish is acknowledged.
    async fn all_acked(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.acked.notified();
            if self.unacked.load(Ordering::Acquire) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }

    /// The packet size limit before the broker's: the user's, or what MQTT can encode.
    fn packet_limit(&self) -> usize {
        self.settings.max_packet.unwrap_or(MQTT_MAX_PACKET as usize)
    }

    fn check_open(&self) -> Result<()> {
        if self.open.load(Ordering::Acquire) { Ok(()) } else { Err(Error::Closed) }
    }

    /// Asks the broker to subscribe `sub_id` (registered already) and, when `waiter` is
    /// given, reports its acknowledgement there.
    fn send_subscribe(
        &self,
        sub_id: usize,
        path: String,
        qos: QoS,
        no_local: bool,
        resend_retained: bool,
        waiter: Option<oneshot::Sender<Result<()>>>,
    ) -> Result<()> {
        // Under the lock: the FIFO order must be the order requests enter rumqttc.
        let mut acks = lock(&self.subacks);
        self.client.try_subscribe(path, qos, no_local, resend_retained, sub_id)?;
        acks.sent_order.push_back(sub_id);
        if let Some(w) = waiter {
            acks.waiting.entry(sub_id).or_default().push(w);
        }
        Ok(())
    }

    async fn subscribe_and_wait(
        &self,
        sub_id: usize,
        path: String,
        qos: QoS,
        no_local: bool,
    ) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send_subscribe(sub_id, path.clone(), qos, no_local, true, Some(tx))?;
        match tokio::time::timeout(SUBACK_TIMEOUT, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(broker_error(format!(
                "the broker did not acknowledge the subscription to {path} within {SUBACK_TIMEOUT:?}"
            ))),
        }
    }

    /// Subscribes once to this connection's reply topic.
    async fn ensure_reply_subscription(&self) -> Result<()> {
        self.reply_sub
            .get_or_try_init(|| async {
                let (tx, _rx) =
                    queue(busbar_core::QueueConfig::new(1, busbar_core::Overflow::DropNewest));
                let filter = busbar_core::TopicFilter::from(self.reply_topic.clone());
                // Replies are taken before routing; the registry entry only keeps the broker
                // subscription alive and re-subscribed.
                let added = lock(&self.registry).add(
                    filter,
                    None,
                    QoS::AtLeastOnce,
                    false,
                    Local { id: 0, tx },
                )?;
                let path = self.reply_topic.as_str().to_owned();
                self.subscribe_and_wait(added.sub_id, path, QoS::AtLeastOnce, false).await?;
                Ok::<_, Error>(added.sub_id)
            })
            .await
            .map(|_| ())
    }

    fn on_outgoing_subscribe(&self, pkid: u16) {
        let mut acks = lock(&self.subacks);
        if let Some(sub_id) = acks.sent_order.pop_front() {
            acks.by_pkid.entry(pkid).or_default().push_back(sub_id);
        }
    }

    fn on_suback(&self, pkid: u16, refused: Option<String>) {
        let mut acks = lock(&self.subacks);
        let Some(queue) = acks.by_pkid.get_mut(&pkid) else { return };
        let Some(sub_id) = queue.pop_front() else { return };
        if queue.is_empty() {
            acks.by_pkid.remove(&pkid);
        }
        self.last_subacked.store(sub_id, Ordering::Relaxed);
        let waiters = acks.waiting.remove(&sub_id).unwrap_or_default();
        drop(acks);
        for w in waiters {
            let _ = w.send(match &refused {
                None => Ok(()),
                Some(code) => {
                    Err(broker_error(format!("the broker refused the subscription: {code}")))
                }
            });
        }
    }

    /// After a reconnect: every subscription again, without a second copy of retained
    /// messages for subscriptions the broker kept. Returns the acknowledgements to wait for.
    fn resubscribe_all(&self) -> Vec<oneshot::Receiver<Result<()>>> {
        {
            let mut acks = lock(&self.subacks);
            acks.sent_order.clear();
            acks.by_pkid.clear();
        }
        let subs: Vec<(usize, String, QoS, bool)> = lock(&self.registry)
            .subs
            .iter()
            .map(|(id, s)| (*id, s.path(), s.qos, s.no_local))
            .collect();
        let mut acks = Vec::with_capacity(subs.len());
        for (id, path, qos, no_local) in subs {
            let (tx, rx) = oneshot::channel();
            match self.send_subscribe(id, path, qos, no_local, false, Some(tx)) {
                Ok(()) => acks.push(rx),
                Err(e) => tracing::warn!(error = %e, "re-subscription not queued"),
            }
        }
        acks
    }

    async fn dispatch(&self, received: Result<(Message, Vec<usize>)>) {
        let (message, mut ids) = match received {
            Ok(m) => m,
            Err(e) => {
                Stats::bump(&self.stats.dropped);
                tracing::warn!(error = %e, "message on a topic busbar cannot name was dropped");
                return;
            }
        };
        if message.topic == self.reply_topic {
            let waiting = message
                .correlation_id
                .as_ref()
                .and_then(|c| <[u8; 8]>::try_from(c.as_ref()).ok())
                .map(u64::from_be_bytes)
                .and_then(|id| lock(&self.inbox).remove(&id));
            match waiting {
                Some(tx) => {
                    let _ = tx.send(message);
                }
                None => Stats::bump(&self.stats.late_replies),
            }
            return;
        }
        if message.is_expired() {
            Stats::bump(&self.stats.expired);
            return;
        }
        let targets = {
            let mut registry = lock(&self.registry);
            if ids.is_empty() {
                // MQTT 3.1.1: attribute a retained copy to the subscription just made.
                if message.retain {
                    let last = self.last_subacked.load(Ordering::Relaxed);
                    if registry.subs.get(&last).is_some_and(|s| s.filter.matches(&message.topic)) {
                        ids.push(last);
                    }
                } else {
                    self.last_subacked.store(0, Ordering::Relaxed);
                }
            }
            let persistent = self.settings.session_expiry.is_some();
            let mut targets = registry.targets(&ids, &message);
            if targets.is_empty() && persistent && !ids.is_empty() {
                // Tagged by an earlier connection of this session: route by filter instead.
                targets = registry.targets(&[], &message);
            }
            if targets.is_empty() {
                // A persistent session hands over what the broker kept while we were away,
                // possibly before the application has subscribed again: keep it for them.
                if persistent && !ids.is_empty() {
                    if registry.keep_orphan(message) {
                        Stats::bump(&self.stats.dropped);
                    }
                } else {
                    tracing::debug!(topic = %message.topic, "message for no local subscription");
                }
                return;
            }
            targets
        };
        if let Some(((last_tx, last_filter), rest)) = targets.split_last() {
            for (tx, filter) in rest {
                deliver(tx.clone(), filter.clone(), message.clone(), &self.stats, &self.events)
                    .await;
            }
            deliver(last_tx.clone(), last_filter.clone(), message, &self.stats, &self.events).await;
        }
    }
}

/// A connection to an MQTT 5 broker.
pub struct MqttTransport {
    shared: Arc<Shared>,
    capabilities: Capabilities,
    /// The publish queue when a drop policy is configured (`Block` publishes go straight to
    /// rumqttc's own bounded channel and wait there).
    publish_queue: Option<QueueSender<Message>>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

fn capabilities(version: Version) -> Capabilities {
    let v5 = version == Version::V5;
    let mut c = Capabilities::none();
    c.queue_groups = true;
    c.retained = true;
    // On 3.1.1 reply topics, correlation ids, headers and expiry ride in the envelope.
    c.native_request = v5;
    c.headers = v5;
    c.expiry = true;
    c.last_will = true;
    c.no_local = v5;
    c.max_qos = QoS::ExactlyOnce;
    c
}

impl MqttTransport {
    /// Connects; resolves once the broker accepted the connection.
    pub async fn connect(url: &str, options: ConnectOptions) -> Result<MqttTransport> {
        let settings = Settings::parse(url)?;
        let client_id = options
            .client_id
            .clone()
            .unwrap_or_else(|| format!("busbar-{}", uuid::Uuid::new_v4().simple()));
        let first_token = match &options.token {
            Some(provider) => Some(provider.token().await?),
            None => None,
        };
        let creds = credentials(&settings, first_token.as_ref(), options.token_placement);
        let tls_config = match &settings.tls {
            Some(tls) => Some(rumqttc::TlsConfiguration::Rustls(busbar_tls::client_config(tls)?)),
            None => None,
        };
        // For WebSockets rumqttc takes the whole URL as the broker address. It is built here
        // from the scheme that was asked for, so a wss:// connection can never go out as
        // plain ws://.
        let (broker_addr, transport) = match (&settings.websocket_path, tls_config) {
            (None, None) => (settings.host.clone(), None),
            (None, Some(tls)) => (settings.host.clone(), Some(rumqttc::Transport::Tls(tls))),
            (Some(path), None) => (
                format!("ws://{}:{}{path}", settings.host, settings.port),
                Some(rumqttc::Transport::Ws),
            ),
            (Some(path), Some(tls)) => (
                format!("wss://{}:{}{path}", settings.host, settings.port),
                Some(rumqttc::Transport::Wss(tls)),
            ),
        };
        let mut network = NetworkOptions::new();
        network.set_tcp_nodelay(true);
        let will = match &options.last_will {
            Some(w) => Some((w.topic.as_str().to_owned(), w.payload.to_bytes()?, w.qos, w.retain)),
            None => None,
        };
        let (client, eventloop) = match settings.version {
            Version::V5 => {
                use rumqttc::v5::mqttbytes::v5::LastWill;
                let mut mqtt =
                    rumqttc::v5::MqttOptions::new(client_id.clone(), broker_addr, settings.port);
                mqtt.set_keep_alive(settings.keep_alive);
                mqtt.set_clean_start(settings.session_expiry.is_none());
                if let Some(expiry) = settings.session_expiry {
                    mqtt.set_session_expiry_interval(Some(
                        expiry.as_secs().min(u64::from(u32::MAX)) as u32,
                    ));
                }
                if let Some((user, pass)) = creds {
                    mqtt.set_credentials(user, pass);
                }
                // rumqttc refuses incoming packets over 10 KiB unless told otherwise: accept
                // what MQTT can carry, so the broker's own limit is the one that applies.
                mqtt.set_max_packet_size(Some(MQTT_MAX_PACKET));
                mqtt.set_network_options(network);
                if let Some(t) = transport {
                    mqtt.set_transport(t);
                }
                if let Some((topic, payload, qos, retain)) = will {
                    mqtt.set_last_will(LastWill::new(
                        topic,
                        payload.to_vec(),
                        qos_out(qos),
                        retain,
                        None,
                    ));
                }
                let (c, l) = rumqttc::v5::AsyncClient::new(mqtt, REQUEST_CHANNEL);
                (Client::V5(c), Events::V5(Box::new(l), Vec::new()))
            }
            Version::V311 => {
                let mut mqtt =
                    rumqttc::MqttOptions::new(client_id.clone(), broker_addr, settings.port);
                mqtt.set_keep_alive(settings.keep_alive);
                // 3.1.1 has no expiry interval: a persistent session lasts until the broker's
                // own limit.
                mqtt.set_clean_session(settings.session_expiry.is_none());
                if let Some((user, pass)) = creds {
                    mqtt.set_credentials(user, pass);
                }
                let max = MQTT_MAX_PACKET as usize;
                mqtt.set_max_packet_size(max, max);
                if let Some(t) = transport {
                    mqtt.set_transport(t);
                }
                if let Some((topic, payload, qos, retain)) = will {
                    let qos = match qos {
                        QoS::AtMostOnce => rumqttc::QoS::AtMostOnce,
                        QoS::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
                        QoS::ExactlyOnce => rumqttc::QoS::ExactlyOnce,
                    };
                    mqtt.set_last_will(rumqttc::LastWill::new(topic, payload, qos, retain));
                }
                let (c, mut l) = rumqttc::AsyncClient::new(mqtt, REQUEST_CHANNEL);
                l.set_network_options(network);
                (Client::V4(c), Events::V4(Box::new(l), Vec::new()))
            }
        };
        let version = settings.version;
        let packet_limit = settings.max_packet.unwrap_or(MQTT_MAX_PACKET as usize);
        let reply_topic = Topic::new(format!("_busbar/reply/{}", uuid::Uuid::new_v4().simple()))?;
        let shared = Arc::new(Shared {
            client,
            client_id,
            settings,
            registry: Mutex::default(),
            subacks: Mutex::default(),
            inbox: Mutex::default(),
            next_id: AtomicU64::new(1),
            reply_topic,
            reply_sub: OnceCell::new(),
            stats: Arc::new(Stats::default()),
            events: ConnectionEvents::channel(),
            open: AtomicBool::new(true),
            shutdown: CancellationToken::new(),
            max_packet: AtomicUsize::new(packet_limit),
            last_subacked: AtomicUsize::new(0),
            epoch: Mutex::new(0),
            unacked: AtomicUsize::new(0),
            acked: tokio::sync::Notify::new(),
        });
        let (first_tx, first_rx) = oneshot::channel();
        let (token_tx, token_rx) = tokio::sync::mpsc::channel(1);
        let refresher = match (&options.token, first_token) {
            // The supervisor swaps the credentials and reconnects.
            (Some(provider), Some(token)) => Some(tokio::spawn(busbar_core::auth::keep_fresh(
                provider.clone(),
                token,
                shared.shutdown.clone(),
                move |token| {
                    let to_supervisor = token_tx.clone();
                    async move { to_supervisor.send(token).await.is_ok() }
                },
            ))),
            _ => None,
        };
        let placement = options.token_placement;
        let supervisor =
            tokio::spawn(supervise(shared.clone(), eventloop, first_tx, token_rx, placement));
        let first = tokio::time::timeout(Duration::from_secs(10), first_rx).await;
        let outcome = match first {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(broker_error("the connection task ended".into())),
            Err(_) => Err(Error::NotConnected {
                url: shared.settings.shown.clone(),
                reason: "no answer from the broker within 10 s".into(),
            }),
        };
        if let Err(e) = outcome {
            shared.shutdown.cancel();
            supervisor.abort();
            if let Some(r) = refresher {
                r.abort();
            }
            return Err(e);
        }
        let publish_queue = match shared.settings.publish_queue.overflow {
            busbar_core::Overflow::Block => None,
            _ => {
                let (tx, rx) = queue(shared.settings.publish_queue);
                tokio::spawn(forward_publishes(shared.clone(), rx));
                Some(tx)
            }
        };
        Ok(MqttTransport {
            shared,
            publish_queue,
            capabilities: capabilities(version),
            supervisor: Mutex::new(Some(supervisor)),
        })
    }

    /// Cuts the connection without a DISCONNECT, as a crash would: the broker publishes the
    /// last will. For fault-injection tests.
    pub fn kill(&self) {
        self.end();
        if let Some(task) = lock(&self.supervisor).take() {
            task.abort();
        }
    }

    fn end(&self) {
        if self.shared.open.swap(false, Ordering::AcqRel) {
            self.shared.shutdown.cancel();
            // Subscriptions end: their senders go with the registry's entries.
            *lock(&self.shared.registry) = Registry::default();
            lock(&self.shared.inbox).clear();
            let _ = self.shared.events.send(ConnectionEvent::Closed);
        }
    }

    async fn do_subscribe(&self, options: SubscribeOptions) -> Result<Subscription> {
        let s = &self.shared;
        s.check_open()?;
        let id = s.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = queue(options.queue);
        let filter = options.filter.clone();
        let added = lock(&s.registry).add(
            filter.clone(),
            options.queue_group.clone(),
            options.qos,
            options.no_local,
            Local { id, tx },
        )?;
        let path = lock(&s.registry).subs.get(&added.sub_id).map(|b| b.path()).unwrap_or_default();
        // What a persistent session delivered before this subscription existed comes first,
        // ahead of anything the new subscription brings.
        if options.queue_group.is_none() {
            let mut registry = lock(&s.registry);
            let kept = registry.take_orphans(&filter);
            if let Some(tx) = registry.sender(added.sub_id, id) {
                for m in kept {
                    if tx.force_push(m).is_ok() {
                        Stats::bump(&s.stats.delivered);
                    }
                }
            }
        }
        if added.new
            && let Err(e) =
                s.subscribe_and_wait(added.sub_id, path, options.qos, options.no_local).await
        {
            lock(&s.registry).remove(added.sub_id, id);
            return Err(e);
        }
        let weak = Arc::downgrade(s);
        let guard = SubscriptionGuard::new(move || {
            let Some(s) = weak.upgrade() else { return };
            let path = lock(&s.registry).remove(added.sub_id, id);
            if let Some(path) = path
                && s.open.load(Ordering::Acquire)
                && let Err(e) = s.client.try_unsubscribe(path)
            {
                tracing::debug!(error = %e, "unsubscribe not queued");
            }
        });
        Ok(Subscription::new(filter, rx, s.stats.clone(), guard))
    }

    async fn do_request(&self, mut message: Message, timeout: Duration) -> Result<Message> {
        let s = &self.shared;
        s.check_open()?;
        Stats::bump(&s.stats.requests);
        let topic = message.topic.clone();
        let exchange = async {
            s.ensure_reply_subscription().await?;
            let id = s.next_id.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            lock(&s.inbox).insert(id, tx);
            let _inbox = InboxGuard { shared: s, id };
            message.reply_to = Some(s.reply_topic.clone());
            message.correlation_id = Some(Bytes::copy_from_slice(&id.to_be_bytes()));
            self.send(message).await?;
            rx.await.map_err(|_| Error::Closed)
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => {
                Stats::bump(&s.stats.timeouts);
                Err(Error::Timeout { topic: topic.as_str().to_owned(), timeout })
            }
        }
    }

    async fn send(&self, message: Message) -> Result<()> {
        let s = &self.shared;
        s.check_open()?;
        s.publish_tracked(&message).await?;
        Stats::bump(&s.stats.published);
        Ok(())
    }

    /// Hands `message` to the publish queue of a drop policy: never waits.
    fn enqueue(&self, queue: &QueueSender<Message>, message: Message) -> Result<()> {
        let s = &self.shared;
        s.check_open()?;
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

/// Moves publishes from the drop-policy queue to rumqttc, waiting there as needed; the
/// waiting happens here, never in the caller of `publish`.
async fn forward_publishes(shared: Arc<Shared>, mut queue: QueueReceiver<Message>) {
    while let Some(message) = tokio::select! {
        _ = shared.shutdown.cancelled() => None,
        m = queue.recv() => m,
    } {
        match shared.publish_tracked(&message).await {
            Ok(()) => Stats::bump(&shared.stats.published),
            Err(e) => tracing::warn!(topic = %message.topic, error = %e, "queued publish failed"),
        }
    }
}

struct InboxGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for InboxGuard<'_> {
    fn drop(&mut self) {
        lock(&self.shared.inbox).remove(&self.id);
    }
}

impl Drop for MqttTransport {
    fn drop(&mut self) {
        // Dropped without close: the connection just goes (the broker sends the will).
        self.kill();
    }
}

/// Owns the event loop until shutdown.
async fn supervise(
    shared: Arc<Shared>,
    mut eventloop: Events,
    first: oneshot::Sender<Result<()>>,
    mut tokens: tokio::sync::mpsc::Receiver<Token>,
    placement: TokenPlacement,
) {
    let mut first = Some(first);
    let mut connected = false;
    let mut ever_connected = false;
    let mut attempt: u32 = 0;
    // Set while a DISCONNECT is on its way for a token refresh: the loop goes on to
    // reconnect with the new credentials instead of ending.
    let mut refreshing = false;
    loop {
        let polled = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            Some(token) = tokens.recv() => {
                if let Some((user, pass)) = credentials(&shared.settings, Some(&token), placement) {
                    eventloop.set_credentials(user, pass);
                }
                // A clean goodbye (no will), then a reconnect that presents the new token.
                refreshing = shared.client.try_disconnect().is_ok();
                continue;
            }
            p = eventloop.poll() => p,
        };
        match polled {
            Ok(Happened::Connected { max_packet, resent }) => {
                attempt = 0;
                if resent > 0 {
                    tracing::info!(
                        resent,
                        "re-sending the requests the last connection left unfinished"
                    );
                }
                connected = true;
                let epoch = {
                    let mut e = lock(&shared.epoch);
                    *e += 1;
                    *e
                };
                if ever_connected {
                    // `Reconnected` promises restored subscriptions: it waits for the broker's
                    // SUBACKs (which this loop must go on polling to receive), within one
                    // deadline for all of them, and is not sent if the connection was lost
                    // again meanwhile. A refused or unanswered one is logged; the event
                    // still comes, as waiting longer would not change it.
                    let acks = shared.resubscribe_all();
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let deadline = tokio::time::Instant::now() + SUBACK_TIMEOUT;
                        for ack in acks {
                            match tokio::time::timeout_at(deadline, ack).await {
                                Ok(Ok(Ok(()))) => {}
                                Ok(Ok(Err(e))) => {
                                    tracing::warn!(error = %e, "a subscription was not restored");
                                }
                                // The connection went again: its own reconnect takes over.
                                Ok(Err(_)) => return,
                                Err(_) => {
                                    tracing::warn!(
                                        "the broker did not acknowledge every restored \
                                         subscription within {SUBACK_TIMEOUT:?}"
                                    );
                                    break;
                                }
                            }
                        }
                        let current = lock(&shared.epoch);
                        if *current == epoch {
                            let _ = shared.events.send(ConnectionEvent::Reconnected);
                        }
                    });
                } else {
                    ever_connected = true;
                    let _ = shared.events.send(ConnectionEvent::Connected);
                }
                let broker_max = max_packet.map_or(usize::MAX, |m| m as usize);
                shared.max_packet.store(shared.packet_limit().min(broker_max), Ordering::Relaxed);
                if let Some(tx) = first.take() {
                    let _ = tx.send(Ok(()));
                }
            }
            Ok(Happened::Message(received)) => shared.dispatch(received).await,
            Ok(Happened::SubAck { pkid, refused }) => shared.on_suback(pkid, refused),
            Ok(Happened::SentSubscribe(pkid)) => shared.on_outgoing_subscribe(pkid),
            // The DISCONNECT of a graceful close is on the wire: stop here, or the loop would
            // reconnect (and a later cut would make the broker send the will after all).
            Ok(Happened::SentDisconnect) if refreshing => refreshing = false,
            Ok(Happened::SentDisconnect) => break,
            Ok(Happened::Acked) => shared.on_acked(),
            Ok(Happened::Other) => {}
            Err(reason) => {
                if let Some(tx) = first.take() {
                    let _ = tx.send(Err(Error::NotConnected {
                        url: shared.settings.shown.clone(),
                        reason,
                    }));
                    return;
                }
                if connected {
                    connected = false;
                    let mut epoch = lock(&shared.epoch);
                    *epoch += 1;
                    let _ = shared.events.send(ConnectionEvent::Disconnected { reason });
                }
                attempt = attempt.saturating_add(1);
                let delay = busbar_core::backoff::backoff(attempt);
                tokio::select! {
                    _ = shared.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// The user name and password to present: the token where `placement` says, the URL's
/// credentials otherwise.
fn credentials(
    settings: &Settings,
    token: Option<&Token>,
    placement: TokenPlacement,
) -> Option<(String, String)> {
    let user = settings.username.clone();
    let pass = settings.password.clone();
    match (token, placement) {
        (Some(t), TokenPlacement::Username) => Some((t.value.clone(), pass.unwrap_or_default())),
        (Some(t), TokenPlacement::Password) => Some((user.unwrap_or_default(), t.value.clone())),
        (None, _) => user.map(|u| (u, pass.unwrap_or_default())),
    }
}

impl Transport for MqttTransport {
    fn kind(&self) -> &'static str {
        "mqtt"
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
            None => Completion::Pending(Box::pin(self.send(message))),
        }
    }

    fn subscribe(&self, options: SubscribeOptions) -> BoxFuture<'_, Result<Subscription>> {
        Box::pin(self.do_subscribe(options))
    }

    fn request(&self, message: Message, timeout: Duration) -> BoxFuture<'_, Result<Message>> {
        Box::pin(self.do_request(message, timeout))
    }

    fn events(&self) -> ConnectionEvents {
        ConnectionEvents::new(self.shared.events.subscribe())
    }

    fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    fn close(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if !self.shared.open.load(Ordering::Acquire) {
                return Ok(());
            }
            // What was published before the close is delivered first.
            if !self.shared.all_acked(CLOSE_FLUSH).await {
                tracing::warn!(
                    unacked = self.shared.unacked.load(Ordering::Acquire),
                    "closing with publishes not yet acknowledged ({CLOSE_FLUSH:?} passed)"
                );
            }
            // A DISCONNECT tells the broker not to publish the will.
            let _ = self.shared.client.try_disconnect();
            let task = lock(&self.supervisor).take();
            if let Some(mut task) = task {
                // The event loop ends once the DISCONNECT is written; bound the wait.
                if tokio::time::timeout(Duration::from_secs(2), &mut task).await.is_err() {
                    task.abort();
                }
            }
            self.end();
            Ok(())
        })
    }
}
