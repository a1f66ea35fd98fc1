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

    /// Asks the broker to unsubscribe `path`; when `waiter` is given, reports its
    /// acknowledgement there.
    fn send_unsubscribe(&self, path: String, waiter: Option<Ack>) -> Result<(), SubscribeError> {
        // Under the lock: the FIFO order must be the order requests enter rumqttc.
        let mut acks = lock(&self.unsubacks);
        self.client.try_unsubscribe(path)?;
        acks.sent_order.push_back(waiter);
        Ok(())
    }

    pub(super) fn on_outgoing_unsubscribe(&self, pkid: u16) {
        let mut acks = lock(&self.unsubacks);
        if let Some(Some(waiter)) = acks.sent_order.pop_front() {
            acks.by_pkid.insert(pkid, waiter);
        }
    }

    pub(super) fn on_unsuback(&self, pkid: u16, refused: Option<String>) {
        let Some(waiter) = lock(&self.unsubacks).by_pkid.remove(&pkid) else { return };
        let _ = waiter.send(match refused {
            None => Ok(()),
            Some(code) => {
                Err(OpError::refused(format!("the broker refused to unsubscribe: {code}")))
            }
        });
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
        // An UNSUBSCRIBE the lost connection left unanswered is not known to have happened:
        // whoever waits for it is told so (dropping the waiter) and may ask again.
        *lock(&self.unsubacks) = Default::default();
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
            && let Err(e) = s.send_unsubscribe(path, None)
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

/// Removes the durable subscription `name` of `filter` from this connection's persistent
/// session (MQTT keeps it nowhere else): UNSUBSCRIBE, awaited to its UNSUBACK; what the
/// session had kept for it is acknowledged and dropped, and so is what the broker still
/// sends for it afterwards, until it is subscribed again.
pub(super) async fn remove_durable(
    s: &Arc<Shared>,
    name: &str,
    filter: &TopicFilter,
) -> Result<(), SubscribeError> {
    s.life.check()?;
    let group = durable_group(name);
    let in_use = lock(&s.registry)
        .subs
        .values()
        .any(|b| b.group.as_deref() == Some(group.as_str()) && &b.filter == filter);
    if in_use {
        return Err(busbar_transport_kit::durable::in_use(name, filter));
    }
    let path = format!("$share/{group}/{}", filter.as_str());
    let (tx, rx) = oneshot::channel();
    s.send_unsubscribe(path.clone(), Some(tx))?;
    match tokio::time::timeout(SUBACK_TIMEOUT, rx).await {
        Ok(Ok(result)) => result?,
        Ok(Err(_)) => {
            return Err(OpError::new(
                SubscribeErrorKind::NotConnected,
                format!(
                    "the connection to {} was lost before the broker confirmed removing the \
                     durable subscription {name:?}; try again",
                    s.settings.shown
                ),
            ));
        }
        Err(_) => {
            return Err(OpError::new(
                SubscribeErrorKind::TimedOut,
                format!("the broker did not confirm removing {path} within {SUBACK_TIMEOUT:?}"),
            ));
        }
    }
    // Everything the broker sent before its UNSUBACK has been dispatched by now (the
    // supervisor handles packets in order): what it kept for the subscription is among the
    // orphans. What the session still has queued for it comes after, and is acknowledged
    // as it comes (nobody's, see `forget_durable`).
    let dropped = lock(&s.registry).forget_durable(filter);
    for (_, incoming) in dropped {
        s.acknowledge(incoming);
    }
    s.through_the_session(SUBACK_TIMEOUT).await.map_err(|e| {
        OpError::new(
            e.kind(),
            format!(
                "the durable subscription {name:?} was removed, but what the session still \
                 held for it may come to this client's next connection: {e}"
            ),
        )
    })
}

impl Shared {
    /// Returns once a message this connection sent to itself came back through its session:
    /// the broker queues a client's messages in order, so everything queued for the session
    /// before it has arrived (and was dispatched) by then.
    async fn through_the_session(&self, within: Duration) -> Result<(), SubscribeError> {
        self.ensure_reply_subscription().await?;
        let mut pending = self.inbox.register(0);
        let mut probe = busbar_core::Message::new(self.reply_topic.clone(), Vec::new())
            .with_qos(QoS::AtLeastOnce);
        probe.correlation_id = Some(bytes::Bytes::copy_from_slice(pending.id().as_bytes()));
        let round_trip = async {
            self.send(probe)
                .await
                .map_err(|e| OpError::new(SubscribeErrorKind::Broker, e.to_string()))?;
            pending
                .reply()
                .await
                .map_err(|e| OpError::new(SubscribeErrorKind::Broker, e.to_string()))
        };
        match tokio::time::timeout(within, round_trip).await {
            Ok(result) => result.map(|_| ()),
            Err(_) => Err(OpError::new(
                SubscribeErrorKind::TimedOut,
                format!("nothing came back through the session within {within:?}"),
            )),
        }
    }
}
