//! [`Node`]: a named component owning one connection shared by all its endpoints.
//!
//! A node publishes heartbeats (and registers a last will saying it is gone), creates typed
//! endpoints on its connection, and stops gracefully: servers stop taking work, requests and
//! goals in flight get a bounded time to finish, a final DOWN heartbeat is sent, and the
//! connection closes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::connection::{Connection, Connector};
use crate::error::{Error, Result};
use crate::patterns::action::{ActionClient, ActionServer, GoalHandler};
use crate::patterns::heartbeat::{self, DEFAULT_TOLERANCE, LivenessMonitor};
use crate::patterns::rpc::{DrainReport, RpcClient, RpcHandler, RpcServer};
use crate::patterns::{EventEmitter, Publisher, Subscriber};
use crate::transport::{BoxFuture, ConnectOptions};

/// Default heartbeat interval.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
/// Default bound on draining work in flight at stop.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(5);

/// Configures and starts a [`Node`].
pub struct NodeBuilder {
    name: String,
    url: String,
    connector: Option<Arc<dyn Connector>>,
    heartbeat: Option<Duration>,
    drain: Duration,
}

impl NodeBuilder {
    /// A node named `name` (one topic level: it appears in heartbeat topics).
    pub fn new(name: impl Into<String>) -> Self {
        NodeBuilder {
            name: name.into(),
            url: "mem://".to_owned(),
            connector: None,
            heartbeat: Some(DEFAULT_HEARTBEAT),
            drain: DEFAULT_DRAIN,
        }
    }

    /// The broker URL (default `mem://`).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// What turns the URL into a connection (the `busbar` crate supplies every transport
    /// compiled in).
    pub fn connector(mut self, connector: Arc<dyn Connector>) -> Self {
        self.connector = Some(connector);
        self
    }

    /// Heartbeat interval; `None` disables heartbeats and the last will.
    pub fn heartbeat(mut self, interval: Option<Duration>) -> Self {
        self.heartbeat = interval;
        self
    }

    /// Bound on draining requests and goals in flight at stop.
    pub fn drain_timeout(mut self, drain: Duration) -> Self {
        self.drain = drain;
        self
    }

    /// Connects and starts the node.
    pub async fn start(self) -> Result<Node> {
        let connector = self.connector.clone().ok_or_else(|| {
            Error::Config(
                "no connector: use busbar::node(..) or set one with .connector(..)".into(),
            )
        })?;
        // Refuse bad settings before connecting, not after.
        heartbeat::heartbeat_topic(&self.name)?;
        if let Some(interval) = self.heartbeat
            && interval < heartbeat::MIN_INTERVAL
        {
            return Err(Error::Config(format!(
                "heartbeat interval {interval:?} is below the minimum of {:?}",
                heartbeat::MIN_INTERVAL
            )));
        }
        let mut options = ConnectOptions::new().client_id(self.name.clone());
        if let Some(interval) = self.heartbeat {
            options = options.last_will_if_supported(heartbeat::last_will(&self.name, interval)?);
        }
        let conn = connector.connect(&self.url, options).await?;
        self.start_on(conn)
    }

    /// Starts the node on an existing connection (no last will is registered then).
    pub fn start_on(self, conn: Connection) -> Result<Node> {
        heartbeat::heartbeat_topic(&self.name)?;
        let stop = CancellationToken::new();
        let heartbeat = match self.heartbeat {
            Some(interval) => {
                Some(heartbeat::spawn_heartbeat(&conn, &self.name, interval, stop.clone())?)
            }
            None => None,
        };
        Ok(Node {
            name: self.name,
            conn,
            stop,
            heartbeat,
            drain: self.drain,
            servers: Mutex::new(Vec::new()),
        })
    }
}

/// Something the node drains at stop.
trait Drainable: Send {
    fn drain(self: Box<Self>, bound: Duration) -> BoxFuture<'static, DrainReport>;
}

impl Drainable for RpcServer {
    fn drain(self: Box<Self>, bound: Duration) -> BoxFuture<'static, DrainReport> {
        Box::pin(self.stop(bound))
    }
}

impl Drainable for ActionServer {
    fn drain(self: Box<Self>, bound: Duration) -> BoxFuture<'static, DrainReport> {
        Box::pin(self.stop(bound))
    }
}

/// What a stop did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StopReport {
    /// Requests and goals that finished during the drain.
    pub completed: usize,
    /// Requests and goals aborted at the drain bound.
    pub aborted: usize,
}

/// A named component: one connection, its endpoints, its heartbeat.
pub struct Node {
    name: String,
    conn: Connection,
    stop: CancellationToken,
    heartbeat: Option<JoinHandle<()>>,
    drain: Duration,
    servers: Mutex<Vec<Box<dyn Drainable>>>,
}

