//! `busbar`: the command line.

mod bench;
mod bridge;
mod demo;
mod target;

use clap::{Parser, Subcommand};

/// busbar: publish/subscribe, RPC, actions, events and heartbeats over message brokers.
#[derive(Parser)]
#[command(name = "busbar", version, about)]
struct Cli {
    /// More log output (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A narrated tour of every pattern on the in-process bus.
    Demo(demo::Args),
    /// Measures throughput, loss and latency on a transport.
    Bench(bench::Args),
    /// Runs the bridges of a configuration file until Ctrl-C.
    Bridge(bridge::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => tracing_subscriber::filter::LevelFilter::WARN,
        1 => tracing_subscriber::filter::LevelFilter::INFO,
        _ => tracing_subscriber::filter::LevelFilter::DEBUG,
    };
    tracing_subscriber::fmt().with_max_level(level).with_writer(std::io::stderr).init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Demo(args) => demo::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Bridge(args) => bridge::run(args).await,
        }
    })
}
