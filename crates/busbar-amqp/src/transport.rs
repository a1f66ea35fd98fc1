//! The AMQP transport: one supervisor task owns the lapin connection and its recovery.
//!
//! lapin's own auto-recovery is not used (it had bugs, amqp-rs/lapin#450): the supervisor
//! connects, opens the channels, declares every subscription's queue, binds and consumes,
//! then publishes the live [`Link`] for user calls. When the connection fails it withdraws
//! the link, fails the requests whose replies can no longer come, and starts again with
//! jittered exponential backoff, redeclaring, rebinding and resuming every consumer.
//!
//! Each subscription has its own queue (named, never exclusive, expiring `queue_expiry`
//! after its last consumer went, so a reconnect finds what was published meanwhile) and its
//! own channel and consumer task. Deliveries are acknowledged only after they are in the
//! subscription's delivery queue; a `Block` subscription's prefetch is its capacity, so a
//! slow reader holds back the broker instead of anything being dropped. Queue groups are
//! queues named from the group and the filter that every member consumes from.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use busbar_core::auth::{Token, TokenPlacement};
use busbar_core::message::Message;
use busbar_core::queue::{Pushed, QueueSender, queue};
use busbar_core::stats::{Stats, StatsSnapshot};
use busbar_core::topic::TopicFilter;
use busbar_core::topic::native::amqp_binding_key;
use busbar_core::transport::{
    BoxFuture, Capabilities, Completion, ConnectOptions, ConnectionEvent, ConnectionEvents,
    SubscribeOptions, Subscription, SubscriptionGuard, Transport,
};
use busbar_core::{Error, Overflow, QoS, Result, Topic};
use futures_util::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, ExchangeKind};
use tokio::sync::{broadcast, oneshot, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::convert;
use crate::settings::{DEFAULT_EXCHANGE, Settings};

/// How long unsubscribing (consumer cancel, queue delete) may hold up later publishes.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Most deliveries acknowledged by one `basic.ack` (with `multiple`).
const ACK_BATCH: u64 = 256;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn broker_error(message: impl Into<String>, source: Option<lapin::Error>) -> Error {
    Error::Broker {
        transport: "amqp",
        message: message.into(),
        source: source.map(|e| Box::new(e) as busbar_core::error::BoxError),
    }
}

/// Words for a lapin error, with credential failures said plainly.
fn describe(e: &lapin::Error) -> String {
    let text = e.to_string();
    if text.contains("ACCESS_REFUSED") || text.contains("403") {
        format!("the broker refused the user name or password (or token): {text}")
    } else if text.contains("NOT_ALLOWED") || text.contains("530") {
        format!("the user may not use this virtual host: {text}")
    } else {
        text
    }
}

/// One live connection and its shared channels.
struct Link {
    generation: u64,
    conn: lapin::Connection,
    /// Publishes at QoS 0.
    plain: Channel,
    /// Publishes at QoS 1 and 2, in confirm mode.
    confirm: Channel,
    /// Requests: consumes direct reply-to and publishes requests (both must be on one
    /// channel), in confirm mode with `mandatory`, so an unroutable request is returned.
    rpc: Channel,
}

/// A subscription attached to a link.
struct Active {
    generation: u64,
    channel: Channel,
    tag: ShortString,
    task: AbortHandle,
}

/// One local subscription's delivery queue.
struct Local {
    id: u64,
    tx: QueueSender<Message>,
}

/// The local subscriptions sharing one broker queue, read by its consumer task.
#[derive(Default)]
struct Locals {
    list: Vec<Local>,
    /// Where the next queue-group delivery starts looking (round robin).
    next: usize,
}

/// One broker queue and consumer, shared by this connection's local subscriptions with the
/// same filter and queue group. Sharing keeps deliveries to them in one order (one consumer
/// task offers each message to all of them in turn) and a group's message to one member.
struct SubEntry {
    key: (String, Option<String>),
    filter: TopicFilter,
    /// Empty for a named queue, which is bound to nothing.
    binding: String,
    queue: String,
    /// A queue group's queue, shared with other connections: never deleted by one member.
    shared_queue: bool,
    prefetch: u16,
    locals: Arc<Mutex<Locals>>,
    active: Option<Active>,
}

struct Waiting {
    generation: u64,
    tx: oneshot::Sender<Result<Message>>,
}

struct Shared {
    client_id: String,
    /// Distinguishes this connection's queues from an earlier one with the same client id.
    nonce: String,
    settings: Settings,
    exchange: ShortString,
    link: watch::Sender<Option<Arc<Link>>>,
    /// Held while attaching subscriptions, so a subscription is attached exactly once per
    /// link whether it comes before, during or after the supervisor's set-up.
    topology: tokio::sync::Mutex<()>,
    subs: Mutex<HashMap<u64, SubEntry>>,
    inbox: Mutex<HashMap<u64, Waiting>>,
    next_id: AtomicU64,
    stats: Arc<Stats>,
    events: broadcast::Sender<ConnectionEvent>,
    open: AtomicBool,
    shutdown: CancellationToken,
    /// Generations a consumer or publisher found broken: the supervisor reconnects.
    trouble: tokio::sync::mpsc::UnboundedSender<u64>,
    /// Unsubscriptions in progress; publishes wait for them so nothing published after a
    /// subscription was dropped reaches it.
    teardowns: AtomicUsize,
    teardown_done: tokio::sync::Notify,
    credentials: Mutex<(String, String)>,
}

impl Shared {
    fn check_open(&self) -> Result<()> {
        if self.open.load(Ordering::Acquire) { Ok(()) } else { Err(Error::Closed) }
    }

    fn not_connected(&self, reason: impl Into<String>) -> Error {
        Error::NotConnected { url: self.settings.shown.clone(), reason: reason.into() }
    }

    fn current(&self) -> Option<Arc<Link>> {
        self.link.borrow().clone()
    }

    /// The live link, waiting until `deadline` for one newer than `after`.
    async fn link_after(&self, after: u64, deadline: Instant) -> Result<Arc<Link>> {
        let mut rx = self.link.subscribe();
        let wait = rx.wait_for(|l| l.as_ref().is_some_and(|l| l.generation > after));
        tokio::select! {
            _ = self.shutdown.cancelled() => Err(Error::Closed),
            r = tokio::time::timeout_at(deadline, wait) => match r {
                Ok(Ok(link)) => link.clone().ok_or(Error::Closed),
                Ok(Err(_)) => Err(Error::Closed),
                Err(_) => Err(self.not_connected(format!(
                    "the connection did not come back within {:?}",
                    self.settings.reconnect_wait
                ))),
            }
        }
    }

    /// Waits until no unsubscription is in progress.
    async fn settle_teardowns(&self) {
        while self.teardowns.load(Ordering::Acquire) > 0 {
            let notified = self.teardown_done.notified();
            if self.teardowns.load(Ordering::Acquire) == 0 {
                break;
            }
            notified.await;
        }
    }

    /// Publishes one message on `link`, awaiting the broker's confirm for QoS >= 1. A
    /// message for a named queue (the default exchange) is always confirmed and `mandatory`:
    /// when no such queue exists the broker returns it, and the caller hears so.
    async fn publish_on(
        &self,
        link: &Link,
        exchange: &ShortString,
        key: &ShortString,
        payload: &[u8],
        props: BasicProperties,
        qos: QoS,
    ) -> std::result::Result<(), PublishFailure> {
        // RabbitMQ delivers a message to a direct reply-to name (`amq.rabbitmq.reply-to.*`)
        // and still returns it NO_ROUTE when it is mandatory, since no queue routed it: so
        // replies go out without `mandatory` (a caller that has gone cannot be told apart).
        let direct_reply = key.as_str().starts_with("amq.rabbitmq.reply-to");
        let to_queue = exchange.as_str().is_empty() && !direct_reply;
        let confirmed = to_queue || qos != QoS::AtMostOnce;
        let channel = if confirmed { &link.confirm } else { &link.plain };
        let options = BasicPublishOptions { mandatory: to_queue, ..BasicPublishOptions::default() };
        let confirm = channel
            .basic_publish(exchange.clone(), key.clone(), options, payload, props)
            .await
            .map_err(PublishFailure::Link)?;
        if !confirmed {
            return Ok(());
        }
        match confirm.await.map_err(PublishFailure::Link)? {
            // Only a `mandatory` publish can come back; lapin has been seen to attach a
            // return to the confirm of another publish on the channel, so others ignore it.
            Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_)) if to_queue => {
                Err(PublishFailure::Refused(broker_error(
                    format!(
                        "no queue named {} exists: the broker returned the message",
                        key.as_str()
                    ),
                    None,
                )))
            }
            Confirmation::Ack(_) | Confirmation::NotRequested => Ok(()),
            Confirmation::Nack(_) => Err(PublishFailure::Refused(broker_error(
                format!("the broker refused (nacked) a message for {}", key.as_str()),
                None,
            ))),
        }
    }

    async fn send(&self, message: Message) -> Result<()> {
        self.check_open()?;
        self.settle_teardowns().await;
        let (exchange, key) = convert::target(&message.topic, self.exchange.as_str())?;
        let payload = message.payload.to_bytes()?;
        if payload.len() > self.settings.max_payload {
            return Err(Error::PayloadTooLarge {
                size: payload.len(),
                max: self.settings.max_payload,
            });
        }
        let props = convert::properties(&message, None, None)?;
        let deadline = Instant::now() + self.settings.reconnect_wait;
        let mut after = 0;
        loop {
            let link = match self.current() {
                Some(l) if l.generation > after => l,
                _ => self.link_after(after, deadline).await?,
            };
            match self
                .publish_on(&link, &exchange, &key, &payload, props.clone(), message.qos)
                .await
            {
                Ok(()) => {
                    Stats::bump(&self.stats.published);
                    return Ok(());
                }
                Err(PublishFailure::Refused(e)) => return Err(e),
                Err(PublishFailure::Link(e)) => {
                    // The connection broke under this publish. At QoS >= 1 it was not
                    // confirmed, so it goes again on the next connection (at least once);
                    // at QoS 0 it is reported lost rather than silently dropped.
                    let _ = self.trouble.send(link.generation);
                    self.check_open()?;
                    if message.qos == QoS::AtMostOnce {
                        return Err(self.not_connected(describe(&e)));
                    }
                    after = link.generation;
                }
            }
        }
    }

    async fn request(&self, message: Message, timeout: Duration) -> Result<Message> {
        self.check_open()?;
        Stats::bump(&self.stats.requests);
        let topic = message.topic.clone();
        let exchange = async {
            self.settle_teardowns().await;
            let (exchange, key) = convert::target(&message.topic, self.exchange.as_str())?;
            let payload = message.payload.to_bytes()?;
            if payload.len() > self.settings.max_payload {
                return Err(Error::PayloadTooLarge {
                    size: payload.len(),
                    max: self.settings.max_payload,
                });
            }
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let props = convert::properties(
                &message,
                Some(convert::DIRECT_REPLY_TO),
                Some(id.to_string()),
            )?;
            let link = match self.current() {
                Some(l) => l,
                None => self.link_after(0, Instant::now() + self.settings.reconnect_wait).await?,
            };
            let (tx, rx) = oneshot::channel();
            lock(&self.inbox).insert(id, Waiting { generation: link.generation, tx });
            let _inbox = InboxGuard { shared: self, id };
            let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
            let sent = async {
                link.rpc.basic_publish(exchange, key, options, &payload, props).await?.await
            };
            match sent.await {
                Ok(Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_))) => {
                    // Returned as unroutable: no queue is bound to the topic.
                    return Err(Error::NoResponders { topic: topic.as_str().to_owned() });
                }
                Ok(Confirmation::Nack(None)) => {
                    return Err(broker_error(
                        format!("the broker refused (nacked) the request to {topic}"),
                        None,
                    ));
                }
                Ok(_) => Stats::bump(&self.stats.published),
                Err(e) => {
                    let _ = self.trouble.send(link.generation);
                    return Err(self.not_connected(describe(&e)));
                }
            }
            match rx.await {
                Ok(result) => result,
                Err(_) => Err(Error::Closed),
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => {
                Stats::bump(&self.stats.timeouts);
                Err(Error::Timeout { topic: topic.as_str().to_owned(), timeout })
            }
        }
    }

    /// Declares, binds and consumes subscription `id` on `link`. Call with the topology
    /// lock held.
    async fn attach(self: &Arc<Self>, link: &Link, id: u64) -> Result<()> {
        let Some((queue_name, binding, prefetch, locals, filter, group)) = lock(&self.subs)
            .get(&id)
            .filter(|s| {
                // Attached to this link already.
                s.active.as_ref().is_none_or(|a| a.generation != link.generation)
            })
            .map(|s| {
                (
                    s.queue.clone(),
                    s.binding.clone(),
                    s.prefetch,
                    s.locals.clone(),
                    s.filter.clone(),
                    s.shared_queue,
                )
            })
        else {
            return Ok(());
        };
        let fail = |what: &str, e: lapin::Error| {
            broker_error(format!("{what} for {}: {}", filter.as_str(), describe(&e)), Some(e))
        };
        let channel = link.conn.create_channel().await.map_err(|e| fail("opening a channel", e))?;
        let setup = async {
            channel
                .basic_qos(prefetch, BasicQosOptions::default())
                .await
                .map_err(|e| fail("setting the prefetch", e))?;
            let mut args = FieldTable::default();
            let expiry_ms = self.settings.queue_expiry.as_millis().min(i64::MAX as u128) as i64;
            args.insert("x-expires".into(), AMQPValue::LongLongInt(expiry_ms));
            let queue = ShortString::try_new(queue_name.clone())
                .map_err(|_| Error::Config(format!("queue name {queue_name:?} is too long")))?;
            channel
                .queue_declare(queue.clone(), QueueDeclareOptions::default(), args)
                .await
                .map_err(|e| fail("declaring the queue", e))?;
            // Named queues have no binding: they are reached through the default exchange.
            if !binding.is_empty() {
                let key = ShortString::try_new(binding.clone())
                    .map_err(|_| Error::Config(format!("binding key {binding:?} is too long")))?;
                channel
                    .queue_bind(
                        queue.clone(),
                        self.exchange.clone(),
                        key,
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .map_err(|e| fail("binding the queue", e))?;
            }
            let tag = ShortString::from(format!("busbar-{}-{id}-{}", self.nonce, link.generation));
            let consumer = channel
                .basic_consume(
                    queue,
                    tag.clone(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| fail("consuming", e))?;
            Ok::<_, Error>((tag, consumer))
        };
        let (tag, consumer) = match setup.await {
            Ok(v) => v,
            Err(e) => {
                let _ = channel.close(200, "busbar: subscription failed".into()).await;
                return Err(e);
            }
        };
        let sink = Sink {
            locals,
            group,
            filter,
            stats: self.stats.clone(),
            events: self.events.clone(),
            trouble: self.trouble.clone(),
            generation: link.generation,
        };
        let task = tokio::spawn(consume(consumer, sink)).abort_handle();
        let orphan = {
            let mut subs = lock(&self.subs);
            match subs.get_mut(&id) {
                Some(entry) => {
                    if let Some(old) = entry.active.take() {
                        old.task.abort();
                    }
                    entry.active = Some(Active { generation: link.generation, channel, tag, task });
                    None
                }
                None => Some((channel, task)),
            }
        };
        if let Some((channel, task)) = orphan {
            // Unsubscribed meanwhile.
            task.abort();
            let _ = channel.close(200, "busbar: unsubscribed".into()).await;
        }
        Ok(())
    }

    /// Ends local subscription `local` of broker subscription `id`; when it was the last,
    /// cancels the consumer (publishes wait for that), deletes a private queue and closes
    /// the channel.
    fn detach(self: &Arc<Self>, id: u64, local: u64) {
        let entry = {
            let mut subs = lock(&self.subs);
            let Some(entry) = subs.get(&id) else { return };
            let empty = {
                let mut locals = lock(&entry.locals);
                locals.list.retain(|l| l.id != local);
                locals.list.is_empty()
            };
            if !empty {
                return;
            }
            match subs.remove(&id) {
                Some(e) => e,
                None => return,
            }
        };
        let link = self.current();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            if let Some(a) = entry.active {
                a.task.abort();
            }
            return;
        };
        self.teardowns.fetch_add(1, Ordering::AcqRel);
        let shared = self.clone();
        runtime.spawn(async move {
            let work = async {
                if let Some(active) = &entry.active {
                    // cancel-ok means the queue has dropped the consumer: nothing published
                    // from now on reaches it.
                    let _ = active
                        .channel
                        .basic_cancel(active.tag.clone(), BasicCancelOptions::default())
                        .await;
                    active.task.abort();
                    if !entry.shared_queue
                        && let Ok(q) = ShortString::try_new(entry.queue.clone())
                    {
                        let _ = active.channel.queue_delete(q, QueueDeleteOptions::default()).await;
                    }
                    let _ = active.channel.close(200, "busbar: unsubscribed".into()).await;
                } else if !entry.shared_queue
                    && let Some(link) = &link
                    && let Ok(q) = ShortString::try_new(entry.queue.clone())
                {
                    let _ = link.plain.queue_delete(q, QueueDeleteOptions::default()).await;
                }
            };
            let _ = tokio::time::timeout(TEARDOWN_TIMEOUT, work).await;
            shared.teardowns.fetch_sub(1, Ordering::AcqRel);
            shared.teardown_done.notify_waiters();
        });
    }

    /// Fails the requests sent on `generation`: their replies can no longer come (direct
    /// reply-to lives and dies with its channel).
    fn fail_requests(&self, generation: u64, reason: &str) {
        let failed: Vec<Waiting> = {
            let mut inbox = lock(&self.inbox);
            let ids: Vec<u64> = inbox
                .iter()
                .filter(|(_, w)| w.generation <= generation)
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter().filter_map(|id| inbox.remove(&id)).collect()
        };
        for w in failed {
            let _ = w.tx.send(Err(self.not_connected(format!(
                "the connection was lost before the reply came: {reason}"
            ))));
        }
    }
}

