//! busbar messages to AMQP properties and back.
//!
//! Headers travel in the AMQP headers table (`content-type` as the content-type property),
//! expiry as the per-message TTL (`expiration`, milliseconds), reply topics and correlation
//! ids as the `reply-to` and `correlation-id` properties.

use std::time::Duration;

use busbar_core::error::{OpError, PublishError, PublishErrorKind};
use busbar_core::message::{Headers, Message, header};
use busbar_core::topic::NAMED_QUEUE_PREFIX;
use busbar_core::topic::native::{amqp_routing_key, topic_from_amqp};
use busbar_core::{QoS, Topic, TopicError};
use bytes::Bytes;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use tokio::time::Instant;

/// What the reply property of our own requests names: RabbitMQ's direct reply-to.
pub(crate) const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// `value` as an AMQP short string; `kind` says what it is when it does not fit: a name the
/// broker routes by (`InvalidTopic`) or a property AMQP cannot carry (`Unsupported`).
fn short(what: &str, value: &str, kind: PublishErrorKind) -> Result<ShortString, PublishError> {
    ShortString::try_new(value).map_err(|_| {
        OpError::new(
            kind,
            format!("{what} is {} bytes long; AMQP short strings hold at most 255", value.len()),
        )
    })
}

/// A name the broker routes by, as a short string.
fn name(what: &str, value: &str) -> Result<ShortString, PublishError> {
    short(what, value, PublishErrorKind::InvalidTopic)
}

/// The exchange and routing key `topic` is published with (`exchange` unless it names a
/// queue).
pub(crate) fn target(
    topic: &Topic,
    exchange: &ShortString,
) -> Result<(ShortString, ShortString), PublishError> {
    if let Some(queue) = topic.queue_name() {
        return Ok((ShortString::from(""), name("the queue name", &queue)?));
    }
    if topic.as_str().starts_with(NAMED_QUEUE_PREFIX) {
        return Err(OpError::new(
            PublishErrorKind::InvalidTopic,
            format!("{topic} does not name an AMQP queue (bad hex encoding)"),
        ));
    }
    let key = amqp_routing_key(topic)?;
    Ok((exchange.clone(), name("the routing key", &key)?))
}

/// The busbar topic standing for an AMQP `reply-to` value: the topic itself when the value
/// is an ordinary routing key, else a named-queue topic (direct reply-to, plain queue names).
pub(crate) fn reply_topic(reply_to: &str) -> Result<Topic, TopicError> {
    if !reply_to.starts_with("amq.")
        && let Ok(topic) = topic_from_amqp(reply_to)
    {
        return Ok(topic);
    }
    Topic::named_queue(reply_to)
}

/// The AMQP `reply-to` value for a busbar reply topic (inverse of [`reply_topic`]).
fn reply_to_property(topic: &Topic) -> Result<ShortString, PublishError> {
    match topic.queue_name() {
        Some(queue) => name("the reply queue", &queue),
        None => name("the reply topic", &amqp_routing_key(topic)?),
    }
}

/// The AMQP properties of `message`. `reply_to` overrides the message's own (requests name
/// the direct reply-to pseudo-queue).
pub(crate) fn properties(
    message: &Message,
    reply_to: Option<&str>,
    correlation: Option<String>,
) -> Result<BasicProperties, PublishError> {
    let unsupported = PublishErrorKind::Unsupported;
    let mut props = BasicProperties::default();
    let mut table = FieldTable::default();
    for (name, value) in message.headers.iter() {
        if name == header::CONTENT_TYPE {
            props = props.with_content_type(short("the content type", value, unsupported)?);
        } else {
            table.insert(
                short("a header name", name, unsupported)?,
                AMQPValue::LongString(LongString::from(value)),
            );
        }
    }
    if !table.inner().is_empty() {
        props = props.with_headers(table);
    }
    if let Some(ttl) = message.remaining_ttl() {
        // Rounded up, so a message never expires earlier than asked.
        let ms = ttl.as_nanos().div_ceil(1_000_000);
        props = props.with_expiration(ShortString::from(ms.to_string()));
    }
    match (reply_to, &message.reply_to) {
        (Some(r), _) => props = props.with_reply_to(name("the reply queue", r)?),
        (None, Some(topic)) => props = props.with_reply_to(reply_to_property(topic)?),
        (None, None) => {}
    }
    let correlation = match correlation {
        Some(c) => Some(c),
        None => match &message.correlation_id {
            Some(bytes) => Some(
                std::str::from_utf8(bytes)
                    .map_err(|_| {
                        OpError::unsupported(
                            "amqp",
                            "correlation ids that are not UTF-8 (AMQP carries them as text)",
                        )
                    })?
                    .to_owned(),
            ),
            None => None,
        },
    };
    if let Some(c) = correlation {
        props = props.with_correlation_id(short("the correlation id", &c, unsupported)?);
    }
    Ok(props)
}

