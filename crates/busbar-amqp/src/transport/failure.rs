//! lapin's failures in busbar's terms: the words, and the kind a caller matches on. At the
//! bottom with the state; every other room maps its errors here, at the site.

use busbar_core::error::{Common, ConnectErrorKind, OpError};
use lapin::ErrorKind;
use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};

/// The transport's name in broker errors.
pub(super) const TRANSPORT: &str = "amqp";

/// What the broker refused at login.
enum Refusal {
    /// The user name and password (or token).
    Login,
    /// The virtual host, for this user.
    VirtualHost,
}

fn refusal(e: &lapin::Error) -> Option<Refusal> {
    if let ErrorKind::ProtocolError(p) = e.kind() {
        match p.kind() {
            AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) => return Some(Refusal::Login),
            AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED) => return Some(Refusal::VirtualHost),
            _ => {}
        }
    }
    // The broker's own words, however lapin wrapped them (its reply texts start with the
    // code's name).
    let text = e.to_string();
    if text.contains("ACCESS_REFUSED") {
        Some(Refusal::Login)
    } else if text.contains("NOT_ALLOWED") {
        Some(Refusal::VirtualHost)
    } else {
        None
    }
}

/// Words for a lapin error, with credential failures said plainly.
pub(super) fn describe(e: &lapin::Error) -> String {
    let text = e.to_string();
    match refusal(e) {
        Some(Refusal::Login) => {
            format!("the broker refused the user name or password (or token): {text}")
        }
        Some(Refusal::VirtualHost) => format!("the user may not use this virtual host: {text}"),
        None => text,
    }
}

/// Why connecting failed, from lapin's error: a refused login or virtual host, TLS, a
/// timeout, an unreachable broker, or the broker's own failure.
pub(super) fn connect_kind(e: &lapin::Error) -> ConnectErrorKind {
    if refusal(e).is_some() {
        return ConnectErrorKind::Refused;
    }
    match e.kind() {
        ErrorKind::IOError(io) => {
            // rustls reports through I/O errors: a certificate that does not verify, an
            // alert from the server, or a server that does not speak TLS at all.
            let text = io.to_string().to_ascii_lowercase();
            let tls = ["certificate", "tls", "handshake", "alert", "corrupt message"];
            if tls.iter().any(|w| text.contains(w)) {
                ConnectErrorKind::Tls
            } else if io.kind() == std::io::ErrorKind::TimedOut {
                ConnectErrorKind::TimedOut
            } else {
                ConnectErrorKind::Unreachable
            }
        }
        ErrorKind::MissingHeartbeatError => ConnectErrorKind::TimedOut,
        _ => ConnectErrorKind::Broker,
    }
}

/// What a failed operation on a live connection means: the connection went (the caller
/// may try again once it is back), the broker refused, or it failed otherwise.
pub(super) fn common(e: &lapin::Error) -> Common {
    match e.kind() {
        ErrorKind::ProtocolError(p) => match p.kind() {
            AMQPErrorKind::Soft(AMQPSoftError::CONTENTTOOLARGE) => Common::TooLarge,
            AMQPErrorKind::Soft(_) => Common::Refused,
            AMQPErrorKind::Hard(AMQPHardError::CONNECTIONFORCED) => Common::NotConnected,
            AMQPErrorKind::Hard(_) => Common::Broker,
        },
        ErrorKind::IOError(_)
        | ErrorKind::InvalidChannel(_)
        | ErrorKind::InvalidChannelState(..)
        | ErrorKind::InvalidConnectionState(_)
        | ErrorKind::MissingHeartbeatError => Common::NotConnected,
        _ => Common::Broker,
    }
}

/// `e` while doing `what`, as an error of operation kind `K`.
pub(super) fn op_error<K: Copy + From<Common>>(what: &str, e: lapin::Error) -> OpError<K> {
    OpError::new(common(&e).into(), format!("{TRANSPORT}: {what}: {}", describe(&e))).with_source(e)
}

/// A failure of the broker or of lapin without an error of lapin's, as operation kind `K`.
pub(super) fn broker<K: Copy + From<Common>>(message: impl std::fmt::Display) -> OpError<K> {
    OpError::broker(TRANSPORT, message)
}
