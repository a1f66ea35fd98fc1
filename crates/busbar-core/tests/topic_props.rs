//! Property tests for topic matching, the dispatch trie and the broker mappings.
//!
//! Everything is checked against deliberately naive reference implementations written here
//! (recursive matchers over level slices, and small models of NATS, AMQP, Redis glob and
//! the Kafka regex forms busbar emits), so a clever optimisation in the library cannot agree
//! with itself while being wrong.

use busbar_core::topic::{
    Topic, TopicError, TopicFilter, TopicTrie, amqp_binding_key, amqp_routing_key,
    kafka_subscription, kafka_topic, nats_filters, nats_subject, redis_channel, redis_subscription,
    topic_from_amqp, topic_from_kafka, topic_from_nats, topic_from_redis,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------
// Reference matchers

/// busbar/MQTT matching without the `$` rule, by recursion over level slices.
fn naive_levels(filter: &[&str], topic: &[&str]) -> bool {
    match (filter.split_first(), topic.split_first()) {
        (Some((&"#", _)), _) => true,
        (Some((&"+", f_rest)), Some((_, t_rest))) => naive_levels(f_rest, t_rest),
        (Some((f, f_rest)), Some((t, t_rest))) => f == t && naive_levels(f_rest, t_rest),
        (None, None) => true,
        _ => false,
    }
}

fn split(s: &str, sep: char) -> Vec<&str> {
    s.split(sep).collect()
}

fn naive_no_dollar(filter: &str, topic: &str) -> bool {
    naive_levels(&split(filter, '/'), &split(topic, '/'))
}

/// Full busbar semantics: the `$` rule, then level-wise matching.
fn naive(filter: &str, topic: &str) -> bool {
    let first_wild = matches!(split(filter, '/')[0], "+" | "#");
    if first_wild && topic.starts_with('$') {
        return false;
    }
    naive_no_dollar(filter, topic)
}

/// NATS: `*` is one token, `>` one or more trailing tokens.
fn nats_matches(pattern: &[&str], subject: &[&str]) -> bool {
    match (pattern.split_first(), subject.split_first()) {
        (Some((&">", _)), Some(_)) => true,
        (Some((&"*", p)), Some((_, s))) => nats_matches(p, s),
        (Some((p0, p)), Some((s0, s))) => p0 == s0 && nats_matches(p, s),
        (None, None) => true,
        _ => false,
    }
}

/// AMQP topic exchange: `*` is one word, `#` zero or more words.
fn amqp_matches(pattern: &[&str], key: &[&str]) -> bool {
    match pattern.split_first() {
        Some((&"#", p)) => (0..=key.len()).any(|n| amqp_matches(p, &key[n..])),
        Some((&"*", p)) => !key.is_empty() && amqp_matches(p, &key[1..]),
        Some((p0, p)) => key.first() == Some(p0) && amqp_matches(p, &key[1..]),
        None => key.is_empty(),
    }
}

/// Redis glob as used by PSUBSCRIBE, for the subset busbar emits: `*`, `?` and `\` escapes.
fn glob_matches(pattern: &[char], s: &[char]) -> bool {
    match pattern.split_first() {
        None => s.is_empty(),
        Some(('*', p)) => (0..=s.len()).any(|n| glob_matches(p, &s[n..])),
        Some(('?', p)) => !s.is_empty() && glob_matches(p, &s[1..]),
        Some(('\\', p)) => match p.split_first() {
            Some((c, p)) => s.first() == Some(c) && glob_matches(p, &s[1..]),
            None => false,
        },
        Some((c, p)) => s.first() == Some(c) && glob_matches(p, &s[1..]),
    }
}

/// The regex forms busbar emits for Kafka: `^`, literal chars, `\.`, `[^.]+`, `(\..*)?`,
/// `.*`, `$`. Anything else fails the test, which also checks that nothing else is emitted.
#[derive(Debug)]
enum Re {
    Lit(char),
    NonDotPlus,
    OptDotAny,
    Any,
}

fn parse_kafka_regex(re: &str) -> Vec<Re> {
    let body = re
        .strip_prefix('^')
        .and_then(|r| r.strip_suffix('$'))
        .unwrap_or_else(|| panic!("not anchored: {re}"));
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix(r"\.") {
            out.push(Re::Lit('.'));
            rest = r;
        } else if let Some(r) = rest.strip_prefix("[^.]+") {
            out.push(Re::NonDotPlus);
            rest = r;
        } else if let Some(r) = rest.strip_prefix(r"(\..*)?") {
            out.push(Re::OptDotAny);
            rest = r;
        } else if let Some(r) = rest.strip_prefix(".*") {
            out.push(Re::Any);
            rest = r;
        } else {
            let c = rest.chars().next().unwrap_or_default();
            assert!(
                c.is_ascii_alphanumeric() || c == '_' || c == '-',
                "unexpected regex syntax at {rest:?} in {re}"
            );
            out.push(Re::Lit(c));
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

fn kafka_regex_matches(re: &[Re], s: &[char]) -> bool {
    match re.split_first() {
        None => s.is_empty(),
        Some((Re::Lit(c), r)) => s.first() == Some(c) && kafka_regex_matches(r, &s[1..]),
        Some((Re::NonDotPlus, r)) => {
            (1..=s.len()).take_while(|&n| s[n - 1] != '.').any(|n| kafka_regex_matches(r, &s[n..]))
        }
        Some((Re::OptDotAny, r)) => {
            kafka_regex_matches(r, s)
                || (s.first() == Some(&'.')
                    && (1..=s.len()).any(|n| kafka_regex_matches(r, &s[n..])))
        }
        Some((Re::Any, r)) => (0..=s.len()).any(|n| kafka_regex_matches(r, &s[n..])),
    }
}

// ---------------------------------------------------------------------------------------
// Generators

/// Level names for matching tests: few enough that random filters and topics often match,
/// with `$`-prefixed names to exercise the `$` rule.
const LEVELS: &[&str] = &["a", "b", "c", "$sys", "$x"];

fn topic_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(LEVELS), 1..5).prop_map(|l| l.join("/"))
}

fn filter_strategy() -> impl Strategy<Value = String> {
    let level = prop_oneof![
        3 => prop::sample::select(LEVELS),
        1 => Just("+"),
    ];
    (prop::collection::vec(level, 0..5), any::<bool>()).prop_map(|(mut levels, hash)| {
        if hash || levels.is_empty() {
            levels.push("#");
        }
        levels.join("/")
    })
}

/// Levels for mapping tests, including characters each broker reserves.
const MAPPING_LEVELS: &[&str] =
    &["a", "B-1", "c_d", "x.y", "s*", "g>", "sp ace", "$sys", "ü", "q?[", "back\\", "]"];

fn mapping_topic_strategy() -> impl Strategy<Value = Topic> {
    prop::collection::vec(prop::sample::select(MAPPING_LEVELS), 1..5)
        .prop_map(|l| Topic::new(l.join("/")).expect("generated topics are valid"))
}

/// A filter from [`SEMANTIC_LEVELS`] and a topic that, half of the time, is built from the
/// filter by filling in its wildcards (so matches are common), otherwise independent.
fn semantic_pair_strategy() -> impl Strategy<Value = (TopicFilter, Topic)> {
    let level = prop_oneof![
        3 => prop::sample::select(SEMANTIC_LEVELS),
        1 => Just("+"),
    ];
    let filter = (prop::collection::vec(level, 0..4), any::<bool>()).prop_map(|(mut l, hash)| {
        if hash || l.is_empty() {
            l.push("#");
        }
        l
    });
    let fill = prop::collection::vec(prop::sample::select(SEMANTIC_LEVELS), 6);
    let independent = prop::collection::vec(prop::sample::select(SEMANTIC_LEVELS), 1..5);
    (filter, fill, 0..3usize, any::<bool>(), independent).prop_map(
        |(filter, fill, extra, derive, independent)| {
            let topic_levels = if derive {
                let mut fill = fill.into_iter();
                let mut out = Vec::new();
                for level in &filter {
                    match *level {
                        "+" => out.extend(fill.next()),
                        "#" => out.extend(fill.by_ref().take(extra)),
                        literal => out.push(literal),
                    }
                }
                if out.is_empty() {
                    out.push("a");
                }
                out
            } else {
                independent
            };
            (
                TopicFilter::new(filter.join("/")).expect("generated filters are valid"),
                Topic::new(topic_levels.join("/")).expect("generated topics are valid"),
            )
        },
    )
}

/// Levels for the semantic mapping test: mostly representable everywhere, plus one `$`
/// level and a few that some brokers reserve.
const SEMANTIC_LEVELS: &[&str] = &["a", "b", "c-1", "$sys", "x.y", "q?[", "s*"];

/// Arbitrary short strings a broker might deliver, heavy in separators and specials.
fn broker_name_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec!['a', 'b', '.', '/', '*', '>', '#', '+', ' ', '-', '$', '_']),
        0..8,
    )
    .prop_map(|cs| cs.into_iter().collect())
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        // Keep failures reproducible from the printed seed instead of writing regression
        // files into the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn assert_not_representable_on(e: &TopicError, broker: &str) -> Result<(), TestCaseError> {
    match e {
        TopicError::NotRepresentable { broker: b, .. } => {
            prop_assert_eq!(*b, broker);
            Ok(())
        }
        other => Err(TestCaseError::fail(format!(
            "expected NotRepresentable on {broker}, got {other:?}"
        ))),
    }
}

