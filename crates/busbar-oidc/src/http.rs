//! The two HTTP exchanges OIDC needs (a GET for discovery, a form POST for tokens), over
//! busbar's small HTTP client.

use busbar_http::{HttpClient, HttpError, HttpRequest, HttpResponse, encode_form};

use crate::error::OidcError;

/// Discovery documents and token responses are small: a larger answer is refused.
const MAX_BODY: usize = 1024 * 1024;

/// A client for one issuer's endpoints.
pub(crate) fn client(
    timeout: std::time::Duration,
    tls: Option<std::sync::Arc<tokio_rustls::rustls::ClientConfig>>,
) -> HttpClient {
    let mut client = HttpClient::new(timeout);
    client.tls = tls;
    client.max_body = MAX_BODY;
    client.user_agent = concat!("busbar-oidc/", env!("CARGO_PKG_VERSION")).to_owned();
    client
}

pub(crate) async fn get(client: &HttpClient, url: &str) -> Result<HttpResponse, OidcError> {
    client
        .send(HttpRequest::new("GET", url).header("accept", "application/json"))
        .await
        .map_err(failed)
}

pub(crate) async fn post_form(
    client: &HttpClient,
    url: &str,
    form: &[(&str, &str)],
) -> Result<HttpResponse, OidcError> {
    let request = HttpRequest::new("POST", url)
        .header("accept", "application/json")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode_form(form.iter().copied()));
    client.send(request).await.map_err(failed)
}

fn failed(e: HttpError) -> OidcError {
    OidcError::Http { url: e.url, reason: e.reason }
}