enum PublishFailure {
    /// The link broke; the publish may be retried on the next one.
    Link(lapin::Error),
    /// The broker refused the message itself.
    Refused(Error),
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

/// Where a consumer task puts what it receives, and whom it tells when it fails.
struct Sink {
    locals: Arc<Mutex<Locals>>,
    group: bool,
    filter: TopicFilter,
    stats: Arc<Stats>,
    events: broadcast::Sender<ConnectionEvent>,
    trouble: tokio::sync::mpsc::UnboundedSender<u64>,
    generation: u64,
}

/// Moves one subscription's deliveries into its delivery queue, acknowledging them once
/// queued (in batches, and whenever the consumer has caught up).
async fn consume(mut consumer: lapin::Consumer, sink: Sink) {
    let Sink { locals, group, filter, stats, events, trouble, generation } = sink;
    // Deliveries from a named queue carry the queue's topic, whatever key they were sent
    // with (usually the queue's own name, through the default exchange).
    let named_queue = filter.queue_name().and_then(|_| Topic::new(filter.as_str()).ok());
    let mut unacked: Option<lapin::Acker> = None;
    let mut pending: u64 = 0;
    loop {
        let next = match consumer.next().now_or_never() {
            Some(n) => n,
            None => {
                // Caught up: acknowledge what is queued before waiting.
                if let Some(acker) = unacked.take() {
                    let _ = acker.ack(BasicAckOptions { multiple: true }).await;
                    pending = 0;
                }
                consumer.next().await
            }
        };
        let delivery = match next {
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                tracing::debug!(filter = filter.as_str(), error = %e, "consumer ended");
                let _ = trouble.send(generation);
                return;
            }
            // Canceled (unsubscribed, or by the broker: the queue was deleted).
            None => {
                let _ = trouble.send(generation);
                return;
            }
        };
        let received = Instant::now();
        let topic = match &named_queue {
            Some(topic) => Ok(topic.clone()),
            None => convert::delivery_topic(delivery.routing_key.as_str()),
        };
        let message = topic.and_then(|topic| {
            // AMQP's `*`/`#` ignore MQTT's `$` rule: re-check with busbar's matcher.
            if filter.matches(&topic) {
                convert::message(topic, &delivery.properties, delivery.data, received).map(Some)
            } else {
                Ok(None)
            }
        });
        let acker = delivery.acker;
        match message {
            Ok(Some(m)) if m.is_expired() => Stats::bump(&stats.expired),
            Ok(Some(m)) => {
                if !offer(&locals, group, filter.as_str(), m, &stats, &events).await {
                    // Every local subscription is gone: acknowledge what they took, leave
                    // the rest for the broker to requeue.
                    if let Some(a) = unacked.take() {
                        let _ = a.ack(BasicAckOptions { multiple: true }).await;
                    }
                    return;
                }
            }
            Ok(None) => {}
            Err(e) => {
                Stats::bump(&stats.dropped);
                tracing::warn!(error = %e, "a message busbar cannot represent was dropped");
            }
        }
        unacked = Some(acker);
        pending += 1;
        if pending >= ACK_BATCH
            && let Some(a) = unacked.take()
        {
            let _ = a.ack(BasicAckOptions { multiple: true }).await;
            pending = 0;
        }
    }
}

