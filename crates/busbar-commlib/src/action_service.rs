//! Serving a commlib action: commlib's action clients (either generation) send goals, follow
//! feedback and status, cancel, and fetch results from a busbar node unchanged.
//!
//! The wire is commlib's: three RPCs (`<A>.send_goal`, `<A>.cancel_goal`, `<A>.get_result`)
//! and two topics (`<A>.status`, `<A>.feedback`), with commlib's status codes. Where commlib's
//! own service is weak, this one keeps the wire and does better:
//!
//! * the terminal status is published only once the result is stored, so a client that asks
//!   for the result on seeing it always gets the real one (commlib publishes first);
//! * any number of goals run at once (commlib refuses a goal while one runs);
//! * a handler that fails ends its goal ABORTED with the reason (commlib reports success);
//! * a goal's statuses go out in order: ACCEPTED, RUNNING, then CANCELING before CANCELED.
//!
//! The `<A>.notify` topic is not published: commlib's clients do not read it.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use busbar_core::Connection;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;

use crate::action::GoalStatus;
use crate::compression::Compression;
use crate::error::Result;
use crate::pubsub::CommlibPublisher;
use crate::rpc::CommlibRpcService;

/// Finished goals whose results stay retrievable; older ones are forgotten.
const KEPT_RESULTS: usize = 256;

impl GoalStatus {
    /// commlib's number for the state.
    pub fn code(self) -> i64 {
        match self {
            GoalStatus::Accepted => 1,
            GoalStatus::Running => 2,
            GoalStatus::Canceling => 3,
            GoalStatus::Succeeded => 4,
            GoalStatus::Aborted => 5,
            GoalStatus::Canceled => 6,
        }
    }
}

#[derive(Deserialize)]
struct GoalRequest<G> {
    goal_data: G,
}

#[derive(Deserialize)]
struct GoalRef {
    #[serde(default)]
    goal_id: String,
}

/// The goal and cancel replies, and get_result's: commlib's shapes, every key written.
#[derive(Serialize)]
struct GoalReply {
    status: i64,
    timestamp: i64,
    goal_id: String,
    error: String,
}

#[derive(Serialize)]
struct StatusReply {
    status: i64,
    timestamp: i64,
    result: Value,
    error: String,
}

#[derive(Serialize)]
struct StatusUpdate<'a> {
    goal_id: &'a str,
    status: i64,
}

#[derive(Serialize)]
struct FeedbackUpdate<'a, F> {
    feedback_data: &'a F,
    goal_id: &'a str,
}

/// One goal's state. Its transitions happen under the goal's async lock, status publish
/// included, so statuses leave in the order the goal went through them.
struct GoalState {
    status: GoalStatus,
    result: Value,
}

struct Goal {
    state: tokio::sync::Mutex<GoalState>,
    cancel: watch::Sender<bool>,
}

#[derive(Default)]
struct Goals {
    by_id: HashMap<String, Arc<Goal>>,
    /// The latest goal: what get_result with an empty id asks about.
    latest: Option<String>,
    finished: VecDeque<String>,
}

struct Shared {
    goals: Mutex<Goals>,
    status: CommlibPublisher<Value>,
}

impl Shared {
    fn goals(&self) -> std::sync::MutexGuard<'_, Goals> {
        self.goals.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn publish_status(&self, goal_id: &str, status: GoalStatus) {
        let update = StatusUpdate { goal_id, status: status.code() };
        let published = match serde_json::to_value(&update) {
            Ok(v) => self.status.publish(&v).await,
            Err(e) => {
                Err(crate::CommlibError::Body { topic: "status".into(), reason: e.to_string() })
            }
        };
        if let Err(e) = published {
            tracing::warn!(goal_id, error = %e, "a goal status could not be published");
        }
    }

    fn finish(&self, goal_id: &str) {
        let mut goals = self.goals();
        goals.finished.push_back(goal_id.to_owned());
        while goals.finished.len() > KEPT_RESULTS {
            if let Some(old) = goals.finished.pop_front() {
                goals.by_id.remove(&old);
            }
        }
    }
}

