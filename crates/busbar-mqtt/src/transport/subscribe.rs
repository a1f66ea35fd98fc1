//! Subscribing: SUBSCRIBE packets and their acknowledgements, the local subscriptions that
//! share a broker subscription, the reply subscription, and restoring everything after a
//! reconnect.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use busbar_core::Overflow;
use busbar_core::error::{OpError, SubscribeError, SubscribeErrorKind};
use busbar_core::message::QoS;
use busbar_core::queue::{QueueConfig, queue};
use busbar_core::topic::TopicFilter;
use busbar_core::transport::{Acknowledge, SubscribeOptions, Subscription, SubscriptionGuard};
use busbar_transport_kit::Target;
use tokio::sync::oneshot;

use super::state::{Ack, Shared, lock};

/// How long a subscribe waits for the broker's acknowledgement.
pub(super) const SUBACK_TIMEOUT: Duration = Duration::from_secs(10);

impl Shared {
    /// Asks the broker to subscribe `sub_id` (registered already) and, when `waiter` is
    /// given, reports its acknowledgement there.
    fn send_subscribe(
        &self,
        sub_id: usize,
        path: String,
        qos: QoS,
        no_local: bool,
        resend_retained: bool,
        waiter: Option<Ack>,
    ) -> Result<(), SubscribeError> {
        // Under the lock: the FIFO order must be the order requests enter rumqttc.
        let mut acks = lock(&self.subacks);
        self.client.try_subscribe(path, qos, no_local, resend_retained, sub_id)?;
        acks.sent_order.push_back(sub_id);
        if let Some(w) = waiter {
            acks.waiting.entry(sub_id).or_default().push(w);
        }
        Ok(())
    }

    async fn subscribe_and_wait(
        &self,
        sub_id: usize,
        path: String,
        qos: QoS,
        no_local: bool,
    ) -> Result<(), SubscribeError> {
        let (tx, rx) = oneshot::channel();
        self.send_subscribe(sub_id, path.clone(), qos, no_local, true, Some(tx))?;
        match tokio::time::timeout(SUBACK_TIMEOUT, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(OpError::closed()),
            Err(_) => Err(OpError::new(
                SubscribeErrorKind::TimedOut,
                format!(
                    "the broker did not acknowledge the subscription to {path} within {SUBACK_TIMEOUT:?}"
                ),
            )),
        }
    }

    /// Subscribes once to this connection's reply topic.
    pub(super) async fn ensure_reply_subscription(&self) -> Result<(), SubscribeError> {
        self.reply_sub
            .get_or_try_init(|| async {
                // Replies are taken before routing; the registry entry only keeps the broker
                // subscription alive and re-subscribed.
                let (tx, _rx) = queue(QueueConfig::new(1, Overflow::DropNewest));
                let filter = TopicFilter::from(self.reply_topic.clone());
                let target = Target::new(tx, filter.as_str(), &self.meter);
                let added = lock(&self.registry).add(
                    filter,
                    None,
                    QoS::AtLeastOnce,
                    false,
                    Acknowledge::OnHandOver,
                    (0, target),
                )?;
                let path = self.reply_topic.as_str().to_owned();
                self.subscribe_and_wait(added.sub_id, path, QoS::AtLeastOnce, false).await?;
                Ok::<_, SubscribeError>(added.sub_id)
            })
            .await
            .map(|_| ())
    }

    pub(super) fn on_outgoing_subscribe(&self, pkid: u16) {
        let mut acks = lock(&self.subacks);
        if let Some(sub_id) = acks.sent_order.pop_front() {
            acks.by_pkid.entry(pkid).or_default().push_back(sub_id);
        }
    }

    pub(super) fn on_suback(&self, pkid: u16, refused: Option<String>) {
        let mut acks = lock(&self.subacks);
        let Some(queue) = acks.by_pkid.get_mut(&pkid) else { return };
        let Some(sub_id) = queue.pop_front() else { return };
        if queue.is_empty() {
            acks.by_pkid.remove(&pkid);
        }
        self.last_subacked.store(sub_id, Ordering::Relaxed);
        let waiters = acks.waiting.remove(&sub_id).unwrap_or_default();
        drop(acks);
        for w in waiters {
            let _ = w.send(match &refused {
                None => Ok(()),
                Some(code) => {
                    Err(OpError::refused(format!("the broker refused the subscription: {code}")))
                }
            });
        }
    }

