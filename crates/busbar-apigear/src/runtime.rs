//! What generated adapters run on: the ApiGear MQTT mapping over a busbar connection.
//!
//! Topics are `{module}/{Interface}/{verb}/{member}`, names exactly as in the module:
//!
//! | verb | from → to | payload |
//! |---|---|---|
//! | `prop` | service → clients, **retained** | the value |
//! | `set` | client → service | the value asked for |
//! | `sig` | service → clients | the arguments, a JSON array |
//! | `rpc` | client → service | the arguments, a JSON array, with a response topic and correlation data |
//! | `rpc/{op}/{clientId}/result` | service → one client | the result |
//!
//! Rules the peers in use need (Python and C++ adapters), kept here: a service replies on
//! the request's response topic verbatim and echoes its correlation data as opaque bytes
//! (Python's are one byte, C++'s decimal text); it replies to void operations too (`null`);
//! it takes requests at any QoS; a client gives every call a deadline and removes its pending
//! entry whatever happens. On MQTT 5 the response topic and correlation data are the
//! protocol's own properties. On other transports busbar carries them its own way, so the
//! same interfaces work there between busbar peers; with no retained messages there, a
//! client reads the properties with the internal operation `_properties` when it connects.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busbar_core::message::header;
use busbar_core::transport::SubscribeOptions;
use busbar_core::{ConnectionEvent, Message, QoS, Topic, TopicFilter};
use bytes::Bytes;
use serde_json::{Map, Value};
use tokio::sync::oneshot;

pub use busbar_core::Connection;
pub use tokio::sync::broadcast::Receiver;

/// Logs a value that could not be read (it is dropped; the cache keeps the last good one).
pub fn dropped(error: &ApiError) {
    tracing::warn!(%error, "apigear: a value that does not match the module was dropped");
}

/// Logs a client that started without the service's property values.
pub fn no_snapshot(error: &ApiError) {
    tracing::info!(%error, "apigear: no property values from the service yet; defaults until it publishes");
}

/// A boxed future, for the handler traits the generated code implements.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The internal operation that answers with every property's value.
pub const PROPERTIES_OP: &str = "_properties";

/// How long a client waits, when it connects where nothing is retained, for the service's
/// property values; without an answer it starts from defaults (and takes the values the
/// service publishes when it starts).
pub const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a call waits by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// What can go wrong using an interface.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The connection failed or refused.
    #[error(transparent)]
    Transport(#[from] busbar_core::Error),
    /// A value could not be encoded or decoded as the module says.
    #[error("{member}: {reason}")]
    Serialization {
        /// The property, operation or signal.
        member: String,
        /// What is wrong.
        reason: String,
    },
    /// No reply within the deadline.
    #[error("{operation}: no reply within {timeout:?}")]
    Timeout {
        /// The operation.
        operation: String,
        /// The deadline.
        timeout: Duration,
    },
    /// The service failed the operation (busbar services say so; ApiGear's own peers have
    /// no way to).
    #[error("{operation} failed: {message}")]
    Remote {
        /// The operation.
        operation: String,
        /// The service's reason.
        message: String,
    },
    /// The implementation refused, or the interface has no such member.
    #[error("{member}: {reason}")]
    Refused {
        /// The member.
        member: String,
        /// Why.
        reason: String,
    },
}

impl<K> From<busbar_core::error::OpError<K>> for ApiError
where
    busbar_core::Error: From<busbar_core::error::OpError<K>>,
{
    fn from(e: busbar_core::error::OpError<K>) -> Self {
        ApiError::Transport(e.into())
    }
}

impl ApiError {
    /// A value that is not what the module says.
    pub fn serialization(member: &str, reason: impl std::fmt::Display) -> Self {
        ApiError::Serialization { member: member.to_owned(), reason: reason.to_string() }
    }

    /// An implementation's refusal.
    pub fn refused(member: &str, reason: impl Into<String>) -> Self {
        ApiError::Refused { member: member.to_owned(), reason: reason.into() }
    }
}

