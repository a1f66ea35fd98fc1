//! Between busbar messages and NATS messages.

use std::str::FromStr;

use async_nats::{HeaderMap, HeaderName, HeaderValue};
use busbar_core::error::{PublishError, PublishErrorKind};
use busbar_core::message::{Headers, Message, QoS};
use busbar_core::topic::{Topic, TopicError, topic_from_nats};
use bytes::Bytes;

/// The header that carries a message's correlation id: NATS has none of its own (its
/// requests are correlated by their unique reply subject), so an id a user sets travels here,
/// hex-encoded because NATS header values are text.
pub(crate) const CORRELATION_HEADER: &str = "busbar-correlation-id";

fn header_error(what: &str, name: &str) -> PublishError {
    PublishError::new(
        PublishErrorKind::Unsupported,
        format!(
            "header {name:?}: NATS cannot carry this {what} (no control characters, no ':' in names)"
        ),
    )
}

/// The NATS headers for `message`, `None` when it has none (the common case: no allocation).
pub(crate) fn headers_out(message: &Message) -> Result<Option<HeaderMap>, PublishError> {
    if message.headers.is_empty() && message.correlation_id.is_none() {
        return Ok(None);
    }
    let mut map = HeaderMap::new();
    for (name, value) in message.headers.iter() {
        let n = HeaderName::from_str(name).map_err(|_| header_error("name", name))?;
        let v = HeaderValue::from_str(value).map_err(|_| header_error("value", name))?;
        map.append(n, v);
    }
    if let Some(id) = &message.correlation_id {
        map.insert(CORRELATION_HEADER, hex(id).as_str());
    }
    Ok(Some(map))
}

/// Turns a received NATS message into a busbar message. `topic` is the topic when the caller
/// already knows it (a subscription to one literal subject), saving the conversion.
pub(crate) fn message_in(
    m: async_nats::Message,
    topic: Option<&Topic>,
) -> Result<Message, TopicError> {
    let topic = match topic {
        Some(t) => t.clone(),
        None => topic_from_nats(m.subject.as_str())?,
    };
    // All core NATS can carry.
    let mut message = Message::new(topic, m.payload).with_qos(QoS::AtMostOnce);
    if let Some(reply) = &m.reply {
        message.reply_to = Some(topic_from_nats(reply.as_str())?);
    }
    if let Some(map) = &m.headers {
        let mut headers = Headers::new();
        for (name, values) in map.iter() {
            // Several values under one name: busbar headers keep one, the last.
            if let Some(value) = values.last() {
                if AsRef::<str>::as_ref(name) == CORRELATION_HEADER {
                    message.correlation_id = unhex(value.as_str());
                } else {
                    headers.insert(name.to_string(), value.as_str().to_owned());
                }
            }
        }
        message.headers = headers;
    }
    Ok(message)
}

fn hex(bytes: &Bytes) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes.iter() {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

fn unhex(s: &str) -> Option<Bytes> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<Vec<u8>>>()
        .map(Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_correlation_round_trip() {
        let mut m = Message::new(Topic::new("a/b").expect("topic"), &b"x"[..])
            .with_header("content-type", "application/msgpack")
            .with_header("trace", "abc");
        m.correlation_id = Some(Bytes::from_static(&[0, 1, 0xfe, 0xff]));
        let map = headers_out(&m).expect("headers").expect("some");
        let nats = async_nats::Message {
            subject: "a.b".into(),
            reply: Some("_INBOX.x.y".into()),
            payload: Bytes::from_static(b"x"),
            headers: Some(map),
            status: None,
            description: None,
            length: 0,
        };
        let back = message_in(nats, None).expect("in");
        assert_eq!(back.topic.as_str(), "a/b");
        assert_eq!(back.reply_to.as_ref().map(Topic::as_str), Some("_INBOX/x/y"));
        assert_eq!(back.headers.get("content-type"), Some("application/msgpack"));
        assert_eq!(back.headers.get("trace"), Some("abc"));
        assert_eq!(back.headers.get(CORRELATION_HEADER), None);
        assert_eq!(back.correlation_id.as_deref(), Some(&[0, 1, 0xfe, 0xff][..]));
        let plain = Message::new(Topic::new("a").expect("topic"), &b""[..]);
        assert!(headers_out(&plain).expect("ok").is_none());
    }

    #[test]
    fn headers_nats_cannot_carry_are_refused() {
        let m = Message::new(Topic::new("a").expect("topic"), &b""[..]).with_header("a:b", "1");
        let refused = |m: &Message| headers_out(m).err().map(|e| e.kind());
        assert_eq!(refused(&m), Some(PublishErrorKind::Unsupported));
        let m = Message::new(Topic::new("a").expect("topic"), &b""[..]).with_header("a", "1\r\n");
        assert_eq!(refused(&m), Some(PublishErrorKind::Unsupported));
    }
}

/// A received NATS message with hostile subject, reply and headers: a message or an error,
/// never a panic. The input's first line is the subject, the second the reply subject, then
/// `name: value` header lines until an empty one, then the payload.
#[cfg(test)]
mod fuzz {
    use async_nats::HeaderMap;
    use busbar_testkit::fuzz::Fuzz;
    use bytes::Bytes;

    use super::*;

    #[test]
    fn fuzz_message_in() {
        let corpus = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/message_in");
        Fuzz::new("nats_message_in", corpus)
            .dictionary(&["_busbar.inbox.", ".>", ".*", "_2e_", "busbar-status"])
            .run(|input| {
                let text = String::from_utf8_lossy(input);
                let mut lines = text.split('\n');
                let subject = lines.next().unwrap_or_default().to_owned();
                let reply = lines.next().filter(|r| !r.is_empty()).map(|r| r.to_owned().into());
                let mut headers = HeaderMap::new();
                for line in lines.by_ref() {
                    let Some((name, value)) = line.split_once(':') else { break };
                    // async-nats refuses some names and values itself; those never reach us.
                    if let (Ok(name), Ok(value)) = (
                        name.trim().parse::<async_nats::HeaderName>(),
                        value.trim().parse::<async_nats::HeaderValue>(),
                    ) {
                        headers.insert(name, value);
                    }
                }
                let payload: Vec<&str> = lines.collect();
                let message = async_nats::Message {
                    subject: subject.into(),
                    reply,
                    payload: Bytes::from(payload.join("\n")),
                    headers: Some(headers),
                    status: None,
                    description: None,
                    length: input.len(),
                };
                let _ = message_in(message, None);
            });
    }
}
