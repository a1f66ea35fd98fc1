//! A TCP bridge: a bidirectional proxy from a local listening port to one target address.
//!
//! Every accepted connection gets a connection of its own to the target, and bytes flow both
//! ways at once until both sides are done. A side that finishes sending (a half-close) is
//! passed on as a half-close, so request/response protocols that close their sending side to
//! mark the end of a request work through the bridge, as do protocols where the server
//! speaks first and long-lived streams (an MQTT session, say). Nothing is read ahead or cut
//! off: what one side writes, the other side reads, however long.
//!
//! The number of tunnels open at once is bounded; past the bound, the bridge stops accepting
//! until one closes (the kernel's listen queue holds the callers meanwhile), so a burst of
//! clients slows down rather than exhausting file descriptors.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::BridgeError;

/// How a TCP bridge behaves.
#[derive(Debug, Clone)]
pub struct TcpBridgeOptions {
    /// How long to wait for the target to accept a connection (default 10 s). A caller
    /// whose target cannot be reached in time is disconnected and the failure counted.
    pub connect_timeout: Duration,
    /// Tunnels open at once (default 1024).
    pub max_connections: usize,
}

impl Default for TcpBridgeOptions {
    fn default() -> Self {
        TcpBridgeOptions { connect_timeout: Duration::from_secs(10), max_connections: 1024 }
    }
}

/// A TCP bridge's counters. Bytes are counted when a tunnel closes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpBridgeStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Tunnels open now.
    pub open: u64,
    /// Connections dropped because the target could not be reached.
    pub failed: u64,
    /// Bytes sent from callers to the target.
    pub bytes_to_target: u64,
    /// Bytes sent from the target back to callers.
    pub bytes_to_caller: u64,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    open: AtomicU64,
    failed: AtomicU64,
    to_target: AtomicU64,
    to_caller: AtomicU64,
}

/// A running TCP bridge. Stops accepting, and closes its tunnels, when dropped or shut down.
pub struct TcpBridge {
    local: SocketAddr,
    target: String,
    counters: Arc<Counters>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for TcpBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpBridge")
            .field("local", &self.local)
            .field("target", &self.target)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Drop for TcpBridge {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.task.abort();
    }
}

impl TcpBridge {
    /// Listens on `listen` (e.g. `127.0.0.1:7000`; port 0 picks a free one) and forwards
    /// every connection to `target` (`host:port`). The listener is bound when this returns.
    pub async fn bind(
        listen: &str,
        target: &str,
        options: TcpBridgeOptions,
    ) -> Result<TcpBridge, BridgeError> {
        let invalid = |reason: String| BridgeError::Invalid {
            name: format!("tcp {listen} -> {target}"),
            reason,
        };
        check_host_port(target).map_err(|r| invalid(format!("target: {r}")))?;
        if options.max_connections == 0 {
            return Err(invalid("max_connections must be at least 1".into()));
        }
        let listener =
            TcpListener::bind(listen).await.map_err(|e| invalid(format!("cannot listen: {e}")))?;
        let local = listener.local_addr().map_err(|e| invalid(e.to_string()))?;
        let counters = Arc::new(Counters::default());
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(
            listener,
            target.to_owned(),
            options,
            counters.clone(),
            stopped,
        ));
        Ok(TcpBridge { local, target: target.to_owned(), counters, stop, task })
    }

    /// The address the bridge listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The address it forwards to.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The counters so far.
    pub fn stats(&self) -> TcpBridgeStats {
        let c = &self.counters;
        TcpBridgeStats {
            accepted: c.accepted.load(Ordering::Relaxed),
            open: c.open.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            bytes_to_target: c.to_target.load(Ordering::Relaxed),
            bytes_to_caller: c.to_caller.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting and closes every open tunnel.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        // The accept loop ends at once on the stop, and aborts its tunnels on the way out.
        let _ = (&mut self.task).await;
    }
}

/// `host:port` with a port number; the host is resolved when a caller connects.
fn check_host_port(target: &str) -> Result<(), String> {
    let (host, port) = target.rsplit_once(':').ok_or("expected host:port")?;
    if host.is_empty() {
        return Err("no host before the ':'".into());
    }
    // An IPv6 address is bracketed, or its own colons would be taken for the port's.
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(format!("{host:?}: write an IPv6 address in brackets, [{host}]:{port}"));
    }
    port.parse::<u16>().map_err(|_| format!("{port:?} is not a port number"))?;
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    target: String,
    options: TcpBridgeOptions,
    counters: Arc<Counters>,
    mut stopped: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(options.max_connections));
    let mut tunnels = tokio::task::JoinSet::new();
    loop {
        // A slot first: past the bound, callers wait in the listen queue.
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s { Ok(s) => s, Err(_) => break },
            _ = stopped.changed() => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopped.changed() => break,
        };
        let caller = match accepted {
            Ok((caller, _)) => caller,
            Err(e) => {
                // Out of descriptors and the like: wait a little rather than spin.
                tracing::warn!(error = %e, "tcp bridge: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        let (target, counters, timeout) =
            (target.clone(), counters.clone(), options.connect_timeout);
        tunnels.spawn(async move {
            let _slot = slot;
            tunnel(caller, &target, timeout, &counters).await;
        });
        // Finished tunnels are reaped as we go, so the set does not grow without bound.
        while tunnels.try_join_next().is_some() {}
    }
    // Dropping the set (here, or when the task is aborted) closes every open tunnel.
    tunnels.shutdown().await;
}

/// One caller's tunnel, from connecting to the target until both directions are done.
async fn tunnel(mut caller: TcpStream, target: &str, timeout: Duration, counters: &Counters) {
    let _ = caller.set_nodelay(true);
    let connected = tokio::time::timeout(timeout, TcpStream::connect(target)).await;
    let mut upstream = match connected {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%target, error = %e, "tcp bridge: cannot reach the target");
            return;
        }
        Err(_) => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%target, "tcp bridge: the target did not accept in time");
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    counters.open.fetch_add(1, Ordering::Relaxed);
    // Both directions at once; an end of stream on one side becomes a write shutdown on the
    // other, and the tunnel lasts until both have ended (or one side fails).
    let moved = tokio::io::copy_bidirectional(&mut caller, &mut upstream).await;
    counters.open.fetch_sub(1, Ordering::Relaxed);
    match moved {
        Ok((to_target, to_caller)) => {
            counters.to_target.fetch_add(to_target, Ordering::Relaxed);
            counters.to_caller.fetch_add(to_caller, Ordering::Relaxed);
        }
        Err(e) => tracing::debug!(%target, error = %e, "tcp bridge: tunnel ended with an error"),
    }
}

#[cfg(test)]
mod tests {
    use super::check_host_port;

    #[test]
    fn targets_need_a_host_and_a_port() {
        assert!(check_host_port("127.0.0.1:1883").is_ok());
        assert!(check_host_port("broker.local:80").is_ok());
        assert!(check_host_port("[::1]:80").is_ok());
        assert!(check_host_port("127.0.0.1").is_err());
        assert!(check_host_port(":80").is_err());
        assert!(check_host_port("host:http").is_err());
        assert!(check_host_port("host:70000").is_err());
        assert!(check_host_port("::1").is_err(), "an IPv6 address without brackets");
        assert!(check_host_port("::1:80").is_err());
    }
}
