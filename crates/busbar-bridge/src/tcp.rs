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
//! clients slows down rather than exhausting file descriptors. A tunnel through which nothing
//! moved for the idle timeout is closed, so silent callers cannot hold the slots for good.

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
    /// A tunnel in which no byte moved either way for this long is closed (default 5
    /// minutes; `None`: never). Without it, callers that connect and then say nothing would
    /// hold every tunnel slot for good.
    pub idle_timeout: Option<Duration>,
}

/// How long a tunnel may stay silent by default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

impl Default for TcpBridgeOptions {
    fn default() -> Self {
        TcpBridgeOptions {
            connect_timeout: Duration::from_secs(10),
            max_connections: 1024,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
        }
    }
}

/// A TCP bridge's counters. Bytes are counted as they pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpBridgeStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Tunnels open now.
    pub open: u64,
    /// Connections dropped because the target could not be reached.
    pub failed: u64,
    /// Tunnels closed because nothing moved through them for the idle timeout.
    pub idle_closed: u64,
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
    idle_closed: AtomicU64,
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
            idle_closed: c.idle_closed.load(Ordering::Relaxed),
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
        let (target, counters, timeouts) =
            (target.clone(), counters.clone(), (options.connect_timeout, options.idle_timeout));
        tunnels.spawn(async move {
            let _slot = slot;
            tunnel(caller, &target, timeouts, &counters).await;
        });
        // Finished tunnels are reaped as we go, so the set does not grow without bound.
        while tunnels.try_join_next().is_some() {}
    }
    // Dropping the set (here, or when the task is aborted) closes every open tunnel.
    tunnels.shutdown().await;
}

/// One caller's tunnel, from connecting to the target until both directions are done (or
/// nothing moved for the idle timeout).
async fn tunnel(
    mut caller: TcpStream,
    target: &str,
    (timeout, idle_timeout): (Duration, Option<Duration>),
    counters: &Counters,
) {
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
    let activity = Activity::new();
    let mut caller = Watched { inner: &mut caller, activity: &activity, read: &counters.to_target };
    let mut upstream =
        Watched { inner: &mut upstream, activity: &activity, read: &counters.to_caller };
    // Both directions at once; an end of stream on one side becomes a write shutdown on the
    // other, and the tunnel lasts until both have ended (or one side fails).
    let copying = tokio::io::copy_bidirectional(&mut caller, &mut upstream);
    let moved = match idle_timeout {
        None => copying.await.map(|_| ()),
        Some(idle) => {
            tokio::pin!(copying);
            loop {
                let quiet = activity.quiet_for();
                if quiet >= idle {
                    counters.idle_closed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%target, "tcp bridge: an idle tunnel closed");
                    break Ok(());
                }
                tokio::select! {
                    done = &mut copying => break done.map(|_| ()),
                    () = tokio::time::sleep(idle - quiet) => {}
                }
            }
        }
    };
    counters.open.fetch_sub(1, Ordering::Relaxed);
    if let Err(e) = moved {
        tracing::debug!(%target, error = %e, "tcp bridge: tunnel ended with an error");
    }
}

/// When bytes last moved through a tunnel, either way.
struct Activity {
    start: tokio::time::Instant,
    /// Milliseconds from `start` to the last move.
    last: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity { start: tokio::time::Instant::now(), last: AtomicU64::new(0) }
    }

    fn moved(&self) {
        let now = self.start.elapsed().as_millis().try_into().unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// One side of a tunnel: notes every move in the tunnel's activity and counts the bytes
/// read from it (as they pass, so a tunnel cut for idleness still counts them).
struct Watched<'a> {
    inner: &'a mut TcpStream,
    activity: &'a Activity,
    read: &'a AtomicU64,
}

impl tokio::io::AsyncRead for Watched<'_> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut *this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.activity.moved();
            this.read.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl tokio::io::AsyncWrite for Watched<'_> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut *this.inner).poll_write(cx, buf);
        if matches!(polled, std::task::Poll::Ready(Ok(n)) if n > 0) {
            this.activity.moved();
        }
        polled
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.get_mut().inner).poll_shutdown(cx)
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
