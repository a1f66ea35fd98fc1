//! The receive path: one consumer task per attached subscription, moving its queue's
//! deliveries into the local subscriptions and acknowledging them once they are there.

use std::sync::{Arc, Mutex};

use busbar_core::Receipt;
use busbar_core::message::Message;
use busbar_core::topic::{Topic, TopicFilter};
use busbar_core::transport::Acknowledge;
use busbar_transport_kit::delivery::deliver_all;
use busbar_transport_kit::{AcksInFlight, Fanout, Meter};
use futures_util::{FutureExt, StreamExt};
use lapin::options::BasicAckOptions;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::state::lock;
use crate::convert;

/// Most deliveries acknowledged by one `basic.ack` (with `multiple`).
const ACK_BATCH: u64 = 256;

/// Where a consumer task puts what it receives, and whom it tells when it fails.
pub(super) struct Sink {
    pub(super) fanout: Arc<Mutex<Fanout>>,
    pub(super) filter: TopicFilter,
    /// When deliveries are acknowledged: once queued (in batches), or one by one when read
    /// or when the application says so (through each message's receipt).
    pub(super) acknowledge: Acknowledge,
    pub(super) meter: Meter,
    pub(super) acks: Arc<AcksInFlight>,
    pub(super) trouble: mpsc::UnboundedSender<u64>,
    pub(super) generation: u64,
}

/// Moves one subscription's deliveries into its delivery queue, acknowledging them once
/// queued (in batches, and whenever the consumer has caught up).
///
/// `stop` ends it cleanly: what it handed over is acknowledged first.
pub(super) async fn consume(mut consumer: lapin::Consumer, sink: Sink, stop: CancellationToken) {
    let Sink { fanout, filter, acknowledge, meter, acks, trouble, generation } = sink;
    let by_receipt = acknowledge != Acknowledge::OnHandOver;
    // Deliveries from a named queue carry the queue's topic, whatever key they were sent
    // with (usually the queue's own name, through the default exchange).
    let named_queue = filter.queue_name().and_then(|_| Topic::new(filter.as_str()).ok());
    let mut unacked: Option<lapin::Acker> = None;
    let mut pending: u64 = 0;
    loop {
        let next = match consumer.next().now_or_never() {
            Some(n) => n,
            None => {
                // Caught up: acknowledge what is queued before waiting.
                if let Some(acker) = unacked.take() {
                    let _ = acker.ack(BasicAckOptions { multiple: true }).await;
                    pending = 0;
                }
                tokio::select! {
                    next = consumer.next() => next,
                    // Everything handed over was acknowledged just above.
                    () = stop.cancelled() => return,
                }
            }
        };
        let delivery = match next {
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                tracing::debug!(filter = filter.as_str(), error = %e, "consumer ended");
                let _ = trouble.send(generation);
                return;
            }
            // Canceled (unsubscribed, or by the broker: the queue was deleted).
            None => {
                let _ = trouble.send(generation);
                return;
            }
        };
        let received = Instant::now();
        let topic = match &named_queue {
            Some(topic) => Ok(topic.clone()),
            None => convert::delivery_topic(delivery.routing_key.as_str()),
        };
        let message = topic.and_then(|topic| {
            // AMQP's `*`/`#` ignore MQTT's `$` rule: re-check with busbar's matcher.
            if filter.matches(&topic) {
                convert::message(topic, &delivery.properties, delivery.data, received).map(Some)
            } else {
                Ok(None)
            }
        });
        let acker = delivery.acker;
        match message {
            Ok(Some(m)) if m.is_expired() => meter.expired(),
            Ok(Some(m)) if by_receipt => {
                let m = m.with_receipt(receipt(&acks, acker));
                // Not handed over when stopped meanwhile: the broker gives it again.
                let handed = tokio::select! {
                    handed = offer(&fanout, m) => handed,
                    () = stop.cancelled() => false,
                };
                if !handed {
                    return;
                }
                continue;
            }
            Ok(Some(m)) => {
                let handed = tokio::select! {
                    handed = offer(&fanout, m) => handed,
                    () = stop.cancelled() => false,
                };
                if !handed {
                    // Every local subscription is gone (or the consumer is stopped):
                    // acknowledge what they took, leave the rest for the broker to requeue.
                    if let Some(a) = unacked.take() {
                        let _ = a.ack(BasicAckOptions { multiple: true }).await;
                    }
                    return;
                }
            }
            Ok(None) => {}
            Err(e) => meter.discard("a message busbar cannot represent", &e),
        }
        if by_receipt {
            // Never to be delivered: done with at once, alone (a `multiple` acknowledgement
            // would take the unread ones before it along).
            let _ = acker.ack(BasicAckOptions::default()).await;
            continue;
        }
        unacked = Some(acker);
        pending += 1;
        if pending >= ACK_BATCH
            && let Some(a) = unacked.take()
        {
            let _ = a.ack(BasicAckOptions { multiple: true }).await;
            pending = 0;
        }
    }
}

/// What acknowledges one delivery, from whichever task the application reads in. One on a
/// channel that has gone since fails quietly: the broker gives that message again.
fn receipt(acks: &Arc<AcksInFlight>, acker: lapin::Acker) -> Receipt {
    acks.receipt(async move {
        if let Err(e) = acker.ack(BasicAckOptions::default()).await {
            tracing::debug!(error = %e, "acknowledging a delivery failed");
        }
    })
}

/// Offers `message` to the local subscriptions: to each of them, or for a queue group to
/// one ([`Fanout::pick`]: in turn, preferring one with room). False when none is left.
async fn offer(fanout: &Mutex<Fanout>, message: Message) -> bool {
    let every = {
        let f = lock(fanout);
        (!f.is_group()).then(|| f.targets())
    };
    if let Some(targets) = every {
        return deliver_all(&targets, message).await > 0;
    }
    // Tried in turn until one takes it: a member that just went away (after the pick,
    // before the delivery) must not lose it. The pick skips members already gone, and one
    // that refused the message is gone for good, so this ends.
    loop {
        let Some(target) = lock(fanout).pick().cloned() else { return false };
        if target.deliver(message.clone()).await {
            return true;
        }
    }
}
