//! `busbar bench`: end-to-end throughput, loss, duplicates, order and latency on any
//! transport, and with `--compare` the same run through the broker's own client crate in
//! the same process, so the ratio can be read on the user's own broker.

mod commlib;
mod figures;
mod progress;
mod pubsub;
mod raw;
mod rpc;

use std::time::Duration;

use anyhow::bail;
use serde::Serialize;

use self::figures::{FRAME, Figures, median};

/// Options of `busbar bench`.
#[derive(clap::Args)]
pub struct Args {
    /// Where to measure.
    #[command(flatten)]
    target: crate::target::Target,
    /// What to measure.
    #[arg(long, value_enum, default_value = "pubsub")]
    pattern: Pattern,
    /// Payload sizes in bytes, comma-separated: one measurement each (pub/sub payloads are
    /// at least 16 bytes, which carry the sequence number and send time).
    #[arg(long, value_delimiter = ',', default_value = "100")]
    size: Vec<usize>,
    /// Messages (pubsub, all publishers together) or calls (rpc).
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// QoS of the publishes and the subscription, or of the requests (0, 1 or 2).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Publishers, each on its own connection; the count is shared among them.
    #[arg(long, default_value_t = 1, value_parser = at_least_one)]
    publishers: usize,
    /// Subscribers, each on its own connection, each receiving every message.
    #[arg(long, default_value_t = 1, value_parser = at_least_one)]
    subscribers: usize,
    /// Other subscriptions each subscriber's connection holds (to topics nothing is
    /// published on), which routing has to look past.
    #[arg(long, default_value_t = 0)]
    extra_subscriptions: usize,
    /// RPC: calls in flight at once, from one client.
    #[arg(long, default_value_t = 1, value_parser = at_least_one)]
    concurrency: usize,
    /// Print one JSON object per size instead of text.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print CSV (a header, then one row per size and side) instead of text.
    #[arg(long)]
    csv: bool,
    /// Also run the same measurement through the broker's own client crate (rumqttc,
    /// lapin, async-nats, redis, rdkafka; for mem://, bare tokio channels), alternating with busbar's runs,
    /// and print the ratio.
    #[arg(long, alias = "baseline")]
    compare: bool,
    /// Repeat the measurement this many times and report the median of each figure (this
    /// machine's neighbours come and go; one run can be off by a factor of two). Loss,
    /// duplicates and disorder are the worst run's.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// How long a subscriber waits for a missing message before counting it lost.
    #[arg(long, default_value = "2s", value_parser = crate::message::positive_duration)]
    idle_timeout: Duration,
    /// busbar's own wire, or commlib's (JSON bodies `{"data": "<size bytes>"}`, commlib's
    /// RPC of the transport): what a commlib-py system would see.
    #[command(flatten)]
    dialect: crate::profile::Dialect,
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{s:?} is not a whole number of at least 1")),
    }
}

impl Args {
    /// True when the output is for machines (no progress bar then).
    fn for_machines(&self) -> bool {
        self.json || self.csv
    }

    /// `--qos` as busbar's QoS (the parser admits 0 to 2 only).
    fn level(&self) -> busbar::QoS {
        busbar::QoS::from_level(self.qos).unwrap_or(busbar::QoS::AtMostOnce)
    }
}

#[derive(Clone, Copy, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Pattern {
    Pubsub,
    Rpc,
}

/// One size's result.
#[derive(Serialize)]
struct Report<'a> {
    url: &'a str,
    profile: String,
    pattern: Pattern,
    size: usize,
    count: u64,
    qos: u8,
    publishers: usize,
    subscribers: usize,
    extra_subscriptions: usize,
    concurrency: usize,
    runs: usize,
    #[serde(flatten)]
    busbar: Figures,
    /// The raw client's figures, with `--compare`.
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline: Option<Figures>,
    /// busbar's rate over the raw client's (pub/sub), or its p50 latency over the raw
    /// client's (RPC: below 1 is faster).
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio: Option<f64>,
    /// The ratio of each run pair (busbar's run and the raw client's right after it):
    /// smallest, median, largest.
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio_spread: Option<[f64; 3]>,
}

