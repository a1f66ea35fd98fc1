//! Building redis-rs's client from [`Settings`]: address, credentials, RESP3, TCP_NODELAY,
//! and for `rediss://` TLS with rustls and the ring provider.

use busbar_core::auth::TokenPlacement;
use busbar_core::{Error, Result};
use redis::io::tcp::TcpSettings;
use redis::{
    ConnectionAddr, ConnectionInfo, IntoConnectionInfo, ProtocolVersion, RedisConnectionInfo,
};

use crate::settings::Settings;

/// The user name and password to present: the URL's, with the token (if any) in the place
/// `placement` says.
pub(crate) fn credentials(
    settings: &Settings,
    token: Option<&str>,
    placement: TokenPlacement,
) -> (Option<String>, Option<String>) {
    let mut user = settings.username.clone();
    let mut pass = settings.password.clone();
    if let Some(t) = token {
        match placement {
            TokenPlacement::Password => pass = Some(t.to_owned()),
            TokenPlacement::Username => user = Some(t.to_owned()),
        }
    }
    (user, pass)
}

/// A redis-rs client for `settings`, authenticating with `token` where given.
pub(crate) fn client(
    settings: &Settings,
    token: Option<&str>,
    placement: TokenPlacement,
) -> Result<redis::Client> {
    let config_error = |what: &str, e: &dyn std::fmt::Display| {
        Error::Config(format!("{}: {what}: {e}", settings.redacted_url))
    };
    let (user, pass) = credentials(settings, token, placement);
    let mut redis_info =
        RedisConnectionInfo::default().set_db(settings.db).set_protocol(ProtocolVersion::RESP3);
    if let Some(u) = user {
        redis_info = redis_info.set_username(u);
    }
    if let Some(p) = pass {
        redis_info = redis_info.set_password(p);
    }
    let addr = match &settings.tls {
        None => ConnectionAddr::Tcp(settings.host.clone(), settings.port),
        Some(_) => ConnectionAddr::TcpTls {
            host: settings.host.clone(),
            port: settings.port,
            insecure: false,
            tls_params: None,
        },
    };
    let info: ConnectionInfo = addr
        .into_connection_info()
        .map_err(|e| config_error("address", &e))?
        .set_redis_settings(redis_info)
        // Small messages must not wait for Nagle's algorithm.
        .set_tcp_settings(TcpSettings::default().set_nodelay(true));
    let Some(tls) = &settings.tls else {
        return redis::Client::open(info).map_err(|e| config_error("client", &e));
    };
    // redis-rs builds its rustls configuration from the process-wide provider; make it ring
    // (a no-op when the application installed one already).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let read = |path: &std::path::Path, what: &str| busbar_tls::read(what, path);
    let root_cert = tls.ca.as_deref().map(|p| read(p, "CA file")).transpose()?;
    let client_tls = match (&tls.cert, &tls.key) {
        (Some(c), Some(k)) => Some(redis::ClientTlsConfig {
            client_cert: read(c, "client certificate")?,
            client_key: read(k, "client key")?,
        }),
        _ => None,
    };
    redis::Client::build_with_tls(info, redis::TlsCertificates { client_tls, root_cert })
        .map_err(|e| config_error("TLS configuration", &e))
}
