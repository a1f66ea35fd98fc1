//! Whether a connection is open, how its tasks learn that it ends, and the task that owns
//! it.
//!
//! Every transport has the same life: open from a successful connect, then closed once (by
//! `close`, by a drop, or by a fault-injection kill), after which every call fails with an
//! error of kind `Closed` and every background task stops. [`Lifecycle`] is that state and
//! the token the tasks watch; [`Supervisor`] is the task that owns the broker connection,
//! which a graceful close waits for (bounded) and a kill aborts.

use std::fmt::Display;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use busbar_core::error::{Common, OpError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::lock;

/// Open or closed, and the token every task of the connection stops on.
pub struct Lifecycle {
    open: AtomicBool,
    shutdown: CancellationToken,
    /// The broker's URL without secrets, for errors.
    shown: String,
}

impl Lifecycle {
    /// An open connection's, to the broker at `shown` (a URL without secrets).
    pub fn new(shown: &str) -> Self {
        Lifecycle {
            open: AtomicBool::new(true),
            shutdown: CancellationToken::new(),
            shown: shown.to_owned(),
        }
    }

    /// True until [`Lifecycle::end`].
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Refuses a call once the connection is closed, as an error of the operation's kind.
    pub fn check<K: Copy + From<Common>>(&self) -> Result<(), OpError<K>> {
        if self.is_open() { Ok(()) } else { Err(OpError::closed()) }
    }

    /// The broker cannot be reached now, for `reason`; once the connection is closed that
    /// is the answer instead, whatever the client library said.
    pub fn not_connected<K: Copy + From<Common>>(&self, reason: impl Display) -> OpError<K> {
        if self.is_open() { OpError::not_connected(&self.shown, reason) } else { OpError::closed() }
    }

    /// The token the connection's tasks stop on; cancelled by [`Lifecycle::end`], or by
    /// [`Lifecycle::stop_tasks`] ahead of it.
    pub fn token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Tells the connection's tasks to stop, the connection still counting as open (a
    /// graceful close lets its supervisor say goodbye to the broker before it ends).
    pub fn stop_tasks(&self) {
        self.shutdown.cancel();
    }

    /// Marks the connection closed and stops its tasks. True the first time only, so the
    /// caller tears the rest down exactly once.
    pub fn end(&self) -> bool {
        let was_open = self.open.swap(false, Ordering::AcqRel);
        self.shutdown.cancel();
        was_open
    }
}

/// The task that owns a connection's link to its broker.
pub struct Supervisor(Mutex<Option<JoinHandle<()>>>);

impl Supervisor {
    /// Keeps `task`.
    pub fn new(task: JoinHandle<()>) -> Self {
        Supervisor(Mutex::new(Some(task)))
    }

    /// Waits up to `grace` for the task to finish (it has been told to stop, and may have a
    /// goodbye to send), then aborts it.
    pub async fn join_within(&self, grace: Duration) {
        let task = lock(&self.0).take();
        if let Some(mut task) = task
            && tokio::time::timeout(grace, &mut task).await.is_err()
        {
            task.abort();
        }
    }

    /// Stops the task at once, as a crash would.
    pub fn abort(&self) {
        if let Some(task) = lock(&self.0).take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use busbar_core::error::{PublishErrorKind, RequestErrorKind};

    use super::*;

    #[test]
    fn ends_once_and_then_refuses_as_closed() {
        let life = Lifecycle::new("redis://h:1");
        assert!(life.check::<PublishErrorKind>().is_ok());
        let cut = life.not_connected::<RequestErrorKind>("reset");
        assert_eq!(cut.kind(), RequestErrorKind::NotConnected);
        assert!(cut.to_string().contains("redis://h:1"), "{cut}");
        assert!(life.end());
        assert!(!life.end(), "a second end tears nothing down again");
        assert!(life.token().is_cancelled());
        let err = life.check::<PublishErrorKind>().err().map(|e| e.kind());
        assert_eq!(err, Some(PublishErrorKind::Closed));
        let after = life.not_connected::<RequestErrorKind>("reset");
        assert_eq!(after.kind(), RequestErrorKind::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_supervisor_that_does_not_stop_is_aborted() {
        let (alive, gone) = tokio::sync::oneshot::channel::<()>();
        let stuck = Supervisor::new(tokio::spawn(async move {
            let _alive = alive;
            std::future::pending::<()>().await;
        }));
        stuck.join_within(Duration::from_secs(1)).await;
        // Aborted: the task and what it held are dropped.
        assert!(gone.await.is_err());
        let done = Supervisor::new(tokio::spawn(async {}));
        done.join_within(Duration::from_secs(1)).await;
        done.abort();
    }
}
