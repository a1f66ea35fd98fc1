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
//! (`x-overflow: reject-publish`) costs no more than that; a retired channel is closed once
//! what was in flight on it has had time to settle.

use std::sync::RwLock;
use std::time::Duration;

use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection};
use tokio::sync::Mutex;
use tokio::time::Instant;

/// How long a retired channel stays open for the confirms of publishes in flight on it.
const RETIRED_GRACE: Duration = Duration::from_secs(10);
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

    /// The channel publishes go on now.
    pub(super) fn get(&self) -> Channel {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `nacked` had a publish nacked: unless it was renewed already (or the last renewal
    /// was less than a quarter of a second ago), later publishes go on a new channel of `conn`. A channel that
    /// cannot be opened leaves the current one in place (the connection is failing, and
    /// its supervisor deals with that).
    pub(super) async fn renew_after_nack(&self, conn: &Connection, nacked: &Channel) {
        let mut last = self.renewing.lock().await;
        if self.get().id() != nacked.id()
            || last.is_some_and(|at| at.elapsed() < RENEW_AT_MOST_EVERY)
        {
            return;
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
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        *last = Some(Instant::now());
        let retired = nacked.clone();
        tokio::spawn(async move {
            tokio::time::sleep(RETIRED_GRACE).await;
            let _ = retired.close(200, "busbar: confirm channel renewed".into()).await;
        });
    }
}
