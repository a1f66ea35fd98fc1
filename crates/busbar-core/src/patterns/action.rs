//! Preemptable long-running goals: [`ActionClient`] and [`ActionServer`].
//!
//! The state machine follows ROS 2 actions:
//!
//! ```text
//! ACCEPTED -> EXECUTING -> SUCCEEDED | ABORTED | CANCELED
//!                 \-> CANCELING -> CANCELED | SUCCEEDED | ABORTED
//! ```
//!
//! Wire shape (the `native` profile), for an action named `N`:
//! * goal: RPC on `N/goal` carrying `{goal_id, client, goal}`; the reply says accepted or
//!   rejected and which server instance took it (servers share `N/goal` in a queue group);
//! * cancel: RPC on `N/cancel/<server>` carrying `{goal_id}`;
//! * updates: the server publishes status changes, feedback (numbered) and finally the result
//!   on the client's own topic `N/client/<client>`, in that order from one task, so feedback
//!   keeps its order and the terminal status travels *with* the result: a client can never
//!   see a goal finished before its result is there.

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::FutureExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::pubsub::Subscriber;
use super::rpc::{DrainReport, RpcClient, RpcServer};
use crate::codec::Codec;
use crate::codec::CodecError;
use crate::connection::Connection;
use crate::error::{GoalError, PublishError, RequestError, Result, RpcError};
use crate::message::Message;
use crate::queue::{Overflow, QueueConfig, QueueReceiver, QueueSender, queue};
use crate::topic::Topic;
use crate::topic::TopicError;
use crate::transport::SubscribeOptions;

/// Where a goal is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum GoalStatus {
    /// The server took the goal.
    Accepted,
    /// The handler is running.
    Executing,
    /// Cancellation was requested; the handler has not finished yet.
    Canceling,
    /// The handler finished with a result.
    Succeeded,
    /// The handler failed (or the server stopped before it finished).
    Aborted,
    /// The handler honoured a cancellation.
    Canceled,
}

impl GoalStatus {
    /// True for SUCCEEDED, ABORTED and CANCELED.
    pub fn is_terminal(self) -> bool {
        matches!(self, GoalStatus::Succeeded | GoalStatus::Aborted | GoalStatus::Canceled)
    }

    /// Position in the state machine; status only ever moves forward.
    fn rank(self) -> u8 {
        match self {
            GoalStatus::Accepted => 0,
            GoalStatus::Executing => 1,
            GoalStatus::Canceling => 2,
            _ => 3,
        }
    }
}

/// How a goal handler ends without a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ActionError {
    /// The handler stopped because cancellation was requested: the goal ends CANCELED.
    #[error("canceled")]
    Canceled,
    /// The handler failed: the goal ends ABORTED and the client gets this error.
    #[error("aborted: {0}")]
    Aborted(RpcError),
}

impl From<RpcError> for ActionError {
    fn from(e: RpcError) -> Self {
        ActionError::Aborted(e)
    }
}

#[derive(Serialize, Deserialize)]
struct GoalRequest<G> {
    goal_id: String,
    client: String,
    goal: G,
}

#[derive(Serialize, Deserialize)]
struct GoalResponse {
    accepted: bool,
    reason: Option<String>,
    server: String,
}

#[derive(Serialize, Deserialize)]
struct CancelRequest {
    goal_id: String,
}

#[derive(Serialize, Deserialize)]
struct CancelResponse {
    accepted: bool,
}

#[derive(Serialize, Deserialize)]
enum GoalUpdate<F, R> {
    Status { goal_id: String, status: GoalStatus },
    Feedback { goal_id: String, seq: u64, feedback: F },
    Result { goal_id: String, status: GoalStatus, result: Option<R>, error: Option<RpcError> },
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn topic(parts: &[&str]) -> Result<Topic, TopicError> {
    Topic::new(parts.join("/"))
}

// ------------------------------------------------------------------------------------------
// Server

/// Passed to a goal handler: sends feedback and tells about cancellation.
pub struct GoalContext<F> {
    goal_id: String,
    conn: Connection,
    updates: Topic,
    token: CancellationToken,
    seq: AtomicU64,
    feedback_message: FeedbackFn<F>,
}

type FeedbackFn<F> = Arc<dyn Fn(&Topic, &str, u64, F) -> Result<Message, CodecError> + Send + Sync>;

impl<F: Serialize + Send + Sync + 'static> GoalContext<F> {
    /// The goal's id.
    pub fn goal_id(&self) -> &str {
        &self.goal_id
    }

