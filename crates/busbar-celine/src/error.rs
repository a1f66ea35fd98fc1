//! What can go wrong in the CELINE dialect.

/// A CELINE dialect error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CelineError {
    /// CELINE payloads are JSON objects.
    #[error("CELINE payload for {topic} must be a JSON object")]
    NotAnObject {
        /// Where it was going.
        topic: String,
    },
    /// The payload could not be serialized.
    #[error("CELINE payload for {topic} cannot be serialized: {reason}")]
    Serialize {
        /// Where it was going.
        topic: String,
        /// Why.
        reason: String,
    },
    /// The connection failed.
    #[error(transparent)]
    Busbar(#[from] busbar_core::Error),
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, CelineError>;

impl<K> From<busbar_core::error::OpError<K>> for CelineError
where
    busbar_core::Error: From<busbar_core::error::OpError<K>>,
{
    fn from(e: busbar_core::error::OpError<K>) -> Self {
        CelineError::Busbar(e.into())
    }
}
