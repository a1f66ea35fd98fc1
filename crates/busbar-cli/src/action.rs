//! `busbar action`: sends a goal, follows its feedback, cancels it on Ctrl-C.

use std::io::Write;

use anyhow::Context;
use busbar::ActionClient;
use busbar::error::GoalErrorKind;
use serde_json::Value;

use crate::exit;
use crate::profile::{Dialect, Profile};
use crate::target::Target;

/// Options of `busbar action`.
#[derive(clap::Args)]
pub struct Args {
    /// The action's name, e.g. plant/tank/fill.
    name: String,
    /// The goal, as JSON (e.g. 80, or '{"to": 80}').
    goal: String,
    /// Give up waiting for the outcome after this long (`30s`, `2m`; exit code 3).
    #[arg(long, value_parser = crate::message::positive_duration)]
    timeout: Option<std::time::Duration>,
    /// JSON lines on standard output: `{"feedback": ...}` for each feedback, then the
    /// outcome, `{"status": "succeeded", "result": ...}`, `{"status": "canceled"}` or
    /// `{"status": "aborted", "error": ...}`.
    #[arg(long)]
    json: bool,
    /// Cancel the goal after this long (`5s`, `1m`), as Ctrl-C does.
    #[arg(long, value_name = "DURATION", value_parser = crate::message::positive_duration)]
    cancel_after: Option<std::time::Duration>,
    #[command(flatten)]
    dialect: Dialect,
    #[command(flatten)]
    target: Target,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut interrupts = exit::Interrupts::new()?;
    let goal: Value = serde_json::from_str(&args.goal)
        .with_context(|| format!("the goal {:?} is not JSON", args.goal))?;
    match args.dialect.profile {
        Profile::Busbar => {}
        Profile::Commlib => return run_commlib(args, goal, interrupts).await,
        Profile::Celine | Profile::Sermas => return Err(args.dialect.refuse("actions")),
    }
    let conn = interrupts.before(args.target.connect()).await?;
    let client = ActionClient::<Value, Value, Value>::new(&conn, &args.name).await?;
    let mut handle = client
        .send_goal(goal)
        .await
        .with_context(|| format!("sending the goal to {}", args.name))?;
    eprintln!("busbar action: goal {} accepted by {}; Ctrl-C cancels it", handle.id(), args.name);
    let deadline = deadline(args.timeout);
    let cancel_at = args.cancel_after.and_then(crate::message::deadline_in);
    let mut cancelled = false;
    loop {
        tokio::select! {
            feedback = handle.feedback() => match feedback {
                Some(f) => show(&f, args.json),
                None => break,
            },
            () = interrupts.next() => {
                if cancelled {
                    return Err(interrupted(&args.name));
                }
                cancelled = true;
                eprintln!("\nbusbar action: cancelling (Ctrl-C again to stop waiting)");
                handle.cancel().await.context("cancelling")?;
            }
            () = until(cancel_at), if !cancelled => {
                cancelled = true;
                eprintln!("\nbusbar action: cancelling (--cancel-after)");
                handle.cancel().await.context("cancelling")?;
            }
            () = until(deadline) => {
                return Err(exit::with(exit::TIMEOUT, format!("{} did not finish in time", args.name)));
            }
        }
    }
    end_feedback(args.json);
    match handle.result().await {
        Ok(result) => outcome(&args, Outcome::Succeeded(result)),
        Err(e) if e.kind() == GoalErrorKind::Canceled => outcome(&args, Outcome::Canceled),
        Err(e) if e.kind() == GoalErrorKind::Aborted => {
            let why = e.remote_error().map_or_else(|| e.to_string(), ToString::to_string);
            outcome(&args, Outcome::Aborted(why))
        }
        Err(e) => Err(e).context("waiting for the outcome"),
    }
}

/// How a goal ended.
enum Outcome {
    Succeeded(Value),
    Canceled,
    Aborted(String),
}

/// Prints the outcome (as a JSON line under `--json`, so that it cannot be taken for
/// feedback) and gives the exit status: an aborted goal is the remote side's failure.
fn outcome(args: &Args, outcome: Outcome) -> anyhow::Result<()> {
    let line = match (&outcome, args.json) {
        (Outcome::Succeeded(result), true) => {
            serde_json::json!({"status": "succeeded", "result": result}).to_string()
        }
        (Outcome::Succeeded(result), false) => result.to_string(),
        (Outcome::Canceled, true) => serde_json::json!({"status": "canceled"}).to_string(),
        (Outcome::Canceled, false) => "canceled".to_owned(),
        (Outcome::Aborted(why), true) => {
            serde_json::json!({"status": "aborted", "error": why}).to_string()
        }
        (Outcome::Aborted(why), false) => {
            return Err(exit::with(exit::REMOTE, format!("{} aborted the goal: {why}", args.name)));
        }
    };
    println!("{line}");
    match outcome {
        Outcome::Aborted(why) => {
            Err(exit::with(exit::REMOTE, format!("{} aborted the goal: {why}", args.name)))
        }
        _ => Ok(()),
    }
}

