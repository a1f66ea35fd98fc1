//! The machine's shared loopback brokers.

use std::fmt;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::current_test_name;

/// How long [`shared_broker`] waits for a TCP connection before declaring a broker
/// unreachable.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The kinds of broker busbar has bindings for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BrokerKind {
    /// MQTT (Mosquitto).
    Mqtt,
    /// AMQP 0-9-1 (RabbitMQ).
    Amqp,
    /// Redis.
    Redis,
    /// NATS.
    Nats,
    /// Kafka (a Tansu broker: no Kafka service is installed with the others, so
    /// `scripts/test-all` starts one on 127.0.0.1:9092).
    Kafka,
}

impl BrokerKind {
    /// Every kind of the machine's standard services, in a fixed order (Kafka, started by
    /// `scripts/test-all` rather than installed as a service, is not among them).
    pub const ALL: [BrokerKind; 4] =
        [BrokerKind::Mqtt, BrokerKind::Amqp, BrokerKind::Redis, BrokerKind::Nats];

    /// Every kind the tests reach: the standard services and the Kafka broker that
    /// `scripts/test-all` starts.
    pub const EVERY: [BrokerKind; 5] = [
        BrokerKind::Mqtt,
        BrokerKind::Amqp,
        BrokerKind::Redis,
        BrokerKind::Nats,
        BrokerKind::Kafka,
    ];

    /// A short lower-case name: `mqtt`, `amqp`, `redis`, `nats` or `kafka`.
    pub fn name(self) -> &'static str {
        match self {
            BrokerKind::Mqtt => "mqtt",
            BrokerKind::Amqp => "amqp",
            BrokerKind::Redis => "redis",
            BrokerKind::Nats => "nats",
            BrokerKind::Kafka => "kafka",
        }
    }

    /// The environment variable that overrides this kind's shared broker URL, e.g.
    /// `BUSBAR_TEST_MQTT_URL`.
    pub fn env_var(self) -> &'static str {
        match self {
            BrokerKind::Mqtt => "BUSBAR_TEST_MQTT_URL",
            BrokerKind::Amqp => "BUSBAR_TEST_AMQP_URL",
            BrokerKind::Redis => "BUSBAR_TEST_REDIS_URL",
            BrokerKind::Nats => "BUSBAR_TEST_NATS_URL",
            BrokerKind::Kafka => "BUSBAR_TEST_KAFKA_URL",
        }
    }

    /// The URL of this kind's standard loopback service.
    pub fn default_url(self) -> &'static str {
        match self {
            BrokerKind::Mqtt => "mqtt://127.0.0.1:1883",
            BrokerKind::Amqp => "amqp://guest:guest@127.0.0.1:5672/%2f",
            BrokerKind::Redis => "redis://127.0.0.1:6379",
            BrokerKind::Nats => "nats://127.0.0.1:4222",
            BrokerKind::Kafka => "kafka://127.0.0.1:9092",
        }
    }

    /// The protocol's standard port, used when a URL names none.
    pub fn default_port(self) -> u16 {
        match self {
            BrokerKind::Mqtt => 1883,
            BrokerKind::Amqp => 5672,
            BrokerKind::Redis => 6379,
            BrokerKind::Nats => 4222,
            BrokerKind::Kafka => 9092,
        }
    }
}

impl fmt::Display for BrokerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A reachable broker shared by all tests on the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedBroker {
    kind: BrokerKind,
    url: String,
    host: String,
    port: u16,
}

impl SharedBroker {
    /// The kind of broker.
    pub fn kind(&self) -> BrokerKind {
        self.kind
    }

    /// The URL to connect to, including any credentials it carries.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The host part of the URL (without IPv6 brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port the broker was reached on.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for SharedBroker {
    /// Shows the kind and the URL with any password hidden.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} broker at {}", self.kind, redact(&self.url))
    }
}

/// The shared broker of `kind`, if reachable; otherwise [`skip`](crate::skip) the current test.
///
/// The URL is the kind's override variable ([`BrokerKind::env_var`]) when set and non-empty,
/// else [`BrokerKind::default_url`]. The broker counts as reachable when a TCP connection to
/// its host and port succeeds within [`PROBE_TIMEOUT`].
///
/// The test name in the skip message is the current thread's name, which libtest sets to
/// the test's path; use [`shared_broker_for`] to name the test explicitly.
///
/// # Panics
///
/// Through [`skip`](crate::skip), when the broker is unreachable and brokers are required.
#[track_caller]
pub fn shared_broker(kind: BrokerKind) -> impl Future<Output = Option<SharedBroker>> {
    // Read the name here: the future may be polled on another thread.
    let test = current_test_name();
    let location = std::panic::Location::caller();
    async move { probe(&test, kind, location).await }
}