impl Node {
    /// Configures a node.
    pub fn builder(name: impl Into<String>) -> NodeBuilder {
        NodeBuilder::new(name)
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's connection (clone it freely).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// A typed publisher on `topic`.
    pub fn publisher<T: Serialize + Send + Sync + 'static>(
        &self,
        topic: &str,
    ) -> Result<Publisher<T>> {
        Publisher::new(&self.conn, topic)
    }

    /// A typed subscriber to `filter`.
    pub async fn subscriber<T: DeserializeOwned + Send + Sync + 'static>(
        &self,
        filter: &str,
    ) -> Result<Subscriber<T>> {
        Subscriber::new(&self.conn, filter).await
    }

    /// An RPC client of the service on `topic`.
    pub fn rpc_client<Req, Resp>(&self, topic: &str) -> Result<RpcClient<Req, Resp>>
    where
        Req: Serialize + Send + Sync + 'static,
        Resp: DeserializeOwned + Send + Sync + 'static,
    {
        Ok(RpcClient::new(&self.conn, topic)?)
    }

    /// Serves RPCs on `topic`; the node drains the server at stop.
    pub async fn serve_rpc<Req, Resp, H>(&self, topic: &str, handler: H) -> Result<()>
    where
        Req: DeserializeOwned + Send + Sync + 'static,
        Resp: Serialize + Send + Sync + 'static,
        H: RpcHandler<Req, Resp>,
    {
        let server = RpcServer::spawn(&self.conn, topic, handler).await?;
        self.adopt(Box::new(server));
        Ok(())
    }

    /// Hands a server built with its own builder to the node, to be drained at stop.
    pub fn adopt_rpc_server(&self, server: RpcServer) {
        self.adopt(Box::new(server));
    }

    /// Hands an action server to the node, to be drained at stop.
    pub fn adopt_action_server(&self, server: ActionServer) {
        self.adopt(Box::new(server));
    }

    /// Serves the action `name`; the node drains it at stop.
    pub async fn serve_action<G, F, R, H>(&self, name: &str, handler: H) -> Result<()>
    where
        G: DeserializeOwned + Send + Sync + 'static,
        F: Serialize + Send + Sync + 'static,
        R: Serialize + Send + Sync + 'static,
        H: GoalHandler<G, F, R>,
    {
        let server = ActionServer::builder::<G>(&self.conn, name).serve(handler).await?;
        self.adopt(Box::new(server));
        Ok(())
    }

    /// A client of the action `name`.
    pub async fn action_client<G, F, R>(&self, name: &str) -> Result<ActionClient<G, F, R>>
    where
        G: Serialize + Send + Sync + 'static,
        F: DeserializeOwned + Send + Sync + 'static,
        R: DeserializeOwned + Send + Sync + 'static,
    {
        ActionClient::new(&self.conn, name).await
    }

    /// An event emitter under `base`.
    pub fn event_emitter(&self, base: &str) -> Result<EventEmitter> {
        EventEmitter::new(&self.conn, base)
    }

    /// A liveness monitor of every node on this connection's broker.
    pub async fn liveness_monitor(&self) -> Result<LivenessMonitor> {
        LivenessMonitor::spawn(&self.conn, DEFAULT_TOLERANCE).await
    }

    fn adopt(&self, server: Box<dyn Drainable>) {
        self.servers.lock().unwrap_or_else(|p| p.into_inner()).push(server);
    }

    /// Stops gracefully: servers stop taking work, work in flight gets the drain bound to
    /// finish, a DOWN heartbeat is sent, the connection closes.
    pub async fn stop(mut self) -> Result<StopReport> {
        let servers = std::mem::take(&mut *self.servers.lock().unwrap_or_else(|p| p.into_inner()));
        let drains: Vec<_> = servers.into_iter().map(|s| s.drain(self.drain)).collect();
        let mut report = StopReport::default();
        for r in futures_util::future::join_all(drains).await {
            report.completed += r.completed;
            report.aborted += r.aborted;
        }
        self.stop.cancel();
        if let Some(hb) = self.heartbeat.take() {
            // The DOWN heartbeat waits on subscribers like any publish: bound it too.
            match tokio::time::timeout(self.drain, hb).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "heartbeat task failed"),
                Err(_) => {
                    tracing::warn!(node = %self.name, "final heartbeat not sent within the drain bound")
                }
            }
        }
        self.conn.close().await?;
        Ok(report)
    }

    /// Runs until SIGINT (Ctrl-C) or SIGTERM, then stops gracefully.
    pub async fn run_until_signal(self) -> Result<StopReport> {
        wait_for_signal().await?;
        tracing::info!(node = %self.name, "signal received, stopping");
        self.stop().await
    }
}

impl Drop for Node {
    /// A node dropped without `stop` stops heartbeating without announcing a stop: to its
    /// monitors it falls silent, and its last will speaks for it if this was the last handle
    /// to the connection.
    fn drop(&mut self) {
        if let Some(hb) = self.heartbeat.take() {
            hb.abort();
        }
    }
}

async fn wait_for_signal() -> Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}
