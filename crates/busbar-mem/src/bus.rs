//! A bus: the router shared by every connection to it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use busbar_core::Connection;
use busbar_core::message::{Message, QoS};
use busbar_core::topic::{INBOX_PREFIX, TopicFilter};
use busbar_core::transport::ConnectOptions;
use busbar_transport_kit::delivery::Offer;
use busbar_transport_kit::{Meter, Target};

use crate::connector::MemOptions;
use crate::routes::{Entry, Routes};
use crate::session::{MemTransport, Session};

pub(crate) use busbar_transport_kit::lock;

/// An in-process message bus. Cheap to clone; clones are the same bus.
#[derive(Clone)]
pub struct MemBus {
    pub(crate) inner: Arc<BusInner>,
}

pub(crate) struct BusInner {
    pub(crate) name: String,
    routes: RwLock<Routes>,
    /// Connections by their reply inbox id.
    inboxes: Mutex<HashMap<String, Weak<Session>>>,
    sessions: Mutex<HashMap<String, Weak<Session>>>,
    next_id: AtomicU64,
}

/// What a publish reached.
pub(crate) struct Routed {
    /// Subscriptions (or a waiting request) reached; 0 means nobody listens.
    pub(crate) reached: usize,
    /// Deliveries to full `Block` queues, to wait for after the router lock is released.
    pub(crate) blocked: Vec<(Target, Message)>,
}

impl Routed {
    /// Finishes the deliveries that wait for room.
    pub(crate) async fn finish(self) -> usize {
        for (target, message) in self.blocked {
            target.deliver(message).await;
        }
        self.reached
    }
}

impl Default for MemBus {
    fn default() -> Self {
        MemBus::new()
    }
}

impl MemBus {
    /// A new private bus, reachable only through this value and its clones.
    pub fn new() -> Self {
        Self::with_name("")
    }

    fn with_name(name: &str) -> Self {
        MemBus {
            inner: Arc::new(BusInner {
                name: name.to_owned(),
                routes: RwLock::new(Routes::default()),
                inboxes: Mutex::new(HashMap::new()),
                sessions: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
            }),
        }
    }

    /// The process-wide bus called `name` (`""` is the one `mem://` reaches), created on
    /// first use and kept for the life of the process.
    pub fn named(name: &str) -> Self {
        static BUSES: OnceLock<Mutex<HashMap<String, MemBus>>> = OnceLock::new();
        let mut buses = lock(BUSES.get_or_init(Default::default));
        buses.entry(name.to_owned()).or_insert_with(|| MemBus::with_name(name)).clone()
    }

    /// The bus's name (`""` for the default and for private buses).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Opens a connection to this bus.
    pub fn connect(&self, options: ConnectOptions) -> Connection {
        self.connect_with(options, MemOptions::default())
    }

    /// Opens a connection to this bus with `mem://`-specific options.
    pub fn connect_with(&self, options: ConnectOptions, mem: MemOptions) -> Connection {
        Connection::new(Arc::new(MemTransport::open(self.clone(), options, mem)))
    }

    /// Cuts the connection whose client id is `client_id` as if it had crashed: its last
    /// will is published, its subscriptions end, and further calls on it fail with errors of
    /// kind `NotConnected`. Returns false if no such connection is open. This is how tests
    /// and demos simulate a node dying.
    pub fn disconnect(&self, client_id: &str) -> bool {
        let session = lock(&self.inner.sessions).get(client_id).and_then(Weak::upgrade);
        match session {
            Some(s) => {
                s.terminate(true, Some("disconnected by the bus"));
                true
            }
            None => false,
        }
    }

    /// Number of subscriptions on the bus (a queue group counts once).
    pub fn subscription_count(&self) -> usize {
        self.inner.read().trie.len()
    }

    /// Number of retained messages.
    pub fn retained_count(&self) -> usize {
        lock(&self.inner.read().retained).values().filter(|m| !m.is_expired()).count()
    }
}