    /// Sends feedback to the client. Feedback sent from one task arrives in the order sent
    /// (await each call; calls racing from several tasks arrive in the order they complete).
    pub async fn feedback(&self, feedback: F) -> Result<(), PublishError> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let m = (self.feedback_message)(&self.updates, &self.goal_id, seq, feedback)?;
        self.conn.publish(m).await
    }

    /// True once the client asked to cancel.
    pub fn is_cancel_requested(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves when the client asks to cancel (use in `select!` with the work).
    pub async fn cancelled(&self) {
        self.token.cancelled().await
    }

    /// The cancellation token, to hand to sub-tasks.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}

struct GoalEntry {
    token: CancellationToken,
    updates: Topic,
    abort: Option<AbortHandle>,
}

/// What executes goals: any `Fn(G, Arc<GoalContext<F>>) -> impl Future<Output =
/// Result<R, ActionError>>` that tasks can share (closures and `async fn`s qualify).
pub trait GoalHandler<G, F, R>: Send + Sync + 'static {
    /// The future one goal runs as.
    type Future: Future<Output = std::result::Result<R, ActionError>> + Send + 'static;

    /// Runs one goal.
    fn call(&self, goal: G, ctx: Arc<GoalContext<F>>) -> Self::Future;
}

impl<G, F, R, H, Fut> GoalHandler<G, F, R> for H
where
    H: Fn(G, Arc<GoalContext<F>>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<R, ActionError>> + Send + 'static,
{
    type Future = Fut;

    fn call(&self, goal: G, ctx: Arc<GoalContext<F>>) -> Fut {
        self(goal, ctx)
    }
}

type Goals = Arc<Mutex<HashMap<String, GoalEntry>>>;
type AcceptFn<G> = Arc<dyn Fn(&G) -> std::result::Result<(), String> + Send + Sync>;
type AbortedFn = Arc<dyn Fn(Topic, String, RpcError) -> Result<Message, CodecError> + Send + Sync>;

/// Configures an [`ActionServer`].
pub struct ActionServerBuilder<G> {
    conn: Connection,
    name: String,
    codec: Codec,
    max_goals: usize,
    accept: Option<AcceptFn<G>>,
}

/// Default bound on goals running at once in one server.
pub const DEFAULT_MAX_GOALS: usize = 1024;

impl<G: DeserializeOwned + Send + Sync + 'static> ActionServerBuilder<G> {
    /// Rejects new goals while `n` are running.
    pub fn max_goals(mut self, n: usize) -> Self {
        self.max_goals = n.max(1);
        self
    }

    /// Encodes updates with `codec`.
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Decides whether to accept each goal; an `Err(reason)` rejects it.
    pub fn accept(
        mut self,
        f: impl Fn(&G) -> std::result::Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.accept = Some(Arc::new(f));
        self
    }

    /// Starts serving goals with `handler`.
    pub async fn serve<F, R, H>(self, handler: H) -> Result<ActionServer>
    where
        F: Serialize + Send + Sync + 'static,
        R: Serialize + Send + Sync + 'static,
        H: GoalHandler<G, F, R>,
    {
        let server_id = uuid::Uuid::new_v4().simple().to_string();
        let goals: Goals = Arc::default();
        let tracker = TaskTracker::new();
        let shared = Arc::new(ServerShared {
            conn: self.conn.clone(),
            client_prefix: format!("{}/client/", self.name),
            codec: self.codec,
            server_id: server_id.clone(),
            goals: goals.clone(),
            tracker: tracker.clone(),
            max_goals: self.max_goals,
            accept: self.accept,
            handler,
            _types: PhantomData,
        });
        let goal_server = {
            let shared = shared.clone();
            RpcServer::builder(&self.conn, topic(&[&self.name, "goal"])?.as_str())
                .codec(self.codec)
                .serve(move |req: GoalRequest<G>| {
                    let shared = shared.clone();
                    async move { shared.start_goal(req) }
                })
                .await?
        };
        let cancel_server = {
            let shared = shared.clone();
            RpcServer::builder(&self.conn, topic(&[&self.name, "cancel", &server_id])?.as_str())
                .queue_group(None)
                .serve(move |req: CancelRequest| {
                    let shared = shared.clone();
                    async move { Ok(shared.cancel_goal(req.goal_id).await) }
                })
                .await?
        };
        let aborted_message: AbortedFn = {
            let shared = shared.clone();
            Arc::new(move |topic, goal_id, error| {
                shared.message(
                    topic,
                    GoalUpdate::Result {
                        goal_id,
                        status: GoalStatus::Aborted,
                        result: None,
                        error: Some(error),
                    },
                )
            })
        };
        Ok(ActionServer {
            conn: self.conn,
            goal_server,
            cancel_server,
            goals,
            tracker,
            server_id,
            aborted_message,
        })
    }
}

