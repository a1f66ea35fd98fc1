//! Preemptable actions.

use std::sync::Arc;
use std::time::Duration;

use busbar_core::Error;
use busbar_core::error::GoalErrorKind;
use busbar_core::patterns::action::{ActionError, GoalStatus};
use busbar_core::patterns::{ActionClient, ActionServer, GoalContext, RpcError};
use futures_util::FutureExt;

use super::{connect, ensure, prefix};
use crate::{Harness, TestResult};

/// Counts to `goal`, sending each step as feedback; stops when canceled; fails on 13.
async fn count_to(goal: u32, ctx: Arc<GoalContext<u32>>) -> Result<u32, ActionError> {
    if goal == 13 {
        return Err(RpcError::new("unlucky", "13 is not counted here").into());
    }
    for i in 0..goal {
        if ctx.is_cancel_requested() {
            return Err(ActionError::Canceled);
        }
        ctx.feedback(i).await.map_err(|e| RpcError::internal(e.to_string()))?;
        tokio::task::yield_now().await;
    }
    Ok(goal)
}

/// Runs until canceled, then says so.
async fn until_canceled(_goal: u32, ctx: Arc<GoalContext<u32>>) -> Result<u32, ActionError> {
    ctx.feedback(0).await.map_err(|e| RpcError::internal(e.to_string()))?;
    ctx.cancelled().await;
    Err(ActionError::Canceled)
}

/// Feedback arrives in order, the result follows, and a goal is never seen finished before
/// its result can be taken.
pub async fn action_feedback_in_order(h: Arc<impl Harness>) -> TestResult {
    let p = prefix("action-feedback");
    let server_conn = connect(&*h).await?;
    let name = format!("{p}/count");
    let _server = ActionServer::builder::<u32>(&server_conn, &name).serve(count_to).await?;
    let conn = connect(&*h).await?;
    let client = ActionClient::<u32, u32, u32>::new(&conn, &name).await?;
    let mut goal = client.send_goal(50).await?;
    let mut expected = 0;
    let mut statuses = vec![goal.status()];
    while let Some(f) = crate::within(super::WAIT, "feedback", goal.feedback()).await? {
        ensure(f == expected, || format!("feedback {f} where {expected} was due"))?;
        expected += 1;
    }
    ensure(expected == 50, || format!("{expected} of 50 feedback messages"))?;
    // Feedback ended, so the goal is finished: its terminal status is visible and the
    // result must be ready without waiting.
    statuses.push(goal.status());
    ensure(goal.status() == GoalStatus::Succeeded, || format!("status {statuses:?}"))?;
    let result = goal
        .result()
        .now_or_never()
        .ok_or("terminal status seen before the result was there")??;
    ensure(result == 50, || format!("result {result}"))?;
    Ok(())
}

/// Cancel: the handler sees the request, the goal goes CANCELING then CANCELED, and the
/// result says canceled.
pub async fn action_cancel(h: Arc<impl Harness>) -> TestResult {
    let p = prefix("action-cancel");
    let conn = connect(&*h).await?;
    let name = format!("{p}/forever");
    let _server = ActionServer::builder::<u32>(&conn, &name).serve(until_canceled).await?;
    let client = ActionClient::<u32, u32, u32>::new(&conn, &name).await?;
    let mut goal = client.send_goal(1).await?;
    // The first feedback proves the handler is running.
    let first = crate::within(super::WAIT, "the first feedback", goal.feedback()).await?;
    ensure(first == Some(0), || format!("first feedback {first:?}"))?;
    ensure(goal.cancel().await?, || "cancel refused for a running goal".into())?;
    // Every transition, in order, until the terminal one.
    let mut seen = Vec::new();
    while let Some(s) = crate::within(super::WAIT, "a status change", goal.status_changed()).await?
    {
        seen.push(s);
    }
    ensure(goal.status() == GoalStatus::Canceled, || format!("statuses {seen:?}"))?;
    ensure(seen.ends_with(&[GoalStatus::Canceling, GoalStatus::Canceled]), || {
        format!("CANCELING must precede CANCELED: {seen:?}")
    })?;
    let kind = super::error_kind(goal.result().await)?;
    ensure(kind == GoalErrorKind::Canceled, || format!("expected Canceled, got {kind:?}"))?;
    Ok(())
}

