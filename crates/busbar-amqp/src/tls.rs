//! TLS for `amqps://`: rustls with the ring provider (the only one compiled in: lapin's
//! `rustls--ring` feature), verifying the server against the system's roots plus `ca=`.

use busbar_core::error::ConnectError;
use busbar_transport_kit::endpoint::config_error;
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};

use crate::settings::TlsSettings;

/// lapin's TLS configuration for `tls` (`None`: plain TCP, an empty configuration).
pub(crate) fn config(tls: Option<&TlsSettings>) -> Result<OwnedTLSConfig, ConnectError> {
    let Some(tls) = tls else { return Ok(OwnedTLSConfig::default()) };
    let cert_chain = match &tls.ca {
        Some(path) => {
            Some(String::from_utf8(busbar_tls::read("CA file", path)?).map_err(|_| {
                config_error(format!("TLS: the CA file {} is not PEM text", path.display()))
            })?)
        }
        None => None,
    };
    let identity = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => Some(OwnedIdentity::PKCS8 {
            pem: busbar_tls::read("client certificate", cert)?,
            key: busbar_tls::read("client key", key)?,
        }),
        _ => None,
    };
    Ok(OwnedTLSConfig { identity, cert_chain })
}
