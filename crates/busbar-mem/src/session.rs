//! One connection to a bus.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busbar_core::error::{
    CloseError, OpError, PublishError, RequestError, SubscribeError, SubscribeErrorKind,
};
use busbar_core::message::{Message, QoS};
use busbar_core::queue::queue;
use busbar_core::stats::StatsSnapshot;
use busbar_core::topic::{Topic, TopicFilter};
use busbar_core::transport::{
    BoxFuture, Capabilities, Completion, ConnectOptions, ConnectionEvent, ConnectionEvents,
    NativeNames, SubscribeOptions, Subscription, SubscriptionGuard, Transport,
};
use busbar_transport_kit::inbox::{self, Inbox};
use busbar_transport_kit::{Meter, Target, ids};
use bytes::Bytes;

use crate::bus::{MemBus, finish_later, lock, publish};
use crate::connector::MemOptions;
use crate::routes::Entry;
use busbar_core::topic::INBOX_PREFIX;

/// What identifies a subscription in the router: its filter and queue group.
type SubscriptionKey = (TopicFilter, Option<Arc<str>>);

/// Why calls fail after the session ended.
#[derive(Clone)]
enum Ended {
    Closed,
    Cut(String),
}

/// The state of one connection, shared with the bus (which can cut it, and hands it the
/// replies to its requests).
pub(crate) struct Session {
    bus: MemBus,
    pub(crate) client_id: String,
    pub(crate) meter: Meter,
    /// This connection's requests waiting for replies.
    pub(crate) inbox: Inbox,
    /// The random part of this connection's reply topic (`_busbar/inbox/<id>`).
    pub(crate) inbox_id: String,
    reply_topic: Topic,
    will: Mutex<Option<Message>>,
    subscriptions: Mutex<HashMap<u64, SubscriptionKey>>,
    ended: Mutex<Option<Ended>>,
    open: AtomicBool,
}

impl Session {
    fn check_open<K: Copy + From<busbar_core::error::Common>>(&self) -> Result<(), OpError<K>> {
        if self.open.load(Ordering::Acquire) {
            return Ok(());
        }
        Err(match lock(&self.ended).clone() {
            Some(Ended::Cut(reason)) => OpError::not_connected(&self.url(), reason),
            _ => OpError::closed(),
        })
    }

    fn url(&self) -> String {
        format!("mem://{}", self.bus.name())
    }

    /// Ends the session: subscriptions end, and when `publish_will`, the last will goes out.
    /// `cut` is the reason for an abnormal end (None for a graceful close).
    pub(crate) fn terminate(&self, publish_will: bool, cut: Option<&str>) {
        // `open` flips under the subscriptions lock, which `subscribe` holds from its check
        // to its insert: a subscription is either seen and removed here, or refused.
        let subs: Vec<_> = {
            let mut subs = lock(&self.subscriptions);
            if !self.open.swap(false, Ordering::AcqRel) {
                return;
            }
            *lock(&self.ended) = Some(match cut {
                Some(reason) => Ended::Cut(reason.to_owned()),
                None => Ended::Closed,
            });
            subs.drain().collect()
        };
        for (id, (filter, group)) in subs {
            self.bus.inner.remove(&filter, group.as_ref(), id);
        }
        self.bus.inner.unregister(self);
        self.inbox.fail_all(|| match cut {
            Some(reason) => OpError::not_connected(&self.url(), reason),
            None => RequestError::closed(),
        });
        let will = lock(&self.will).take();
        if publish_will && let Some(will) = will {
            finish_later(self.bus.inner.route(will, &self.meter));
        }
        self.meter.announce(match cut {
            Some(reason) => ConnectionEvent::Disconnected { reason: reason.to_owned() },
            None => ConnectionEvent::Closed,
        });
    }
}

/// A connection to a [`MemBus`]. Dropping the last handle without `close` counts as a
/// crash: the last will is published.
pub struct MemTransport {
    session: Arc<Session>,
    capabilities: Capabilities,
}

fn capabilities() -> Capabilities {
    let mut c = Capabilities::none(NativeNames::Slash);
    c.queue_groups = true;
    c.retained = true;
    c.native_request = true;
    c.headers = true;
    c.expiry = true;
    c.last_will = true;
    c.typed_payloads = true;
    c.no_responders = true;
    c.no_local = true;
    c.max_qos = QoS::ExactlyOnce;
    c
}

