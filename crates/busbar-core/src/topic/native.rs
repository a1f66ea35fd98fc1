//! How canonical busbar names are spelled on each broker.
//!
//! busbar's syntax is MQTT's, so MQTT (and Redis, whose channel names are free-form) take
//! names unchanged. NATS, AMQP topic exchanges and Kafka use `.` as the level separator and
//! their own wildcard spellings; a busbar level that contains one of a broker's special
//! characters cannot be mapped without changing its meaning, so these functions refuse it
//! with [`TopicError::NotRepresentable`] instead of silently subscribing to something else.
//!
//! Where a broker's wildcards match *more* than busbar's (Redis `*` crosses `/`; NATS and
//! AMQP wildcards ignore MQTT's `$` rule), the transport must re-check each received topic
//! with [`TopicFilter::matches`] — which it does anyway when dispatching through a
//! [`TopicTrie`](super::TopicTrie). Where a broker's wildcards match *less* (NATS `a.>`
//! does not match `a`), the mapping returns several broker subscriptions.
//!
//! Each `topic_from_*` function is the inverse for names arriving from the broker; it
//! accepts exactly the names its forward mapping can produce, so names round-trip.
//!
//! The same rules are described for users in `docs/topics.md`.

use super::name::{Topic, TopicError, TopicFilter, excerpt};

const NATS: &str = "NATS";
const AMQP: &str = "AMQP";
const KAFKA: &str = "Kafka";

/// AMQP 0-9-1 routing and binding keys are `shortstr`s: at most 255 bytes.
const AMQP_MAX_KEY_LEN: usize = 255;

/// Kafka's limit on topic name length, in characters (all ASCII, so also bytes).
const KAFKA_MAX_TOPIC_LEN: usize = 249;

fn not_representable(name: &str, broker: &'static str, reason: String) -> TopicError {
    TopicError::NotRepresentable { name: excerpt(name), broker, reason }
}

// ---------------------------------------------------------------------------------------
// MQTT

/// The MQTT topic name for `topic`: busbar's syntax is MQTT's, so this is the identity.
pub fn mqtt_topic(topic: &Topic) -> &str {
    topic.as_str()
}

/// The MQTT subscription filter for `filter`: the identity, including the `$` rule.
pub fn mqtt_filter(filter: &TopicFilter) -> &str {
    filter.as_str()
}

/// The busbar topic for an MQTT topic name received from the broker.
///
/// Validates with [`Topic::new`]: MQTT allows names busbar does not (empty levels such as
/// `a//b` or `/a`), and those are reported with the usual validation errors.
pub fn topic_from_mqtt(name: &str) -> Result<Topic, TopicError> {
    Topic::new(name)
}

// ---------------------------------------------------------------------------------------
// NATS

/// Checks that a literal level can be a NATS subject token: `.` separates tokens, `*` and
/// `>` are wildcards, and NATS subjects may not contain whitespace.
fn check_nats_level(level: &str, name: &str) -> Result<(), TopicError> {
    match level.chars().find(|&c| matches!(c, '.' | '*' | '>') || c.is_whitespace()) {
        None => Ok(()),
        Some(ch) => Err(not_representable(
            name,
            NATS,
            format!(
                "level {:?} contains {ch:?}; NATS uses '.' to separate tokens, '*' and '>' as \
                 wildcards, and does not allow whitespace",
                excerpt(level)
            ),
        )),
    }
}

/// The NATS subject for `topic`: `/` becomes `.`.
///
/// Fails if a level contains `.`, `*`, `>` or whitespace.
pub fn nats_subject(topic: &Topic) -> Result<String, TopicError> {
    for level in topic.levels() {
        check_nats_level(level, topic.as_str())?;
    }
    Ok(topic.as_str().replace('/', "."))
}

