//! Driving a commlib action service: three RPCs (`<A>.send_goal`, `<A>.cancel_goal`,
//! `<A>.get_result`) and two topics (`<A>.status`, `<A>.feedback`).
//!
//! commlib publishes a goal's terminal status before it stores the result (0.13.1 clients
//! then read an empty result). The client here waits for the terminal status and then asks
//! for the result until the service reports a terminal status with it, within the deadline.

use std::marker::PhantomData;
use std::time::Duration;

use busbar_core::Connection;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::compression::Compression;
use crate::error::{CommlibError, Result};
use crate::pubsub::CommlibSubscriber;
use crate::rpc::CommlibRpcClient;

/// commlib's goal states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoalStatus {
    /// 1
    Accepted,
    /// 2
    Running,
    /// 3
    Canceling,
    /// 4 (commlib spells it SUCCEDED)
    Succeeded,
    /// 5
    Aborted,
    /// 6
    Canceled,
}

impl GoalStatus {
    /// From commlib's number.
    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            1 => GoalStatus::Accepted,
            2 => GoalStatus::Running,
            3 => GoalStatus::Canceling,
            4 => GoalStatus::Succeeded,
            5 => GoalStatus::Aborted,
            6 => GoalStatus::Canceled,
            _ => return None,
        })
    }

    /// True for the states a goal ends in.
    pub fn is_terminal(self) -> bool {
        matches!(self, GoalStatus::Succeeded | GoalStatus::Aborted | GoalStatus::Canceled)
    }
}

#[derive(Serialize)]
struct GoalRequest<'a, G> {
    description: &'a str,
    goal_data: &'a G,
}

#[derive(Deserialize)]
struct GoalReply {
    #[serde(default)]
    status: i64,
    #[serde(default)]
    goal_id: String,
    #[serde(default)]
    error: String,
}

#[derive(Serialize)]
struct GoalRef<'a> {
    goal_id: &'a str,
}

#[derive(Serialize)]
struct CancelRequest<'a> {
    goal_id: &'a str,
    timestamp: i64,
}

#[derive(Deserialize)]
struct StatusReply {
    #[serde(default)]
    status: i64,
    #[serde(default)]
    result: Value,
    #[serde(default)]
    error: String,
}

#[derive(Deserialize)]
struct StatusUpdate {
    #[serde(default)]
    goal_id: String,
    #[serde(default)]
    status: i64,
}

#[derive(Deserialize)]
struct FeedbackUpdate<F> {
    #[serde(default)]
    goal_id: String,
    feedback_data: F,
}

/// A client of the commlib action `name` with goal `G`, result `R` and feedback `F`.
pub struct CommlibActionClient<G, R, F> {
    conn: Connection,
    name: String,
    timeout: Duration,
    compression: Compression,
    _types: PhantomData<fn(G) -> (R, F)>,
}

/// One goal sent to a commlib action service.
pub struct CommlibGoal<R, F> {
    /// The goal id the service gave (32 hex digits).
    pub goal_id: String,
    conn: Connection,
    name: String,
    timeout: Duration,
    compression: Compression,
    status: CommlibSubscriber<StatusUpdateWire>,
    feedback: CommlibSubscriber<FeedbackUpdate<F>>,
    /// The terminal status, once [`CommlibGoal::next_update`] has seen it.
    ended: Option<GoalStatus>,
    _result: PhantomData<fn() -> R>,
}

/// What a goal reports while it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum GoalUpdate<F> {
    /// A feedback message.
    Feedback(F),
    /// A new status; a terminal one ends the goal.
    Status(GoalStatus),
}

/// The status topic's body, as the subscriber decodes it.
pub type StatusUpdateWire = Value;

impl<G: Serialize, R: DeserializeOwned, F: DeserializeOwned> CommlibActionClient<G, R, F> {
    /// A client for the action `name` (e.g. `demo.act`); each RPC has a 10 s deadline.
    pub fn new(conn: &Connection, name: &str) -> Self {
        CommlibActionClient {
            conn: conn.clone(),
            name: name.to_owned(),
            timeout: Duration::from_secs(10),
            compression: Compression::None,
            _types: PhantomData,
        }
    }

    /// Sets the deadline of each RPC.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Compresses the requests, for a commlib action service built with the same compression.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Sends a goal. The status and feedback topics are subscribed first, so nothing the
    /// goal reports is missed.
    pub async fn send_goal(&self, goal: &G) -> Result<CommlibGoal<R, F>> {
        let status = CommlibSubscriber::new(&self.conn, &format!("{}.status", self.name)).await?;
        let feedback =
            CommlibSubscriber::new(&self.conn, &format!("{}.feedback", self.name)).await?;
        let rpc = CommlibRpcClient::<GoalRequest<'_, G>, GoalReply>::new(
            &self.conn,
            &format!("{}.send_goal", self.name),
        )?
        .timeout(self.timeout)
        .compression(self.compression);
        let reply = rpc.call(&GoalRequest { description: "", goal_data: goal }).await?;
        if reply.status != 1 || reply.goal_id.is_empty() {
            return Err(CommlibError::Body {
                topic: format!("{}.send_goal", self.name),
                reason: format!("the goal was refused: {}", reply.error),
            });
        }
        Ok(CommlibGoal {
            goal_id: reply.goal_id,
            conn: self.conn.clone(),
            name: self.name.clone(),
            timeout: self.timeout,
            compression: self.compression,
            status,
            feedback,
            ended: None,
            _result: PhantomData,
        })
    }
}

