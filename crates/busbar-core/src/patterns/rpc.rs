//! Request/reply: [`RpcClient`] and [`RpcServer`].
//!
//! Wire shape (the `native` profile): the request is the encoded `Req` published on the
//! service topic with `reply_to` and `correlation_id` set by the transport; the reply is the
//! encoded `Resp` in the request's codec, or, when the handler fails, a JSON [`RpcError`]
//! with the header `busbar-status: error`. A handler error therefore reaches the caller as a
//! [`RequestError`] of kind [`Remote`](RequestErrorKind::Remote), never as a timeout.

use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::codec::Codec;
use crate::connection::Connection;
#[cfg(doc)]
use crate::error::RequestErrorKind;
use crate::error::{RequestError, Result, RpcError, SubscribeError};
use crate::message::{Message, QoS, header};
use crate::queue::QueueConfig;
use crate::topic::{Topic, TopicFilter};
use crate::transport::SubscribeOptions;

/// Default time a call waits for its reply.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// What serves requests: any `Fn(Req) -> impl Future<Output = Result<Resp, RpcError>>` that
/// tasks can share (closures and `async fn`s qualify as they are).
pub trait RpcHandler<Req, Resp>: Send + Sync + 'static {
    /// The future one call returns.
    type Future: Future<Output = std::result::Result<Resp, RpcError>> + Send + 'static;

    /// Handles one request.
    fn call(&self, request: Req) -> Self::Future;
}

impl<Req, Resp, F, Fut> RpcHandler<Req, Resp> for F
where
    F: Fn(Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<Resp, RpcError>> + Send + 'static,
{
    type Future = Fut;

    fn call(&self, request: Req) -> Fut {
        self(request)
    }
}

/// Calls a service. Cheap to clone; share one among many tasks, calls run concurrently and
/// each reply reaches its own caller.
pub struct RpcClient<Req, Resp> {
    conn: Connection,
    topic: Topic,
    codec: Codec,
    timeout: Duration,
    qos: Option<QoS>,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp> Clone for RpcClient<Req, Resp> {
    fn clone(&self) -> Self {
        RpcClient {
            conn: self.conn.clone(),
            topic: self.topic.clone(),
            codec: self.codec,
            timeout: self.timeout,
            qos: self.qos,
            _types: PhantomData,
        }
    }
}

impl<Req, Resp> RpcClient<Req, Resp>
where
    Req: Serialize + Send + Sync + 'static,
    Resp: DeserializeOwned + Send + Sync + 'static,
{
    /// A client of the service on `topic` (JSON, 5 s deadline).
    pub fn new(conn: &Connection, topic: &str) -> Result<Self, crate::topic::TopicError> {
        Ok(RpcClient {
            conn: conn.clone(),
            topic: Topic::new(topic)?,
            codec: Codec::default(),
            timeout: DEFAULT_TIMEOUT,
            qos: None,
            _types: PhantomData,
        })
    }

    /// Sets the default deadline of each call.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Encodes requests with `codec` (replies come back in the same codec).
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Sends requests with `qos`.
    pub fn qos(mut self, qos: QoS) -> Self {
        self.qos = Some(qos);
        self
    }

    /// Calls with the default deadline.
    pub async fn call(&self, request: Req) -> Result<Resp, RequestError> {
        self.call_with_timeout(request, self.timeout).await
    }

    /// Calls with an explicit deadline. Dropping the returned future cancels the call.
    pub async fn call_with_timeout(
        &self,
        request: Req,
        timeout: Duration,
    ) -> Result<Resp, RequestError> {
        let mut m = super::typed_message(&self.conn, self.topic.clone(), request, self.codec)?;
        m.qos = self.qos;
        if self.conn.capabilities().expiry {
            // Lets the server skip requests whose caller has already given up.
            // A deadline too far to represent means no expiry.
            m.expires_at = tokio::time::Instant::now().checked_add(timeout);
        }
        let reply = self.conn.request(m, timeout).await?;
        decode_reply(reply, self.codec)
    }
}

fn decode_reply<Resp: DeserializeOwned + Send + Sync + 'static>(
    reply: Message,
    codec: Codec,
) -> Result<Resp, RequestError> {
    if reply.headers.get(header::STATUS) == Some(header::STATUS_ERROR) {
        let err: RpcError = reply.decode(Codec::Json)?;
        return Err(RequestError::remote(err));
    }
    Ok(reply.decode(codec)?)
}

/// Result of stopping a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DrainReport {
    /// Handlers in flight at the stop that finished within the drain bound.
    pub completed: usize,
    /// Handlers still running at the bound, which were aborted.
    pub aborted: usize,
}

/// Serves requests on one topic until stopped.
pub struct RpcServer {
    topic: Topic,
    cancel: CancellationToken,
    task: Option<JoinHandle<DrainReport>>,
    drain: Arc<std::sync::Mutex<Duration>>,
}