/// The NATS subscriptions that together receive what `filter` matches: `/` becomes `.`,
/// `+` becomes `*`, `#` becomes `>`.
///
/// NATS `a.>` requires at least one more token, while busbar `a/#` also matches `a`
/// itself; so a filter ending in `/#` yields two subjects, `a` and `a.>`. A lone `#`
/// yields just `>`. Any other filter yields one subject. NATS wildcards do not apply the
/// `$` rule, so messages must be re-checked with [`TopicFilter::matches`] when the filter
/// starts with a wildcard.
///
/// Fails if a literal level contains `.`, `*`, `>` or whitespace.
pub fn nats_filters(filter: &TopicFilter) -> Result<Vec<String>, TopicError> {
    let mut prefix = String::with_capacity(filter.as_str().len());
    let mut multi = false;
    for level in filter.levels() {
        if level == "#" {
            multi = true;
            break;
        }
        if !prefix.is_empty() {
            prefix.push('.');
        }
        if level == "+" {
            prefix.push('*');
        } else {
            check_nats_level(level, filter.as_str())?;
            prefix.push_str(level);
        }
    }
    Ok(match (multi, prefix.is_empty()) {
        (true, true) => vec![">".to_owned()],
        (true, false) => {
            let with_rest = format!("{prefix}.>");
            vec![prefix, with_rest]
        }
        (false, _) => vec![prefix],
    })
}

/// The busbar topic for a NATS subject received from the broker: `.` becomes `/`.
///
/// Fails with [`TopicError::NotRepresentable`] for a wildcard subject, for tokens holding
/// `/` (busbar's separator), `+` or `#` (busbar's wildcards), `*`, `>` or whitespace, and
/// with the usual validation errors (reported on the `/` form, same positions) otherwise.
pub fn topic_from_nats(subject: &str) -> Result<Topic, TopicError> {
    for token in subject.split('.') {
        if token == "*" || token == ">" {
            return Err(not_representable(
                subject,
                NATS,
                format!("{token:?} is a NATS wildcard; a concrete subject was expected"),
            ));
        }
        if let Some(ch) =
            token.chars().find(|&c| matches!(c, '/' | '+' | '#' | '*' | '>') || c.is_whitespace())
        {
            return Err(not_representable(
                subject,
                NATS,
                format!(
                    "token {:?} contains {ch:?}, which has a special meaning in busbar topics \
                     or in NATS subjects",
                    excerpt(token)
                ),
            ));
        }
    }
    Topic::new(subject.replace('.', "/"))
}

// ---------------------------------------------------------------------------------------
// AMQP topic exchange

fn check_amqp_level(level: &str, name: &str) -> Result<(), TopicError> {
    match level.chars().find(|&c| matches!(c, '.' | '*' | '#')) {
        None => Ok(()),
        Some(ch) => Err(not_representable(
            name,
            AMQP,
            format!(
                "level {:?} contains {ch:?}; AMQP topic exchanges use '.' to separate words \
                 and '*' and '#' as wildcards",
                excerpt(level)
            ),
        )),
    }
}

fn check_amqp_len(name: &str) -> Result<(), TopicError> {
    if name.len() > AMQP_MAX_KEY_LEN {
        return Err(not_representable(
            name,
            AMQP,
            format!(
                "it is {} bytes long; AMQP routing and binding keys are limited to \
                 {AMQP_MAX_KEY_LEN} bytes",
                name.len()
            ),
        ));
    }
    Ok(())
}

/// The AMQP topic-exchange routing key for `topic`: `/` becomes `.`.
///
/// Fails if a level contains `.` or `*`, or the key would exceed 255 bytes.
pub fn amqp_routing_key(topic: &Topic) -> Result<String, TopicError> {
    check_amqp_len(topic.as_str())?;
    for level in topic.levels() {
        check_amqp_level(level, topic.as_str())?;
    }
    Ok(topic.as_str().replace('/', "."))
}

/// The AMQP topic-exchange binding key for `filter`: `/` becomes `.`, `+` becomes `*`,
/// `#` stays `#`.
///
/// AMQP `a.#` matches `a` just like busbar `a/#`, so one binding suffices. AMQP wildcards
/// do not apply the `$` rule; messages must be re-checked with [`TopicFilter::matches`]
/// when the filter starts with a wildcard.
///
/// Fails if a literal level contains `.`, `*` or `#`, or the key would exceed 255 bytes.
pub fn amqp_binding_key(filter: &TopicFilter) -> Result<String, TopicError> {
    check_amqp_len(filter.as_str())?;
    let mut key = String::with_capacity(filter.as_str().len());
    for (i, level) in filter.levels().enumerate() {
        if i > 0 {
            key.push('.');
        }
        match level {
            "+" => key.push('*'),
            "#" => key.push('#'),
            literal => {
                check_amqp_level(literal, filter.as_str())?;
                key.push_str(literal);
            }
        }
    }
    Ok(key)
}

