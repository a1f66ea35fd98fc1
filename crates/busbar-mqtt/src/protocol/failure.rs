//! Why a connection attempt failed or a live connection dropped, in busbar's terms.

use busbar_core::error::{ConnectError, ConnectErrorKind, OpError};

/// Why a connection attempt failed or a live connection dropped: the kind a caller of
/// `connect` matches on, and the reason in words.
pub(crate) struct ConnectionFailure {
    kind: ConnectErrorKind,
    reason: String,
}

impl ConnectionFailure {
    /// The reason, in words.
    pub(crate) fn reason(&self) -> &str {
        &self.reason
    }

    /// A connection this client closed on purpose to open it again (see `repair`).
    pub(super) fn renewed(reason: String) -> ConnectionFailure {
        ConnectionFailure { kind: ConnectErrorKind::Broker, reason }
    }

    /// The failure of connecting to `url` (shown without its password).
    pub(crate) fn into_connect_error(self, url: &str) -> ConnectError {
        OpError::new(self.kind, format!("not connected to {url}: {}", self.reason))
    }
}

/// Why a broker refused a connection, whichever version's code it sent.
fn refusal(
    bad_credentials: bool,
    not_authorized: bool,
    code: &dyn std::fmt::Debug,
) -> ConnectionFailure {
    let (kind, reason) = if bad_credentials {
        (ConnectErrorKind::Refused, "the broker refused the user name or password".to_owned())
    } else if not_authorized {
        (ConnectErrorKind::Refused, "the broker refused the connection: not authorized".to_owned())
    } else {
        (ConnectErrorKind::Broker, format!("the broker refused the connection: {code:?}"))
    };
    ConnectionFailure { kind, reason }
}

/// The kind of a failure that is not a refusal: TLS, a timeout, an unreachable broker.
fn classify(tls: bool, timeout: bool, io: bool, text: String) -> ConnectionFailure {
    // A certificate that does not verify can surface as an I/O or WebSocket error too.
    let kind = if tls || text.to_ascii_lowercase().contains("certificate") {
        ConnectErrorKind::Tls
    } else if timeout {
        ConnectErrorKind::TimedOut
    } else if io {
        ConnectErrorKind::Unreachable
    } else {
        ConnectErrorKind::Broker
    };
    ConnectionFailure { kind, reason: text }
}

pub(super) fn describe5(e: &rumqttc::v5::ConnectionError) -> ConnectionFailure {
    use rumqttc::v5::ConnectionError as E;
    use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as Code;
    match e {
        E::ConnectionRefused(code) => refusal(
            matches!(code, Code::BadUserNamePassword),
            matches!(code, Code::NotAuthorized),
            code,
        ),
        other => classify(
            matches!(other, E::Tls(_)),
            matches!(other, E::Timeout(_)),
            matches!(other, E::Io(_)),
            other.to_string(),
        ),
    }
}

pub(super) fn describe4(e: &rumqttc::ConnectionError) -> ConnectionFailure {
    use rumqttc::ConnectReturnCode as Code;
    use rumqttc::ConnectionError as E;
    match e {
        E::ConnectionRefused(code) => refusal(
            matches!(code, Code::BadUserNamePassword),
            matches!(code, Code::NotAuthorized),
            code,
        ),
        other => classify(
            matches!(other, E::Tls(_)),
            matches!(other, E::NetworkTimeout | E::FlushTimeout),
            matches!(other, E::Io(_)),
            other.to_string(),
        ),
    }
}
