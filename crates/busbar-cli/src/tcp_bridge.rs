//! `busbar tcp-bridge`: a bidirectional TCP proxy from a local port to one address.

use std::time::Duration;

use busbar::bridge::{TcpBridge, TcpBridgeOptions};

/// Options of `busbar tcp-bridge`.
#[derive(clap::Args)]
pub struct Args {
    /// Where to listen, HOST:PORT (port 0 picks a free one, printed at the start).
    #[arg(long, value_name = "HOST:PORT")]
    listen: String,
    /// Where to forward every connection, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    to: String,
    /// Seconds to wait for the target to accept a connection.
    #[arg(long, default_value = "10", value_parser = crate::message::positive_secs)]
    connect_timeout: Duration,
    /// Connections forwarded at once; more callers wait their turn.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// Close a tunnel after this many seconds in which nothing moved either way (0: never),
    /// so callers that connect and say nothing cannot hold every tunnel.
    #[arg(long, default_value_t = 300.0, value_name = "SECS")]
    idle_timeout: f64,
    /// Print the counters this often, in seconds (0: only at the end).
    #[arg(long, default_value_t = 10.0)]
    interval: f64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let secs = args.idle_timeout;
    let idle_timeout = Some(
        Duration::try_from_secs_f64(secs)
            .map_err(|_| anyhow::anyhow!("--idle-timeout {secs} is not a number of seconds"))?,
    )
    .filter(|d| !d.is_zero());
    let options = TcpBridgeOptions {
        connect_timeout: args.connect_timeout,
        max_connections: args.max_connections,
        idle_timeout,
    };
    let mut interrupts = crate::exit::Interrupts::new()?;
    let bridge = TcpBridge::bind(&args.listen, &args.to, options).await?;
    println!("tcp-bridge: {} -> {}; Ctrl-C stops it", bridge.local_addr(), bridge.target());
    crate::report::every_until_ctrl_c(args.interval, &mut interrupts, || print_stats(&bridge))
        .await;
    bridge.shutdown().await;
    Ok(())
}

fn print_stats(bridge: &TcpBridge) {
    let s = bridge.stats();
    println!(
        "accepted {}, open {}, failed {}, idle closed {}, bytes to target {}, bytes back {}",
        s.accepted, s.open, s.failed, s.idle_closed, s.bytes_to_target, s.bytes_to_caller
    );
}
