//! [`Topic`], [`TopicFilter`], their validation, and level-wise matching.
//!
//! Both types hold an `Arc<str>`: topics are cloned into every message and every
//! subscription record, so a clone must be a reference-count bump, not a string copy.
//! Validation happens once, at construction; everything downstream (dispatch, broker
//! mappings) can then rely on the invariants without re-checking.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// Longest topic or filter busbar accepts, in bytes.
///
/// This is MQTT's limit (a UTF-8 string with a 16-bit length prefix). Using the tightest
/// common limit means a name accepted on one transport is never rejected for its length by
/// MQTT later; brokers with tighter limits (AMQP, Kafka) report
/// [`TopicError::NotRepresentable`] from [`crate::topic::native`].
pub const MAX_TOPIC_LEN: usize = 65_535;

/// How much of an offending name an error message quotes. Names may be up to 64 KiB; an
/// error message should still fit on a screen.
const EXCERPT_BYTES: usize = 80;

/// Why a topic or filter was rejected, or why a broker cannot express it.
///
/// Every variant names the offending input (shortened to about 80 bytes with `…` if it is
/// longer) and, where it helps, the position of the problem, so a person reading a log line
/// can fix the name without a debugger. Byte positions count from 0; level indices count
/// `/`-separated levels from 0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// The name is the empty string.
    #[error("topic name is empty; a topic needs at least one level, e.g. \"sensors\"")]
    Empty,

    /// The name is longer than [`MAX_TOPIC_LEN`] bytes.
    #[error("topic name is {len} bytes long; the maximum is {max} bytes")]
    TooLong {
        /// Length of the rejected name, in bytes.
        len: usize,
        /// The limit ([`MAX_TOPIC_LEN`]).
        max: usize,
    },

    /// A level is empty: a leading or trailing `/`, or `//`. busbar forbids these because
    /// NATS and Kafka cannot express them.
    #[error(
        "empty level at index {level_index} in {topic:?}; levels are separated by a single '/' \
         with no leading, trailing or doubled '/'"
    )]
    EmptyLevel {
        /// The rejected name (shortened if very long).
        topic: String,
        /// Index of the empty level.
        level_index: usize,
    },

    /// A concrete topic contains `+` or `#`, which only filters may use.
    #[error(
        "wildcard character at byte {position} in topic {topic:?}; '+' and '#' may only appear \
         in subscription filters, not in topics that are published to"
    )]
    WildcardInTopic {
        /// The rejected topic (shortened if very long).
        topic: String,
        /// Byte offset of the first `+` or `#`.
        position: usize,
    },

    /// A filter uses `#` somewhere other than as its last level (`a/#/b`).
    #[error("'#' must be the last level of a filter, but {filter:?} continues after it")]
    MultiLevelNotLast {
        /// The rejected filter (shortened if very long).
        filter: String,
    },

    /// A filter mixes a wildcard with other characters in one level (`a/b+/c`).
    #[error(
        "level {level_index} of filter {filter:?} mixes a wildcard with other characters; '+' \
         and '#' must each be a whole level, e.g. \"a/+/c\""
    )]
    WildcardNotWholeLevel {
        /// The rejected filter (shortened if very long).
        filter: String,
        /// Index of the offending level.
        level_index: usize,
    },

    /// The name contains NUL or another control character, which brokers either reject or
    /// treat inconsistently.
    #[error(
        "invalid character {ch:?} at byte {position} in {input:?}; control characters are not allowed in topics"
    )]
    InvalidChar {
        /// The rejected name (shortened if very long).
        input: String,
        /// The offending character.
        ch: char,
        /// Its byte offset.
        position: usize,
    },

    /// A valid busbar name that a particular broker cannot express (see
    /// [`crate::topic::native`]).
    #[error("{name:?} cannot be expressed on {broker}: {reason}")]
    NotRepresentable {
        /// The name that could not be mapped (shortened if very long).
        name: String,
        /// The broker, e.g. `"NATS"`.
        broker: &'static str,
        /// What stands in the way, in words.
        reason: String,
    },
}

