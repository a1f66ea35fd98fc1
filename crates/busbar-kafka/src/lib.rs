//! `kafka://` and `kafka+tls://`: busbar's Kafka transport, on rdkafka (librdkafka).
//!
//! * Topics map to Kafka topic names with [`busbar_core::topic::kafka_topic`]: `/` becomes
//!   `.`; a level may hold ASCII letters, digits, `_` and `-`. A filter with wildcards is
//!   a regular expression over topic names (`a/+` is `^a\.[^.]+$`).
//! * A plain subscription reads the partitions of its topics itself, from where they end
//!   when it is made (Kafka's pub/sub without a consumer group), or from where
//!   [`SubscribeOptions::start`](busbar_core::SubscribeOptions::start) says: the oldest
//!   record kept, or the first at or after a time; one with wildcards looks for new
//!   matching topics every `?metadata_interval=` (1 s). A queue group is a Kafka consumer
//!   group of that name: its members share the topic's partitions, offsets are committed
//!   after a record was handed to the subscriber (at least once;
//!   [`Acknowledge::OnHandOver`](busbar_core::Acknowledge::OnHandOver)), and it resumes
//!   where it committed (the start applies where it never did). `close` waits for the
//!   readers to commit and leave their groups.
//! * A publish at QoS 1 (the default) resolves when the broker acknowledged the record
//!   (idempotent producer, `acks=all`); QoS 0 when librdkafka queued it (a failure is
//!   counted in `dropped`). Headers are record headers; [`Message::key`](busbar_core::Message::key)
//!   is the record key.
//! * Topics that do not exist are created on first use (`?partitions=`, `?replication=`),
//!   or refused with `Refused` under `?create_topics=false`.
//! * Requests carry their reply topic and correlation id in headers; each connection's
//!   reply inbox is a topic of its own, made on the first request; it stays on the broker
//!   after close (see `transport::send` for why).
//!   Kafka cannot tell that nobody serves a topic: such a request ends at its deadline.
//! * No retained messages, expiry, last will or noLocal: declared absent in the
//!   capabilities and refused with `Unsupported`.

// One `unsafe` call in the crate, allowed where it is: handing librdkafka's clients their
// OAUTHBEARER tokens (`transport/oauth.rs`), which rdkafka does not wrap.
#![deny(unsafe_code)]

mod context;
mod convert;
mod settings;
mod transport;

pub use settings::{Credentials, MissingTopics, Settings, TlsSettings};
pub use transport::KafkaTransport;

use std::sync::Arc;

use busbar_core::error::ConnectError;
use busbar_core::transport::{BoxFuture, ConnectOptions};
use busbar_core::{Connection, Connector};

/// Connects `kafka://` and `kafka+tls://` URLs.
#[derive(Debug, Default, Clone, Copy)]
pub struct KafkaConnector;

impl Connector for KafkaConnector {
    fn schemes(&self) -> &[&'static str] {
        &["kafka", "kafka+tls"]
    }

    fn connect(
        &self,
        url: &str,
        options: ConnectOptions,
    ) -> BoxFuture<'static, Result<Connection, ConnectError>> {
        let url = url.to_owned();
        Box::pin(async move {
            Ok(Connection::new(Arc::new(KafkaTransport::connect(&url, options).await?)))
        })
    }
}
