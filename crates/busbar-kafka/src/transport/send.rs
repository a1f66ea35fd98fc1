//! Sending: publishes (resolved by the producer's delivery reports) and requests on this
//! connection's reply inbox.
//!
//! Which partition a record goes to: its key's (librdkafka's murmur2 partitioner, the one
//! the Java client uses) when it has one; a request without a key goes round robin, so the
//! servers of a queue group share the calls; any other message without a key goes to one
//! partition per publisher and topic, so what one publisher sends keeps its order.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use busbar_core::error::{
    OpError, PublishError, PublishErrorKind, RequestError, RequestErrorKind, SubscribeError,
};
use busbar_core::message::{Message, QoS};
use busbar_core::topic::{Topic, kafka_topic};
use busbar_core::transport::{Completion, StartAt};
use busbar_transport_kit::{ids, inbox};
use bytes::Bytes;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::BaseRecord;
use tokio::sync::oneshot;

use super::Shared;
use super::reader::{self, Plan, Sink};
use super::subscribe::lock;
use crate::context::{Confirm, publish_error};
use crate::convert::headers_out;

/// How long the backlog's sender waits before trying again when librdkafka's queue is full.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(2);

/// A publish waiting in a topic's backlog, and where its outcome goes.
pub(super) struct Queued {
    message: Message,
    done: oneshot::Sender<Result<(), PublishError>>,
}

/// What handing a record to librdkafka did.
enum Handed {
    /// Queued for sending; at QoS 1 the delivery report answers `done` later.
    Queued,
    /// Refused at once (the caller was told through `done`).
    Failed,
    /// librdkafka's queue is full: the publish comes back.
    Full(Queued),
}

