//! What can go wrong getting a token.

/// An OIDC provider error. None of them carries a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OidcError {
    /// The settings cannot work (an issuer that is not an http(s) URL, an empty client id).
    #[error("OIDC settings: {0}")]
    Settings(String),
    /// The issuer could not be reached or did not answer in time.
    #[error("OIDC request to {url} failed: {reason}")]
    Http {
        /// The endpoint.
        url: String,
        /// What happened.
        reason: String,
    },
    /// The issuer answered with an error status.
    #[error("OIDC issuer refused the request to {url} with {status}: {detail}")]
    Refused {
        /// The endpoint.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The OAuth `error` and `error_description`, or the start of the body.
        detail: String,
    },
    /// The issuer's answer is not what OIDC specifies.
    #[error("OIDC issuer's answer from {url} is unusable: {reason}")]
    BadResponse {
        /// The endpoint.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl From<OidcError> for busbar_core::Error {
    fn from(e: OidcError) -> Self {
        busbar_core::Error::Connect(
            busbar_core::error::OpError::new(
                busbar_core::error::ConnectErrorKind::Credentials,
                format!("credentials: {e}"),
            )
            .with_source(e),
        )
    }
}
