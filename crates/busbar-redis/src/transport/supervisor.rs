//! The supervisor: the one task that owns the main connection. It opens it (subscribing
//! everything and re-joining every queue group), repairs it with jittered exponential
//! backoff when it is lost, carries out unsubscriptions and group departures, and puts each
//! fresh token to use.

use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use busbar_core::auth::{Token, TokenPlacement};
use busbar_core::error::ConnectError;
use busbar_core::queue::{Pushed, QueueSender};
use busbar_core::transport::ConnectionEvent;
use busbar_transport_kit::Meter;
use busbar_transport_kit::login::{Login, Refresher};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use super::groups::{self, CTL_CHANNEL, GroupCache};
use super::receive::Inbound;
use super::state::{Ctl, Link, Shared};

impl Shared {
    /// Opens the main connection, subscribes the control channel and everything local
    /// subscriptions need, re-joins queue groups and reloads the group registry.
    pub(super) async fn open_main(
        self: &Arc<Self>,
        inbound: &Arc<QueueSender<Inbound>>,
    ) -> Result<MultiplexedConnection, ConnectError> {
        self.aim().await?;
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let push = {
            let inbound = inbound.clone();
            let ctl = self.ctl.clone();
            let groups = self.groups.clone();
            let meter = self.meter.clone();
            move |info: PushInfo| -> Result<(), ()> {
                on_push(info, generation, &inbound, &ctl, &groups, &meter);
                Ok(())
            }
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.settings.connect_timeout))
            .set_response_timeout(Some(self.settings.response_timeout))
            .set_push_sender(push);
        let mut conn = self
            .client()
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| self.connect_error(e))?;
        self.check_master(&mut conn).await?;
        let _guard = self.sub_lock.lock().await;
        // The control channel first, then the registry: no notice can fall in between.
        conn.subscribe(CTL_CHANNEL).await.map_err(|e| self.connect_error(e))?;
        let keys = self.routes().channel_keys();
        for (pattern, key) in keys {
            let r = if pattern { conn.psubscribe(&key).await } else { conn.subscribe(&key).await };
            r.map_err(|e| self.connect_error(e))?;
        }
        let entries = self.routes().group_entries();
        for entry in entries {
            groups::join(&mut conn, &self.client_id, &entry)
                .await
                .map_err(|e| self.connect_error(e))?;
        }
        // A server that lost its data (restarted without persistence) learns the durable
        // subscriptions read here again; what it kept is not touched.
        let durables = self.routes().durable_entries();
        for (entry, key) in durables {
            groups::register_durable(&mut conn, &entry, &key)
                .await
                .map_err(|e| self.connect_error(e))?;
        }
        let all = groups::registry(&mut conn).await.map_err(|e| self.connect_error(e))?;
        self.groups.write().unwrap_or_else(|p| p.into_inner()).replace(all);
        Ok(conn)
    }

    /// Owns the main connection: repairs it with jittered exponential backoff when lost and
    /// carries out unsubscriptions.
    pub(super) async fn supervise(
        self: Arc<Self>,
        mut ctl: mpsc::UnboundedReceiver<Ctl>,
        inbound: Arc<QueueSender<Inbound>>,
    ) {
        loop {
            let msg = tokio::select! {
                _ = self.life.token().cancelled() => return,
                m = ctl.recv() => match m { Some(m) => m, None => return },
            };
            match msg {
                Ctl::Lost(generation) => {
                    if generation != self.generation.load(Ordering::Acquire) {
                        continue;
                    }
                    if !self.repair(&inbound).await {
                        return;
                    }
                }
                Ctl::Unsubscribe((pattern, key)) => {
                    let _guard = self.sub_lock.lock().await;
                    if self.routes().has_channel(&(pattern, key.clone())) {
                        continue; // subscribed again meanwhile
                    }
                    if let Some(mut conn) = self.live() {
                        let r = if pattern {
                            conn.punsubscribe(&key).await
                        } else {
                            conn.unsubscribe(&key).await
                        };
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "unsubscribe failed");
                        }
                    }
                }
                Ctl::Leave(entry) => {
                    let _guard = self.sub_lock.lock().await;
                    if self.routes().has_group(&entry) {
                        continue;
                    }
                    if let Some(mut conn) = self.live()
                        && let Err(e) = groups::leave(&mut conn, &self.client_id, &entry).await
                    {
                        tracing::debug!(error = %e, "leaving a queue group failed");
                    }
                }
            }
        }
    }

    /// The main connection is gone: reports it, and opens a new one, waiting longer after
    /// each failure. False when the transport closed meanwhile.
    async fn repair(self: &Arc<Self>, inbound: &Arc<QueueSender<Inbound>>) -> bool {
        let reason = "the connection to the Redis server was lost".to_owned();
        self.link.send_replace(Link::Down(reason.clone()));
        self.meter.announce(ConnectionEvent::Disconnected { reason });
        loop {
            let wait = self.server_failed();
            tokio::select! {
                _ = self.life.token().cancelled() => return false,
                _ = tokio::time::sleep(wait) => {}
            }
            match self.open_main(inbound).await {
                Ok(conn) => {
                    if self.life.token().is_cancelled() {
                        return false;
                    }
                    self.server_connected();
                    self.link.send_replace(Link::Up(conn));
                    let server = self.server_in_use();
                    self.meter.announce(ConnectionEvent::Reconnected { server });
                    return true;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "reconnect to Redis failed");
                }
            }
        }
    }

    /// The first connection: each server of the list once, in order, until one takes it
    /// (the connect bound applies to all of them together). Under Sentinel, one try: the
    /// Sentinels themselves are asked in turn.
    pub(super) async fn first_connection(
        self: &Arc<Self>,
        inbound: &Arc<QueueSender<Inbound>>,
    ) -> Result<MultiplexedConnection, ConnectError> {
        let tries = if self.settings.sentinel.is_some() { 1 } else { self.settings.servers.len() };
        let mut tried = 0;
        loop {
            match self.open_main(inbound).await {
                Ok(conn) => {
                    self.server_connected();
                    return Ok(conn);
                }
                Err(e) => {
                    tried += 1;
                    if tried == tries {
                        return Err(e);
                    }
                    tracing::debug!(server = %self.server_in_use(), error = %e, "trying the next server");
                    self.server_failed();
                }
            }
        }
    }

    /// Puts each fresh token to use until the transport closes.
    pub(super) async fn keep_token_fresh(
        self: Arc<Self>,
        mut refresher: Refresher,
        login: Login,
        placement: TokenPlacement,
    ) {
        while let Some(token) = refresher.next().await {
            self.apply_token(&token, &login, placement).await;
        }
    }

    /// Puts a fresh token to use: kept for the next reconnect, and the live connection
    /// re-authenticates with it (Redis keeps subscriptions across AUTH).
    async fn apply_token(&self, token: &Token, login: &Login, placement: TokenPlacement) {
        let presented = login.with_token(token, placement);
        if let Err(e) = self.set_login(presented.clone()) {
            tracing::warn!(error = %e, "could not apply the new token");
        }
        if let Some(mut conn) = self.live() {
            let mut auth = redis::cmd("AUTH");
            if let Some(u) = presented.user {
                auth.arg(u);
            }
            auth.arg(presented.password.unwrap_or_default());
            if let Err(e) = auth.exec_async(&mut conn).await {
                tracing::warn!(error = %e, "re-AUTH with the new token failed");
            }
        }
    }
}

