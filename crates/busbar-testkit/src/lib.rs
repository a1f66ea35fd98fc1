//! Test support for busbar's broker bindings.
//!
//! Broker tests need a real broker. This crate gives them two ways to get one:
//!
//! * [`shared_broker`] — the machine's standard loopback service for a [`BrokerKind`]
//!   (Mosquitto on 1883, RabbitMQ on 5672, Redis on 6379, NATS on 4222), or the URL in an
//!   override variable such as `BUSBAR_TEST_MQTT_URL`. Use it for tests that only publish and
//!   subscribe and do not care who else is connected.
//! * [`BrokerProcess`] — a broker process owned by one test, on a free loopback port with a
//!   generated configuration in its own temporary directory. Use it for tests that must
//!   stop, restart or configure the broker. The process is killed (by its pid) when the
//!   value is dropped.
//! * [`clusters`] — groups of such processes for failover tests: a NATS cluster, a
//!   RabbitMQ cluster, a Redis master with a replica and a Sentinel, and two Tansu (Kafka)
//!   brokers sharing one database of a [`postgres::PostgresServer`] of their own.
//!
//! # Skip or require
//!
//! A developer without brokers installed should still be able to run `cargo test`, so by
//! default a test whose broker is unavailable is *skipped*: [`skip`] prints one line
//! `SKIPPED: <test>: <why>` to stderr and the test returns early, which libtest counts as
//! a pass.
//!
//! When the environment variable `BUSBAR_REQUIRE_BROKERS=1` is set (the repository's
//! `scripts/test-all` and CI set it), a missing broker is a *failure*: [`skip`] prints the
//! same line and then panics with it, so nothing is silently left untested.
//!
//! ```no_run
//! use busbar_testkit::{BrokerKind, shared_broker};
//!
//! # async fn example() {
//! let Some(broker) = shared_broker(BrokerKind::Redis).await else {
//!     return; // skipped (or panicked, when brokers are required)
//! };
//! println!("testing against {}", broker.url());
//! # }
//! ```
//!
//! Owned processes follow the same policy through [`skip_if_missing`]: a missing broker
//! binary skips the test (or fails it when required); every other error is a failure.
//!
//! ```no_run
//! use busbar_testkit::{BrokerProcess, skip_if_missing};
//!
//! # async fn example() {
//! let Some(mut redis) = skip_if_missing("redis_restart", BrokerProcess::redis().await) else {
//!     return;
//! };
//! redis.restart().await.expect("redis restarts on the same port");
//! # }
//! ```
//!
//! Only loopback addresses are ever used by the owned processes.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bench;
pub mod clusters;
mod error;
pub mod fuzz;
pub mod kafka_users;
pub mod oidc;
pub mod otlp;
pub mod peer;
pub mod pki;
pub mod postgres;
mod process;
pub mod sasl_front;
mod shared;
pub mod tls_front;
pub mod websocket;

use std::net::{Ipv4Addr, TcpListener};

pub use error::TestkitError;
pub use pki::Pki;
pub use process::{BrokerProcess, MosquittoConfig, NatsConfig, READY_TIMEOUT, tansu_binary};
pub use shared::{BrokerKind, PROBE_TIMEOUT, SharedBroker, shared_broker, shared_broker_for};

/// The environment variable that turns skips into failures when set to `1`.
pub const REQUIRE_BROKERS_ENV: &str = "BUSBAR_REQUIRE_BROKERS";

/// Whether brokers are required: `true` when the environment variable
/// `BUSBAR_REQUIRE_BROKERS` is exactly `1`.
///
/// When brokers are required, [`skip`] panics instead of letting the test pass.
pub fn brokers_required() -> bool {
    std::env::var_os(REQUIRE_BROKERS_ENV).is_some_and(|v| v == "1")
}

