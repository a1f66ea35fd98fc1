//! Subscribing: the broker queue of a (filter, queue group) and the local subscriptions that
//! share it, attaching it to a link (declare, bind, consume) and detaching it when the last
//! local subscription goes, and how its queue is named.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busbar_core::Overflow;
use busbar_core::error::{OpError, SubscribeError, SubscribeErrorKind};
use busbar_core::queue::queue;
use busbar_core::topic::TopicFilter;
use busbar_core::topic::native::amqp_binding_key;
use busbar_core::transport::{SubscribeOptions, Subscription, SubscriptionGuard};
use busbar_transport_kit::{Fanout, Target};
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};

use super::consume::{Sink, consume};
use super::failure::{TRANSPORT, op_error};
use super::state::{Active, Link, Shared, SubEntry, lock};
use crate::settings::DurableQueues;
use tokio_util::sync::CancellationToken;

/// How long unsubscribing (consumer cancel, queue delete) may hold up later publishes.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// `name` as an AMQP short string, or the filter cannot be used on this broker.
fn short_name(what: &str, name: &str) -> Result<ShortString, SubscribeError> {
    ShortString::try_new(name).map_err(|_| {
        OpError::new(
            SubscribeErrorKind::InvalidFilter,
            format!("the {what} {name:?} is too long: AMQP names hold at most 255 bytes"),
        )
    })
}

/// Subscribes: a new local subscription, sharing the broker queue of its (filter, queue
/// group) when this connection has one; resolves once that queue is consumed.
pub(super) async fn subscribe(
    s: &Arc<Shared>,
    options: SubscribeOptions,
) -> Result<Subscription, SubscribeError> {
    s.life.check()?;
    if options.no_local {
        return Err(OpError::unsupported(TRANSPORT, "no-local subscriptions"));
    }
    let filter = options.filter.clone();
    // A named queue is consumed as it is, bound to nothing (an empty binding).
    let named = filter.queue_name();
    let binding = match &named {
        Some(name) => {
            short_name("queue name", name)?;
            String::new()
        }
        None => amqp_binding_key(&filter)?,
    };
    short_name("binding key", &binding)?;
    let key = (
        filter.as_str().to_owned(),
        options.queue_group.clone(),
        options.durable.clone(),
        options.acknowledge,
    );
    let local = s.next_id.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = queue(options.queue);
    let target = Target::new(tx, filter.as_str(), &s.meter);
    let prefetch = match options.queue.overflow {
        // The broker holds back what the queue cannot take: nothing is dropped.
        Overflow::Block => options.queue.capacity.clamp(1, usize::from(u16::MAX)) as u16,
        // Drop policies (and any policy that is not `Block`) take everything and let the
        // queue's policy decide.
        _ => s.settings.prefetch,
    };
    let id = {
        let mut subs = lock(&s.subs);
        match subs.iter().find(|(_, e)| e.key == key).map(|(id, _)| *id) {
            Some(id) => {
                if let Some(e) = subs.get(&id) {
                    lock(&e.fanout).add(local, target);
                }
                id
            }
            None => {
                let id = s.next_id.fetch_add(1, Ordering::Relaxed);
                // A named queue is shared like a group's: each message reaches one
                // subscriber, and no subscriber deletes it.
                let (queue_name, shared_queue) = match named {
                    Some(name) => (name, true),
                    None => queue_name(s, &options, &binding, id),
                };
                let durable = options.durable.is_some();
                let mut fanout = Fanout::new(shared_queue);
                fanout.add(local, target);
                subs.insert(
                    id,
                    SubEntry {
                        key,
                        filter: filter.clone(),
                        binding,
                        queue: queue_name,
                        shared_queue,
                        prefetch,
                        durable,
                        acknowledge: options.acknowledge,
                        fanout: Arc::new(Mutex::new(fanout)),
                        active: None,
                    },
                );
                id
            }
        }
    };
    // Removes the local subscription on failure, and unsubscribes once it is dropped.
    let weak = Arc::downgrade(s);
    let guard = SubscriptionGuard::new(move || {
        if let Some(s) = weak.upgrade() {
            s.detach(id, local);
        }
    });
    // Also when joining an existing broker subscription: the topology lock makes sure
    // it is attached (by whoever made it) before this subscribe returns.
    let deadline = s.reconnect_deadline();
    loop {
        {
            let _topology = s.topology.lock().await;
            if let Some(link) = s.current() {
                s.attach(&link, id).await?;
                break;
            }
        }
        s.link_after(0, deadline).await?;
    }
    Ok(Subscription::new(filter, rx, s.meter.stats().clone(), guard)
        .acknowledging(options.acknowledge))
}

