//! commlib's names and how each transport spells them.
//!
//! commlib names are dotted (`sensors.sonar.front`), with `*` as the one wildcard. On MQTT a
//! published name has every `.` turned into `/`; a subscription goes through commlib's
//! `_transform_topic`: a trailing `*` becomes `#`, then `.` becomes `/`, `/*` becomes `/+`,
//! and any other `*` becomes `#`.

use busbar_core::{Topic, TopicFilter};

use crate::error::{CommlibError, Result};

fn refuse(name: &str, reason: &str) -> CommlibError {
    CommlibError::Name { name: name.to_owned(), reason: reason.to_owned() }
}

/// Checks a name as commlib's publishers do: letters, digits, `/`, `.`, `-`, `_`, and not
/// just one of `.`, `-`, `_`.
pub fn validate_name(name: &str) -> Result<()> {
    check(name, false)
}

/// Checks a subscription pattern as commlib's pattern subscribers do (`*` allowed too).
pub fn validate_pattern(pattern: &str) -> Result<()> {
    check(pattern, true)
}

fn check(name: &str, pattern: bool) -> Result<()> {
    if name.is_empty() {
        return Err(refuse(name, "empty"));
    }
    if matches!(name, "." | "-" | "_" | "*") {
        return Err(refuse(name, "not a name on its own"));
    }
    let allowed = |c: char| {
        c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '-' | '_') || (pattern && c == '*')
    };
    if let Some(bad) = name.chars().find(|c| !allowed(*c)) {
        let what =
            if pattern { "letters, digits, / . - _ and *" } else { "letters, digits, / . - _" };
        return Err(refuse(name, &format!("{bad:?} is not allowed (only {what})")));
    }
    Ok(())
}

/// A node's name as commlib uses it: commlib 0.13.1 and 0.13.2 turn every `-` of a node
/// name into `_` (`Node.__init__`), so node `a-b` heartbeats on `a_b.heartbeat` and serves
/// `a_b.start` and `a_b.stop`. Names derived from a node go through this.
pub fn node_name(name: &str) -> String {
    name.replace('-', "_")
}

/// The MQTT topic commlib publishes `name` on: every `.` becomes `/`.
pub fn mqtt_topic(name: &str) -> Result<Topic> {
    validate_name(name)?;
    Topic::new(name.replace('.', "/")).map_err(|e| refuse(name, &e.to_string()))
}

/// The MQTT filter commlib subscribes to for `pattern` (its `_transform_topic`).
pub fn mqtt_filter(pattern: &str) -> Result<TopicFilter> {
    validate_pattern(pattern)?;
    let mut t = pattern.to_owned();
    if t.ends_with('*') {
        t.pop();
        t.push('#');
    }
    let t = t.replace('.', "/").replace("/*", "/+").replace('*', "#");
    TopicFilter::new(t).map_err(|e| refuse(pattern, &e.to_string()))
}

/// The busbar filter for a commlib pattern on AMQP, where `.` separates words (`/` here).
///
/// commlib's AMQP pattern subscribers bind with every `*` turned into `#` (any number of
/// words), so a trailing `*` is `#` here too: `sensors.*` takes `sensors.a` and
/// `sensors.a.b`. A `*` between words stays one word (`+`): a busbar filter has no
/// multi-word wildcard before its end, where commlib's `a.#.b` also takes `a.b` and
/// `a.x.y.b`.
pub fn amqp_filter(pattern: &str) -> Result<TopicFilter> {
    validate_pattern(pattern)?;
    let mut words: Vec<&str> = pattern.split('.').collect();
    if words.last() == Some(&"*") {
        words.pop();
        words.push("#");
    }
    let filter = words.join("/").replace('*', "+");
    TopicFilter::new(filter).map_err(|e| refuse(pattern, &e.to_string()))
}

/// The busbar topic for a commlib name on Redis: the channel is the name itself, dots and
/// all, which busbar's Redis transport publishes verbatim.
pub fn redis_topic(name: &str) -> Result<Topic> {
    validate_name(name)?;
    Topic::new(name).map_err(|e| refuse(name, &e.to_string()))
}

/// How busbar subscribes on Redis for a commlib subscription `pattern`.
///
/// commlib always subscribes with `PSUBSCRIBE pattern`: a Redis glob in which `*` matches any
/// characters, dots and slashes included. A name without `*` is one channel, subscribed as
/// such. A pattern with `*` says something no busbar filter can (busbar's wildcards stand for
/// whole `/` levels, and commlib's channels have none), so it is subscribed to every channel
/// (`#`) and each message is kept only when [`redis_glob_matches`] the pattern: the messages
/// are the ones commlib's subscriber gets, at the cost of reading all pub/sub traffic of that
/// Redis server.
pub fn redis_filter(pattern: &str) -> Result<RedisSubscription> {
    validate_pattern(pattern)?;
    if pattern.contains('*') {
        let filter = TopicFilter::new("#").map_err(|e| refuse(pattern, &e.to_string()))?;
        return Ok(RedisSubscription { filter, glob: Some(pattern.to_owned()) });
    }
    let filter = TopicFilter::new(pattern).map_err(|e| refuse(pattern, &e.to_string()))?;
    Ok(RedisSubscription { filter, glob: None })
}