/// A TCP port on `127.0.0.1` that was free a moment ago.
///
/// The port is found by binding `127.0.0.1:0` and reading the port the kernel chose; the
/// listener is closed before returning, so another process may in principle take the port
/// before the caller binds it. [`BrokerProcess`] retries with a fresh port when that happens.
/// Within one process a port is handed out once: two tests running at once must not both
/// get a port that neither has bound yet (the kernel may give a just-released port again),
/// or the second broker could not bind it while the first one's answers looked like its own
/// readiness (CI once met a TLS test talking to another test's plain Mosquitto).
///
/// # Errors
///
/// [`TestkitError::FreePort`] when binding or reading the local address fails.
pub fn free_port() -> Result<u16, TestkitError> {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    // Ports already handed out are held bound while looking, so the kernel picks others.
    let mut held = Vec::new();
    loop {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|source| TestkitError::FreePort { source })?;
        let port =
            listener.local_addr().map_err(|source| TestkitError::FreePort { source })?.port();
        if !handed_out.contains(&port) || held.len() >= 64 {
            handed_out.push(port);
            return Ok(port);
        }
        held.push(listener);
    }
}

/// Record that `test` cannot run because of `why`.
///
/// Prints `SKIPPED: <test>: <why>` to stderr. The caller should then return from the test.
///
/// # Panics
///
/// When [`brokers_required`] is true, panics with the same message, failing the test.
#[track_caller]
pub fn skip(test: &str, why: &str) {
    let message = format!("SKIPPED: {test}: {why}");
    eprintln!("{message}");
    if brokers_required() {
        panic!("{message} ({REQUIRE_BROKERS_ENV}=1, so a missing broker is a failure)");
    }
}

/// Turn the result of starting a [`BrokerProcess`] into "run or skip".
///
/// * `Ok(value)` gives `Some(value)`.
/// * [`TestkitError::BinaryMissing`] calls [`skip`] (which panics when brokers are
///   required) and gives `None`.
///
/// # Panics
///
/// On any other error (the broker was installed but failed to start, did not become ready,
/// …): that is a real failure, not a reason to skip. Also panics through [`skip`] when the
/// binary is missing and brokers are required.
#[track_caller]
pub fn skip_if_missing<T>(test: &str, result: Result<T, TestkitError>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(err @ TestkitError::BinaryMissing { .. }) => {
            skip(test, &err.to_string());
            None
        }
        Err(err) => panic!("{test}: {err}"),
    }
}

/// The name of the running test, as libtest names its thread, or `"<unknown test>"`.
pub(crate) fn current_test_name() -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" => name.to_owned(),
        _ => "<unknown test>".to_owned(),
    }
}

/// Waits up to 20 s for the first connection event that `want` accepts, skipping others;
/// panics (failing the test) when none comes or the events end.
pub async fn next_event(
    events: &mut busbar_core::ConnectionEvents,
    want: impl Fn(&busbar_core::ConnectionEvent) -> bool,
) -> busbar_core::ConnectionEvent {
    next_event_within(events, std::time::Duration::from_secs(20), want).await
}

/// [`next_event`] with a bound of `limit`.
pub async fn next_event_within(
    events: &mut busbar_core::ConnectionEvents,
    limit: std::time::Duration,
    want: impl Fn(&busbar_core::ConnectionEvent) -> bool,
) -> busbar_core::ConnectionEvent {
    let found = tokio::time::timeout(limit, async {
        while let Some(event) = events.next().await {
            if want(&event) {
                return Some(event);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(event)) => event,
        Ok(None) => panic!("connection events ended before the awaited one"),
        Err(_) => panic!("the awaited connection event did not come within {limit:?}"),
    }
}

/// A name unique to this process and call (for temporary directories and topics).
pub fn unique_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{}-{nanos}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_is_bindable() {
        let port = free_port().expect("a free port");
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("the port is free");
    }

    #[test]
    fn test_name_comes_from_the_thread() {
        assert!(current_test_name().contains("test_name_comes_from_the_thread"));
    }

    #[test]
    fn skip_if_missing_passes_values_through() {
        assert_eq!(skip_if_missing::<u8>("t", Ok(7)), Some(7));
    }

    #[test]
    #[should_panic(expected = "did not accept connections")]
    fn skip_if_missing_fails_on_other_errors() {
        let err = TestkitError::NotReady {
            name: "x",
            port: 1,
            waited: std::time::Duration::from_secs(1),
            log_tail: String::new(),
        };
        let _ = skip_if_missing::<()>("t", Err(err));
    }
}