    /// After a reconnect: every subscription again, without a second copy of retained
    /// messages for subscriptions the broker kept. Returns the acknowledgements to wait for.
    pub(super) fn resubscribe_all(&self) -> Vec<oneshot::Receiver<Result<(), SubscribeError>>> {
        {
            let mut acks = lock(&self.subacks);
            acks.sent_order.clear();
            acks.by_pkid.clear();
        }
        let subs: Vec<(usize, String, QoS, bool)> = lock(&self.registry)
            .subs
            .iter()
            .map(|(id, s)| (*id, s.path(), s.qos, s.no_local))
            .collect();
        let mut acks = Vec::with_capacity(subs.len());
        for (id, path, qos, no_local) in subs {
            let (tx, rx) = oneshot::channel();
            match self.send_subscribe(id, path, qos, no_local, false, Some(tx)) {
                Ok(()) => acks.push(rx),
                Err(e) => tracing::warn!(error = %e, "re-subscription not queued"),
            }
        }
        acks
    }
}

/// Subscribes: a new local subscription, sharing the broker subscription of its (filter,
/// queue group) when one exists; resolves once the broker acknowledged a new one.
pub(super) async fn subscribe(
    s: &Arc<Shared>,
    options: SubscribeOptions,
) -> Result<Subscription, SubscribeError> {
    s.life.check()?;
    let id = s.next_id.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = queue(options.queue);
    let filter = options.filter.clone();
    let target = Target::new(tx, filter.as_str(), &s.meter);
    // What a persistent session delivered before this subscription existed comes first,
    // ahead of anything the new subscription brings: taken under the same lock that makes
    // the subscription visible to the receive path, so that no message routed to it
    // directly can overtake the kept ones.
    // A durable subscription is a shared subscription in the persistent session, so that
    // several processes can read one by its name, as on every other broker.
    let group = match &options.durable {
        Some(name) => Some(durable_group(name)),
        None => options.queue_group.clone(),
    };
    let by_receipt = options.acknowledge != Acknowledge::OnHandOver;
    // A broker keeps nothing at QoS 0 for a client that is away.
    let qos = match (&options.durable, options.qos) {
        (Some(_), QoS::AtMostOnce) => QoS::AtLeastOnce,
        (_, qos) => qos,
    };
    let (added, path, kept) = {
        let mut registry = lock(&s.registry);
        let added = registry.add(
            filter.clone(),
            group,
            qos,
            options.no_local,
            options.acknowledge,
            (id, target),
        )?;
        let path = registry.subs.get(&added.sub_id).map(|b| b.path()).unwrap_or_default();
        // A plain queue group shares live traffic only; a durable one is what the session
        // kept for it.
        let mut kept = Vec::new();
        if options.queue_group.is_none() {
            let taken = registry.take_orphans(&filter);
            if let Some(target) = registry.target(added.sub_id, id) {
                for (mut m, incoming) in taken {
                    if by_receipt {
                        for receipt in s.receipts(incoming, 1) {
                            m = m.with_receipt(receipt);
                        }
                    } else {
                        kept.push(incoming);
                    }
                    if target.seed(m) {
                        s.meter.delivered();
                    }
                }
            }
        }
        (added, path, kept)
    };
    for incoming in kept {
        s.acknowledge(incoming);
    }
    if added.new
        && let Err(e) = s.subscribe_and_wait(added.sub_id, path, qos, options.no_local).await
    {
        lock(&s.registry).remove(added.sub_id, id);
        return Err(e);
    }
    let weak = Arc::downgrade(s);
    let durable = options.durable.is_some();
    let guard = SubscriptionGuard::new(move || {
        let Some(s) = weak.upgrade() else { return };
        let path = lock(&s.registry).remove(added.sub_id, id);
        // A durable subscription stays in the session when its reader goes: what arrives
        // for it meanwhile is kept unacknowledged for its next reader, here or in the
        // session's next connection.
        if let Some(path) = path
            && !durable
            && s.life.is_open()
            && let Err(e) = s.client.try_unsubscribe(path)
        {
            tracing::debug!(error = %e, "unsubscribe not queued");
        }
    });
    Ok(Subscription::new(filter, rx, s.meter.stats().clone(), guard)
        .acknowledging(options.acknowledge))
}

/// The shared subscription group of durable subscription `name`.
fn durable_group(name: &str) -> String {
    format!("busbar.durable.{name}")
}
