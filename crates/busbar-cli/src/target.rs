//! Which broker a command talks to: `--url`, or `--config FILE` with `--broker NAME`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use busbar::config::{Broker, Config};
use busbar::{ConnectOptions, Connection, Connector};

/// Where to connect.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// Broker URL, e.g. mqtt://127.0.0.1:1883 (default mem://, the in-process bus).
    #[arg(long, conflicts_with = "config")]
    url: Option<String>,
    /// Configuration file of named brokers (see docs/configuration.md).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Broker of the configuration file (default: the file's default broker).
    #[arg(long, value_name = "NAME", requires = "config")]
    broker: Option<String>,
    /// The client id to connect with (default: a random one). With a persistent session
    /// (MQTT `?session_expiry=SECS`), a command started again with the same id resumes
    /// where the last one stopped, even one that was killed.
    #[arg(long, value_name = "ID")]
    client_id: Option<String>,
    /// The configuration's broker, read once however often it is asked for.
    #[arg(skip)]
    entry: std::sync::OnceLock<Option<Broker>>,
}

impl Target {
    /// The target as one URL-like text, for messages (passwords hidden).
    pub fn describe(&self) -> anyhow::Result<String> {
        Ok(match self.broker_entry()? {
            Some(b) => format!("{} ({})", b.name, b.redacted_url()),
            None => busbar::url::redact(self.url()),
        })
    }

    fn url(&self) -> &str {
        self.url.as_deref().unwrap_or("mem://")
    }

    fn broker_entry(&self) -> anyhow::Result<Option<Broker>> {
        if let Some(entry) = self.entry.get() {
            return Ok(entry.clone());
        }
        let entry = match &self.config {
            Some(file) => Some(Config::load(file)?.broker(self.broker.as_deref())?.clone()),
            None => None,
        };
        Ok(self.entry.get_or_init(|| entry).clone())
    }

    /// The URL and connector for nodes.
    pub fn for_nodes(&self) -> anyhow::Result<(String, Arc<dyn Connector>)> {
        if self.client_id.is_some() {
            return Err(crate::exit::with(
                crate::profile::USAGE,
                "--client-id names one connection, and this command makes several",
            ));
        }
        Ok(match self.broker_entry()? {
            Some(b) => (b.url().to_owned(), b.connector()),
            None => (self.url().to_owned(), Arc::new(busbar::Registry::default())),
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
        let (outcome, shown) = match self.broker_entry()? {
            Some(b) => {
                (b.connect_with(options).await, format!("{} ({})", b.name, b.redacted_url()))
            }
            None => {
                (busbar::connect_with(self.url(), options).await, busbar::url::redact(self.url()))
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
        Ok(match self.broker_entry()? {
            Some(b) => b.url().to_owned(),
            None => self.url().to_owned(),
        })
    }
}