/// Encodes a value for the wire. NaN and infinities are refused, as the Python peers refuse
/// them (JSON has no way to write them; serde_json would send `null`).
pub fn encode<T: serde::Serialize + Finite>(member: &str, value: &T) -> Result<Value, ApiError> {
    if !value.is_finite() {
        return Err(ApiError::serialization(
            member,
            "NaN and infinite numbers cannot travel in JSON",
        ));
    }
    serde_json::to_value(value).map_err(|e| ApiError::serialization(member, e))
}

/// Encodes a value whose type busbar cannot look into (an extern type).
pub fn encode_extern<T: serde::Serialize>(member: &str, value: &T) -> Result<Value, ApiError> {
    serde_json::to_value(value).map_err(|e| ApiError::serialization(member, e))
}

/// Values that may hold floating-point numbers say whether all of them are finite; the
/// generated structs implement it too.
pub trait Finite {
    /// True when no number in it is NaN or infinite.
    fn is_finite(&self) -> bool;
}

macro_rules! always_finite {
    ($($t:ty),*) => { $(impl Finite for $t { fn is_finite(&self) -> bool { true } })* };
}
always_finite!(bool, i32, i64, String, Value, Vec<u8>);

impl Finite for f32 {
    fn is_finite(&self) -> bool {
        f32::is_finite(*self)
    }
}

impl Finite for f64 {
    fn is_finite(&self) -> bool {
        f64::is_finite(*self)
    }
}

impl<T: Finite> Finite for Vec<T> {
    fn is_finite(&self) -> bool {
        self.iter().all(Finite::is_finite)
    }
}

/// Decodes a value from the wire.
pub fn decode<T: serde::de::DeserializeOwned>(member: &str, value: Value) -> Result<T, ApiError> {
    serde_json::from_value(value).map_err(|e| ApiError::serialization(member, e))
}

/// Takes the `index`th argument of an operation or signal.
pub fn arg<T: serde::de::DeserializeOwned>(
    member: &str,
    args: &mut [Value],
    index: usize,
) -> Result<T, ApiError> {
    let value = args
        .get_mut(index)
        .map(Value::take)
        .ok_or_else(|| ApiError::serialization(member, format!("argument {index} is missing")))?;
    decode(member, value)
}

/// `{module}/{interface}`: the first two levels of an interface's topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceName {
    /// The module's name (dotted).
    pub module: &'static str,
    /// The interface's name.
    pub interface: &'static str,
}

impl InterfaceName {
    /// The first two levels of the interface's topics on `conn`. Where the broker's names
    /// keep busbar's levels or have none (MQTT, the in-process bus, Redis), the module name
    /// stays one level, dots and all, as ApiGear writes it. Where names join levels with dots
    /// (NATS subjects, AMQP routing keys), the module's dots become levels: the subject
    /// `tb.simple.SimpleInterface.prop.propInt` reads as the dotted names do.
    pub fn on(&self, conn: &Connection) -> Levels {
        let module = match conn.capabilities().native_names {
            busbar_core::transport::NativeNames::Dotted => self.module.replace('.', "/"),
            busbar_core::transport::NativeNames::Slash
            | busbar_core::transport::NativeNames::Flat => self.module.to_owned(),
        };
        Levels(format!("{module}/{}", self.interface))
    }
}

/// An interface's topic prefix on one connection (see [`InterfaceName::on`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Levels(String);

impl Levels {
    /// The topic of `member` under `verb`.
    pub fn topic(&self, verb: &str, member: &str) -> Result<Topic, ApiError> {
        Ok(Topic::new(format!("{}/{verb}/{member}", self.0)).map_err(busbar_core::Error::from)?)
    }

    /// Every member under `verb`.
    fn filter(&self, verb: &str) -> Result<TopicFilter, ApiError> {
        Ok(TopicFilter::new(format!("{}/{verb}/+", self.0)).map_err(busbar_core::Error::from)?)
    }