/// Like [`shared_broker`], with the test's name given explicitly for the skip message.
///
/// # Panics
///
/// Through [`skip`](crate::skip), when the broker is unreachable and brokers are required.
#[track_caller]
pub fn shared_broker_for(
    test: &str,
    kind: BrokerKind,
) -> impl Future<Output = Option<SharedBroker>> {
    let test = test.to_owned();
    let location = std::panic::Location::caller();
    async move { probe(&test, kind, location).await }
}

async fn probe(
    test: &str,
    kind: BrokerKind,
    location: &'static std::panic::Location<'static>,
) -> Option<SharedBroker> {
    let (url, origin) = match std::env::var(kind.env_var()) {
        Ok(url) if !url.trim().is_empty() => (url.trim().to_owned(), kind.env_var()),
        _ => (kind.default_url().to_owned(), "default"),
    };
    probe_url(test, kind, url, origin, location).await
}

async fn probe_url(
    test: &str,
    kind: BrokerKind,
    url: String,
    origin: &str,
    location: &'static std::panic::Location<'static>,
) -> Option<SharedBroker> {
    let unavailable = |why: String| {
        skip_at(test, &why, location);
        None
    };
    let Some((host, port)) = host_port(&url, kind.default_port()) else {
        return unavailable(format!(
            "{kind} broker URL {} ({origin}) has no usable host",
            redact(&url)
        ));
    };
    let connect = TcpStream::connect((host.as_str(), port));
    match tokio::time::timeout(PROBE_TIMEOUT, connect).await {
        Ok(Ok(_stream)) => Some(SharedBroker { kind, url, host, port }),
        Ok(Err(err)) => unavailable(format!(
            "{kind} broker at {} ({origin}) is not reachable: {err}",
            redact(&url)
        )),
        Err(_) => unavailable(format!(
            "{kind} broker at {} ({origin}) did not accept a connection within {PROBE_TIMEOUT:?}",
            redact(&url)
        )),
    }
}

/// [`skip`](crate::skip), but naming the caller of [`shared_broker`] in the panic message, since a
/// panic inside the future cannot point at it.
fn skip_at(test: &str, why: &str, location: &'static std::panic::Location<'static>) {
    let message = format!("SKIPPED: {test}: {why}");
    eprintln!("{message}");
    if crate::brokers_required() {
        panic!(
            "{message} ({}=1, so a missing broker is a failure; called at {location})",
            crate::REQUIRE_BROKERS_ENV
        );
    }
}

/// Extract `(host, port)` from `scheme://[user[:password]@]host[:port][/path]`.
fn host_port(url: &str, default_port: u16) -> Option<(String, u16)> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(port) => port.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        (host, port)
    } else {
        match hostport.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().ok()?),
            None => (hostport, default_port),
        }
    };
    if host.is_empty() {
        return None;
    }
    Some((host.to_owned(), port))
}

/// The URL with the password (if any) replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, hostport)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{scheme}://{user}:***@{hostport}{tail}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_default_urls() {
        for kind in BrokerKind::ALL {
            let (host, port) = host_port(kind.default_url(), 1).expect("default URL parses");
            assert_eq!(host, "127.0.0.1");
            assert_eq!(port, kind.default_port());
        }
    }

    #[test]
    fn parses_unusual_urls() {
        assert_eq!(host_port("redis://[::1]:7000/0", 6379), Some(("::1".to_owned(), 7000)));
        assert_eq!(host_port("nats://localhost", 4222), Some(("localhost".to_owned(), 4222)));
        assert_eq!(host_port("amqp://u:p@h/vhost", 5672), Some(("h".to_owned(), 5672)));
        assert_eq!(host_port("mqtt://:1883", 1883), None);
        assert_eq!(host_port("mqtt://h:notaport", 1883), None);
    }

    #[test]
    fn unreachable_broker_skips_or_fails() {
        let port = crate::free_port().expect("free port");
        let url = format!("redis://127.0.0.1:{port}");
        let outcome = std::panic::catch_unwind(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(probe_url(
                "unit",
                BrokerKind::Redis,
                url,
                "test",
                std::panic::Location::caller(),
            ))
        });
        if crate::brokers_required() {
            let panic = outcome.expect_err("required brokers turn a skip into a panic");
            let message = panic.downcast_ref::<String>().expect("panic message is a String");
            assert!(message.starts_with("SKIPPED: unit: redis broker at"), "{message}");
        } else {
            assert_eq!(outcome.expect("no panic when not required"), None);
        }
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("mqtt://127.0.0.1:1883"), "mqtt://127.0.0.1:1883");
    }
}
