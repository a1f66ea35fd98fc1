//! The MQTT transport. One supervisor task owns rumqttc's event loop; user calls only
//! enqueue requests to it. The parts, each in its room:
//!
//! * `state`: the connection state every part shares;
//! * `options`: building rumqttc's client from the settings;
//! * `supervisor`: the event loop, reconnects, restored subscriptions, fresh tokens;
//! * `receive`: replies, and routing messages to local subscriptions;
//! * `send`: publishes counted until acknowledged, and requests;
//! * `subscribe`: SUBSCRIBE and SUBACK, and the local subscriptions sharing one broker
//!   subscription.

mod acknowledge;
mod options;
mod receive;
mod send;
mod state;
mod subscribe;
mod supervisor;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busbar_core::error::{
    CloseError, CloseErrorKind, ConnectError, ConnectErrorKind, OpError, PublishError,
    RequestError, SubscribeError,
};
use busbar_core::message::Message;
use busbar_core::stats::StatsSnapshot;
use busbar_core::topic::Topic;
use busbar_core::transport::{
    BoxFuture, Capabilities, Completion, ConnectOptions, ConnectionEvent, ConnectionEvents,
    NativeNames, SubscribeOptions, Subscription, Transport,
};
use busbar_core::{Overflow, QoS};
use busbar_transport_kit::login::{Refresher, first_token};
use busbar_transport_kit::{
    Inbox, Lifecycle, Meter, PublishQueue, Servers, Supervisor, endpoint, ids,
};
use tokio::sync::{OnceCell, oneshot};

use self::state::{Shared, lock};
use crate::protocol::Version;
use crate::registry::Registry;
use crate::settings::Settings;

/// How long a graceful close waits for the broker to acknowledge what was published.
const CLOSE_FLUSH: Duration = Duration::from_secs(5);

/// A connection to an MQTT broker.
pub struct MqttTransport {
    shared: Arc<Shared>,
    capabilities: Capabilities,
    /// The publish queue when a drop policy is configured (`Block` publishes go straight to
    /// rumqttc's own bounded channel and wait there).
    publish_queue: Option<PublishQueue>,
    supervisor: Supervisor,
}

fn capabilities(settings: &Settings, fixed_client_id: bool) -> Capabilities {
    let v5 = settings.version == Version::V5;
    let mut c = Capabilities::none(NativeNames::Slash);
    c.queue_groups = true;
    c.retained = true;
    // On 3.1.1 reply topics, correlation ids, headers and expiry ride in the envelope.
    c.native_request = v5;
    c.headers = v5;
    c.expiry = true;
    c.last_will = true;
    c.no_local = v5;
    c.max_qos = QoS::ExactlyOnce;
    // A durable subscription lives in the broker's session for this client id: it needs a
    // session that outlives the connection, under an id the next process uses again.
    let keeps = settings.acknowledges_after_hand_over() && fixed_client_id;
    c.durable = keeps;
    c.acknowledgements = keeps;
    if !keeps {
        c.durable_needs = Some(
            "MQTT keeps them in a persistent session: connect with ?session_expiry=SECONDS \
             and a client id of your own",
        );
    }
    c.max_topic_levels = Some(settings.max_topic_levels);
    // A topic is a length-prefixed string: 16 bits of length.
    c.max_topic_bytes = Some(usize::from(u16::MAX));
    c
}

