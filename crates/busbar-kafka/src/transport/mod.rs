//! The Kafka transport on librdkafka (rdkafka).
//!
//! One connection is one producer (librdkafka's own thread sends, batches and retries;
//! its delivery reports resolve publishes), an admin client (`topics`: metadata, creating
//! and deleting topics), and one reader per subscription (`reader`), plus one for the reply
//! inbox on the first request (`send`). The rooms:
//!
//! * `topics`: topics looked up once, created when missing (as configured);
//! * `reader`: the consumer threads, assigned or in a consumer group;
//! * `send`: publishes, partition choice, and requests;
//! * `routes`: the local subscriptions one reader feeds, per (filter, queue group);
//! * `subscribe`: joining a route, its reader started and awaited.

mod oauth;
mod offsets;
mod reader;
mod routes;
mod send;
mod subscribe;
mod topics;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busbar_core::QoS;
use busbar_core::auth::Token;
use busbar_core::error::{
    CloseError, CloseErrorKind, ConnectError, ConnectErrorKind, OpError, RequestError,
    SubscribeError,
};
use busbar_core::message::Message;
use busbar_core::stats::StatsSnapshot;
use busbar_core::transport::{
    BoxFuture, Capabilities, Completion, ConnectOptions, ConnectionEvent, ConnectionEvents,
    NativeNames, SubscribeOptions, Subscription, Transport,
};
use busbar_transport_kit::endpoint::{self, config_error};
use busbar_transport_kit::login::{Refresher, first_token};
use busbar_transport_kit::{Inbox, Lifecycle, Meter};
use rdkafka::admin::AdminClient;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{Producer, ThreadedProducer};
use tokio::sync::OnceCell;

use self::topics::{TopicFailure, Topics};
use crate::context::{Context, Link};
use crate::settings::Settings;

/// How long `close` waits for publishes still in the producer's queue.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to a Kafka cluster.
pub struct KafkaTransport {
    shared: Arc<Shared>,
    capabilities: Capabilities,
}

/// One connection's state, shared by its rooms.
pub(crate) struct Shared {
    client_id: String,
    settings: Settings,
    meter: Meter,
    life: Lifecycle,
    context: Context,
    producer: ThreadedProducer<Context>,
    topics: Arc<Topics>,
    inbox: Arc<Inbox>,
    /// This state itself, for the tasks it starts.
    me: std::sync::Weak<Shared>,
    /// Publishes waiting, per Kafka topic, for the topic to be known or for room in
    /// librdkafka's queue (see `send`).
    backlogs: Mutex<HashMap<String, std::collections::VecDeque<send::Queued>>>,
    /// The routes of this connection's subscriptions.
    routes: Mutex<HashMap<routes::RouteKey, Arc<routes::Route>>>,
    /// The threads reading for the routes and the reply inbox.
    readers: Arc<reader::Readers>,
    next_id: AtomicU64,
    /// The reply inbox's Kafka topic, made on the first request.
    replies: OnceCell<(busbar_core::topic::Topic, String)>,
    /// The partition the next request goes to (round robin, so that the servers of a
    /// queue group share the calls).
    next_request: AtomicU32,
    /// Where this publisher's messages without a key go, per topic: one fixed partition,
    /// chosen from the client id, so they keep their order.
    home: u32,
}

fn capabilities() -> Capabilities {
    let mut c = Capabilities::none(NativeNames::Dotted);
    c.queue_groups = true;
    c.partitioned_groups = true;
    // Each topic (each partition) is its own log: a wildcard subscription reads several.
    c.topic_order_only = true;
    c.headers = true;
    // A topic is a log: a subscription can start at its beginning or at a time.
    c.replay = true;
    // A durable subscription is a consumer group, committing after hand-over, or only
    // past what was acknowledged (on read or explicitly; groups only).
    c.durable = true;
    c.acknowledgements = true;
    // Kafka keeps records, but no retained value per topic, no per-message expiry, no last
    // will, and a consumer cannot skip its own connection's records.
    c.max_qos = QoS::AtLeastOnce;
    c.max_topic_bytes = Some(249);
    c
}

