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

/// The busbar filter for the binding key commlib's AMQP subscribers use: the pattern itself,
/// where `*` is one word (`+`) and `.` separates words (`/`).
pub fn amqp_filter(pattern: &str) -> Result<TopicFilter> {
    validate_pattern(pattern)?;
    TopicFilter::new(pattern.replace('.', "/").replace('*', "+"))
        .map_err(|e| refuse(pattern, &e.to_string()))
}

/// The busbar topic for a commlib name on Redis: the channel is the name itself, dots and
/// all, which busbar's Redis transport publishes verbatim.
pub fn redis_topic(name: &str) -> Result<Topic> {
    validate_name(name)?;
    Topic::new(name).map_err(|e| refuse(name, &e.to_string()))
}

/// The busbar filter for a commlib subscription on Redis. commlib subscribes with a Redis
/// glob, where `*` matches any characters, dots included, inside what busbar sees as one
/// topic level: a filter cannot say that, so patterns are refused with that reason.
pub fn redis_filter(pattern: &str) -> Result<TopicFilter> {
    validate_pattern(pattern)?;
    if pattern.contains('*') {
        return Err(refuse(
            pattern,
            "on Redis a commlib pattern is a glob across dots, which a busbar filter cannot \
             express; subscribe to the exact names",
        ));
    }
    TopicFilter::new(pattern).map_err(|e| refuse(pattern, &e.to_string()))
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
        assert_eq!(redis_topic("a.b.c").expect("name").as_str(), "a.b.c");
        assert!(redis_filter("a.*").is_err());
        // commlib would send `#/a`, which no broker accepts: refused here instead.
        assert!(mqtt_filter("*.a").is_err());
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
