//! `${VAR}` and `${VAR:-default}` inside configuration values.
//!
//! Expansion happens while a value is deserialized, so it touches values only (never keys or
//! comments), and an error carries the position of the value it happened in. The rules are
//! those of the CELINE loader, so its files mean the same here:
//!
//! * `${VAR}` is the variable's value; an unset variable is an error that names it. Inside
//!   a broker's entry, or the `oidc` section, that error waits until the broker is used
//!   (see [`scoped`]): a file serves many brokers, and a command that uses one of them
//!   should not need the secrets of the others.
//! * `${VAR:-default}` is the variable's value when it is set, **even when set to the empty
//!   string**, and `default` (which may be empty) otherwise.
//! * `$$` is a literal `$`; any other `$` stays as it is.
//!
//! The result is text, then read as the value's type: numbers, booleans (`true`/`yes`/`1`,
//! `false`/`no`/`0`, any case), durations in seconds.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// Where variables come from.
pub(crate) type Variables = dyn Fn(&str) -> Option<String>;

/// Looks a variable up.
pub(crate) type Lookup<'a> = &'a Variables;

thread_local! {
    /// The lookup of the configuration being read on this thread (parsing is synchronous).
    static LOOKUP: RefCell<Option<Box<Variables>>> = const { RefCell::new(None) };
}

thread_local! {
    /// The part of the file being read whose unset variables wait (see [`scoped`]).
    static SCOPE: RefCell<Option<String>> = const { RefCell::new(None) };
    /// For each such part, the first unset variable met in it.
    static DEFERRED: RefCell<BTreeMap<String, String>> = const { RefCell::new(BTreeMap::new()) };
    /// The part whose unset variables fail the read after all, to learn where they are.
    static STRICT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `f` (a read of the file) failing at the first unset variable of part `scope`, as
/// if it were not scoped: the error then carries the value's position in the file.
pub(crate) fn strictly_in<R>(scope: &str, f: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            STRICT.with(|s| *s.borrow_mut() = None);
        }
    }
    STRICT.with(|s| *s.borrow_mut() = Some(scope.to_owned()));
    let _reset = Reset;
    f()
}

/// Reads `f` as part `scope` of the file: a value there that names an unset variable is
/// read as a placeholder, and the error is kept for `scope` (see [`take_deferred`]) instead
/// of failing the whole file.
pub(crate) fn scoped<R>(scope: &str, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<String>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let outer = self.0.take();
            SCOPE.with(|s| *s.borrow_mut() = outer);
        }
    }
    let outer = SCOPE.with(|s| s.borrow_mut().replace(scope.to_owned()));
    let _restore = Restore(outer);
    f()
}

/// The unset variables met in each scope since the last call, by scope.
pub(crate) fn take_deferred() -> BTreeMap<String, String> {
    DEFERRED.with(|d| std::mem::take(&mut *d.borrow_mut()))
}

/// Runs `f` with `lookup` as the source of variables for every [`Expanded`] it reads.
pub(crate) fn with_lookup<R>(lookup: Box<Variables>, f: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            LOOKUP.with(|l| *l.borrow_mut() = None);
        }
    }
    LOOKUP.with(|l| *l.borrow_mut() = Some(lookup));
    let _reset = Reset;
    f()
}

/// Why text could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unexpanded {
    /// A variable without a default is not set: a matter of the environment.
    Unset(String),
    /// The text itself is wrong: a matter of the file.
    Malformed(String),
}

#[cfg(test)]
impl Unexpanded {
    fn message(self) -> String {
        match self {
            Unexpanded::Unset(m) | Unexpanded::Malformed(m) => m,
        }
    }
}

/// Expands the references in `text`.
#[cfg(test)]
fn expand(text: &str, lookup: Lookup<'_>) -> Result<String, String> {
    expand_checked(text, lookup).map_err(Unexpanded::message)
}

/// Expands the references in `text`, telling an unset variable from malformed text.
fn expand_checked(text: &str, lookup: Lookup<'_>) -> Result<String, Unexpanded> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        }
        let Some(body) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let Some(end) = body.find('}') else {
            return Err(Unexpanded::Malformed(format!("unclosed ${{ in {text:?}")));
        };
        let reference = &body[..end];
        let (name, default) = match reference.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (reference, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(Unexpanded::Malformed(format!(
                "${{{reference}}} does not name a variable (letters, digits, _)"
            )));
        }
        match (lookup(name), default) {
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => {
                return Err(Unexpanded::Unset(format!(
                    "environment variable {name} is not set (write ${{{name}:-default}} to \
                     give a default)"
                )));
            }
        }
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A value that may hold `${VAR}` references, read as `T` once they are expanded.
#[derive(Debug, Clone, PartialEq)]
pub struct Expanded<T>(pub T);

impl<T> Expanded<T> {
    /// The value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

/// Types a configuration value can be read as, from its expanded text.
pub trait FromConfigText: Sized {
    /// What the type is, for messages.
    const WHAT: &'static str;
    /// Reads the text.
    fn from_config_text(text: &str) -> Result<Self, String>;
    /// What stands for a value whose variable is not set, in a part of the file that is
    /// not used unless the variable is set (see `scoped` in this module). Never reaches a connection.
    fn placeholder() -> Self;
}

impl FromConfigText for String {
    const WHAT: &'static str = "text";
    fn from_config_text(text: &str) -> Result<Self, String> {
        Ok(text.to_owned())
    }
    fn placeholder() -> Self {
        String::new()
    }
}

impl FromConfigText for PathBuf {
    const WHAT: &'static str = "a file path";
    fn from_config_text(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("an empty file path".into());
        }
        Ok(PathBuf::from(text))
    }
    fn placeholder() -> Self {
        PathBuf::new()
    }
}

impl FromConfigText for bool {
    const WHAT: &'static str = "a boolean";
    fn from_config_text(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" | "on" => Ok(true),
            "false" | "no" | "0" | "off" => Ok(false),
            _ => Err(format!("{text:?} is not a boolean (true/false, yes/no, 1/0)")),
        }
    }
    fn placeholder() -> Self {
        false
    }
}

