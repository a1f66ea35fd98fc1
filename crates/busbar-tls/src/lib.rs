//! TLS for busbar's transports: the settings every secure URL takes (`ca`, `cert`, `key`) and
//! the rustls client configuration built from them.
//!
//! The configuration always uses the ring provider, handed to it directly rather than
//! installed process-wide, so busbar works whatever else the application links and never
//! needs a default provider to exist. The server's certificate is always verified: against
//! `ca` when given, the system's roots otherwise.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use busbar_core::error::{ConnectError, ConnectErrorKind, OpError};
use busbar_transport_kit::Params;

/// Why TLS settings cannot be used: a connection error of kind `Config`.
pub type Result<T> = std::result::Result<T, ConnectError>;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

/// How to secure a connection, from the URL parameters `ca`, `cert` and `key`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM file of the certificate authorities to trust instead of the system's.
    pub ca: Option<PathBuf>,
    /// PEM file of the client certificate (chain), for servers that verify clients.
    pub cert: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    pub key: Option<PathBuf>,
}

impl TlsSettings {
    /// The URL parameters these settings take.
    pub const PARAMETERS: [&'static str; 3] = ["ca", "cert", "key"];

    /// Takes the URL parameter `name` if it is one of [`PARAMETERS`](Self::PARAMETERS);
    /// returns false for any other.
    pub fn set(&mut self, name: &str, value: &str) -> bool {
        let slot = match name {
            "ca" => &mut self.ca,
            "cert" => &mut self.cert,
            "key" => &mut self.key,
            _ => return false,
        };
        *slot = Some(PathBuf::from(value));
        true
    }

    /// The settings a URL's `ca`, `cert` and `key` parameters give: `Some` for a `secure`
    /// scheme (the system's roots when none is given), `None` for a plain one, which may take
    /// none of them.
    pub fn from_params(params: &mut Params, secure: bool) -> Result<Option<TlsSettings>> {
        let mut tls = TlsSettings::default();
        for name in Self::PARAMETERS {
            if let Some(path) = params.path(name) {
                if !secure {
                    return Err(params
                        .refuse(format!("{name} needs a TLS connection: use the secure scheme")));
                }
                tls.set(name, &path.to_string_lossy());
            }
        }
        if let Some(problem) = tls.problem() {
            return Err(params.refuse(problem));
        }
        Ok(secure.then_some(tls))
    }

    /// Why these settings cannot work, if they cannot: a certificate without its key or the
    /// other way round.
    pub fn problem(&self) -> Option<&'static str> {
        (self.cert.is_some() != self.key.is_some())
            .then_some("a client certificate needs both cert and key")
    }
}

fn tls_error(message: String) -> ConnectError {
    OpError::new(ConnectErrorKind::Config, format!("TLS: {message}"))
}

/// Reads a whole file named in the settings, with an error that says which and why.
pub fn read(what: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| tls_error(format!("cannot read the {what} {}: {e}", path.display())))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_error(format!("cannot read certificates from {}: {e}", path.display())))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| tls_error(format!("bad certificate in {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(tls_error(format!("no certificate in {}", path.display())));
    }
    Ok(certs)
}

/// Builds the client configuration for `settings`.
pub fn client_config(settings: &TlsSettings) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    match &settings.ca {
        Some(ca) => {
            for cert in read_certs(ca)? {
                roots.add(cert).map_err(|e| {
                    tls_error(format!("unusable CA certificate in {}: {e}", ca.display()))
                })?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                // A system store may hold certificates rustls cannot use; skip those.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(tls_error(
                    "no trusted root certificates on this system; give ca=".into(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(e.to_string()))?
        .with_root_certificates(roots);
    let config = match (&settings.cert, &settings.key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                tls_error(format!("cannot read the private key {}: {e}", key.display()))
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| tls_error(format!("client certificate and key do not fit: {e}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_its_parameters_and_names_what_is_missing() {
        let mut s = TlsSettings::default();
        assert!(s.set("ca", "/c.pem") && s.set("cert", "/m.pem"));
        assert!(!s.set("colour", "red"));
        assert_eq!(s.problem(), Some("a client certificate needs both cert and key"));
        assert!(s.set("key", "/m.key"));
        assert_eq!(s.problem(), None);
    }

    #[test]
    fn unreadable_files_are_named() {
        let s = TlsSettings { ca: Some("/nonexistent/ca.pem".into()), ..Default::default() };
        let err = client_config(&s).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
