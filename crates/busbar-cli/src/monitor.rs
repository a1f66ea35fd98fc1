//! `busbar monitor`: which nodes are up (from their heartbeats) and how busy each topic is.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use busbar::{LivenessEvent, LivenessMonitor, SubscribeOptions, TopicFilter};
use futures_util::StreamExt;
use serde::Serialize;

use crate::target::Target;

/// Options of `busbar monitor`.
#[derive(clap::Args)]
pub struct Args {
    /// Topics whose message rates to show (default: all).
    #[arg(long, default_value = "#")]
    filter: Vec<String>,
    /// Seconds between reports.
    #[arg(long, default_value_t = 2.0)]
    interval: f64,
    /// Stop after this many reports (default: until Ctrl-C).
    #[arg(long)]
    reports: Option<u64>,
    /// One JSON object per report instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    target: Target,
}

#[derive(Serialize)]
struct Report<'a> {
    /// Node name -> "up" or "down (why)".
    nodes: &'a BTreeMap<String, String>,
    /// Topic -> messages per second over the last interval.
    rates: BTreeMap<&'a str, f64>,
    /// Topic -> messages seen since the start.
    totals: &'a BTreeMap<String, u64>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let interval = Duration::try_from_secs_f64(args.interval)
        .ok()
        .filter(|d| !d.is_zero())
        .context("--interval must be a positive number of seconds")?;
    let conn = args.target.connect().await?;
    let mut liveness = LivenessMonitor::spawn(&conn, 3).await?;
    let mut subs = Vec::new();
    for f in &args.filter {
        let filter = TopicFilter::new(f).with_context(|| format!("filter {f:?}"))?;
        subs.push(conn.subscribe_with(SubscribeOptions::new(filter)).await?);
    }
    let mut messages = futures_util::stream::select_all(subs);
    eprintln!("busbar monitor: watching {}", args.filter.join(", "));
    let mut nodes = BTreeMap::<String, String>::new();
    let mut totals = BTreeMap::<String, u64>::new();
    let mut window = BTreeMap::<String, u64>::new();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    let mut since = Instant::now();
    let mut reports = 0;
    loop {
        tokio::select! {
            Some(m) = messages.next() => {
                let topic = m.topic.as_str().to_owned();
                *totals.entry(topic.clone()).or_default() += 1;
                *window.entry(topic).or_default() += 1;
            }
            Some(event) = liveness.next() => {
                match event {
                    LivenessEvent::Up { node } => nodes.insert(node, "up".into()),
                    LivenessEvent::Down { node, reason } => nodes.insert(node, format!("down ({reason:?})").to_lowercase()),
                };
            }
            _ = tick.tick() => {
                let secs = since.elapsed().as_secs_f64().max(1e-3);
                let rates = window.iter().map(|(t, n)| (t.as_str(), *n as f64 / secs)).collect();
                print(&Report { nodes: &nodes, rates, totals: &totals }, args.json)?;
                window.clear();
                since = Instant::now();
                reports += 1;
                if args.reports.is_some_and(|r| reports >= r) {
                    return Ok(());
                }
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

fn print(report: &Report<'_>, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
        return Ok(());
    }
    println!("nodes: {}", if report.nodes.is_empty() { "none seen yet" } else { "" });
    for (node, state) in report.nodes {
        println!("  {node:<30} {state}");
    }
    println!("topics (msg/s, total):");
    for (topic, total) in report.totals {
        let rate = report.rates.get(topic.as_str()).copied().unwrap_or(0.0);
        println!("  {topic:<50} {rate:>9.1} {total:>9}");
    }
    println!();
    Ok(())
}