macro_rules! numeric {
    ($($t:ty => $what:literal),*) => {$(
        impl FromConfigText for $t {
            const WHAT: &'static str = $what;
            fn from_config_text(text: &str) -> Result<Self, String> {
                text.trim().parse().map_err(|_| format!("{text:?} is not {}", $what))
            }
            fn placeholder() -> Self {
                <$t>::default()
            }
        }
    )*};
}
numeric!(u16 => "a port number (0 to 65535)", u32 => "a whole number", u64 => "a whole number", f64 => "a number");

impl FromConfigText for Duration {
    const WHAT: &'static str = "a duration in seconds";
    fn from_config_text(text: &str) -> Result<Self, String> {
        let secs: f64 =
            text.trim().parse().map_err(|_| format!("{text:?} is not a number of seconds"))?;
        Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("{text:?} is not a usable number of seconds"))
    }
    fn placeholder() -> Self {
        Duration::ZERO
    }
}

impl<'de, T: FromConfigText> Deserialize<'de> for Expanded<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Scalar<T>(PhantomData<T>);

        impl<T: FromConfigText> Scalar<T> {
            fn read<E: de::Error>(text: &str) -> Result<Expanded<T>, E> {
                let expanded = LOOKUP.with(|l| match &*l.borrow() {
                    Some(lookup) => expand_checked(text, lookup.as_ref()),
                    None => expand_checked(text, &|name| std::env::var(name).ok()),
                });
                let expanded = match expanded {
                    Ok(text) => text,
                    Err(Unexpanded::Unset(message)) => {
                        let scope = SCOPE.with(|s| s.borrow().clone());
                        let strict = STRICT.with(|s| s.borrow().clone());
                        match scope.filter(|scope| strict.as_ref() != Some(scope)) {
                            Some(scope) => {
                                DEFERRED.with(|d| {
                                    d.borrow_mut().entry(scope).or_insert(message);
                                });
                                return Ok(Expanded(T::placeholder()));
                            }
                            None => return Err(E::custom(message)),
                        }
                    }
                    Err(Unexpanded::Malformed(message)) => return Err(E::custom(message)),
                };
                T::from_config_text(&expanded).map(Expanded).map_err(E::custom)
            }
        }

        impl<T: FromConfigText> Visitor<'_> for Scalar<T> {
            type Value = Expanded<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", T::WHAT)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Self::read(v)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Self::read(if v { "true" } else { "false" })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Self::read(&v.to_string())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Self::read(&v.to_string())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Self::read(&v.to_string())
            }
        }

        deserializer.deserialize_any(Scalar(PhantomData))
    }
}

/// In the JSON Schema a value is its type, or text with references in it.
#[cfg(test)]
impl<T: schemars::JsonSchema> schemars::JsonSchema for Expanded<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        format!("Expanded_{}", T::schema_name()).into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let inner = T::json_schema(generator);
        if inner.get("type").and_then(|t| t.as_str()) == Some("string") {
            return inner;
        }
        schemars::json_schema!({
            "anyOf": [inner, {"type": "string", "description": "with ${VAR} references"}]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("broker.local".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn references_expand_as_the_celine_loader_does() {
        assert_eq!(expand("mqtt://${HOST}:1883", &env).as_deref(), Ok("mqtt://broker.local:1883"));
        assert_eq!(expand("${PORT:-1883}", &env).as_deref(), Ok("1883"));
        // Set but empty: the empty value, not the default.
        assert_eq!(expand("[${EMPTY:-x}]", &env).as_deref(), Ok("[]"));
        assert_eq!(expand("${NOPE:-}", &env).as_deref(), Ok(""));
        assert_eq!(expand("cost $5, $$HOME", &env).as_deref(), Ok("cost $5, $HOME"));
        let err = expand("x ${MQTT_PASSWORD} y", &env).expect_err("unset");
        assert!(err.contains("MQTT_PASSWORD is not set"), "{err}");
        assert!(expand("${HOST", &env).is_err());
        assert!(expand("${A B}", &env).is_err());
    }

    #[test]
    fn values_read_as_their_type() {
        assert_eq!(bool::from_config_text("Yes"), Ok(true));
        assert_eq!(bool::from_config_text("0"), Ok(false));
        assert!(bool::from_config_text("maybe").is_err());
        assert_eq!(u16::from_config_text(" 8883 "), Ok(8883));
        assert!(u16::from_config_text("70000").is_err());
        assert_eq!(Duration::from_config_text("1.5"), Ok(Duration::from_millis(1500)));
        assert!(Duration::from_config_text("-1").is_err());
    }
}