impl KafkaTransport {
    /// Connects; resolves once the cluster answered a metadata request.
    pub async fn connect(
        url: &str,
        options: ConnectOptions,
    ) -> Result<KafkaTransport, ConnectError> {
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
    ) -> Result<KafkaTransport, ConnectError> {
        if options.requires_last_will() {
            return Err(OpError::unsupported("kafka", "last will"));
        }
        if options.token.is_some() && settings.credentials != crate::settings::Credentials::None {
            return Err(config_error(
                "a Kafka connection takes a token provider or a user and password, not both",
            ));
        }
        let client_id = options
            .client_id
            .clone()
            .unwrap_or_else(|| format!("busbar-{}", uuid::Uuid::new_v4().simple()));
        let meter = Meter::new();
        let life = Lifecycle::new(&settings.shown);
        let (token, refresher) = match &options.token {
            Some(provider) => {
                let first = first_token(provider).await?;
                let cell = Arc::new(Mutex::new(first.clone()));
                let refresher = Refresher::start(provider.clone(), first, life.token().clone());
                (Some(cell), Some(refresher))
            }
            None => (None, None),
        };
        let link = Arc::new(Link::new(settings.bootstrap()));
        let context = Context { meter: meter.clone(), link, token };
        let oauth = context.token.is_some();
        let base = settings.client_config(&client_id, oauth);
        let mut producer_config = base.clone();
        producer_config
            .set("enable.idempotence", "true")
            .set("linger.ms", settings.linger.as_millis().to_string())
            // Keys go where the Java client puts them, so busbar and Java producers agree.
            .set("partitioner", "murmur2_random");
        let producer: ThreadedProducer<Context> = producer_config
            .create_with_context(context.clone())
            .map_err(|e| config_error(format!("cannot create the Kafka producer: {e}")))?;
        let admin: AdminClient<Context> = base
            .create_with_context(context.clone())
            .map_err(|e| config_error(format!("cannot create the Kafka admin client: {e}")))?;
        let topics = Topics::new(admin, &settings);
        if let (Some(refresher), Some(cell), Some(first)) =
            (refresher, &context.token, context.oauth_token())
        {
            // Signed in before their first request (see `oauth`); the admin client cannot
            // ask for a new token, so it is given each refreshed one as it comes.
            oauth::sign_in(producer.client(), &first).map_err(config_error)?;
            topics.hand_token(&first).map_err(config_error)?;
            tokio::spawn(keep_fresh(refresher, cell.clone(), context.clone(), topics.clone()));
        }
        // The cluster answers, and lets us in, before the connection counts as made.
        // A little inside the connect bound, so that the reason (a TLS handshake, a login)
        // is told rather than only the bound's timeout.
        // A refused login or certificate ends the wait at once: librdkafka would retry it
        // until the bound.
        let within = settings.connect_timeout.mul_f64(0.9);
        let answered = tokio::select! {
            answered = topics.metadata(None, within) => answered,
            () = context.link.refused.notified() => {
                Err(TopicFailure::Refused("the Kafka broker refused this client".into()))
            }
        };
        answered.map_err(|failure| {
            connect_error(failure, context.link.last_error(), &settings.shown)
        })?;
        let home =
            client_id.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
        let shared = Arc::new_cyclic(|me| Shared {
            me: me.clone(),
            backlogs: Mutex::default(),
            client_id,
            inbox: Arc::new(Inbox::new(&meter)),
            settings,
            meter,
            life,
            context,
            producer,
            topics,
            routes: Mutex::default(),
            readers: Arc::default(),
            next_id: AtomicU64::new(1),
            replies: OnceCell::new(),
            next_request: AtomicU32::new(0),
            home,
        });
        let server = shared.context.link.servers.clone();
        shared.meter.announce(ConnectionEvent::Connected { server });
        Ok(KafkaTransport { shared, capabilities: capabilities() })
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
        // The readers stop on the lifecycle's token; the subscriptions end with their
        // routes.
        drop(std::mem::take(&mut *subscribe::lock(&s.routes)));
        s.inbox.fail_all(RequestError::closed);
        s.meter.announce(ConnectionEvent::Closed);
        true
    }
}

