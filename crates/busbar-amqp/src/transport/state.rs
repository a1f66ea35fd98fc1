//! What every part of the AMQP transport shares: one connection's state, and the live
//! [`Link`] user calls go through. At the bottom of the crate's rooms, so the supervisor,
//! the consumers, the send path and subscribing all read it without reaching into each
//! other.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use busbar_core::error::{Common, OpError};
use busbar_core::topic::TopicFilter;
use busbar_core::transport::Acknowledge;
use busbar_transport_kit::login::Login;
use busbar_transport_kit::{Fanout, Inbox, Lifecycle, Meter};
use lapin::Channel;
use lapin::types::ShortString;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::settings::Settings;

pub(super) use busbar_transport_kit::lock;

/// One live connection and its shared channels.
pub(super) struct Link {
    pub(super) generation: u64,
    pub(super) conn: lapin::Connection,
    /// Publishes at QoS 0.
    pub(super) plain: Channel,
    /// Publishes at QoS 1 and 2, in confirm mode (renewed after a nack: see `renew`).
    pub(super) confirm: super::renew::ConfirmChannel,
    /// Requests: consumes direct reply-to and publishes requests (both must be on one
    /// channel), in confirm mode with `mandatory`, so an unroutable request is returned.
    pub(super) rpc: Channel,
    /// Confirmed publishes written here and not yet settled.
    pub(super) unsettled: Arc<super::order::Unsettled>,
}

/// What local subscriptions must agree on to share one broker queue and consumer: the
/// filter, the queue group, the durable subscription's name, and when messages are
/// acknowledged.
pub(super) type SubKey = (String, Option<String>, Option<String>, Acknowledge);

/// A subscription attached to a link.
pub(super) struct Active {
    pub(super) generation: u64,
    pub(super) channel: Channel,
    pub(super) tag: ShortString,
    pub(super) task: JoinHandle<()>,
    /// Tells the consumer task to acknowledge what it handed over and end (a clean
    /// unsubscribe, so nothing handed over comes again).
    pub(super) stop: CancellationToken,
}

/// One broker queue and consumer, shared by this connection's local subscriptions with the
/// same filter and queue group. Sharing keeps deliveries to them in one order (one consumer
/// task offers each message to all of them in turn) and a group's message to one member.
pub(super) struct SubEntry {
    pub(super) key: SubKey,
    pub(super) filter: TopicFilter,
    /// Empty for a named queue, which is bound to nothing.
    pub(super) binding: String,
    pub(super) queue: String,
    /// A queue group's queue, shared with other connections: never deleted by one member.
    pub(super) shared_queue: bool,
    pub(super) prefetch: u16,
    /// A durable subscription's queue: durable, kept while nobody reads it.
    pub(super) durable: bool,
    /// When deliveries are acknowledged.
    pub(super) acknowledge: Acknowledge,
    /// The local subscriptions, read by the consumer task.
    pub(super) fanout: Arc<Mutex<Fanout>>,
    pub(super) active: Option<Active>,
}

/// One connection's state.
pub(super) struct Shared {
    pub(super) client_id: String,
    /// Distinguishes this connection's queues from an earlier one with the same client id.
    pub(super) nonce: String,
    pub(super) settings: Settings,
    pub(super) exchange: ShortString,
    pub(super) link: watch::Sender<Option<Arc<Link>>>,
    /// Held while attaching subscriptions, so a subscription is attached exactly once per
    /// link whether it comes before, during or after the supervisor's set-up.
    pub(super) topology: tokio::sync::Mutex<()>,
    pub(super) subs: Mutex<HashMap<u64, SubEntry>>,
    /// Requests waiting for their replies, tagged with the generation of the link they went
    /// out on (direct reply-to lives and dies with its channel).
    pub(super) inbox: Inbox,
    pub(super) next_id: AtomicU64,
    pub(super) meter: Meter,
    pub(super) life: Lifecycle,
    /// Generations a consumer or publisher found broken: the supervisor reconnects.
    pub(super) trouble: mpsc::UnboundedSender<u64>,
    /// Unsubscriptions in progress; publishes wait for them so nothing published after a
    /// subscription was dropped reaches it.
    pub(super) teardowns: AtomicUsize,
    pub(super) teardown_done: Notify,
    /// The user name and password the next connection presents (a fresh token swapped in).
    pub(super) login: Mutex<Login>,
    /// Acknowledgements of deliveries on their way to the broker.
    pub(super) acks: Arc<busbar_transport_kit::AcksInFlight>,
    /// The publishes not yet written, in the order they were made.
    pub(super) turnstile: Arc<super::order::Turnstile>,
    /// Withdrawn links with publishes not yet settled, which newer publishes wait for.
    pub(super) settling: Mutex<Vec<Arc<super::order::Unsettled>>>,
    /// The broker in use, and the next to try when it is lost.
    pub(super) servers: Mutex<busbar_transport_kit::Servers>,
}

impl Shared {
    pub(super) fn current(&self) -> Option<Arc<Link>> {
        self.link.borrow().clone()
    }

    /// The live link, waiting until `deadline` for one newer than `after`.
    pub(super) async fn link_after<K: Copy + From<Common>>(
        &self,
        after: u64,
        deadline: Instant,
    ) -> Result<Arc<Link>, OpError<K>> {
        let mut rx = self.link.subscribe();
        let wait = rx.wait_for(|l| l.as_ref().is_some_and(|l| l.generation > after));
        tokio::select! {
            _ = self.life.token().cancelled() => Err(OpError::closed()),
            r = tokio::time::timeout_at(deadline, wait) => match r {
                Ok(Ok(link)) => link.clone().ok_or_else(OpError::closed),
                Ok(Err(_)) => Err(OpError::closed()),
                Err(_) => Err(self.life.not_connected(format!(
                    "the connection did not come back within {:?}",
                    self.settings.reconnect_wait
                ))),
            }
        }
    }

    /// The deadline of a call that may wait for the connection to come back.
    pub(super) fn reconnect_deadline(&self) -> Instant {
        let now = Instant::now();
        // Past what an Instant can hold: as good as never (as tokio's own far future).
        now.checked_add(self.settings.reconnect_wait)
            .unwrap_or_else(|| now + std::time::Duration::from_secs(86_400 * 365 * 30))
    }

    /// Waits until no unsubscription is in progress.
    pub(super) async fn settle_teardowns(&self) {
        while self.teardowns.load(Ordering::Acquire) > 0 {
            let notified = self.teardown_done.notified();
            if self.teardowns.load(Ordering::Acquire) == 0 {
                break;
            }
            notified.await;
        }
    }
}
