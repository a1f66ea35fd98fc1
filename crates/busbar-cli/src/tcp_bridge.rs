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
    /// How long to wait for the target to accept a connection (`10s`).
    #[arg(long, default_value = "10s", value_parser = crate::message::positive_duration)]
    connect_timeout: Duration,
    /// Connections forwarded at once; more callers wait their turn.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// Close a tunnel after this long with nothing moving either way (`5m`, `30s`; 0:
    /// never), so callers that connect and say nothing cannot hold every tunnel.
    #[arg(long, default_value = "5m", value_parser = crate::message::duration)]
    idle_timeout: Duration,
    /// Print the counters this often (`10s`, `1m`; 0: only at the end).
    #[arg(long, default_value = "10s", value_parser = crate::message::duration)]
    interval: Duration,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let idle_timeout = Some(args.idle_timeout).filter(|d| !d.is_zero());
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
