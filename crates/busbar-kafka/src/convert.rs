//! Between busbar messages and Kafka records.
//!
//! Headers are Kafka record headers; two carry what Kafka has no field for: the reply topic
//! of a request (as its Kafka topic name, so that any Kafka client can answer it) and the
//! correlation id (its bytes as they are). The key is the record key.

use busbar_core::error::PublishError;
use busbar_core::message::{Headers, Message, QoS};
use busbar_core::topic::{TopicError, kafka_topic, topic_from_kafka};
use bytes::Bytes;
use rdkafka::Message as _;
use rdkafka::message::{BorrowedMessage, Header, Headers as _, OwnedHeaders};

/// The header that carries a request's reply topic (a Kafka topic name).
pub(crate) const REPLY_TO_HEADER: &str = "busbar-reply-to";
/// The header that carries a message's correlation id.
pub(crate) const CORRELATION_HEADER: &str = "busbar-correlation-id";

/// The record headers for `message`, `None` when it has none.
pub(crate) fn headers_out(message: &Message) -> Result<Option<OwnedHeaders>, PublishError> {
    if message.headers.is_empty() && message.reply_to.is_none() && message.correlation_id.is_none()
    {
        return Ok(None);
    }
    let mut headers = OwnedHeaders::new_with_capacity(message.headers.len() + 2);
    for (name, value) in message.headers.iter() {
        headers = headers.insert(Header { key: name, value: Some(value.as_bytes()) });
    }
    if let Some(reply) = &message.reply_to {
        let name = kafka_topic(reply)?;
        headers = headers.insert(Header { key: REPLY_TO_HEADER, value: Some(name.as_bytes()) });
    }
    if let Some(id) = &message.correlation_id {
        headers = headers.insert(Header { key: CORRELATION_HEADER, value: Some(id.as_ref()) });
    }
    Ok(Some(headers))
}

/// Turns a received record into a busbar message.
pub(crate) fn message_in(record: &BorrowedMessage<'_>) -> Result<Message, TopicError> {
    let topic = topic_from_kafka(record.topic())?;
    let payload = record.payload().map(Bytes::copy_from_slice).unwrap_or_default();
    let mut message = Message::new(topic, payload).with_qos(QoS::AtLeastOnce);
    message.key = record.key().map(Bytes::copy_from_slice);
    if let Some(headers) = record.headers() {
        let mut out = Headers::new();
        for h in headers.iter() {
            let value = h.value.unwrap_or_default();
            match h.key {
                REPLY_TO_HEADER => {
                    let name = String::from_utf8_lossy(value);
                    message.reply_to = Some(topic_from_kafka(&name)?);
                }
                CORRELATION_HEADER => message.correlation_id = Some(Bytes::copy_from_slice(value)),
                // busbar headers are text; a value in another encoding arrives with its
                // invalid bytes replaced (U+FFFD), as every text header does elsewhere.
                key => out.insert(key.to_owned(), String::from_utf8_lossy(value).into_owned()),
            }
        }
        message.headers = out;
    }
    Ok(message)
}