/// What a goal's handler gets besides the goal: feedback and cancellation.
pub struct GoalContext<F> {
    goal_id: String,
    feedback: Arc<CommlibPublisher<Value>>,
    cancel: watch::Receiver<bool>,
    _feedback: PhantomData<fn(F)>,
}

impl<F: Serialize> GoalContext<F> {
    /// The goal's id (32 hex digits, as commlib makes them).
    pub fn goal_id(&self) -> &str {
        &self.goal_id
    }

    /// Publishes feedback for this goal.
    pub async fn feedback(&self, feedback: &F) -> Result<()> {
        let update = FeedbackUpdate { feedback_data: feedback, goal_id: &self.goal_id };
        let value = serde_json::to_value(&update).map_err(|e| crate::CommlibError::Body {
            topic: "feedback".into(),
            reason: e.to_string(),
        })?;
        self.feedback.publish(&value).await
    }

    /// True once a client asked to cancel the goal.
    pub fn is_cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    /// Resolves when a client asks to cancel the goal.
    pub async fn cancelled(&mut self) {
        let _ = self.cancel.wait_for(|c| *c).await;
    }
}

/// A commlib action served from busbar. Stops when dropped (goals running then are left to
/// finish on their own tasks, their statuses still published).
pub struct CommlibActionService {
    _services: [CommlibRpcService; 3],
}

