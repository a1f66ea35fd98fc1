//! A small HTTP/1.1 client: what busbar needs to fetch OIDC tokens and to run its REST proxy,
//! and nothing more. One connection per request (no pool: both callers make few requests,
//! far apart, to many hosts), over plain TCP or rustls with the ring provider, with a
//! deadline over the whole exchange and a cap on the size of the answer.

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HOST, HeaderName, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::rustls::pki_types::ServerName;

pub use busbar_core::url::percent_encode;

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HttpErrorKind {
    /// The request cannot be made: not an http(s) URL, a bad method or header.
    InvalidRequest,
    /// The server could not be reached.
    Connect,
    /// The TLS handshake failed (or no TLS configuration was given for an https URL).
    Tls,
    /// The whole exchange took longer than the client's timeout.
    Timeout,
    /// The answer was larger than the client's limit.
    TooLarge,
    /// The server broke the protocol or the connection.
    Protocol,
}

/// A failed request: what kind of failure, for which URL, and why in words.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{url}: {reason}")]
pub struct HttpError {
    /// What kind of failure.
    pub kind: HttpErrorKind,
    /// The URL asked for.
    pub url: String,
    /// What happened, for people.
    pub reason: String,
}

/// An HTTP request.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    /// GET, POST, ... (any token HTTP allows).
    pub method: String,
    /// `http://` or `https://` URL, with its query.
    pub url: String,
    /// Header fields, in order; `Host` is added from the URL unless given.
    pub headers: Vec<(String, String)>,
    /// The body (empty for none).
    pub body: Bytes,
}

impl HttpRequest {
    /// A request without headers or body.
    pub fn new(method: &str, url: &str) -> Self {
        HttpRequest {
            method: method.to_owned(),
            url: url.to_owned(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// Adds a header field.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }
}

/// An HTTP response: status, header fields in the order they came, body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Header fields, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
}

impl HttpResponse {
    /// True for a 2xx status.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Makes requests. Cheap to clone.
#[derive(Debug, Clone)]
pub struct HttpClient {
    /// The deadline of a whole exchange: connecting, sending, reading the answer.
    pub timeout: Duration,
    /// For `https` URLs; an https request without one fails.
    pub tls: Option<Arc<ClientConfig>>,
    /// The largest body read; a larger one fails with [`HttpErrorKind::TooLarge`].
    pub max_body: usize,
    /// The `User-Agent` sent unless the request gives one.
    pub user_agent: String,
}

impl HttpClient {
    /// A client with `timeout`, no TLS, a 1 MiB body limit.
    pub fn new(timeout: Duration) -> Self {
        HttpClient {
            timeout,
            tls: None,
            max_body: 1024 * 1024,
            user_agent: concat!("busbar/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }

    /// Sends `request` and reads the whole answer, whatever its status.
    pub async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let url = request.url.clone();
        tokio::time::timeout(self.timeout, self.exchange(request)).await.map_err(|_| HttpError {
            kind: HttpErrorKind::Timeout,
            url,
            reason: format!("no answer within {:?}", self.timeout),
        })?
    }

    async fn exchange(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let url = request.url.as_str();
        let fail = |kind, reason: String| HttpError { kind, url: url.to_owned(), reason };
        let invalid = |reason: String| fail(HttpErrorKind::InvalidRequest, reason);
        let uri: Uri = url.parse().map_err(|e| invalid(format!("not a URL: {e}")))?;
        let secure = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(invalid("only http and https URLs are supported".into())),
        };
        let host = uri.host().ok_or_else(|| invalid("no host".into()))?.to_owned();
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let method = Method::from_bytes(request.method.as_bytes())
            .map_err(|_| invalid(format!("{:?} is not an HTTP method", request.method)))?;

        let mut built = Request::builder().method(method).uri(path);
        let headers = built.headers_mut().ok_or_else(|| invalid("bad request line".into()))?;
        for (name, value) in &request.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid(format!("{name:?} is not a header name")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| invalid(format!("the value of header {name} is not valid")))?;
            headers.append(name, value);
        }
        if !headers.contains_key(HOST) {
            // Host and port only: user information in a URL is never sent as the Host.
            let authority = match uri.port_u16() {
                Some(p) => format!("{host}:{p}"),
                None => host.clone(),
            };
            let value = HeaderValue::from_str(&authority).map_err(|e| invalid(e.to_string()))?;
            headers.insert(HOST, value);
        }
        if !headers.contains_key(hyper::header::USER_AGENT)
            && let Ok(agent) = HeaderValue::from_str(&self.user_agent)
        {
            headers.insert(hyper::header::USER_AGENT, agent);
        }
        let built = built.body(Full::new(request.body)).map_err(|e| invalid(e.to_string()))?;

        // IPv6 literals come bracketed in URLs and must be bare for connecting.
        let bare = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let tcp = TcpStream::connect((bare.as_str(), port))
            .await
            .map_err(|e| fail(HttpErrorKind::Connect, format!("cannot connect: {e}")))?;
        let _ = tcp.set_nodelay(true);
        if secure {
            let config = self
                .tls
                .clone()
                .ok_or_else(|| fail(HttpErrorKind::Tls, "no TLS configuration".into()))?;
            let name = ServerName::try_from(bare)
                .map_err(|e| fail(HttpErrorKind::Tls, format!("invalid server name: {e}")))?;
            let tls = TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| fail(HttpErrorKind::Tls, format!("TLS handshake failed: {e}")))?;
            self.round_trip(TokioIo::new(tls), built, url).await
        } else {
            self.round_trip(TokioIo::new(tcp), built, url).await
        }
    }

    async fn round_trip<T>(
        &self,
        io: T,
        request: Request<Full<Bytes>>,
        url: &str,
    ) -> Result<HttpResponse, HttpError>
    where
        T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let fail = |kind, reason: String| HttpError { kind, url: url.to_owned(), reason };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| fail(HttpErrorKind::Protocol, e.to_string()))?;
        // The connection is driven on its own task for as long as the exchange needs it.
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        let result = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| fail(HttpErrorKind::Protocol, e.to_string()))?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(n, v)| {
                    (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned())
                })
                .collect();
            let body = Limited::new(response.into_body(), self.max_body)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        fail(
                            HttpErrorKind::TooLarge,
                            format!("the answer is larger than {} bytes", self.max_body),
                        )
                    } else {
                        fail(HttpErrorKind::Protocol, format!("reading the answer: {e}"))
                    }
                })?
                .to_bytes();
            Ok(HttpResponse { status, headers, body })
        }
        .await;
        driver.abort();
        result
    }
}

/// `application/x-www-form-urlencoded`: unreserved characters as they are, the rest
/// percent-encoded (a space too, which is always safe).
pub fn encode_form<'a>(fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (i, (name, value)) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(&percent_encode(name));
        out.push('=');
        out.push_str(&percent_encode(value));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn forms_are_encoded() {
        let form =
            super::encode_form([("grant_type", "client_credentials"), ("scope", "a b/c&=é")]);
        assert_eq!(form, "grant_type=client_credentials&scope=a%20b%2Fc%26%3D%C3%A9");
    }
}
