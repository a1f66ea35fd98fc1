//! What travels: the request a caller sends and the response it gets, and how a request
//! becomes an HTTP request and an HTTP response becomes a reply.

use busbar_http::{HttpRequest, HttpResponse, encode_form, percent_encode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A call to make, in commlib's `RESTProxyMessage.Request` shape. Every field has commlib's
/// default, so `{}` is a GET of `http://localhost:8080/`.
///
/// Beyond commlib's proxy:
/// * `verb` is any of GET, HEAD, POST, PUT, PATCH, DELETE and OPTIONS (commlib: GET, PUT,
///   POST), in any letter case;
/// * `path_params` fill `{name}` places in `base_url` and `path`, percent-encoded (commlib
///   ignores them);
/// * `body_params` go as a form, as commlib sends them, or as a JSON object when `headers`
///   sets a JSON `Content-Type`; `json`, an extension, sends any JSON value as the body;
/// * query values that are lists repeat the name; numbers and booleans go as their JSON text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RestRequest {
    /// The server's host name or address (default `localhost`).
    pub host: String,
    /// Its port (default 8080; `null` means 80, or 443 with `ssl`).
    #[serde(default = "default_port")]
    pub port: Option<u16>,
    /// Use https.
    pub ssl: bool,
    /// Put before `path` (e.g. `/api/v1`).
    pub base_url: String,
    /// The path (default `/`).
    pub path: String,
    /// The HTTP method (default GET).
    pub verb: String,
    /// Query parameters.
    pub query_params: Map<String, Value>,
    /// Values for `{name}` places in `base_url` and `path`.
    pub path_params: Map<String, Value>,
    /// Body fields: a form, or a JSON object with a JSON `Content-Type` header.
    pub body_params: Map<String, Value>,
    /// Header fields.
    pub headers: Map<String, Value>,
    /// A JSON body (an extension of commlib's shape); wins over `body_params`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json: Option<Value>,
}

fn default_port() -> Option<u16> {
    Some(8080)
}

impl Default for RestRequest {
    fn default() -> Self {
        RestRequest {
            host: "localhost".into(),
            port: default_port(),
            ssl: false,
            base_url: String::new(),
            path: "/".into(),
            verb: "GET".into(),
            query_params: Map::new(),
            path_params: Map::new(),
            body_params: Map::new(),
            headers: Map::new(),
            json: None,
        }
    }
}

/// The answer, in commlib's `RESTProxyMessage.Response` shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestResponse {
    /// The body: parsed JSON when the server said it is JSON (`application/json` or a
    /// `+json` type), else the text, else (not UTF-8) base64 with `encoding` set.
    pub data: Value,
    /// The response's header fields, names in `Title-Case` (as most servers write them,
    /// and as commlib's clients look them up); repeated fields joined with `, `.
    pub headers: Map<String, Value>,
    /// The HTTP status, or for a failure of the proxy itself 400 (a request that cannot be
    /// made), 403 (a host not allowed), 502 (the server unreachable or broken) or 504 (no
    /// answer in time), with `error` set.
    pub status_code: u16,
    /// `base64` when `data` is a binary body in base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// Set only when the proxy itself failed: why, in words. A server's own error statuses
    /// come back as they are, without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Headers that say which server is meant or how the connection runs: the proxy sets them.
/// A caller's `Host` would reach another virtual host behind an allowed address.
const MANAGED_HEADERS: [&str; 8] = [
    "host",
    "connection",
    "content-length",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
];

/// The HTTP methods the proxy makes.
const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

impl RestRequest {
    /// The method, upper-cased, if it is one the proxy makes.
    pub(crate) fn method(&self) -> Result<String, String> {
        let verb = self.verb.trim().to_ascii_uppercase();
        if METHODS.contains(&verb.as_str()) {
            Ok(verb)
        } else {
            Err(format!("HTTP verb {:?} is not one of {}", self.verb, METHODS.join(", ")))
        }
    }

    /// The host as it goes in a URL (IPv6 addresses bracketed), checked.
    pub(crate) fn url_host(&self) -> Result<String, String> {
        let host = self.host.trim();
        if host.is_empty() {
            return Err("no host".into());
        }
        let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        if bare.contains(':') {
            // Only an IPv6 address has colons; anything else in brackets is refused.
            return match bare.parse::<std::net::Ipv6Addr>() {
                Ok(addr) => Ok(format!("[{addr}]")),
                Err(_) => Err(format!("{host:?} is not a host name or address")),
            };
        }
        if bare.chars().any(|c| c.is_whitespace() || c.is_control() || "/?#@[]\\%".contains(c)) {
            return Err(format!("{host:?} is not a host name or address"));
        }
        Ok(bare.to_owned())
    }

    /// The port, from `port` or the scheme.
    pub(crate) fn url_port(&self) -> u16 {
        self.port.unwrap_or(if self.ssl { 443 } else { 80 })
    }

