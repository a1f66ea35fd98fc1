//! The AMQP transport: one supervisor task owns the lapin connection and its recovery.
//!
//! lapin's own auto-recovery is not used (it had bugs, amqp-rs/lapin#450): the supervisor
//! connects, opens the channels, declares every subscription's queue, binds and consumes,
//! then publishes the live `Link` for user calls. When the connection fails it withdraws
//! the link, fails the requests whose replies can no longer come, and starts again with
//! jittered exponential backoff, redeclaring, rebinding and resuming every consumer.
//!
//! Each subscription has its own queue (named, never exclusive, expiring `queue_expiry`
//! after its last consumer went, so a reconnect finds what was published meanwhile) and its
//! own channel and consumer task. Deliveries are acknowledged only after they are in the
//! subscription's delivery queue; a `Block` subscription's prefetch is its capacity, so a
//! slow reader holds back the broker instead of anything being dropped. Queue groups are
//! queues named from the group and the filter that every member consumes from.
//!
//! The parts, each in its room:
//!
//! * `state`: the connection state every part shares, and the live link;
//! * `failure`: lapin's errors in busbar's terms;
//! * `supervisor`: connecting, recovery, fresh tokens;
//! * `subscribe`: attaching and detaching broker queues, and naming them;
//! * `consume`: the per-subscription consumer task and its acknowledgements;
//! * `send`: publishes with confirms, and requests over direct reply-to;
//! * `replies`: the direct reply-to consumer.

mod consume;
mod failure;
mod order;
mod renew;
mod replies;
mod send;
mod state;
mod subscribe;
mod supervisor;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busbar_core::QoS;
use busbar_core::error::{CloseError, ConnectError, RequestError, SubscribeError};
use busbar_core::message::Message;
use busbar_core::stats::StatsSnapshot;
use busbar_core::transport::{
    BoxFuture, Capabilities, Completion, ConnectOptions, ConnectionEvent, ConnectionEvents,
    NativeNames, SubscribeOptions, Subscription, Transport,
};
use busbar_transport_kit::endpoint::{self, config_error};
use busbar_transport_kit::login::{Login, Refresher, first_token};
use busbar_transport_kit::{Fanout, Inbox, Lifecycle, Meter, Supervisor};
use lapin::types::ShortString;
use tokio::sync::{Notify, oneshot, watch};

use self::failure::{TRANSPORT, broker};
use self::state::{Shared, SubEntry, lock};
use crate::settings::Settings;

/// A connection to an AMQP 0.9.1 broker (RabbitMQ).
pub struct AmqpTransport {
    shared: Arc<Shared>,
    capabilities: Capabilities,
    supervisor: Supervisor,
}

impl std::fmt::Debug for AmqpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpTransport")
            .field("client_id", &self.shared.client_id)
            .field("url", &self.shared.settings.shown)
            .finish()
    }
}

fn capabilities(settings: &Settings) -> Capabilities {
    let mut c = Capabilities::none(NativeNames::Dotted);
    c.queue_groups = true;
    c.native_request = true;
    c.headers = true;
    c.expiry = true;
    // Requests are published `mandatory`: an unroutable one comes back at once.
    c.no_responders = true;
    c.named_queues = true;
    // Durable subscriptions are quorum queues; deliveries are acknowledged one by one.
    c.durable = true;
    c.acknowledgements = true;
    c.max_qos = QoS::AtLeastOnce;
    // Routing keys are AMQP short strings.
    c.max_topic_bytes = Some(255);
    c.max_payload = Some(settings.max_payload);
    c
}

