//! The Redis transport: one multiplexed RESP3 connection for commands and pub/sub, owned by a
//! supervisor task, plus one dedicated connection per blocking list reader. The parts, each
//! in its room:
//!
//! * `routes`: which local subscriptions each Redis subscription and each list feeds;
//! * `groups`: the queue-group registry, this connection's cache of it, joining and leaving;
//! * `state`: the connection state every part shares;
//! * `supervisor`: the main connection, its repair, and fresh tokens;
//! * `receive`: pub/sub messages routed to local subscriptions;
//! * `lists`: the `BLMPOP` readers of queue groups, named queues and the reply inbox;
//! * `send`: the publish queue and its pipelining forwarder, and requests;
//! * `subscribe`: plain subscriptions, queue groups and named queues.

mod dial;
mod groups;
mod lists;
mod receive;
mod routes;
mod send;
mod state;
mod streams;
mod subscribe;
mod supervisor;

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busbar_core::Overflow;
use busbar_core::error::{
    CloseError, CloseErrorKind, ConnectError, OpError, RequestError, SubscribeError,
};
use busbar_core::message::{Message, QoS};
use busbar_core::queue::{QueueConfig, queue};
use busbar_core::stats::StatsSnapshot;
use busbar_core::topic::Topic;
use busbar_core::transport::{
    BoxFuture, Capabilities, Completion, ConnectOptions, ConnectionEvent, ConnectionEvents,
    NativeNames, SubscribeOptions, Subscription, Transport,
};
use busbar_transport_kit::login::{Refresher, first_token};
use busbar_transport_kit::{Inbox, Lifecycle, Login, Meter, endpoint, ids};
use tokio::sync::{mpsc, oneshot, watch};

use self::state::{KIND, Link, MAX_PAYLOAD, Outgoing, Shared, inbox_key};
use crate::settings::Settings;

/// How long a graceful close waits for queued publishes to be sent.
const CLOSE_FLUSH: Duration = Duration::from_secs(5);

/// A connection to a Redis server. See the crate documentation for the mapping.
pub struct RedisTransport {
    shared: Arc<Shared>,
    capabilities: Capabilities,
}

fn capabilities() -> Capabilities {
    let mut c = Capabilities::none(NativeNames::Flat);
    c.queue_groups = true;
    c.named_queues = true;
    c.expiry = true;
    c.no_responders = true;
    c.max_qos = QoS::AtMostOnce;
    c.max_payload = Some(MAX_PAYLOAD);
    // A durable subscription is a stream in the registry (see `streams`); acknowledging
    // on read or explicitly is for those only.
    c.durable = true;
    c.acknowledgements = true;
    c
}

impl RedisTransport {
    /// Connects to `url` (`redis://` or `rediss://`). The first connection attempt is made
    /// here and its failure returned; later losses are repaired in the background.
    ///
    /// # Errors
    ///
    /// A [`ConnectError`] whose kind says why: `InvalidUrl` for a bad URL, `Unsupported` for
    /// a required last will, `Credentials` when the token provider gives no token, `Refused`
    /// when the server refuses the credentials, `Config` for unreadable TLS files, `Tls` when
    /// the handshake fails, `Unreachable` or `TimedOut` when the server cannot be reached.
    pub async fn connect(
        url: &str,
        options: ConnectOptions,
    ) -> Result<RedisTransport, ConnectError> {
        let mut settings = Settings::parse(url)?;
        if let Some(limit) = options.connect_timeout {
            settings.connect_timeout = limit;
        }
        let (limit, shown) = (settings.connect_timeout, settings.redacted_url.clone());
        endpoint::connect_within(limit, &shown, Self::connect_with(settings, options)).await
    }