/// A commlib subscription on Redis, as busbar makes it ([`redis_filter`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSubscription {
    /// What busbar subscribes to.
    pub filter: TopicFilter,
    /// The glob each message's channel must match, when the filter takes in more.
    pub glob: Option<String>,
}

/// Whether `channel` matches the commlib pattern `glob` as Redis matches it: `*` is any run
/// of characters, every other character (commlib allows no other glob specials) itself.
pub fn redis_glob_matches(glob: &str, channel: &str) -> bool {
    let (glob, channel) = (glob.as_bytes(), channel.as_bytes());
    // Greedy matching with one backtrack point, the last `*` seen: linear in practice.
    let (mut g, mut c) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while c < channel.len() {
        match glob.get(g) {
            Some(b'*') => {
                star = Some((g, c));
                g += 1;
            }
            Some(&b) if b == channel[c] => {
                g += 1;
                c += 1;
            }
            _ => match star {
                Some((sg, sc)) => {
                    g = sg + 1;
                    c = sc + 1;
                    star = Some((sg, sc + 1));
                }
                None => return false,
            },
        }
    }
    glob[g..].iter().all(|b| *b == b'*')
}

/// A fresh RPC reply name as commlib makes them: `rpc-` and 32 lowercase hex digits (no
/// dots, so it is the same on every transport).
pub fn reply_name() -> String {
    format!("rpc-{}", uuid::Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_names_follow_commlib() {
        assert_eq!(
            mqtt_topic("itest.sensors.sonar").expect("name").as_str(),
            "itest/sensors/sonar"
        );
        assert_eq!(mqtt_topic("a/b.c").expect("name").as_str(), "a/b/c");
        for (pattern, filter) in
            [("sensors.*", "sensors/#"), ("a.*.b", "a/+/b"), ("plain.name", "plain/name")]
        {
            assert_eq!(mqtt_filter(pattern).expect("pattern").as_str(), filter, "{pattern}");
        }
        assert_eq!(amqp_filter("a.*.b").expect("pattern").as_str(), "a/+/b");
        // A trailing `*` is any number of words, as commlib binds it (`#`).
        assert_eq!(amqp_filter("x.sensors.*").expect("pattern").as_str(), "x/sensors/#");
        assert_eq!(amqp_filter("a.*.b.*").expect("pattern").as_str(), "a/+/b/#");
        assert_eq!(redis_topic("a.b.c").expect("name").as_str(), "a.b.c");
        let glob = redis_filter("a.*").expect("pattern");
        assert_eq!((glob.filter.as_str(), glob.glob.as_deref()), ("#", Some("a.*")));
        let plain = redis_filter("a.b").expect("name");
        assert_eq!((plain.filter.as_str(), plain.glob), ("a.b", None));
        // commlib would send `#/a`, which no broker accepts: refused here instead.
        assert!(mqtt_filter("*.a").is_err());
    }

    #[test]
    fn redis_globs_match_as_redis_does() {
        for (glob, channel, matches) in [
            ("itest.sensors.*", "itest.sensors.sonar", true),
            ("itest.sensors.*", "itest.sensors.a.b", true),
            ("itest.sensors.*", "itest.sensors.", true),
            ("itest.sensors.*", "itest.sensors", false),
            ("itest.sensors.*", "itest.other.x", false),
            ("*.heartbeat", "node.a.heartbeat", true),
            ("*.heartbeat", "node.heartbeat.x", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYc.d", false),
            ("*", "", true),
            ("a", "a", true),
            ("a", "ab", false),
        ] {
            assert_eq!(redis_glob_matches(glob, channel), matches, "{glob} {channel}");
        }
    }

    #[test]
    fn node_names_follow_commlib() {
        assert_eq!(node_name("a-b"), "a_b");
        assert_eq!(node_name("robot-1.arm"), "robot_1.arm");
        assert_eq!(node_name("plain_name"), "plain_name");
    }

    #[test]
    fn bad_names_are_refused_with_the_reason() {
        for bad in ["", ".", "a b", "a#", "a+b", "é"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_name("a.*").is_err());
        assert!(validate_pattern("a.*").is_ok());
        let err = validate_name("a b").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("' '"), "{err}");
        let r = reply_name();
        assert!(r.starts_with("rpc-") && r.len() == 36 && !r.contains('.'));
    }
}
