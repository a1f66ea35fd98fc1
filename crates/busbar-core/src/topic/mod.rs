//! Canonical topic names and filters, their validation, matching, and the mapping to each
//! broker's own naming.
//!
//! busbar has one topic syntax everywhere — MQTT's — so that an application written against
//! the in-process bus keeps working, unchanged, on MQTT, AMQP, Redis, NATS or Kafka. The
//! pieces are:
//!
//! * [`Topic`]: a validated concrete name that messages are published to (`robot/arm/pose`).
//! * [`TopicFilter`]: a validated subscription pattern that may use `+` (exactly one level)
//!   and `#` (the rest, including nothing) as whole levels (`robot/+/pose`, `robot/#`).
//! * [`TopicTrie`]: the one dispatch structure transports use to find every subscription a
//!   message belongs to, at a cost that depends on the topic's depth rather than on how many
//!   subscriptions exist.
//! * [`native`]: how a canonical name is spelled on each broker, and the typed
//!   [`TopicError::NotRepresentable`] for names a broker cannot express.
//! * [`Topic::named_queue`]: the topic standing for a broker's own named queue (an AMQP queue,
//!   a Redis list), for the systems that use those directly.
//!
//! ```
//! use busbar_core::topic::{Topic, TopicFilter, TopicTrie};
//!
//! let pose = Topic::new("robot/arm/pose")?;
//! let filter = TopicFilter::new("robot/+/pose")?;
//! assert!(filter.matches(&pose));
//! assert!(Topic::new("robot/+/pose").is_err()); // wildcards only in filters
//!
//! let mut trie = TopicTrie::new();
//! trie.insert(&filter, "pose logger");
//! trie.insert(&TopicFilter::new("robot/#")?, "recorder");
//! let mut hits = Vec::new();
//! trie.for_each_match(pose.as_str(), |v| hits.push(*v));
//! hits.sort();
//! assert_eq!(hits, ["pose logger", "recorder"]);
//! # Ok::<(), busbar_core::topic::TopicError>(())
//! ```
//!
//! The user-facing description of the rules lives in `docs/topics.md`.

mod name;
pub mod native;
mod queue;
mod trie;

pub use name::{MAX_TOPIC_LEN, Topic, TopicError, TopicFilter};
pub use native::{
    RedisSubscription, amqp_binding_key, amqp_routing_key, kafka_subscription, kafka_topic,
    mqtt_filter, mqtt_topic, nats_filters, nats_subject, redis_channel, redis_subscription,
    topic_from_amqp, topic_from_kafka, topic_from_mqtt, topic_from_nats, topic_from_redis,
};
pub(crate) use queue::is_queue_namespace;
pub use queue::{INBOX_PREFIX, NAMED_QUEUE_PREFIX};
pub use trie::TopicTrie;
