//! Durable subscriptions on JetStream. A durable subscription NAME is a stream of its
//! filter's subjects (`busbar-durable-NAME`, work-queue retention, kept on disk) with one
//! durable pull consumer, shared by every process that subscribes under the name: what is
//! published while nobody reads waits in the stream, and what was delivered but not
//! acknowledged goes again (at once when this subscription ends cleanly, after the
//! consumer's ack wait when its process died).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_nats::jetstream::message::{AckKind, Acker};
use async_nats::jetstream::{self, consumer, stream};
use busbar_core::error::{OpError, SubscribeError, SubscribeErrorKind};
use busbar_core::queue::queue;
use busbar_core::topic::nats_filters;
use busbar_core::transport::{Acknowledge, SubscribeOptions, Subscription, SubscriptionGuard};
use busbar_core::{QoS, Receipt};
use busbar_transport_kit::{AcksInFlight, Target};
use futures_util::{FutureExt, StreamExt};

use super::kept::STREAM_PREFIX;
use super::pump::lock;
use super::state::Shared;
use crate::convert;

/// How long a pump waits for the server to have forgotten its pull before it gives back
/// what it held (a close waits for that as well).
const END_PULL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The consumer's name in every durable stream.
const CONSUMER: &str = "busbar";

/// Deliveries handed to the subscription and not yet acknowledged, by a local number:
/// what is left when the subscription ends is given back to the server at once.
#[derive(Default)]
pub(super) struct Outstanding {
    /// The durable subscription's name.
    name: String,
    next: AtomicU64,
    /// By local number, which is delivery order: given back in that order, they come again
    /// in that order.
    ackers: Mutex<BTreeMap<u64, Acker>>,
    /// Set (and told) once the pump has stopped pulling and given back what it held.
    ended: std::sync::atomic::AtomicBool,
    /// Set once the subscription was dropped (its pump may still be ending).
    dropped: std::sync::atomic::AtomicBool,
    ended_told: tokio::sync::Notify,
}

impl Outstanding {
    /// Waits until the pump has stopped pulling and given back what it held.
    pub(super) async fn ended(&self) {
        let told = self.ended_told.notified();
        if self.ended.load(Ordering::Acquire) {
            return;
        }
        told.await;
    }

    fn end(&self) {
        self.ended.store(true, Ordering::Release);
        self.ended_told.notify_waiters();
    }

    /// Gives every delivery not acknowledged back to the server, in the order they came,
    /// then `pulled` (counted in `acks`, which a close waits for).
    pub(super) fn give_back(&self, acks: &Arc<AcksInFlight>, pulled: Vec<Acker>) {
        let mut left: Vec<Acker> = std::mem::take(&mut *lock(&self.ackers)).into_values().collect();
        left.extend(pulled);
        if left.is_empty() {
            return;
        }
        acks.spawn(async move {
            for acker in left {
                let _ = acker.ack_with(AckKind::Nak(None)).await;
            }
        });
    }
}

/// The stream that keeps the durable subscription `name`.
fn stream_name(name: &str) -> String {
    format!("{STREAM_PREFIX}{}", name.replace('.', "_"))
}

/// Deletes the stream (and its consumer) of the durable subscription `name`, with what it
/// kept; one that does not exist is already gone. Refused while this connection reads it (a
/// reader on another connection stops receiving).
pub(super) async fn remove(
    s: &Arc<Shared>,
    name: &str,
    filter: &busbar_core::TopicFilter,
) -> Result<(), SubscribeError> {
    s.life.check()?;
    let in_use = lock(&s.durables)
        .iter()
        .filter_map(std::sync::Weak::upgrade)
        .any(|o| o.name == name && !o.dropped.load(Ordering::Acquire));
    if in_use {
        return Err(busbar_transport_kit::durable::in_use(name, filter));
    }
    let js = jetstream::new(s.client.clone());
    let stream = stream_name(name);
    let deleted = js.delete_stream(&stream).await;
    if deleted.is_ok() {
        s.kept.forget(&stream);
    }
    match deleted {
        Ok(_) => Ok(()),
        Err(e) if e.to_string().to_ascii_lowercase().contains("not found") => {
            s.kept.forget(&stream);
            Ok(())
        }
        Err(e) => Err(OpError::new(
            SubscribeErrorKind::Refused,
            format!("removing the durable subscription {name:?}: {e}"),
        )),
    }
}

