//! [`RpcError`]: what a service's handler answers when it fails.

use serde::{Deserialize, Serialize};

/// An error a handler returns. It travels to the caller as an error reply and reaches it as a
/// [`RequestError`](super::RequestError) of kind
/// [`Remote`](super::RequestErrorKind::Remote) (or, from an action, a
/// [`GoalError`](super::GoalError) of kind [`Aborted`](super::GoalErrorKind::Aborted)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct RpcError {
    /// Machine-readable code, e.g. `invalid_argument`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

impl RpcError {
    /// The request could not be decoded.
    pub const BAD_REQUEST: &'static str = "bad_request";
    /// The handler failed unexpectedly (including a panic).
    pub const INTERNAL: &'static str = "internal";
    /// The service cannot take the request now.
    pub const UNAVAILABLE: &'static str = "unavailable";
    /// The caller's argument is not acceptable.
    pub const INVALID_ARGUMENT: &'static str = "invalid_argument";

    /// An error with `code` and `message`.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        RpcError { code: code.into(), message: message.into() }
    }

    /// [`RpcError::INVALID_ARGUMENT`] with `message`.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(Self::INVALID_ARGUMENT, message)
    }

    /// [`RpcError::INTERNAL`] with `message`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Self::INTERNAL, message)
    }
}