/// Runs the benchmark.
pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if args.count > u64::from(u32::MAX) {
        bail!("--count can be at most {} (sequence numbers are 32 bits)", u32::MAX);
    }
    let url = args.target.describe()?;
    use crate::profile::Profile;
    let commlib = match args.dialect.profile {
        Profile::Busbar => false,
        Profile::Commlib => true,
        Profile::Celine | Profile::Sermas => return Err(args.dialect.refuse("bench")),
    };
    if let (Pattern::Pubsub, false) = (args.pattern, commlib)
        && let Some(small) = args.size.iter().find(|s| **s < FRAME)
    {
        bail!(
            "--size {small}: pub/sub payloads carry a {FRAME}-byte sequence number and send \
             time, so they are at least {FRAME} bytes"
        );
    }
    if commlib && args.compare {
        bail!("--compare measures busbar's own wire against the raw client; drop --profile");
    }
    let raw_url = if args.compare { Some(args.target.raw_url()?) } else { None };
    if args.csv {
        println!("pattern,size,side,msgs_per_s,lost,duplicated,out_of_order,p50_us,p99_us");
    }
    for &size in &args.size {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..args.runs {
            ours.push(match (args.pattern, commlib) {
                (Pattern::Pubsub, false) => pubsub::run(&args, size).await?,
                (Pattern::Rpc, false) => rpc::run(&args, size).await?,
                (Pattern::Pubsub, true) => commlib::pubsub(&args, size).await?,
                (Pattern::Rpc, true) => commlib::rpc(&args, size).await?,
            });
            if let Some(raw_url) = &raw_url {
                theirs.push(match args.pattern {
                    Pattern::Pubsub => raw::pubsub(&args, raw_url, size).await?,
                    Pattern::Rpc => raw::rpc(&args, raw_url, size).await?,
                });
            }
        }
        let ratio_of = |ours: &Figures, theirs: &Figures| match args.pattern {
            Pattern::Pubsub => ours.msgs_per_s / theirs.msgs_per_s.max(1e-9),
            Pattern::Rpc => ours.p50_us / theirs.p50_us.max(1e-9),
        };
        let mut pairs: Vec<f64> = ours.iter().zip(&theirs).map(|(o, t)| ratio_of(o, t)).collect();
        pairs.sort_by(f64::total_cmp);
        let ratio_spread = match (pairs.first(), pairs.last()) {
            (Some(min), Some(max)) => Some([*min, pairs[pairs.len() / 2], *max]),
            _ => None,
        };
        let busbar = median(&ours);
        let baseline = (!theirs.is_empty()).then(|| median(&theirs));
        let ratio = baseline.as_ref().map(|b| ratio_of(&busbar, b));
        let report = Report {
            url: &url,
            profile: args.dialect.profile.to_string(),
            pattern: args.pattern,
            size,
            count: args.count,
            qos: args.qos,
            publishers: args.publishers,
            subscribers: args.subscribers,
            extra_subscriptions: args.extra_subscriptions,
            concurrency: args.concurrency,
            runs: args.runs,
            busbar,
            baseline,
            ratio,
            ratio_spread,
        };
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else if args.csv {
            print_csv(&report);
        } else {
            print_text(&report);
        }
    }
    Ok(())
}

fn print_text(r: &Report<'_>) {
    let line = |name: &str, f: &Figures| match r.pattern {
        Pattern::Pubsub => println!(
            "{name:<9} {:>12.0} msgs/s  p50 {:>9.1} µs  p99 {:>9.1} µs  lost {}  duplicated {}  \
             out of order {}",
            f.msgs_per_s, f.p50_us, f.p99_us, f.lost, f.duplicated, f.out_of_order
        ),
        Pattern::Rpc => println!(
            "{name:<9} {:>12.0} calls/s  p50 {:>8.1} µs  p99 {:>8.1} µs  failed {}",
            f.msgs_per_s, f.p50_us, f.p99_us, f.lost
        ),
    };
    let shape = match r.pattern {
        Pattern::Pubsub => format!(
            "{} publisher(s), {} subscriber(s), {} extra subscription(s)",
            r.publishers, r.subscribers, r.extra_subscriptions
        ),
        Pattern::Rpc => format!("{} call(s) in flight", r.concurrency),
    };
    println!(
        "{} on {} ({} wire): {} × {} bytes at QoS {}, {shape}; median of {} run(s)",
        match r.pattern {
            Pattern::Pubsub => "pub/sub",
            Pattern::Rpc => "rpc",
        },
        r.url,
        r.profile,
        r.count,
        r.size,
        r.qos,
        r.runs
    );
    line("busbar", &r.busbar);
    if let Some(b) = &r.baseline {
        line("raw", b);
    }
    if let Some(ratio) = r.ratio {
        let of = match r.pattern {
            Pattern::Pubsub => "busbar's rate over the raw client's",
            Pattern::Rpc => "busbar's p50 over the raw client's",
        };
        match r.ratio_spread {
            Some([min, mid, max]) if r.runs > 1 => println!(
                "ratio     {ratio:.2} ({of}; run pairs: min {min:.2}, median {mid:.2}, max {max:.2})"
            ),
            _ => println!("ratio     {ratio:.2} ({of})"),
        }
    }
}

fn print_csv(r: &Report<'_>) {
    let pattern = match r.pattern {
        Pattern::Pubsub => "pubsub",
        Pattern::Rpc => "rpc",
    };
    let sides = std::iter::once(("busbar", &r.busbar)).chain(r.baseline.iter().map(|b| ("raw", b)));
    for (side, f) in sides {
        println!(
            "{pattern},{},{side},{:.0},{},{},{},{:.1},{:.1}",
            r.size, f.msgs_per_s, f.lost, f.duplicated, f.out_of_order, f.p50_us, f.p99_us
        );
    }
}

fn bench_topic() -> String {
    format!("bench/{}/{}", std::process::id(), run_number())
}

/// A number of its own for each run of this process: runs never share a topic, since a
/// broker that keeps a log (Kafka) would hand one run's records to the next.
pub(super) fn run_number() -> u32 {
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