struct ServerShared<G, F, R, H> {
    conn: Connection,
    client_prefix: String,
    codec: Codec,
    server_id: String,
    goals: Goals,
    tracker: TaskTracker,
    max_goals: usize,
    accept: Option<AcceptFn<G>>,
    handler: H,
    _types: PhantomData<fn(G) -> (F, R)>,
}

impl<G, F, R, H> ServerShared<G, F, R, H>
where
    G: DeserializeOwned + Send + Sync + 'static,
    F: Serialize + Send + Sync + 'static,
    R: Serialize + Send + Sync + 'static,
    H: GoalHandler<G, F, R>,
{
    /// Every update travels as `GoalUpdate<F, R>`, the exact type the client decodes, so the
    /// in-process bus hands it over without serialising.
    fn message(&self, topic: Topic, update: GoalUpdate<F, R>) -> Result<Message, CodecError> {
        super::typed_message(&self.conn, topic, update, self.codec)
    }

    async fn send(&self, topic: &Topic, update: GoalUpdate<F, R>) {
        let sent = match self.message(topic.clone(), update) {
            Ok(m) => self.conn.publish(m).await,
            Err(e) => Err(e.into()),
        };
        if let Err(e) = sent {
            tracing::warn!(topic = %topic, error = %e, "could not publish goal update");
        }
    }

    fn reject(&self, reason: String) -> std::result::Result<GoalResponse, RpcError> {
        Ok(GoalResponse { accepted: false, reason: Some(reason), server: self.server_id.clone() })
    }

    fn start_goal(
        self: &Arc<Self>,
        req: GoalRequest<G>,
    ) -> std::result::Result<GoalResponse, RpcError> {
        if let Some(accept) = &self.accept
            && let Err(reason) = accept(&req.goal)
        {
            return self.reject(reason);
        }
        // Updates go only to this action's client topics: a goal cannot make the server
        // publish elsewhere.
        if !req.client.starts_with(&self.client_prefix) {
            return Err(RpcError::invalid_argument(format!(
                "client topic {:?} is not under {:?}",
                req.client, self.client_prefix
            )));
        }
        let updates = Topic::new(&req.client)
            .map_err(|e| RpcError::invalid_argument(format!("bad client topic: {e}")))?;
        let token = CancellationToken::new();
        {
            let mut goals = lock(&self.goals);
            if goals.len() >= self.max_goals {
                return self.reject(format!("busy: {} goals running", goals.len()));
            }
            if goals.contains_key(&req.goal_id) {
                return self.reject(format!("goal id {} is already running", req.goal_id));
            }
            goals.insert(
                req.goal_id.clone(),
                GoalEntry { token: token.clone(), updates: updates.clone(), abort: None },
            );
        }
        let feedback_message: FeedbackFn<F> = {
            let this = self.clone();
            Arc::new(move |topic: &Topic, goal_id: &str, seq, feedback| {
                this.message(
                    topic.clone(),
                    GoalUpdate::Feedback { goal_id: goal_id.to_owned(), seq, feedback },
                )
            })
        };
        let ctx = Arc::new(GoalContext {
            goal_id: req.goal_id.clone(),
            conn: self.conn.clone(),
            updates,
            token,
            seq: AtomicU64::new(0),
            feedback_message,
        });
        let this = self.clone();
        let goal_id = req.goal_id.clone();
        let handle = self.tracker.spawn(async move { this.execute(req.goal, ctx).await });
        if let Some(entry) = lock(&self.goals).get_mut(&goal_id) {
            entry.abort = Some(handle.abort_handle());
        }
        Ok(GoalResponse { accepted: true, reason: None, server: self.server_id.clone() })
    }

    async fn execute(self: Arc<Self>, goal: G, ctx: Arc<GoalContext<F>>) {
        let goal_id = ctx.goal_id.clone();
        self.send(
            &ctx.updates,
            GoalUpdate::Status { goal_id: goal_id.clone(), status: GoalStatus::Executing },
        )
        .await;
        let outcome = AssertUnwindSafe(self.handler.call(goal, ctx.clone()))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                Err(ActionError::Aborted(RpcError::internal("the goal handler panicked")))
            });
        let (status, result, error) = match outcome {
            Ok(r) => (GoalStatus::Succeeded, Some(r), None),
            Err(ActionError::Canceled) => (GoalStatus::Canceled, None, None),
            Err(ActionError::Aborted(e)) => (GoalStatus::Aborted, None, Some(e)),
        };
        lock(&self.goals).remove(&goal_id);
        self.send(&ctx.updates, GoalUpdate::Result { goal_id, status, result, error }).await;
    }

    async fn cancel_goal(&self, goal_id: String) -> CancelResponse {
        let (updates, token) = {
            let goals = lock(&self.goals);
            match goals.get(&goal_id) {
                Some(entry) if !entry.token.is_cancelled() => {
                    (entry.updates.clone(), entry.token.clone())
                }
                Some(_) => return CancelResponse { accepted: true },
                None => return CancelResponse { accepted: false },
            }
        };
        // CANCELING goes out before the handler learns of the cancel, so it always precedes
        // the terminal status on the client's topic.
        self.send(&updates, GoalUpdate::Status { goal_id, status: GoalStatus::Canceling }).await;
        token.cancel();
        CancelResponse { accepted: true }
    }
}

