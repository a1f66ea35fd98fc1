//! Named queues: the point-to-point destinations some brokers have beside topics (an AMQP
//! queue reached through the default exchange, a Redis list).
//!
//! Systems busbar joins use them directly (commlib-py serves RPC from a Redis list and from an
//! AMQP queue named after the service), so busbar addresses them too, through the one API:
//! a named queue is a [`Topic`] under a reserved prefix, the queue's name hex-encoded after
//! it, because broker queue names may hold characters a topic cannot (`+`, `#`, `/`, `.`).
//! Publishing to such a topic puts a message in the queue, subscribing to it takes messages
//! out (subscribers share them, each message reaching one), and, where the transport replies
//! natively, a request to it is answered from the queue. Transports that have no named
//! queues say so in [`Capabilities::named_queues`](crate::transport::Capabilities), and
//! [`Connection`](crate::Connection) refuses these topics there with `Unsupported` rather
//! than publishing to a topic nobody expects.
//!
//! ```
//! use busbar_core::Topic;
//!
//! let queue = Topic::named_queue("demo.add")?;
//! assert_eq!(queue.queue_name().as_deref(), Some("demo.add"));
//! assert_eq!(Topic::new("demo/add")?.queue_name(), None);
//! # Ok::<(), busbar_core::topic::TopicError>(())
//! ```

use super::{Topic, TopicError, TopicFilter};

/// The reserved prefix of named-queue topics; the queue name follows, hex-encoded.
pub const NAMED_QUEUE_PREFIX: &str = "_busbar/queue/";

/// The reserved prefix of reply inboxes: `_busbar/inbox/` and 32 hex digits.
pub const INBOX_PREFIX: &str = "_busbar/inbox/";

impl Topic {
    /// The reply inbox topic for the random `id`: `_busbar/inbox/` and `id` in hex. Transports
    /// give each connection one, and requests name it as their reply topic.
    pub fn inbox(id: [u8; 16]) -> Topic {
        // 32 hex digits after a valid prefix: always a valid topic, so no check is needed.
        Topic::trusted(format!("{INBOX_PREFIX}{}", hex_encode(&id)))
    }

    /// The topic standing for the broker queue (or list) `name`. The name is kept byte for
    /// byte; only an empty one is refused.
    pub fn named_queue(name: &str) -> Result<Topic, TopicError> {
        if name.is_empty() {
            return Err(TopicError::Empty);
        }
        Topic::new(format!("{NAMED_QUEUE_PREFIX}{}", hex_encode(name.as_bytes())))
    }

    /// The queue this topic names, if it is a named-queue topic.
    pub fn queue_name(&self) -> Option<String> {
        queue_name(self.as_str())
    }
}

impl TopicFilter {
    /// The queue this filter names, if it is a named-queue topic (a filter over named queues,
    /// with wildcards, names none).
    pub fn queue_name(&self) -> Option<String> {
        queue_name(self.as_str())
    }
}

fn queue_name(s: &str) -> Option<String> {
    s.strip_prefix(NAMED_QUEUE_PREFIX).and_then(hex_decode).filter(|name| !name.is_empty())
}

/// Whether `s` lies in the named-queue namespace, well formed or not.
pub(crate) fn is_queue_namespace(s: &str) -> bool {
    s.starts_with(NAMED_QUEUE_PREFIX) || s == NAMED_QUEUE_PREFIX.trim_end_matches('/')
}

fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

fn hex_decode(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect();
    String::from_utf8(bytes?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inboxes_are_valid_topics() {
        let t = Topic::inbox([0xab; 16]);
        assert_eq!(Topic::new(t.as_str()).as_ref(), Ok(&t));
        assert_eq!(t.as_str().len(), INBOX_PREFIX.len() + 32);
    }

    #[test]
    fn any_broker_name_round_trips() {
        for name in ["demo.add", "rpc-0123abcd", "amq.rabbitmq.reply-to.g1h2/+#", "é ü"] {
            let topic = Topic::named_queue(name).expect("topic");
            assert!(topic.as_str().starts_with(NAMED_QUEUE_PREFIX));
            assert_eq!(topic.queue_name().as_deref(), Some(name));
            let filter = TopicFilter::from(&topic);
            assert_eq!(filter.queue_name().as_deref(), Some(name));
        }
    }

    #[test]
    fn ordinary_and_malformed_topics_name_no_queue() {
        assert!(matches!(Topic::named_queue(""), Err(TopicError::Empty)));
        for s in ["demo/add", "_busbar/queue/zz", "_busbar/queue/abc", "_busbar/queuex/61"] {
            assert_eq!(Topic::new(s).expect("topic").queue_name(), None, "{s}");
        }
        assert!(is_queue_namespace("_busbar/queue/zz"));
        assert!(is_queue_namespace("_busbar/queue"));
        assert!(!is_queue_namespace("_busbar/queues"));
        assert_eq!(TopicFilter::new("_busbar/queue/#").expect("filter").queue_name(), None);
    }
}