/// The busbar topic for an AMQP routing key received from the broker: `.` becomes `/`.
///
/// Fails with [`TopicError::NotRepresentable`] for words holding `/`, `+`, `#` or `*`, and
/// with the usual validation errors (on the `/` form, same positions) otherwise.
pub fn topic_from_amqp(routing_key: &str) -> Result<Topic, TopicError> {
    check_amqp_len(routing_key)?;
    for word in routing_key.split('.') {
        if let Some(ch) = word.chars().find(|&c| matches!(c, '/' | '+' | '#' | '*')) {
            return Err(not_representable(
                routing_key,
                AMQP,
                format!(
                    "word {:?} contains {ch:?}, which has a special meaning in busbar topics or \
                     in AMQP binding keys",
                    excerpt(word)
                ),
            ));
        }
    }
    Topic::new(routing_key.replace('.', "/"))
}

// ---------------------------------------------------------------------------------------
// Redis

/// How to subscribe to a busbar filter on Redis pub/sub.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RedisSubscription {
    /// The channel (for `SUBSCRIBE`) or glob pattern (for `PSUBSCRIBE`).
    pub pattern_or_channel: String,
    /// Use `PSUBSCRIBE` rather than `SUBSCRIBE`.
    pub is_pattern: bool,
    /// The pattern can match channels the filter does not (Redis `*` crosses `/`, and the
    /// `$` rule is not applied), so each received channel must be checked with
    /// [`TopicFilter::matches_str`] before delivery.
    pub needs_refilter: bool,
}

/// The Redis channel for `topic`: the canonical name, unchanged (channels are binary-safe).
pub fn redis_channel(topic: &Topic) -> &str {
    topic.as_str()
}

/// How to subscribe to `filter` on Redis.
///
/// A filter without wildcards is a plain `SUBSCRIBE` to the channel of the same name. A
/// wildcard filter becomes a `PSUBSCRIBE` glob: literal levels with the glob specials
/// `* ? [ ] \` escaped by a backslash, `+` as `*`, and a trailing `#` as `*` placed right
/// after the preceding level (so `a/#` becomes `a*`, which matches `a` as well as `a/b`).
/// Redis `*` matches any run of characters including `/`, so the pattern over-matches
/// (`a*` also matches `ab`) and [`RedisSubscription::needs_refilter`] is set.
///
/// Every busbar filter can be expressed this way, so this cannot fail.
pub fn redis_subscription(filter: &TopicFilter) -> RedisSubscription {
    if !filter.is_wildcard() {
        return RedisSubscription {
            pattern_or_channel: filter.as_str().to_owned(),
            is_pattern: false,
            needs_refilter: false,
        };
    }
    let mut pattern = String::with_capacity(filter.as_str().len() + 8);
    // Whether the pattern ends with an unescaped '*' (from '+'), so a following '#' adds
    // nothing.
    let mut ends_with_star = false;
    for (i, level) in filter.levels().enumerate() {
        match level {
            "#" => {
                if !ends_with_star {
                    pattern.push('*');
                }
                break;
            }
            "+" => {
                if i > 0 {
                    pattern.push('/');
                }
                pattern.push('*');
                ends_with_star = true;
            }
            literal => {
                if i > 0 {
                    pattern.push('/');
                }
                for c in literal.chars() {
                    if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                        pattern.push('\\');
                    }
                    pattern.push(c);
                }
                ends_with_star = false;
            }
        }
    }
    RedisSubscription { pattern_or_channel: pattern, is_pattern: true, needs_refilter: true }
}

/// The busbar topic for a Redis channel received from the broker (validated with
/// [`Topic::new`]).
pub fn topic_from_redis(channel: &str) -> Result<Topic, TopicError> {
    Topic::new(channel)
}

// ---------------------------------------------------------------------------------------
// Kafka