    /// Whether `topic` is one of the interface's `prop`, `sig`, `set` or `rpc` topics (a
    /// result topic, one level deeper, is not).
    fn is_interface_topic(&self, topic: &Topic) -> bool {
        let Some(rest) = topic.as_str().strip_prefix(&self.0).and_then(|r| r.strip_prefix('/'))
        else {
            return false;
        };
        let levels: Vec<&str> = rest.split('/').collect();
        matches!(levels.as_slice(), [verb, _] if ["prop", "sig", "set", "rpc"].contains(verb))
    }

    /// The result topic of `operation` for the client `client_id`.
    fn result(&self, operation: &str, client_id: &str) -> String {
        format!("{}/rpc/{operation}/{client_id}/result", self.0)
    }
}

/// What a service adapter answers with: the generated code implements it for each interface.
pub trait ServiceHandler: Send + Sync + 'static {
    /// A client asks to set `property` to `value`; the generated code decodes it, asks the
    /// implementation, and publishes the property's new value.
    fn set<'a>(
        &'a self,
        link: &'a ServiceLink,
        property: &'a str,
        value: Value,
    ) -> BoxFuture<'a, Result<(), ApiError>>;

    /// A client calls `operation` with `args`; the result, or `null` for a void operation.
    fn call<'a>(
        &'a self,
        operation: &'a str,
        args: Vec<Value>,
    ) -> BoxFuture<'a, Result<Value, ApiError>>;

    /// Every property's current value, by name.
    fn properties(&self) -> Result<Map<String, Value>, ApiError>;
}

/// A service adapter's side of the bus: publishing properties and signals. Cheap to clone.
#[derive(Clone)]
pub struct ServiceLink {
    conn: Connection,
    name: InterfaceName,
    levels: Levels,
    /// Held while a set runs (setter, getter, publish) and while every property is
    /// published, so that what goes out is what the implementation holds, in order.
    state: Arc<tokio::sync::Mutex<()>>,
}

/// A running service: serves until dropped.
pub struct Serving {
    link: ServiceLink,
    _tasks: (TaskGuard, TaskGuard),
}

struct TaskGuard(tokio::task::JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl std::fmt::Debug for ServiceLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceLink").field("interface", &self.name).finish()
    }
}

impl std::fmt::Debug for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serving").field("interface", &self.link.name).finish()
    }
}

impl Serving {
    /// Publishing for the service.
    pub fn link(&self) -> &ServiceLink {
        &self.link
    }
}

impl ServiceLink {
    /// Subscribes to the interface's `set` and `rpc` topics, publishes every property
    /// (retained), and serves with `handler` until the [`Serving`] is dropped. Sets are
    /// applied one at a time in the order they came; calls are served concurrently, each in
    /// a task of its own. Every property is published again
    /// after each reconnect, so a broker that lost its retained messages gets them back.
    pub async fn serve(
        conn: &Connection,
        name: InterfaceName,
        handler: Arc<dyn ServiceHandler>,
    ) -> Result<Serving, ApiError> {
        let any_qos = |f| SubscribeOptions::from(f).qos(QoS::AtLeastOnce);
        let levels = name.on(conn);
        let mut sets = conn.subscribe_with(any_qos(levels.filter("set")?)).await?;
        let mut calls = conn.subscribe_with(any_qos(levels.filter("rpc")?)).await?;
        let mut events = conn.events();
        let link = ServiceLink {
            conn: conn.clone(),
            name,
            levels,
            state: Arc::new(tokio::sync::Mutex::new(())),
        };
        // Sets one after the other, in the order they came: two quick sets of one property
        // must end at the second.
        let (setter, set_handler) = (link.clone(), handler.clone());
        let set_task = tokio::spawn(async move {
            while let Some(m) = sets.recv().await {
                setter.on_set(&*set_handler, m).await;
            }
        });
        // Calls each in a task of its own: a slow one holds up no other.
        let (served, runner) = (link.clone(), handler.clone());
        let task = tokio::spawn(async move {
            let (link, handler) = (served, runner);
            // The calls in flight end with the service (the set is dropped with this task).
            let mut in_flight = tokio::task::JoinSet::new();
            loop {
                while in_flight.try_join_next().is_some() {}
                tokio::select! {
                    Some(m) = calls.recv() => {
                        let (link, handler) = (link.clone(), handler.clone());
                        in_flight.spawn(async move { link.on_call(&*handler, m).await });
                    }
                    event = events.next() => match event {
                        Some(ConnectionEvent::Reconnected { .. }) => {
                            if let Err(e) = link.publish_all(&*handler).await {
                                tracing::warn!(error = %e, "apigear: properties not republished");
                            }
                        }
                        Some(ConnectionEvent::Closed) | None => return,
                        Some(_) => {}
                    },
                }
            }
        });
        let serving =
            Serving { link: link.clone(), _tasks: (TaskGuard(set_task), TaskGuard(task)) };
        link.publish_all(&*handler).await?;
        Ok(serving)
    }

