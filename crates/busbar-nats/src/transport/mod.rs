//! The NATS transport on async-nats.
//!
//! async-nats owns the socket in its own connection task: it reconnects (with busbar's
//! jittered backoff) and re-sends every subscription itself, and user calls only enqueue
//! commands to it. On top of that busbar keeps, each in its room:
//!
//! * `routes`: one NATS subscription (two for `a/#`) per distinct (filter, queue group) on
//!   this connection, shared by any number of local subscriptions, drained by its waker
//!   right where async-nats hands a message over (`pump`), with a stall task for a full
//!   `Block` queue;
//! * `replies`: the reply inbox of this connection's requests, drained the same way;
//! * `sync`: NATS has no SUBACK, so a subscribe resolves once a message this connection
//!   published to its own private sync subject (after the SUB) has come back;
//! * `events`: async-nats' events become [`ConnectionEvent`]s; `Reconnected` is sent only
//!   after a sync round trip on the new connection, so the re-subscriptions are in place.
//!   async-nats' slow-consumer drops (its per-subscription buffer overflowed) are counted in
//!   `dropped`;
//! * `state`: the connection state the rooms above it share (`subscribe`, `send`,
//!   `connect`), holding the parts below it, which know nothing of it (`pump`, `routes`,
//!   `replies`, `sync`, `events`);
//! * `subscribe`: local subscriptions joining their route;
//! * `send`: publishes, the drop-policy publish queue, and requests;
//! * `connect`: async-nats' options, credentials and tokens, and connect errors.

mod connect;
mod durable;
mod events;
mod kept;
mod pump;
mod replies;
mod routes;
mod send;
mod state;
mod subscribe;
mod sync;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busbar_core::error::{
    CloseError, CloseErrorKind, ConnectError, OpError, RequestError, SubscribeError,
};
use busbar_core::message::Message;
use busbar_core::stats::StatsSnapshot;
use busbar_core::transport::{
    Acknowledge, BoxFuture, Capabilities, Completion, ConnectOptions, ConnectionEvent,
    ConnectionEvents, NativeNames, SubscribeOptions, Subscription, Transport,
};
use busbar_core::{Overflow, QoS};
use busbar_transport_kit::endpoint::{self, config_error};
use busbar_transport_kit::login::{Refresher, first_token};
use busbar_transport_kit::{Inbox, Lifecycle, Meter, PublishQueue};
use tokio::sync::OnceCell;

use self::connect::TokenCache;
use self::events::EventSink;
use self::pump::lock;
use self::state::Shared;
use self::sync::{SyncPoint, handled_by_server};
use crate::settings::{Credentials, Settings};

/// How long `close` waits for buffered publishes to reach the server.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection to a NATS server.
pub struct NatsTransport {
    shared: Arc<Shared>,
    capabilities: Capabilities,
    /// The publish queue when a drop policy is configured (`Block` publishes go straight to
    /// async-nats' bounded command channel and wait there).
    publish_queue: Option<PublishQueue>,
}

fn capabilities(max_payload: usize, max_control_line: usize) -> Capabilities {
    let mut c = Capabilities::none(NativeNames::Dotted);
    c.queue_groups = true;
    c.native_request = true;
    c.headers = true;
    c.no_responders = true;
    // Core NATS: at most once, nothing retained, no expiry, no last will, and no-echo is per
    // connection rather than per subscription.
    c.max_qos = QoS::AtMostOnce;
    // Durable subscriptions are JetStream streams with a durable consumer, acknowledged
    // one message at a time (the server needs JetStream enabled).
    c.durable = true;
    c.acknowledgements = true;
    c.max_payload = (max_payload > 0).then_some(max_payload);
    // What a command line without a reply subject leaves for the subject (a request's own
    // line is checked when it is sent).
    c.max_topic_bytes = Some(max_control_line.saturating_sub(send::control_line_len(0, None)));
    c
}