/// Offers `message` to the local subscriptions: to each of them, or for a queue group to
/// one (round robin, preferring one with room). False when none is left.
async fn offer(
    locals: &Mutex<Locals>,
    group: bool,
    filter: &str,
    message: Message,
    stats: &Stats,
    events: &broadcast::Sender<ConnectionEvent>,
) -> bool {
    if group {
        // Tried in turn until one takes it: a member that just went away must not lose it.
        let mut tried = 0;
        loop {
            let tx = {
                let mut l = lock(locals);
                let n = l.list.len();
                if tried >= n {
                    return false;
                }
                let start = l.next;
                let pick = (0..n)
                    .map(|i| (start + i) % n)
                    .find(|i| l.list[*i].tx.has_room())
                    .unwrap_or(start % n);
                l.next = pick + 1;
                l.list[pick].tx.clone()
            };
            tried += 1;
            if deliver(&tx, filter, message.clone(), stats, events).await {
                return true;
            }
        }
    }
    let targets: Vec<QueueSender<Message>> =
        lock(locals).list.iter().map(|l| l.tx.clone()).collect();
    let Some((last, rest)) = targets.split_last() else { return false };
    let mut any = false;
    for tx in rest {
        any |= deliver(tx, filter, message.clone(), stats, events).await;
    }
    any | deliver(last, filter, message, stats, events).await
}