/// A failing handler ends the goal ABORTED with its error.
pub async fn action_abort(h: Arc<impl Harness>) -> TestResult {
    let p = prefix("action-abort");
    let conn = connect(&*h).await?;
    let name = format!("{p}/count");
    let _server = ActionServer::builder::<u32>(&conn, &name).serve(count_to).await?;
    let client = ActionClient::<u32, u32, u32>::new(&conn, &name).await?;
    let mut goal = client.send_goal(13).await?;
    while crate::within(super::WAIT, "feedback to end", goal.feedback()).await?.is_some() {}
    ensure(goal.status() == GoalStatus::Aborted, || format!("status {:?}", goal.status()))?;
    let e = super::remote_error(goal.result().await)?;
    ensure(e.code == "unlucky", || format!("{e:?}"))?;
    Ok(())
}

/// A server may refuse goals; the client gets `Rejected` with the reason.
pub async fn action_reject(h: Arc<impl Harness>) -> TestResult {
    let p = prefix("action-reject");
    let conn = connect(&*h).await?;
    let name = format!("{p}/even");
    let _server = ActionServer::builder::<u32>(&conn, &name)
        .accept(|g| if g % 2 == 0 { Ok(()) } else { Err(format!("{g} is odd")) })
        .serve(count_to)
        .await?;
    let client = ActionClient::<u32, u32, u32>::new(&conn, &name).await?;
    match client.send_goal(3).await {
        Err(e) if e.kind() == GoalErrorKind::Rejected => {
            ensure(e.to_string().contains("odd"), || e.to_string())?
        }
        Err(e) => return Err(format!("expected Rejected, got {e}").into()),
        Ok(_) => return Err("an odd goal was accepted".into()),
    }
    // A goal outlives the (temporary) client it was sent with.
    let goal = ActionClient::<u32, u32, u32>::new(&conn, &name).await?.send_goal(4).await?;
    ensure(goal.result().await? == 4, || "even goal failed".into())?;
    // The server publishes updates only under its own client topics.
    let raw = busbar_core::patterns::RpcClient::<serde_json::Value, serde_json::Value>::new(
        &conn,
        &format!("{name}/goal"),
    )?;
    let hijack = serde_json::json!({"goal_id": "g1", "client": "elsewhere/victim", "goal": 2});
    let e = super::remote_error(raw.call(hijack).await)
        .map_err(|e| format!("a foreign update topic was accepted: {e}"))?;
    ensure(e.code == RpcError::INVALID_ARGUMENT, || format!("{e:?}"))?;
    Ok(())
}

/// Waits until `goal` has reached a terminal status.
async fn until_finished(goal: &mut busbar_core::patterns::GoalHandle<u32, u32>) -> TestResult {
    while !goal.status().is_terminal() {
        crate::within(super::WAIT, "the goal to finish", goal.status_changed()).await?;
    }
    Ok(())
}

/// Sends `n` feedback messages back to back (no yielding between them), then succeeds.
async fn burst(n: u32, ctx: Arc<GoalContext<u32>>) -> Result<u32, ActionError> {
    for i in 0..n {
        ctx.feedback(i).await.map_err(|e| RpcError::internal(e.to_string()))?;
    }
    Ok(n)
}