impl NatsTransport {
    /// Connects; resolves once the server accepted the connection.
    pub async fn connect(
        url: &str,
        options: ConnectOptions,
    ) -> Result<NatsTransport, ConnectError> {
        let mut settings = Settings::parse(url)?;
        if let Some(limit) = options.connect_timeout {
            settings.connect_timeout = limit;
        }
        let (limit, shown) = (settings.connect_timeout, settings.shown.clone());
        endpoint::connect_within(limit, &shown, Self::connect_with(settings, options)).await
    }

    async fn connect_with(
        settings: Settings,
        options: ConnectOptions,
    ) -> Result<NatsTransport, ConnectError> {
        if options.token.is_some() && matches!(settings.credentials, Credentials::CredsFile(_)) {
            return Err(config_error(
                "a NATS connection takes a token provider or a creds file, not both",
            ));
        }
        if options.requires_last_will() {
            // Core NATS has no last will; publishing one ourselves on a crash is impossible.
            // An optional one (the node's) is left out.
            return Err(OpError::unsupported("nats", "last will"));
        }
        let client_id = options
            .client_id
            .clone()
            .unwrap_or_else(|| format!("busbar-{}", uuid::Uuid::new_v4().simple()));
        let meter = Meter::new();
        let sink = Arc::new(EventSink::new(&meter));
        let life = Lifecycle::new(&settings.shown);
        let tokens = match &options.token {
            Some(provider) => {
                let first = first_token(provider).await?;
                Some((provider.clone(), first.clone(), TokenCache::new(provider.clone(), first)))
            }
            None => None,
        };
        let client = connect::options(
            &settings,
            &client_id,
            tokens.as_ref().map(|(_, _, cache)| cache),
            options.token_placement,
            sink.clone(),
        )
        .await?
        .connect(settings.server_addresses())
        .await
        .map_err(|e| connect::connect_error(e, &settings.shown))?;
        let sync = SyncPoint::start(&client, life.token().clone()).await?;
        let kept = Arc::new(kept::KeptSubjects::default());
        kept::follow(&client, &kept, life.token().clone()).await;
        let mut js = async_nats::jetstream::new(client.clone());
        js.set_timeout(settings.confirm_timeout);
        let max_payload = client.max_payload();
        let max_control_line = settings.max_control_line;
        let shared = Arc::new(Shared {
            client,
            client_id,
            settings,
            sink: sink.clone(),
            inbox: Arc::new(Inbox::new(&meter)),
            meter,
            routes: Mutex::default(),
            next_id: AtomicU64::new(1),
            life,
            sync,
            replies: OnceCell::new(),
            last_subject: Mutex::new(None),
            acks: Arc::default(),
            durables: Mutex::default(),
            kept,
            js,
        });
        let weak = Arc::downgrade(&shared);
        sink.on_reconnect(move || {
            if let Some(s) = weak.upgrade() {
                s.reconnected();
            }
        });
        if let Some((provider, first, cache)) = tokens {
            let refresher = Refresher::start(provider, first, shared.life.token().clone());
            tokio::spawn(connect::present_fresh_tokens(Arc::downgrade(&shared), cache, refresher));
        }
        let publish_queue = match shared.settings.publish_queue.overflow {
            Overflow::Block => None,
            _ => {
                let forward = shared.clone();
                Some(PublishQueue::start(
                    shared.settings.publish_queue,
                    &shared.meter,
                    shared.life.token().clone(),
                    move |m| {
                        let s = forward.clone();
                        async move { s.publish_now(m).await }
                    },
                ))
            }
        };
        shared.meter.announce(ConnectionEvent::Connected { server: shared.server_in_use() });
        Ok(NatsTransport {
            shared,
            capabilities: capabilities(max_payload, max_control_line),
            publish_queue,
        })
    }

    /// The parsed settings this connection was made with.
    pub fn settings(&self) -> &Settings {
        &self.shared.settings
    }

    fn end(&self) -> bool {
        let s = &self.shared;
        if !s.life.end() {
            return false;
        }
        // Subscriptions end: their senders go with the routes (and the stall tasks, which
        // stop on the shutdown token).
        let routes = std::mem::take(&mut *lock(&s.routes));
        for route in routes.values() {
            route.end();
        }
        s.sync.clear();
        s.inbox.fail_all(RequestError::closed);
        s.meter.announce(ConnectionEvent::Closed);
        true
    }
}

