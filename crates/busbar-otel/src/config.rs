//! Where spans go and what they say about who sent them: from the OpenTelemetry SDK's
//! standard environment variables, or set in code.

use std::fmt;
use std::time::Duration;

/// The traces endpoint path OTLP/HTTP receivers listen on, added to a base endpoint.
const TRACES_PATH: &str = "/v1/traces";

/// Where and how spans are exported.
#[derive(Clone)]
pub struct OtlpConfig {
    /// The full URL spans are posted to (`http://127.0.0.1:4318/v1/traces`).
    pub traces_url: String,
    /// The `service.name` resource attribute: which program the spans come from.
    pub service_name: String,
    /// Extra request headers (an API key of a hosted collector). Never printed.
    pub headers: Vec<(String, String)>,
    /// The deadline of one export request.
    pub timeout: Duration,
    /// Spans kept waiting for export at most; more are dropped and counted.
    pub queue: usize,
    /// Spans sent in one request at most.
    pub batch: usize,
    /// How long a span waits at most before its batch is sent.
    pub delay: Duration,
}

/// A variable that cannot be used, named, with why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {reason}")]
pub struct OtlpConfigError {
    /// The environment variable (or setting) at fault.
    pub variable: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl OtlpConfig {
    /// Exports to `traces_url` (the whole URL, path included) as `service_name`, with
    /// the SDK's default batching (up to 512 spans a request, 2048 waiting, sent within 5 s)
    /// and a 10 s deadline per request.
    ///
    /// # Errors
    ///
    /// When `traces_url` is not an `http://` or `https://` URL.
    pub fn new(traces_url: &str, service_name: &str) -> Result<OtlpConfig, OtlpConfigError> {
        check_url("traces_url", traces_url)?;
        Ok(OtlpConfig {
            traces_url: traces_url.to_owned(),
            service_name: service_name.to_owned(),
            headers: Vec::new(),
            timeout: Duration::from_secs(10),
            queue: 2048,
            batch: 512,
            delay: Duration::from_secs(5),
        })
    }

    /// The configuration the OpenTelemetry SDK's variables describe, `None` when they name
    /// no endpoint (export is off): `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the whole URL) or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (a base, `/v1/traces` added), `OTEL_SERVICE_NAME`
    /// (else `default_service`), `OTEL_EXPORTER_OTLP_HEADERS` and
    /// `OTEL_EXPORTER_OTLP_TRACES_HEADERS` (`key=value,...`, values percent-encoded), and
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` / `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, which may say
    /// `http/json` or `http/protobuf` (busbar posts JSON, which OTLP/HTTP receivers take on
    /// the same path) but not `grpc`.
    ///
    /// # Errors
    ///
    /// A variable that is set but cannot be used, named in the error.
    pub fn from_env(default_service: &str) -> Result<Option<OtlpConfig>, OtlpConfigError> {
        Self::from_lookup(default_service, |name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) reading variables through `get`.
    fn from_lookup(
        default_service: &str,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<OtlpConfig>, OtlpConfigError> {
        let set = |name: &str| get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        for variable in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
            if let Some(protocol) = set(variable) {
                if !matches!(protocol.as_str(), "http/json" | "http/protobuf") {
                    return Err(OtlpConfigError {
                        variable: static_name(variable),
                        reason: format!(
                            "{protocol:?} is not supported: busbar exports over HTTP \
                             (http/json, to port 4318 of a collector)"
                        ),
                    });
                }
                break;
            }
        }
        let (variable, url) = if let Some(url) = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url)
        } else if let Some(base) = set("OTEL_EXPORTER_OTLP_ENDPOINT") {
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("{}{TRACES_PATH}", base.trim_end_matches('/')))
        } else {
            return Ok(None);
        };
        check_url(variable, &url)?;
        let service = set("OTEL_SERVICE_NAME").unwrap_or_else(|| default_service.to_owned());
        let mut config = OtlpConfig::new(&url, &service)?;
        for variable in ["OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"] {
            if let Some(text) = set(variable) {
                config.headers.extend(parse_headers(static_name(variable), &text)?);
            }
        }
        Ok(Some(config))
    }
}

