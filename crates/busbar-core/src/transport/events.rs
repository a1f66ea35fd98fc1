//! Connection events: state changes and slow-consumer warnings a user can watch.

use tokio::sync::broadcast;

/// Something that happened to a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// The first connection was established.
    Connected {
        /// The server in use, as `host:port` (one of a server list, or the one a cluster
        /// put the connection on).
        server: String,
    },
    /// The connection was lost; the transport is trying to restore it.
    Disconnected {
        /// Why, as the transport saw it.
        reason: String,
    },
    /// The connection came back and subscriptions were restored.
    Reconnected {
        /// The server in use now, as `host:port`: after a failover, another one of the list
        /// (or of the cluster) than before.
        server: String,
    },
    /// A subscription's queue overflowed: its consumer is slower than its publishers.
    /// Reported once per burst; the exact count is in the subscription and the stats.
    SlowConsumer {
        /// The subscription's filter.
        filter: String,
        /// Messages discarded by that subscription so far (0 under `Block`, where the
        /// publisher waits instead).
        dropped: u64,
    },
    /// The connection was closed for good.
    Closed,
}

/// Receives a connection's events. Each receiver sees every event sent after it was
/// created (so `Connected`, sent while connecting, is seen only by transports that connect in
/// the background); one that falls more than 256 events behind skips the oldest. After
/// `Closed` nothing more comes: stop reading there, since the stream itself ends only when
/// the last handle to the connection is gone.
pub struct ConnectionEvents {
    rx: broadcast::Receiver<ConnectionEvent>,
}

impl ConnectionEvents {
    /// Wraps a broadcast receiver (for transport implementations).
    pub fn new(rx: broadcast::Receiver<ConnectionEvent>) -> Self {
        ConnectionEvents { rx }
    }

    /// The channel transports send events on.
    pub fn channel() -> broadcast::Sender<ConnectionEvent> {
        broadcast::channel(256).0
    }

    /// The next event if one has been sent, without waiting.
    pub fn try_next(&mut self) -> Option<ConnectionEvent> {
        loop {
            match self.rx.try_recv() {
                Ok(ev) => return Some(ev),
                Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    }

    /// The next event; `None` once the connection is gone.
    pub async fn next(&mut self) -> Option<ConnectionEvent> {
        loop {
            match self.rx.recv().await {
                Ok(ev) => return Some(ev),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