/// Subscribes durably under `name`: the stream and its consumer are made the first time
/// and found again after.
pub(super) async fn subscribe(
    s: &Arc<Shared>,
    options: SubscribeOptions,
    name: &str,
) -> Result<Subscription, SubscribeError> {
    let filter = options.filter.clone();
    let mut subjects = nats_filters(&filter)?;
    subjects.sort();
    let refused = |what: &str, e: &dyn std::fmt::Display| {
        let text = e.to_string();
        let kind = if text.to_ascii_lowercase().contains("jetstream not enabled") {
            SubscribeErrorKind::Unsupported
        } else {
            SubscribeErrorKind::Refused
        };
        OpError::new(kind, format!("{what} for the durable subscription {name:?}: {text}"))
    };
    let js = jetstream::new(s.client.clone());
    let stream = js
        .get_or_create_stream(stream::Config {
            name: stream_name(name),
            subjects: subjects.clone(),
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            num_replicas: s.settings.durable_replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| refused("the JetStream stream", &e))?;
    let mut kept = stream.cached_info().config.subjects.clone();
    s.kept.keep(&stream_name(name), kept.clone());
    kept.sort();
    if kept != subjects {
        return Err(OpError::new(
            SubscribeErrorKind::InvalidFilter,
            format!(
                "the durable subscription {name:?} is kept for the subjects {kept:?}, not for {}",
                filter.as_str()
            ),
        ));
    }
    let consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(
            CONSUMER,
            consumer::pull::Config {
                durable_name: Some(CONSUMER.into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| refused("the JetStream consumer", &e))?;
    let messages = consumer.messages().await.map_err(|e| refused("reading", &e))?;
    let (tx, rx) = queue(options.queue);
    let target = Target::new(tx, filter.as_str(), &s.meter);
    let cancel = s.life.token().child_token();
    let outstanding = Arc::new(Outstanding { name: name.to_owned(), ..Default::default() });
    {
        let mut durables = lock(&s.durables);
        durables.retain(|d| d.strong_count() > 0);
        durables.push(Arc::downgrade(&outstanding));
    }
    tokio::spawn(pump(Pump {
        messages,
        consumer,
        target,
        filter: filter.clone(),
        by_receipt: options.acknowledge != Acknowledge::OnHandOver,
        acks: s.acks.clone(),
        outstanding: outstanding.clone(),
        meter: s.meter.clone(),
        cancel: cancel.clone(),
    }));
    let acks = s.acks.clone();
    let guard = SubscriptionGuard::new(move || {
        // The pump stops pulling, then gives back what it held (at once, not after the
        // consumer's ack wait); counted, so that a close waits for it.
        outstanding.dropped.store(true, Ordering::Release);
        cancel.cancel();
        if tokio::runtime::Handle::try_current().is_ok() {
            acks.spawn(async move { outstanding.ended().await });
        }
    });
    Ok(Subscription::new(filter, rx, s.meter.stats().clone(), guard)
        .acknowledging(options.acknowledge))
}

struct Pump {
    messages: consumer::pull::Stream,
    consumer: consumer::PullConsumer,
    target: Target,
    filter: busbar_core::TopicFilter,
    by_receipt: bool,
    acks: Arc<AcksInFlight>,
    outstanding: Arc<Outstanding>,
    meter: busbar_transport_kit::Meter,
    cancel: tokio_util::sync::CancellationToken,
}

/// Moves the consumer's messages into the subscription until it ends, then gives back what
/// it had not acknowledged.
async fn pump(p: Pump) {
    let Pump {
        mut messages,
        consumer,
        target,
        filter,
        by_receipt,
        acks,
        outstanding,
        meter,
        cancel,
    } = p;
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => break,
            next = messages.next() => next,
        };
        let delivery = match next {
            Some(Ok(d)) => d,
            // A missed heartbeat or a pull the server ended: the stream goes on.
            Some(Err(e)) => {
                tracing::debug!(filter = filter.as_str(), error = %e, "JetStream pull");
                continue;
            }
            None => break,
        };
        let (message, acker) = delivery.split();
        let message = match convert::message_in(message, None) {
            // NATS wildcards ignore MQTT's `$` rule: re-checked with busbar's matcher.
            Ok(m) if filter.matches(&m.topic) => m,
            Ok(_) => {
                let _ = acker.ack().await;
                continue;
            }
            Err(e) => {
                meter.discard("a message busbar cannot represent", &e);
                let _ = acker.ack().await;
                continue;
            }
        };
        let mut message = message;
        message.qos = Some(QoS::AtLeastOnce);
        if !by_receipt {
            if !target.deliver(message).await {
                let _ = acker.ack_with(AckKind::Nak(None)).await;
                break;
            }
            let _ = acker.ack().await;
            continue;
        }
        let id = outstanding.next.fetch_add(1, Ordering::Relaxed);
        lock(&outstanding.ackers).insert(id, acker);
        let mine = outstanding.clone();
        let acks = acks.clone();
        // The application may acknowledge from any thread: the acknowledgement runs here.
        let runtime = tokio::runtime::Handle::current();
        // Taken out of the outstanding ones at once, so a subscription ended right after
        // cannot give it back as well.
        let receipt = Receipt::new(move || {
            let acker = lock(&mine.ackers).remove(&id);
            if let Some(acker) = acker {
                acks.spawn_on(&runtime, async move {
                    if let Err(e) = acker.ack().await {
                        tracing::debug!(error = %e, "acknowledging a JetStream message failed");
                    }
                });
            }
        });
        if !target.deliver(message.with_receipt(receipt)).await {
            break;
        }
    }
    // What was pulled but not handed over yet, then the pull itself ended (its inbox
    // unsubscribed, and the server made to forget it) before anything goes back.
    let mut pulled = Vec::new();
    while let Some(Some(Ok(delivery))) = messages.next().now_or_never() {
        pulled.push(delivery.split().1);
    }
    drop(messages);
    forget_pull(&consumer, &filter).await;
    // What was handed over and not acknowledged goes back now rather than after the ack
    // wait (a receipt takes its delivery out before acknowledging it, so none goes both
    // ways), and so does what was pulled.
    outstanding.give_back(&acks, pulled);
    outstanding.end();
}

/// Makes the server forget the pull request of a pull stream just dropped (its inbox
/// unsubscribed). The server keeps a pull request until it expires and, when a message is
/// given back, offers it to the oldest pull request it has without asking whether anybody
/// still listens: to a dead one, the message is gone until the consumer's ack wait (and
/// nats-server 2.9 then also delivers the newest message a second time); 2.11 puts it
/// back, behind the others. Asking for the consumer's info makes the server drop pull
/// requests nobody listens to, and it is handled after the unsubscribe this connection
/// sent before it.
async fn forget_pull(consumer: &consumer::PullConsumer, filter: &busbar_core::TopicFilter) {
    match tokio::time::timeout(END_PULL_TIMEOUT, consumer.get_info()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::debug!(filter = filter.as_str(), error = %e, "ending the pull"),
        Err(_) => tracing::debug!(filter = filter.as_str(), "ending the pull: no answer"),
    }
}