/// Hands each refreshed token to the clients' shared cell (the producer and the readers ask
/// for it when the current one nears its end) and to the admin client (which cannot ask).
async fn keep_fresh(
    mut refresher: Refresher,
    cell: Arc<Mutex<Token>>,
    context: Context,
    topics: Arc<Topics>,
) {
    while let Some(token) = refresher.next().await {
        *cell.lock().unwrap_or_else(|p| p.into_inner()) = token;
        if let Some(token) = context.oauth_token()
            && let Err(why) = topics.hand_token(&token)
        {
            tracing::warn!("the Kafka admin client kept its old token: {why}");
        }
    }
}

/// Why connecting failed: librdkafka's own calls report a timeout, and the reason (a TLS
/// handshake, a login) is the last error it reported to the context.
fn connect_error(failure: TopicFailure, last: Option<String>, shown: &str) -> ConnectError {
    let mut why = match failure {
        TopicFailure::Missing(s) | TopicFailure::Refused(s) | TopicFailure::Unreachable(s) => s,
    };
    if let Some(last) = last {
        why = format!("{why} (last error: {last})");
    }
    let lower = why.to_ascii_lowercase();
    // A refused login is `Refused`, as on every other transport (`Credentials` is a token
    // provider that gave no token).
    let kind = if lower.contains("authentication") || lower.contains("sasl") {
        ConnectErrorKind::Refused
    } else if lower.contains("ssl") || lower.contains("certificate") {
        ConnectErrorKind::Tls
    } else {
        ConnectErrorKind::Unreachable
    };
    OpError::new(kind, format!("cannot connect to {shown}: {why}"))
}

impl Drop for KafkaTransport {
    fn drop(&mut self) {
        self.end();
    }
}

impl Transport for KafkaTransport {
    fn kind(&self) -> &'static str {
        "kafka"
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
            if !self.end() {
                return Ok(());
            }
            let s = self.shared.clone();
            // Publishes still in the producer's queue go out (or fail) before the close,
            // while the readers commit and leave their groups.
            let readers = s.readers.clone();
            let leaving = tokio::task::spawn_blocking(move || readers.wait_ended(CLOSE_TIMEOUT));
            let flushed = tokio::task::spawn_blocking(move || s.producer.flush(CLOSE_TIMEOUT))
                .await
                .unwrap_or(Err(KafkaError::Canceled));
            if let Ok(left @ 1..) = leaving.await {
                tracing::warn!("{left} Kafka readers had not left their groups by the close");
            }
            // The reply inbox's topic stays on the broker: see `send::replies` for why.
            match flushed {
                Ok(()) => Ok(()),
                Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) => {
                    let left = self.shared.producer.in_flight_count();
                    Err(OpError::new(
                        CloseErrorKind::Unconfirmed,
                        format!(
                            "{left} publishes were not confirmed by the Kafka broker within \
                             {CLOSE_TIMEOUT:?}"
                        ),
                    ))
                }
                Err(e) => Err(OpError::new(
                    CloseErrorKind::Unconfirmed,
                    format!("publishes may not have reached the Kafka broker: {e}"),
                )),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_say_what_kafka_lacks() {
        let c = capabilities();
        assert!(c.queue_groups && c.partitioned_groups && c.headers && c.replay);
        assert!(!c.retained && !c.expiry && !c.last_will && !c.no_local && !c.no_responders);
        assert_eq!(c.native_names, NativeNames::Dotted);
        assert_eq!(c.max_qos, QoS::AtLeastOnce);
    }
}
