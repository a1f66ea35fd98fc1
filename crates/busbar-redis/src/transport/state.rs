//! What every part of the Redis transport shares: one connection's state. At the bottom of
//! the rooms (only the plain data of `routes` and `groups` is below it), so the supervisor,
//! the receive path, the list readers and the send path all read it without reaching into
//! each other.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use busbar_core::error::{Common, ConnectError, ConnectErrorKind, OpError, PublishError};
use busbar_core::message::Message;
use busbar_core::queue::QueueSender;
use busbar_core::topic::Topic;
use busbar_core::transport::ConnectionEvent;
use busbar_transport_kit::{Inbox, Lifecycle, Meter};
use redis::aio::MultiplexedConnection;
use tokio::sync::{mpsc, oneshot, watch};

use super::groups::GroupCache;
use super::routes::{Routes, SubKey};
use crate::settings::Settings;

/// The transport's name in errors.
pub(super) const KIND: &str = "redis";
/// Largest bulk string Redis accepts by default (`proto-max-bulk-len`), less room for the
/// envelope.
pub(super) const MAX_PAYLOAD: usize = 512 * 1024 * 1024 - 64 * 1024;

pub(super) use busbar_transport_kit::lock;

/// The main connection, as everyone sees it.
#[derive(Clone)]
pub(super) enum Link {
    Up(MultiplexedConnection),
    Down(String),
    Closed,
}

/// Work for the supervisor, which owns the main connection.
pub(super) enum Ctl {
    /// The main connection of this generation is gone.
    Lost(u64),
    /// No local subscription needs this Redis subscription any more.
    Unsubscribe(SubKey),
    /// No local member of this queue group remains.
    Leave(String),
}

/// What the publish queue carries to the forwarder.
pub(super) enum Outgoing {
    Publish(Message),
    /// A request: the forwarder reports how many receivers it reached.
    Request(Message, oneshot::Sender<Result<usize, PublishError>>),
    /// Answered once everything queued before it has been sent (a graceful close waits for
    /// it, so that publishes that returned are not lost).
    Flush(oneshot::Sender<()>),
}

/// One connection's state.
pub(super) struct Shared {
    pub(super) client_id: String,
    pub(super) settings: Settings,
    /// The counters and the event channel.
    pub(super) meter: Meter,
    pub(super) link: watch::Sender<Link>,
    /// The server in use and the client every new connection is made with (replaced on a
    /// failover and when a token is refreshed).
    pub(super) dial: Mutex<super::dial::Dialer>,
    pub(super) life: Lifecycle,
    pub(super) routes: Mutex<Routes>,
    /// Serialises SUBSCRIBE/UNSUBSCRIBE and group joins/leaves with the route changes they
    /// follow, so a late UNSUBSCRIBE can never undo a newer SUBSCRIBE of the same channel.
    pub(super) sub_lock: tokio::sync::Mutex<()>,
    pub(super) groups: Arc<RwLock<GroupCache>>,
    pub(super) outgoing: QueueSender<Outgoing>,
    pub(super) ctl: mpsc::UnboundedSender<Ctl>,
    /// Bumped on every new main connection, so a disconnect report from an old one is
    /// ignored.
    pub(super) generation: AtomicU64,
    /// Requests waiting for their replies, which arrive on the list `inbox_key`.
    pub(super) inbox: Inbox,
    /// The reply topic requests name: `_busbar/inbox/<32 random hex digits>`.
    pub(super) inbox_topic: Topic,
    /// The list replies to `inbox_topic` are pushed to: `busbar:` and the topic.
    pub(super) inbox_key: String,
    pub(super) inbox_started: AtomicBool,
    pub(super) next_sub: AtomicU64,
    /// Acknowledgements on their way, and the durable stream readers (a close waits for
    /// them to give back what was not acknowledged).
    pub(super) acks: Arc<busbar_transport_kit::acks::AcksInFlight>,
}

