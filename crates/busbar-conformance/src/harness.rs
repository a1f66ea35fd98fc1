//! How a transport plugs into the suite.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use busbar_core::transport::{BoxFuture, ConnectOptions};
use busbar_core::{Connection, Result};

/// What a case returns: `Err` fails the test with its message.
pub type TestResult = std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// A transport under test: opens connections to one broker (or bus).
pub trait Harness: Send + Sync + 'static {
    /// Transport name, shown in failures.
    fn name(&self) -> &'static str;

    /// Opens a new connection (a new client of the broker).
    fn connect(&self, options: ConnectOptions) -> BoxFuture<'_, Result<Connection>>;

    /// Cuts `conn` abruptly, as a crash or a network failure would, so that the broker
    /// publishes its last will. Returns false when the harness cannot do that (the last-will
    /// case is then skipped).
    fn crash<'a>(&'a self, conn: &'a Connection) -> BoxFuture<'a, bool> {
        let _ = conn;
        Box::pin(async { false })
    }
}

/// Every case gets this long before it fails as hung.
pub const CASE_DEADLINE: Duration = Duration::from_secs(60);

/// Runs one case: skipped when `harness` is `None`, failed with the transport's name and the
/// case's message on error or when it outlives [`CASE_DEADLINE`].
pub async fn run_case<H, F>(case: &str, harness: Option<H>, body: F)
where
    H: Harness,
    F: FnOnce(Arc<H>) -> BoxFuture<'static, TestResult>,
{
    let Some(harness) = harness else {
        eprintln!("SKIPPED: conformance case {case}: its broker is not available");
        return;
    };
    let harness = Arc::new(harness);
    let name = harness.name();
    match tokio::time::timeout(CASE_DEADLINE, body(harness)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("conformance case {case} failed on {name}: {e}"),
        Err(_) => {
            panic!("conformance case {case} hung on {name} (no result within {CASE_DEADLINE:?})")
        }
    }
}

/// Awaits `fut` for at most `limit`, turning a hang into an error naming `what`.
pub async fn within<T>(
    limit: Duration,
    what: &str,
    fut: impl Future<Output = T>,
) -> std::result::Result<T, String> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| format!("timed out after {limit:?} waiting for {what}"))
}
