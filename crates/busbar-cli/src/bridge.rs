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
    /// Print every bridge's counters this often, in seconds (0: only at the end).
    #[arg(long, default_value_t = 10.0)]
    interval: f64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    if config.bridges().is_empty() {
        anyhow::bail!("{}: no `bridges:` to run", args.config.display());
    }
    let mut interrupts = crate::exit::Interrupts::new()?;
    let bridges = config.start_bridges().await.context("starting the bridges")?;
    for spec in config.bridges() {
        let carries = spec.topics.len() + spec.rpc.len();
        println!("bridging {}: {} -> {} ({carries} route(s))", spec.name, spec.from, spec.to);
    }
    println!("{} bridge(s) running; Ctrl-C stops them", bridges.len());
    crate::report::every_until_ctrl_c(args.interval, &mut interrupts, || print_stats(&bridges))
        .await;
    Ok(())
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