/// Queues `message` for a subscription under its overflow policy; false once the
/// subscription is gone.
async fn deliver(
    tx: &QueueSender<Message>,
    filter: &str,
    message: Message,
    stats: &Stats,
    events: &broadcast::Sender<ConnectionEvent>,
) -> bool {
    let slow = |dropped| {
        let _ = events.send(ConnectionEvent::SlowConsumer { filter: filter.to_owned(), dropped });
    };
    // Counted before the push, so whoever reads a message also sees it counted.
    Stats::bump(&stats.delivered);
    let uncount = || stats.delivered.fetch_sub(1, Ordering::Relaxed);
    match tx.try_push(message) {
        Pushed::Queued => true,
        Pushed::Dropped { first_of_burst } => {
            uncount();
            Stats::bump(&stats.dropped);
            if first_of_burst {
                slow(tx.dropped());
            }
            true
        }
        Pushed::Full { item, first_of_burst } => {
            if first_of_burst {
                slow(0);
            }
            if tx.push(item).await.is_err() {
                uncount();
                return false;
            }
            true
        }
        Pushed::Closed(_) => {
            uncount();
            false
        }
    }
}

/// A connection to an AMQP 0.9.1 broker (RabbitMQ).
pub struct AmqpTransport {
    shared: Arc<Shared>,
    capabilities: Capabilities,
    supervisor: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for AmqpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpTransport")
            .field("client_id", &self.shared.client_id)
            .field("url", &self.shared.settings.shown)
            .finish()
    }
}