/// `s`, shortened to about [`EXCERPT_BYTES`] bytes (on a character boundary) for quoting in
/// an error message.
pub(crate) fn excerpt(s: &str) -> String {
    if s.len() <= EXCERPT_BYTES {
        return s.to_owned();
    }
    let mut end = EXCERPT_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Which rules [`validate`] applies.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Topic,
    Filter,
}

/// Checks `s` against busbar's canonical syntax, reporting the first problem in reading
/// order so the message points at the leftmost thing to fix.
fn validate(s: &str, kind: Kind) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong { len: s.len(), max: MAX_TOPIC_LEN });
    }
    let mut offset = 0;
    let mut levels = s.split('/').enumerate().peekable();
    while let Some((level_index, level)) = levels.next() {
        let is_last = levels.peek().is_none();
        if level.is_empty() {
            return Err(TopicError::EmptyLevel { topic: excerpt(s), level_index });
        }
        for (i, ch) in level.char_indices() {
            let position = offset + i;
            if ch.is_control() {
                return Err(TopicError::InvalidChar { input: excerpt(s), ch, position });
            }
            if ch == '+' || ch == '#' {
                match kind {
                    Kind::Topic => {
                        return Err(TopicError::WildcardInTopic { topic: excerpt(s), position });
                    }
                    Kind::Filter if level.len() != 1 => {
                        return Err(TopicError::WildcardNotWholeLevel {
                            filter: excerpt(s),
                            level_index,
                        });
                    }
                    Kind::Filter if ch == '#' && !is_last => {
                        return Err(TopicError::MultiLevelNotLast { filter: excerpt(s) });
                    }
                    Kind::Filter => {}
                }
            }
        }
        offset += level.len() + 1;
    }
    Ok(())
}

/// Whether a filter's first level is a wildcard and the topic's first level starts with
/// `$`: MQTT reserves `$`-topics (such as `$SYS/...`) for the system, so catch-all
/// subscriptions must not see them. Shared by [`TopicFilter::matches_str`] and the trie so
/// both apply the rule identically.
pub(crate) fn dollar_excluded(filter_first_level_is_wildcard: bool, topic: &str) -> bool {
    filter_first_level_is_wildcard && topic.starts_with('$')
}

/// A validated concrete topic: the name a message is published to.
///
/// Non-empty, at most [`MAX_TOPIC_LEN`] bytes, `/`-separated non-empty levels, no `+` or
/// `#`, no control characters. Cloning is cheap (an `Arc` bump). Hashing, equality and
/// ordering are those of the string, so a `HashMap<Topic, _>` can be queried with a `&str`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Arc<str>);

impl Topic {
    /// Validates `s` as a concrete topic.
    pub fn new(s: impl AsRef<str>) -> Result<Topic, TopicError> {
        let s = s.as_ref();
        validate(s, Kind::Topic)?;
        Ok(Topic(Arc::from(s)))
    }

    /// A topic built by busbar from parts that are valid by construction (checked by
    /// tests, not at run time).
    pub(crate) fn trusted(s: String) -> Topic {
        debug_assert!(validate(&s, Kind::Topic).is_ok(), "{s:?}");
        Topic(Arc::from(s))
    }

    /// The topic as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `/`-separated levels, in order. Never yields an empty level.
    pub fn levels(&self) -> std::str::Split<'_, char> {
        self.0.split('/')
    }
}

/// A validated subscription filter: a topic that may use `+` and `#` as whole levels.
///
/// `+` matches exactly one level; `#` (last level only) matches the remaining levels,
/// including none, so `a/#` matches `a`. A filter whose first level is a wildcard does not
/// match topics whose first level starts with `$` (MQTT's rule for system topics). Cloning
/// is cheap (an `Arc` bump).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicFilter(Arc<str>);

impl TopicFilter {
    /// Validates `s` as a filter.
    pub fn new(s: impl AsRef<str>) -> Result<TopicFilter, TopicError> {
        let s = s.as_ref();
        validate(s, Kind::Filter)?;
        Ok(TopicFilter(Arc::from(s)))
    }