/// Header values are credentials: shown by name only.
impl fmt::Debug for OtlpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("OtlpConfig")
            .field("traces_url", &busbar_core::url::redact(&self.traces_url))
            .field("service_name", &self.service_name)
            .field("headers", &headers)
            .field("timeout", &self.timeout)
            .field("queue", &self.queue)
            .field("batch", &self.batch)
            .field("delay", &self.delay)
            .finish()
    }
}

fn static_name(variable: &str) -> &'static str {
    [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    ]
    .into_iter()
    .find(|known| *known == variable)
    .unwrap_or("OTEL_EXPORTER_OTLP")
}

fn check_url(variable: &'static str, url: &str) -> Result<(), OtlpConfigError> {
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(()),
        _ => Err(OtlpConfigError {
            variable,
            reason: format!("{url:?} is not an http:// or https:// URL"),
        }),
    }
}

/// `key=value,key2=value2`, values percent-decoded (the SDK's format).
fn parse_headers(
    variable: &'static str,
    text: &str,
) -> Result<Vec<(String, String)>, OtlpConfigError> {
    let mut headers = Vec::new();
    for (i, pair) in text.split(',').enumerate().filter(|(_, p)| !p.trim().is_empty()) {
        let Some((name, value)) = pair.split_once('=') else {
            return Err(OtlpConfigError {
                variable,
                reason: format!("entry {} has no `=` (the form is key=value,key2=value2)", i + 1),
            });
        };
        let name = name.trim();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        {
            return Err(OtlpConfigError {
                variable,
                reason: format!("entry {}: {name:?} is not a header name", i + 1),
            });
        }
        let value = percent_decode(value.trim()).ok_or_else(|| OtlpConfigError {
            variable,
            // The value may be a secret: not quoted.
            reason: format!("entry {} ({name}): the value is not valid percent-encoding", i + 1),
        })?;
        headers.push((name.to_owned(), value));
    }
    Ok(headers)
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().filter(|v| !v.chars().any(char::is_control))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<Option<OtlpConfig>, OtlpConfigError> {
        let vars: HashMap<String, String> =
            vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        OtlpConfig::from_lookup("busbar", |name| vars.get(name).cloned())
    }

    #[test]
    fn no_endpoint_means_no_export() {
        assert!(from(&[]).expect("fine").is_none());
        assert!(from(&[("OTEL_SERVICE_NAME", "x")]).expect("fine").is_none());
    }

    #[test]
    fn a_base_endpoint_gets_the_traces_path_and_a_traces_endpoint_is_taken_whole() {
        let c = from(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/")])
            .expect("fine")
            .expect("on");
        assert_eq!(c.traces_url, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(c.service_name, "busbar");
        let c = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://collector.example/otlp/spans"),
            ("OTEL_SERVICE_NAME", "plant-gateway"),
        ])
        .expect("fine")
        .expect("on");
        assert_eq!(c.traces_url, "https://collector.example/otlp/spans");
        assert_eq!(c.service_name, "plant-gateway");
    }

    #[test]
    fn headers_are_decoded_and_never_shown() {
        let c = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s3cr%3Dt, x-team = plant"),
        ])
        .expect("fine")
        .expect("on");
        assert_eq!(
            c.headers,
            vec![("api-key".into(), "s3cr=t".into()), ("x-team".into(), "plant".into())]
        );
        let shown = format!("{c:?}");
        assert!(shown.contains("api-key") && !shown.contains("s3cr"), "{shown}");
        let with_login =
            OtlpConfig::new("http://u:hunter2@127.0.0.1:4318/v1/traces", "s").expect("config");
        assert!(!format!("{with_login:?}").contains("hunter2"));
    }

    #[test]
    fn unusable_settings_name_their_variable() {
        let e = from(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:4318")]).expect_err("no scheme");
        assert_eq!(e.variable, "OTEL_EXPORTER_OTLP_ENDPOINT");
        let e = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ])
        .expect_err("grpc");
        assert_eq!(e.variable, "OTEL_EXPORTER_OTLP_PROTOCOL");
        assert!(e.to_string().contains("http/json"), "{e}");
        let e = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=%zz-secret"),
        ])
        .expect_err("bad encoding");
        assert_eq!(e.variable, "OTEL_EXPORTER_OTLP_HEADERS");
        assert!(!e.to_string().contains("secret"), "{e}");
        let e = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "novalue"),
        ])
        .expect_err("no =");
        assert!(e.to_string().contains("entry 1"), "{e}");
    }
}