/// Configures an [`RpcServer`].
pub struct RpcServerBuilder {
    conn: Connection,
    topic: std::result::Result<Topic, crate::topic::TopicError>,
    codec: Codec,
    concurrency: usize,
    queue_group: Option<String>,
    group_chosen: bool,
    queue: QueueConfig,
}

/// Default number of requests one server handles at once.
pub const DEFAULT_CONCURRENCY: usize = 64;
/// Queue group that server instances of one service join by default.
pub const DEFAULT_QUEUE_GROUP: &str = "busbar-rpc";

impl RpcServerBuilder {
    /// Most requests handled at once; further requests wait in the subscription queue.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Decodes byte requests without a `content-type` header with `codec`.
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Joins queue group `group` (instances in one group share the load); `None` makes every
    /// instance receive every request. By default servers join `busbar-rpc` where the
    /// transport has queue groups; a group chosen here on a transport without them is refused.
    pub fn queue_group(mut self, group: Option<String>) -> Self {
        self.queue_group = group;
        self.group_chosen = true;
        self
    }

    /// Sets the request queue.
    pub fn queue(mut self, queue: QueueConfig) -> Self {
        self.queue = queue;
        self
    }

    /// Subscribes and starts serving with `handler`.
    pub async fn serve<Req, Resp, H>(self, handler: H) -> Result<RpcServer>
    where
        Req: DeserializeOwned + Send + Sync + 'static,
        Resp: Serialize + Send + Sync + 'static,
        H: RpcHandler<Req, Resp>,
    {
        let topic = self.topic?;
        let group = match (self.queue_group, self.conn.capabilities().queue_groups) {
            (Some(_), false) if self.group_chosen => {
                let refused: SubscribeError = self.conn.unsupported("queue groups");
                return Err(refused.into());
            }
            (group, true) => group,
            (_, false) => None,
        };
        let mut options = SubscribeOptions::from(TopicFilter::from(topic.clone()));
        options.queue_group = group;
        options.queue = self.queue;
        let sub = self.conn.subscribe_with(options).await?;
        let cancel = CancellationToken::new();
        let drain = Arc::new(std::sync::Mutex::new(Duration::from_secs(5)));
        let worker = Worker {
            conn: self.conn,
            handler: Arc::new(handler),
            codec: self.codec,
            concurrency: self.concurrency,
            _types: PhantomData,
        };
        let task = tokio::spawn(worker.run(sub, cancel.clone(), drain.clone()));
        Ok(RpcServer { topic, cancel, task: Some(task), drain })
    }
}

impl RpcServer {
    /// Configures a server for `topic` on `conn`.
    pub fn builder(conn: &Connection, topic: &str) -> RpcServerBuilder {
        RpcServerBuilder {
            conn: conn.clone(),
            topic: Topic::new(topic),
            codec: Codec::default(),
            concurrency: DEFAULT_CONCURRENCY,
            queue_group: Some(DEFAULT_QUEUE_GROUP.to_owned()),
            group_chosen: false,
            queue: QueueConfig::default(),
        }
    }

    /// Serves `topic` with default settings.
    pub async fn spawn<Req, Resp, H>(conn: &Connection, topic: &str, handler: H) -> Result<Self>
    where
        Req: DeserializeOwned + Send + Sync + 'static,
        Resp: Serialize + Send + Sync + 'static,
        H: RpcHandler<Req, Resp>,
    {
        Self::builder(conn, topic).serve(handler).await
    }

    /// The topic served.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// Stops taking requests, lets handlers in flight finish for up to `drain`, then aborts
    /// the rest.
    pub async fn stop(mut self, drain: Duration) -> DrainReport {
        *self.drain.lock().unwrap_or_else(|p| p.into_inner()) = drain;
        self.cancel.cancel();
        match self.task.take() {
            Some(task) => task.await.unwrap_or_default(),
            None => DrainReport::default(),
        }
    }
}

impl Drop for RpcServer {
    fn drop(&mut self) {
        // A server dropped without `stop` stops taking requests and drains like `stop` with
        // the last bound given (5 s unless `stop` set another).
        self.cancel.cancel();
    }
}