impl MemTransport {
    pub(crate) fn open(bus: MemBus, options: ConnectOptions, mem: MemOptions) -> Self {
        let client_id = options
            .client_id
            .unwrap_or_else(|| format!("busbar-{}", uuid::Uuid::new_v4().simple()));
        let meter = Meter::new();
        let reply_topic = Topic::inbox(ids::random_bytes());
        let inbox_id = reply_topic.as_str()[INBOX_PREFIX.len()..].to_owned();
        let session = Arc::new(Session {
            bus: bus.clone(),
            client_id,
            inbox: Inbox::new(&meter),
            meter,
            inbox_id,
            reply_topic,
            will: Mutex::new(options.last_will),
            subscriptions: Mutex::new(HashMap::new()),
            ended: Mutex::new(None),
            open: AtomicBool::new(true),
        });
        bus.inner.register(&session);
        // The in-process bus has no address: its URL names it.
        let server = format!("mem://{}", session.bus.name());
        session.meter.announce(ConnectionEvent::Connected { server });
        let mut capabilities = capabilities();
        capabilities.typed_payloads = !mem.serialize_always;
        MemTransport { session, capabilities }
    }

    fn do_subscribe(&self, options: SubscribeOptions) -> Result<Subscription, SubscribeError> {
        let s = &self.session;
        if options.no_local && options.queue_group.is_some() {
            // As in MQTT 5, where it is a protocol error: a group member's copy is the
            // group's, not the member's to skip.
            return Err(OpError::new(
                SubscribeErrorKind::Unsupported,
                "a queue group subscription cannot be no-local",
            ));
        }
        let bus = s.bus.inner.clone();
        let id = bus.next_id();
        let (tx, rx) = queue(options.queue);
        let group: Option<Arc<str>> = options.queue_group.map(Arc::from);
        let filter = options.filter;
        let target = Target::new(tx, filter.as_str(), &s.meter);
        {
            let mut subs = lock(&s.subscriptions);
            s.check_open()?;
            subs.insert(id, (filter.clone(), group.clone()));
            match &group {
                None => bus.add_one(&filter, Entry { id, target, no_local: options.no_local }),
                Some(g) => bus.add_member(&filter, g.clone(), id, target),
            }
        }
        let weak_session = Arc::downgrade(s);
        let guard_filter = filter.clone();
        let guard = SubscriptionGuard::new(move || {
            if let Some(session) = weak_session.upgrade() {
                lock(&session.subscriptions).remove(&id);
            }
            // Removing by id is idempotent: harmless if the session's end removed it already.
            bus.remove(&guard_filter, group.as_ref(), id);
        });
        Ok(Subscription::new(filter, rx, s.meter.stats().clone(), guard))
    }

    async fn do_request(
        &self,
        mut message: Message,
        timeout: Duration,
    ) -> Result<Message, RequestError> {
        let s = &self.session;
        s.check_open::<busbar_core::error::RequestErrorKind>()?;
        let topic = message.topic.clone();
        inbox::exchange(&s.meter, topic.as_str(), timeout, async {
            let mut pending = s.inbox.register(0);
            message.reply_to = Some(s.reply_topic.clone());
            message.correlation_id = Some(Bytes::copy_from_slice(pending.id().as_bytes()));
            // One deadline covers both waiting for room in a busy server's queue and the
            // reply.
            if publish(&s.bus.inner, message, &s.meter).await == 0 {
                return Err(RequestError::no_responders(topic.as_str()));
            }
            pending.reply().await
        })
        .await
    }
}

impl Drop for MemTransport {
    fn drop(&mut self) {
        self.session.terminate(true, Some("connection dropped without close"));
    }
}

impl Transport for MemTransport {
    fn kind(&self) -> &'static str {
        "mem"
    }

    fn client_id(&self) -> &str {
        &self.session.client_id
    }

    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn publish(&self, message: Message) -> Completion<'_> {
        if let Err(e) = self.session.check_open::<busbar_core::error::PublishErrorKind>() {
            return Completion::ready(Err(e));
        }
        let meter = &self.session.meter;
        meter.published();
        let routed = self.session.bus.inner.route(message, meter);
        if routed.blocked.is_empty() {
            return Completion::ready(Ok(()));
        }
        Completion::Pending(Box::pin(async move {
            routed.finish().await;
            Ok::<(), PublishError>(())
        }))
    }

    fn subscribe(
        &self,
        options: SubscribeOptions,
    ) -> BoxFuture<'_, Result<Subscription, SubscribeError>> {
        Box::pin(async move { self.do_subscribe(options) })
    }

    fn request(
        &self,
        message: Message,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Message, RequestError>> {
        Box::pin(self.do_request(message, timeout))
    }

    fn events(&self) -> ConnectionEvents {
        self.session.meter.events()
    }

    fn stats(&self) -> StatsSnapshot {
        self.session.meter.snapshot()
    }

    fn close(&self) -> BoxFuture<'_, Result<(), CloseError>> {
        Box::pin(async move {
            self.session.terminate(false, None);
            Ok(())
        })
    }
}