/// Called by redis-rs's connection driver for every push (it must not block).
fn on_push(
    info: PushInfo,
    generation: u64,
    inbound: &QueueSender<Inbound>,
    ctl: &mpsc::UnboundedSender<Ctl>,
    groups: &RwLock<GroupCache>,
    meter: &Meter,
) {
    let mut data = info.data.into_iter();
    let (pattern, channel, payload) = match info.kind {
        PushKind::Disconnection => {
            let _ = ctl.send(Ctl::Lost(generation));
            return;
        }
        PushKind::Message => match (data.next(), data.next()) {
            (Some(c), Some(p)) => (None, bulk(c), bulk(p)),
            _ => return,
        },
        PushKind::PMessage => match (data.next(), data.next(), data.next()) {
            (Some(pat), Some(c), Some(p)) => (Some(bulk(pat)), bulk(c), bulk(p)),
            _ => return,
        },
        _ => return,
    };
    let (Some(channel), Some(payload)) = (channel, payload) else { return };
    if pattern.is_none() && channel == CTL_CHANNEL.as_bytes() {
        // Applied here, in socket order: a reply read after this notice (say to a
        // SUBSCRIBE) can only be seen once the publisher's view includes the change.
        groups.write().unwrap_or_else(|p| p.into_inner()).apply(&payload);
        return;
    }
    let pattern = match pattern {
        Some(Some(p)) => Some(p),
        Some(None) => return,
        None => None,
    };
    if let Pushed::Dropped { first_of_burst } =
        inbound.try_push(Inbound { pattern, channel, payload })
    {
        // The push buffer (`?push_buffer=`) overflowed: the dispatcher is behind.
        meter.dropped_upstream("(redis push buffer)", first_of_burst);
    }
}

fn bulk(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}
