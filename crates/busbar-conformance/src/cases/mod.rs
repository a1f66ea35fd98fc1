//! The cases, grouped by what they exercise. Each takes the harness and returns a
//! [`TestResult`](crate::TestResult).

mod actions;
mod counters;
mod durable;
mod liveness;
mod pubsub;
mod queues;
mod rpc;

pub use actions::*;
pub use counters::*;
pub use durable::*;
pub use liveness::*;
pub use pubsub::*;
pub use queues::*;
pub use rpc::*;

use std::time::Duration;

use busbar_core::transport::ConnectOptions;
use busbar_core::{Connection, Subscription};

use crate::harness::Harness;

/// How long a case waits for any single expected thing.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// A topic prefix no other case (or concurrent run on a shared broker) uses.
pub(crate) fn prefix(case: &str) -> String {
    format!("conformance/{case}/{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

pub(crate) async fn connect(h: &impl Harness) -> Result<Connection, String> {
    h.connect(ConnectOptions::new()).await.map_err(|e| format!("connect failed: {e}"))
}

/// The next message of `sub`, or an error naming what was awaited.
pub(crate) async fn next(
    sub: &mut Subscription,
    what: &str,
) -> Result<busbar_core::Message, String> {
    crate::within(WAIT, what, sub.recv())
        .await?
        .ok_or_else(|| format!("subscription ended while waiting for {what}"))
}

/// The other side's error a failed call or goal carried, or what came instead.
pub(crate) fn remote_error<T: std::fmt::Debug, K: Copy + std::fmt::Debug>(
    outcome: Result<T, busbar_core::error::OpError<K>>,
) -> Result<busbar_core::RpcError, String> {
    match outcome {
        Err(e) => {
            e.remote_error().cloned().ok_or_else(|| format!("expected a remote error, got {e}"))
        }
        Ok(v) => Err(format!("expected a remote error, got {v:?}")),
    }
}

/// The kind of the error `outcome` failed with, or what came instead.
pub(crate) fn error_kind<T: std::fmt::Debug, K: Copy + std::fmt::Debug>(
    outcome: Result<T, busbar_core::error::OpError<K>>,
) -> Result<K, String> {
    match outcome {
        Err(e) => Ok(e.kind()),
        Ok(v) => Err(format!("expected an error, got {v:?}")),
    }
}

/// Fails with `msg` unless `cond`.
pub(crate) fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(msg()) }
}
