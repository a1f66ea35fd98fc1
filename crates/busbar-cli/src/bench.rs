//! `busbar bench`: end-to-end throughput, loss and latency on any transport, next to a raw
//! baseline measured in the same run.

use std::time::{Duration, Instant};

use anyhow::bail;
use busbar::SubscribeOptions;
use busbar::{Connection, RpcClient, RpcError, Topic, TopicFilter};
use busbar::{Message, RpcServer};
use bytes::Bytes;
use serde::Serialize;

/// Options of `busbar bench`.
#[derive(clap::Args)]
pub struct Args {
    /// Where to measure.
    #[command(flatten)]
    target: crate::target::Target,
    /// What to measure.
    #[arg(long, value_enum, default_value = "pubsub")]
    pattern: Pattern,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Messages (pubsub) or calls (rpc).
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Also measure the raw baseline in the same run (for mem://: a bare tokio channel).
    #[arg(long)]
    baseline: bool,
    /// Repeat the measurement this many times and report the median of each figure (this
    /// machine's neighbours come and go; one run can be off by a factor of two).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// How long the subscriber waits for a missing message before counting it lost.
    #[arg(long, default_value = "2", value_parser = crate::message::positive_secs)]
    idle_timeout: Duration,
    /// busbar's own wire, or commlib's (JSON bodies `{"data": "<size bytes>"}`, commlib's
    /// RPC of the transport): what a commlib-py system would see.
    #[command(flatten)]
    dialect: crate::profile::Dialect,
}

#[derive(Clone, Copy, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Pattern {
    Pubsub,
    Rpc,
}

/// One measurement.
#[derive(Serialize, Default)]
struct Figures {
    msgs_per_s: f64,
    lost: u64,
    p50_us: f64,
    p99_us: f64,
    elapsed_s: f64,
    received: u64,
}

#[derive(Serialize)]
struct Report<'a> {
    url: &'a str,
    profile: String,
    pattern: Pattern,
    size: usize,
    count: u64,
    runs: usize,
    #[serde(flatten)]
    busbar: Figures,
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline: Option<Figures>,
}

/// Runs the benchmark.
pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let url = args.target.describe()?;
    if args.baseline && !args.target.is_mem_url() {
        bail!(
            "--baseline measures a bare tokio channel, the raw equivalent of mem:// only; \
             drop --baseline for {url}"
        );
    }
    use crate::profile::Profile;
    let commlib = match args.dialect.profile {
        Profile::Busbar => false,
        Profile::Commlib => true,
        Profile::Celine | Profile::Sermas => return Err(args.dialect.refuse("bench")),
    };
    let mut busbar_runs = Vec::new();
    let mut baseline_runs = Vec::new();
    for _ in 0..args.runs {
        busbar_runs.push(match (args.pattern, commlib) {
            (Pattern::Pubsub, false) => pubsub(&args).await?,
            (Pattern::Rpc, false) => rpc(&args).await?,
            (Pattern::Pubsub, true) => commlib_pubsub(&args).await?,
            (Pattern::Rpc, true) => commlib_rpc(&args).await?,
        });
        if args.baseline {
            baseline_runs.push(match args.pattern {
                Pattern::Pubsub => baseline_pubsub(&args).await,
                Pattern::Rpc => baseline_rpc(&args).await,
            });
        }
    }
    let figures = median(&busbar_runs);
    let baseline = (!baseline_runs.is_empty()).then(|| median(&baseline_runs));
    let report = Report {
        url: &url,
        profile: args.dialect.profile.to_string(),
        pattern: args.pattern,
        size: args.size,
        count: args.count,
        runs: args.runs,
        busbar: figures,
        baseline,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_text(&report);
    }
    Ok(())
}

fn print_text(r: &Report<'_>) {
    let line = |name: &str, f: &Figures| match r.pattern {
        Pattern::Pubsub => println!(
            "{name:<9} {:>12.0} msgs/s  lost {:>8}  ({} received in {:.3} s)",
            f.msgs_per_s, f.lost, f.received, f.elapsed_s
        ),
        Pattern::Rpc => println!(
            "{name:<9} {:>12.0} calls/s  p50 {:>8.1} µs  p99 {:>8.1} µs",
            f.msgs_per_s, f.p50_us, f.p99_us
        ),
    };
    println!(
        "{} on {} ({} wire): {} × {} bytes, median of {} run(s)",
        pattern_name(r.pattern),
        r.url,
        r.profile,
        r.count,
        r.size,
        r.runs
    );
    line("busbar", &r.busbar);
    if let Some(b) = &r.baseline {
        line("baseline", b);
    }
}

fn pattern_name(p: Pattern) -> &'static str {
    match p {
        Pattern::Pubsub => "pub/sub",
        Pattern::Rpc => "rpc",
    }
}

fn bench_topic() -> String {
    format!("bench/{}", std::process::id())
}

async fn connect(args: &Args) -> anyhow::Result<Connection> {
    args.target.connect().await
}