/// Checks that a literal level can be part of a Kafka topic name. Kafka allows
/// `[A-Za-z0-9._-]`; `.` is taken as the level separator, so a level may use the rest.
fn check_kafka_level(level: &str, name: &str) -> Result<(), TopicError> {
    match level.chars().find(|&c| !(c.is_ascii_alphanumeric() || c == '_' || c == '-')) {
        None => Ok(()),
        Some('.') => Err(not_representable(
            name,
            KAFKA,
            format!(
                "level {:?} contains '.', which busbar uses as the level separator in Kafka \
                 topic names",
                excerpt(level)
            ),
        )),
        Some(ch) => Err(not_representable(
            name,
            KAFKA,
            format!(
                "level {:?} contains {ch:?}; Kafka topic names allow only ASCII letters, digits, \
                 '.', '_' and '-'",
                excerpt(level)
            ),
        )),
    }
}

fn check_kafka_len(name: &str, len: usize) -> Result<(), TopicError> {
    if len > KAFKA_MAX_TOPIC_LEN {
        return Err(not_representable(
            name,
            KAFKA,
            format!(
                "it needs {len} characters; Kafka topic names are limited to \
                 {KAFKA_MAX_TOPIC_LEN}"
            ),
        ));
    }
    Ok(())
}

/// The Kafka topic name for `topic`: `/` becomes `.`.
///
/// Fails if a level contains anything but ASCII letters, digits, `_` and `-`, or the name
/// would exceed 249 characters.
pub fn kafka_topic(topic: &Topic) -> Result<String, TopicError> {
    kafka_name(topic.as_str())
}

/// Maps a wildcard-free, validated busbar name to a Kafka topic name.
fn kafka_name(name: &str) -> Result<String, TopicError> {
    for level in name.split('/') {
        check_kafka_level(level, name)?;
    }
    check_kafka_len(name, name.len())?;
    Ok(name.replace('/', "."))
}

/// The Kafka subscription for `filter`: the plain topic name for a filter without
/// wildcards, otherwise a regular expression starting with `^` (librdkafka's and the Java
/// client's convention for pattern subscriptions).
///
/// Levels are joined by `\.`, `+` becomes `[^.]+`, and a trailing `#` becomes `(\..*)?`
/// (or `.*` on its own) so that `a/#` matches `a` too: `a/+/c` → `^a\.[^.]+\.c$`,
/// `a/#` → `^a(\..*)?$`. Literal levels need no escaping because the allowed characters are
/// not regex metacharacters. Kafka names cannot start with `$`, so the `$` rule never
/// applies.
///
/// Fails for literal levels Kafka cannot express (see [`kafka_topic`]) and for filters
/// whose shortest possible match would exceed 249 characters.
pub fn kafka_subscription(filter: &TopicFilter) -> Result<String, TopicError> {
    if !filter.is_wildcard() {
        return kafka_name(filter.as_str());
    }
    let mut regex = String::with_capacity(filter.as_str().len() * 2 + 8);
    regex.push('^');
    let mut min_len = 0;
    for (i, level) in filter.levels().enumerate() {
        if level == "#" {
            regex.push_str(if i == 0 { ".*" } else { r"(\..*)?" });
            break;
        }
        if i > 0 {
            regex.push_str(r"\.");
            min_len += 1;
        }
        if level == "+" {
            regex.push_str("[^.]+");
            min_len += 1;
        } else {
            check_kafka_level(level, filter.as_str())?;
            regex.push_str(level);
            min_len += level.len();
        }
    }
    check_kafka_len(filter.as_str(), min_len)?;
    regex.push('$');
    Ok(regex)
}

