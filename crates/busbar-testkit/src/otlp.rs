//! An OpenTelemetry collector for tests: a loopback HTTP server that takes OTLP/HTTP JSON
//! posts (`/v1/traces`), answers 200, and keeps the spans, so a test can check what busbar
//! exported.

use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::TestkitError;

/// One exported span, as a test looks at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedSpan {
    /// The `service.name` of the resource it came with.
    pub service: String,
    /// `busbar.request`, `busbar.handle`, ...
    pub name: String,
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// 16 hex digits, when the span has a parent.
    pub parent_span_id: Option<String>,
}

/// A running collector; it stops with the runtime.
#[derive(Debug, Clone)]
pub struct Collector {
    base: String,
    spans: Arc<Mutex<Vec<ExportedSpan>>>,
}

impl Collector {
    /// Starts the collector on a free loopback port.
    ///
    /// # Errors
    ///
    /// [`TestkitError::FreePort`] when it cannot listen.
    pub async fn start() -> Result<Collector, TestkitError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|source| TestkitError::FreePort { source })?;
        let addr = listener.local_addr().map_err(|source| TestkitError::FreePort { source })?;
        let spans = Arc::new(Mutex::new(Vec::new()));
        let kept = spans.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let kept = kept.clone();
                tokio::spawn(one_post(stream, kept));
            }
        });
        Ok(Collector { base: format!("http://{addr}"), spans })
    }

    /// The base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` takes it.
    pub fn endpoint(&self) -> &str {
        &self.base
    }

    /// The traces URL (`/v1/traces` on the base).
    pub fn traces_url(&self) -> String {
        format!("{}/v1/traces", self.base)
    }

    /// The spans of `trace_id` received so far.
    pub fn spans_of(&self, trace_id: &str) -> Vec<ExportedSpan> {
        let spans = self.spans.lock().unwrap_or_else(|p| p.into_inner());
        spans.iter().filter(|s| s.trace_id == trace_id).cloned().collect()
    }
}

/// Reads one request, keeps its spans, then answers 200 (so an exporter that saw its answer
/// finds its spans here).
async fn one_post(mut stream: TcpStream, kept: Arc<Mutex<Vec<ExportedSpan>>>) -> Option<()> {
    let mut request = Vec::new();
    let mut buf = [0u8; 8192];
    let body = loop {
        let n = stream.read(&mut buf).await.ok().filter(|n| *n > 0)?;
        request.extend_from_slice(&buf[..n]);
        let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = String::from_utf8_lossy(&request[..end]).to_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if request.len() >= end + 4 + length {
            break request[end + 4..end + 4 + length].to_vec();
        }
    };
    if let Ok(body) = serde_json::from_slice::<Value>(&body) {
        kept.lock().unwrap_or_else(|p| p.into_inner()).extend(spans_in(&body));
    }
    let answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}";
    stream.write_all(answer).await.ok()
}

fn spans_in(body: &Value) -> Vec<ExportedSpan> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let mut found = Vec::new();
    for resource in body["resourceSpans"].as_array().into_iter().flatten() {
        let service = resource["resource"]["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["key"] == "service.name")
            .map(|a| text(&a["value"]["stringValue"]))
            .unwrap_or_default();
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope["spans"].as_array().into_iter().flatten() {
                found.push(ExportedSpan {
                    service: service.clone(),
                    name: text(&span["name"]),
                    trace_id: text(&span["traceId"]),
                    span_id: text(&span["spanId"]),
                    parent_span_id: span["parentSpanId"].as_str().map(str::to_owned),
                });
            }
        }
    }
    found
}
