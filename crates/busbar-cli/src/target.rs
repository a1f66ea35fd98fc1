//! Which broker a command talks to: `--url`, or `--config FILE` with `--broker NAME`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use busbar::config::{Broker, Config};
use busbar::{ConnectOptions, Connection, Connector};

/// Where to connect.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// Broker URL, e.g. mqtt://127.0.0.1:1883 (or $BUSBAR_URL). Without one, and without a
    /// configuration, the in-process bus mem://, which nothing outside this process reaches.
    #[arg(long, conflicts_with = "config")]
    url: Option<String>,
    /// Configuration file of named brokers (or $BUSBAR_CONFIG; see docs/configuration.md).
    #[arg(short = 'c', long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Broker of the configuration file (or $BUSBAR_BROKER; default: the file's default
    /// broker).
    #[arg(long, value_name = "NAME")]
    broker: Option<String>,
    /// The client id to connect with (default: a random one). With a persistent session
    /// (MQTT `?session_expiry=SECS`), a command started again with the same id resumes
    /// where the last one stopped, even one that was killed.
    #[arg(long, value_name = "ID")]
    client_id: Option<String>,
    /// Where the command connects, worked out once from the options and the environment.
    #[arg(skip)]
    resolved: std::sync::OnceLock<Resolved>,
}

/// Where a command connects, from its options or else the environment.
#[derive(Debug, Clone)]
enum Resolved {
    Url(String),
    /// A configuration's broker, read once however often it is asked for.
    Config(Box<Broker>),
    /// Nothing was given: the in-process bus.
    InProcess,
}

/// The in-process bus, where nothing was given.
const IN_PROCESS: &str = "mem://";

/// An environment variable's value, unset and empty alike meaning nothing.
fn from_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Target {
    /// The target as one URL-like text, for messages (passwords hidden).
    pub fn describe(&self) -> anyhow::Result<String> {
        Ok(match self.resolved()? {
            Resolved::Config(b) => format!("{} ({})", b.name, b.redacted_url()),
            Resolved::Url(url) => busbar::url::redact(&url),
            Resolved::InProcess => IN_PROCESS.to_owned(),
        })
    }

    /// Options first, then `BUSBAR_URL`, then `BUSBAR_CONFIG` with `BUSBAR_BROKER`.
    fn resolved(&self) -> anyhow::Result<Resolved> {
        if let Some(resolved) = self.resolved.get() {
            return Ok(resolved.clone());
        }
        let usage = |text: &str| crate::exit::with(crate::profile::USAGE, text.to_owned());
        let config = |file: PathBuf| -> anyhow::Result<Resolved> {
            let broker = self.broker.clone().or_else(|| from_env("BUSBAR_BROKER"));
            let entry = Config::load(&file)?.broker(broker.as_deref())?.clone();
            Ok(Resolved::Config(Box::new(entry)))
        };
        let resolved = match (&self.url, &self.config) {
            (Some(url), _) => {
                if self.broker.is_some() {
                    return Err(usage("--broker names a broker of a configuration, not of --url"));
                }
                Resolved::Url(url.clone())
            }
            (None, Some(file)) => config(file.clone())?,
            (None, None) => match (from_env("BUSBAR_URL"), from_env("BUSBAR_CONFIG")) {
                (Some(_), Some(_)) => {
                    return Err(usage(
                        "BUSBAR_URL and BUSBAR_CONFIG are both set: unset one, or say --url or \
                         --config",
                    ));
                }
                (Some(_), None) if self.broker.is_some() => {
                    return Err(usage(
                        "--broker names a broker of a configuration (--config or BUSBAR_CONFIG), \
                         not of BUSBAR_URL",
                    ));
                }
                (Some(url), None) => Resolved::Url(url),
                (None, Some(file)) => config(PathBuf::from(file))?,
                (None, None) if self.broker.is_some() => {
                    return Err(usage(
                        "--broker needs a configuration: --config FILE or BUSBAR_CONFIG",
                    ));
                }
                (None, None) => Resolved::InProcess,
            },
        };
        Ok(self.resolved.get_or_init(|| resolved).clone())
    }

    /// The URL and connector for nodes.
    pub fn for_nodes(&self) -> anyhow::Result<(String, Arc<dyn Connector>)> {
        if self.client_id.is_some() {
            return Err(crate::exit::with(
                crate::profile::USAGE,
                "--client-id names one connection, and this command makes several",
            ));
        }
        Ok(match self.resolved()? {
            Resolved::Config(b) => (b.url().to_owned(), b.connector()),
            Resolved::Url(url) => (url, Arc::new(busbar::Registry::default())),
            Resolved::InProcess => (IN_PROCESS.to_owned(), Arc::new(busbar::Registry::default())),
        })
    }

    /// Connects.
    pub async fn connect(&self) -> anyhow::Result<Connection> {
        self.connect_with(ConnectOptions::new()).await
    }

    /// Connects within `limit` (the command's own deadline, which then covers connecting
    /// too); past it, the command ends with the deadline's exit code.
    pub async fn connect_within(&self, limit: std::time::Duration) -> anyhow::Result<Connection> {
        self.connect_with(ConnectOptions::new().connect_timeout(limit)).await
    }

    async fn connect_with(&self, options: ConnectOptions) -> anyhow::Result<Connection> {
        let options = match &self.client_id {
            Some(id) => options.client_id(id.clone()),
            None => options,
        };
        let (outcome, shown) = match self.resolved()? {
            Resolved::Config(b) => {
                (b.connect_with(options).await, format!("{} ({})", b.name, b.redacted_url()))
            }
            Resolved::Url(url) => {
                (busbar::connect_with(&url, options).await, busbar::url::redact(&url))
            }
            Resolved::InProcess => {
                // Said once: a subscriber or server on the in-process bus hears only this
                // process, which is rarely what someone who forgot --url wanted.
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| {
                    eprintln!(
                        "busbar: no broker given (--url, --config, BUSBAR_URL or BUSBAR_CONFIG): \
                         on the in-process bus {IN_PROCESS}, which nothing outside this process \
                         reaches"
                    );
                });
                (busbar::connect_with(IN_PROCESS, options).await, IN_PROCESS.to_owned())
            }
        };
        match outcome {
            Ok(conn) => Ok(conn),
            Err(e) if e.kind() == busbar::error::ConnectErrorKind::TimedOut => {
                // The error names the URL (without its secrets) already.
                Err(crate::exit::with(crate::exit::TIMEOUT, e.to_string()))
            }
            Err(e) => Err(e).with_context(|| format!("connecting to {shown}")),
        }
    }

    /// The URL itself (of the configuration's broker, or `--url`), for clients other than
    /// busbar's (`bench --compare`).
    pub fn raw_url(&self) -> anyhow::Result<String> {
        Ok(match self.resolved()? {
            Resolved::Config(b) => b.url().to_owned(),
            Resolved::Url(url) => url,
            Resolved::InProcess => IN_PROCESS.to_owned(),
        })
    }
}