fn capabilities(settings: &Settings) -> Capabilities {
    let mut c = Capabilities::none();
    c.queue_groups = true;
    c.native_request = true;
    c.headers = true;
    c.expiry = true;
    // Requests are published `mandatory`: an unroutable one comes back at once.
    c.no_responders = true;
    c.named_queues = true;
    c.max_qos = QoS::AtLeastOnce;
    c.max_payload = Some(settings.max_payload);
    c
}

/// The queue of a new broker subscription, and whether it is a queue group's (shared).
fn queue_name(s: &Shared, options: &SubscribeOptions, binding: &str, id: u64) -> (String, bool) {
    match &options.queue_group {
        Some(group) => {
            let name = format!("busbar.group.{group}.{binding}");
            if name.len() <= 255 {
                (name, true)
            } else {
                let hash = fnv1a(format!("{group}\0{binding}").as_bytes());
                (format!("busbar.group.{hash:016x}"), true)
            }
        }
        None => {
            let name = format!("busbar.sub.{}.{}.{id}", s.client_id, s.nonce);
            if name.len() <= 255 {
                (name, false)
            } else {
                (format!("busbar.sub.{}.{id}", uuid::Uuid::new_v4().simple()), false)
            }
        }
    }
}

/// FNV-1a, stable across processes: every member of a group must derive the same queue name.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