    /// Publishes `property`'s value, retained.
    pub async fn publish_property(&self, property: &str, value: Value) -> Result<(), ApiError> {
        let topic = self.topic("prop", property)?;
        let mut m = Message::new(topic, json_bytes(property, &value)?);
        // Where the broker keeps nothing, clients read `_properties` instead.
        m.retain = self.conn.capabilities().retained;
        Ok(self.conn.publish(m).await?)
    }

    /// Publishes `signal` with its arguments.
    pub async fn publish_signal(&self, signal: &str, args: Vec<Value>) -> Result<(), ApiError> {
        let topic = self.topic("sig", signal)?;
        let payload = json_bytes(signal, &Value::Array(args))?;
        Ok(self.conn.publish(Message::new(topic, payload)).await?)
    }

    /// The interface served.
    pub fn name(&self) -> &InterfaceName {
        &self.name
    }

    fn topic(&self, verb: &str, member: &str) -> Result<Topic, ApiError> {
        self.levels.topic(verb, member)
    }

    async fn publish_all(&self, handler: &dyn ServiceHandler) -> Result<(), ApiError> {
        let _state = self.state.lock().await;
        for (name, value) in handler.properties()? {
            self.publish_property(&name, value).await?;
        }
        Ok(())
    }

    async fn on_set(&self, handler: &dyn ServiceHandler, m: Message) {
        let property = last_level(&m.topic).to_owned();
        let _state = self.state.lock().await;
        let result = match parse_payload(&property, &m) {
            Ok(value) => handler.set(self, &property, value).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            // ApiGear has no error channel for sets: the property simply keeps its value.
            tracing::warn!(%property, error = %e, "apigear: set refused");
        }
    }

    async fn on_call(&self, handler: &dyn ServiceHandler, m: Message) {
        let operation = last_level(&m.topic).to_owned();
        let Some(reply_to) = m.reply_to.clone() else {
            tracing::warn!(%operation, "apigear: a call without a response topic is dropped");
            return;
        };
        if self.levels.is_interface_topic(&reply_to) {
            // A result sent there would be taken for a property value, a signal or a request.
            tracing::warn!(%operation, topic = %reply_to, "apigear: a call whose response topic is one of the interface's own is dropped");
            return;
        }
        if let Err(e) = self.conn.check_destination(&reply_to) {
            tracing::warn!(%operation, error = %e, "apigear: a call whose response topic the broker would refuse is dropped");
            return;
        }
        let result = match parse_payload(&operation, &m) {
            Ok(Value::Array(args)) if operation == PROPERTIES_OP && args.is_empty() => {
                handler.properties().map(Value::Object)
            }
            Ok(Value::Array(args)) => handler.call(&operation, args).await,
            Ok(other) => Err(ApiError::serialization(
                &operation,
                format!("the arguments must be a JSON array, not {other}"),
            )),
            Err(e) => Err(e),
        };
        let mut reply = match result.and_then(|v| json_bytes(&operation, &v)) {
            Ok(bytes) => Message::new(reply_to, bytes),
            Err(e) => {
                let body = serde_json::json!({"code": "failed", "message": e.to_string()});
                Message::new(reply_to, body.to_string().into_bytes())
                    .with_header(header::STATUS, header::STATUS_ERROR)
            }
        };
        reply.correlation_id = m.correlation_id.clone();
        if let Err(e) = self.conn.publish(reply).await {
            tracing::warn!(%operation, error = %e, "apigear: reply not sent");
        }
    }
}

