//! `busbar serve-action`: answers an action's goals with a shell command, so that `busbar
//! action` (and any action client) has something to talk to.
//!
//! Per goal the command runs with the goal (JSON) on its standard input. Every line it
//! prints is feedback, except the last, which is the result (each read as JSON when it is,
//! as text otherwise). Exit 0 succeeds the goal; another exit aborts it with the command's
//! standard error; a cancel sends the command SIGTERM and the goal ends canceled.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use busbar::{ActionError, ActionServer, GoalContext, RpcError};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::exit;
use crate::target::Target;

/// Options of `busbar serve-action`.
#[derive(clap::Args)]
pub struct Args {
    /// The action's name, e.g. plant/tank/fill.
    name: String,
    /// The shell command run per goal: the goal on its standard input; each line it prints
    /// is feedback but the last, the result; a non-zero exit aborts the goal with its
    /// standard error; a cancel sends it SIGTERM.
    #[arg(long, value_name = "COMMAND")]
    exec: String,
    /// How long goals still running at Ctrl-C may take to finish (`10s`).
    #[arg(long, default_value = "10s", value_parser = crate::message::positive_duration)]
    drain: Duration,
    #[command(flatten)]
    metrics: crate::metrics::MetricsArgs,
    #[command(flatten)]
    target: Target,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut interrupts = exit::Interrupts::new()?;
    let conn = interrupts.before(args.target.connect()).await?;
    let exec = Arc::new(args.exec.clone());
    let server = ActionServer::builder::<Value>(&conn, &args.name)
        .serve(move |goal: Value, ctx: Arc<GoalContext<Value>>| {
            let exec = exec.clone();
            async move { run_goal(&exec, goal, ctx).await }
        })
        .await
        .with_context(|| format!("serving the action {}", args.name))?;
    let _exported = args.metrics.start("serve-action", &conn).await?;
    eprintln!("busbar serve-action: serving {} with `{}`; Ctrl-C stops", args.name, args.exec);
    interrupts.next().await;
    let report = server.stop(args.drain).await;
    eprintln!(
        "busbar serve-action: stopped ({} goals finished at the stop, {} aborted)",
        report.completed, report.aborted
    );
    conn.close().await.context("closing the connection")?;
    Ok(())
}

/// A line of the command's output as a value: JSON when it is, text otherwise.
fn value(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|_| Value::String(line.to_owned()))
}

fn failed(what: &str, e: impl std::fmt::Display) -> ActionError {
    ActionError::Aborted(RpcError::internal(format!("{what}: {e}")))
}

/// Runs the command for one goal.
async fn run_goal(
    exec: &str,
    goal: Value,
    ctx: Arc<GoalContext<Value>>,
) -> Result<Value, ActionError> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(exec)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| failed("starting the command", e))?;
    let (Some(mut stdin), Some(stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(failed("starting the command", "no pipes"));
    };
    // Written by a task of its own: a command that does not read its input must not stall
    // the goal.
    let goal = format!("{goal}\n");
    tokio::spawn(async move {
        let _ = stdin.write_all(goal.as_bytes()).await;
    });
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let mut lines = BufReader::new(stdout).lines();
    // A line is feedback once the next one shows it was not the last.
    let mut last: Option<String> = None;
    loop {
        tokio::select! {
            () = ctx.cancelled() => {
                terminate(&child);
                let _ = child.wait().await;
                return Err(ActionError::Canceled);
            }
            line = lines.next_line() => match line {
                Ok(Some(line)) => {
                    if let Some(previous) = last.replace(line) {
                        ctx.feedback(value(&previous)).await.map_err(|e| failed("feedback", e))?;
                    }
                }
                Ok(None) => break,
                Err(e) => return Err(failed("reading the command's output", e)),
            },
        }
    }
    let status = child.wait().await.map_err(|e| failed("waiting for the command", e))?;
    let errors = errors.await.unwrap_or_default();
    if !status.success() {
        let why = errors.trim();
        let why = if why.is_empty() { status.to_string() } else { why.to_owned() };
        return Err(ActionError::Aborted(RpcError::internal(why)));
    }
    Ok(last.as_deref().map(value).unwrap_or(Value::Null))
}

/// Asks the command to stop (SIGTERM), as a cancel does; one that has ended already is
/// left alone.
fn terminate(child: &tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