impl Drop for NatsTransport {
    fn drop(&mut self) {
        // Dropped without close: everything stops; async-nats closes the socket once the
        // last client handle is gone.
        self.end();
    }
}

impl Transport for NatsTransport {
    fn kind(&self) -> &'static str {
        "nats"
    }

    fn client_id(&self) -> &str {
        &self.shared.client_id
    }

    fn server(&self) -> Option<String> {
        self.shared.meter.server()
    }

    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn publish(&self, message: Message) -> Completion<'_> {
        match &self.publish_queue {
            Some(queue) => Completion::ready(self.shared.enqueue(queue, message)),
            None => Completion::Pending(Box::pin(self.shared.publish_now(message))),
        }
    }

    fn remove_durable<'a>(
        &'a self,
        name: &'a str,
        filter: &'a busbar_core::topic::TopicFilter,
    ) -> BoxFuture<'a, Result<(), SubscribeError>> {
        Box::pin(durable::remove(&self.shared, name, filter))
    }

    fn subscribe(
        &self,
        options: SubscribeOptions,
    ) -> BoxFuture<'_, Result<Subscription, SubscribeError>> {
        Box::pin(async move {
            self.shared.life.check()?;
            match options.durable.clone() {
                Some(name) => durable::subscribe(&self.shared, options, &name).await,
                None if options.acknowledge != Acknowledge::OnHandOver => {
                    Err(OpError::unsupported(
                        "nats",
                        "acknowledgements on a subscription that is not durable (core NATS \
                         tracks none)",
                    ))
                }
                None => subscribe::subscribe(&self.shared, options).await,
            }
        })
    }

    fn request(
        &self,
        message: Message,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Message, RequestError>> {
        Box::pin(self.shared.request(message, timeout))
    }

    fn events(&self) -> ConnectionEvents {
        self.shared.meter.events()
    }

    fn stats(&self) -> StatsSnapshot {
        self.shared.meter.snapshot()
    }

    fn close(&self) -> BoxFuture<'_, Result<(), CloseError>> {
        Box::pin(async move {
            if !self.end() {
                return Ok(());
            }
            // Durable deliveries not acknowledged go back to the server (each pump, stopped
            // by the end above, ends its pull first and then gives back what it held), and
            // the acknowledgements made go out, before the connection goes.
            let durables: Vec<_> = lock(&self.shared.durables).drain(..).collect();
            let pumps_ended = async {
                for outstanding in durables.iter().filter_map(std::sync::Weak::upgrade) {
                    outstanding.ended().await;
                }
            };
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, pumps_ended).await;
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.shared.acks.idle()).await;
            // Publishes and acknowledgements already handed to async-nats must have reached
            // the server before the connection goes: a flush only writes them into the
            // socket, so a round trip through the server confirms they were handled (the
            // next process on another connection must not see an acknowledged message again).
            let unflushed = handled_by_server(&self.shared.client, CLOSE_TIMEOUT).await.err();
            match tokio::time::timeout(CLOSE_TIMEOUT, self.shared.client.drain()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "drain on close"),
                Err(_) => tracing::debug!("drain on close took too long"),
            }
            match unflushed {
                // Something was published that the server may never have seen.
                Some(why) if self.shared.meter.snapshot().published > 0 => Err(OpError::new(
                    CloseErrorKind::Unconfirmed,
                    format!("publishes may not have reached the server: {why}"),
                )),
                _ => Ok(()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_say_what_core_nats_lacks() {
        let c = capabilities(1024, 4096);
        assert!(c.queue_groups && c.native_request && c.headers && c.no_responders);
        assert!(!c.retained && !c.expiry && !c.last_will && !c.no_local && !c.typed_payloads);
        assert_eq!(c.native_names, NativeNames::Dotted);
        assert_eq!(c.max_payload, Some(1024));
    }
}
