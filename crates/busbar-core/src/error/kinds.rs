//! What each operation can fail with.

use super::op::{Common, OpError};
use super::rpc::RpcError;
use crate::codec::CodecError;
use crate::topic::TopicError;

/// Connecting failed.
pub type ConnectError = OpError<ConnectErrorKind>;
/// A publish was not done: the message did not reach the broker, or the broker did not
/// confirm it at the QoS asked for.
pub type PublishError = OpError<PublishErrorKind>;
/// A subscription was not made.
pub type SubscribeError = OpError<SubscribeErrorKind>;
/// A request (or an RPC call) got no reply it could use.
pub type RequestError = OpError<RequestErrorKind>;
/// An action goal did not succeed.
pub type GoalError = OpError<GoalErrorKind>;
/// Closing found work that could not be finished.
pub type CloseError = OpError<CloseErrorKind>;

/// Why connecting failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectErrorKind {
    /// The URL or one of its parameters is wrong; trying again will not help.
    InvalidUrl,
    /// No transport in this build handles the URL's scheme.
    UnknownScheme,
    /// The options ask for something the transport cannot do (a required last will where the
    /// broker has none).
    Unsupported,
    /// Local settings cannot be used: an unreadable TLS or credentials file, a name the
    /// broker cannot take.
    Config,
    /// The token provider gave no token.
    Credentials,
    /// The broker refused the login (user name, password or token) or the authorisation.
    Refused,
    /// TLS failed: the handshake, or the server's certificate did not verify.
    Tls,
    /// The broker could not be reached (refused, reset, unknown host).
    Unreachable,
    /// No answer in time.
    TimedOut,
    /// The broker or its client library failed in another way.
    Broker,
}

/// Why a publish was not done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishErrorKind {
    /// The connection was closed by the user.
    Closed,
    /// The broker cannot be reached now.
    NotConnected,
    /// The transport cannot do what the message asks (retained, expiry, a QoS above what the
    /// broker guarantees).
    Unsupported,
    /// The message is larger than the transport or broker accepts.
    TooLarge,
    /// The topic cannot be used (invalid, or not expressible on this broker).
    InvalidTopic,
    /// The payload could not be encoded.
    Codec,
    /// The broker refused the message.
    Refused,
    /// The broker did not confirm it in time.
    TimedOut,
    /// The broker or its client library failed in another way.
    Broker,
}

/// Why a subscription was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscribeErrorKind {
    /// The connection was closed by the user.
    Closed,
    /// The broker cannot be reached now.
    NotConnected,
    /// The transport cannot do what the options ask (a queue group, no-local).
    Unsupported,
    /// The filter (or queue group name) cannot be used on this broker.
    InvalidFilter,
    /// The broker refused the subscription.
    Refused,
    /// The broker did not confirm it in time.
    TimedOut,
    /// The broker or its client library failed in another way.
    Broker,
}

/// Why a request (or an RPC call) got no usable reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestErrorKind {
    /// No reply came before the deadline.
    TimedOut,
    /// Nobody serves the topic, so no reply can come.
    NoResponders,
    /// The service answered with an error: [`OpError::remote_error`] has it.
    Remote,
    /// The connection was closed by the user.
    Closed,
    /// The broker cannot be reached now.
    NotConnected,
    /// The transport cannot send this request.
    Unsupported,
    /// The request is larger than the transport or broker accepts.
    TooLarge,
    /// The topic cannot be used.
    InvalidTopic,
    /// The request could not be encoded, or the reply decoded.
    Codec,
    /// The broker refused the request.
    Refused,
    /// The broker or its client library failed in another way.
    Broker,
}

/// Why an action goal did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GoalErrorKind {
    /// The server refused the goal; the message has its reason.
    Rejected,
    /// The goal ended CANCELED.
    Canceled,
    /// The goal ended ABORTED: [`OpError::remote_error`] has the handler's error.
    Aborted,
    /// The outcome can no longer come (the client or its connection went first).
    Lost,
    /// Sending the goal, or the cancel request, failed this way.
    Request(RequestErrorKind),
}

/// What closing could not finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseErrorKind {
    /// Messages published before the close were not confirmed by the broker.
    Unconfirmed,
    /// The broker or its client library failed while closing.
    Broker,
}

macro_rules! common_kinds {
    ($kind:ident { $($common:ident => $own:ident),* $(,)? }) => {
        impl From<Common> for $kind {
            fn from(c: Common) -> Self {
                match c {
                    $(Common::$common => $kind::$own,)*
                }
            }
        }
    };
}

common_kinds!(PublishErrorKind {
    Closed => Closed, NotConnected => NotConnected, Unsupported => Unsupported,
    TooLarge => TooLarge, Refused => Refused, TimedOut => TimedOut, Broker => Broker,
});
common_kinds!(SubscribeErrorKind {
    Closed => Closed, NotConnected => NotConnected, Unsupported => Unsupported,
    TooLarge => InvalidFilter, Refused => Refused, TimedOut => TimedOut, Broker => Broker,
});
common_kinds!(RequestErrorKind {
    Closed => Closed, NotConnected => NotConnected, Unsupported => Unsupported,
    TooLarge => TooLarge, Refused => Refused, TimedOut => TimedOut, Broker => Broker,
});
common_kinds!(ConnectErrorKind {
    Closed => Broker, NotConnected => Unreachable, Unsupported => Unsupported,
    TooLarge => Config, Refused => Refused, TimedOut => TimedOut, Broker => Broker,
});