    async fn connect_with(
        settings: Settings,
        options: ConnectOptions,
    ) -> Result<RedisTransport, ConnectError> {
        if options.requires_last_will() {
            // Redis has no last will (an optional one, like the node's, is left out).
            return Err(OpError::unsupported(KIND, "last will"));
        }
        let client_id = options
            .client_id
            .clone()
            .unwrap_or_else(|| format!("busbar-{}", &ids::random_name()[..12]));
        let token = match &options.token {
            Some(provider) => Some(first_token(provider).await?),
            None => None,
        };
        let login = Login { user: settings.username.clone(), password: settings.password.clone() };
        let dialer =
            dial::Dialer::new(&settings, login.with(token.as_ref(), options.token_placement))?;
        let (outgoing, out_rx) =
            queue(QueueConfig::new(settings.publish_queue, settings.publish_overflow));
        let (inbound_tx, inbound_rx) =
            queue(QueueConfig::new(settings.push_buffer, Overflow::DropNewest));
        let (ctl, ctl_rx) = mpsc::unbounded_channel();
        // Unguessable: nobody else can read this connection's replies, or push forged ones
        // ahead of them without knowing a request's correlation id too.
        let inbox_topic = Topic::inbox(ids::random_bytes());
        let meter = Meter::new();
        let shared = Arc::new(Shared {
            client_id,
            inbox: Inbox::new(&meter),
            meter,
            link: watch::channel(Link::Down("connecting".into())).0,
            dial: Mutex::new(dialer),
            life: Lifecycle::new(&settings.redacted_url),
            routes: Mutex::default(),
            sub_lock: tokio::sync::Mutex::new(()),
            groups: Arc::default(),
            acks: Arc::default(),
            outgoing,
            ctl,
            generation: AtomicU64::new(0),
            inbox_key: inbox_key(inbox_topic.as_str()),
            inbox_topic,
            inbox_started: AtomicBool::new(false),
            next_sub: AtomicU64::new(1),
            settings,
        });
        let inbound_tx = Arc::new(inbound_tx);
        let conn = shared.first_connection(&inbound_tx).await?;
        shared.link.send_replace(Link::Up(conn));
        shared.meter.announce(ConnectionEvent::Connected { server: shared.server_in_use() });
        tokio::spawn(shared.clone().supervise(ctl_rx, inbound_tx));
        tokio::spawn(shared.clone().forward(out_rx));
        tokio::spawn(shared.clone().dispatch(inbound_rx));
        if let (Some(provider), Some(token)) = (&options.token, token) {
            let refresher = Refresher::start(provider.clone(), token, shared.life.token().clone());
            tokio::spawn(shared.clone().keep_token_fresh(
                refresher,
                login,
                options.token_placement,
            ));
        }
        Ok(RedisTransport { shared, capabilities: capabilities() })
    }

    /// The settings parsed from the URL.
    pub fn settings(&self) -> &Settings {
        &self.shared.settings
    }
}

impl Drop for RedisTransport {
    fn drop(&mut self) {
        // The tasks hold the shared state; stopping them lets it go.
        self.shared.shutdown();
    }
}

impl Transport for RedisTransport {
    fn kind(&self) -> &'static str {
        KIND
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
        self.shared.publish(message)
    }

    fn remove_durable<'a>(
        &'a self,
        name: &'a str,
        filter: &'a busbar_core::topic::TopicFilter,
    ) -> BoxFuture<'a, Result<(), SubscribeError>> {
        Box::pin(subscribe::remove_durable(&self.shared, name, filter))
    }

    fn subscribe(
        &self,
        options: SubscribeOptions,
    ) -> BoxFuture<'_, Result<Subscription, SubscribeError>> {
        Box::pin(subscribe::subscribe(&self.shared, options))
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
            let shared = &self.shared;
            if !shared.life.is_open() {
                return Ok(());
            }
            // What was published before the close goes out first (publishes return once
            // queued): wait, within reason, for the publish queue to be sent.
            let (done, sent) = oneshot::channel();
            let unsent = shared.outgoing.push(Outgoing::Flush(done)).await.is_ok()
                && tokio::time::timeout(CLOSE_FLUSH, sent).await.is_err();
            // Durable readers give back what was not acknowledged, and acknowledgements
            // already made go out.
            shared.routes().stop_durable_readers();
            let _ = tokio::time::timeout(CLOSE_FLUSH, shared.acks.idle()).await;
            // Leave queue groups first so their lists stop receiving for us.
            let entries = shared.routes().group_entries();
            if let Some(mut conn) = shared.live() {
                for entry in entries {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        groups::leave(&mut conn, &shared.client_id, &entry),
                    )
                    .await;
                }
            }
            shared.shutdown();
            if unsent {
                return Err(OpError::new(
                    CloseErrorKind::Unconfirmed,
                    format!(
                        "publishes were still waiting to be sent to Redis after {CLOSE_FLUSH:?}"
                    ),
                ));
            }
            Ok(())
        })
    }
}
