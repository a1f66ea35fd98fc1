//! The two HTTP exchanges OIDC needs (a GET for discovery, a form POST for tokens), one
//! connection each, over plain TCP or rustls with ring.

use std::sync::Arc;
use std::time::Duration;

use busbar_core::url::percent_encode;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::error::OidcError;

/// The largest response body read: discovery documents and token responses are small.
const MAX_BODY: usize = 1024 * 1024;

/// An HTTP response: its status and body.
pub(crate) struct Response {
    pub status: StatusCode,
    pub body: Bytes,
}

/// Makes requests to one issuer's endpoints.
pub(crate) struct Client {
    pub timeout: Duration,
    /// For `https` endpoints.
    pub tls: Option<Arc<ClientConfig>>,
}

impl Client {
    pub async fn get(&self, url: &str) -> Result<Response, OidcError> {
        self.send(Method::GET, url, None).await
    }

    pub async fn post_form(&self, url: &str, form: &[(&str, &str)]) -> Result<Response, OidcError> {
        self.send(Method::POST, url, Some(encode_form(form))).await
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        form: Option<String>,
    ) -> Result<Response, OidcError> {
        tokio::time::timeout(self.timeout, self.exchange(method, url, form))
            .await
            .map_err(|_| OidcError::Http { url: url.to_owned(), reason: "timed out".into() })?
    }

    async fn exchange(
        &self,
        method: Method,
        url: &str,
        form: Option<String>,
    ) -> Result<Response, OidcError> {
        let fail = |reason: String| OidcError::Http { url: url.to_owned(), reason };
        let uri: Uri = url.parse().map_err(|e| fail(format!("not a URL: {e}")))?;
        let secure = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(fail("only http and https URLs are supported".into())),
        };
        let host = uri.host().ok_or_else(|| fail("no host".into()))?.to_owned();
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        // IPv6 literals come bracketed in URLs and must be bare for connecting.
        let bare = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let tcp = TcpStream::connect((bare.as_str(), port))
            .await
            .map_err(|e| fail(format!("cannot connect: {e}")))?;
        let _ = tcp.set_nodelay(true);

        let authority = uri.authority().map_or(host.clone(), |a| a.as_str().to_owned());
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, authority)
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, concat!("busbar-oidc/", env!("CARGO_PKG_VERSION")));
        if form.is_some() {
            request = request.header(CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        let request = request
            .body(Full::new(Bytes::from(form.unwrap_or_default())))
            .map_err(|e| fail(e.to_string()))?;

        if secure {
            let config = self.tls.clone().ok_or_else(|| fail("no TLS configuration".into()))?;
            let name = ServerName::try_from(bare.clone())
                .map_err(|e| fail(format!("invalid server name: {e}")))?;
            let tls = TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| fail(format!("TLS handshake failed: {e}")))?;
            round_trip(TokioIo::new(tls), request, url).await
        } else {
            round_trip(TokioIo::new(tcp), request, url).await
        }
    }
}

async fn round_trip<T>(
    io: T,
    request: Request<Full<Bytes>>,
    url: &str,
) -> Result<Response, OidcError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let fail = |reason: String| OidcError::Http { url: url.to_owned(), reason };
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(io).await.map_err(|e| fail(e.to_string()))?;
    // The connection is driven on its own task for as long as the exchange needs it.
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let result = async {
        let response = sender.send_request(request).await.map_err(|e| fail(e.to_string()))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| fail(format!("reading the response: {e}")))?
            .to_bytes();
        Ok(Response { status, body })
    }
    .await;
    driver.abort();
    result
}

/// `application/x-www-form-urlencoded`: unreserved characters as they are, the rest
/// percent-encoded (a space too, which is always safe).
fn encode_form(form: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in form.iter().enumerate() {
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
            super::encode_form(&[("grant_type", "client_credentials"), ("scope", "a b/c&=é")]);
        assert_eq!(form, "grant_type=client_credentials&scope=a%20b%2Fc%26%3D%C3%A9");
    }
}
