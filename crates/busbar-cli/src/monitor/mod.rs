//! `busbar monitor`: which nodes are up (from their heartbeats) and through which server,
//! which server the monitor itself uses, and how busy each topic is.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use busbar::{LivenessEvent, LivenessMonitor, SubscribeOptions, TopicFilter};
use futures_util::StreamExt;
use serde::Serialize;

use crate::profile::{Dialect, Profile};
use crate::target::Target;

mod live;

/// Options of `busbar monitor`.
#[derive(clap::Args)]
pub struct Args {
    /// Topics whose message rates to show (default: all).
    #[arg(long, default_value = "#")]
    filter: Vec<String>,
    /// Time between reports (`2s`, `500ms`).
    #[arg(long, default_value = "2s", value_parser = crate::message::positive_duration)]
    interval: Duration,
    /// Stop after this many reports (default: until Ctrl-C).
    #[arg(long)]
    reports: Option<u64>,
    /// One JSON object per report instead of a table.
    #[arg(long)]
    json: bool,
    /// Print each report after the last, as into a pipe, also on a terminal (where the
    /// table is otherwise redrawn in place, busiest topics first, topics that differ by an
    /// id folded into one row).
    #[arg(long, conflicts_with = "json")]
    plain: bool,
    #[command(flatten)]
    metrics: crate::metrics::MetricsArgs,
    /// commlib: a node whose heartbeats to follow (repeatable; commlib's heartbeats name
    /// their node in the topic only, so the nodes are named here).
    #[arg(long = "node", value_name = "NAME")]
    nodes: Vec<String>,
    /// commlib: the nodes' heartbeat interval (`10s`); a node silent for three is down.
    #[arg(long, default_value = "10s", value_parser = crate::message::positive_duration)]
    heartbeat_interval: Duration,
    #[command(flatten)]
    dialect: Dialect,
    #[command(flatten)]
    target: Target,
}

/// Where node liveness comes from.
enum Liveness {
    /// busbar's heartbeats and last wills.
    Busbar(LivenessMonitor),
    /// commlib heartbeats of the named nodes: when each was last heard.
    Commlib {
        beats: futures_util::stream::BoxStream<'static, String>,
        last: BTreeMap<String, Instant>,
        silence: Duration,
    },
    /// The profile has no heartbeats: topic rates only.
    None,
}

impl Liveness {
    async fn start(args: &Args, conn: &busbar::Connection) -> anyhow::Result<Liveness> {
        Ok(match args.dialect.profile {
            Profile::Busbar => Liveness::Busbar(LivenessMonitor::spawn(conn, 3).await?),
            Profile::Commlib => {
                if args.nodes.is_empty() {
                    return Err(crate::exit::with(
                        crate::profile::USAGE,
                        "the commlib profile needs the nodes to follow: --node NAME",
                    ));
                }
                let interval = args.heartbeat_interval;
                let mut beats = Vec::new();
                for node in &args.nodes {
                    let sub = busbar_commlib::heartbeat::watch(conn, node).await?;
                    let node = node.clone();
                    beats.push(
                        futures_util::stream::unfold(sub, move |mut sub| {
                            let node = node.clone();
                            async move { sub.recv().await.map(|_| (node, sub)) }
                        })
                        .boxed(),
                    );
                }
                Liveness::Commlib {
                    beats: futures_util::stream::select_all(beats).boxed(),
                    last: BTreeMap::new(),
                    silence: interval * 3,
                }
            }
            Profile::Celine | Profile::Sermas => Liveness::None,
        })
    }

    /// The next change to the node table.
    async fn next(&mut self, nodes: &mut BTreeMap<String, String>) {
        match self {
            Liveness::Busbar(monitor) => match monitor.next().await {
                Some(LivenessEvent::Up { node }) => {
                    nodes.insert(node, "up".into());
                }
                Some(LivenessEvent::Down { node, reason }) => {
                    nodes.insert(node, format!("down ({reason:?})").to_lowercase());
                }
                Some(other) => {
                    nodes.insert(other.node().to_owned(), format!("{other:?}").to_lowercase());
                }
                None => std::future::pending().await,
            },
            Liveness::Commlib { beats, last, .. } => match beats.next().await {
                Some(node) => {
                    last.insert(node.clone(), Instant::now());
                    nodes.insert(node, "up".into());
                }
                None => std::future::pending().await,
            },
            Liveness::None => std::future::pending().await,
        }
    }

    /// The server each node's connection uses, where its heartbeats name one (busbar's).
    fn servers(&self, nodes: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        match self {
            Liveness::Busbar(monitor) => {
                nodes.keys().filter_map(|n| monitor.server(n).map(|s| (n.clone(), s))).collect()
            }
            _ => BTreeMap::new(),
        }
    }

    /// Marks commlib nodes not heard from for three intervals as down.
    fn sweep(&self, nodes: &mut BTreeMap<String, String>) {
        if let Liveness::Commlib { last, silence, .. } = self {
            for (node, heard) in last {
                if heard.elapsed() > *silence {
                    nodes.insert(node.clone(), "down (silent)".into());
                }
            }
        }
    }
}