    /// Wraps a string already known to be a valid filter (built by the trie from validated
    /// levels), skipping the re-check.
    pub(crate) fn from_valid(s: String) -> TopicFilter {
        debug_assert!(validate(&s, Kind::Filter).is_ok(), "invalid filter {s:?}");
        TopicFilter(Arc::from(s))
    }

    /// The filter as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `/`-separated levels, in order. Never yields an empty level.
    pub fn levels(&self) -> std::str::Split<'_, char> {
        self.0.split('/')
    }

    /// Whether the filter uses `+` or `#`, i.e. may match more than one topic. Transports
    /// use this to pick a plain subscription over a pattern one where the broker has both.
    pub fn is_wildcard(&self) -> bool {
        // Validation guarantees '+' and '#' only occur as whole wildcard levels.
        self.0.contains(['+', '#'])
    }

    /// Whether `topic` matches this filter.
    pub fn matches(&self, topic: &Topic) -> bool {
        self.matches_str(topic.as_str())
    }

    /// Whether the concrete topic string `topic` matches this filter.
    ///
    /// `topic` is not validated (this is for names straight off the wire, where building a
    /// [`Topic`] first would allocate); it is compared level by level exactly as written.
    /// Allocation-free.
    pub fn matches_str(&self, topic: &str) -> bool {
        let first_is_wildcard = matches!(self.0.as_bytes().first(), Some(b'+' | b'#'));
        if dollar_excluded(first_is_wildcard, topic) {
            return false;
        }
        let mut filter_levels = self.0.split('/');
        let mut topic_levels = topic.split('/');
        loop {
            match (filter_levels.next(), topic_levels.next()) {
                // '#' takes whatever is left, including nothing ("a/#" matches "a").
                (Some("#"), _) => return true,
                (Some("+"), Some(_)) => {}
                (Some(f), Some(t)) if f == t => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }
}

impl From<Topic> for TopicFilter {
    /// Every topic is a filter that matches exactly itself; the string is shared, not copied.
    fn from(topic: Topic) -> TopicFilter {
        TopicFilter(topic.0)
    }
}

impl From<&Topic> for TopicFilter {
    fn from(topic: &Topic) -> TopicFilter {
        TopicFilter(Arc::clone(&topic.0))
    }
}

/// The traits both name types share, written once so the two cannot drift apart.
macro_rules! string_newtype_impls {
    ($ty:ident, $expecting:literal) => {
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_tuple(stringify!($ty)).field(&&*self.0).finish()
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $ty {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $ty {
            fn eq(&self, other: &str) -> bool {
                &*self.0 == other
            }
        }

        impl PartialEq<&str> for $ty {
            fn eq(&self, other: &&str) -> bool {
                &*self.0 == *other
            }
        }

        impl TryFrom<&str> for $ty {
            type Error = TopicError;
            fn try_from(s: &str) -> Result<Self, TopicError> {
                $ty::new(s)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = TopicError;
            fn try_from(s: String) -> Result<Self, TopicError> {
                $ty::new(s)
            }
        }

        impl FromStr for $ty {
            type Err = TopicError;
            fn from_str(s: &str) -> Result<Self, TopicError> {
                $ty::new(s)
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            /// Deserialises from a string and validates it, so a malformed name in a config
            /// file or on the wire is rejected where it enters the program.
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Visitor;
                impl serde::de::Visitor<'_> for Visitor {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$ty, E> {
                        $ty::new(v).map_err(E::custom)
                    }
                }
                deserializer.deserialize_str(Visitor)
            }
        }
    };
}

string_newtype_impls!(Topic, "a busbar topic string such as \"robot/arm/pose\"");
string_newtype_impls!(TopicFilter, "a busbar topic filter string such as \"robot/+/pose\"");

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn topic_err(s: &str) -> TopicError {
        match Topic::new(s) {
            Ok(t) => panic!("{s:?} accepted as topic {t}"),
            Err(e) => e,
        }
    }

    fn filter_err(s: &str) -> TopicError {
        match TopicFilter::new(s) {
            Ok(f) => panic!("{s:?} accepted as filter {f}"),
            Err(e) => e,
        }
    }

    fn filter(s: &str) -> TopicFilter {
        TopicFilter::new(s).expect("valid filter")
    }

    #[test]
    fn accepts_valid_names() {
        for s in ["a", "a/b/c", "$SYS/broker/load", "with space/ü/日本", "a.b*c>d"] {
            assert_eq!(Topic::new(s).expect("valid").as_str(), s);
            assert_eq!(filter(s).as_str(), s);
        }
        for s in ["#", "+", "a/+", "+/+/c", "a/#", "+/#", "$SYS/#"] {
            assert_eq!(filter(s).as_str(), s);
        }
        let max = "x".repeat(MAX_TOPIC_LEN);
        assert!(Topic::new(&max).is_ok());
    }

    #[test]
    fn empty() {
        assert_eq!(topic_err(""), TopicError::Empty);
        assert_eq!(filter_err(""), TopicError::Empty);
        assert!(TopicError::Empty.to_string().contains("empty"));
    }

    #[test]
    fn too_long() {
        let s = "x".repeat(MAX_TOPIC_LEN + 1);
        let e = topic_err(&s);
        assert_eq!(e, TopicError::TooLong { len: 65_536, max: 65_535 });
        let msg = e.to_string();
        assert!(msg.contains("65536") && msg.contains("65535"), "{msg}");
        assert!(matches!(filter_err(&s), TopicError::TooLong { .. }));
    }

    #[test]
    fn empty_levels() {
        for (s, idx) in [("/a", 0), ("a/", 1), ("a//b", 1), ("/", 0), ("a/b/", 2)] {
            let expected = TopicError::EmptyLevel { topic: s.to_owned(), level_index: idx };
            assert_eq!(topic_err(s), expected);
            assert_eq!(filter_err(s), expected);
        }
        let msg = topic_err("a//b").to_string();
        assert!(msg.contains("index 1") && msg.contains("\"a//b\""), "{msg}");
    }

    #[test]
    fn wildcard_in_topic() {
        assert_eq!(
            topic_err("a/+/c"),
            TopicError::WildcardInTopic { topic: "a/+/c".into(), position: 2 }
        );
        assert_eq!(
            topic_err("a/b#"),
            TopicError::WildcardInTopic { topic: "a/b#".into(), position: 3 }
        );
        let msg = topic_err("x/#").to_string();
        assert!(msg.contains("byte 2") && msg.contains("\"x/#\"") && msg.contains("filter"));
    }

    #[test]
    fn multi_level_not_last() {
        for s in ["#/a", "a/#/b", "#/#"] {
            assert_eq!(filter_err(s), TopicError::MultiLevelNotLast { filter: s.into() });
        }
        let msg = filter_err("a/#/b").to_string();
        assert!(msg.contains("last level") && msg.contains("\"a/#/b\""), "{msg}");
    }

    #[test]
    fn wildcard_not_whole_level() {
        for (s, idx) in [("a/b+/c", 1), ("a#", 0), ("a/++", 1), ("+a", 0), ("a/#b", 1)] {
            assert_eq!(
                filter_err(s),
                TopicError::WildcardNotWholeLevel { filter: s.into(), level_index: idx }
            );
        }
        let msg = filter_err("a/b+/c").to_string();
        assert!(msg.contains("level 1") && msg.contains("\"a/b+/c\""), "{msg}");
    }

    #[test]
    fn invalid_char() {
        assert_eq!(
            topic_err("a/b\0c"),
            TopicError::InvalidChar { input: "a/b\0c".into(), ch: '\0', position: 3 }
        );
        for s in ["a\nb", "\u{7f}", "a/\u{85}", "tab\there"] {
            assert!(matches!(topic_err(s), TopicError::InvalidChar { .. }), "{s:?}");
            assert!(matches!(filter_err(s), TopicError::InvalidChar { .. }), "{s:?}");
        }
        let msg = topic_err("a/b\0c").to_string();
        // The control character is shown escaped, so the log line stays readable.
        assert!(msg.contains("'\\0'") && msg.contains("byte 3") && msg.contains("\"a/b\\0c\""));
    }

    #[test]
    fn not_representable_message() {
        let e = TopicError::NotRepresentable {
            name: "a.b/c".into(),
            broker: "NATS",
            reason: "level \"a.b\" contains '.'".into(),
        };
        let msg = e.to_string();
        assert!(msg.contains("\"a.b/c\"") && msg.contains("NATS") && msg.contains("'.'"));
    }

    #[test]
    fn long_input_is_truncated_in_errors() {
        let s = format!("{}//", "é".repeat(1000));
        let TopicError::EmptyLevel { topic, .. } = topic_err(&s) else {
            panic!("expected EmptyLevel");
        };
        assert!(topic.len() < 100 && topic.ends_with('…'), "{topic}");
        assert!(topic.starts_with("éé"));
    }

    #[test]
    fn first_problem_in_reading_order_wins() {
        assert!(matches!(filter_err("a\0/#/b"), TopicError::InvalidChar { position: 1, .. }));
        assert!(matches!(filter_err("a//#/b"), TopicError::EmptyLevel { .. }));
    }

    #[test]
    fn matching() {
        let cases: &[(&str, &str, bool)] = &[
            ("a/b", "a/b", true),
            ("a/b", "a/c", false),
            ("a/b", "a/b/c", false),
            ("a/b/c", "a/b", false),
            ("a/+", "a/b", true),
            ("a/+", "a", false),
            ("a/+", "a/b/c", false),
            ("a/#", "a", true),
            ("a/#", "a/b", true),
            ("a/#", "a/b/c", true),
            ("a/#", "b", false),
            ("a/#", "ab", false),
            ("#", "a", true),
            ("#", "a/b/c", true),
            ("+/+", "a/b", true),
            ("+/#", "a", true),
            ("+", "$SYS", false),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("$SYS/+", "$SYS/x", true),
            ("a/+", "a/$b", true),
        ];
        for &(f, t, expected) in cases {
            let topic = Topic::new(t).expect("valid");
            assert_eq!(filter(f).matches(&topic), expected, "{f} vs {t}");
            assert_eq!(filter(f).matches_str(t), expected, "{f} vs {t}");
        }
    }

    #[test]
    fn wildcard_detection() {
        assert!(!filter("a/b").is_wildcard());
        assert!(filter("a/+").is_wildcard());
        assert!(filter("#").is_wildcard());
        let t = Topic::new("a/b").expect("valid");
        let f = TopicFilter::from(t.clone());
        assert!(!f.is_wildcard());
        assert!(f.matches(&t));
    }

    #[test]
    fn traits() {
        let t: Topic = "a/b".parse().expect("valid");
        assert_eq!(t.to_string(), "a/b");
        assert_eq!(format!("{t:?}"), "Topic(\"a/b\")");
        assert_eq!(t.levels().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(t, "a/b");
        assert!(Topic::try_from("x/+").is_err());
        assert!(Topic::try_from(String::from("x/y")).is_ok());
        assert!(TopicFilter::try_from("x/+").is_ok());
        let mut set = HashSet::new();
        set.insert(t.clone());
        assert!(set.contains("a/b"), "Borrow<str> must hash like str");
        let f: TopicFilter = "a/+".parse().expect("valid");
        let mut fset = HashSet::new();
        fset.insert(f);
        assert!(fset.contains("a/+"));
        assert!(Topic::new("a").ok() < Topic::new("b").ok());
    }

    #[test]
    fn serde_round_trip_and_validation() {
        let t = Topic::new("a/b").expect("valid");
        let json = serde_json::to_string(&t).expect("serialises");
        assert_eq!(json, "\"a/b\"");
        let back: Topic = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back, t);
        let err = serde_json::from_str::<Topic>("\"a/+\"").expect_err("wildcard rejected");
        assert!(err.to_string().contains("wildcard"), "{err}");
        let f: TopicFilter = serde_json::from_str("\"a/#\"").expect("deserialises");
        assert_eq!(f.as_str(), "a/#");
        assert!(serde_json::from_str::<TopicFilter>("\"a/#/b\"").is_err());
        assert!(serde_json::from_str::<TopicFilter>("3").is_err());
    }
}