/// Ends the progress bar's line (on a terminal).
fn end_feedback(json: bool) {
    use std::io::IsTerminal;
    if !json && std::io::stderr().is_terminal() {
        eprintln!();
    }
}

fn deadline(timeout: Option<std::time::Duration>) -> Option<tokio::time::Instant> {
    timeout.and_then(crate::message::deadline_in)
}

/// A second Ctrl-C, while the cancel is under way, ends the command at once.
fn interrupted(name: &str) -> anyhow::Error {
    exit::with(1, format!("interrupted before {name} confirmed the cancel"))
}

/// Sleeps until `deadline`, or forever without one.
async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// `action --profile commlib`: a goal to a commlib action service.
async fn run_commlib(
    args: Args,
    goal: Value,
    mut interrupts: exit::Interrupts,
) -> anyhow::Result<()> {
    use busbar_commlib::action::{CommlibActionClient, GoalStatus, GoalUpdate};
    let conn = interrupts.before(args.target.connect()).await?;
    let client = CommlibActionClient::<Value, Value, Value>::new(&conn, &args.name);
    let mut handle = client
        .send_goal(&goal)
        .await
        .with_context(|| format!("sending the goal to {}", args.name))?;
    eprintln!(
        "busbar action: goal {} accepted by {} (commlib); Ctrl-C cancels it",
        handle.goal_id, args.name
    );
    let deadline = deadline(args.timeout);
    let cancel_at = args.cancel_after.and_then(crate::message::deadline_in);
    let mut cancelled = false;
    loop {
        tokio::select! {
            () = until(cancel_at), if !cancelled => {
                cancelled = true;
                eprintln!("\nbusbar action: cancelling (--cancel-after)");
                if !handle.cancel().await.context("cancelling")? {
                    eprintln!("busbar action: {} refused to cancel", args.name);
                }
            }
            update = handle.next_update() => match update {
                Some(Ok(GoalUpdate::Feedback(f))) => show(&f, args.json),
                Some(Ok(GoalUpdate::Status(s))) if s.is_terminal() => break,
                Some(Ok(GoalUpdate::Status(_))) => {}
                Some(Err(e)) => eprintln!("busbar action: {e}"),
                None => anyhow::bail!("the connection closed"),
            },
            () = interrupts.next() => {
                if cancelled {
                    return Err(interrupted(&args.name));
                }
                cancelled = true;
                eprintln!("\nbusbar action: cancelling (Ctrl-C again to stop waiting)");
                if !handle.cancel().await.context("cancelling")? {
                    eprintln!("busbar action: {} refused to cancel", args.name);
                }
            }
            () = until(deadline) => {
                return Err(exit::with(exit::TIMEOUT, format!("{} did not finish in time", args.name)));
            }
        }
    }
    end_feedback(args.json);
    let (status, result) =
        handle.result(std::time::Duration::from_secs(10)).await.context("fetching the result")?;
    match status {
        GoalStatus::Canceled => outcome(&args, Outcome::Canceled),
        GoalStatus::Aborted => outcome(&args, Outcome::Aborted(result.to_string())),
        _ => outcome(&args, Outcome::Succeeded(result)),
    }
}

/// Feedback as a JSON line, or as a progress bar when it says how far the goal is: a number,
/// or an object with `progress`, `percent` or `level` (0 to 100, or 0 to 1 for `progress`).
fn show(feedback: &Value, json: bool) {
    use std::io::IsTerminal;
    if json {
        println!("{}", serde_json::json!({ "feedback": feedback }));
        return;
    }
    // A progress bar redraws itself: only on a terminal; elsewhere one line each.
    if !std::io::stderr().is_terminal() {
        eprintln!("busbar action: feedback {feedback}");
        return;
    }
    let percent = match feedback {
        Value::Number(n) => n.as_f64(),
        Value::Object(m) => {
            m.get("percent").or_else(|| m.get("level")).and_then(Value::as_f64).or_else(|| {
                m.get("progress")
                    .and_then(Value::as_f64)
                    .map(|p| if p <= 1.0 { p * 100.0 } else { p })
            })
        }
        _ => None,
    };
    let mut err = std::io::stderr().lock();
    match percent {
        Some(p) => {
            let p = p.clamp(0.0, 100.0);
            let filled = (p / 5.0).round() as usize;
            let _ = write!(
                err,
                "\r[{}{}] {p:5.1} %  {feedback}",
                "#".repeat(filled),
                " ".repeat(20 - filled)
            );
        }
        None => {
            let _ = write!(err, "\rfeedback: {feedback}");
        }
    }
    let _ = err.flush();
}