impl CommlibActionService {
    /// Serves the action `name` (e.g. `demo.count`): each goal runs `handler` in a task of
    /// its own. The handler's `Ok` ends the goal SUCCEEDED (CANCELED if it was cancelled),
    /// its `Err` ABORTED with that reason.
    pub async fn spawn<G, R, F, H, Fut>(conn: &Connection, name: &str, handler: H) -> Result<Self>
    where
        G: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: Serialize + Send + Sync + 'static,
        H: Fn(G, GoalContext<F>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<R, String>> + Send + 'static,
    {
        Self::spawn_with(conn, name, Compression::None, handler).await
    }

    /// [`spawn`](Self::spawn) for commlib clients built with a compression: statuses and
    /// feedback go out compressed (RPC replies follow their requests either way).
    pub async fn spawn_with<G, R, F, H, Fut>(
        conn: &Connection,
        name: &str,
        compression: Compression,
        handler: H,
    ) -> Result<Self>
    where
        G: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: Serialize + Send + Sync + 'static,
        H: Fn(G, GoalContext<F>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<R, String>> + Send + 'static,
    {
        let publisher = |topic: &str| {
            CommlibPublisher::new(conn, &format!("{name}.{topic}"))
                .map(|p| p.compression(compression))
        };
        let shared = Arc::new(Shared { goals: Mutex::default(), status: publisher("status")? });
        let feedback = Arc::new(publisher("feedback")?);
        let handler = Arc::new(handler);

        let goals = shared.clone();
        let send_goal = CommlibRpcService::spawn(
            conn,
            &format!("{name}.send_goal"),
            move |request: GoalRequest<G>| {
                let (shared, handler, feedback) =
                    (goals.clone(), handler.clone(), feedback.clone());
                async move { start_goal(shared, handler, feedback, request.goal_data).await }
            },
        )
        .await?;

        let goals = shared.clone();
        let cancel_goal =
            CommlibRpcService::spawn(conn, &format!("{name}.cancel_goal"), move |r: GoalRef| {
                let shared = goals.clone();
                async move { cancel_goal(&shared, &r.goal_id).await }
            })
            .await?;

        let goals = shared;
        let get_result =
            CommlibRpcService::spawn(conn, &format!("{name}.get_result"), move |r: GoalRef| {
                let shared = goals.clone();
                async move { get_result(&shared, &r.goal_id).await }
            })
            .await?;
        Ok(CommlibActionService { _services: [send_goal, cancel_goal, get_result] })
    }
}

async fn start_goal<G, R, F, H, Fut>(
    shared: Arc<Shared>,
    handler: Arc<H>,
    feedback: Arc<CommlibPublisher<Value>>,
    goal: G,
) -> GoalReply
where
    G: Send + 'static,
    R: Serialize + Send + 'static,
    F: Serialize + Send + Sync + 'static,
    H: Fn(G, GoalContext<F>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<R, String>> + Send + 'static,
{
    let goal_id = uuid::Uuid::new_v4().simple().to_string();
    let (cancel, cancel_rx) = watch::channel(false);
    let entry = Arc::new(Goal {
        state: tokio::sync::Mutex::new(GoalState {
            status: GoalStatus::Accepted,
            result: Value::Object(Default::default()),
        }),
        cancel,
    });
    // ACCEPTED is out before the goal can move on.
    let accepted = entry.state.lock().await;
    {
        let mut goals = shared.goals();
        goals.by_id.insert(goal_id.clone(), entry.clone());
        goals.latest = Some(goal_id.clone());
    }
    shared.publish_status(&goal_id, GoalStatus::Accepted).await;
    drop(accepted);
    let context = GoalContext {
        goal_id: goal_id.clone(),
        feedback,
        cancel: cancel_rx,
        _feedback: PhantomData,
    };
    let id = goal_id.clone();
    tokio::spawn(async move {
        {
            let mut state = entry.state.lock().await;
            if state.status == GoalStatus::Accepted {
                state.status = GoalStatus::Running;
                shared.publish_status(&id, GoalStatus::Running).await;
            }
        }
        let outcome = handler(goal, context).await;
        let mut state = entry.state.lock().await;
        let cancelled = *entry.cancel.borrow();
        // The result is stored before the terminal status leaves.
        let (status, result) = match outcome {
            Ok(r) => {
                let status = if cancelled { GoalStatus::Canceled } else { GoalStatus::Succeeded };
                match serde_json::to_value(&r) {
                    Ok(v) => (status, v),
                    Err(e) => {
                        tracing::warn!(goal_id = %id, error = %e, "a goal result could not be encoded");
                        (GoalStatus::Aborted, Value::Object(Default::default()))
                    }
                }
            }
            Err(reason) => {
                tracing::info!(goal_id = %id, reason, "goal aborted");
                (GoalStatus::Aborted, Value::Object(Default::default()))
            }
        };
        state.status = status;
        state.result = result;
        shared.publish_status(&id, status).await;
        drop(state);
        shared.finish(&id);
    });
    GoalReply { status: 1, timestamp: -1, goal_id, error: String::new() }
}

async fn cancel_goal(shared: &Shared, goal_id: &str) -> StatusReply {
    let refused = |error: String| StatusReply {
        status: 0,
        timestamp: crate::now_ns(),
        result: Value::Object(Default::default()),
        error,
    };
    let Some(goal) = shared.goals().by_id.get(goal_id).cloned() else {
        return refused(format!("no goal {goal_id}"));
    };
    let mut state = goal.state.lock().await;
    if state.status.is_terminal() || state.status == GoalStatus::Canceling {
        return refused(format!("goal {goal_id} is {:?} already", state.status));
    }
    state.status = GoalStatus::Canceling;
    shared.publish_status(goal_id, GoalStatus::Canceling).await;
    let _ = goal.cancel.send(true);
    StatusReply {
        status: 1,
        timestamp: crate::now_ns(),
        result: Value::Object(Default::default()),
        error: String::new(),
    }
}

async fn get_result(shared: &Shared, goal_id: &str) -> StatusReply {
    let goal = {
        let goals = shared.goals();
        let id = if goal_id.is_empty() { goals.latest.clone() } else { Some(goal_id.to_owned()) };
        id.and_then(|id| goals.by_id.get(&id).cloned())
    };
    let Some(goal) = goal else {
        return StatusReply {
            status: 0,
            timestamp: -1,
            result: Value::Object(Default::default()),
            error: format!("no goal {goal_id}"),
        };
    };
    let state = goal.state.lock().await;
    StatusReply {
        status: state.status.code(),
        timestamp: -1,
        result: state.result.clone(),
        error: String::new(),
    }
}
