//! Configuration errors, worded as CSTBox words them.

/// A gateway that cannot be configured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The configuration is wrong: `where_` says which rule.
    #[error("{where_}: {reason}")]
    Configuration {
        /// The rule or section.
        where_: String,
        /// CSTBox's words for the problem (incomplete rule, empty member(s) found, ...).
        reason: String,
    },
    /// A connection failed.
    #[error(transparent)]
    Busbar(#[from] busbar_core::Error),
}

pub(crate) fn config(where_: impl Into<String>, reason: impl Into<String>) -> GatewayError {
    GatewayError::Configuration { where_: where_.into(), reason: reason.into() }
}

impl<K> From<busbar_core::error::OpError<K>> for GatewayError
where
    busbar_core::Error: From<busbar_core::error::OpError<K>>,
{
    fn from(e: busbar_core::error::OpError<K>) -> Self {
        GatewayError::Busbar(e.into())
    }
}
