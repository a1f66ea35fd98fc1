//! One connection to a bus.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busbar_core::message::{Message, QoS};
use busbar_core::queue::queue;
use busbar_core::stats::{Stats, StatsSnapshot};
use busbar_core::topic::{Topic, TopicFilter};
use busbar_core::transport::{
    BoxFuture, Capabilities, Completion, ConnectOptions, ConnectionEvent, ConnectionEvents,
    SubscribeOptions, Subscription, SubscriptionGuard, Transport,
};
use busbar_core::{Error, Result};
use bytes::Bytes;

use crate::bus::{INBOX_PREFIX, MemBus, lock, publish};
use crate::connector::MemOptions;
use crate::routes::{Entry, Owner};

/// What identifies a subscription in the router: its filter and queue group.
type SubscriptionKey = (TopicFilter, Option<Arc<str>>);

/// Why calls fail after the session ended.
#[derive(Clone)]
enum Ended {
    Closed,
    Cut(String),
}

/// The state of one connection, shared with the bus (which can cut it).
pub(crate) struct Session {
    bus: MemBus,
    client_id: String,
    owner: Arc<Owner>,
    will: Mutex<Option<Message>>,
    subscriptions: Mutex<HashMap<u64, SubscriptionKey>>,
    ended: Mutex<Option<Ended>>,
    open: AtomicBool,
}

impl Session {
    fn check_open(&self) -> Result<()> {
        if self.open.load(Ordering::Acquire) {
            return Ok(());
        }
        Err(match lock(&self.ended).clone() {
            Some(Ended::Cut(reason)) => Error::NotConnected { url: self.url(), reason },
            _ => Error::Closed,
        })
    }

    fn url(&self) -> String {
        format!("mem://{}", self.bus.name())
    }

    /// Ends the session: subscriptions end, and when `publish_will`, the last will goes out.
    /// `cut` is the reason for an abnormal end (None for a graceful close).
    pub(crate) fn terminate(&self, publish_will: bool, cut: Option<&str>) {
        // `open` flips under the subscriptions lock, which `do_subscribe` holds from its
        // check to its insert: a subscription is either seen and removed here, or refused.
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
        self.bus.inner.unregister(&self.client_id, self);
        let will = lock(&self.will).take();
        if publish_will && let Some(will) = will {
            let routed = self.bus.inner.route(will, &self.owner);
            // Waiting deliveries of a will are finished in the background: termination can
            // happen in a destructor, which cannot wait.
            if !routed.blocked.is_empty()
                && let Ok(rt) = tokio::runtime::Handle::try_current()
            {
                rt.spawn(async move {
                    for b in routed.blocked {
                        b.deliver().await;
                    }
                });
            }
        }
        let event = match cut {
            Some(reason) => ConnectionEvent::Disconnected { reason: reason.to_owned() },
            None => ConnectionEvent::Closed,
        };
        let _ = self.owner.events.send(event);
    }
}

/// A connection to a [`MemBus`]. Dropping the last handle without `close` counts as a
/// crash: the last will is published.
pub struct MemTransport {
    session: Arc<Session>,
    capabilities: Capabilities,
}

fn capabilities() -> Capabilities {
    let mut c = Capabilities::none();
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
        let events = ConnectionEvents::channel();
        let session = Arc::new(Session {
            bus: bus.clone(),
            client_id: client_id.clone(),
            owner: Arc::new(Owner { stats: Arc::new(Stats::default()), events }),
            will: Mutex::new(options.last_will),
            subscriptions: Mutex::new(HashMap::new()),
            ended: Mutex::new(None),
            open: AtomicBool::new(true),
        });
        bus.inner.register(&client_id, &session);
        let _ = session.owner.events.send(ConnectionEvent::Connected);
        let mut capabilities = capabilities();
        capabilities.typed_payloads = !mem.serialize_always;
        MemTransport { session, capabilities }
    }

    fn do_subscribe(&self, options: SubscribeOptions) -> Result<Subscription> {
        let s = &self.session;
        let bus = s.bus.inner.clone();
        let id = bus.next_id();
        let (tx, rx) = queue(options.queue);
        let group: Option<Arc<str>> = options.queue_group.map(Arc::from);
        let filter = options.filter;
        {
            let mut subs = lock(&s.subscriptions);
            s.check_open()?;
            subs.insert(id, (filter.clone(), group.clone()));
            bus.add(
                Entry {
                    id,
                    filter: filter.clone(),
                    tx,
                    owner: s.owner.clone(),
                    no_local: options.no_local,
                },
                group.clone(),
            );
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
        Ok(Subscription::new(filter, rx, s.owner.stats.clone(), guard))
    }

    async fn do_request(&self, mut message: Message, timeout: Duration) -> Result<Message> {
        let s = &self.session;
        s.check_open()?;
        Stats::bump(&s.owner.stats.requests);
        let bus = &s.bus.inner;
        let (id, reply) = bus.open_inbox();
        // Closes the inbox however this future ends, including being dropped by the caller.
        let _inbox = InboxGuard { bus: &s.bus, id };
        message.reply_to = Some(Topic::new(format!("{INBOX_PREFIX}{id}"))?);
        message.correlation_id = Some(Bytes::copy_from_slice(&id.to_be_bytes()));
        let topic = message.topic.clone();
        // One deadline covers both waiting for room in a busy server's queue and the reply.
        let exchange = async {
            let reached = publish(bus, message, &s.owner).await?;
            if reached == 0 {
                return Err(Error::NoResponders { topic: topic.as_str().to_owned() });
            }
            reply.await.map_err(|_| Error::Closed)
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => {
                Stats::bump(&s.owner.stats.timeouts);
                Err(Error::Timeout { topic: topic.as_str().to_owned(), timeout })
            }
        }
    }
}

struct InboxGuard<'a> {
    bus: &'a MemBus,
    id: u64,
}

impl Drop for InboxGuard<'_> {
    fn drop(&mut self) {
        self.bus.inner.close_inbox(self.id);
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

    fn publish(&self, message: Message) -> Completion<'_, ()> {
        if let Err(e) = self.session.check_open() {
            return Completion::ready(Err(e));
        }
        let stats = &self.session.owner.stats;
        Stats::bump(&stats.published);
        let routed = self.session.bus.inner.route(message, &self.session.owner);
        if routed.blocked.is_empty() {
            return Completion::ready(Ok(()));
        }
        Completion::Pending(Box::pin(async move {
            for b in routed.blocked {
                b.deliver().await;
            }
            Ok(())
        }))
    }

    fn subscribe(&self, options: SubscribeOptions) -> BoxFuture<'_, Result<Subscription>> {
        Box::pin(async move { self.do_subscribe(options) })
    }

    fn request(&self, message: Message, timeout: Duration) -> BoxFuture<'_, Result<Message>> {
        Box::pin(self.do_request(message, timeout))
    }

    fn events(&self) -> ConnectionEvents {
        ConnectionEvents::new(self.session.owner.events.subscribe())
    }

    fn stats(&self) -> StatsSnapshot {
        self.session.owner.stats.snapshot()
    }

    fn close(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.session.terminate(false, None);
            Ok(())
        })
    }
}
