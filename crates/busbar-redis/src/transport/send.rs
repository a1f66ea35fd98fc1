//! The send path: publishes go through a bounded queue to one forwarder task, which
//! pipelines whatever accumulated while the previous batch was on the wire; requests go the
//! same way and wait in the inbox for their replies.

use std::sync::Arc;
use std::time::Duration;

use busbar_core::error::{
    Common, OpError, PublishError, PublishErrorKind, RequestError, RequestErrorKind,
};
use busbar_core::message::Message;
use busbar_core::queue::{Pushed, QueueReceiver};
use busbar_core::transport::Completion;
use busbar_transport_kit::inbox;
use bytes::Bytes;
use tokio::sync::oneshot;

use super::groups;
use super::state::{KIND, Link, MAX_PAYLOAD, Outgoing, Shared, inbox_key};
use crate::envelope;

/// Most messages sent in one pipeline by the forwarder.
const BATCH: usize = 512;
/// How long an unread reply list lives (a requester that vanished leaves nothing behind).
const INBOX_TTL_MS: u64 = 60_000;

impl Shared {
    /// What every outgoing message must pass before it is queued.
    fn check_outgoing<K: Copy + From<Common>>(&self, message: &Message) -> Result<(), OpError<K>> {
        self.life.check()?;
        if message.retain {
            return Err(OpError::unsupported(KIND, "retained messages"));
        }
        if message.topic.queue_name().is_some()
            && (!message.headers.is_empty()
                || message.reply_to.is_some()
                || message.correlation_id.is_some()
                || message.expires_at.is_some())
        {
            // Refused rather than dropped: a list item is the payload alone.
            return Err(OpError::unsupported(
                KIND,
                "headers, reply topics, correlation ids or expiry on a named queue \
                 (a Redis list item is the payload alone)",
            ));
        }
        if let busbar_core::Payload::Bytes(b) = &message.payload {
            if b.len() > MAX_PAYLOAD {
                return Err(OpError::too_large(b.len(), MAX_PAYLOAD));
            }
            let max = self.settings.max_message;
            if b.len() > max && message.topic.queue_name().is_none() {
                return Err(OpError::new(
                    busbar_core::error::Common::TooLarge.into(),
                    format!(
                        "the message is {} bytes; Redis disconnects every subscriber whose \
                         output buffer passes {max} bytes (client-output-buffer-limit pubsub), \
                         so it would reach nobody (if the server allows more, say so with \
                         ?max_message=)",
                        b.len()
                    ),
                ));
            }
        }
        if let Link::Down(reason) = &*self.link.borrow() {
            // Redis pub/sub keeps nothing for later: say so instead of queueing into a void.
            return Err(self.life.not_connected(reason));
        }
        Ok(())
    }

