//! `busbar demo`: a narrated tour of every pattern, on the in-process bus by default.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use busbar::heartbeat::DownReason;
use busbar::{
    ActionError, Event, GoalContext, GoalStatus, LivenessEvent, LivenessMonitor, Node, RpcError,
};
use serde::{Deserialize, Serialize};

/// Options of `busbar demo`.
#[derive(clap::Args)]
pub struct Args {
    /// Where to run the tour.
    #[command(flatten)]
    target: crate::target::Target,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Temperature {
    celsius: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Alarm {
    level: String,
    text: String,
}

const HEARTBEAT: Duration = Duration::from_millis(100);

fn step(n: u32, title: &str) {
    println!("\n{n}. {title}");
}

fn say(who: &str, what: impl std::fmt::Display) {
    println!("   [{who:<8}] {what}");
}

/// Runs the tour.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let on = args.target.describe()?;
    let (url, connector) = args.target.for_nodes()?;
    let nodes = Nodes { url, connector };
    println!("busbar demo: every pattern, end to end, on {on}");
    println!("(two nodes, `plant` and `control`, each with one connection to the bus)");

    step(1, "Nodes start and announce themselves with heartbeats");
    let control = nodes.start("control").await?;
    let mut monitor = control.liveness_monitor().await?;
    let plant = nodes.start("plant").await?;
    for _ in 0..2 {
        report(&mut monitor).await?;
    }

    step(2, "Typed publish/subscribe with a pattern subscription");
    let mut temps = control.subscriber::<Temperature>("plant/+/temperature").await?;
    say("control", "subscribed to plant/+/temperature");
    for (unit, celsius) in [("boiler", 81.5), ("chiller", 6.25)] {
        let topic = format!("plant/{unit}/temperature");
        plant.publisher::<Temperature>(&topic)?.publish(Temperature { celsius }).await?;
        say("plant", format!("published {celsius} °C on {topic}"));
        let got = temps.recv().await.context("subscription ended")??;
        say(
            "control",
            format!(
                "received {} °C from {} (the filter told us which unit)",
                got.value.celsius, got.topic
            ),
        );
    }

    step(3, "RPC: a call that succeeds and one that returns an error reply");
    plant
        .serve_rpc("plant/valve/set", |percent: u32| async move {
            if percent > 100 {
                return Err(RpcError::invalid_argument(format!("{percent} % is outside 0..=100")));
            }
            Ok(format!("valve open at {percent} %"))
        })
        .await?;
    say("plant", "serves plant/valve/set (opening in percent)");
    let valve = control.rpc_client::<u32, String>("plant/valve/set")?;
    say("control", format!("set(40)  -> ok: {}", valve.call(40).await?));
    match valve.call(140).await.map_err(|e| e.remote_error().cloned()) {
        Err(Some(e)) => {
            say("control", format!("set(140) -> error reply {}: {}", e.code, e.message))
        }
        other => bail!("expected an error reply, got {other:?}"),
    }

    step(4, "An action with feedback, then one that is canceled");
    plant.serve_action("plant/tank/fill", fill_tank).await?;
    say("plant", "serves the action plant/tank/fill (fills a tank, reporting the level)");
    let fill = control.action_client::<u32, u32, String>("plant/tank/fill").await?;
    let mut goal = fill.send_goal(40).await?;
    say("control", format!("goal: fill to 40 % -> {:?}", goal.status()));
    let mut levels = Vec::new();
    while let Some(level) = goal.feedback().await {
        levels.push(format!("{level}%"));
    }
    say("control", format!("feedback: {}", levels.join(" ")));
    let status = goal.status();
    say("control", format!("{status:?}: {}", goal.result().await?));
    let mut goal = fill.send_goal(100).await?;
    say("control", "goal: fill to 100 %");
    for _ in 0..3 {
        if let Some(level) = goal.feedback().await {
            say("control", format!("feedback: {level}%"));
        }
    }
    goal.cancel().await?;
    say("control", "asked to cancel");
    let mut transitions = vec![format!("{:?}", GoalStatus::Accepted)];
    while let Some(s) = goal.status_changed().await {
        transitions.push(format!("{s:?}"));
    }
    say("control", format!("status: {}", transitions.join(" -> ")));
    match goal.result().await {
        Err(e) if e.kind() == busbar::error::GoalErrorKind::Canceled => {
            say("control", "result: canceled, as asked")
        }
        other => bail!("expected a canceled goal, got {other:?}"),
    }

    step(5, "Events");
    let mut alarms = control.subscriber::<Event<Alarm>>("plant/events/+").await?;
    plant
        .event_emitter("plant/events")?
        .emit("alarm", Alarm { level: "warning".into(), text: "boiler pressure high".into() })
        .await?;
    say("plant", "emitted `alarm`");
    let ev = alarms.recv().await.context("subscription ended")??;
    say(
        "control",
        format!(
            "event `{}` from {}: {} ({})",
            ev.value.name, ev.value.source, ev.value.data.text, ev.value.data.level
        ),
    );

    step(6, "Liveness: a graceful stop, and a crash caught by the last will");
    let sensor = nodes.start("sensor-7").await?;
    report(&mut monitor).await?;
    let report_stop = plant.stop().await?;
    say("plant", format!("stopped gracefully ({} requests/goals drained)", report_stop.completed));
    report(&mut monitor).await?;
    if let Some(bus) = mem_bus(&nodes.url) {
        say("sensor-7", "crashes (the bus cuts its connection)");
        bus.disconnect(sensor.connection().client_id());
    } else {
        // Dropping the last handle cuts the connection without a goodbye, as a crash would.
        say("sensor-7", "crashes (its connection is cut)");
        drop(sensor);
    }
    report(&mut monitor).await?;

    let stats = control.connection().stats();
    println!(
        "\ncontrol's connection: {} published, {} delivered, {} dropped, {} requests, {} timeouts",
        stats.published, stats.delivered, stats.dropped, stats.requests, stats.timeouts
    );
    control.stop().await?;
    println!("done.");
    Ok(())
}

/// Starts the tour's nodes on the target.
struct Nodes {
    url: String,
    connector: std::sync::Arc<dyn busbar::Connector>,
}

impl Nodes {
    async fn start(&self, name: &str) -> anyhow::Result<Node> {
        let node = busbar::node(name)
            .url(self.url.clone())
            .connector(self.connector.clone())
            .heartbeat(Some(HEARTBEAT))
            .start()
            .await
            .with_context(|| format!("starting node {name}"))?;
        say(name, "started");
        Ok(node)
    }
}

async fn report(monitor: &mut LivenessMonitor) -> anyhow::Result<()> {
    let event = tokio::time::timeout(Duration::from_secs(5), monitor.next())
        .await
        .context("no liveness event within 5 s")?
        .context("liveness monitor ended")?;
    let text = match event {
        LivenessEvent::Up { node } => format!("{node} is UP"),
        LivenessEvent::Down { node, reason: DownReason::Stopped } => {
            format!("{node} is DOWN (stopped)")
        }
        LivenessEvent::Down { node, reason: DownReason::LastWill } => {
            format!("{node} is DOWN (its last will arrived)")
        }
        LivenessEvent::Down { node, reason: DownReason::Missed { intervals } } => {
            format!("{node} is DOWN ({intervals} heartbeats missed)")
        }
        other => format!("{}: {other:?}", other.node()),
    };
    say("monitor", text);
    Ok(())
}

fn mem_bus(url: &str) -> Option<busbar::mem::MemBus> {
    busbar::mem::MemConnector::bus_for(url).ok()
}

/// Fills a tank to `target` percent in steps of 10, reporting each level; honours cancel.
async fn fill_tank(target: u32, ctx: Arc<GoalContext<u32>>) -> Result<String, ActionError> {
    let mut level = 0;
    while level < target {
        tokio::select! {
            _ = ctx.cancelled() => return Err(ActionError::Canceled),
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        level = (level + 10).min(target);
        ctx.feedback(level).await.map_err(|e| RpcError::internal(e.to_string()))?;
    }
    Ok(format!("tank at {level} %"))
}