proptest! {
    #![proptest_config(config())]

    /// (1) `TopicFilter::matches` agrees with the naive reference.
    #[test]
    fn filter_matches_like_reference(filter in filter_strategy(), topic in topic_strategy()) {
        let f = TopicFilter::new(&filter).expect("generated filters are valid");
        let t = Topic::new(&topic).expect("generated topics are valid");
        prop_assert_eq!(f.matches(&t), naive(&filter, &topic), "{} vs {}", filter, topic);
        prop_assert_eq!(f.matches_str(&topic), naive(&filter, &topic));
    }

    /// (2) The trie reports exactly the values whose filters match, each once.
    #[test]
    fn trie_dispatch_like_reference(
        filters in prop::collection::vec(filter_strategy(), 0..48),
        topics in prop::collection::vec(topic_strategy(), 1..16),
    ) {
        let mut trie = TopicTrie::new();
        for (i, f) in filters.iter().enumerate() {
            trie.insert(&TopicFilter::new(f).expect("valid"), i);
        }
        prop_assert_eq!(trie.len(), filters.len());
        for topic in &topics {
            let mut got = Vec::new();
            trie.for_each_match(topic, |&i| got.push(i));
            got.sort_unstable();
            let expected: Vec<usize> =
                (0..filters.len()).filter(|&i| naive(&filters[i], topic)).collect();
            prop_assert_eq!(got, expected, "topic {}", topic);
        }
        let mut listed: Vec<(String, usize)> =
            trie.iter().map(|(f, &i)| (f.as_str().to_owned(), i)).collect();
        listed.sort_unstable_by_key(|&(_, i)| i);
        let inserted: Vec<(String, usize)> =
            filters.iter().cloned().zip(0..).collect();
        prop_assert_eq!(listed, inserted);
    }

    /// (3) Removing every inserted value, in any order, empties the trie.
    #[test]
    fn insert_then_remove_empties(
        (filters, order) in prop::collection::vec(filter_strategy(), 0..32).prop_flat_map(|f| {
            let n = f.len();
            (Just(f), Just((0..n).collect::<Vec<usize>>()).prop_shuffle())
        }),
        topics in prop::collection::vec(topic_strategy(), 1..4),
    ) {
        let filters: Vec<TopicFilter> =
            filters.iter().map(|f| TopicFilter::new(f).expect("valid")).collect();
        let mut trie = TopicTrie::new();
        for (i, f) in filters.iter().enumerate() {
            trie.insert(f, i);
        }
        for (removed, &i) in order.iter().enumerate() {
            prop_assert_eq!(trie.remove(&filters[i], |&v| v == i), Some(i));
            prop_assert_eq!(trie.len(), filters.len() - removed - 1);
        }
        prop_assert!(trie.is_empty());
        prop_assert_eq!(trie.iter().count(), 0);
        for topic in &topics {
            let mut hits = 0;
            trie.for_each_match(topic, |_| hits += 1);
            prop_assert_eq!(hits, 0);
        }
        if let Some(f) = filters.first() {
            prop_assert_eq!(trie.remove(f, |_| true), None);
        }
    }

    /// (4a) Topics round-trip through every broker that can express them; the rest are
    /// refused with NotRepresentable naming that broker.
    #[test]
    fn topics_round_trip(topic in mapping_topic_strategy()) {
        match nats_subject(&topic) {
            Ok(s) => prop_assert_eq!(topic_from_nats(&s), Ok(topic.clone())),
            Err(e) => assert_not_representable_on(&e, "NATS")?,
        }
        match amqp_routing_key(&topic) {
            Ok(k) => prop_assert_eq!(topic_from_amqp(&k), Ok(topic.clone())),
            Err(e) => assert_not_representable_on(&e, "AMQP")?,
        }
        match kafka_topic(&topic) {
            Ok(k) => prop_assert_eq!(topic_from_kafka(&k), Ok(topic.clone())),
            Err(e) => assert_not_representable_on(&e, "Kafka")?,
        }
        prop_assert_eq!(topic_from_redis(redis_channel(&topic)), Ok(topic.clone()));
    }

    /// (4b) Names arriving from a broker that busbar accepts map back to the same name.
    #[test]
    fn broker_names_round_trip(name in broker_name_strategy()) {
        if let Ok(t) = topic_from_nats(&name) {
            prop_assert_eq!(nats_subject(&t), Ok(name.clone()));
        }
        if let Ok(t) = topic_from_amqp(&name) {
            prop_assert_eq!(amqp_routing_key(&t), Ok(name.clone()));
        }
        if let Ok(t) = topic_from_kafka(&name) {
            prop_assert_eq!(kafka_topic(&t), Ok(name.clone()));
        }
        if let Ok(t) = topic_from_redis(&name) {
            prop_assert_eq!(redis_channel(&t), name.as_str());
        }
    }

    /// (4c) Broker-side subscriptions select the same messages as the busbar filter
    /// (modulo the `$` rule, which NATS, AMQP and Redis do not apply and busbar re-checks
    /// locally), and Redis patterns never miss a message.
    #[test]
    fn subscriptions_match_like_filters((filter, topic) in semantic_pair_strategy()) {
        let expected_no_dollar = naive_no_dollar(filter.as_str(), topic.as_str());
        let expected = naive(filter.as_str(), topic.as_str());

        if let (Ok(subs), Ok(subject)) = (nats_filters(&filter), nats_subject(&topic)) {
            let got = subs.iter().any(|p| nats_matches(&split(p, '.'), &split(&subject, '.')));
            prop_assert_eq!(got, expected_no_dollar, "NATS {:?} vs {}", subs, subject);
        }
        if let (Ok(binding), Ok(key)) = (amqp_binding_key(&filter), amqp_routing_key(&topic)) {
            let got = amqp_matches(&split(&binding, '.'), &split(&key, '.'));
            prop_assert_eq!(got, expected_no_dollar, "AMQP {} vs {}", binding, key);
        }
        if let (Ok(sub), Ok(name)) = (kafka_subscription(&filter), kafka_topic(&topic)) {
            let got = if filter.is_wildcard() {
                prop_assert!(sub.starts_with('^'));
                let chars: Vec<char> = name.chars().collect();
                kafka_regex_matches(&parse_kafka_regex(&sub), &chars)
            } else {
                sub == name
            };
            prop_assert_eq!(got, expected, "Kafka {} vs {}", sub, name);
        }

        let redis = redis_subscription(&filter);
        let channel = redis_channel(&topic);
        let got = if redis.is_pattern {
            let p: Vec<char> = redis.pattern_or_channel.chars().collect();
            let s: Vec<char> = channel.chars().collect();
            glob_matches(&p, &s)
        } else {
            redis.pattern_or_channel == channel
        };
        if redis.needs_refilter {
            // Over-approximation: everything busbar wants must arrive.
            prop_assert!(got || !expected, "Redis {:?} misses {}", redis, channel);
        } else {
            prop_assert_eq!(got, expected, "Redis {:?} vs {}", redis, channel);
        }
        prop_assert_eq!(redis.is_pattern, filter.is_wildcard());
    }
}
