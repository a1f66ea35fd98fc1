//! What can go wrong in the SERMAS dialect.

/// A SERMAS dialect error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SermasError {
    /// A template is not a topic with `:name` levels.
    #[error("SERMAS topic template {template:?}: {reason}")]
    Template {
        /// The template.
        template: String,
        /// What is wrong.
        reason: String,
    },
    /// A placeholder had no value (SERMAS: "Unmapped topic variable").
    #[error("unmapped topic variable :{placeholder} in {template:?}")]
    Unmapped {
        /// The template.
        template: String,
        /// The placeholder left over.
        placeholder: String,
    },
    /// A payload that is not a JSON object.
    #[error("SERMAS payload for {topic} must be a JSON object")]
    NotAnObject {
        /// Where it was going.
        topic: String,
    },
    /// The connection failed.
    #[error(transparent)]
    Busbar(#[from] busbar_core::Error),
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, SermasError>;

impl<K> From<busbar_core::error::OpError<K>> for SermasError
where
    busbar_core::Error: From<busbar_core::error::OpError<K>>,
{
    fn from(e: busbar_core::error::OpError<K>) -> Self {
        SermasError::Busbar(e.into())
    }
}
