//! `busbar`: the command line.

#![forbid(unsafe_code)]

mod action;
mod bench;
mod bridge;
mod demo;
mod exit;
mod gateway;
mod r#gen;
mod message;
mod monitor;
mod patience;
mod profile;
mod pubsub;
mod report;
mod rest_proxy;
mod rpc;
mod target;
mod tcp_bridge;

use clap::{Parser, Subcommand};

/// busbar: publish/subscribe, RPC, actions, events and heartbeats over message brokers.
///
/// Every command that talks to a broker takes `--url URL` (default `mem://`, the in-process
/// bus) or `--config FILE` with `--broker NAME`, and `--profile` for the wire dialect:
/// busbar (the default), commlib (commlib-py), celine or sermas (with `--app-id`).
///
/// Exit codes: 0 done; 1 an error, described in one line; 2 a wrong command line (or
/// something the `--profile` has no place for); 3 a
/// deadline passed (`sub --timeout` short of `--count`, `call` unanswered); 4 the remote side
/// answered with an error; 5 messages were lost (`sub` read slower than they came and its
/// subscription dropped some).
#[derive(Parser)]
#[command(name = "busbar", version, about, long_about)]
struct Cli {
    /// More log output (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Publishes a message (from the argument, `--file`, or `-` for one per line of standard
    /// input).
    Pub(pubsub::PubArgs),
    /// Prints the messages on one or more topic filters.
    Sub(pubsub::SubArgs),
    /// Calls a service and prints its answer.
    Call(rpc::CallArgs),
    /// Answers calls: an echo, or a shell command per request.
    Serve(rpc::ServeArgs),
    /// Sends a goal to an action, follows its feedback, and cancels it on Ctrl-C.
    Action(action::Args),
    /// Shows which nodes are up (from their heartbeats) and each topic's message rate.
    Monitor(monitor::Args),
    /// A narrated tour of every pattern on the in-process bus.
    Demo(demo::Args),
    /// Measures throughput, loss and latency on a transport.
    Bench(bench::Args),
    /// Runs the bridges of a configuration file until Ctrl-C.
    Bridge(bridge::Args),
    /// Runs a rule-based gateway (CSTBox semantics) until Ctrl-C.
    Gateway(gateway::Args),
    /// Forwards TCP connections from a local port to another address, both ways, until
    /// Ctrl-C (for protocols busbar does not speak).
    TcpBridge(tcp_bridge::Args),
    /// Generates Rust from ApiGear ObjectAPI modules (structs, enums, and per interface a
    /// trait, a service and a client), or lists their topics.
    Gen(r#gen::Args),
    /// Makes HTTP calls for RPC callers (commlib's REST proxy, with every HTTP method) until
    /// Ctrl-C.
    RestProxy(rest_proxy::Args),
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One readable line: the error and its causes.
            eprintln!("busbar: {e:#}");
            let code = e.downcast_ref::<exit::Exit>().map_or(1, |x| x.code);
            std::process::ExitCode::from(code)
        }
    }
}

fn run() -> anyhow::Result<()> {
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
            Command::Pub(args) => pubsub::publish(args).await,
            Command::Sub(args) => pubsub::subscribe(args).await,
            Command::Call(args) => rpc::call(args).await,
            Command::Serve(args) => rpc::serve(args).await,
            Command::Action(args) => action::run(args).await,
            Command::Monitor(args) => monitor::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Bridge(args) => bridge::run(args).await,
            Command::Gateway(args) => gateway::run(args).await,
            Command::TcpBridge(args) => tcp_bridge::run(args).await,
            Command::RestProxy(args) => rest_proxy::run(args).await,
            Command::Gen(args) => r#gen::run(args),
        }
    })
}