#[derive(Serialize)]
struct Report<'a> {
    /// The server the monitor's own connection uses.
    server: Option<String>,
    /// Node name -> "up" or "down (why)".
    nodes: &'a BTreeMap<String, String>,
    /// Node name -> the server its connection uses, as its heartbeats name it.
    servers: BTreeMap<String, String>,
    /// Topic -> messages per second over the last interval.
    rates: BTreeMap<&'a str, f64>,
    /// Topic -> messages seen since the start.
    totals: &'a BTreeMap<String, u64>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let interval = args.interval;
    let mut interrupts = crate::exit::Interrupts::new()?;
    let conn = interrupts.before(args.target.connect()).await?;
    let mut liveness = Liveness::start(&args, &conn).await?;
    let mut subs = Vec::new();
    for f in &args.filter {
        let filter = TopicFilter::new(f).with_context(|| format!("filter {f:?}"))?;
        subs.push(conn.subscribe_with(SubscribeOptions::from(filter)).await?);
    }
    let mut messages = futures_util::stream::select_all(subs);
    let exported = args.metrics.start("monitor", &conn).await?;
    let shared = match &exported {
        Some(e) => Some(Shared::export(e)?),
        None => None,
    };
    let view = match (args.json, args.plain) {
        (true, _) => View::Json,
        (false, false) if std::io::IsTerminal::is_terminal(&std::io::stdout()) => View::Live,
        _ => View::Plain,
    };
    eprintln!("busbar monitor: watching {}", args.filter.join(", "));
    let mut nodes = BTreeMap::<String, String>::new();
    let mut totals = BTreeMap::<String, u64>::new();
    let mut window = BTreeMap::<String, u64>::new();
    let first = tokio::time::Instant::now()
        .checked_add(interval)
        .context("--interval is longer than this clock can count")?;
    let mut tick = tokio::time::interval_at(first, interval);
    let mut since = Instant::now();
    let mut reports = 0;
    loop {
        tokio::select! {
            Some(m) = messages.next() => {
                let topic = m.topic.as_str().to_owned();
                if let Some(shared) = &shared {
                    shared.count(&topic);
                }
                *totals.entry(topic.clone()).or_default() += 1;
                *window.entry(topic).or_default() += 1;
            }
            () = liveness.next(&mut nodes) => {}
            _ = tick.tick() => {
                liveness.sweep(&mut nodes);
                if let Some(shared) = &shared {
                    shared.nodes(&nodes);
                }
                let secs = since.elapsed().as_secs_f64().max(1e-3);
                let rates = window.iter().map(|(t, n)| (t.as_str(), *n as f64 / secs)).collect();
                let report = Report {
                    server: conn.server(),
                    servers: liveness.servers(&nodes),
                    nodes: &nodes,
                    rates,
                    totals: &totals,
                };
                match view {
                    View::Live => {
                        let (columns, lines) = live::terminal_size();
                        let now = busbar::time::iso8601_millis(std::time::SystemTime::now());
                        print!("{}", live::frame(&report, &now, columns, lines));
                        use std::io::Write as _;
                        let _ = std::io::stdout().flush();
                    }
                    View::Json => print(&report, true)?,
                    View::Plain => print(&report, false)?,
                }
                window.clear();
                since = Instant::now();
                reports += 1;
                if args.reports.is_some_and(|r| reports >= r) {
                    return Ok(());
                }
            }
            () = interrupts.next() => return Ok(()),
        }
    }
}

/// The most topics (after folding) counted apart in the metrics; the rest are `_other`.
const MAX_TOPIC_SERIES: usize = 1000;

/// What the monitor exports besides its connection: messages per topic (folded as the live
/// view folds them, so reply inboxes are one series) and each node's state.
struct Shared {
    topics: Arc<Mutex<BTreeMap<String, u64>>>,
    up: Arc<Mutex<BTreeMap<String, bool>>>,
}

impl Shared {
    fn export(exported: &crate::metrics::Exported) -> anyhow::Result<Shared> {
        let shared = Shared { topics: Arc::default(), up: Arc::default() };
        let topics = shared.topics.clone();
        exported.metrics().counter_family(
            "busbar_monitor_messages_total",
            "Messages seen, by topic (ids folded as in the live view).",
            "topic",
            move || lock(&topics).iter().map(|(t, n)| (t.clone(), *n)).collect(),
        )?;
        let up = shared.up.clone();
        exported.metrics().gauge_family(
            "busbar_monitor_node_up",
            "1 while a node's heartbeats say it is up.",
            "node",
            move || {
                lock(&up).iter().map(|(n, u)| (n.clone(), if *u { 1.0 } else { 0.0 })).collect()
            },
        )?;
        Ok(shared)
    }

    fn count(&self, topic: &str) {
        let key = live::fold_key(topic);
        let mut topics = lock(&self.topics);
        let key = if topics.len() >= MAX_TOPIC_SERIES && !topics.contains_key(&key) {
            "_other".to_owned()
        } else {
            key
        };
        *topics.entry(key).or_default() += 1;
    }

    fn nodes(&self, nodes: &BTreeMap<String, String>) {
        let mut up = lock(&self.up);
        for (node, state) in nodes {
            up.insert(node.clone(), state == "up");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How reports are shown.
#[derive(Clone, Copy)]
enum View {
    /// Redrawn in place (a terminal).
    Live,
    /// One JSON object per report.
    Json,
    /// One table after another (a pipe, or `--plain`).
    Plain,
}

fn print(report: &Report<'_>, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
        return Ok(());
    }
    if let Some(server) = &report.server {
        println!("connected to {server}");
    }
    println!("nodes: {}", if report.nodes.is_empty() { "none seen yet" } else { "" });
    for (node, state) in report.nodes {
        match report.servers.get(node) {
            Some(server) => println!("  {node:<30} {state:<20} via {server}"),
            None => println!("  {node:<30} {state}"),
        }
    }
    println!("topics (msg/s, total):");
    for (topic, total) in report.totals {
        let rate = report.rates.get(topic.as_str()).copied().unwrap_or(0.0);
        println!("  {topic:<50} {rate:>9.1} {total:>9}");
    }
    println!();
    Ok(())
}