impl AmqpTransport {
    /// Connects; resolves once the broker accepted the connection.
    pub async fn connect(url: &str, options: ConnectOptions) -> Result<AmqpTransport> {
        let settings = Settings::parse(url)?;
        if options.requires_last_will() {
            return Err(Error::Unsupported { transport: "amqp", feature: "last wills" });
        }
        let client_id = options
            .client_id
            .clone()
            .unwrap_or_else(|| format!("busbar-{}", uuid::Uuid::new_v4().simple()));
        let first_token = match &options.token {
            Some(provider) => Some(provider.token().await?),
            None => None,
        };
        let creds = credentials(&settings, first_token.as_ref(), options.token_placement);
        let exchange = ShortString::try_new(settings.exchange.clone())
            .map_err(|_| Error::Config("the exchange name is too long".into()))?;
        let (trouble_tx, trouble_rx) = tokio::sync::mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            client_id,
            nonce: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
            exchange,
            link: watch::channel(None).0,
            topology: tokio::sync::Mutex::new(()),
            subs: Mutex::default(),
            inbox: Mutex::default(),
            next_id: AtomicU64::new(1),
            stats: Arc::new(Stats::default()),
            events: ConnectionEvents::channel(),
            open: AtomicBool::new(true),
            shutdown: CancellationToken::new(),
            trouble: trouble_tx,
            teardowns: AtomicUsize::new(0),
            teardown_done: tokio::sync::Notify::new(),
            credentials: Mutex::new(creds),
            settings,
        });
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
        let (first_tx, first_rx) = oneshot::channel();
        let supervisor = tokio::spawn(supervise(
            shared.clone(),
            first_tx,
            trouble_rx,
            token_rx,
            options.token_placement,
        ));
        let limit = shared.settings.connect_timeout + Duration::from_secs(1);
        let outcome = match tokio::time::timeout(limit, first_rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(broker_error("the connection task ended", None)),
            Err(_) => {
                Err(shared.not_connected(format!("no answer from the broker within {limit:?}")))
            }
        };
        if let Err(e) = outcome {
            shared.shutdown.cancel();
            supervisor.abort();
            if let Some(r) = refresher {
                r.abort();
            }
            return Err(e);
        }
        Ok(AmqpTransport {
            capabilities: capabilities(&shared.settings),
            shared,
            supervisor: Mutex::new(Some(supervisor)),
        })
    }

    /// Drops the connection without a graceful close, as a crash would. For fault tests.
    pub fn kill(&self) {
        if let Some(link) = self.shared.current()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            // Without the close lapin's I/O loop would keep the socket open.
            rt.spawn(async move {
                let _ = link.conn.close(320, "busbar: connection killed".into()).await;
            });
        }
        self.end();
        if let Some(task) = lock(&self.supervisor).take() {
            task.abort();
        }
    }

    fn end(&self) {
        let s = &self.shared;
        if s.open.swap(false, Ordering::AcqRel) {
            s.shutdown.cancel();
            // Subscriptions end: their senders go with the entries and the consumer tasks.
            let subs: Vec<SubEntry> = lock(&s.subs).drain().map(|(_, e)| e).collect();
            for e in subs {
                if let Some(a) = e.active {
                    a.task.abort();
                }
                lock(&e.locals).list.clear();
            }
            let waiting: Vec<Waiting> = lock(&s.inbox).drain().map(|(_, w)| w).collect();
            for w in waiting {
                let _ = w.tx.send(Err(Error::Closed));
            }
            s.link.send_replace(None);
            let _ = s.events.send(ConnectionEvent::Closed);
        }
    }

    async fn do_subscribe(&self, options: SubscribeOptions) -> Result<Subscription> {
        let s = &self.shared;
        s.check_open()?;
        if options.no_local {
            return Err(Error::Unsupported {
                transport: "amqp",
                feature: "no-local subscriptions",
            });
        }
        let filter = options.filter.clone();
        // A named queue is consumed as it is, bound to nothing (an empty binding).
        let named = filter.queue_name();
        let binding = match named {
            Some(_) => String::new(),
            None => amqp_binding_key(&filter)?,
        };
        let key = (filter.as_str().to_owned(), options.queue_group.clone());
        let local = s.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = queue(options.queue);
        let prefetch = match options.queue.overflow {
            // The broker holds back what the queue cannot take: nothing is dropped.
            Overflow::Block => options.queue.capacity.clamp(1, usize::from(u16::MAX)) as u16,
            // Drop policies take everything and let the queue's policy decide.
            Overflow::DropNewest | Overflow::DropOldest => s.settings.prefetch,
        };
        let (id, _new) = {
            let mut subs = lock(&s.subs);
            match subs.iter().find(|(_, e)| e.key == key).map(|(id, _)| *id) {
                Some(id) => {
                    if let Some(e) = subs.get(&id) {
                        lock(&e.locals).list.push(Local { id: local, tx });
                    }
                    (id, false)
                }
                None => {
                    let id = s.next_id.fetch_add(1, Ordering::Relaxed);
                    // A named queue is shared like a group's: each message reaches one
                    // subscriber, and no subscriber deletes it.
                    let (queue_name, shared_queue) = match &named {
                        Some(name) => (name.clone(), true),
                        None => queue_name(s, &options, &binding, id),
                    };
                    let locals = Locals { list: vec![Local { id: local, tx }], next: 0 };
                    subs.insert(
                        id,
                        SubEntry {
                            key,
                            filter: filter.clone(),
                            binding,
                            queue: queue_name,
                            shared_queue,
                            prefetch,
                            locals: Arc::new(Mutex::new(locals)),
                            active: None,
                        },
                    );
                    (id, true)
                }
            }
        };
        // Removes the local subscription on failure, and unsubscribes once it is dropped.
        let weak = Arc::downgrade(s);
        let guard = SubscriptionGuard::new(move || {
            if let Some(s) = weak.upgrade() {
                s.detach(id, local);
            }
        });
        // Also when joining an existing broker subscription: the topology lock makes sure
        // it is attached (by whoever made it) before this subscribe returns.
        let deadline = Instant::now() + s.settings.reconnect_wait;
        loop {
            {
                let _topology = s.topology.lock().await;
                if let Some(link) = s.current() {
                    s.attach(&link, id).await?;
                    break;
                }
            }
            s.link_after(0, deadline).await?;
        }
        Ok(Subscription::new(filter, rx, s.stats.clone(), guard))
    }
}