/// Serves goals of one action until stopped.
pub struct ActionServer {
    conn: Connection,
    goal_server: RpcServer,
    cancel_server: RpcServer,
    goals: Goals,
    tracker: TaskTracker,
    server_id: String,
    aborted_message: AbortedFn,
}

impl ActionServer {
    /// Configures a server for the action `name` on `conn`.
    pub fn builder<G>(conn: &Connection, name: &str) -> ActionServerBuilder<G> {
        ActionServerBuilder {
            conn: conn.clone(),
            name: name.to_owned(),
            codec: Codec::default(),
            max_goals: DEFAULT_MAX_GOALS,
            accept: None,
        }
    }

    /// This instance's id (goals name it as their server).
    pub fn server_id(&self) -> &str {
        &self.server_id
    }

    /// Goals running now.
    pub fn running_goals(&self) -> usize {
        lock(&self.goals).len()
    }

    /// Stops taking goals, lets running goals finish for up to `drain`, then aborts the rest
    /// (their clients get an ABORTED result saying the server stopped).
    pub async fn stop(self, drain: Duration) -> DrainReport {
        let deadline = tokio::time::Instant::now() + drain;
        self.goal_server.stop(drain).await;
        let running = lock(&self.goals).len();
        self.tracker.close();
        let finished = tokio::time::timeout_at(deadline, self.tracker.wait()).await.is_ok();
        let mut aborted = 0;
        if !finished {
            let left: Vec<(String, GoalEntry)> = lock(&self.goals).drain().collect();
            for (goal_id, entry) in left {
                if let Some(a) = entry.abort {
                    a.abort();
                }
                aborted += 1;
                let error = RpcError::new(RpcError::UNAVAILABLE, "the action server stopped");
                let sent = match (self.aborted_message)(entry.updates, goal_id, error) {
                    Ok(m) => self.conn.publish(m).await,
                    Err(e) => Err(e.into()),
                };
                if let Err(e) = sent {
                    tracing::warn!(error = %e, "could not tell a client its goal was aborted");
                }
            }
        }
        self.cancel_server.stop(Duration::ZERO).await;
        DrainReport { completed: running.saturating_sub(aborted), aborted }
    }
}