impl From<PublishErrorKind> for RequestErrorKind {
    fn from(k: PublishErrorKind) -> Self {
        match k {
            PublishErrorKind::Closed => RequestErrorKind::Closed,
            PublishErrorKind::NotConnected => RequestErrorKind::NotConnected,
            PublishErrorKind::Unsupported => RequestErrorKind::Unsupported,
            PublishErrorKind::TooLarge => RequestErrorKind::TooLarge,
            PublishErrorKind::InvalidTopic => RequestErrorKind::InvalidTopic,
            PublishErrorKind::Codec => RequestErrorKind::Codec,
            PublishErrorKind::Refused => RequestErrorKind::Refused,
            // Sent, but not confirmed before the request's own deadline.
            PublishErrorKind::TimedOut => RequestErrorKind::TimedOut,
            PublishErrorKind::Broker => RequestErrorKind::Broker,
        }
    }
}

impl From<SubscribeErrorKind> for RequestErrorKind {
    fn from(k: SubscribeErrorKind) -> Self {
        match k {
            SubscribeErrorKind::Closed => RequestErrorKind::Closed,
            SubscribeErrorKind::NotConnected => RequestErrorKind::NotConnected,
            SubscribeErrorKind::Unsupported => RequestErrorKind::Unsupported,
            SubscribeErrorKind::InvalidFilter => RequestErrorKind::InvalidTopic,
            SubscribeErrorKind::Refused => RequestErrorKind::Refused,
            SubscribeErrorKind::TimedOut => RequestErrorKind::TimedOut,
            SubscribeErrorKind::Broker => RequestErrorKind::Broker,
        }
    }
}

impl From<PublishError> for RequestError {
    fn from(e: PublishError) -> Self {
        e.map_kind(RequestErrorKind::from)
    }
}

impl From<SubscribeError> for RequestError {
    fn from(e: SubscribeError) -> Self {
        e.map_kind(RequestErrorKind::from)
    }
}

impl From<RequestError> for GoalError {
    fn from(e: RequestError) -> Self {
        e.map_kind(GoalErrorKind::Request)
    }
}

impl From<TopicError> for PublishError {
    fn from(e: TopicError) -> Self {
        OpError::new(PublishErrorKind::InvalidTopic, e.to_string()).with_source(e)
    }
}

impl From<TopicError> for SubscribeError {
    fn from(e: TopicError) -> Self {
        OpError::new(SubscribeErrorKind::InvalidFilter, e.to_string()).with_source(e)
    }
}

impl From<TopicError> for RequestError {
    fn from(e: TopicError) -> Self {
        OpError::new(RequestErrorKind::InvalidTopic, e.to_string()).with_source(e)
    }
}

impl From<TopicError> for GoalError {
    fn from(e: TopicError) -> Self {
        RequestError::from(e).into()
    }
}

impl From<CodecError> for PublishError {
    fn from(e: CodecError) -> Self {
        OpError::new(PublishErrorKind::Codec, e.to_string()).with_source(e)
    }
}

impl From<CodecError> for RequestError {
    fn from(e: CodecError) -> Self {
        OpError::new(RequestErrorKind::Codec, e.to_string()).with_source(e)
    }
}

impl RequestError {
    /// The service's error reply, as an error of kind [`RequestErrorKind::Remote`].
    pub fn remote(error: RpcError) -> Self {
        OpError::new(RequestErrorKind::Remote, format!("remote error {error}")).with_source(error)
    }

    /// No reply to the request on `topic` within `timeout`.
    pub fn timed_out(topic: &str, timeout: std::time::Duration) -> Self {
        OpError::new(
            RequestErrorKind::TimedOut,
            format!("request to {topic} got no reply within {timeout:?}"),
        )
    }

    /// Nobody listens on `topic`.
    pub fn no_responders(topic: &str) -> Self {
        OpError::new(
            RequestErrorKind::NoResponders,
            format!("no responder is listening on {topic}"),
        )
    }
}

impl<K: Copy> OpError<K> {
    /// The service's (or action handler's) error, when the other side answered with one.
    pub fn remote_error(&self) -> Option<&RpcError> {
        self.source_as::<RpcError>()
    }
}

impl GoalError {
    /// The server refused the goal, saying `reason`.
    pub fn rejected(reason: &str) -> Self {
        OpError::new(GoalErrorKind::Rejected, format!("goal rejected: {reason}"))
    }

    /// The goal ended CANCELED.
    pub fn canceled() -> Self {
        OpError::new(GoalErrorKind::Canceled, "the goal was canceled")
    }

    /// The goal ended ABORTED with the handler's `error`.
    pub fn aborted(error: RpcError) -> Self {
        OpError::new(GoalErrorKind::Aborted, format!("goal aborted: {error}")).with_source(error)
    }

    /// The outcome can no longer come.
    pub fn lost() -> Self {
        OpError::new(GoalErrorKind::Lost, "the goal's outcome was lost: the client went away")
    }
}

impl ConnectError {
    /// `url` (shown without its password) cannot be understood: `reason` says why.
    pub fn invalid_url(url: &str, reason: impl std::fmt::Display) -> Self {
        OpError::new(ConnectErrorKind::InvalidUrl, format!("invalid URL {url:?}: {reason}"))
    }
}