impl BusInner {
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Routes> {
        self.routes.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, Routes> {
        self.routes.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a session under its client id and its inbox id; an older session with the
    /// same client id is taken over (cut, with its last will), as MQTT brokers do.
    pub(crate) fn register(&self, session: &Arc<Session>) {
        lock(&self.inboxes).insert(session.inbox_id.clone(), Arc::downgrade(session));
        let old = lock(&self.sessions).insert(session.client_id.clone(), Arc::downgrade(session));
        if let Some(old) = old.and_then(|w| w.upgrade()) {
            old.terminate(true, Some("taken over by a new connection with the same client id"));
        }
    }

    pub(crate) fn unregister(&self, session: &Session) {
        lock(&self.inboxes).remove(&session.inbox_id);
        let mut sessions = lock(&self.sessions);
        if let Some(w) = sessions.get(&session.client_id)
            && std::ptr::eq(w.as_ptr(), session)
        {
            sessions.remove(&session.client_id);
        }
    }

    /// Routes `message` to every matching subscription without waiting. Deliveries to full
    /// `Block` queues are returned for the caller to await outside the lock.
    pub(crate) fn route(&self, mut message: Message, from: &Meter) -> Routed {
        // Subscribers see the QoS it travelled with: the one asked for, or the bus's default.
        message.qos = Some(message.effective_qos(QoS::ExactlyOnce));
        // Replies to `_busbar/inbox/<id>` go straight to the requesting connection's inbox.
        // The first byte rules out almost every topic before any string comparison.
        let topic = message.topic.as_str();
        if let Some(id) = (topic.as_bytes().first() == Some(&b'_'))
            .then(|| topic.strip_prefix(INBOX_PREFIX))
            .flatten()
        {
            let requester = lock(&self.inboxes).get(id).and_then(Weak::upgrade);
            // The requesting connection counts a reply nobody waits for any more; one whose
            // connection is gone has nobody left to count it.
            let taken = requester.is_some_and(|s| {
                let correlation = message.correlation_id.clone();
                s.inbox.complete(correlation.as_deref(), message)
            });
            return Routed { reached: usize::from(taken), blocked: Vec::new() };
        }
        if message.is_expired() {
            from.expired();
            return Routed { reached: 0, blocked: Vec::new() };
        }
        let routes = self.read();
        if message.retain {
            let mut retained = lock(&routes.retained);
            if message.payload.is_empty_bytes() {
                retained.remove(&message.topic);
            } else {
                retained.insert(message.topic.clone(), message.clone());
            }
            // Live subscribers get it as a live message; the flag marks store deliveries.
            message.retain = false;
        }
        let targets = routes.targets(message.topic.as_str(), from);
        let reached = targets.len();
        let mut blocked = Vec::new();
        // The last target takes the original: a typed payload then has a single owner and
        // moves to its subscriber without serialisation.
        if let Some((last, rest)) = targets.split_last() {
            for target in rest {
                if let Offer::Full(m) = target.offer(message.clone()) {
                    blocked.push(((*target).clone(), m));
                }
            }
            if let Offer::Full(m) = last.offer(message) {
                blocked.push(((*last).clone(), m));
            }
        }
        Routed { reached, blocked }
    }

    /// Adds a plain subscription and seeds it with the retained messages it matches.
    pub(crate) fn add_one(&self, filter: &TopicFilter, entry: Entry) {
        let mut routes = self.write();
        {
            let mut retained = lock(&routes.retained);
            // Expired retained messages leave the store here, the one place that reads it.
            retained.retain(|_, m| !m.is_expired());
            let matching = retained.values().filter(|m| filter.matches(&m.topic)).cloned();
            let seeded: Vec<Message> = matching.collect();
            for m in seeded {
                if entry.target.seed(m) {
                    entry.target.meter().delivered();
                }
            }
        }
        routes.insert_one(filter, entry);
    }

    /// Adds a queue group member; groups share live traffic only (as MQTT shared
    /// subscriptions do), so nothing retained is seeded.
    pub(crate) fn add_member(
        &self,
        filter: &TopicFilter,
        group: Arc<str>,
        id: u64,
        target: Target,
    ) {
        self.write().insert_member(filter, group, id, target);
    }

    pub(crate) fn remove(&self, filter: &TopicFilter, group: Option<&Arc<str>>, id: u64) {
        self.write().remove(filter, group, id);
    }
}

/// Publishes `message` on `bus`, waiting for room in `Block` queues. Returns how many
/// subscriptions (or waiting requests) it reached.
pub(crate) async fn publish(bus: &BusInner, message: Message, from: &Meter) -> usize {
    from.published();
    bus.route(message, from).finish().await
}

/// Finishes a routing's waiting deliveries in the background (a will published from a
/// destructor, which cannot wait).
pub(crate) fn finish_later(routed: Routed) {
    if routed.blocked.is_empty() {
        return;
    }
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            routed.finish().await;
        });
    }
}
