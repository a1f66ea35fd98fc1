//! Making the call: checks, the HTTP exchange, and what a failure becomes.

use std::sync::Arc;
use std::time::Duration;

use busbar_http::{HttpClient, HttpErrorKind};
use tokio_rustls::rustls::ClientConfig;

use crate::message::{RestRequest, RestResponse};

/// How the proxy calls.
#[derive(Debug, Clone)]
pub struct RestProxyOptions {
    /// The deadline of one HTTP exchange (default 10 s).
    pub timeout: Duration,
    /// The largest response body passed back (default 16 MiB); larger ones fail with 502.
    pub max_body: usize,
    /// The TLS configuration for `ssl` requests (default: none, and `ssl` requests fail;
    /// `busbar_tls::client_config` builds one with the system's roots or a given CA).
    pub tls: Option<Arc<ClientConfig>>,
    /// The hosts the proxy may call, each `host` or `host:port`; empty allows every host.
    /// A proxy reachable by everyone on a bus can otherwise be made to call anything its
    /// machine can reach.
    pub allow: Vec<String>,
}

impl RestProxyOptions {
    /// Makes https calls, verifying servers against the PEM certificate authorities in `ca`,
    /// or the system's roots without one.
    pub fn https(mut self, ca: Option<std::path::PathBuf>) -> busbar_core::Result<Self> {
        let settings = busbar_tls::TlsSettings { ca, ..busbar_tls::TlsSettings::default() };
        self.tls = Some(busbar_tls::client_config(&settings)?);
        Ok(self)
    }
}

impl Default for RestProxyOptions {
    fn default() -> Self {
        RestProxyOptions {
            timeout: Duration::from_secs(10),
            max_body: 16 * 1024 * 1024,
            tls: None,
            allow: Vec::new(),
        }
    }
}

/// What kind of failure of the proxy a [`ProxyError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyErrorKind {
    /// The request cannot be made as given (status 400).
    BadRequest,
    /// The host is not on the allow-list (status 403).
    NotAllowed,
    /// The server could not be reached, or broke the exchange (status 502).
    Unreachable,
    /// The server did not answer in time (status 504).
    Timeout,
}

/// A failure of the proxy itself (a server's error statuses are answers, not failures).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ProxyError {
    /// What kind.
    pub kind: ProxyErrorKind,
    /// Why, in words.
    pub message: String,
}

impl ProxyError {
    fn new(kind: ProxyErrorKind, message: impl Into<String>) -> Self {
        ProxyError { kind, message: message.into() }
    }

    /// The HTTP status a gateway reports for it.
    pub fn status(&self) -> u16 {
        match self.kind {
            ProxyErrorKind::BadRequest => 400,
            ProxyErrorKind::NotAllowed => 403,
            ProxyErrorKind::Unreachable => 502,
            ProxyErrorKind::Timeout => 504,
        }
    }

    /// The reply for callers that have no error channel (commlib's wire): the status and
    /// the message, with `error` set.
    pub fn to_response(&self) -> RestResponse {
        RestResponse::failure(self.status(), self.message.clone())
    }
}

/// Makes the HTTP calls requests ask for. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RestProxy {
    client: HttpClient,
    allow: Arc<[String]>,
}

impl RestProxy {
    /// A proxy with `options`.
    pub fn new(options: RestProxyOptions) -> Self {
        let mut client = HttpClient::new(options.timeout);
        client.tls = options.tls;
        client.max_body = options.max_body;
        client.user_agent = concat!("busbar-rest-proxy/", env!("CARGO_PKG_VERSION")).to_owned();
        let allow = options.allow.iter().map(|h| h.trim().to_ascii_lowercase()).collect();
        RestProxy { client, allow }
    }

    /// Makes the call `request` describes and returns what the server answered, whatever
    /// its status.
    pub async fn call(&self, request: &RestRequest) -> Result<RestResponse, ProxyError> {
        let http = request.to_http().map_err(|m| ProxyError::new(ProxyErrorKind::BadRequest, m))?;
        self.check_allowed(request)?;
        if request.ssl && self.client.tls.is_none() {
            return Err(ProxyError::new(
                ProxyErrorKind::BadRequest,
                "this proxy has no TLS configuration, so it makes no https calls",
            ));
        }
        let url = http.url.clone();
        match self.client.send(http).await {
            Ok(response) => Ok(RestResponse::from_http(response)),
            Err(e) => {
                let kind = match e.kind {
                    HttpErrorKind::Timeout => ProxyErrorKind::Timeout,
                    HttpErrorKind::InvalidRequest => ProxyErrorKind::BadRequest,
                    _ => ProxyErrorKind::Unreachable,
                };
                tracing::debug!(%url, error = %e, "rest proxy: call failed");
                Err(ProxyError::new(kind, format!("{} {url}: {}", request.verb, e.reason)))
            }
        }
    }

    fn check_allowed(&self, request: &RestRequest) -> Result<(), ProxyError> {
        if self.allow.is_empty() {
            return Ok(());
        }
        let host = request.host.trim().trim_start_matches('[').trim_end_matches(']');
        let host = host.to_ascii_lowercase();
        let with_port = format!("{host}:{}", request.url_port());
        let bracketed = format!("[{host}]:{}", request.url_port());
        if self.allow.iter().any(|a| *a == host || *a == with_port || *a == bracketed) {
            return Ok(());
        }
        Err(ProxyError::new(
            ProxyErrorKind::NotAllowed,
            format!("{with_port} is not among the hosts this proxy may call"),
        ))
    }
}
