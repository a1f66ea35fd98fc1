//! What can go wrong on the commlib wire.

/// A commlib profile error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommlibError {
    /// A name commlib would refuse (or that cannot be mapped to the transport).
    #[error("invalid commlib name {name:?}: {reason}")]
    Name {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: String,
    },
    /// A body that is not what the commlib wire carries.
    #[error("commlib body on {topic}: {reason}")]
    Body {
        /// Where it came from or was going.
        topic: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No reply within the deadline.
    #[error("no reply from commlib service {name} within {timeout:?}")]
    Timeout {
        /// The service's commlib name.
        name: String,
        /// The deadline.
        timeout: std::time::Duration,
    },
    /// The underlying busbar connection failed.
    #[error(transparent)]
    Busbar(#[from] busbar_core::Error),
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, CommlibError>;

impl<K> From<busbar_core::error::OpError<K>> for CommlibError
where
    busbar_core::Error: From<busbar_core::error::OpError<K>>,
{
    fn from(e: busbar_core::error::OpError<K>) -> Self {
        CommlibError::Busbar(e.into())
    }
}