impl<R: DeserializeOwned, F: DeserializeOwned> CommlibGoal<R, F> {
    /// The next feedback for this goal (feedback of other goals is skipped); `None` when
    /// the subscription ended.
    pub async fn next_feedback(&mut self) -> Option<Result<F>> {
        loop {
            match self.feedback.recv().await? {
                Ok(f) if f.value.goal_id == self.goal_id => return Some(Ok(f.value.feedback_data)),
                Ok(_) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// The next feedback or status of this goal, as they come; `None` when the subscriptions
    /// ended. After a terminal status, [`result`](Self::result) fetches the result at once.
    pub async fn next_update(&mut self) -> Option<Result<GoalUpdate<F>>> {
        loop {
            tokio::select! {
                // Feedback first: what a service sent before its final status has reached
                // the feedback queue by the time the status is read, and is not passed over.
                biased;
                feedback = self.feedback.recv() => match feedback? {
                    Ok(f) if f.value.goal_id == self.goal_id => {
                        return Some(Ok(GoalUpdate::Feedback(f.value.feedback_data)));
                    }
                    Ok(_) => {}
                    Err(e) => return Some(Err(e)),
                },
                status = self.status.recv() => {
                    let update = match status? {
                        Ok(u) => crate::body::decode_value::<StatusUpdate>(u.topic.as_str(), u.value),
                        Err(e) => Err(e),
                    };
                    match update {
                        Ok(u) if u.goal_id == self.goal_id => {
                            if let Some(s) = GoalStatus::from_code(u.status) {
                                if s.is_terminal() {
                                    self.ended = Some(s);
                                }
                                return Some(Ok(GoalUpdate::Status(s)));
                            }
                        }
                        Ok(_) => {}
                        Err(e) => return Some(Err(e)),
                    }
                }
            }
        }
    }

    /// Asks the service to cancel the goal; true when it accepted (0.13.1 services never do).
    pub async fn cancel(&self) -> Result<bool> {
        let rpc = CommlibRpcClient::<CancelRequest<'_>, StatusReply>::new(
            &self.conn,
            &format!("{}.cancel_goal", self.name),
        )?
        .timeout(self.timeout)
        .compression(self.compression);
        let reply =
            rpc.call(&CancelRequest { goal_id: &self.goal_id, timestamp: crate::now_ns() }).await?;
        Ok(reply.status == 1)
    }

    /// Waits for the goal to end, within `deadline`, and returns how it ended and its result.
    pub async fn result(mut self, deadline: Duration) -> Result<(GoalStatus, R)> {
        let until = tokio::time::Instant::now() + deadline;
        let timeout = || CommlibError::Timeout { name: self.name.clone(), timeout: deadline };
        // The terminal status first (unless next_update saw it) ...
        while self.ended.is_none() {
            let update = tokio::time::timeout_at(until, self.status.recv())
                .await
                .map_err(|_| timeout())?
                .ok_or_else(timeout)??;
            let update: StatusUpdate =
                crate::body::decode_value(update.topic.as_str(), update.value)?;
            let terminal =
                GoalStatus::from_code(update.status).is_some_and(GoalStatus::is_terminal);
            if update.goal_id == self.goal_id && terminal {
                self.ended = GoalStatus::from_code(update.status);
            }
        }
        // ... then the result, asked again while the service has not stored it yet.
        let rpc = CommlibRpcClient::<GoalRef<'_>, StatusReply>::new(
            &self.conn,
            &format!("{}.get_result", self.name),
        )?
        .timeout(self.timeout)
        .compression(self.compression);
        // An empty result is taken as the real one after a few asks (a result type may have
        // no fields); commlib's own client polls the same way, every 200 ms.
        let mut asked = 0;
        loop {
            asked += 1;
            let reply =
                tokio::time::timeout_at(until, rpc.call(&GoalRef { goal_id: &self.goal_id }))
                    .await
                    .map_err(|_| timeout())??;
            let status = GoalStatus::from_code(reply.status);
            let stored =
                asked >= 5 || !reply.result.as_object().is_some_and(serde_json::Map::is_empty);
            if let Some(s) = status.filter(|s| s.is_terminal())
                && stored
            {
                let topic = format!("{}.get_result", self.name);
                return Ok((s, crate::body::decode_value(&topic, reply.result)?));
            }
            if !reply.error.is_empty() {
                tracing::debug!(error = %reply.error, "commlib result not ready");
            }
            tokio::time::sleep_until(
                (tokio::time::Instant::now() + Duration::from_millis(20)).min(until),
            )
            .await;
        }
    }
}
