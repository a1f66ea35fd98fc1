//! A bus: the router shared by every connection to it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{
    Arc, Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak,
};

use busbar_core::message::Message;
use busbar_core::queue::{Pushed, QueueSender};
use busbar_core::stats::Stats;
use busbar_core::transport::{ConnectOptions, ConnectionEvent};
use busbar_core::{Connection, Result};
use tokio::sync::oneshot;

use crate::connector::MemOptions;
use crate::routes::{Entry, Owner, Routes};
use crate::session::{MemTransport, Session};

/// Reply inboxes live under this prefix; a publish there goes straight to the waiting caller.
pub(crate) const INBOX_PREFIX: &str = "_busbar/inbox/";

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // No invariant of ours spans a panic point under these locks.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An in-process message bus. Cheap to clone; clones are the same bus.
#[derive(Clone)]
pub struct MemBus {
    pub(crate) inner: Arc<BusInner>,
}

pub(crate) struct BusInner {
    pub(crate) name: String,
    routes: RwLock<Routes>,
    inbox: Mutex<HashMap<u64, oneshot::Sender<Message>>>,
    sessions: Mutex<HashMap<String, Weak<Session>>>,
    next_id: AtomicU64,
}

/// A delivery that must wait for room in a `Block` queue, done after the router lock is
/// released.
pub(crate) struct Blocked {
    tx: QueueSender<Message>,
    message: Message,
    owner: Arc<Owner>,
}

/// What a publish reached.
pub(crate) struct Routed {
    /// Subscriptions reached (0 means nobody listens).
    pub(crate) reached: usize,
    /// Deliveries still to wait for.
    pub(crate) blocked: Vec<Blocked>,
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
                inbox: Mutex::new(HashMap::new()),
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
    /// will is published, its subscriptions end, and further calls on it fail with
    /// `NotConnected`. Returns false if no such connection is open. This is how tests and
    /// demos simulate a node dying.
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

    /// Registers a session under its client id; an older session with the same id is taken
    /// over (cut, with its last will), as MQTT brokers do.
    pub(crate) fn register(&self, client_id: &str, session: &Arc<Session>) {
        let old = lock(&self.sessions).insert(client_id.to_owned(), Arc::downgrade(session));
        if let Some(old) = old.and_then(|w| w.upgrade()) {
            old.terminate(true, Some("taken over by a new connection with the same client id"));
        }
    }

    pub(crate) fn unregister(&self, client_id: &str, session: &Session) {
        let mut sessions = lock(&self.sessions);
        if let Some(w) = sessions.get(client_id)
            && std::ptr::eq(w.as_ptr(), session)
        {
            sessions.remove(client_id);
        }
    }

    /// Registers a reply inbox; the returned topic suffix identifies it.
    pub(crate) fn open_inbox(&self) -> (u64, oneshot::Receiver<Message>) {
        let id = self.next_id();
        let (tx, rx) = oneshot::channel();
        lock(&self.inbox).insert(id, tx);
        (id, rx)
    }

    pub(crate) fn close_inbox(&self, id: u64) {
        lock(&self.inbox).remove(&id);
    }

    /// Routes `message` to every matching subscription without waiting. Deliveries to full
    /// `Block` queues are returned for the caller to await outside the lock.
    pub(crate) fn route(&self, mut message: Message, from: &Arc<Owner>) -> Routed {
        let publisher = &*from.stats;
        // The first byte rules out almost every topic before any string comparison.
        let topic = message.topic.as_str();
        if let Some(id) = (topic.as_bytes().first() == Some(&b'_'))
            .then(|| topic.strip_prefix(INBOX_PREFIX))
            .flatten()
        {
            let waiting = id.parse::<u64>().ok().and_then(|id| lock(&self.inbox).remove(&id));
            let delivered = match waiting {
                Some(tx) => tx.send(message).is_ok(),
                None => false,
            };
            if !delivered {
                Stats::bump(&publisher.late_replies);
            }
            return Routed { reached: usize::from(delivered), blocked: Vec::new() };
        }
        if message.is_expired() {
            Stats::bump(&publisher.expired);
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
            for entry in rest {
                offer(entry, message.clone(), &mut blocked);
            }
            offer(last, message, &mut blocked);
        }
        Routed { reached, blocked }
    }

    /// Adds a subscription and seeds it with the retained messages it matches (not for queue
    /// groups, which share live traffic only, as MQTT shared subscriptions do).
    pub(crate) fn add(&self, entry: Entry, group: Option<Arc<str>>) {
        let mut routes = self.write();
        let mut retained = lock(&routes.retained);
        // Expired retained messages leave the store here, the one place that reads it.
        retained.retain(|_, m| !m.is_expired());
        if group.is_none() {
            for m in retained.values().filter(|m| entry.filter.matches(&m.topic)) {
                if entry.tx.force_push(m.clone()).is_ok() {
                    Stats::bump(&entry.owner.stats.delivered);
                }
            }
        }
        drop(retained);
        routes.insert(entry, group);
    }

    pub(crate) fn remove(
        &self,
        filter: &busbar_core::TopicFilter,
        group: Option<&Arc<str>>,
        id: u64,
    ) {
        self.write().remove(filter, group, id);
    }
}

fn offer(entry: &Entry, message: Message, blocked: &mut Vec<Blocked>) {
    let owner = &entry.owner;
    match entry.tx.try_push(message) {
        Pushed::Queued => Stats::bump(&owner.stats.delivered),
        Pushed::Dropped { first_of_burst } => {
            Stats::bump(&owner.stats.dropped);
            if first_of_burst {
                slow_consumer(entry);
            }
        }
        Pushed::Full { item, first_of_burst } => {
            if first_of_burst {
                slow_consumer(entry);
            }
            blocked.push(Blocked { tx: entry.tx.clone(), message: item, owner: owner.clone() });
        }
        // The subscription is being dropped; its entry leaves the trie right after.
        Pushed::Closed(_) => {}
    }
}

fn slow_consumer(entry: &Entry) {
    let _ = entry.owner.events.send(ConnectionEvent::SlowConsumer {
        filter: entry.filter.as_str().to_owned(),
        dropped: entry.tx.dropped(),
    });
}

impl Blocked {
    /// Waits for room, then queues.
    pub(crate) async fn deliver(self) {
        if self.tx.push(self.message).await.is_ok() {
            Stats::bump(&self.owner.stats.delivered);
        }
    }
}

/// Publishes `message` on `bus`, waiting for room in `Block` queues.
pub(crate) async fn publish(bus: &BusInner, message: Message, from: &Arc<Owner>) -> Result<usize> {
    Stats::bump(&from.stats.published);
    let Routed { reached, blocked } = bus.route(message, from);
    for b in blocked {
        b.deliver().await;
    }
    Ok(reached)
}
