//! What librdkafka calls back into: its log lines and errors (to `tracing` and the
//! connection's events), OAUTHBEARER tokens, delivery reports, and group rebalances.

use std::error::Error;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use busbar_core::auth::Token;
use busbar_core::error::{OpError, PublishError, PublishErrorKind};
use busbar_core::transport::ConnectionEvent;
use busbar_transport_kit::Meter;
use rdkafka::Message as _;
use rdkafka::client::{ClientContext, OAuthToken};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryResult, ProducerContext};
use tokio::sync::oneshot;

/// Whether the connection to the cluster is up, as librdkafka's errors and successes show
/// it, so `Disconnected` and `Reconnected` are announced once each.
#[derive(Default)]
pub(crate) struct Link {
    down: Mutex<bool>,
    /// The last error librdkafka reported (a failed TLS handshake, a refused login), which
    /// its own calls only report as a timeout.
    last_error: Mutex<Option<String>>,
    /// Told when the broker refused this client (a login or a TLS handshake), which no
    /// retry will change: connecting stops waiting then.
    pub(crate) refused: tokio::sync::Notify,
    /// The bootstrap servers, as events name them: a Kafka client talks to every broker
    /// that leads a partition it uses, so no single one is "the" server.
    pub(crate) servers: String,
}

impl Link {
    /// The link of a connection to the cluster reached through `servers`.
    pub(crate) fn new(servers: String) -> Link {
        Link { servers, ..Link::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, bool> {
        self.down.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every broker is unreachable.
    pub(crate) fn lost(&self, meter: &Meter, reason: String) {
        let mut down = self.lock();
        if !*down {
            *down = true;
            meter.announce(ConnectionEvent::Disconnected { reason });
        }
    }

    /// The last error librdkafka reported, if any.
    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A broker answered (a delivery confirmed, a record fetched).
    pub(crate) fn answered(&self, meter: &Meter) {
        let mut down = self.lock();
        if *down {
            *down = false;
            meter.announce(ConnectionEvent::Reconnected { server: self.servers.clone() });
        }
    }
}

/// The context every librdkafka client of one connection shares.
#[derive(Clone)]
pub(crate) struct Context {
    pub(crate) meter: Meter,
    pub(crate) link: Arc<Link>,
    /// The current OAUTHBEARER token, kept fresh by the connection's refresher.
    pub(crate) token: Option<Arc<Mutex<Token>>>,
}

impl ClientContext for Context {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn log(&self, level: RDKafkaLogLevel, facility: &str, line: &str) {
        // librdkafka says what it retries at warning level; busbar reports what it gives up
        // on through errors and events, so its lines are for whoever turns debugging on.
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
                tracing::warn!(facility, "librdkafka: {line}")
            }
            _ => tracing::debug!(facility, "librdkafka: {line}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            // A consequence, not a reason: the reason was reported before it.
            self.link.lost(&self.meter, format!("no Kafka broker answers: {reason}"));
        } else {
            *self.link.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(reason.to_owned());
            tracing::debug!(%error, "librdkafka: {reason}");
            if matches!(
                error.rdkafka_error_code(),
                Some(
                    RDKafkaErrorCode::Authentication
                        | RDKafkaErrorCode::SaslAuthenticationFailed
                        | RDKafkaErrorCode::SSL
                )
            ) {
                self.link.refused.notify_one();
            }
        }
    }

    fn generate_oauth_token(&self, _config: Option<&str>) -> Result<OAuthToken, Box<dyn Error>> {
        self.oauth_token().ok_or_else(|| "this connection has no token provider".into())
    }
}

impl Context {
    /// The provider's current token as librdkafka takes it; `None` without a provider.
    pub(crate) fn oauth_token(&self) -> Option<OAuthToken> {
        let cell = self.token.as_ref()?;
        let token = cell.lock().unwrap_or_else(|p| p.into_inner()).clone();
        // librdkafka wants the expiry as wall-clock milliseconds; a token without one is
        // given an hour and asked for again then.
        let left = token
            .expires_at
            .map(|at| at.saturating_duration_since(tokio::time::Instant::now()))
            .unwrap_or(Duration::from_secs(3600));
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let lifetime_ms = i64::try_from((now + left).as_millis()).unwrap_or(i64::MAX);
        Some(OAuthToken { token: token.value, principal_name: "busbar".into(), lifetime_ms })
    }
}

/// Readers without a group take librdkafka's rebalance handling as it is (they have no
/// rebalances).
impl ConsumerContext for Context {}

/// Where a publish's delivery report goes: to the caller awaiting it (QoS 1), or nowhere
/// but the counters (QoS 0).
pub(crate) type Confirm = Option<oneshot::Sender<Result<(), PublishError>>>;

impl ProducerContext for Context {
    type DeliveryOpaque = Box<Confirm>;

    fn delivery(&self, result: &DeliveryResult<'_>, confirm: Box<Confirm>) {
        let outcome = match result {
            Ok(_) => {
                self.link.answered(&self.meter);
                self.meter.published();
                Ok(())
            }
            Err((e, record)) => {
                let size = record.payload().map_or(0, <[u8]>::len);
                Err(publish_error(e, record.topic(), size))
            }
        };
        match (*confirm, outcome) {
            (Some(tx), outcome) => {
                let _ = tx.send(outcome);
            }
            (None, Ok(())) => {}
            (None, Err(e)) => {
                // At most once, and nobody waits: counted and logged, never silent.
                self.meter.publish_dropped();
                tracing::warn!(error = %e, "a QoS 0 publish did not reach the Kafka broker");
            }
        }
    }
}

/// A publish error for a librdkafka error about a record to `topic` of `size` bytes.
pub(crate) fn publish_error(e: &KafkaError, topic: &str, size: usize) -> PublishError {
    use RDKafkaErrorCode as C;
    match e.rdkafka_error_code() {
        Some(C::MessageSizeTooLarge) => OpError::new(
            PublishErrorKind::TooLarge,
            format!("a record of {size} bytes is larger than the Kafka broker takes"),
        ),
        Some(C::MessageTimedOut) => OpError::new(
            PublishErrorKind::TimedOut,
            format!("the Kafka broker did not confirm the record to {topic:?} in time"),
        ),
        Some(C::TopicAuthorizationFailed | C::ClusterAuthorizationFailed) => {
            OpError::refused(format!("the Kafka broker refused the record to {topic:?}: {e}"))
        }
        Some(C::UnknownTopicOrPartition | C::UnknownTopic | C::UnknownPartition) => {
            OpError::refused(format!("the Kafka broker has no topic {topic:?}: {e}"))
        }
        _ => OpError::broker("kafka", format!("the record to {topic:?} failed: {e}")),
    }
}