    /// The full URL: `scheme://host:port` + `base_url` + `path` with `path_params` filled,
    /// then the query.
    pub(crate) fn url(&self) -> Result<String, String> {
        let scheme = if self.ssl { "https" } else { "http" };
        let mut path = String::new();
        for (what, part) in [("base_url", &self.base_url), ("path", &self.path)] {
            if !part.is_empty() && !part.starts_with('/') {
                return Err(format!("{what} {part:?} must start with '/'"));
            }
            if part.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!("{what} {part:?} has spaces or control characters"));
            }
            if part.contains('#') {
                return Err(format!(
                    "{what} {part:?} has a '#': a fragment never reaches a server"
                ));
            }
            path.push_str(&fill(part, &self.path_params)?);
        }
        if path.is_empty() {
            path.push('/');
        }
        let mut url = format!("{scheme}://{}:{}{path}", self.url_host()?, self.url_port());
        let query = query_string(&self.query_params);
        if !query.is_empty() {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&query);
        }
        Ok(url)
    }

    /// The HTTP request to make.
    pub(crate) fn to_http(&self) -> Result<HttpRequest, String> {
        let mut request = HttpRequest::new(&self.method()?, &self.url()?);
        for name in self.headers.keys() {
            let lower = name.to_ascii_lowercase();
            if MANAGED_HEADERS.contains(&lower.as_str()) || lower.starts_with("proxy-") {
                return Err(format!(
                    "header {name} is the proxy's to set (it names the server, or the connection)"
                ));
            }
        }
        for (name, value) in &self.headers {
            request = request.header(name, &text_of(value));
        }
        let content_type = self
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| text_of(v));
        let json_wanted = content_type.as_deref().is_some_and(is_json_type);
        let body = if let Some(json) = &self.json {
            Some((json.to_string(), "application/json"))
        } else if self.body_params.is_empty() {
            None
        } else if json_wanted {
            Some((Value::Object(self.body_params.clone()).to_string(), "application/json"))
        } else {
            let fields: Vec<(String, String)> =
                pairs(&self.body_params).map(|(k, v)| (k.to_owned(), v)).collect();
            let form = encode_form(fields.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            Some((form, "application/x-www-form-urlencoded"))
        };
        if let Some((body, kind)) = body {
            if content_type.is_none() {
                request = request.header("content-type", kind);
            }
            request = request.body(body);
        }
        Ok(request)
    }
}

impl RestResponse {
    /// The reply for an HTTP response.
    pub(crate) fn from_http(response: HttpResponse) -> RestResponse {
        let mut headers = Map::new();
        for (name, value) in &response.headers {
            let name = title_case(name);
            match headers.get_mut(&name) {
                Some(Value::String(earlier)) => {
                    earlier.push_str(", ");
                    earlier.push_str(value);
                }
                _ => {
                    headers.insert(name, Value::String(value.clone()));
                }
            }
        }
        let json = response.header("content-type").is_some_and(is_json_type);
        let parsed = json.then(|| serde_json::from_slice::<Value>(&response.body).ok()).flatten();
        let (data, encoding) = match (parsed, std::str::from_utf8(&response.body)) {
            (Some(v), _) => (v, None),
            (None, Ok(text)) => (Value::String(text.to_owned()), None),
            (None, Err(_)) => (Value::String(base64(&response.body)), Some("base64".to_owned())),
        };
        RestResponse { data, headers, status_code: response.status, encoding, error: None }
    }

    /// The reply for a failure of the proxy itself.
    pub(crate) fn failure(status_code: u16, error: String) -> RestResponse {
        RestResponse {
            data: Value::String(error.clone()),
            headers: Map::new(),
            status_code,
            encoding: None,
            error: Some(error),
        }
    }
}

/// `application/json`, or any `+json` type, whatever the parameters.
fn is_json_type(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    media == "application/json" || media.ends_with("+json")
}

/// A parameter as text: strings as they are, anything else as its JSON.
fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Name-value pairs of a parameter map: lists repeat the name, nulls are left out.
fn pairs(map: &Map<String, Value>) -> impl Iterator<Item = (&str, String)> {
    map.iter().flat_map(|(name, value)| {
        let values: Vec<String> = match value {
            Value::Null => Vec::new(),
            Value::Array(items) => items.iter().filter(|v| !v.is_null()).map(text_of).collect(),
            other => vec![text_of(other)],
        };
        values.into_iter().map(move |v| (name.as_str(), v))
    })
}

fn query_string(map: &Map<String, Value>) -> String {
    let fields: Vec<(&str, String)> = pairs(map).collect();
    encode_form(fields.iter().map(|(k, v)| (*k, v.as_str())))
}