impl AmqpTransport {
    /// Connects; resolves once the broker accepted the connection.
    pub async fn connect(
        url: &str,
        options: ConnectOptions,
    ) -> Result<AmqpTransport, ConnectError> {
        let mut settings = Settings::parse(url)?;
        if let Some(limit) = options.connect_timeout {
            settings.connect_timeout = limit;
        }
        if options.requires_last_will() {
            return Err(ConnectError::unsupported(TRANSPORT, "last wills"));
        }
        let deadline = tokio::time::Instant::now() + settings.connect_timeout;
        let client_id = options
            .client_id
            .clone()
            .unwrap_or_else(|| format!("busbar-{}", uuid::Uuid::new_v4().simple()));
        let first_token = match &options.token {
            Some(provider) => {
                Some(tokio::time::timeout_at(deadline, first_token(provider)).await.map_err(
                    |_| endpoint::connect_timed_out(&settings.shown, settings.connect_timeout),
                )??)
            }
            None => None,
        };
        let login = Login {
            user: Some(settings.username.clone()),
            password: Some(settings.password.clone()),
        };
        let presented = login.with(first_token.as_ref(), options.token_placement);
        // Checked when parsing: a name of at most 255 bytes.
        let exchange = ShortString::try_new(settings.exchange.clone())
            .map_err(|_| config_error("the exchange name is too long"))?;
        let (trouble_tx, trouble_rx) = tokio::sync::mpsc::unbounded_channel();
        let meter = Meter::new();
        let shared = Arc::new(Shared {
            client_id,
            nonce: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
            exchange,
            link: watch::channel(None).0,
            topology: tokio::sync::Mutex::new(()),
            subs: Mutex::new(HashMap::new()),
            inbox: Inbox::new(&meter),
            next_id: AtomicU64::new(1),
            meter,
            life: Lifecycle::new(&settings.shown),
            trouble: trouble_tx,
            teardowns: AtomicUsize::new(0),
            teardown_done: Notify::new(),
            login: Mutex::new(presented),
            acks: Arc::default(),
            turnstile: Arc::default(),
            settling: Mutex::default(),
            servers: Mutex::new(busbar_transport_kit::Servers::new(
                settings.servers.clone(),
                settings.server_order,
            )),
            settings,
        });
        // The supervisor swaps the credentials and reconnects with each fresh token.
        let refresher = match (&options.token, first_token) {
            (Some(provider), Some(token)) => {
                Some(Refresher::start(provider.clone(), token, shared.life.token().clone()))
            }
            _ => None,
        };
        let (first_tx, first_rx) = oneshot::channel();
        let supervisor = tokio::spawn(supervisor::supervise(
            shared.clone(),
            first_tx,
            trouble_rx,
            refresher,
            login,
            options.token_placement,
        ));
        let outcome = match tokio::time::timeout_at(deadline, first_rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(broker("the connection task ended")),
            Err(_) => Err(endpoint::connect_timed_out(
                &shared.settings.shown,
                shared.settings.connect_timeout,
            )),
        };
        if let Err(e) = outcome {
            shared.life.end();
            // The refresher goes with the supervisor's task.
            supervisor.abort();
            return Err(e);
        }
        Ok(AmqpTransport {
            capabilities: capabilities(&shared.settings),
            shared,
            supervisor: Supervisor::new(supervisor),
        })
    }

    /// Drops the connection without a graceful close, as a crash would. For fault tests.
    pub fn kill(&self) {
        if let Some(link) = self.shared.current()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            // Without the close lapin's I/O loop would keep the socket open.
            rt.spawn(async move {
                let _ = link.conn.close(320, "busbar: connection killed".into()).await;
            });
        }
        self.end();
        self.supervisor.abort();
    }

    fn end(&self) {
        let s = &self.shared;
        if s.life.end() {
            // Subscriptions end: their senders go with the entries and the consumer tasks.
            let subs: Vec<SubEntry> = lock(&s.subs).drain().map(|(_, e)| e).collect();
            for e in subs {
                if let Some(a) = e.active {
                    a.task.abort();
                }
                let mut fanout = lock(&e.fanout);
                *fanout = Fanout::new(fanout.is_group());
            }
            s.inbox.fail_all(RequestError::closed);
            s.link.send_replace(None);
            s.meter.announce(ConnectionEvent::Closed);
        }
    }
}

impl Drop for AmqpTransport {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Transport for AmqpTransport {
    fn kind(&self) -> &'static str {
        TRANSPORT
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
        Completion::Pending(Box::pin(self.shared.send(message)))
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
            if !self.shared.life.is_open() {
                return Ok(());
            }
            // Unsubscriptions in progress finish first (their consumers acknowledge what
            // they handed over), then the supervisor closes the connection gracefully.
            let _ =
                tokio::time::timeout(Duration::from_secs(3), self.shared.settle_teardowns()).await;
            self.shared.life.stop_tasks();
            self.supervisor.join_within(Duration::from_secs(3)).await;
            self.end();
            Ok(())
        })
    }
}
