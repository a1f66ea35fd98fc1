//! Routes: one reader per distinct (filter, queue group, start) on a connection, shared by any
//! number of local subscriptions, so every local subscription to one filter is offered the
//! same records in the same order, and a connection's group members are one member of the
//! Kafka group (its local members take turns).

use std::sync::{Mutex, MutexGuard};

use busbar_core::transport::{Acknowledge, StartAt};
use busbar_transport_kit::fanout::Targets;
use busbar_transport_kit::{Fanout, Target};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A route's key: the filter, the queue group and where reading starts.
pub(crate) type RouteKey = (String, Option<String>, StartAt, Acknowledge);

/// Whether a route's reader reads: not yet (`None`), or since it started (`Ok`), or why it
/// could not.
type Readiness = Option<Result<(), String>>;

/// The local subscriptions one reader feeds.
pub(crate) struct Route {
    fanout: Mutex<Fanout>,
    /// Stops the route's reader (a child of the connection's token).
    pub(crate) stop: CancellationToken,
    ready: watch::Sender<Readiness>,
}

impl Route {
    pub(crate) fn new(group: bool, stop: CancellationToken) -> Route {
        Route { fanout: Mutex::new(Fanout::new(group)), stop, ready: watch::Sender::new(None) }
    }

    fn fanout(&self) -> MutexGuard<'_, Fanout> {
        self.fanout.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn add(&self, id: u64, target: Target) {
        self.fanout().add(id, target);
    }

    /// Removes local subscription `id`; true when none is left (the route ends).
    pub(crate) fn remove(&self, id: u64) -> bool {
        self.fanout().remove(id)
    }

    /// Where the next record goes: every member, or a queue group's next.
    pub(crate) fn targets(&self) -> Targets {
        self.fanout().targets()
    }

    /// Records whether the reader started.
    pub(crate) fn set_ready(&self, outcome: Result<(), String>) {
        self.ready.send_replace(Some(outcome));
    }

    /// Waits until the reader reads, or says why it cannot.
    pub(crate) async fn ready(&self) -> Result<(), String> {
        let mut rx = self.ready.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(state) => state.clone().unwrap_or(Ok(())),
            Err(_) => Err("the subscription ended before it read".into()),
        }
    }
}