/// Fills `{name}` places from `params`; a place without a value is an error.
fn fill(template: &str, params: &Map<String, Value>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or_else(|| format!("{template:?} has an unclosed '{{'"))?;
        let name = &after[..close];
        let value = params
            .get(name)
            .filter(|v| !v.is_null())
            .ok_or_else(|| format!("no path_params value for {{{name}}} in {template:?}"))?;
        out.push_str(&percent_encode(&text_of(value)));
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `content-type` -> `Content-Type`, `x-request-id` -> `X-Request-Id`.
fn title_case(name: &str) -> String {
    name.split('-')
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => {
                    first.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase()
                }
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(v: Value) -> RestRequest {
        serde_json::from_value(v).expect("a request")
    }

    #[test]
    fn an_empty_request_has_commlibs_defaults() {
        let r = request(json!({}));
        assert_eq!(r.url().as_deref(), Ok("http://localhost:8080/"));
        assert_eq!(r.method().as_deref(), Ok("GET"));
        let r = request(json!({"port": null, "ssl": true, "host": "api.example.com"}));
        assert_eq!(r.url().as_deref(), Ok("https://api.example.com:443/"));
    }

    #[test]
    fn urls_are_built_from_every_part() {
        let r = request(json!({
            "host": "127.0.0.1", "port": 9000, "base_url": "/api/v1", "path": "/rooms/{room}/lights",
            "path_params": {"room": "living room"},
            "query_params": {"on": true, "level": 80, "tag": ["a", "b&c"], "skip": null},
        }));
        assert_eq!(
            r.url().as_deref(),
            Ok(
                "http://127.0.0.1:9000/api/v1/rooms/living%20room/lights?level=80&on=true&tag=a&tag=b%26c"
            )
        );
        let r = request(json!({"host": "::1", "port": 80}));
        assert_eq!(r.url().as_deref(), Ok("http://[::1]:80/"));
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        for (v, says) in [
            (json!({"verb": "FETCH"}), "not one of"),
            (json!({"path": "rooms"}), "must start with '/'"),
            (json!({"path": "/a b"}), "spaces"),
            (json!({"path": "/rooms/{room}"}), "no path_params value for {room}"),
            (json!({"path": "/rooms/{room"}), "unclosed"),
            (json!({"host": ""}), "no host"),
            (json!({"host": "evil.com/x"}), "not a host"),
            (json!({"host": "user@evil.com"}), "not a host"),
            (json!({"host": "[user@evil.com]"}), "not a host"),
            (json!({"host": "evil.com:80"}), "not a host"),
            (json!({"path": "/a#frag", "query_params": {"q": 1}}), "fragment"),
            (json!({"headers": {"Host": "admin.internal"}}), "header Host is the proxy's"),
            (json!({"headers": {"Transfer-Encoding": "chunked"}}), "is the proxy's"),
            (json!({"headers": {"Proxy-Authorization": "x"}}), "is the proxy's"),
        ] {
            let err = request(v.clone()).to_http().expect_err("refused");
            assert!(err.contains(says), "{v}: {err}");
        }
    }

    #[test]
    fn body_params_go_as_a_form_or_as_json() {
        let r = request(json!({"verb": "post", "body_params": {"name": "a b", "n": 2}}));
        let http = r.to_http().expect("request");
        assert_eq!(http.method, "POST");
        assert_eq!(&http.body[..], b"n=2&name=a%20b");
        assert!(
            http.headers
                .contains(&("content-type".into(), "application/x-www-form-urlencoded".into()))
        );

        let r = request(
            json!({"verb": "PUT", "body_params": {"n": 2}, "headers": {"Content-Type": "application/json"}}),
        );
        let http = r.to_http().expect("request");
        assert_eq!(&http.body[..], br#"{"n":2}"#);
        assert_eq!(http.headers, vec![("Content-Type".to_owned(), "application/json".to_owned())]);

        let r = request(json!({"verb": "PATCH", "json": [1, 2], "body_params": {"ignored": 1}}));
        let http = r.to_http().expect("request");
        assert_eq!(&http.body[..], b"[1,2]");
    }

    #[test]
    fn responses_carry_json_text_or_base64() {
        let reply = |ct: &str, body: &[u8]| {
            RestResponse::from_http(HttpResponse {
                status: 200,
                headers: vec![
                    ("content-type".into(), ct.into()),
                    ("x-a".into(), "1".into()),
                    ("x-a".into(), "2".into()),
                ],
                body: bytes::Bytes::copy_from_slice(body),
            })
        };
        let r = reply("application/json; charset=utf-8", br#"{"ok":true}"#);
        assert_eq!(r.data, json!({"ok": true}));
        assert_eq!(r.headers["Content-Type"], "application/json; charset=utf-8");
        assert_eq!(r.headers["X-A"], "1, 2");
        let r = reply("application/problem+json", br#"{"title":"x"}"#);
        assert_eq!(r.data, json!({"title": "x"}));
        // JSON that does not parse stays text.
        assert_eq!(reply("application/json", b"{nope").data, json!("{nope"));
        assert_eq!(reply("text/plain", b"hello").data, json!("hello"));
        let r = reply("application/octet-stream", &[0xff, 0x00, 0x10, 0x80]);
        assert_eq!((r.data, r.encoding.as_deref()), (json!("/wAQgA=="), Some("base64")));
    }

    #[test]
    fn base64_matches_the_standard() {
        for (raw, encoded) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(raw), encoded);
        }
    }
}
