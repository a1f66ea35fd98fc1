//! Configuration files: named brokers, a default one, credentials, tokens and topic prefixes,
//! with `${VAR}` references expanded inside values.
//!
//! ```yaml
//! default: plant
//! oidc:
//!   issuer: https://id.example.com/realms/plant
//!   client_id: gateway-7
//!   client_secret: ${OIDC_SECRET}
//! brokers:
//!   plant:
//!     url: mqtt://${MQTT_HOST:-127.0.0.1}:1883
//!     topic_prefix: site-a
//!   cloud:
//!     transport: amqp
//!     host: rabbit.example.com
//!     username: gateway
//!     password: ${AMQP_PASSWORD}
//!     tls: {}
//!     token: {oidc: {scope: amqp}}
//! ```
//!
//! CELINE's `brokers.yaml` (`brokers: {name: {enabled, auth_with_token, config: {...}}}` and
//! `default_broker`) loads too. `docs/configuration.md` describes every key, and
//! `docs/busbar-config.schema.json` is the file's JSON Schema.

mod expand;
mod file;
mod resolve;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use expand::{Expanded, FromConfigText};
pub use resolve::{BridgeSpec, Broker, OidcClient, TokenSource};

use crate::{Connection, Error, Result};

/// A configuration that could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the configuration {}: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Something in the file is wrong, at a known place.
    #[error("{}:{line}:{column}: {message}", file.display())]
    Invalid {
        /// The file.
        file: PathBuf,
        /// Line, from 1.
        line: usize,
        /// Column, from 1.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// Something in the file is wrong as a whole, or in a broker entry.
    #[error("{}: {message}", file.display())]
    Problem {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// No broker of that name.
    #[error("{}: no broker named {name:?} (it has {known})", file.display())]
    UnknownBroker {
        /// The file.
        file: PathBuf,
        /// The name asked for.
        name: String,
        /// The names it has.
        known: String,
    },
    /// The broker is there but `enabled: false`.
    #[error("{}: broker {name:?} is disabled", file.display())]
    Disabled {
        /// The file.
        file: PathBuf,
        /// Its name.
        name: String,
    },
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e.to_string())
    }
}

/// An environment variable a part of the file names and that is not set: where (line and
/// column), and the message.
#[derive(Debug, Clone)]
pub(crate) struct Unset {
    pub(crate) at: Option<(usize, usize)>,
    pub(crate) message: String,
}

/// A loaded configuration: brokers by name, and which one is the default.
#[derive(Debug, Clone)]
pub struct Config {
    file: PathBuf,
    brokers: BTreeMap<String, Broker>,
    /// Brokers that cannot be used here, with why: an environment variable their entry
    /// needs is not set. Said when one of them is asked for, not when the file is read.
    unusable: BTreeMap<String, Unset>,
    default: Option<String>,
    bridges: Vec<BridgeSpec>,
}