/// A client adapter's state: the property cache and the channels of changes and signals.
/// `P` is the interface's properties, `C` one property's change, `S` one signal.
pub struct ClientState<P, C, S> {
    properties: Mutex<P>,
    changes: tokio::sync::broadcast::Sender<C>,
    signals: tokio::sync::broadcast::Sender<S>,
}

/// Changes and signals a receiver may fall behind by before it misses the oldest.
const CHANNEL: usize = 1024;

impl<P: Clone + Default, C: Clone, S: Clone> ClientState<P, C, S> {
    /// Default values, no receivers.
    pub fn new() -> Arc<Self> {
        Arc::new(ClientState {
            properties: Mutex::new(P::default()),
            changes: tokio::sync::broadcast::channel(CHANNEL).0,
            signals: tokio::sync::broadcast::channel(CHANNEL).0,
        })
    }

    /// Reads from the cache.
    pub fn read<R>(&self, f: impl FnOnce(&P) -> R) -> R {
        f(&self.properties.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Updates the cache; `f` returns the change to announce, if the value changed.
    pub fn update(&self, f: impl FnOnce(&mut P) -> Option<C>) {
        let change =
            f(&mut self.properties.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        if let Some(change) = change {
            let _ = self.changes.send(change);
        }
    }

    /// Announces a signal.
    pub fn signal(&self, signal: S) {
        let _ = self.signals.send(signal);
    }

    /// Property changes from now on (a value that arrives again unchanged is not one).
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<C> {
        self.changes.subscribe()
    }

    /// Signals from now on.
    pub fn signals(&self) -> tokio::sync::broadcast::Receiver<S> {
        self.signals.subscribe()
    }
}

/// What a client adapter hears: the generated code decodes it into its typed events.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// A property's value (retained values arrive after subscribing, and again after a
    /// reconnect).
    Property {
        /// The property.
        name: String,
        /// Its value.
        value: Value,
    },
    /// A signal.
    Signal {
        /// The signal.
        name: String,
        /// Its arguments.
        args: Vec<Value>,
    },
}

type Pending = Arc<Mutex<HashMap<Bytes, oneshot::Sender<Message>>>>;

/// A client adapter's side of the bus. Cheap to clone.
#[derive(Clone)]
pub struct ClientLink {
    conn: Connection,
    name: InterfaceName,
    levels: Levels,
    client_id: String,
    pending: Pending,
    /// The dispatch task, ended with the last public handle (the task's own copy has none).
    _task: Option<Arc<TaskGuard>>,
}

impl std::fmt::Debug for ClientLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientLink")
            .field("interface", &self.name)
            .field("client_id", &self.client_id)
            .finish()
    }
}