impl MqttTransport {
    /// Connects; resolves once the broker accepted the connection.
    pub async fn connect(
        url: &str,
        options: ConnectOptions,
    ) -> Result<MqttTransport, ConnectError> {
        let mut settings = Settings::parse(url)?;
        if let Some(limit) = options.connect_timeout {
            settings.connect_timeout = limit;
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
        let login = busbar_transport_kit::Login {
            user: settings.username.clone(),
            password: settings.password.clone(),
        };
        let presented = login.with(first_token.as_ref(), options.token_placement);
        let servers = Servers::new(settings.servers.clone(), settings.server_order)
            .with_retry(settings.retry);
        let (client, eventloop) = options::build(
            &settings,
            servers.current(),
            &client_id,
            supervisor::credentials(&presented),
            options.last_will.as_ref(),
        )?;
        let capabilities = capabilities(&settings, options.client_id.is_some());
        let packet_limit = settings.max_packet.unwrap_or(state::MQTT_MAX_PACKET as usize);
        let meter = Meter::new();
        let life = Lifecycle::new(&settings.shown);
        let shared = Arc::new(Shared {
            acker: client.acker(),
            acks: Arc::default(),
            handing_over: tokio::sync::Mutex::new(()),
            client,
            client_id,
            settings,
            registry: Mutex::default(),
            subacks: Mutex::default(),
            unsubacks: Mutex::default(),
            inbox: Inbox::new(&meter),
            reply_topic: Topic::inbox(ids::random_bytes()),
            reply_sub: OnceCell::new(),
            next_id: AtomicU64::new(1),
            meter,
            life,
            max_packet: AtomicUsize::new(packet_limit),
            unacked: AtomicUsize::new(0),
            acked: tokio::sync::Notify::new(),
            given_up: AtomicUsize::new(0),
            last_subacked: AtomicUsize::new(0),
            epoch: Mutex::new(0),
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
            eventloop,
            first_tx,
            supervisor::Dialing {
                servers,
                refresher,
                login,
                placement: options.token_placement,
                presented,
                will: options.last_will.clone(),
            },
        ));
        let outcome = match tokio::time::timeout_at(deadline, first_rx).await {
            // rumqttc's own limit on the attempt is the same `connect_timeout` (in whole
            // seconds), so it can end the wait a tick before the deadline above: one limit,
            // one message.
            Ok(Ok(Err(e))) if e.kind() == ConnectErrorKind::TimedOut => {
                Err(endpoint::connect_timed_out(
                    &shared.settings.shown,
                    shared.settings.connect_timeout,
                ))
            }
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(Shared::broker("the connection task ended")),
            Err(_) => Err(endpoint::connect_timed_out(
                &shared.settings.shown,
                shared.settings.connect_timeout,
            )),
        };
        if let Err(e) = outcome {
            shared.life.end();
            supervisor.abort();
            return Err(e);
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
                        async move { s.send(m).await }
                    },
                ))
            }
        };
        Ok(MqttTransport {
            shared,
            publish_queue,
            capabilities,
            supervisor: Supervisor::new(supervisor),
        })
    }

    /// Cuts the connection without a DISCONNECT, as a crash would: the broker publishes the
    /// last will. For fault-injection tests.
    pub fn kill(&self) {
        self.end();
        self.supervisor.abort();
    }

    fn end(&self) {
        self.shared.end();
    }
}

impl Shared {
    /// Closes the connection for good (once): subscriptions end, requests and publishes
    /// waiting fail as closed, and `Closed` is announced.
    pub(super) fn end(&self) {
        if self.life.end() {
            // Subscriptions end: their senders go with the registry's entries.
            *lock(&self.registry) = Registry::default();
            self.inbox.fail_all(RequestError::closed);
            self.client.confirms().close();
            self.meter.announce(ConnectionEvent::Closed);
        }
    }
}

impl Drop for MqttTransport {
    fn drop(&mut self) {
        // Dropped without close: the connection just goes (the broker sends the will).
        self.kill();
    }
}

impl Transport for MqttTransport {
    fn kind(&self) -> &'static str {
        "mqtt"
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
            Some(queue) => {
                Completion::ready(self.shared.life.check().and_then(|()| queue.enqueue(message)))
            }
            None => self.shared.publish(message),
        }
    }

    fn subscribe(
        &self,
        options: SubscribeOptions,
    ) -> BoxFuture<'_, Result<Subscription, SubscribeError>> {
        Box::pin(subscribe::subscribe(&self.shared, options))
    }

    fn remove_durable<'a>(
        &'a self,
        name: &'a str,
        filter: &'a busbar_core::topic::TopicFilter,
    ) -> BoxFuture<'a, Result<(), SubscribeError>> {
        Box::pin(subscribe::remove_durable(&self.shared, name, filter))
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
            // What was published before the close is delivered first.
            let flushed = self.shared.all_acked(CLOSE_FLUSH).await;
            let unacked = self.shared.unacked.load(Ordering::Acquire);
            // Acknowledgements of what was handed over go out before the goodbye, or the
            // session's next connection would get those messages again.
            // (Waiting for them first: one waiting for room in the event loop's channel needs
            // the supervisor running, which the lock would stop.)
            let _ = tokio::time::timeout(CLOSE_FLUSH, self.shared.acks.idle()).await;
            let handing_over =
                tokio::time::timeout(CLOSE_FLUSH, self.shared.handing_over.lock()).await;
            // A DISCONNECT tells the broker not to publish the will.
            let _: Result<(), PublishError> = self.shared.client.try_disconnect();
            // The event loop ends once the DISCONNECT is written.
            drop(handing_over);
            self.supervisor.join_within(Duration::from_secs(2)).await;
            self.end();
            let given_up = self.shared.given_up.load(Ordering::Acquire);
            if !flushed && unacked > 0 {
                return Err(OpError::new(
                    CloseErrorKind::Unconfirmed,
                    format!(
                        "{unacked} publish(es) at QoS 1 or 2 were not acknowledged by the broker \
                         within {CLOSE_FLUSH:?}"
                    ),
                ));
            }
            if given_up > 0 {
                return Err(OpError::new(
                    CloseErrorKind::Unconfirmed,
                    format!(
                        "{given_up} publish(es) were refused by the broker, or given up after \
                         it dropped the connection each time they were sent"
                    ),
                ));
            }
            Ok(())
        })
    }
}