impl Drop for AmqpTransport {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Opens a connection and its shared channels.
async fn open_link(shared: &Shared, generation: u64) -> Result<Arc<Link>> {
    let settings = &shared.settings;
    let (username, password) = lock(&shared.credentials).clone();
    let uri = lapin::uri::AMQPUri {
        scheme: if settings.tls.is_some() {
            lapin::uri::AMQPScheme::AMQPS
        } else {
            lapin::uri::AMQPScheme::AMQP
        },
        authority: lapin::uri::AMQPAuthority {
            userinfo: lapin::uri::AMQPUserInfo { username, password },
            host: settings.host.clone(),
            port: settings.port,
        },
        vhost: settings.vhost.clone(),
        query: lapin::uri::AMQPQueryString {
            heartbeat: settings.heartbeat,
            connection_timeout: Some(settings.connect_timeout.as_millis() as u64),
            ..Default::default()
        },
    };
    let tls = crate::tls::config(settings.tls.as_ref())?;
    let properties = lapin::ConnectionProperties::default()
        .with_connection_name(shared.client_id.clone().into());
    let runtime = lapin::runtime::default_runtime()
        .map_err(|e| broker_error("no async runtime for lapin", Some(e)))?;
    let connecting = lapin::Connection::connect_uri_with_config(uri, properties, tls, runtime);
    let conn = match tokio::time::timeout(settings.connect_timeout, connecting).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err(shared.not_connected(describe(&e))),
        Err(_) => {
            return Err(
                shared.not_connected(format!("no answer within {:?}", settings.connect_timeout))
            );
        }
    };
    let channels = async {
        let plain = conn.create_channel().await?;
        let confirm = conn.create_channel().await?;
        confirm.confirm_select(ConfirmSelectOptions::default()).await?;
        let rpc = conn.create_channel().await?;
        rpc.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok::<_, lapin::Error>((plain, confirm, rpc))
    };
    let (plain, confirm, rpc) = match channels.await {
        Ok(c) => c,
        Err(e) => {
            let _ = conn.close(200, "busbar: set-up failed".into()).await;
            return Err(broker_error(format!("opening channels: {}", describe(&e)), Some(e)));
        }
    };
    if settings.exchange != DEFAULT_EXCHANGE {
        let declared = plain
            .exchange_declare(
                shared.exchange.clone(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() },
                FieldTable::default(),
            )
            .await;
        if let Err(e) = declared {
            let _ = conn.close(200, "busbar: set-up failed".into()).await;
            return Err(Error::Config(format!(
                "the exchange {:?} cannot be used as a topic exchange: {}",
                settings.exchange,
                describe(&e)
            )));
        }
    }
    Ok(Arc::new(Link { generation, conn, plain, confirm, rpc }))
}

/// Consumes direct reply-to on the link's rpc channel and completes waiting requests.
async fn start_replies(shared: &Arc<Shared>, link: &Link) -> Result<AbortHandle> {
    let consumer = link
        .rpc
        .basic_consume(
            convert::DIRECT_REPLY_TO.into(),
            format!("busbar-replies-{}", shared.nonce).into(),
            BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() },
            FieldTable::default(),
        )
        .await
        .map_err(|e| {
            broker_error(format!("consuming direct reply-to: {}", describe(&e)), Some(e))
        })?;
    let weak = Arc::downgrade(shared);
    let generation = link.generation;
    Ok(tokio::spawn(async move {
        let mut consumer = consumer;
        let reply_topic = Topic::new("_busbar/amqp-reply").ok();
        while let Some(next) = consumer.next().await {
            let Some(shared) = weak.upgrade() else { return };
            let delivery = match next {
                Ok(d) => d,
                Err(_) => {
                    let _ = shared.trouble.send(generation);
                    return;
                }
            };
            let id = delivery
                .properties
                .correlation_id()
                .as_ref()
                .and_then(|c| c.as_str().parse::<u64>().ok());
            let waiting = id.and_then(|id| lock(&shared.inbox).remove(&id));
            let (Some(w), Some(topic)) = (waiting, reply_topic.clone()) else {
                Stats::bump(&shared.stats.late_replies);
                continue;
            };
            let reply =
                convert::message(topic, &delivery.properties, delivery.data, Instant::now());
            let _ = w.tx.send(reply);
        }
    })
    .abort_handle())
}