// ------------------------------------------------------------------------------------------
// Client

struct GoalSlot<F, R> {
    feedback: QueueSender<F>,
    status: watch::Sender<GoalStatus>,
    transitions: QueueSender<GoalStatus>,
    result: Option<oneshot::Sender<Result<R, GoalError>>>,
}

type Slots<F, R> = Arc<Mutex<HashMap<String, GoalSlot<F, R>>>>;

/// Default bound on unread feedback per goal; older feedback is dropped (and counted) first.
pub const DEFAULT_FEEDBACK_QUEUE: usize = 256;

/// Sends goals to an action and follows them. Cheap to clone; one subscription serves all
/// goals of a client.
pub struct ActionClient<G, F, R> {
    inner: Arc<ClientInner<F, R>>,
    goal_rpc: RpcClient<GoalRequest<G>, GoalResponse>,
    feedback_queue: QueueConfig,
    timeout: Duration,
}

impl<G, F, R> Clone for ActionClient<G, F, R> {
    fn clone(&self) -> Self {
        ActionClient {
            inner: self.inner.clone(),
            goal_rpc: self.goal_rpc.clone(),
            feedback_queue: self.feedback_queue,
            timeout: self.timeout,
        }
    }
}

struct ClientInner<F, R> {
    conn: Connection,
    name: String,
    updates: Topic,
    slots: Slots<F, R>,
    codec: Codec,
    dispatcher: JoinHandle<()>,
}

impl<F, R> Drop for ClientInner<F, R> {
    fn drop(&mut self) {
        self.dispatcher.abort();
    }
}

