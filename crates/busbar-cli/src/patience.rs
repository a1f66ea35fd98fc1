//! Riding through a broker outage: a publisher keeps the message it could not hand over
//! while the broker is out of reach and tries again, for up to its patience, the same on
//! every transport. What the broker refuses (a topic, a size, a QoS) is not retried: only
//! errors that say the broker could not be reached.

use std::future::Future;
use std::time::Duration;

use busbar::error::{ConnectError, ConnectErrorKind, PublishError, PublishErrorKind};
use busbar::{Connection, ConnectionEvent, ConnectionEvents};
use tokio::time::Instant;

use crate::target::Target;

/// The first wait between two attempts; it doubles up to [`LONGEST_WAIT`], and a
/// `Reconnected` event ends it early.
const FIRST_WAIT: Duration = Duration::from_millis(100);
const LONGEST_WAIT: Duration = Duration::from_secs(2);

/// How long a command keeps trying through an outage.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    limit: Duration,
}

impl Patience {
    pub fn new(limit: Duration) -> Self {
        Patience { limit }
    }

    /// Connects, trying again while the broker is out of reach, for up to the patience.
    pub async fn connect(&self, target: &Target) -> anyhow::Result<Connection> {
        let deadline = Instant::now() + self.limit;
        let mut wait = FIRST_WAIT;
        let mut said = false;
        loop {
            // Each attempt has the transport's own connect timeout; the patience decides
            // whether another one follows.
            match target.connect().await {
                Ok(conn) => return Ok(conn),
                Err(e) if unreachable(&e) && Instant::now() + wait < deadline => {
                    if !said {
                        eprintln!(
                            "busbar: note: {e:#}; trying again for up to {:?} (--patience)",
                            self.limit
                        );
                        said = true;
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(LONGEST_WAIT);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Watches `conn`'s connection state from now on, for [`Watch::publish`] and
    /// [`Watch::settle`].
    pub fn watch(&self, conn: &Connection) -> Watch {
        Watch { events: conn.events(), limit: self.limit, down_since: None }
    }
}

/// A connection's state as its events tell it, and the patience of the command using it.
pub struct Watch {
    events: ConnectionEvents,
    limit: Duration,
    /// When the connection was last seen lost, while it has not come back.
    down_since: Option<Instant>,
}

impl Watch {
    fn take(&mut self, event: &ConnectionEvent) {
        match event {
            ConnectionEvent::Disconnected { .. } => {
                self.down_since.get_or_insert_with(Instant::now);
            }
            ConnectionEvent::Connected { .. } | ConnectionEvent::Reconnected { .. } => {
                self.down_since = None
            }
            _ => {}
        }
    }

    fn catch_up(&mut self) {
        while let Some(event) = self.events.try_next() {
            self.take(&event);
        }
    }

    /// Waits up to `limit` for the connection to come back (or for any event at all).
    async fn wait_for_news(&mut self, limit: Duration) {
        if let Ok(Some(event)) = tokio::time::timeout(limit, self.events.next()).await {
            self.take(&event);
        }
    }

    /// Runs `attempt` until it succeeds, fails for a reason other than an unreachable
    /// broker, or the patience runs out during one outage (then the last error is returned,
    /// saying how long it was kept).
    pub async fn publish<F, Fut>(&mut self, mut attempt: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let mut outage: Option<Instant> = None;
        let mut wait = FIRST_WAIT;
        loop {
            // A confirmed publish (MQTT QoS 1 and 2, AMQP) waits for the broker, across an
            // outage too: no longer than the patience.
            let outcome = match tokio::time::timeout(self.limit, attempt()).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    return Err(crate::exit::with(
                        crate::exit::TIMEOUT,
                        format!(
                            "the broker did not confirm the message within the --patience of \
                             {:?}",
                            self.limit
                        ),
                    ));
                }
            };
            let e = match outcome {
                Ok(()) => return Ok(()),
                Err(e) if unreachable(&e) => e,
                Err(e) => return Err(e),
            };
            let since = *outage.get_or_insert_with(|| {
                eprintln!(
                    "busbar: note: {e:#}; keeping the message for up to {:?} (--patience)",
                    self.limit
                );
                Instant::now()
            });
            if since.elapsed() + wait > self.limit {
                return Err(e.context(format!(
                    "the broker stayed out of reach for the whole --patience of {:?}",
                    self.limit
                )));
            }
            // Back as soon as the connection says something, or after the wait.
            self.wait_for_news(wait).await;
            wait = (wait * 2).min(LONGEST_WAIT);
        }
    }

    /// Before closing: while the connection is lost (publishes some transports hold for it
    /// are still to go out), waits for it to come back, up to the patience from when it was
    /// lost. A close then confirms or reports what was published.
    pub async fn settle(&mut self) {
        self.catch_up();
        if self.down_since.is_some() {
            eprintln!(
                "busbar: note: the connection is lost; waiting up to {:?} for it to come back \
                 before closing (--patience)",
                self.limit
            );
        }
        while let Some(since) = self.down_since {
            let left = self.limit.saturating_sub(since.elapsed());
            if left.is_zero() {
                return;
            }
            self.wait_for_news(left).await;
        }
    }
}

/// True when `e` says the broker could not be reached (now), as opposed to refusing what
/// was asked.
fn unreachable(e: &anyhow::Error) -> bool {
    if e.downcast_ref::<crate::exit::Exit>().is_some_and(|x| x.code == crate::exit::TIMEOUT) {
        // A connect that timed out.
        return true;
    }
    e.chain().any(|cause| {
        if let Some(p) = cause.downcast_ref::<PublishError>() {
            return matches!(p.kind(), PublishErrorKind::NotConnected | PublishErrorKind::TimedOut);
        }
        if let Some(c) = cause.downcast_ref::<ConnectError>() {
            return matches!(c.kind(), ConnectErrorKind::Unreachable | ConnectErrorKind::TimedOut);
        }
        cause.downcast_ref::<busbar::Error>().is_some_and(busbar::Error::is_transient)
    })
}
