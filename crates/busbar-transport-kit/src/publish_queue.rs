//! Publishes that never wait: the queue a drop policy puts between `publish` and the broker.
//!
//! By default a publish waits while the broker (or the client library's own bounded
//! buffer) cannot take it: backpressure. A connection asked for a drop policy instead
//! (`?publish_overflow=drop-oldest|drop-newest`) puts each message in a bounded queue and
//! returns at once; a forwarding task hands them on, waiting there, and the policy discards
//! (and counts) what does not fit.

use busbar_core::error::PublishError;
use busbar_core::message::Message;
use busbar_core::queue::{Pushed, QueueConfig, QueueSender, queue};
use std::future::Future;
use tokio_util::sync::CancellationToken;

use crate::delivery::Meter;

/// The publish queue of a drop policy.
pub struct PublishQueue {
    tx: QueueSender<Message>,
    meter: Meter,
}

impl PublishQueue {
    /// A queue of `config`, forwarded by a task that calls `send` for each message in order
    /// until `shutdown`. A failure there is counted in `dropped` and logged: the publish
    /// returned long ago, so nobody is left to tell.
    pub fn start<S, F>(
        config: QueueConfig,
        meter: &Meter,
        shutdown: CancellationToken,
        send: S,
    ) -> PublishQueue
    where
        S: Fn(Message) -> F + Send + Sync + 'static,
        F: Future<Output = Result<(), PublishError>> + Send,
    {
        let (tx, mut rx) = queue::<Message>(config);
        let failures = meter.clone();
        tokio::spawn(async move {
            while let Some(message) = tokio::select! {
                _ = shutdown.cancelled() => None,
                m = rx.recv() => m,
            } {
                let topic = message.topic.clone();
                if let Err(e) = send(message).await {
                    failures.publish_dropped();
                    tracing::warn!(%topic, error = %e, "a queued publish failed and was dropped");
                }
            }
        });
        PublishQueue { tx, meter: meter.clone() }
    }

    /// Queues `message` without waiting; under the queue's policy a message may be discarded
    /// (counted in `dropped`).
    pub fn enqueue(&self, message: Message) -> Result<(), PublishError> {
        match self.tx.try_push(message) {
            Pushed::Queued => Ok(()),
            Pushed::Dropped { .. } => {
                self.meter.publish_dropped();
                Ok(())
            }
            // A drop policy never reports full; a closed queue means the forwarder stopped.
            Pushed::Full { .. } | Pushed::Closed(_) => Err(PublishError::closed()),
        }
    }
}
