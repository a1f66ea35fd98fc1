//! Building redis-rs's client from [`Settings`]: address, credentials, RESP3, TCP_NODELAY,
//! and for `rediss://` TLS with rustls and the ring provider.

use busbar_core::error::{ConnectError, ConnectErrorKind, OpError};
use busbar_transport_kit::{Login, Server};
use redis::io::tcp::TcpSettings;
use redis::{
    ConnectionAddr, ConnectionInfo, IntoConnectionInfo, ProtocolVersion, RedisConnectionInfo,
};

use crate::settings::Settings;

/// A redis-rs client for `server`, presenting `login` (the URL's, or with a token in it) and
/// selecting database `db`, with the TLS of `settings`.
pub(crate) fn client(
    settings: &Settings,
    server: &Server,
    login: &Login,
    db: i64,
) -> Result<redis::Client, ConnectError> {
    // redis-rs refusing what the URL gave (an address it cannot use) is the URL's fault; a
    // TLS configuration it cannot build is the local settings'.
    let refused = |kind: ConnectErrorKind, what: &str, e: redis::RedisError| {
        OpError::new(kind, format!("{}: {what}: {e}", settings.redacted_url)).with_source(e)
    };
    let mut redis_info =
        RedisConnectionInfo::default().set_db(db).set_protocol(ProtocolVersion::RESP3);
    if let Some(u) = &login.user {
        redis_info = redis_info.set_username(u.clone());
    }
    if let Some(p) = &login.password {
        redis_info = redis_info.set_password(p.clone());
    }
    let addr = match (&settings.socket, &settings.tls) {
        #[cfg(unix)]
        (Some(path), _) => ConnectionAddr::Unix(path.clone()),
        #[cfg(not(unix))]
        (Some(_), _) => {
            return Err(OpError::new(
                ConnectErrorKind::Config,
                format!("{}: Unix sockets exist on Unix only", settings.redacted_url),
            ));
        }
        (None, None) => ConnectionAddr::Tcp(server.host.clone(), server.port),
        (None, Some(_)) => ConnectionAddr::TcpTls {
            host: server.host.clone(),
            port: server.port,
            insecure: false,
            tls_params: None,
        },
    };
    let info: ConnectionInfo = addr
        .into_connection_info()
        .map_err(|e| refused(ConnectErrorKind::InvalidUrl, "address", e))?
        .set_redis_settings(redis_info)
        // Small messages must not wait for Nagle's algorithm.
        .set_tcp_settings(TcpSettings::default().set_nodelay(true));
    let Some(tls) = &settings.tls else {
        return redis::Client::open(info)
            .map_err(|e| refused(ConnectErrorKind::InvalidUrl, "client", e));
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
        .map_err(|e| refused(ConnectErrorKind::Config, "TLS configuration", e))
}
