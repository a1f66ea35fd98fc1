//! Confirming subscriptions. NATS has no SUBACK: a subscribe resolves once a message this
//! connection published to its own private sync subject (after the SUB) has come back. The
//! server handles a connection's commands in order, so by then the subscription is in place.
//! The same round trip, after a reconnect, tells when the re-subscriptions are in place.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use busbar_core::error::{ConnectError, OpError, SubscribeError, SubscribeErrorKind};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::pump::lock;

/// How long a subscribe waits for the server to confirm it.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// The sync round trips of one connection.
pub(super) struct SyncPoint {
    subject: String,
    next: AtomicU64,
    waiters: Mutex<BTreeMap<u64, oneshot::Sender<()>>>,
}

impl SyncPoint {
    /// Subscribes to a fresh private sync subject and confirms round trips as their echoes
    /// come back, until `shutdown`.
    pub(super) async fn start(
        client: &async_nats::Client,
        shutdown: CancellationToken,
    ) -> Result<Arc<SyncPoint>, ConnectError> {
        let subject = format!("$BUSBAR.sync.{}", uuid::Uuid::new_v4().simple());
        let subscriber = client.subscribe(subject.clone()).await.map_err(|e| {
            OpError::broker("nats", format!("cannot subscribe: {e}")).with_source(e)
        })?;
        let sync =
            Arc::new(SyncPoint { subject, next: AtomicU64::new(0), waiters: Mutex::default() });
        tokio::spawn(confirm(Arc::downgrade(&sync), subscriber, shutdown));
        Ok(sync)
    }

    /// Returns once the server has handled everything `client` (this connection) sent
    /// before; `shown` is the server's URL for errors.
    pub(super) async fn round_trip(
        &self,
        client: &async_nats::Client,
        shown: &str,
    ) -> Result<(), SubscribeError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.waiters).insert(n, tx);
        let round_trip = async {
            client
                .publish(self.subject.clone(), Bytes::copy_from_slice(&n.to_be_bytes()))
                .await
                .map_err(|e| SubscribeError::not_connected(shown, e))?;
            rx.await.map_err(|_| SubscribeError::closed())
        };
        let outcome = tokio::time::timeout(SYNC_TIMEOUT, round_trip).await;
        lock(&self.waiters).remove(&n);
        match outcome {
            Ok(result) => result,
            Err(_) => Err(OpError::new(
                SubscribeErrorKind::TimedOut,
                format!(
                    "the server at {shown} did not confirm the subscription within {SYNC_TIMEOUT:?}"
                ),
            )),
        }
    }

    /// Ends every round trip still waiting (the connection closed).
    pub(super) fn clear(&self) {
        lock(&self.waiters).clear();
    }
}

/// Completes sync round trips as their echoes come back (in order, so one echo completes
/// every earlier one too).
async fn confirm(
    sync: Weak<SyncPoint>,
    mut subscriber: async_nats::Subscriber,
    shutdown: CancellationToken,
) {
    loop {
        let m = tokio::select! {
            _ = shutdown.cancelled() => return,
            m = subscriber.next() => m,
        };
        let Some(m) = m else { return };
        let Some(sync) = sync.upgrade() else { return };
        let Ok(n) = <[u8; 8]>::try_from(m.payload.as_ref()).map(u64::from_be_bytes) else {
            continue;
        };
        let done = {
            let mut waiters = lock(&sync.waiters);
            let later = waiters.split_off(&(n + 1));
            std::mem::replace(&mut *waiters, later)
        };
        for tx in done.into_values() {
            let _ = tx.send(());
        }
    }
}

/// Returns once the server has handled everything `client` sent before, even while the
/// connection is closing (when the sync point above has stopped): a request to a subject
/// nobody listens on, which the server answers itself with "no responders" once it got
/// there. A flush is not enough: it only empties the client's buffer into the socket.
pub(super) async fn handled_by_server(
    client: &async_nats::Client,
    within: Duration,
) -> Result<(), String> {
    use async_nats::RequestErrorKind;
    let subject = client.new_inbox();
    let request = async_nats::Request::new().timeout(Some(within));
    match client.send_request(subject, request).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == RequestErrorKind::NoResponders => Ok(()),
        Err(e) if e.kind() == RequestErrorKind::TimedOut => {
            Err(format!("no answer from the server within {within:?}"))
        }
        Err(e) => Err(e.to_string()),
    }
}
