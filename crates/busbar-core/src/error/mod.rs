//! busbar's errors: one type per operation, and [`Error`] for code that mixes them.
//!
//! Each operation says what it can fail with: connecting returns a [`ConnectError`],
//! publishing a [`PublishError`], subscribing a [`SubscribeError`], a request or RPC call a
//! [`RequestError`], an action goal a [`GoalError`], closing a [`CloseError`]. Each is an
//! [`OpError`] whose [`kind`](OpError::kind) a caller matches on (a request's
//! [`RequestErrorKind::TimedOut`] or [`NoResponders`](RequestErrorKind::NoResponders), a
//! publish's [`TooLarge`](PublishErrorKind::TooLarge)) and whose text names what was involved.
//! Every one converts into [`Error`], so `?` works across operations.

mod kinds;
mod op;
mod rpc;

pub use kinds::{
    CloseError, CloseErrorKind, ConnectError, ConnectErrorKind, GoalError, GoalErrorKind,
    PublishError, PublishErrorKind, RequestError, RequestErrorKind, SubscribeError,
    SubscribeErrorKind,
};
pub use op::{Common, OpError};
pub use rpc::RpcError;

use crate::codec::CodecError;
use crate::topic::TopicError;

/// A boxed error from a transport's underlying client library.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias used across busbar.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Any busbar error: what one of the operations failed with, or a problem with what was
/// given (a topic, a payload, settings).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Connecting failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),

    /// A publish was not done.
    #[error(transparent)]
    Publish(#[from] PublishError),

    /// A subscription was not made.
    #[error(transparent)]
    Subscribe(#[from] SubscribeError),

    /// A request or RPC call got no usable reply.
    #[error(transparent)]
    Request(#[from] RequestError),

    /// An action goal did not succeed.
    #[error(transparent)]
    Goal(#[from] GoalError),

    /// Closing could not finish.
    #[error(transparent)]
    Close(#[from] CloseError),

    /// A topic or filter failed validation.
    #[error(transparent)]
    Topic(#[from] TopicError),

    /// A payload could not be encoded or decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),

    /// Invalid settings given to a builder or in a configuration file.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The operating system refused something busbar needs (listening for signals).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    /// True when retrying the same operation later may succeed (deadlines, lost
    /// connections, nobody serving yet).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Connect(e) => {
                matches!(e.kind(), ConnectErrorKind::Unreachable | ConnectErrorKind::TimedOut)
            }
            Error::Publish(e) => {
                matches!(e.kind(), PublishErrorKind::NotConnected | PublishErrorKind::TimedOut)
            }
            Error::Subscribe(e) => {
                matches!(e.kind(), SubscribeErrorKind::NotConnected | SubscribeErrorKind::TimedOut)
            }
            Error::Request(e) => matches!(
                e.kind(),
                RequestErrorKind::TimedOut
                    | RequestErrorKind::NotConnected
                    | RequestErrorKind::NoResponders
            ),
            _ => false,
        }
    }

    /// The other side's error, when a service or an action handler answered with one.
    pub fn remote_error(&self) -> Option<&RpcError> {
        match self {
            Error::Request(e) => e.remote_error(),
            Error::Goal(e) => e.remote_error(),
            _ => None,
        }
    }

    /// True for a request or call that got no reply before its deadline.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Request(e) if e.kind() == RequestErrorKind::TimedOut)
    }

    /// True when the connection was closed by the user.
    pub fn is_closed(&self) -> bool {
        match self {
            Error::Publish(e) => e.kind() == PublishErrorKind::Closed,
            Error::Subscribe(e) => e.kind() == SubscribeErrorKind::Closed,
            Error::Request(e) => e.kind() == RequestErrorKind::Closed,
            _ => false,
        }
    }
}