impl Shared {
    /// Declares, binds and consumes subscription `id` on `link`. Call with the topology
    /// lock held.
    pub(super) async fn attach(
        self: &Arc<Self>,
        link: &Link,
        id: u64,
    ) -> Result<(), SubscribeError> {
        let Some((queue_name, binding, prefetch, fanout, filter, durable, acknowledge)) =
            lock(&self.subs)
                .get(&id)
                .filter(|s| {
                    // Attached to this link already.
                    s.active.as_ref().is_none_or(|a| a.generation != link.generation)
                })
                .map(|s| {
                    (
                        s.queue.clone(),
                        s.binding.clone(),
                        s.prefetch,
                        s.fanout.clone(),
                        s.filter.clone(),
                        s.durable,
                        s.acknowledge,
                    )
                })
        else {
            return Ok(());
        };
        let fail =
            |what: &str, e: lapin::Error| op_error(&format!("{what} for {}", filter.as_str()), e);
        let channel = link.conn.create_channel().await.map_err(|e| fail("opening a channel", e))?;
        let setup = async {
            channel
                .basic_qos(prefetch, BasicQosOptions::default())
                .await
                .map_err(|e| fail("setting the prefetch", e))?;
            let mut args = FieldTable::default();
            let mut declare = QueueDeclareOptions::default();
            if durable {
                // Kept on disk (and for a quorum queue on a majority of a cluster's nodes)
                // while nobody reads it, until it is deleted on the broker.
                declare.durable = true;
                let kind = match self.settings.durable_queues {
                    DurableQueues::Classic => "classic",
                    DurableQueues::Quorum => "quorum",
                };
                args.insert("x-queue-type".into(), AMQPValue::LongString(kind.into()));
            } else {
                let expiry_ms = self.settings.queue_expiry.as_millis().min(i64::MAX as u128) as i64;
                args.insert("x-expires".into(), AMQPValue::LongLongInt(expiry_ms));
            }
            let queue = short_name("queue name", &queue_name)?;
            channel
                .queue_declare(queue.clone(), declare, args)
                .await
                .map_err(|e| fail("declaring the queue", e))?;
            // Named queues have no binding: they are reached through the default exchange.
            if !binding.is_empty() {
                let key = short_name("binding key", &binding)?;
                channel
                    .queue_bind(
                        queue.clone(),
                        self.exchange.clone(),
                        key,
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .map_err(|e| fail("binding the queue", e))?;
            }
            let tag = ShortString::from(format!("busbar-{}-{id}-{}", self.nonce, link.generation));
            let consumer = channel
                .basic_consume(
                    queue,
                    tag.clone(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| fail("consuming", e))?;
            Ok::<_, SubscribeError>((tag, consumer))
        };
        let (tag, consumer) = match setup.await {
            Ok(v) => v,
            Err(e) => {
                let _ = channel.close(200, "busbar: subscription failed".into()).await;
                return Err(e);
            }
        };
        let sink = Sink {
            fanout,
            filter,
            acknowledge,
            meter: self.meter.clone(),
            acks: self.acks.clone(),
            trouble: self.trouble.clone(),
            generation: link.generation,
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(consume(consumer, sink, stop.clone()));
        let orphan = {
            let mut subs = lock(&self.subs);
            match subs.get_mut(&id) {
                Some(entry) => {
                    if let Some(old) = entry.active.take() {
                        old.task.abort();
                    }
                    entry.active =
                        Some(Active { generation: link.generation, channel, tag, task, stop });
                    None
                }
                None => Some((channel, task)),
            }
        };
        if let Some((channel, task)) = orphan {
            // Unsubscribed meanwhile.
            task.abort();
            let _ = channel.close(200, "busbar: unsubscribed".into()).await;
        }
        Ok(())
    }

    /// Ends local subscription `local` of broker subscription `id`; when it was the last,
    /// cancels the consumer (publishes wait for that), deletes a private queue and closes
    /// the channel.
    fn detach(self: &Arc<Self>, id: u64, local: u64) {
        let mut entry = {
            let mut subs = lock(&self.subs);
            let Some(entry) = subs.get(&id) else { return };
            if !lock(&entry.fanout).remove(local) {
                return;
            }
            match subs.remove(&id) {
                Some(e) => e,
                None => return,
            }
        };
        let link = self.current();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            if let Some(a) = entry.active {
                a.task.abort();
            }
            return;
        };
        self.teardowns.fetch_add(1, Ordering::AcqRel);
        let shared = self.clone();
        let consumer_task = entry.active.as_ref().map(|a| a.task.abort_handle());
        runtime.spawn(async move {
            let work = async {
                // Acknowledgements already made go out on the channel before it closes.
                shared.acks.idle().await;
                if let Some(active) = &mut entry.active {
                    // What the consumer handed over is acknowledged before it ends, so a
                    // clean unsubscribe never has it given again.
                    active.stop.cancel();
                    let _ = (&mut active.task).await;
                    // cancel-ok means the queue has dropped the consumer: nothing published
                    // from now on reaches it.
                    let _ = active
                        .channel
                        .basic_cancel(active.tag.clone(), BasicCancelOptions::default())
                        .await;
                    if !entry.shared_queue
                        && let Ok(q) = ShortString::try_new(entry.queue.clone())
                    {
                        let _ = active.channel.queue_delete(q, QueueDeleteOptions::default()).await;
                    }
                    let _ = active.channel.close(200, "busbar: unsubscribed".into()).await;
                } else if !entry.shared_queue
                    && let Some(link) = &link
                    && let Ok(q) = ShortString::try_new(entry.queue.clone())
                {
                    let _ = link.plain.queue_delete(q, QueueDeleteOptions::default()).await;
                }
            };
            let _ = tokio::time::timeout(TEARDOWN_TIMEOUT, work).await;
            if let Some(task) = consumer_task {
                task.abort();
            }
            shared.teardowns.fetch_sub(1, Ordering::AcqRel);
            shared.teardown_done.notify_waiters();
        });
    }
}

/// The queue of a new broker subscription, and whether it is a queue group's (shared).
fn queue_name(s: &Shared, options: &SubscribeOptions, binding: &str, id: u64) -> (String, bool) {
    if let Some(name) = &options.durable {
        return (durable_queue_name(name, binding), true);
    }
    match &options.queue_group {
        Some(group) => {
            let name = format!("busbar.group.{group}.{binding}");
            if name.len() <= 255 {
                (name, true)
            } else {
                let hash = fnv1a(format!("{group}\0{binding}").as_bytes());
                (format!("busbar.group.{hash:016x}"), true)
            }
        }
        None => {
            let name = format!("busbar.sub.{}.{}.{id}", s.client_id, s.nonce);
            if name.len() <= 255 {
                (name, false)
            } else {
                (format!("busbar.sub.{}.{id}", uuid::Uuid::new_v4().simple()), false)
            }
        }
    }
}

/// The queue of the durable subscription `name` bound with `binding`.
fn durable_queue_name(name: &str, binding: &str) -> String {
    let queue = format!("busbar.durable.{name}.{binding}");
    if queue.len() <= 255 {
        queue
    } else {
        let hash = fnv1a(format!("{name}\0{binding}").as_bytes());
        format!("busbar.durable.{name}.{hash:016x}")
    }
}

/// Deletes the queue of the durable subscription `name` of `filter`, with what it kept. A
/// subscriber elsewhere sees its consumer cancelled and declares the queue again, empty; one
/// of this connection is refused, so the deletion never cancels a consumer here.
pub(super) async fn remove_durable(
    s: &Arc<Shared>,
    name: &str,
    filter: &TopicFilter,
) -> Result<(), SubscribeError> {
    s.life.check()?;
    let binding = amqp_binding_key(filter)?;
    let queue = durable_queue_name(name, &binding);
    if lock(&s.subs).values().any(|e| e.queue == queue) {
        return Err(busbar_transport_kit::durable::in_use(name, filter));
    }
    let queue = short_name("queue name", &queue)?;
    let link = match s.current() {
        Some(link) => link,
        None => s.link_after(0, s.reconnect_deadline()).await?,
    };
    let fail = |e: lapin::Error| {
        op_error(&format!("removing the durable subscription {name:?} of {}", filter.as_str()), e)
    };
    // A channel of its own: a refusal closes the channel it happens on.
    let channel = link.conn.create_channel().await.map_err(fail)?;
    let deleted = channel.queue_delete(queue, QueueDeleteOptions::default()).await;
    let _ = channel.close(200, "busbar: durable subscription removed".into()).await;
    deleted.map(|_| ()).map_err(fail)
}

/// FNV-1a, stable across processes: every member of a group must derive the same queue name.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_queue_names_are_stable() {
        assert_eq!(fnv1a(b"workers\0a.*"), fnv1a(b"workers\0a.*"));
        assert_ne!(fnv1a(b"workers\0a.*"), fnv1a(b"workers\0a.#"));
    }

    #[test]
    fn names_amqp_cannot_hold_are_refused_as_filters() {
        let long = "q".repeat(256);
        let err = short_name("queue name", &long).expect_err("too long");
        assert_eq!(err.kind(), SubscribeErrorKind::InvalidFilter);
        assert!(short_name("queue name", "q").is_ok());
    }
}