impl<G, F, R> ActionClient<G, F, R>
where
    G: Serialize + Send + Sync + 'static,
    F: DeserializeOwned + Send + Sync + 'static,
    R: DeserializeOwned + Send + Sync + 'static,
{
    /// A client of the action `name` (JSON).
    pub async fn new(conn: &Connection, name: &str) -> Result<Self> {
        Self::with_codec(conn, name, Codec::default()).await
    }

    /// A client of the action `name` encoding goals with `codec`.
    pub async fn with_codec(conn: &Connection, name: &str, codec: Codec) -> Result<Self> {
        let client_id = uuid::Uuid::new_v4().simple().to_string();
        let updates = topic(&[name, "client", &client_id])?;
        // Updates must never be dropped (a lost result would hang its caller), so the
        // subscription blocks; the dispatcher never waits on users, so it always drains it.
        let options = SubscribeOptions::from(crate::topic::TopicFilter::from(updates.clone()))
            .overflow(Overflow::Block);
        let sub = Subscriber::<GoalUpdate<F, R>>::with_options(conn, options).await?.codec(codec);
        let slots: Slots<F, R> = Arc::default();
        let dispatcher = tokio::spawn(dispatch(sub, slots.clone()));
        let inner = Arc::new(ClientInner {
            conn: conn.clone(),
            name: name.to_owned(),
            updates,
            slots,
            codec,
            dispatcher,
        });
        let goal_rpc = RpcClient::new(conn, topic(&[name, "goal"])?.as_str())?.codec(codec);
        Ok(ActionClient {
            inner,
            goal_rpc,
            feedback_queue: QueueConfig::new(DEFAULT_FEEDBACK_QUEUE, Overflow::DropOldest),
            timeout: super::rpc::DEFAULT_TIMEOUT,
        })
    }

    /// Sets how unread feedback is queued per goal (default: 256, dropping the oldest).
    pub fn feedback_queue(mut self, queue: QueueConfig) -> Self {
        self.feedback_queue = queue;
        self
    }

    /// Sets the deadline of the goal and cancel requests (default 5 s). The goal itself may
    /// run as long as it needs.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self.goal_rpc = self.goal_rpc.timeout(timeout);
        self
    }

    /// Sends a goal; resolves once the server accepted it (or fails with
    /// [`GoalErrorKind::Rejected`](crate::error::GoalErrorKind::Rejected)).
    pub async fn send_goal(&self, goal: G) -> Result<GoalHandle<F, R>, GoalError> {
        let goal_id = uuid::Uuid::new_v4().simple().to_string();
        let (feedback_tx, feedback_rx) = queue(self.feedback_queue);
        let (status_tx, status_rx) = watch::channel(GoalStatus::Accepted);
        // At most four transitions follow ACCEPTED, so this never fills.
        let (transitions_tx, transitions_rx) = queue(QueueConfig::new(8, Overflow::DropOldest));
        let (result_tx, result_rx) = oneshot::channel();
        // Registered before the goal is sent: updates may overtake the acceptance reply.
        lock(&self.inner.slots).insert(
            goal_id.clone(),
            GoalSlot {
                feedback: feedback_tx,
                status: status_tx,
                transitions: transitions_tx,
                result: Some(result_tx),
            },
        );
        let request = GoalRequest {
            goal_id: goal_id.clone(),
            client: self.inner.updates.as_str().to_owned(),
            goal,
        };
        let response = match self.goal_rpc.call(request).await {
            Ok(r) if r.accepted => r,
            Ok(r) => {
                lock(&self.inner.slots).remove(&goal_id);
                return Err(GoalError::rejected(&r.reason.unwrap_or_default()));
            }
            Err(e) => {
                lock(&self.inner.slots).remove(&goal_id);
                return Err(e.into());
            }
        };
        let cancel_topic = topic(&[&self.inner.name, "cancel", &response.server])?;
        Ok(GoalHandle {
            _client: self.inner.clone(),
            goal_id,
            conn: self.inner.conn.clone(),
            cancel_topic,
            codec: self.inner.codec,
            timeout: self.timeout,
            feedback: feedback_rx,
            status: status_rx,
            transitions: transitions_rx,
            result: result_rx,
        })
    }
}

async fn dispatch<F, R>(mut sub: Subscriber<GoalUpdate<F, R>>, slots: Slots<F, R>)
where
    F: DeserializeOwned + Send + Sync + 'static,
    R: DeserializeOwned + Send + Sync + 'static,
{
    while let Some(update) = sub.recv().await {
        let update = match update {
            Ok(u) => u.value,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable goal update ignored");
                continue;
            }
        };
        match update {
            GoalUpdate::Status { goal_id, status } => {
                if let Some(slot) = lock(&slots).get(&goal_id) {
                    slot.advance(status);
                }
            }
            GoalUpdate::Feedback { goal_id, feedback, .. } => {
                if let Some(slot) = lock(&slots).get(&goal_id) {
                    // Never waits: the queue drops the oldest unread feedback when full.
                    let _ = slot.feedback.try_push(feedback);
                }
            }
            GoalUpdate::Result { goal_id, status, result, error } => {
                let Some(mut slot) = lock(&slots).remove(&goal_id) else {
                    continue;
                };
                let outcome = match (status, result, error) {
                    (GoalStatus::Succeeded, Some(r), _) => Ok(r),
                    (GoalStatus::Canceled, _, _) => Err(GoalError::canceled()),
                    (_, _, Some(e)) => Err(GoalError::aborted(e)),
                    (s, _, None) => Err(GoalError::aborted(RpcError::internal(format!(
                        "goal ended {s:?} without a result"
                    )))),
                };
                // Result first, then the terminal status: whoever sees the status can take
                // the result.
                if let Some(tx) = slot.result.take() {
                    let _ = tx.send(outcome);
                }
                slot.advance(status);
            }
        }
    }
}

impl<F, R> GoalSlot<F, R> {
    /// Moves the status forward (never back: updates can overtake each other) and records
    /// the transition.
    fn advance(&self, next: GoalStatus) {
        let moved = self.status.send_if_modified(|current| {
            if next.rank() > current.rank() {
                *current = next;
                true
            } else {
                false
            }
        });
        if moved {
            let _ = self.transitions.try_push(next);
        }
    }
}

