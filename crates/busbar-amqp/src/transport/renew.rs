//! The confirm channel of a link, renewed after a nack.
//!
//! RabbitMQ (seen on 3.10.8, a three-node cluster) nacks every message a channel routes to
//! a quorum queue once that channel's first publish there met the queue just as its
//! leader's node died: the channel keeps aiming at the dead leader, while a new channel on
//! the same connection, opened even half a second later, is acked. A publisher that fails
//! over to another node in that moment would otherwise have every later publish refused
//! for as long as it runs. So a nack retires the channel: the nacked publish is refused
//! (the broker said so), and later ones go on a new channel (one opened while the election
//! still runs can be stuck in turn, and is renewed on its first nack too). At most four
//! renewals a second, so that a queue that refuses everything on purpose
//! (`x-overflow: reject-publish`) costs no more than that.
//!
//! RabbitMQ keeps a publisher's order within one channel only. A nacked message may still
//! have reached other queues (a nack says the broker cannot vouch for every queue, not that
//! none has it), and so may the later publishes in flight on the retired channel: had the
//! next publish gone out on the new channel at once, it could arrive before them (CI saw a
//! plain subscriber get 60 before 57 and 58 in a cluster failover). So a renewal first
//! waits until everything written on the retired channel has its answer, and no publish is
//! written meanwhile: each holds the channel ([`ConfirmChannel::lease`]) until its frames
//! are queued, and the renewal takes it exclusively.

use std::time::Duration;

use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection};
use tokio::sync::{Mutex, RwLock, RwLockReadGuard};
use tokio::time::Instant;

/// How long a renewal waits for the answers to what was in flight on the retired channel
/// before it gives up on their order (a channel the broker no longer answers on is failing
/// with its connection, and the supervisor replaces both).
const RETIRED_SETTLE: Duration = Duration::from_secs(5);
/// The least time between two renewals.
const RENEW_AT_MOST_EVERY: Duration = Duration::from_millis(250);

/// A channel in confirm mode that can be swapped for a fresh one.
pub(super) struct ConfirmChannel {
    current: RwLock<Channel>,
    /// Held while renewing, with when the last renewal was.
    renewing: Mutex<Option<Instant>>,
}

impl ConfirmChannel {
    pub(super) fn new(channel: Channel) -> ConfirmChannel {
        ConfirmChannel { current: RwLock::new(channel), renewing: Mutex::new(None) }
    }

    /// The channel publishes go on now, held until the guard is dropped: a publish keeps it
    /// until its frames are queued, so that a renewal knows everything written before it.
    pub(super) async fn lease(&self) -> RwLockReadGuard<'_, Channel> {
        self.current.read().await
    }

    /// Whether the current channel is open (also while it is being renewed: a renewal
    /// ends with an open channel or leaves the failing one to the supervisor).
    pub(super) fn connected(&self) -> bool {
        self.current.try_read().map(|c| c.status().connected()).unwrap_or(true)
    }

    /// `nacked` had a publish nacked: unless it was renewed already (or the last renewal
    /// was less than a quarter of a second ago), later publishes go on a new channel of
    /// `conn`, once what was written on `nacked` has its answer. A channel that cannot be
    /// opened leaves the current one in place (the connection is failing, and its
    /// supervisor deals with that).
    pub(super) async fn renew_after_nack(&self, conn: &Connection, nacked: &Channel) {
        let mut last = self.renewing.lock().await;
        if last.is_some_and(|at| at.elapsed() < RENEW_AT_MOST_EVERY) {
            return;
        }
        let mut current = self.current.write().await;
        if current.id() != nacked.id() {
            return;
        }
        let settled = tokio::time::timeout(RETIRED_SETTLE, nacked.wait_for_confirms()).await;
        if !matches!(settled, Ok(Ok(_))) {
            tracing::debug!("a retired confirm channel left publishes unanswered");
        }
        let fresh = match conn.create_channel().await {
            Ok(channel) => channel,
            Err(e) => {
                tracing::debug!(error = %e, "no new confirm channel after a nack");
                return;
            }
        };
        if let Err(e) = fresh.confirm_select(ConfirmSelectOptions::default()).await {
            tracing::debug!(error = %e, "no new confirm channel after a nack");
            return;
        }
        tracing::debug!(retired = nacked.id(), fresh = fresh.id(), "confirm channel renewed");
        *current = fresh;
        *last = Some(Instant::now());
        drop(current);
        let retired = nacked.clone();
        tokio::spawn(async move {
            // What was unanswered after RETIRED_SETTLE gets the same time again.
            let _ = tokio::time::timeout(RETIRED_SETTLE, retired.wait_for_confirms()).await;
            let _ = retired.close(200, "busbar: confirm channel renewed".into()).await;
        });
    }
}
