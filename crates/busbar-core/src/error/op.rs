//! [`OpError`]: the error of one operation, with a kind to match on.

use std::fmt;

use super::BoxError;

/// What went wrong in one operation (connecting, publishing, subscribing, a request, a goal,
/// closing): a `kind` a caller matches on without reading the text, a sentence for people
/// that names what was involved (the topic, the URL without its password, the limit), and
/// the underlying cause where there is one.
///
/// Each operation has its own kinds, so a caller sees what that operation can fail with:
/// [`PublishError`](super::PublishError) is `OpError<PublishErrorKind>`, and so on.
pub struct OpError<K> {
    kind: K,
    message: String,
    source: Option<BoxError>,
}

impl<K: Copy> OpError<K> {
    /// An error of `kind` described by `message`.
    pub fn new(kind: K, message: impl Into<String>) -> Self {
        OpError { kind, message: message.into(), source: None }
    }

    /// The same error with `source` as its cause.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> K {
        self.kind
    }

    /// The description, without the cause.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same failure as another operation's kind (a request that failed while
    /// publishing, say), keeping the message and the cause.
    pub fn map_kind<L: Copy>(self, f: impl FnOnce(K) -> L) -> OpError<L> {
        OpError { kind: f(self.kind), message: self.message, source: self.source }
    }

    /// The cause, if it is a `T`.
    pub fn source_as<T: std::error::Error + 'static>(&self) -> Option<&T> {
        self.source.as_deref().and_then(|s| s.downcast_ref::<T>())
    }
}

impl<K: fmt::Debug> fmt::Debug for OpError<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("OpError");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(s) = &self.source {
            d.field("source", s);
        }
        d.finish()
    }
}

impl<K> fmt::Display for OpError<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<K: fmt::Debug> std::error::Error for OpError<K> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|s| s as &(dyn std::error::Error + 'static))
    }
}

/// Failures every message operation (publish, subscribe, request) can meet, for code shared
/// between them (the transport kit) that makes errors without knowing which operation it
/// serves. Each operation's kind converts from these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Common {
    /// The connection was closed by the user.
    Closed,
    /// The broker cannot be reached now.
    NotConnected,
    /// The transport cannot do what was asked.
    Unsupported,
    /// The message is larger than the transport or broker accepts.
    TooLarge,
    /// The broker refused it.
    Refused,
    /// It did not complete in time.
    TimedOut,
    /// The broker or its client library failed in a way not listed here.
    Broker,
}

impl<K: Copy + From<Common>> OpError<K> {
    /// The connection was closed by the user.
    pub fn closed() -> Self {
        Self::new(Common::Closed.into(), "the connection is closed")
    }

    /// The broker at `url` (shown without its password) cannot be reached now.
    pub fn not_connected(url: &str, reason: impl fmt::Display) -> Self {
        Self::new(Common::NotConnected.into(), format!("not connected to {url}: {reason}"))
    }

    /// The `transport` cannot do `feature`; nothing was sent.
    pub fn unsupported(transport: &str, feature: &str) -> Self {
        Self::new(
            Common::Unsupported.into(),
            format!("the {transport} transport does not support {feature}"),
        )
    }

    /// A message of `size` bytes is over the limit of `max`.
    pub fn too_large(size: usize, max: usize) -> Self {
        Self::new(
            Common::TooLarge.into(),
            format!("payload of {size} bytes exceeds the limit of {max} bytes"),
        )
    }

    /// The broker refused; `message` says what and why.
    pub fn refused(message: impl Into<String>) -> Self {
        Self::new(Common::Refused.into(), message)
    }

    /// The broker (or its client library) on `transport` failed: `message` says how.
    pub fn broker(transport: &str, message: impl fmt::Display) -> Self {
        Self::new(Common::Broker.into(), format!("{transport}: {message}"))
    }
}
