//! `busbar`: the command line.

#![forbid(unsafe_code)]

mod action;
mod action_serve;
mod bench;
mod bridge;
mod demo;
mod exit;
mod gateway;
mod r#gen;
mod manual;
mod message;
mod metrics;
mod monitor;
mod output;
mod patience;
mod profile;
mod pubsub;
mod report;
mod rest_proxy;
mod rpc;
mod target;
mod tcp_bridge;

use std::io::Write as _;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// busbar: publish/subscribe, RPC, actions, events and heartbeats over message brokers.
///
/// Every command that talks to a broker takes `--url URL` or `-c/--config FILE` with
/// `--broker NAME` (or `BUSBAR_URL`, or `BUSBAR_CONFIG` with `BUSBAR_BROKER`; without any,
/// `mem://`, the in-process bus), and `--profile` for the wire dialect: busbar (the
/// default), commlib (commlib-py), celine or sermas (with `--app-id`). Durations take units:
/// `500ms`, `30s`, `2m`.
///
/// Exit codes: 0 done (also a command that runs until stopped, stopped by Ctrl-C or
/// SIGTERM); 1 an error, described in one line; 2 a wrong command line (or something the
/// `--profile` has no place for); 3 a deadline passed (`sub --timeout` short of `--count`,
/// `call` unanswered, which on MQTT includes nobody serving); 4 the remote side answered
/// with an error; 5 messages were lost (`sub` read slower than they came and its
/// subscription dropped some); 6 nobody serves what was called (where the broker can tell);
/// 130 interrupted before done (`sub --count`, a command still starting; `pub`, `call`,
/// `bench` end by the signal).
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
    /// Answers an action's goals with a shell command (feedback lines on its standard
    /// output, the result last, a cancel as SIGTERM) until Ctrl-C.
    ServeAction(action_serve::Args),
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
    /// Prints the completion script for a shell.
    Completions(manual::CompletionArgs),
    /// Prints the man page (roff): `busbar man > busbar.1`.
    Man,
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Not eprintln!, which panics when standard error is closed.
            let _ = writeln!(std::io::stderr(), "busbar: {}", one_line(&e));
            let code = e.downcast_ref::<exit::Exit>().map_or(1, |x| x.code);
            std::process::ExitCode::from(code)
        }
    }
}

/// The error and its causes in one readable line. A cause whose text its error already
/// quotes (a library error wrapped with its own message) is said once, not two or three
/// times.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// What is logged: busbar's own warnings by default (a client library's log lines are its
/// authors' diagnostics, and what matters of them reaches the user as busbar's errors);
/// with -v busbar's information and the libraries' warnings; with -vv everything to debug.
/// Colours only on a terminal. With `OTEL_EXPORTER_OTLP_ENDPOINT` (or
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, busbar's spans of traced messages also go to
/// that OpenTelemetry collector, whatever the log level; the exporter is returned, to be
/// flushed before the process ends. Needs the runtime entered (the export is a task).
fn start_logging(verbose: u8) -> anyhow::Result<Option<busbar::otel::Exporter>> {
    use std::io::IsTerminal;
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let (ours, theirs) = match verbose {
        0 => (LevelFilter::WARN, LevelFilter::OFF),
        1 => (LevelFilter::INFO, LevelFilter::WARN),
        _ => (LevelFilter::DEBUG, LevelFilter::DEBUG),
    };
    // Every busbar crate's target starts with `busbar`.
    let filter = Targets::new().with_default(theirs).with_target("busbar", ours);
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(filter);
    let config = busbar::otel::OtlpConfig::from_env("busbar")
        .context("the OpenTelemetry export's settings")?;
    let (traces, exporter) = match config {
        Some(config) => {
            let (layer, exporter) = busbar::otel::layer(config);
            // busbar's spans and events, at debug level whatever the log shows.
            let only_busbar = Targets::new().with_target("busbar", LevelFilter::DEBUG);
            (Some(layer.with_filter(only_busbar)), Some(exporter))
        }
        None => (None, None),
    };
    let _ = tracing_subscriber::registry().with(log).with(traces).try_init();
    Ok(exporter)
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let exporter = {
        let _in_runtime = runtime.enter();
        start_logging(cli.verbose)?
    };
    let outcome = run_command(cli, &runtime);
    if let Some(exporter) = exporter {
        // What the collector did not get is said, never dropped silently.
        let report = runtime.block_on(exporter.flush(std::time::Duration::from_secs(5)));
        if !report.complete() {
            let _ = writeln!(std::io::stderr(), "busbar: traces not all exported: {report}");
        }
    }
    outcome
}

fn run_command(cli: Cli, runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    runtime.block_on(async {
        match cli.command {
            Command::Pub(args) => pubsub::publish(args).await,
            Command::Sub(args) => pubsub::subscribe(args).await,
            Command::Call(args) => rpc::call(args).await,
            Command::Serve(args) => rpc::serve(args).await,
            Command::Action(args) => action::run(args).await,
            Command::ServeAction(args) => action_serve::run(args).await,
            Command::Completions(args) => manual::completions(args),
            Command::Man => manual::man(),
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