impl ClientLink {
    /// Subscribes to the interface's properties, signals and this client's results, and
    /// hands what arrives to `on_event`. Returns once the broker has the subscriptions (the
    /// adapters' "ready"); retained property values follow. On a transport without retained
    /// messages, the properties are read from the service (`_properties`) before it returns,
    /// and again after every reconnect.
    pub async fn connect(
        conn: &Connection,
        name: InterfaceName,
        on_event: impl Fn(ClientEvent) + Send + Sync + 'static,
    ) -> Result<ClientLink, ApiError> {
        let client_id = uuid::Uuid::new_v4().simple().to_string();
        let levels = name.on(conn);
        let results =
            TopicFilter::new(levels.result("+", &client_id)).map_err(busbar_core::Error::from)?;
        let opts = |f| SubscribeOptions::from(f).qos(QoS::AtLeastOnce);
        let mut replies = conn.subscribe_with(opts(results)).await?;
        let mut props = conn.subscribe_with(opts(levels.filter("prop")?)).await?;
        let mut sigs = conn.subscribe_with(opts(levels.filter("sig")?)).await?;
        let mut events = conn.events();
        let inner = ClientLink {
            conn: conn.clone(),
            name,
            levels,
            client_id,
            pending: Pending::default(),
            _task: None,
        };
        let on_event: Arc<dyn Fn(ClientEvent) + Send + Sync> = Arc::new(on_event);
        let (link, handler) = (inner.clone(), on_event.clone());
        let task = tokio::spawn(async move {
            let on_event = handler;
            loop {
                tokio::select! {
                    Some(m) = replies.recv() => {
                        let Some(id) = m.correlation_id.clone() else { continue };
                        let waiter = link.lock().remove(&id);
                        if let Some(w) = waiter {
                            let _ = w.send(m);
                        }
                    }
                    Some(m) = props.recv() => {
                        let name = last_level(&m.topic).to_owned();
                        // An empty retained payload clears a value; it is not one.
                        if m.payload.to_bytes().is_ok_and(|b| b.is_empty()) {
                            continue;
                        }
                        match parse_payload(&name, &m) {
                            Ok(value) => on_event(ClientEvent::Property { name, value }),
                            Err(e) => tracing::warn!(error = %e, "apigear: property value dropped"),
                        }
                    }
                    Some(m) = sigs.recv() => {
                        let name = last_level(&m.topic).to_owned();
                        match parse_payload(&name, &m) {
                            Ok(Value::Array(args)) => on_event(ClientEvent::Signal { name, args }),
                            Ok(other) => tracing::warn!(signal = %name, "apigear: signal arguments are not an array: {other}"),
                            Err(e) => tracing::warn!(error = %e, "apigear: signal dropped"),
                        }
                    }
                    event = events.next() => match event {
                        // Nothing retained brings the values back: ask for them again, as
                        // they may have changed while this client was away.
                        Some(ConnectionEvent::Reconnected { .. }) if !link.has_retained() => {
                            let (link, on_event) = (link.clone(), on_event.clone());
                            tokio::spawn(async move { link.read_properties(&*on_event).await });
                        }
                        Some(ConnectionEvent::Closed) | None => break,
                        Some(_) => {}
                    },
                }
            }
            // Calls still waiting can have no answer now: they end at once, not at their
            // deadlines.
            link.lock().clear();
        });
        let link = ClientLink { _task: Some(Arc::new(TaskGuard(task))), ..inner };
        if !link.has_retained() {
            link.read_properties(&*on_event).await;
        }
        Ok(link)
    }

    /// Reads every property from the service and hands the values to `on_event`; no
    /// service yet is no error (it publishes every value when it starts).
    async fn read_properties(&self, on_event: &(dyn Fn(ClientEvent) + Send + Sync)) {
        match self.properties(SNAPSHOT_TIMEOUT).await {
            Ok(all) => {
                for (name, value) in all {
                    on_event(ClientEvent::Property { name, value });
                }
            }
            Err(e) => no_snapshot(&e),
        }
    }

    /// The id in this client's result topics.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Whether property values come retained (else read them with [`ClientLink::properties`]).
    pub fn has_retained(&self) -> bool {
        self.conn.capabilities().retained
    }

    /// Asks the service to set `property` to `value`.
    pub async fn set(&self, property: &str, value: Value) -> Result<(), ApiError> {
        let topic = self.levels.topic("set", property)?;
        let m = Message::new(topic, json_bytes(property, &value)?);
        Ok(self.conn.publish(m).await?)
    }