/// The busbar message for a delivery on `routing_key`.
pub(crate) fn message(
    topic: Topic,
    props: &BasicProperties,
    data: Vec<u8>,
    received: Instant,
) -> Result<Message, TopicError> {
    let mut m = Message::new(topic, Bytes::from(data));
    m.qos = Some(QoS::AtLeastOnce);
    let mut headers = Headers::new();
    if let Some(ct) = props.content_type() {
        headers.insert(header::CONTENT_TYPE, ct.as_str().to_owned());
    }
    if let Some(table) = props.headers() {
        for (name, value) in table.inner() {
            if let Some(text) = value_text(value) {
                headers.insert(name.as_str().to_owned(), text);
            } else {
                tracing::debug!(
                    header = name.as_str(),
                    "header value busbar cannot show as text skipped"
                );
            }
        }
    }
    m.headers = headers;
    if let Some(exp) = props.expiration() {
        // The broker forwards the TTL as given; deliveries reach a live consumer at once, so
        // it counts from now.
        if let Ok(ms) = exp.as_str().parse::<u64>() {
            m.expires_at = received.checked_add(Duration::from_millis(ms));
        }
    }
    if let Some(r) = props.reply_to() {
        m.reply_to = Some(reply_topic(r.as_str())?);
    }
    if let Some(c) = props.correlation_id() {
        m.correlation_id = Some(Bytes::copy_from_slice(c.as_str().as_bytes()));
    }
    Ok(m)
}

/// The topic of a delivery's routing key.
pub(crate) fn delivery_topic(routing_key: &str) -> Result<Topic, TopicError> {
    topic_from_amqp(routing_key)
}

fn value_text(value: &AMQPValue) -> Option<String> {
    Some(match value {
        AMQPValue::LongString(s) => String::from_utf8(s.as_bytes().to_vec()).ok()?,
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(s: &str) -> Topic {
        Topic::new(s).expect("topic")
    }

    #[test]
    fn direct_reply_to_names_round_trip_through_a_topic() {
        let name = "amq.rabbitmq.reply-to.g1h2AA5yZXBseUAx/+=.abc";
        let t = reply_topic(name).expect("topic");
        assert!(t.as_str().starts_with(NAMED_QUEUE_PREFIX), "{t}");
        let (exchange, key) = target(&t, &"amq.topic".into()).expect("target");
        assert_eq!((exchange.as_str(), key.as_str()), ("", name));
        // An ordinary routing key stays a topic and goes through the exchange.
        let plain = reply_topic("replies.robot1").expect("topic");
        assert_eq!(plain.as_str(), "replies/robot1");
        let (exchange, key) = target(&plain, &"amq.topic".into()).expect("target");
        assert_eq!((exchange.as_str(), key.as_str()), ("amq.topic", "replies.robot1"));
    }

    #[test]
    fn properties_carry_headers_expiry_and_correlation() {
        let mut m = Message::new(topic("a/b"), &b"x"[..])
            .with_header(header::CONTENT_TYPE, "application/msgpack")
            .with_header("trace", "42")
            .with_expiry(Duration::from_millis(1500));
        m.correlation_id = Some(Bytes::from_static(b"c-1"));
        m.reply_to = Some(topic("replies/me"));
        let p = properties(&m, None, None).expect("properties");
        assert_eq!(p.content_type().as_ref().map(|s| s.as_str()), Some("application/msgpack"));
        let exp: u64 = p.expiration().as_ref().expect("ttl").as_str().parse().expect("ms");
        assert!((1400..=1500).contains(&exp), "{exp}");
        assert_eq!(p.reply_to().as_ref().map(|s| s.as_str()), Some("replies.me"));
        let back = message(topic("a/b"), &p, b"x".to_vec(), Instant::now()).expect("message");
        assert_eq!(back.headers.get("trace"), Some("42"));
        assert_eq!(back.headers.get(header::CONTENT_TYPE), Some("application/msgpack"));
        assert_eq!(back.correlation_id.as_deref(), Some(&b"c-1"[..]));
        assert_eq!(back.reply_to.as_ref().map(|t| t.as_str()), Some("replies/me"));
        assert!(back.expires_at.is_some());
    }

    #[test]
    fn what_amqp_cannot_carry_is_refused() {
        let mut m = Message::new(topic("a"), &b"x"[..]);
        m.correlation_id = Some(Bytes::from_static(&[0xff, 0xfe]));
        let kind = |r: Result<BasicProperties, PublishError>| r.err().map(|e| e.kind());
        assert_eq!(kind(properties(&m, None, None)), Some(PublishErrorKind::Unsupported));
        let long = Message::new(topic("a"), &b"x"[..]).with_header("h".repeat(300), "v");
        assert_eq!(kind(properties(&long, None, None)), Some(PublishErrorKind::Unsupported));
        let exchange = ShortString::from("amq.topic");
        let invalid = |t: &str| target(&topic(t), &exchange).err().map(|e| e.kind());
        assert_eq!(invalid("a.b"), Some(PublishErrorKind::InvalidTopic));
        assert_eq!(
            invalid(&format!("{NAMED_QUEUE_PREFIX}zz")),
            Some(PublishErrorKind::InvalidTopic)
        );
        assert_eq!(
            invalid(&format!("{}x", "ab/".repeat(100))),
            Some(PublishErrorKind::InvalidTopic)
        );
    }
}
