//! Where the next connection goes: the next server of the URL's list, or the master the
//! Sentinels name (`?sentinel=NAME`); and the redis-rs client that connects there with the
//! current credentials. Every connection of the transport (the main one, the list readers)
//! is made with [`Shared::client`], so all of them follow a failover together.

use std::time::Duration;

use busbar_core::error::{ConnectError, ConnectErrorKind, OpError};
use busbar_transport_kit::backoff::backoff;
use busbar_transport_kit::{Login, Server, Servers};
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;

use super::state::{Shared, lock};
use crate::settings::Settings;

/// The server in use, the client for it, and where the connection stands in the list.
pub(super) struct Dialer {
    servers: Servers,
    /// The credentials presented: the URL's, with the current token in them.
    login: Login,
    server: Server,
    client: redis::Client,
    /// Failures in a row under Sentinel, where the list is of Sentinels, not servers.
    sentinel_failures: u32,
}

impl Dialer {
    /// Aims at the first server (under Sentinel, a placeholder until the first connect asks).
    pub(super) fn new(settings: &Settings, login: Login) -> Result<Dialer, ConnectError> {
        let servers = Servers::new(settings.servers.clone(), settings.server_order);
        let server = servers.current().clone();
        let client = crate::tls::client(settings, &server, &login, settings.db)?;
        Ok(Dialer { servers, login, server, client, sentinel_failures: 0 })
    }
}

impl Shared {
    /// The client every new connection is made with.
    pub(super) fn client(&self) -> redis::Client {
        lock(&self.dial).client.clone()
    }

    /// The server in use, as `host:port` (`unix:PATH` through a Unix socket).
    pub(super) fn server_in_use(&self) -> String {
        let dial = lock(&self.dial);
        match &self.settings.socket {
            Some(_) => dial.server.host.clone(),
            None => dial.server.to_string(),
        }
    }

    /// Presents `login` from the next connection on (a fresh token).
    pub(super) fn set_login(&self, login: Login) -> Result<(), ConnectError> {
        let mut dial = lock(&self.dial);
        dial.client = crate::tls::client(&self.settings, &dial.server, &login, self.settings.db)?;
        dial.login = login;
        Ok(())
    }

    /// A connection failed or was lost: moves on to the next server and says how long to
    /// wait before trying it.
    pub(super) fn server_failed(&self) -> Duration {
        let mut dial = lock(&self.dial);
        if self.settings.sentinel.is_some() {
            dial.sentinel_failures = dial.sentinel_failures.saturating_add(1);
            backoff(dial.sentinel_failures - 1)
        } else {
            dial.servers.failed()
        }
    }

    /// A connection was made: the next failure starts over.
    pub(super) fn server_connected(&self) {
        let mut dial = lock(&self.dial);
        dial.servers.connected();
        dial.sentinel_failures = 0;
    }

    /// Chooses the server for the next connection (asking the Sentinels where there are
    /// some) and prepares its client.
    pub(super) async fn aim(&self) -> Result<(), ConnectError> {
        let server = match &self.settings.sentinel {
            Some(name) => self.master_from_sentinels(name).await?,
            None => lock(&self.dial).servers.current().clone(),
        };
        let mut dial = lock(&self.dial);
        if dial.server != server {
            dial.client =
                crate::tls::client(&self.settings, &server, &dial.login, self.settings.db)?;
            dial.server = server;
        }
        Ok(())
    }

    /// Under Sentinel, refuses a connection to a server that is not (or no longer) the
    /// master: a replica takes PUBLISH too, but its subscribers are not the master's.
    pub(super) async fn check_master(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> Result<(), ConnectError> {
        let Some(name) = &self.settings.sentinel else { return Ok(()) };
        let role: Vec<redis::Value> =
            redis::cmd("ROLE").query_async(conn).await.map_err(|e| self.connect_error(e))?;
        let said = match role.first() {
            Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(redis::Value::SimpleString(s)) => s.clone(),
            _ => String::new(),
        };
        if said == "master" {
            return Ok(());
        }
        Err(OpError::new(
            ConnectErrorKind::Unreachable,
            format!(
                "{} is not the master of {name} (it says {said:?}); the Sentinels of {} \
                 have not caught up yet",
                self.server_in_use(),
                self.settings.redacted_url
            ),
        ))
    }

    /// Asks each Sentinel in turn where the master of `name` is.
    async fn master_from_sentinels(&self, name: &str) -> Result<Server, ConnectError> {
        let sentinels = lock(&self.dial).servers.all().to_vec();
        let url = &self.settings.redacted_url;
        let mut last_error = None;
        let mut unknown = 0;
        for sentinel in &sentinels {
            match self.ask_sentinel(sentinel, name).await {
                Ok(Some(master)) => return Ok(master),
                Ok(None) => unknown += 1,
                Err(e) => {
                    tracing::debug!(%sentinel, error = %e, "a Sentinel did not answer");
                    last_error = Some(e);
                }
            }
        }
        if unknown > 0 {
            return Err(OpError::new(
                ConnectErrorKind::Config,
                format!("the Sentinels of {url} know no master group named {name:?}"),
            ));
        }
        let mut error = OpError::new(
            ConnectErrorKind::Unreachable,
            format!("no Sentinel of {url} answered where the master of {name:?} is"),
        );
        if let Some(e) = last_error {
            error = error.with_source(e);
        }
        Err(error)
    }

    /// One Sentinel's answer: the master's address, or `None` when it knows no such group.
    async fn ask_sentinel(
        &self,
        sentinel: &Server,
        name: &str,
    ) -> Result<Option<Server>, ConnectError> {
        // Sentinels take no database and, here, no credentials.
        let client = crate::tls::client(&self.settings, sentinel, &Login::default(), 0)?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.settings.connect_timeout))
            .set_response_timeout(Some(self.settings.response_timeout));
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| self.connect_error(e))?;
        let answer: Option<(String, String)> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(name)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.connect_error(e))?;
        Ok(answer.and_then(|(host, port)| port.parse().ok().map(|port| Server { host, port })))
    }
}