/// The median of every figure over several runs (lost: the worst run, so loss is never hidden).
fn median(runs: &[Figures]) -> Figures {
    let mid = |f: fn(&Figures) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    Figures {
        msgs_per_s: mid(|f| f.msgs_per_s),
        lost: runs.iter().map(|f| f.lost).max().unwrap_or(0),
        p50_us: mid(|f| f.p50_us),
        p99_us: mid(|f| f.p99_us),
        elapsed_s: mid(|f| f.elapsed_s),
        received: runs.iter().map(|f| f.received).min().unwrap_or(0),
    }
}

/// A progress bar on standard error, drawn 20 times over a run (never with `--json`, whose
/// standard output is for machines; standard error stays quiet then too).
struct Progress {
    what: &'static str,
    total: u64,
    step: u64,
    quiet: bool,
}

impl Progress {
    fn new(what: &'static str, total: u64, quiet: bool) -> Self {
        Progress { what, total, step: (total / 20).max(1), quiet }
    }

    fn at(&self, done: u64) {
        if self.quiet || (!done.is_multiple_of(self.step) && done != self.total) {
            return;
        }
        let filled = (done * 20 / self.total.max(1)) as usize;
        eprint!(
            "\r[{}{}] {done}/{} {}",
            "#".repeat(filled),
            " ".repeat(20 - filled.min(20)),
            self.total,
            self.what
        );
    }

    fn done(&self) {
        if !self.quiet {
            eprintln!();
        }
    }
}

/// One publisher connection, one subscriber connection; counts what arrives in order.
async fn pubsub(args: &Args) -> anyhow::Result<Figures> {
    let topic = bench_topic();
    let sub_conn = connect(args).await?;
    let pub_conn = connect(args).await?;
    let options = SubscribeOptions::new(TopicFilter::new(&topic)?).capacity(64 * 1024);
    let mut sub = sub_conn.subscribe_with(options).await?;
    let count = args.count;
    let idle = args.idle_timeout;
    let receiver = tokio::spawn(async move {
        let mut received = 0u64;
        let mut last = Instant::now();
        while received < count {
            // Arm a timer only when the queue is empty: a timer per message would measure
            // the timer wheel, not the bus.
            if sub.try_recv().is_some() {
                received += 1;
                continue;
            }
            last = Instant::now();
            match tokio::time::timeout(idle, sub.recv()).await {
                Ok(Some(_)) => received += 1,
                Ok(None) | Err(_) => break,
            }
        }
        if received == count {
            last = Instant::now();
        }
        (received, last)
    });
    let message = Message::new(Topic::new(&topic)?, Bytes::from(vec![0x5a; args.size]))
        .with_qos(busbar::QoS::AtMostOnce);
    let progress = Progress::new("published", count, args.json);
    let started = Instant::now();
    for i in 0..count {
        pub_conn.publish(message.clone()).await?;
        progress.at(i + 1);
    }
    let (received, last) = receiver.await?;
    progress.done();
    pub_conn.close().await?;
    sub_conn.close().await?;
    Ok(throughput(count, received, last.saturating_duration_since(started)))
}

/// Sequential calls from one client to one echo server, through the typed RPC pattern (the
/// payload is a string of `size` bytes); latency percentiles.
async fn rpc(args: &Args) -> anyhow::Result<Figures> {
    let topic = format!("{}/echo", bench_topic());
    let server_conn = connect(args).await?;
    let client_conn = connect(args).await?;
    let server =
        RpcServer::spawn(&server_conn, &topic, |s: String| async move { Ok::<_, RpcError>(s) })
            .await?;
    let client = RpcClient::<String, String>::new(&client_conn, &topic)?;
    let request = "x".repeat(args.size);
    let mut latencies = Vec::with_capacity(args.count as usize);
    // A few untimed calls let both sides reach steady state.
    for _ in 0..args.count.min(1_000) / 10 {
        client.call(request.clone()).await?;
    }
    let progress = Progress::new("calls", args.count, args.json);
    let started = Instant::now();
    for i in 0..args.count {
        let t = Instant::now();
        let reply = client.call(request.clone()).await?;
        latencies.push(t.elapsed());
        progress.at(i + 1);
        if reply.len() != args.size {
            bail!("echo returned {} bytes for {}", reply.len(), args.size);
        }
    }
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    progress.done();
    server.stop(Duration::from_secs(1)).await;
    server_conn.close().await?;
    client_conn.close().await?;
    Ok(latency_figures(latencies, elapsed, args.count))
}

/// What commlib bodies carry in the benchmark: `size` bytes of text.
fn commlib_body(size: usize) -> serde_json::Value {
    serde_json::json!({"data": "Z".repeat(size)})
}