struct Worker<Req, Resp, H> {
    conn: Connection,
    handler: Arc<H>,
    codec: Codec,
    concurrency: usize,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp, H> Worker<Req, Resp, H>
where
    Req: DeserializeOwned + Send + Sync + 'static,
    Resp: Serialize + Send + Sync + 'static,
    H: RpcHandler<Req, Resp>,
{
    async fn run(
        self,
        mut sub: crate::transport::Subscription,
        cancel: CancellationToken,
        drain: Arc<std::sync::Mutex<Duration>>,
    ) -> DrainReport {
        let mut running = JoinSet::new();
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                Some(_) = running.join_next(), if !running.is_empty() => {}
                // Taking a request only when a slot is free leaves the rest queued (and the
                // queue's policy in charge) instead of piling up tasks.
                m = sub.recv(), if running.len() < self.concurrency => match m {
                    Some(m) => {
                        running.spawn(handle(self.conn.clone(), self.handler.clone(), m, self.codec));
                    }
                    None => break,
                },
            }
        }
        // Requests already queued will not be served: say so now rather than let each
        // caller wait out its deadline.
        while let Some(m) = sub.try_recv() {
            running.spawn(refuse(self.conn.clone(), m));
        }
        drop(sub);
        let bound = *drain.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = tokio::time::Instant::now() + bound;
        let mut completed = 0;
        while let Ok(Some(_)) = tokio::time::timeout_at(deadline, running.join_next()).await {
            completed += 1;
        }
        let aborted = running.len();
        running.abort_all();
        DrainReport { completed, aborted }
    }
}

/// Answers `request` with an `unavailable` error: the server is stopping.
async fn refuse(conn: Connection, request: Message) {
    let error = RpcError::new(RpcError::UNAVAILABLE, "the service is stopping");
    let Ok(body) = Codec::Json.encode(&error) else { return };
    let Some(reply) = Message::reply(&request, body) else { return };
    if conn.check_destination(&reply.topic).is_err() {
        return;
    }
    let reply = reply.with_header(header::STATUS, header::STATUS_ERROR);
    if let Err(e) = conn.publish(reply).await {
        tracing::debug!(error = %e, "could not refuse a queued request");
    }
}

async fn handle<Req, Resp, H>(conn: Connection, handler: Arc<H>, mut request: Message, codec: Codec)
where
    Req: DeserializeOwned + Send + Sync + 'static,
    Resp: Serialize + Send + Sync + 'static,
    H: RpcHandler<Req, Resp>,
{
    let Some(reply_to) = request.reply_to.clone() else {
        tracing::debug!(topic = %request.topic, "request without reply_to ignored");
        return;
    };
    if request.is_expired() {
        tracing::debug!(topic = %request.topic, "request expired before handling; skipped");
        return;
    }
    // The reply topic came off the wire: one the broker would refuse (or drop the connection
    // for) is refused here, before any work, and never sent.
    if let Err(e) = conn.check_destination(&reply_to) {
        tracing::warn!(topic = %request.topic, error = %e, "request refused: no reply can reach its reply topic");
        return;
    }
    let codec = request.codec_or(codec);
    let payload = std::mem::take(&mut request.payload);
    // A traced request is handled in a span of its trace: what the handler sends carries
    // it on, and so does the reply.
    let caller = crate::trace::TraceContext::of(&request);
    let trace = caller.map(|t| t.child());
    let outcome = match payload.decode::<Req>(codec, request.topic.as_str()) {
        Err(e) => Err(RpcError::new(RpcError::BAD_REQUEST, e.to_string())),
        Ok(req) => {
            let work = AssertUnwindSafe(handler.call(req)).catch_unwind();
            let done = match trace {
                None => work.await,
                Some(span) => {
                    use tracing::Instrument;
                    let traced = work.instrument(tracing::info_span!(
                        "busbar.handle",
                        topic = %request.topic,
                        trace_id = %span.trace_id(),
                        span_id = %span.span_id(),
                        parent_span_id = %caller.map(|c| c.span_id()).unwrap_or_default()
                    ));
                    span.in_scope(traced).await
                }
            };
            done.unwrap_or_else(|_| Err(RpcError::internal("the handler panicked")))
        }
    };
    let reply = match outcome {
        Ok(resp) => super::typed_message(&conn, reply_to.clone(), resp, codec)
            .map_err(|e| RpcError::internal(format!("could not encode the reply: {e}"))),
        Err(e) => Err(e),
    };
    let mut reply = match reply {
        Ok(m) => m,
        Err(e) => match super::typed_message(&conn, reply_to, e, Codec::Json) {
            Ok(m) => m.with_header(header::STATUS, header::STATUS_ERROR),
            Err(e) => {
                tracing::error!(error = %e, "could not encode an RPC error reply");
                return;
            }
        },
    };
    reply.qos = request.qos;
    reply.correlation_id = request.correlation_id.take();
    // The reply is sent from the handling span: a child of it, so each span id names one
    // step (`publish` is called inside the scope: it stamps when called).
    let sent = match trace {
        Some(span) => span.in_scope(async { conn.publish(reply).await }).await,
        None => conn.publish(reply).await,
    };
    if let Err(e) = sent {
        tracing::warn!(topic = %request.topic, error = %e, "could not publish RPC reply");
    }
}