/// The list replies to `reply_to` (a reply inbox topic) go to.
pub(super) fn inbox_key(reply_to: &str) -> String {
    format!("busbar:{reply_to}")
}

impl Shared {
    pub(super) fn routes(&self) -> MutexGuard<'_, Routes> {
        lock(&self.routes)
    }

    /// Turns a failed connection attempt into the error a user can act on.
    pub(super) fn connect_error(&self, e: redis::RedisError) -> ConnectError {
        let url = &self.settings.redacted_url;
        let (kind, message) = if is_refusal(&e) {
            (
                ConnectErrorKind::Refused,
                format!("{url} refused the credentials (wrong user name, password or token): {e}"),
            )
        } else if is_tls(&e) {
            (ConnectErrorKind::Tls, format!("TLS with {url} failed: {e}"))
        } else if e.is_timeout() {
            (ConnectErrorKind::TimedOut, format!("not connected to {url}: {e}"))
        } else if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() {
            (ConnectErrorKind::Unreachable, format!("not connected to {url}: {e}"))
        } else {
            (ConnectErrorKind::Broker, format!("connecting to {url}: {e}"))
        };
        OpError::new(kind, message).with_source(e)
    }

    /// A failed command of a message operation (`what`: "subscribing to x"), as that
    /// operation's error.
    pub(super) fn op_error<K: Copy + From<Common>>(
        &self,
        what: &str,
        e: redis::RedisError,
    ) -> OpError<K> {
        let error = if e.is_timeout() {
            OpError::new(
                Common::TimedOut.into(),
                format!("{what}: the Redis server did not answer in time: {e}"),
            )
        } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
            self.life.not_connected(format!("{what}: {e}"))
        } else if is_refusal(&e) {
            OpError::refused(format!("the Redis server refused {what}: {e}"))
        } else {
            OpError::broker(KIND, format!("{what}: {e}"))
        };
        error.with_source(e)
    }

    /// The main connection, if it is up now.
    pub(super) fn current<K: Copy + From<Common>>(
        &self,
    ) -> Result<MultiplexedConnection, OpError<K>> {
        match &*self.link.borrow() {
            Link::Up(c) => Ok(c.clone()),
            Link::Down(reason) => Err(self.life.not_connected(reason)),
            Link::Closed => Err(OpError::closed()),
        }
    }

    /// The main connection, if it is up now (for work nobody waits on).
    pub(super) fn live(&self) -> Option<MultiplexedConnection> {
        match &*self.link.borrow() {
            Link::Up(c) => Some(c.clone()),
            Link::Down(_) | Link::Closed => None,
        }
    }

    /// Waits until the main connection is up; `None` once the transport is closed.
    pub(super) async fn wait_up(&self) -> Option<MultiplexedConnection> {
        let mut rx = self.link.subscribe();
        loop {
            match &*rx.borrow_and_update() {
                Link::Up(c) => return Some(c.clone()),
                Link::Closed => return None,
                Link::Down(_) => {}
            }
            if rx.changed().await.is_err() {
                return None;
            }
        }
    }

    /// Stops everything: tasks, subscriptions, requests waiting for replies.
    pub(super) fn shutdown(&self) {
        if !self.life.end() {
            return;
        }
        self.link.send_replace(Link::Closed);
        self.routes().clear();
        self.inbox.fail_all(OpError::closed);
        self.meter.announce(ConnectionEvent::Closed);
    }
}

/// The server refused the credentials or the permission (`AUTH`, an ACL).
fn is_refusal(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"))
}

/// The TLS handshake failed (rustls's error inside the I/O error), or the certificate did
/// not verify.
fn is_tls(e: &redis::RedisError) -> bool {
    let io = std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>());
    io.and_then(|io| io.get_ref()).is_some_and(|inner| inner.is::<rustls::Error>())
        || e.to_string().to_ascii_lowercase().contains("certificate")
}
