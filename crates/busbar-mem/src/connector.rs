//! `mem://` URLs.

use busbar_core::connection::redact_url;
use busbar_core::transport::{BoxFuture, ConnectOptions};
use busbar_core::{Connection, Connector, Error, Result};

use crate::MemBus;

/// Connects `mem://` (the default bus) and `mem://NAME` (a named bus) URLs.
#[derive(Debug, Default, Clone, Copy)]
pub struct MemConnector;

impl MemConnector {
    /// The bus a `mem://` URL names.
    pub fn bus_for(url: &str) -> Result<MemBus> {
        let invalid =
            |reason: &str| Error::InvalidUrl { url: redact_url(url), reason: reason.to_owned() };
        let rest = url
            .split_once("://")
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("mem"))
            .map(|(_, rest)| rest)
            .ok_or_else(|| invalid("expected mem:// or mem://NAME"))?;
        let name = rest.strip_suffix('/').unwrap_or(rest);
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
            return Err(invalid("a bus name may use letters, digits, '-', '_' and '.' only"));
        }
        Ok(MemBus::named(name))
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
    ) -> BoxFuture<'static, Result<Connection>> {
        let bus = Self::bus_for(url);
        Box::pin(async move { Ok(bus?.connect(options)) })
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
    }
}
