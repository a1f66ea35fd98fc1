//! The one error type of the busbar API.
//!
//! Every fallible operation returns [`Error`]. Variants say *what* went wrong in terms a user
//! can act on (which topic, which URL, which limit), and carry the underlying cause as a
//! `source` where there is one.

use std::time::Duration;

use crate::codec::CodecError;
use crate::topic::TopicError;

/// A boxed error from a transport's underlying client library.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias used across busbar.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in busbar.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A topic or filter failed validation, or cannot be expressed on a broker.
    #[error(transparent)]
    Topic(#[from] TopicError),

    /// A payload could not be encoded or decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),

    /// The transport cannot do what was asked; nothing was sent.
    #[error("the {transport} transport does not support {feature}")]
    Unsupported {
        /// Transport kind, e.g. `mem`, `mqtt`.
        transport: &'static str,
        /// What was asked for.
        feature: &'static str,
    },

    /// The connection was closed by the user; open a new one.
    #[error("the connection is closed")]
    Closed,

    /// The connection to the broker is down (it may come back).
    #[error("not connected to {url}: {reason}")]
    NotConnected {
        /// The broker URL, credentials removed.
        url: String,
        /// Why, as the transport saw it.
        reason: String,
    },

    /// A request got no reply before its deadline.
    #[error("request to {topic} got no reply within {timeout:?}")]
    Timeout {
        /// The request topic.
        topic: String,
        /// The deadline that passed.
        timeout: Duration,
    },

    /// Nobody is subscribed to the request topic, so no reply can come.
    #[error("no responder is listening on {topic}")]
    NoResponders {
        /// The request topic.
        topic: String,
    },

    /// The remote handler failed and said why (RPC error reply, aborted goal).
    #[error("remote error {}: {}", .0.code, .0.message)]
    Remote(crate::patterns::rpc::RpcError),

    /// An action server refused a goal.
    #[error("goal rejected: {reason}")]
    Rejected {
        /// The server's reason.
        reason: String,
    },

    /// The operation was canceled (for example an action goal that ended CANCELED).
    #[error("canceled")]
    Canceled,

    /// A message is larger than the transport or broker accepts.
    #[error("payload of {size} bytes exceeds the limit of {max} bytes")]
    PayloadTooLarge {
        /// Size of the rejected payload.
        size: usize,
        /// Largest accepted payload.
        max: usize,
    },

    /// A URL could not be understood.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given, credentials removed.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// No transport in this build handles the URL's scheme.
    #[error("no transport for {scheme}:// in this build (known: {known})")]
    UnknownScheme {
        /// The scheme asked for.
        scheme: String,
        /// Schemes this build knows, comma-separated.
        known: String,
    },

    /// Invalid settings given to a builder or configuration.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// Credentials could not be obtained (a token provider failed).
    #[error("credentials: {message}")]
    Auth {
        /// What went wrong, in words (never the secret itself).
        message: String,
        /// The provider's error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// The broker or its client library reported an error.
    #[error("{transport}: {message}")]
    Broker {
        /// Transport kind.
        transport: &'static str,
        /// What happened, in words.
        message: String,
        /// The client library's error, if any.
        #[source]
        source: Option<BoxError>,
    },
}

impl Error {
    /// True when retrying the same operation later may succeed (timeouts, lost connections).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Timeout { .. } | Error::NotConnected { .. } | Error::NoResponders { .. }
        )
    }
}
