//! `mem://` URLs.

use busbar_core::error::ConnectError;
use busbar_core::transport::{BoxFuture, ConnectOptions};
use busbar_core::url::redact;
use busbar_core::{Connection, Connector};

use crate::MemBus;

/// Connects `mem://` (the default bus) and `mem://NAME` (a named bus) URLs.
///
/// One query parameter is understood: `?serialize=always` makes the connection serialise
/// every typed payload, as a broker transport must. Use it to run code against `mem://` and
/// still catch values that would not survive the trip through a real broker.
#[derive(Debug, Default, Clone, Copy)]
pub struct MemConnector;

/// How a `mem://` URL asks to connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemOptions {
    /// Serialise typed payloads instead of passing them through.
    pub serialize_always: bool,
}

impl MemConnector {
    /// The bus a `mem://` URL names.
    pub fn bus_for(url: &str) -> Result<MemBus, ConnectError> {
        Ok(Self::parse(url)?.0)
    }

    /// The bus and the options a `mem://` URL names.
    pub fn parse(url: &str) -> Result<(MemBus, MemOptions), ConnectError> {
        let invalid = |reason: &str| ConnectError::invalid_url(&redact(url), reason);
        let rest = url
            .split_once("://")
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("mem"))
            .map(|(_, rest)| rest)
            .ok_or_else(|| invalid("expected mem:// or mem://NAME"))?;
        let (name, query) = rest.split_once('?').unwrap_or((rest, ""));
        let name = name.strip_suffix('/').unwrap_or(name);
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
            return Err(invalid("a bus name may use letters, digits, '-', '_' and '.' only"));
        }
        let mut options = MemOptions::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("serialize", "always")) => options.serialize_always = true,
                Some(("serialize", "never")) => options.serialize_always = false,
                _ => {
                    return Err(invalid(&format!(
                        "unknown parameter {pair:?} (known: serialize=always|never)"
                    )));
                }
            }
        }
        Ok((MemBus::named(name), options))
    }
}

impl Connector for MemConnector {
    fn schemes(&self) -> &[&'static str] {
        &["mem"]
    }

    fn connect(
        &self,
        url: &str,
        options: ConnectOptions,
    ) -> BoxFuture<'static, Result<Connection, ConnectError>> {
        let parsed = Self::parse(url);
        Box::pin(async move {
            let (bus, mem) = parsed?;
            Ok(bus.connect_with(options, mem))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_buses() {
        assert_eq!(MemConnector::bus_for("mem://").expect("default").name(), "");
        assert_eq!(MemConnector::bus_for("mem://plant-1").expect("named").name(), "plant-1");
        let err = MemConnector::bus_for("mem://a/b").err().expect("invalid");
        assert!(err.to_string().contains("bus name"), "{err}");
        assert!(MemConnector::bus_for("mqtt://x").is_err());
        let (_, opts) = MemConnector::parse("mem://s?serialize=always").expect("options");
        assert!(opts.serialize_always);
        let err = MemConnector::parse("mem://s?colour=red").err().expect("unknown parameter");
        assert!(err.to_string().contains("colour"), "{err}");
    }
}
