//! Sending: publishes (resolved by the producer's delivery reports) and requests on this
//! connection's reply inbox.
//!
//! Which partition a record goes to: its key's (librdkafka's murmur2 partitioner, the one
//! the Java client uses) when it has one; a request without a key goes round robin, so the
//! servers of a queue group share the calls; any other message without a key goes to one
//! partition per publisher and topic, so what one publisher sends keeps its order.

use std::sync::atomic::Ordering;
use std::time::Duration;

use busbar_core::error::{
    OpError, PublishError, PublishErrorKind, RequestError, RequestErrorKind, SubscribeError,
};
use busbar_core::message::{Message, QoS};
use busbar_core::topic::{Topic, kafka_topic};
use busbar_core::transport::Completion;
use busbar_transport_kit::{ids, inbox};
use bytes::Bytes;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::BaseRecord;
use tokio::sync::oneshot;

use super::Shared;
use super::reader::{self, Plan, Sink};
use crate::context::Confirm;
use crate::convert::headers_out;

/// How long a publish waits before trying again when librdkafka's queue is full.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(2);

impl Shared {
    /// Publishes `message`: resolves when the broker has it (QoS 1), or once it is queued
    /// for sending (QoS 0).
    pub(super) fn publish(&self, message: Message) -> Completion<'_> {
        if let Err(e) = self.life.check::<PublishErrorKind>() {
            return Completion::ready(Err(e));
        }
        Completion::Pending(Box::pin(async move {
            let name = kafka_topic(&message.topic)?;
            let partitions = match self.topics.cached(&name) {
                Some(n) => n,
                None => self
                    .topics
                    .ensure(&name)
                    .await
                    .map_err(|f| f.into_error::<PublishErrorKind>(&self.settings.shown))?,
            };
            self.send(&name, partitions, &message).await
        }))
    }

    /// Sends `message` to the Kafka topic `name` of `partitions` partitions and, at QoS 1,
    /// waits for the broker's acknowledgement.
    async fn send(
        &self,
        name: &str,
        partitions: i32,
        message: &Message,
    ) -> Result<(), PublishError> {
        let payload = message.payload.to_bytes()?;
        let headers = headers_out(message)?;
        let confirmed = message.effective_qos(QoS::AtLeastOnce) >= QoS::AtLeastOnce;
        let (confirm, outcome) = if confirmed {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let confirm: Box<Confirm> = Box::new(confirm);
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
        loop {
            self.life.check::<PublishErrorKind>()?;
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // librdkafka's queue is full (the broker is slow or away): wait there,
                    // as a publish waits on every transport under the `Block` policy.
                    record = back;
                    tokio::time::sleep(QUEUE_FULL_PAUSE).await;
                }
                Err((e, _)) => return Err(publish_error(e, name, payload.len())),
            }
        }
        match outcome {
            None => Ok(()),
            Some(rx) => match rx.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(publish_error(e, name, payload.len())),
                Err(_) => Err(PublishError::closed()),
            },
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
                };
                reader::start(
                    self.reader_config(None),
                    self.context.clone(),
                    plan,
                    Sink::Replies(self.inbox.clone()),
                    self.life.token().child_token(),
                )
                .await
                .map_err(|why| self.life.not_connected(why))?;
                Ok((topic, name))
            })
            .await
    }
}

/// A publish error for a librdkafka error about a record to `topic` of `size` bytes.
fn publish_error(e: KafkaError, topic: &str, size: usize) -> PublishError {
    use RDKafkaErrorCode as C;
    let code = e.rdkafka_error_code();
    match code {
        Some(C::MessageSizeTooLarge) => OpError::new(
            PublishErrorKind::TooLarge,
            format!("a record of {size} bytes is larger than the Kafka broker takes"),
        ),
        Some(C::MessageTimedOut) => OpError::new(
            PublishErrorKind::TimedOut,
            format!("the Kafka broker did not confirm the record to {topic:?} in time"),
        ),
        Some(C::TopicAuthorizationFailed | C::ClusterAuthorizationFailed) => {
            OpError::refused(format!("the Kafka broker refused the record to {topic:?}: {e}"))
        }
        Some(C::UnknownTopicOrPartition | C::UnknownTopic | C::UnknownPartition) => {
            OpError::refused(format!("the Kafka broker has no topic {topic:?}: {e}"))
        }
        _ => OpError::broker("kafka", format!("the record to {topic:?} failed: {e}")),
    }
}