/// The busbar topic for a Kafka topic name received from the broker: `.` becomes `/`.
///
/// Fails with [`TopicError::NotRepresentable`] for characters Kafka does not allow or
/// names longer than 249 characters, and with the usual validation errors (on the `/`
/// form, same positions) for empty levels such as `a..b`.
pub fn topic_from_kafka(name: &str) -> Result<Topic, TopicError> {
    if let Some(ch) =
        name.chars().find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(not_representable(
            name,
            KAFKA,
            format!(
                "{ch:?} is not allowed; Kafka topic names use only ASCII letters, digits, '.', \
                 '_' and '-'"
            ),
        ));
    }
    check_kafka_len(name, name.len())?;
    Topic::new(name.replace('.', "/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(s: &str) -> Topic {
        Topic::new(s).expect("valid topic")
    }

    fn filter(s: &str) -> TopicFilter {
        TopicFilter::new(s).expect("valid filter")
    }

    /// Asserts `r` is a NotRepresentable error for `broker` whose message mentions every
    /// string in `mentions`.
    fn assert_not_representable<T: std::fmt::Debug>(
        r: Result<T, TopicError>,
        broker: &str,
        mentions: &[&str],
    ) {
        match r {
            Err(e @ TopicError::NotRepresentable { broker: b, .. }) => {
                assert_eq!(b, broker, "{e}");
                let msg = e.to_string();
                for m in mentions {
                    assert!(msg.contains(m), "{msg:?} should mention {m:?}");
                }
            }
            other => panic!("expected NotRepresentable for {broker}, got {other:?}"),
        }
    }

    #[test]
    fn mqtt_is_identity() {
        assert_eq!(mqtt_topic(&topic("a/b")), "a/b");
        assert_eq!(mqtt_filter(&filter("+/b/#")), "+/b/#");
        assert_eq!(topic_from_mqtt("$SYS/x"), Ok(topic("$SYS/x")));
        assert!(matches!(topic_from_mqtt("a//b"), Err(TopicError::EmptyLevel { .. })));
    }

    #[test]
    fn nats() {
        assert_eq!(nats_subject(&topic("a/b/c")).as_deref(), Ok("a.b.c"));
        assert_eq!(nats_subject(&topic("$SYS/x")).as_deref(), Ok("$SYS.x"));
        assert_eq!(nats_filters(&filter("a/b")), Ok(vec!["a.b".to_owned()]));
        assert_eq!(nats_filters(&filter("a/+/c")), Ok(vec!["a.*.c".to_owned()]));
        assert_eq!(nats_filters(&filter("#")), Ok(vec![">".to_owned()]));
        assert_eq!(nats_filters(&filter("a/#")), Ok(vec!["a".to_owned(), "a.>".to_owned()]));
        assert_eq!(nats_filters(&filter("+/#")), Ok(vec!["*".to_owned(), "*.>".to_owned()]));
        assert_not_representable(nats_subject(&topic("a/b.c")), "NATS", &["\"b.c\"", "'.'"]);
        assert_not_representable(nats_subject(&topic("a/*")), "NATS", &["'*'"]);
        assert_not_representable(nats_subject(&topic("a>")), "NATS", &["'>'"]);
        assert_not_representable(nats_subject(&topic("a b")), "NATS", &["' '", "whitespace"]);
        assert_not_representable(nats_filters(&filter("x.y/#")), "NATS", &["\"x.y\""]);

        assert_eq!(topic_from_nats("a.b.c"), Ok(topic("a/b/c")));
        assert_not_representable(topic_from_nats("a.*"), "NATS", &["wildcard"]);
        assert_not_representable(topic_from_nats(">"), "NATS", &["wildcard"]);
        assert_not_representable(topic_from_nats("a/b.c"), "NATS", &["'/'"]);
        assert_not_representable(topic_from_nats("a.b+"), "NATS", &["'+'"]);
        assert_not_representable(topic_from_nats("a.#"), "NATS", &["'#'"]);
        assert!(matches!(
            topic_from_nats("a..b"),
            Err(TopicError::EmptyLevel { level_index: 1, .. })
        ));
        assert_eq!(topic_from_nats(""), Err(TopicError::Empty));
    }

    #[test]
    fn amqp() {
        assert_eq!(amqp_routing_key(&topic("a/b")).as_deref(), Ok("a.b"));
        assert_eq!(amqp_binding_key(&filter("a/+/#")).as_deref(), Ok("a.*.#"));
        assert_eq!(amqp_binding_key(&filter("#")).as_deref(), Ok("#"));
        assert_eq!(amqp_binding_key(&filter("a b/c")).as_deref(), Ok("a b.c"));
        assert_not_representable(amqp_routing_key(&topic("a.b")), "AMQP", &["'.'"]);
        assert_not_representable(amqp_routing_key(&topic("a/*")), "AMQP", &["'*'"]);
        assert_not_representable(amqp_binding_key(&filter("a*/+")), "AMQP", &["\"a*\""]);
        let long = topic(&"x".repeat(256));
        assert_not_representable(amqp_routing_key(&long), "AMQP", &["256 bytes", "255"]);
        assert!(amqp_routing_key(&topic(&"x".repeat(255))).is_ok());
        assert_not_representable(
            amqp_binding_key(&filter(&format!("{}/#", "x".repeat(254)))),
            "AMQP",
            &["256 bytes"],
        );

        assert_eq!(topic_from_amqp("a.b"), Ok(topic("a/b")));
        assert_not_representable(topic_from_amqp("a.*"), "AMQP", &["'*'"]);
        assert_not_representable(topic_from_amqp("a/b"), "AMQP", &["'/'"]);
        assert_not_representable(topic_from_amqp("a.b#"), "AMQP", &["'#'"]);
        assert!(matches!(
            topic_from_amqp(".a"),
            Err(TopicError::EmptyLevel { level_index: 0, .. })
        ));
    }

    #[test]
    fn redis() {
        assert_eq!(redis_channel(&topic("a.b/c")), "a.b/c");
        assert_eq!(topic_from_redis("a/b"), Ok(topic("a/b")));
        assert!(topic_from_redis("a/+").is_err());

        let plain = redis_subscription(&filter("a/b*?"));
        assert_eq!(
            plain,
            RedisSubscription {
                pattern_or_channel: "a/b*?".into(),
                is_pattern: false,
                needs_refilter: false
            }
        );
        let cases = [
            ("a/+/c", "a/*/c"),
            ("a/#", "a*"),
            ("#", "*"),
            ("+", "*"),
            ("+/#", "*"),
            ("a/+/#", "a/*"),
            ("x*/[y]/?\\/+", "x\\*/\\[y\\]/\\?\\\\/*"),
        ];
        for (f, pattern) in cases {
            let sub = redis_subscription(&filter(f));
            assert_eq!(sub.pattern_or_channel, pattern, "{f}");
            assert!(sub.is_pattern && sub.needs_refilter, "{f}");
        }
    }

    #[test]
    fn kafka() {
        assert_eq!(kafka_topic(&topic("orders/eu-1/new_x")).as_deref(), Ok("orders.eu-1.new_x"));
        assert_eq!(kafka_subscription(&filter("a/b")).as_deref(), Ok("a.b"));
        assert_eq!(kafka_subscription(&filter("a/+/c")).as_deref(), Ok(r"^a\.[^.]+\.c$"));
        assert_eq!(kafka_subscription(&filter("a/#")).as_deref(), Ok(r"^a(\..*)?$"));
        assert_eq!(kafka_subscription(&filter("#")).as_deref(), Ok("^.*$"));
        assert_eq!(kafka_subscription(&filter("+/#")).as_deref(), Ok(r"^[^.]+(\..*)?$"));
        assert_not_representable(kafka_topic(&topic("a.b")), "Kafka", &["'.'", "separator"]);
        assert_not_representable(kafka_topic(&topic("a/b c")), "Kafka", &["' '", "ASCII"]);
        assert_not_representable(kafka_topic(&topic("$SYS/x")), "Kafka", &["'$'"]);
        assert_not_representable(kafka_topic(&topic("ü")), "Kafka", &["'ü'"]);
        assert_not_representable(kafka_subscription(&filter("a:b/+")), "Kafka", &["':'"]);
        let long = "x".repeat(250);
        assert_not_representable(kafka_topic(&topic(&long)), "Kafka", &["250", "249"]);
        assert!(kafka_topic(&topic(&"x".repeat(249))).is_ok());
        assert_not_representable(
            kafka_subscription(&filter(&format!("{}/+", "x".repeat(248)))),
            "Kafka",
            &["249"],
        );
        assert!(kafka_subscription(&filter(&format!("{}/+", "x".repeat(247)))).is_ok());

        assert_eq!(topic_from_kafka("a.b-c.d_e"), Ok(topic("a/b-c/d_e")));
        assert_not_representable(topic_from_kafka("a+b"), "Kafka", &["'+'"]);
        assert_not_representable(topic_from_kafka("a/b"), "Kafka", &["'/'"]);
        assert_not_representable(topic_from_kafka(&long), "Kafka", &["250"]);
        assert!(matches!(
            topic_from_kafka(".."),
            Err(TopicError::EmptyLevel { level_index: 0, .. })
        ));
    }
}