    /// Calls `operation` with `args` and waits up to `timeout` for its result.
    pub async fn call(
        &self,
        operation: &str,
        args: Vec<Value>,
        timeout: Duration,
    ) -> Result<Value, ApiError> {
        // A UUID's 32 hex digits: unique, and text, which every transport carries (AMQP
        // takes correlation ids as text only).
        let correlation = Bytes::from(uuid::Uuid::new_v4().simple().to_string());
        let (tx, rx) = oneshot::channel();
        self.lock().insert(correlation.clone(), tx);
        // The entry goes whatever happens: answered, timed out, failed or dropped.
        let _forget = Forget { pending: &self.pending, id: correlation.clone() };
        self.send_call(operation, args, Some(correlation)).await?;
        let reply = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => return Err(busbar_core::error::RequestError::closed().into()),
            Err(_) => return Err(ApiError::Timeout { operation: operation.to_owned(), timeout }),
        };
        if reply.headers.get(header::STATUS) == Some(header::STATUS_ERROR) {
            let body = parse_payload(operation, &reply).unwrap_or_default();
            let message =
                body.get("message").and_then(Value::as_str).unwrap_or("failed").to_owned();
            return Err(ApiError::Remote { operation: operation.to_owned(), message });
        }
        parse_payload(operation, &reply)
    }

    /// Calls `operation` without waiting for a result (for services that send none, as
    /// C++ services do for void operations).
    pub async fn call_no_wait(&self, operation: &str, args: Vec<Value>) -> Result<(), ApiError> {
        self.send_call(operation, args, None).await
    }

    /// Every property's value, from the service (`_properties`).
    pub async fn properties(&self, timeout: Duration) -> Result<Map<String, Value>, ApiError> {
        match self.call(PROPERTIES_OP, Vec::new(), timeout).await? {
            Value::Object(map) => Ok(map),
            other => Err(ApiError::serialization(PROPERTIES_OP, format!("not an object: {other}"))),
        }
    }

    /// Calls waiting for their results now (none is left behind by a finished call).
    pub fn pending_calls(&self) -> usize {
        self.lock().len()
    }

    async fn send_call(
        &self,
        operation: &str,
        args: Vec<Value>,
        correlation: Option<Bytes>,
    ) -> Result<(), ApiError> {
        let topic = self.levels.topic("rpc", operation)?;
        let reply_to = Topic::new(self.levels.result(operation, &self.client_id))
            .map_err(busbar_core::Error::from)?;
        let mut m = Message::new(topic, json_bytes(operation, &Value::Array(args))?);
        m.reply_to = Some(reply_to);
        m.correlation_id = correlation.or_else(|| Some(Bytes::from_static(b"0")));
        Ok(self.conn.publish(m).await?)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Bytes, oneshot::Sender<Message>>> {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Removes a call's pending entry when the call ends, however it ends.
struct Forget<'a> {
    pending: &'a Pending,
    id: Bytes,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        if let Ok(mut p) = self.pending.lock() {
            p.remove(&self.id);
        }
    }
}

fn last_level(topic: &Topic) -> &str {
    topic.as_str().rsplit('/').next().unwrap_or_default()
}

/// A topic's JSON payload; for result topics the operation is the level before the client id.
fn parse_payload(member: &str, m: &Message) -> Result<Value, ApiError> {
    let bytes = m.payload.to_bytes().map_err(|e| ApiError::serialization(member, e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::serialization(member, format!("not JSON: {e}")))
}

fn json_bytes(member: &str, value: &Value) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(value).map_err(|e| ApiError::serialization(member, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_topics_may_not_be_the_interfaces_own() {
        let levels = Levels("tb.simple/SimpleInterface".to_owned());
        let t = |s: &str| Topic::new(s).expect("topic");
        for own in [
            "tb.simple/SimpleInterface/prop/propInt",
            "tb.simple/SimpleInterface/sig/sigInt",
            "tb.simple/SimpleInterface/set/propInt",
            "tb.simple/SimpleInterface/rpc/funcInt",
        ] {
            assert!(levels.is_interface_topic(&t(own)), "{own}");
        }
        for fine in [
            "tb.simple/SimpleInterface/rpc/funcInt/b'id'/result",
            "_busbar/reply/1234",
            "tb.simple/OtherInterface/prop/propInt",
        ] {
            assert!(!levels.is_interface_topic(&t(fine)), "{fine}");
        }
    }

    #[test]
    fn nan_never_travels() {
        assert!(encode("x", &f64::NAN).is_err());
        assert!(encode("x", &vec![1.0f32, f32::INFINITY]).is_err());
        assert_eq!(encode("x", &1.5f64).expect("finite"), serde_json::json!(1.5));
    }
}