impl Config {
    /// Reads `path`, expanding `${VAR}` from the process environment.
    pub fn load(path: impl AsRef<Path>) -> std::result::Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = busbar_core::limits::read_bounded(path)
            .map_err(|source| ConfigError::Read { file: path.to_owned(), source })?;
        Config::parse(&text, path, |name| std::env::var(name).ok())
    }

    /// Reads configuration `text` (named `origin` in errors), looking variables up with
    /// `lookup`.
    pub fn parse(
        text: &str,
        origin: impl AsRef<Path>,
        lookup: impl Fn(&str) -> Option<String> + 'static,
    ) -> std::result::Result<Config, ConfigError> {
        let origin = origin.as_ref().to_owned();
        busbar_core::limits::check_document(text)
            .map_err(|message| ConfigError::Problem { file: origin.clone(), message })?;
        let lookup: std::sync::Arc<expand::Variables> = std::sync::Arc::new(lookup);
        let for_values = lookup.clone();
        expand::take_deferred();
        let parsed: std::result::Result<file::File, yaml_serde::Error> =
            expand::with_lookup(Box::new(move |name| for_values(name)), || {
                yaml_serde::from_str(text)
            });
        let deferred = expand::take_deferred();
        let parsed = parsed.map_err(|e| located(&origin, &e))?;
        // Where each part's first unset variable is: read the file again, failing there.
        let deferred = deferred
            .into_iter()
            .map(|(scope, message)| {
                let for_values = lookup.clone();
                let again: std::result::Result<file::File, yaml_serde::Error> =
                    expand::strictly_in(&scope, || {
                        expand::with_lookup(Box::new(move |name| for_values(name)), || {
                            yaml_serde::from_str(text)
                        })
                    });
                expand::take_deferred();
                let unset = match again.map_err(|e| located(&origin, &e)) {
                    Err(ConfigError::Invalid { line, column, message, .. }) => {
                        Unset { at: Some((line, column)), message }
                    }
                    _ => Unset { at: None, message },
                };
                (scope, unset)
            })
            .collect();
        resolve::resolve(parsed, &origin, lookup.as_ref(), deferred)
    }

    /// The file it came from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Every broker, enabled or not, by name; not those whose entry names an environment
    /// variable that is not set (asking [`Config::broker`] for one of them says which).
    pub fn brokers(&self) -> impl Iterator<Item = &Broker> {
        self.brokers.values()
    }

    /// The default broker's name: the file's `default` (or `default_broker`), else the only
    /// broker there is.
    pub fn default_name(&self) -> Option<&str> {
        self.default.as_deref()
    }

    /// The enabled broker `name`, or the default one for `None`.
    pub fn broker(&self, name: Option<&str>) -> std::result::Result<&Broker, ConfigError> {
        let name = match name.or(self.default.as_deref()) {
            Some(n) => n,
            None => {
                return Err(ConfigError::Problem {
                    file: self.file.clone(),
                    message: format!(
                        "no broker named and no default (set `default:`; it has {})",
                        self.known()
                    ),
                });
            }
        };
        if let Some(unset) = self.unusable.get(name) {
            let message = unset.message.clone();
            return Err(match unset.at {
                Some((line, column)) => {
                    ConfigError::Invalid { file: self.file.clone(), line, column, message }
                }
                None => ConfigError::Problem { file: self.file.clone(), message },
            });
        }
        let broker = self.brokers.get(name).ok_or_else(|| ConfigError::UnknownBroker {
            file: self.file.clone(),
            name: name.to_owned(),
            known: self.known(),
        })?;
        if !broker.enabled {
            return Err(ConfigError::Disabled { file: self.file.clone(), name: name.to_owned() });
        }
        Ok(broker)
    }

    fn known(&self) -> String {
        let names: std::collections::BTreeSet<&str> =
            self.brokers.keys().chain(self.unusable.keys()).map(String::as_str).collect();
        if names.is_empty() {
            return "none".into();
        }
        names.into_iter().collect::<Vec<_>>().join(", ")
    }

    /// The file's bridges.
    pub fn bridges(&self) -> &[BridgeSpec] {
        &self.bridges
    }

    /// Connects to every broker the bridges name (once each) and starts every bridge.
    pub async fn start_bridges(&self) -> Result<Vec<busbar_bridge::Bridge>> {
        let mut connections: BTreeMap<&str, Connection> = BTreeMap::new();
        let mut running = Vec::new();
        for spec in &self.bridges {
            for side in [&spec.from, &spec.to] {
                if !connections.contains_key(side.as_str()) {
                    connections.insert(side, self.connect(Some(side)).await?);
                }
            }
            let (Some(from), Some(to)) =
                (connections.get(spec.from.as_str()), connections.get(spec.to.as_str()))
            else {
                continue;
            };
            running.extend(spec.start(from, to).await.map_err(|e| match e {
                busbar_bridge::BridgeError::Busbar(e) => e,
                other => Error::Config(other.to_string()),
            })?);
        }
        Ok(running)
    }

    /// Connects to the broker `name` (the default one for `None`) with every transport
    /// compiled in.
    pub async fn connect(&self, name: Option<&str>) -> Result<Connection> {
        Ok(self.broker(name)?.connect().await?)
    }
}

/// Turns a YAML error into one that names the file, the line and the column.
fn located(file: &Path, e: &yaml_serde::Error) -> ConfigError {
    let text = e.to_string();
    match e.location() {
        Some(at) => {
            // The library appends "at line L column C"; the position is given apart.
            let message = match text.rfind(" at line ") {
                Some(i) => text[..i].to_owned(),
                None => text,
            };
            ConfigError::Invalid {
                file: file.to_owned(),
                line: at.line(),
                column: at.column(),
                message,
            }
        }
        None => ConfigError::Problem { file: file.to_owned(), message: text },
    }
}

#[cfg(test)]
mod tests;