impl Shared {
    /// Publishes `message`: hands it to librdkafka now (so publishes in flight keep their
    /// order and go out together) and resolves when the broker has it (QoS 1), or once it
    /// is queued for sending (QoS 0).
    ///
    /// A publish that cannot be handed over now (its topic not yet looked up or created, or
    /// librdkafka's queue full) waits in its topic's backlog, and so does every later one to
    /// that topic until the backlog is empty: a task sends the backlog in order.
    pub(super) fn publish(&self, message: Message) -> Completion<'_> {
        if let Err(e) = self.life.check::<PublishErrorKind>() {
            return Completion::ready(Err(e));
        }
        let name = match kafka_topic(&message.topic) {
            Ok(name) => name,
            Err(e) => return Completion::ready(Err(e.into())),
        };
        let confirmed = message.effective_qos(QoS::AtLeastOnce) >= QoS::AtLeastOnce;
        let (done, outcome) = oneshot::channel();
        let queued = Queued { message, done };
        let mut backlogs = lock(&self.backlogs);
        if let Some(backlog) = backlogs.get_mut(&name) {
            backlog.push_back(queued);
            return wait(outcome);
        }
        if let Some(partitions) = self.topics.cached(&name) {
            match self.hand_over(&name, partitions, queued) {
                Handed::Queued if !confirmed => return Completion::ready(Ok(())),
                Handed::Queued | Handed::Failed => return wait(outcome),
                Handed::Full(queued) => {
                    backlogs.insert(name.clone(), VecDeque::from([queued]));
                }
            }
        } else {
            backlogs.insert(name.clone(), VecDeque::from([queued]));
        }
        drop(backlogs);
        if let Some(me) = self.me.upgrade() {
            tokio::spawn(me.send_backlog(name));
        }
        wait(outcome)
    }

    /// Sends the backlog of topic `name`, in order, once the topic is known; ends when the
    /// backlog is empty (later publishes are then handed over directly).
    async fn send_backlog(self: Arc<Self>, name: String) {
        let partitions = match self.topics.ensure(&name).await {
            Ok(n) => n,
            Err(failure) => {
                let backlog = lock(&self.backlogs).remove(&name).unwrap_or_default();
                let why = failure.into_error::<PublishErrorKind>(&self.settings.shown);
                for queued in backlog {
                    let _ = queued.done.send(Err(OpError::new(why.kind(), why.message())));
                }
                return;
            }
        };
        loop {
            let next = {
                let mut backlogs = lock(&self.backlogs);
                let Some(backlog) = backlogs.get_mut(&name) else { return };
                match backlog.pop_front() {
                    Some(queued) => queued,
                    None => {
                        backlogs.remove(&name);
                        return;
                    }
                }
            };
            let mut queued = next;
            loop {
                if let Err(e) = self.life.check::<PublishErrorKind>() {
                    let _ = queued.done.send(Err(e));
                    break;
                }
                match self.hand_over(&name, partitions, queued) {
                    Handed::Full(back) => {
                        // librdkafka's queue is full (the broker is slow or away): wait, as
                        // a publish waits on every transport under the `Block` policy.
                        queued = back;
                        tokio::time::sleep(QUEUE_FULL_PAUSE).await;
                    }
                    Handed::Queued | Handed::Failed => break,
                }
            }
        }
    }

    /// Hands one publish to librdkafka for the topic `name` of `partitions` partitions.
    fn hand_over(&self, name: &str, partitions: i32, queued: Queued) -> Handed {
        let Queued { message, done } = queued;
        let prepared = message
            .payload
            .to_bytes()
            .map_err(PublishError::from)
            .and_then(|payload| Ok((payload, headers_out(&message)?)));
        let (payload, headers) = match prepared {
            Ok(p) => p,
            Err(e) => {
                let _ = done.send(Err(e));
                return Handed::Failed;
            }
        };
        let confirmed = message.effective_qos(QoS::AtLeastOnce) >= QoS::AtLeastOnce;
        // At QoS 1 the delivery report answers the caller; at QoS 0 the caller is answered
        // once the record is queued, below.
        let (confirm, done): (Box<Confirm>, _) =
            if confirmed { (Box::new(Some(done)), None) } else { (Box::new(None), Some(done)) };
        let mut record = BaseRecord::with_opaque_to(name, confirm).payload(payload.as_ref());
        if let Some(key) = &message.key {
            record = record.key(key.as_ref());
        } else {
            let n = u32::try_from(partitions.max(1)).unwrap_or(1);
            let slot = if message.reply_to.is_some() {
                self.next_request.fetch_add(1, Ordering::Relaxed)
            } else {
                self.home
            };
            record = record.partition(i32::try_from(slot % n).unwrap_or(0));
        }
        if let Some(h) = headers {
            record = record.headers(h);
        }
        match self.producer.send(record) {
            Ok(()) => {
                if let Some(done) = done {
                    let _ = done.send(Ok(()));
                }
                Handed::Queued
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                let done = match (*back.delivery_opaque, done) {
                    (Some(d), _) | (None, Some(d)) => d,
                    // Every publish carries its sender in one of the two places.
                    (None, None) => return Handed::Failed,
                };
                Handed::Full(Queued { message, done })
            }
            Err((e, back)) => {
                let error = publish_error(&e, name, payload.len());
                if let Some(d) = (*back.delivery_opaque).or(done) {
                    let _ = d.send(Err(error));
                }
                Handed::Failed
            }
        }
    }

    /// Sends `message` as a request with this connection's reply inbox as its reply topic
    /// and waits for the reply, all under one deadline.
    pub(super) async fn request(
        &self,
        mut message: Message,
        timeout: Duration,
    ) -> Result<Message, RequestError> {
        self.life.check::<RequestErrorKind>()?;
        let topic = message.topic.to_string();
        inbox::exchange(&self.meter, &topic, timeout, async {
            let (inbox_topic, _) = self.replies().await?;
            let mut pending = self.inbox.register(0);
            message.reply_to = Some(inbox_topic.clone());
            message.correlation_id = Some(Bytes::copy_from_slice(pending.id().as_bytes()));
            self.publish(message).await?;
            pending.reply().await
        })
        .await
    }

    /// The reply inbox (its topic and Kafka name), made on the first request: a topic of
    /// one partition with a random name, read by a reader of its own.
    ///
    /// It is not deleted at close. Deleting a topic that a librdkafka client still fetches
    /// from or produces to (a server's producer that answered here keeps it in its
    /// metadata) crashed librdkafka 2.12 against Tansu 0.6 (a null topic name in a
    /// metadata update, seen here as a segmentation fault), and a crash of somebody else's
    /// server is worse than an empty topic left behind; operators remove
    /// `_busbar.inbox.*` topics with their own tooling.
    async fn replies(&self) -> Result<&(Topic, String), SubscribeError> {
        self.replies
            .get_or_try_init(|| async {
                let topic = Topic::inbox(ids::random_bytes());
                let name = kafka_topic(&topic)?;
                let shown = &self.settings.shown;
                self.topics.create_and_wait(&name, 1).await.map_err(|f| f.into_error(shown))?;
                let plan = Plan::Assigned {
                    topics: vec![name.clone()],
                    filter: None,
                    interval: self.settings.metadata_interval,
                    start: StartAt::Now,
                };
                reader::start(
                    self.reader_config(None),
                    self.context.clone(),
                    plan,
                    Sink::Replies(self.inbox.clone()),
                    self.life.token().child_token(),
                    &self.readers,
                )
                .await
                .map_err(|why| self.life.not_connected(why))?;
                Ok((topic, name))
            })
            .await
    }
}

/// Waits for a publish's outcome.
fn wait(outcome: oneshot::Receiver<Result<(), PublishError>>) -> Completion<'static> {
    Completion::Pending(Box::pin(async move {
        outcome.await.unwrap_or_else(|_| Err(PublishError::closed()))
    }))
}