    /// Queues `message` for the forwarder: at once when there is room or the policy drops,
    /// else (`Block`) once there is room.
    pub(super) fn publish(&self, message: Message) -> Completion<'_> {
        if let Err(e) = self.check_outgoing(&message) {
            return Completion::ready(Err(e));
        }
        match self.outgoing.try_push(Outgoing::Publish(message)) {
            Pushed::Queued => Completion::ready(Ok(())),
            Pushed::Dropped { .. } => {
                // The drop policy discarded a publish (the new one, or the oldest queued).
                self.meter.publish_dropped();
                Completion::ready(Ok(()))
            }
            Pushed::Full { item, .. } => Completion::Pending(Box::pin(async move {
                self.outgoing.push(item).await.map_err(|_| PublishError::closed())
            })),
            Pushed::Closed(_) => Completion::ready(Err(PublishError::closed())),
        }
    }

    /// Sends `message` as a request on this connection's reply inbox and waits for the
    /// reply, all under one deadline.
    pub(super) async fn request(
        self: &Arc<Self>,
        mut message: Message,
        timeout: Duration,
    ) -> Result<Message, RequestError> {
        self.check_outgoing::<RequestErrorKind>(&message)?;
        if message.topic.queue_name().is_some() {
            return Err(RequestError::unsupported(
                KIND,
                "requests to a named queue (a Redis list item carries no reply \
                 address; put one in the payload and read it from another list)",
            ));
        }
        self.current::<RequestErrorKind>()?;
        self.ensure_inbox();
        let topic = message.topic.as_str().to_owned();
        inbox::exchange(&self.meter, &topic, timeout, async {
            let mut pending = self.inbox.register(0);
            message.reply_to = Some(self.inbox_topic.clone());
            message.correlation_id = Some(Bytes::copy_from_slice(pending.id().as_bytes()));
            let mut reached = self.send_request(message.clone()).await?;
            if reached == 0 {
                // Maybe a server's group is newer than this connection's cache of them.
                self.refresh_groups().await?;
                reached = self.send_request(message).await?;
            }
            if reached == 0 {
                return Err(RequestError::no_responders(&topic));
            }
            pending.reply().await
        })
        .await
    }

    /// Queues a request; resolves to how many receivers it reached.
    async fn send_request(&self, message: Message) -> Result<usize, PublishError> {
        let (ack_tx, ack_rx) = oneshot::channel();
        self.outgoing
            .push(Outgoing::Request(message, ack_tx))
            .await
            .map_err(|_| PublishError::closed())?;
        ack_rx.await.map_err(|_| PublishError::closed())?
    }

    /// Reads the group registry again from Redis, the authority. A group registered on
    /// another connection reaches this one's cache through a notice on `busbar:ctl`, which
    /// may come after a request that needed it: a request that reached nobody checks here
    /// before it reports `NoResponders`.
    async fn refresh_groups(&self) -> Result<(), RequestError> {
        let mut conn = self.current::<RequestErrorKind>()?;
        let all = groups::registry(&mut conn).await.map_err(|e| {
            self.op_error::<RequestErrorKind>("reading the queue-group registry", e)
        })?;
        self.groups.write().unwrap_or_else(|p| p.into_inner()).replace(all);
        Ok(())
    }

    /// Moves publishes from the bounded publish queue to the server, pipelining whatever
    /// has accumulated while the previous batch was on the wire.
    pub(super) async fn forward(self: Arc<Self>, mut rx: QueueReceiver<Outgoing>) {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let first = tokio::select! {
                _ = self.life.token().cancelled() => return,
                item = std::future::poll_fn(|cx| rx.poll_recv(cx)) => match item {
                    Some(i) => i,
                    None => return,
                },
            };
            let mut flushes = Vec::new();
            let mut next = Some(first);
            while let Some(item) = next.take() {
                match item {
                    Outgoing::Flush(done) => flushes.push(done),
                    item => batch.push(item),
                }
                if batch.len() < BATCH {
                    next = rx.try_recv();
                }
            }
            if !batch.is_empty() {
                self.send_batch(&mut batch).await;
                batch.clear();
            }
            // Everything queued before the flush markers has been sent.
            for done in flushes {
                let _ = done.send(());
            }
        }
    }

    /// The pipeline for `batch`, and for each item the index of its `PUBLISH` (or `RPUSH`)
    /// result among the non-ignored results and the number of queue-group lists it went to.
    /// The pipeline starts with a read of the registry's generation (result 0), and what
    /// each publish was sent to besides its channel is returned (see [`Self::catch_up`]).
    fn pipeline(&self, batch: &[Outgoing]) -> Pipeline {
        let mut pipe = redis::pipe();
        let mut counts: Vec<Option<(usize, usize)>> = Vec::with_capacity(batch.len());
        let mut sent_to: Vec<Option<Vec<Arc<str>>>> = Vec::with_capacity(batch.len());
        let groups = self.groups.read().unwrap_or_else(|p| p.into_inner());
        pipe.cmd("INCRBY").arg(groups::GENERATION_KEY).arg(0);
        let mut results = 1;
        for item in batch {
            let m = match item {
                Outgoing::Publish(m) | Outgoing::Request(m, _) => m,
                Outgoing::Flush(_) => {
                    counts.push(None);
                    sent_to.push(None);
                    continue;
                }
            };
            let payload = match m.payload.to_bytes() {
                Ok(p) => p,
                Err(e) => {
                    // A typed value that cannot be encoded is reported and skipped.
                    tracing::warn!(topic = %m.topic, error = %e, "could not encode a message");
                    counts.push(None);
                    sent_to.push(None);
                    continue;
                }
            };
            if let Some(list) = m.topic.queue_name() {
                // A named queue is a Redis list of bare payloads, as other clients use it.
                pipe.cmd("RPUSH").arg(list).arg(payload.as_ref());
                counts.push(Some((results, 0)));
                sent_to.push(None);
                results += 1;
                continue;
            }
            let topic = m.topic.as_str();
            if topic.starts_with(busbar_core::topic::INBOX_PREFIX) {
                // A reply: it goes to the requester's inbox list, not to pub/sub.
                let key = inbox_key(topic);
                pipe.cmd("RPUSH").arg(&key).arg(envelope::encode(m, &payload, true).as_ref());
                pipe.cmd("PEXPIRE").arg(&key).arg(INBOX_TTL_MS).ignore();
                counts.push(Some((results, 0)));
                sent_to.push(None);
                results += 1;
                continue;
            }
            pipe.cmd("PUBLISH").arg(topic).arg(envelope::encode(m, &payload, false).as_ref());
            let mut keys = Vec::new();
            let mut item_env = None;
            groups.for_each_list(topic, |key| {
                let env = item_env.get_or_insert_with(|| envelope::encode(m, &payload, true));
                push_item(&mut pipe, key, env);
                keys.push(key.clone());
            });
            counts.push(Some((results, keys.len())));
            sent_to.push(Some(keys));
            results += 1;
        }
        Pipeline { pipe, counts, sent_to, generation: groups.generation }
    }

    /// After a batch that ran with a cache of the registry older than the registry (a group
    /// joined or a durable subscription made on another connection, whose notice had not
    /// reached this one yet): reads the registry again and sends each publish of the batch
    /// to what it missed. The generation was read ahead of the batch's publishes, so what
    /// they missed was registered before them: late, but neither lost nor doubled.
    /// Returns, for each item, how many lists and streams it reached this way (a request
    /// counts them as receivers, so it is not sent a second time for want of any).
    async fn catch_up(&self, batch: &[Outgoing], sent_to: &[Option<Vec<Arc<str>>>]) -> Vec<usize> {
        let mut reached = vec![0; batch.len()];
        let Some(mut conn) = self.live() else { return reached };
        match groups::registry(&mut conn).await {
            Ok(all) => self.groups.write().unwrap_or_else(|p| p.into_inner()).replace(all),
            Err(e) => {
                tracing::debug!(error = %e, "reading the queue-group registry");
                return reached;
            }
        }
        let (pipe, missed) = {
            let groups = self.groups.read().unwrap_or_else(|p| p.into_inner());
            let mut pipe = redis::pipe();
            let mut missed = 0;
            for ((item, sent), reached) in batch.iter().zip(sent_to).zip(reached.iter_mut()) {
                let (Outgoing::Publish(m) | Outgoing::Request(m, _), Some(sent)) = (item, sent)
                else {
                    continue;
                };
                let Ok(payload) = m.payload.to_bytes() else { continue };
                let mut item_env = None;
                groups.for_each_list(m.topic.as_str(), |key| {
                    if !sent.contains(key) {
                        let env =
                            item_env.get_or_insert_with(|| envelope::encode(m, &payload, true));
                        push_item(&mut pipe, key, env);
                        missed += 1;
                        *reached += 1;
                    }
                });
            }
            (pipe, missed)
        };
        if missed == 0 {
            return reached;
        }
        if let Err(e) = pipe.exec_async(&mut conn).await {
            tracing::warn!(error = %e, "publishes to a newly registered group or durable subscription failed");
            return vec![0; batch.len()];
        }
        reached
    }

    async fn send_batch(&self, batch: &mut Vec<Outgoing>) {
        let Pipeline { pipe, counts, sent_to, generation } = self.pipeline(batch);
        let outcome: Result<Vec<i64>, PublishError> = match self.wait_up().await {
            None => Err(PublishError::closed()),
            Some(mut conn) => match pipe.query_async::<Vec<i64>>(&mut conn).await {
                Ok(v) => Ok(v),
                // Lost on the way: part of the batch may have reached Redis, which then
                // delivered it. Sending it again would deliver that part twice, and Redis
                // publishes are at most once: each is reported instead, and the publisher
                // decides (busbar pub tries again within its --patience).
                Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() => {
                    Err(OpError::new(
                        PublishErrorKind::NotConnected,
                        format!(
                            "the connection to {} was lost while the publish was on its way: it \
                             may or may not have been delivered ({e})",
                            self.settings.redacted_url
                        ),
                    ))
                }
                Err(e) => Err(self.op_error("publishing", e)),
            },
        };
        match outcome {
            Ok(values) => {
                let late = if values.first().is_some_and(|g| *g != generation) {
                    self.catch_up(batch, &sent_to).await
                } else {
                    Vec::new()
                };
                for (n, (item, count)) in batch.drain(..).zip(counts).enumerate() {
                    let Some((i, lists)) = count else { continue };
                    self.meter.published();
                    if let Outgoing::Request(_, ack) = item {
                        let reached = values.get(i).copied().unwrap_or(0).max(0) as usize;
                        let late = late.get(n).copied().unwrap_or(0);
                        let _ = ack.send(Ok(reached + lists + late));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, dropped = batch.len(), "a publish batch failed");
                for item in batch.drain(..) {
                    if let Outgoing::Request(_, ack) = item {
                        let _ = ack.send(Err(OpError::new(e.kind(), e.message())));
                    }
                }
            }
        }
    }
}

/// One batch's pipeline, with what [`Shared::send_batch`] needs to read its results.
struct Pipeline {
    pipe: redis::Pipeline,
    /// For each item: the index of its `PUBLISH` (or `RPUSH`) result and the number of
    /// group lists and durable streams it went to.
    counts: Vec<Option<(usize, usize)>>,
    /// For each publish: the group lists and durable streams it went to.
    sent_to: Vec<Option<Vec<Arc<str>>>>,
    /// The registry generation of the cache the pipeline was built with.
    generation: i64,
}

/// Adds `env` to a group's list, or to a durable subscription's stream (`NOMKSTREAM`: a
/// cache that has not heard of a removal yet does not bring the stream back without its
/// consumer group).
fn push_item(pipe: &mut redis::Pipeline, key: &str, env: &[u8]) {
    if groups::is_stream(key) {
        pipe.cmd("XADD").arg(key).arg("NOMKSTREAM").arg("*").arg("m").arg(env).ignore();
    } else {
        pipe.cmd("RPUSH").arg(key).arg(env).ignore();
    }
}
