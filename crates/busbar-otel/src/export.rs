//! The exporter: a task that gathers finished spans into batches and posts each to the
//! collector, counting what it could not deliver, and a handle that flushes what is left
//! when the program ends.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busbar_http::{HttpClient, HttpRequest};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::OtlpConfig;
use crate::collect::FinishedSpan;
use crate::encode;

/// What the exporter did, counted since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Spans the collector accepted.
    pub exported: u64,
    /// Spans dropped before export: the queue was full, or the exporter was stopped or
    /// out of time with them still waiting.
    pub dropped: u64,
    /// Spans sent in requests that failed (the collector unreachable, or answering with an
    /// error status).
    pub failed: u64,
    /// Why the last failed request failed.
    pub last_error: Option<String>,
}

impl ExportReport {
    /// Whether every span reached the collector.
    pub fn complete(&self) -> bool {
        self.dropped == 0 && self.failed == 0
    }
}

impl fmt::Display for ExportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} spans exported", self.exported)?;
        if self.dropped > 0 {
            write!(f, ", {} dropped (the export queue was full)", self.dropped)?;
        }
        if self.failed > 0 {
            write!(f, ", {} not accepted by the collector", self.failed)?;
        }
        if let Some(e) = &self.last_error {
            write!(f, " (last error: {e})")?;
        }
        Ok(())
    }
}

/// The counters the layer and the task share.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    exported: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Counters {
    pub(crate) fn add_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    fn report(&self) -> ExportReport {
        ExportReport {
            exported: self.exported.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            last_error: self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }
}

/// The handle of the export task. Dropping it leaves the task running (it ends with the
/// runtime); [`flush`](Self::flush) sends what is waiting first.
#[derive(Debug)]
pub struct Exporter {
    flush: mpsc::Sender<oneshot::Sender<()>>,
    counters: Arc<Counters>,
}

impl Exporter {
    /// What was exported, dropped or refused so far.
    pub fn report(&self) -> ExportReport {
        self.counters.report()
    }

    /// Sends every span finished so far, waiting `within` at most; what is still waiting
    /// then is counted as dropped. Spans finished later are still exported in batches.
    pub async fn flush(&self, within: Duration) -> ExportReport {
        let (done_tx, done_rx) = oneshot::channel();
        if self.flush.send(done_tx).await.is_ok() {
            let _ = tokio::time::timeout(within, done_rx).await;
        }
        self.counters.report()
    }
}

/// Starts the export task on the current tokio runtime.
pub(crate) fn start(
    config: OtlpConfig,
    spans: mpsc::Receiver<FinishedSpan>,
    counters: Arc<Counters>,
) -> Exporter {
    let (flush_tx, flush_rx) = mpsc::channel(4);
    let client = client(&config);
    tokio::spawn(run(config, client, spans, flush_rx, counters.clone()));
    Exporter { flush: flush_tx, counters }
}

fn client(config: &OtlpConfig) -> HttpClient {
    let mut client = HttpClient::new(config.timeout);
    client.max_body = 64 * 1024;
    if config.traces_url.starts_with("https://") {
        // The system's roots; a collector's own CA goes in through SSL_CERT_FILE.
        client.tls = busbar_tls::client_config(&busbar_tls::TlsSettings::default()).ok();
    }
    client
}

async fn run(
    config: OtlpConfig,
    client: HttpClient,
    mut spans: mpsc::Receiver<FinishedSpan>,
    mut flushes: mpsc::Receiver<oneshot::Sender<()>>,
    counters: Arc<Counters>,
) {
    let mut batch = Vec::with_capacity(config.batch);
    let mut due: Option<Instant> = None;
    loop {
        let deadline = due.unwrap_or_else(|| Instant::now() + config.delay);
        tokio::select! {
            span = spans.recv() => match span {
                Some(span) => {
                    batch.push(span);
                    due.get_or_insert_with(|| Instant::now() + config.delay);
                    if batch.len() >= config.batch {
                        post(&config, &client, &mut batch, &counters).await;
                        due = None;
                    }
                }
                None => break,
            },
            flush = flushes.recv() => {
                let Some(done) = flush else { break };
                while let Ok(span) = spans.try_recv() {
                    batch.push(span);
                    if batch.len() >= config.batch {
                        post(&config, &client, &mut batch, &counters).await;
                    }
                }
                post(&config, &client, &mut batch, &counters).await;
                due = None;
                let _ = done.send(());
            }
            () = tokio::time::sleep_until(deadline), if due.is_some() => {
                post(&config, &client, &mut batch, &counters).await;
                due = None;
            }
        }
    }
    post(&config, &client, &mut batch, &counters).await;
}

/// Posts `batch` (emptying it) and counts the outcome.
async fn post(
    config: &OtlpConfig,
    client: &HttpClient,
    batch: &mut Vec<FinishedSpan>,
    counters: &Counters,
) {
    if batch.is_empty() {
        return;
    }
    let spans = std::mem::take(batch);
    let n = spans.len() as u64;
    let mut request = HttpRequest::new("POST", &config.traces_url)
        .header("content-type", "application/json")
        .body(encode::request(&config.service_name, &spans));
    for (name, value) in &config.headers {
        request = request.header(name, value);
    }
    let failure = match client.send(request).await {
        Ok(response) if response.is_success() => None,
        Ok(response) => Some(format!("the collector answered {}", response.status)),
        // The endpoint may carry a login: said without its password.
        Err(e) => Some(format!("{}: {}", busbar_core::url::redact(&e.url), e.reason)),
    };
    match failure {
        None => {
            counters.exported.fetch_add(n, Ordering::Relaxed);
        }
        Some(why) => {
            counters.failed.fetch_add(n, Ordering::Relaxed);
            *counters.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
        }
    }
}