/// One goal in flight: its feedback, status and result.
pub struct GoalHandle<F, R> {
    /// Keeps the client's dispatcher alive as long as a goal is followed, even when the
    /// `ActionClient` itself was a temporary.
    _client: Arc<ClientInner<F, R>>,
    goal_id: String,
    conn: Connection,
    cancel_topic: Topic,
    codec: Codec,
    timeout: Duration,
    feedback: QueueReceiver<F>,
    status: watch::Receiver<GoalStatus>,
    transitions: QueueReceiver<GoalStatus>,
    result: oneshot::Receiver<Result<R, GoalError>>,
}

impl<F, R> GoalHandle<F, R> {
    /// The goal's id.
    pub fn id(&self) -> &str {
        &self.goal_id
    }

    /// The latest known status.
    pub fn status(&self) -> GoalStatus {
        *self.status.borrow()
    }

    /// The next status transition, in order (EXECUTING, CANCELING, then the terminal one);
    /// `None` after the terminal status was returned or if the client went away.
    pub async fn status_changed(&mut self) -> Option<GoalStatus> {
        self.transitions.recv().await
    }

    /// The next feedback, in the order the server sent it; `None` once the goal finished
    /// and all feedback was read.
    pub async fn feedback(&mut self) -> Option<F> {
        self.feedback.recv().await
    }

    /// Feedback discarded because it was not read in time.
    pub fn feedback_dropped(&self) -> u64 {
        self.feedback.dropped()
    }

    /// Asks the server to cancel. `Ok(true)` when the server took the request (the goal then
    /// ends CANCELED, or SUCCEEDED/ABORTED if it was finishing anyway), `Ok(false)` when the
    /// server no longer knew the goal (it had finished).
    pub async fn cancel(&self) -> Result<bool, RequestError> {
        let rpc = RpcClient::<CancelRequest, CancelResponse>::new(
            &self.conn,
            self.cancel_topic.as_str(),
        )?
        .codec(self.codec)
        .timeout(self.timeout);
        let response = rpc.call(CancelRequest { goal_id: self.goal_id.clone() }).await?;
        Ok(response.accepted)
    }

    /// Waits for the outcome: the result when SUCCEEDED, a [`GoalError`] of kind `Canceled`
    /// when CANCELED, `Aborted` with the handler's error when ABORTED, `Lost` if the
    /// connection closed first. A server that crashes mid-goal sends nothing: bound the wait
    /// with `tokio::time::timeout` or watch the server's liveness.
    pub async fn result(self) -> Result<R, GoalError> {
        self.result.await.unwrap_or_else(|_| Err(GoalError::lost()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot() -> (GoalSlot<u32, u32>, watch::Receiver<GoalStatus>, QueueReceiver<GoalStatus>) {
        let (feedback, _) = queue(QueueConfig::new(4, Overflow::DropOldest));
        let (status, status_rx) = watch::channel(GoalStatus::Accepted);
        let (transitions, transitions_rx) = queue(QueueConfig::new(8, Overflow::DropOldest));
        (GoalSlot { feedback, status, transitions, result: None }, status_rx, transitions_rx)
    }

    #[test]
    fn status_only_moves_forward() {
        let (slot, status, mut transitions) = slot();
        slot.advance(GoalStatus::Canceling);
        slot.advance(GoalStatus::Executing); // overtaken by CANCELING: ignored
        assert_eq!(*status.borrow(), GoalStatus::Canceling);
        slot.advance(GoalStatus::Succeeded);
        slot.advance(GoalStatus::Canceling); // after the end: ignored
        slot.advance(GoalStatus::Aborted); // a second terminal status: ignored
        assert_eq!(*status.borrow(), GoalStatus::Succeeded);
        let seen: Vec<_> = std::iter::from_fn(|| transitions.try_recv()).collect();
        assert_eq!(seen, [GoalStatus::Canceling, GoalStatus::Succeeded]);
    }
}