/// Pub/sub on commlib's wire: a commlib publisher and subscriber, JSON encoded and decoded
/// on every message.
async fn commlib_pubsub(args: &Args) -> anyhow::Result<Figures> {
    use busbar_commlib::{CommlibPublisher, CommlibSubscriber};
    let name = format!("bench.{}", std::process::id());
    let sub_conn = connect(args).await?;
    let pub_conn = connect(args).await?;
    let mut sub = CommlibSubscriber::<serde_json::Value>::new(&sub_conn, &name).await?;
    let publisher = CommlibPublisher::<serde_json::Value>::new(&pub_conn, &name)?;
    let (count, idle) = (args.count, args.idle_timeout);
    let receiver = tokio::spawn(async move {
        let mut received = 0u64;
        let mut last = Instant::now();
        while received < count {
            match tokio::time::timeout(idle, sub.recv()).await {
                Ok(Some(Ok(_))) => {
                    received += 1;
                    last = Instant::now();
                }
                Ok(Some(Err(_))) => {}
                Ok(None) | Err(_) => break,
            }
        }
        (received, last)
    });
    let body = commlib_body(args.size);
    let progress = Progress::new("published", count, args.json);
    let started = Instant::now();
    for i in 0..count {
        publisher.publish(&body).await?;
        progress.at(i + 1);
    }
    let (received, last) = receiver.await?;
    progress.done();
    pub_conn.close().await?;
    sub_conn.close().await?;
    Ok(throughput(count, received, last.saturating_duration_since(started)))
}

/// Sequential calls on commlib's RPC of the transport, to a commlib echo service.
async fn commlib_rpc(args: &Args) -> anyhow::Result<Figures> {
    use busbar_commlib::{CommlibRpcClient, CommlibRpcService};
    let name = format!("bench.{}.echo", std::process::id());
    let server_conn = connect(args).await?;
    let client_conn = connect(args).await?;
    let _service =
        CommlibRpcService::spawn(&server_conn, &name, |v: serde_json::Value| async move { v })
            .await?;
    let client =
        CommlibRpcClient::<serde_json::Value, serde_json::Value>::new(&client_conn, &name)?;
    let request = commlib_body(args.size);
    // The first calls also wait for the service's subscription to be in place.
    for _ in 0..(args.count.min(1_000) / 10).max(1) {
        client.call(&request).await?;
    }
    let mut latencies = Vec::with_capacity(args.count as usize);
    let progress = Progress::new("calls", args.count, args.json);
    let started = Instant::now();
    for i in 0..args.count {
        let t = Instant::now();
        let reply = client.call(&request).await?;
        latencies.push(t.elapsed());
        progress.at(i + 1);
        if reply != request {
            bail!("the echo came back changed");
        }
    }
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    progress.done();
    server_conn.close().await?;
    client_conn.close().await?;
    Ok(latency_figures(latencies, elapsed, args.count))
}

fn latency_figures(mut latencies: Vec<Duration>, elapsed: f64, count: u64) -> Figures {
    latencies.sort_unstable();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies.get(i).map(|d| d.as_secs_f64() * 1e6).unwrap_or(0.0)
    };
    Figures {
        msgs_per_s: count as f64 / elapsed,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        elapsed_s: elapsed,
        received: latencies.len() as u64,
        ..Figures::default()
    }
}

/// The same pub/sub run over a bare bounded tokio channel: what moving the message between
/// two tasks costs with no routing at all.
async fn baseline_pubsub(args: &Args) -> Figures {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(64 * 1024);
    let count = args.count;
    let receiver = tokio::spawn(async move {
        let mut received = 0u64;
        while received < count && rx.recv().await.is_some() {
            received += 1;
        }
        (received, Instant::now())
    });
    let payload = Bytes::from(vec![0x5a; args.size]);
    let started = Instant::now();
    for _ in 0..count {
        if tx.send(payload.clone()).await.is_err() {
            break;
        }
    }
    let (received, last) = receiver.await.unwrap_or((0, Instant::now()));
    throughput(count, received, last.saturating_duration_since(started))
}

/// Pub/sub figures: `received` of `count` from the first publish to the last arrival.
fn throughput(count: u64, received: u64, elapsed: Duration) -> Figures {
    let elapsed = elapsed.as_secs_f64().max(1e-9);
    Figures {
        msgs_per_s: received as f64 / elapsed,
        lost: count - received,
        elapsed_s: elapsed,
        received,
        ..Figures::default()
    }
}

/// Request/reply over two bare tokio channels between two tasks.
async fn baseline_rpc(args: &Args) -> Figures {
    let (req_tx, mut req_rx) =
        tokio::sync::mpsc::channel::<(Bytes, tokio::sync::oneshot::Sender<Bytes>)>(64);
    tokio::spawn(async move {
        while let Some((b, reply)) = req_rx.recv().await {
            let _ = reply.send(b);
        }
    });
    let payload = Bytes::from(vec![0x5a; args.size]);
    let mut latencies = Vec::with_capacity(args.count as usize);
    let started = Instant::now();
    for _ in 0..args.count {
        let t = Instant::now();
        let (tx, rx) = tokio::sync::oneshot::channel();
        if req_tx.send((payload.clone(), tx)).await.is_err() || rx.await.is_err() {
            break;
        }
        latencies.push(t.elapsed());
    }
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    latency_figures(latencies, elapsed, args.count)
}