/// A burst of feedback keeps its order; a client that does not read keeps the latest
/// feedback and counts what it dropped; the terminal status only ever travels with the result.
pub async fn action_feedback_burst_and_overflow(h: Arc<impl Harness>) -> TestResult {
    let p = prefix("action-burst");
    let conn = connect(&*h).await?;
    let name = format!("{p}/burst");
    let _server = ActionServer::builder::<u32>(&conn, &name).serve(burst).await?;
    let client = ActionClient::<u32, u32, u32>::new(&conn, &name).await?;
    // Watch the raw update stream to check no status update claims the end by itself.
    let mut raw = conn.subscribe(&format!("{name}/client/+")).await?;

    let mut goal = client.send_goal(200).await?;
    for expected in 0..200 {
        let f = crate::within(super::WAIT, "feedback", goal.feedback()).await?;
        ensure(f == Some(expected), || format!("feedback {f:?} where {expected} was due"))?;
    }
    ensure(goal.result().await? == 200, || "wrong result".into())?;

    // 300 unread feedback messages against a 256-message queue: the oldest 44 go.
    let mut goal = client.send_goal(300).await?;
    until_finished(&mut goal).await?;
    let first = goal.feedback().await;
    ensure(first == Some(44), || format!("first kept feedback {first:?}, expected 44"))?;
    ensure(goal.feedback_dropped() == 44, || {
        format!("{} feedback dropped, expected 44", goal.feedback_dropped())
    })?;

    // The queue is the client's choice: ten slots keeping the first feedback.
    let keep_first = ActionClient::<u32, u32, u32>::new(&conn, &name)
        .await?
        .feedback_queue(busbar_core::QueueConfig::new(10, busbar_core::Overflow::DropNewest));
    let mut goal = keep_first.send_goal(300).await?;
    until_finished(&mut goal).await?;
    let first = goal.feedback().await;
    ensure(first == Some(0) && goal.feedback_dropped() == 290, || {
        format!("first {first:?}, dropped {}", goal.feedback_dropped())
    })?;

    // Two goals' worth of updates: every terminal status must sit in a Result update.
    let mut results = 0;
    while results < 2 {
        let m = super::next(&mut raw, "a raw goal update").await?;
        let update: serde_json::Value = serde_json::from_slice(&m.payload.to_bytes()?)?;
        if let Some(status) = update.get("Status") {
            let s = status.get("status").and_then(|s| s.as_str()).unwrap_or("");
            ensure(!matches!(s, "SUCCEEDED" | "ABORTED" | "CANCELED"), || {
                format!("a status update announced {s} apart from the result")
            })?;
        }
        if update.get("Result").is_some() {
            results += 1;
        }
    }
    Ok(())
}

/// Many goals at once on one client, each with its own feedback and result.
pub async fn action_many_goals(h: Arc<impl Harness>) -> TestResult {
    const GOALS: u32 = 100;
    let p = prefix("action-many");
    let server_conn = connect(&*h).await?;
    let name = format!("{p}/count");
    let _server = ActionServer::builder::<u32>(&server_conn, &name).serve(count_to).await?;
    let conn = connect(&*h).await?;
    let client = ActionClient::<u32, u32, u32>::new(&conn, &name).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for g in 0..GOALS {
        let client = client.clone();
        let goal = 20 + g % 7;
        tasks.spawn(async move {
            let mut handle = client.send_goal(goal).await?;
            let mut n = 0;
            while let Some(f) = handle.feedback().await {
                if f != n {
                    return Err(Error::Config(format!(
                        "goal {goal}: feedback {f} where {n} was due"
                    )));
                }
                n += 1;
            }
            let r = handle.result().await?;
            Ok::<_, Error>((goal, n, r))
        });
    }
    let deadline = Duration::from_secs(30);
    let mut finished = 0;
    while let Some(joined) = crate::within(deadline, "goals to finish", tasks.join_next()).await? {
        let (goal, feedback, result) = joined??;
        ensure(result == goal && feedback == goal, || {
            format!("goal {goal}: {feedback} feedback, result {result}")
        })?;
        finished += 1;
    }
    ensure(finished == GOALS, || format!("{finished} of {GOALS} goals finished"))?;
    Ok(())
}