/// Owns the connection until shutdown: connects, attaches every subscription, watches for
/// failure, and starts again.
async fn supervise(
    shared: Arc<Shared>,
    first: oneshot::Sender<Result<()>>,
    mut trouble: tokio::sync::mpsc::UnboundedReceiver<u64>,
    mut tokens: tokio::sync::mpsc::Receiver<Token>,
    placement: TokenPlacement,
) {
    let mut first = Some(first);
    let mut generation: u64 = 0;
    let mut attempt: u32 = 0;
    while !shared.shutdown.is_cancelled() {
        let candidate = generation + 1;
        let setup = async {
            let link = open_link(&shared, candidate).await?;
            let replies = match start_replies(&shared, &link).await {
                Ok(r) => r,
                Err(e) => {
                    let _ = link.conn.close(200, "busbar: set-up failed".into()).await;
                    return Err(e);
                }
            };
            let _topology = shared.topology.lock().await;
            let ids: Vec<u64> = lock(&shared.subs).keys().copied().collect();
            for id in ids {
                if let Err(e) = shared.attach(&link, id).await {
                    replies.abort();
                    let _ = link.conn.close(200, "busbar: set-up failed".into()).await;
                    return Err(e);
                }
            }
            shared.link.send_replace(Some(link.clone()));
            Ok::<_, Error>((link, replies))
        };
        let (link, replies) = match setup.await {
            Ok(v) => v,
            Err(e) => {
                if let Some(tx) = first.take() {
                    let _ = tx.send(Err(e));
                    return;
                }
                tracing::debug!(error = %e, "reconnect failed");
                attempt = attempt.saturating_add(1);
                tokio::select! {
                    _ = shared.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(busbar_core::backoff::backoff(attempt)) => {}
                }
                continue;
            }
        };
        generation = candidate;
        attempt = 0;
        if let Some(tx) = first.take() {
            let _ = shared.events.send(ConnectionEvent::Connected);
            let _ = tx.send(Ok(()));
        } else {
            let _ = shared.events.send(ConnectionEvent::Reconnected);
        }
        let mut lapin_events = link.conn.events_listener();
        let reason = loop {
            tokio::select! {
                _ = shared.shutdown.cancelled() => break None,
                Some(g) = trouble.recv() => {
                    if g == generation && !(link.plain.status().connected()
                        && link.confirm.status().connected()
                        && link.rpc.status().connected()
                        && link.conn.status().connected()
                        && consumers_alive(&shared, generation))
                    {
                        break Some("a channel or consumer failed".to_owned());
                    }
                }
                Some(token) = tokens.recv() => {
                    *lock(&shared.credentials) = credentials(&shared.settings, Some(&token), placement);
                    // Reconnect with the new token, keeping every subscription.
                    break Some("token refresh".to_owned());
                }
                ev = lapin_events.next() => match ev {
                    Some(lapin::Event::Error(e)) if !link.conn.status().connected() => {
                        break Some(describe(&e));
                    }
                    Some(_) => {}
                    None => break Some("the connection ended".to_owned()),
                }
            }
        };
        replies.abort();
        let Some(reason) = reason else {
            // Shutdown: close gracefully, deleting private queues first.
            shutdown_link(&shared, &link).await;
            break;
        };
        shared.link.send_replace(None);
        shared.fail_requests(generation, &reason);
        let _ = shared.events.send(ConnectionEvent::Disconnected { reason: reason.clone() });
        tracing::info!(url = %shared.settings.shown, reason = %reason, "connection lost; reconnecting");
        if link.conn.status().connected() {
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                link.conn.close(200, "busbar: reconnecting".into()),
            )
            .await;
        }
        if reason != "token refresh" {
            attempt = attempt.saturating_add(1);
            tokio::select! {
                _ = shared.shutdown.cancelled() => break,
                _ = tokio::time::sleep(busbar_core::backoff::backoff(attempt)) => {}
            }
        }
    }
}

/// True when every subscription attached on `generation` still has its channel.
fn consumers_alive(shared: &Shared, generation: u64) -> bool {
    lock(&shared.subs).values().all(|s| match &s.active {
        Some(a) if a.generation == generation => a.channel.status().connected(),
        _ => true,
    })
}

async fn shutdown_link(shared: &Shared, link: &Link) {
    let private: Vec<String> =
        lock(&shared.subs).values().filter(|s| !s.shared_queue).map(|s| s.queue.clone()).collect();
    let work = async {
        for q in private {
            if let Ok(q) = ShortString::try_new(q) {
                let _ = link.plain.queue_delete(q, QueueDeleteOptions::default()).await;
            }
        }
        let _ = link.conn.close(200, "busbar: closed".into()).await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), work).await;
}

/// The user name and password to present: the token where `placement` says, the URL's
/// credentials otherwise.
fn credentials(
    settings: &Settings,
    token: Option<&Token>,
    placement: TokenPlacement,
) -> (String, String) {
    match (token, placement) {
        (Some(t), TokenPlacement::Username) => (t.value.clone(), settings.password.clone()),
        (Some(t), TokenPlacement::Password) => (settings.username.clone(), t.value.clone()),
        (None, _) => (settings.username.clone(), settings.password.clone()),
    }
}

impl Transport for AmqpTransport {
    fn kind(&self) -> &'static str {
        "amqp"
    }

    fn client_id(&self) -> &str {
        &self.shared.client_id
    }

    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn publish(&self, message: Message) -> Completion<'_, ()> {
        Completion::Pending(Box::pin(self.shared.send(message)))
    }

    fn subscribe(&self, options: SubscribeOptions) -> BoxFuture<'_, Result<Subscription>> {
        Box::pin(self.do_subscribe(options))
    }

    fn request(&self, message: Message, timeout: Duration) -> BoxFuture<'_, Result<Message>> {
        Box::pin(self.shared.request(message, timeout))
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
            self.shared.shutdown.cancel();
            let task = lock(&self.supervisor).take();
            if let Some(mut task) = task {
                // The supervisor closes the connection gracefully; bound the wait.
                if tokio::time::timeout(Duration::from_secs(3), &mut task).await.is_err() {
                    task.abort();
                }
            }
            self.end();
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_queue_names_are_stable() {
        assert_eq!(fnv1a(b"workers\0a.*"), fnv1a(b"workers\0a.*"));
        assert_ne!(fnv1a(b"workers\0a.*"), fnv1a(b"workers\0a.#"));
    }
}
