//! `busbar bridge`: runs the bridges of a configuration file until Ctrl-C.

use anyhow::Context;
use busbar::Config;
use std::path::PathBuf;

/// Options of `busbar bridge`.
#[derive(clap::Args)]
pub struct Args {
    /// The configuration file whose `bridges:` to run (see docs/configuration.md).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
    /// Print every bridge's counters this often (`10s`, `1m`; 0: only at the end).
    #[arg(long, default_value = "10s", value_parser = crate::message::duration)]
    interval: std::time::Duration,
    /// Serve every bridge's counters (forwarded, dropped, failed, looped, by bridge) in the
    /// Prometheus text format at http://ADDR/metrics, e.g. 127.0.0.1:9464 (`:0` picks a
    /// free port; the address in use is printed on standard error).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    if config.bridges().is_empty() {
        anyhow::bail!("{}: no `bridges:` to run", args.config.display());
    }
    let mut interrupts = crate::exit::Interrupts::new()?;
    let bridges = interrupts
        .before(async { config.start_bridges().await.context("starting the bridges") })
        .await?;
    for spec in config.bridges() {
        let carries = spec.topics.len() + spec.rpc.len();
        println!("bridging {}: {} -> {} ({carries} route(s))", spec.name, spec.from, spec.to);
    }
    let _exported = match &args.metrics {
        Some(addr) => Some(export(addr, &bridges).await?),
        None => None,
    };
    println!("{} bridge(s) running; Ctrl-C stops them", bridges.len());
    crate::report::every_until_ctrl_c(args.interval, &mut interrupts, || print_stats(&bridges))
        .await;
    tokio::select! {
        () = stop(bridges) => {}
        () = interrupts.next() => eprintln!("busbar bridge: second Ctrl-C: the bridges were cut off"),
    }
    Ok(())
}

/// How long Ctrl-C waits for the bridges to finish what they are forwarding.
const STOP_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// Stops every bridge gracefully: each finishes the message it is forwarding, and a durable
/// one acknowledges it at its source, so the next run does not forward it twice. A bridge
/// that does not finish in time (its target away) is cut off; from a durable source, what
/// it was forwarding comes again on the next run.
async fn stop(bridges: Vec<busbar::bridge::Bridge>) {
    let deadline = tokio::time::Instant::now() + STOP_PATIENCE;
    let (mut stopped, mut cut) = (0, 0);
    for bridge in bridges {
        match tokio::time::timeout_at(deadline, bridge.stop()).await {
            Ok(()) => stopped += 1,
            Err(_) => cut += 1,
        }
    }
    if cut == 0 {
        println!("stopped {stopped} bridge(s)");
    } else {
        eprintln!(
            "busbar bridge: stopped {stopped} bridge(s); {cut} did not finish within {} s and \
             were cut off",
            STOP_PATIENCE.as_secs()
        );
    }
}

/// Which counter of a bridge's a metric reads.
type Pick = fn(&busbar::bridge::BridgeStats) -> u64;

/// Serves the bridges' counters at `addr`, labelled `bridge="<name>"`.
async fn export(
    addr: &str,
    bridges: &[busbar::bridge::Bridge],
) -> anyhow::Result<busbar::metrics::MetricsServer> {
    let metrics = busbar::metrics::Metrics::new();
    for b in bridges {
        let counters: [(&str, &str, Pick); 4] = [
            ("busbar_bridge_forwarded_total", "Messages or calls forwarded.", |s| s.forwarded),
            ("busbar_bridge_dropped_total", "Messages dropped by the overflow policy.", |s| {
                s.dropped
            }),
            ("busbar_bridge_failed_total", "Forwards that failed.", |s| s.failed),
            ("busbar_bridge_looped_total", "Messages that had crossed the bridge already.", |s| {
                s.looped
            }),
        ];
        for (name, help, pick) in counters {
            let reader = b.stats_reader();
            metrics.counter(name, help, &[("bridge", b.name())], move || pick(&reader.read()))?;
        }
    }
    let server = metrics
        .serve(addr)
        .await
        .with_context(|| format!("--metrics {addr}: cannot listen there"))?;
    eprintln!("busbar bridge: metrics on http://{}/metrics", server.local_addr());
    Ok(server)
}

fn print_stats(bridges: &[busbar::bridge::Bridge]) {
    for b in bridges {
        let s = b.stats();
        println!(
            "{}: forwarded {}, dropped {}, failed {}, looped {}",
            b.name(),
            s.forwarded,
            s.dropped,
            s.failed,
            s.looped
        );
    }
}
