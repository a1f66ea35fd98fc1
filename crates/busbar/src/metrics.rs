//! Counters in the Prometheus text format, served over HTTP for a scraper.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let conn = busbar::connect("mqtt://127.0.0.1:1883").await?;
//! let metrics = busbar::metrics::Metrics::new();
//! metrics.connection("plant", &conn);
//! let server = metrics.serve("127.0.0.1:9464").await?;
//! println!("scrape http://{}/metrics", server.local_addr());
//! # Ok(()) }
//! ```
//!
//! A connection exports what its [`StatsSnapshot`](crate::StatsSnapshot) counts (published,
//! delivered, dropped, expired, requests, request timeouts, late replies), how often it
//! reconnected and whether it is connected now, labelled `connection="<name>"`. Counters and
//! gauges of your own (a queue's depth, a bridge's counters) are read when scraped.
//!
//! The HTTP side answers `GET /metrics` (and `/`) and nothing else. It serves at most
//! [`MAX_SCRAPES`] scrapes at once, each given [`SCRAPE_WAIT`] to send its request, and
//! reads at most 8 KiB of it: a client that sends slowly, or too much, or opens many
//! connections, is cut off and never holds up the messaging it observes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::{Connection, ConnectionEvent};

/// Scrapes served at once; more wait for the listener's backlog.
pub const MAX_SCRAPES: usize = 16;
/// How long a scraper has to send its request.
pub const SCRAPE_WAIT: Duration = Duration::from_secs(5);
/// The most of a request read.
const MAX_REQUEST: usize = 8 * 1024;

type Read = Box<dyn Fn(&mut Samples) + Send + Sync>;

/// What is exported, read at each scrape. Cheap to clone: clones share their sources.
#[derive(Clone, Default)]
pub struct Metrics {
    sources: Arc<Mutex<Vec<Read>>>,
}

/// Samples of one scrape, grouped by metric.
#[derive(Default)]
struct Samples {
    families: BTreeMap<String, Family>,
}

struct Family {
    help: String,
    kind: &'static str,
    lines: Vec<String>,
}

impl Samples {
    fn add(&mut self, name: &str, help: &str, kind: &'static str, labels: &str, value: String) {
        let family = self.families.entry(name.to_owned()).or_insert_with(|| Family {
            help: help.to_owned(),
            kind,
            lines: Vec::new(),
        });
        family.lines.push(format!("{name}{labels} {value}"));
    }

    fn render(self) -> String {
        let mut out = String::new();
        for (name, family) in self.families {
            let help = family.help.replace('\\', "\\\\").replace('\n', "\\n");
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {}", family.kind);
            for line in family.lines {
                out.push_str(&line);
                out.push('\n');
            }
        }
        out
    }
}

/// `{a="x",b="y"}`, values escaped as the text format asks; empty without labels.
fn label_set(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let pairs: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", pairs.join(","))
}

/// Whether `name` is a valid metric or label name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// A metric or label name that is not one.
#[derive(Debug, thiserror::Error)]
#[error(
    "{0:?} is not a metric or label name (letters, digits, _ and :, not starting with a digit)"
)]
pub struct InvalidName(String);

impl Metrics {
    /// Nothing exported yet.
    pub fn new() -> Metrics {
        Metrics::default()
    }

    fn push(&self, read: Read) {
        self.sources.lock().unwrap_or_else(|p| p.into_inner()).push(read);
    }

    /// Exports `conn`'s counters, reconnects and state under `connection="<name>"`. Keeps a
    /// handle to the connection for as long as these metrics live. Call it within a Tokio
    /// runtime (a task follows the connection's events).
    pub fn connection(&self, name: &str, conn: &Connection) {
        let state = Arc::new(LinkState { up: AtomicU64::new(1), reconnects: AtomicU64::new(0) });
        let mut events = conn.events();
        let watched = Arc::downgrade(&state);
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                let Some(state) = watched.upgrade() else { return };
                match event {
                    ConnectionEvent::Connected { .. } => state.up.store(1, Ordering::Relaxed),
                    ConnectionEvent::Reconnected { .. } => {
                        state.up.store(1, Ordering::Relaxed);
                        state.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    ConnectionEvent::Disconnected { .. } => state.up.store(0, Ordering::Relaxed),
                    ConnectionEvent::Closed => {
                        state.up.store(0, Ordering::Relaxed);
                        return;
                    }
                    _ => {}
                }
            }
        });
        let conn = conn.clone();
        let labels = label_set(&[("connection", name)]);
        self.push(Box::new(move |s| {
            let st = conn.stats();
            let counters = [
                ("busbar_published_total", "Messages handed to the broker.", st.published),
                ("busbar_delivered_total", "Messages put into subscription queues.", st.delivered),
                ("busbar_dropped_total", "Messages discarded (overflow, unreadable).", st.dropped),
                ("busbar_expired_total", "Messages discarded for expiry.", st.expired),
                ("busbar_requests_total", "Requests started.", st.requests),
                ("busbar_request_timeouts_total", "Requests without a reply in time.", st.timeouts),
                (
                    "busbar_late_replies_total",
                    "Replies after their request gave up.",
                    st.late_replies,
                ),
                (
                    "busbar_reconnects_total",
                    "Connections restored after a loss.",
                    state.reconnects.load(Ordering::Relaxed),
                ),
            ];
            for (name, help, value) in counters {
                s.add(name, help, "counter", &labels, value.to_string());
            }
            let up = state.up.load(Ordering::Relaxed);
            s.add(
                "busbar_connected",
                "1 while connected to a broker.",
                "gauge",
                &labels,
                up.to_string(),
            );
        }));
    }

    /// A counter read from `value` at each scrape.
    pub fn counter(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> Result<(), InvalidName> {
        self.custom(name, help, "counter", labels, move || value().to_string())
    }

    /// A counter with one label whose values are known only when scraped (by topic, by
    /// node): `read` gives each label value with its count. Keep the values few (a
    /// scraper stores a series for each).
    pub fn counter_family(
        &self,
        name: &str,
        help: &str,
        label: &str,
        read: impl Fn() -> Vec<(String, u64)> + Send + Sync + 'static,
    ) -> Result<(), InvalidName> {
        self.family(name, help, "counter", label, move || {
            read().into_iter().map(|(l, v)| (l, v.to_string())).collect()
        })
    }

    /// A gauge with one label whose values are known only when scraped (see
    /// [`Metrics::counter_family`]).
    pub fn gauge_family(
        &self,
        name: &str,
        help: &str,
        label: &str,
        read: impl Fn() -> Vec<(String, f64)> + Send + Sync + 'static,
    ) -> Result<(), InvalidName> {
        self.family(name, help, "gauge", label, move || {
            read().into_iter().map(|(l, v)| (l, v.to_string())).collect()
        })
    }

    fn family(
        &self,
        name: &str,
        help: &str,
        kind: &'static str,
        label: &str,
        read: impl Fn() -> Vec<(String, String)> + Send + Sync + 'static,
    ) -> Result<(), InvalidName> {
        for n in [name, label] {
            if !valid_name(n) {
                return Err(InvalidName(n.to_owned()));
            }
        }
        let (name, help, label) = (name.to_owned(), help.to_owned(), label.to_owned());
        self.push(Box::new(move |s| {
            for (value, sample) in read() {
                s.add(&name, &help, kind, &label_set(&[(&label, &value)]), sample);
            }
        }));
        Ok(())
    }

    /// A gauge read from `value` at each scrape (a queue's depth, say).
    pub fn gauge(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: impl Fn() -> f64 + Send + Sync + 'static,
    ) -> Result<(), InvalidName> {
        self.custom(name, help, "gauge", labels, move || value().to_string())
    }

    fn custom(
        &self,
        name: &str,
        help: &str,
        kind: &'static str,
        labels: &[(&str, &str)],
        value: impl Fn() -> String + Send + Sync + 'static,
    ) -> Result<(), InvalidName> {
        for n in std::iter::once(name).chain(labels.iter().map(|(k, _)| *k)) {
            if !valid_name(n) {
                return Err(InvalidName(n.to_owned()));
            }
        }
        let (name, help, labels) = (name.to_owned(), help.to_owned(), label_set(labels));
        self.push(Box::new(move |s| s.add(&name, &help, kind, &labels, value())));
        Ok(())
    }

    /// Everything exported, in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut samples = Samples::default();
        for read in self.sources.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            read(&mut samples);
        }
        samples.render()
    }

    /// Serves these metrics at `http://<addr>/metrics` until the returned server is dropped.
    pub async fn serve(&self, addr: &str) -> std::io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let metrics = self.clone();
        let slots = Arc::new(Semaphore::new(MAX_SCRAPES));
        let task = tokio::spawn(async move {
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else { return };
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        // Out of file descriptors, say: try again shortly, not in a hot loop.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let metrics = metrics.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(SCRAPE_WAIT, answer(stream, &metrics)).await;
                    drop(permit);
                });
            }
        });
        Ok(MetricsServer { local, task })
    }
}

/// What a connection's event watcher keeps for its samples.
struct LinkState {
    up: AtomicU64,
    reconnects: AtomicU64,
}

/// Reads one request and answers it.
async fn answer(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&chunk[..n]);
        if request.len() > MAX_REQUEST {
            return respond(&mut stream, "431 Request Header Fields Too Large", "text/plain", "")
                .await;
        }
    }
    let line = request.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let path = path.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET", "/metrics" | "/") => {
            let body = metrics.render();
            respond(&mut stream, "200 OK", "text/plain; version=0.0.4; charset=utf-8", &body).await
        }
        ("GET", _) => respond(&mut stream, "404 Not Found", "text/plain", "try /metrics\n").await,
        _ => respond(&mut stream, "405 Method Not Allowed", "text/plain", "GET only\n").await,
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// The HTTP side of [`Metrics::serve`]; stops when dropped.
pub struct MetricsServer {
    local: SocketAddr,
    task: JoinHandle<()>,
}

impl MetricsServer {
    /// The address it listens on (the port chosen when `:0` was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn scrape(addr: SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        answer
    }

    #[tokio::test]
    async fn a_scrape_reads_the_connection_and_custom_metrics() {
        let conn = crate::connect("mem://metrics-test").await.expect("connect");
        let mut sub = conn.subscribe("m/#").await.expect("subscribe");
        conn.publish(crate::Message::new(crate::Topic::new("m/1").expect("topic"), "x"))
            .await
            .expect("publish");
        sub.recv().await.expect("delivered");
        let metrics = Metrics::new();
        metrics.connection("edge \"1\"", &conn);
        metrics.gauge("queue_depth", "Waiting.", &[("sub", "m/#")], || 3.0).expect("valid");
        metrics
            .counter_family("by_topic_total", "Per topic.", "topic", || {
                vec![("a/b".to_owned(), 2), ("c".to_owned(), 5)]
            })
            .expect("valid");
        assert!(metrics.counter("9bad", "x", &[], || 0).is_err());
        assert!(metrics.counter("ok", "x", &[("bad-label", "v")], || 0).is_err());
        let server = metrics.serve("127.0.0.1:0").await.expect("serve");
        let answer = scrape(server.local_addr(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.contains("# TYPE busbar_published_total counter\n"), "{answer}");
        assert!(
            answer.contains("busbar_published_total{connection=\"edge \\\"1\\\"\"} 1\n"),
            "{answer}"
        );
        assert!(
            answer.contains("busbar_delivered_total{connection=\"edge \\\"1\\\"\"} 1\n"),
            "{answer}"
        );
        assert!(answer.contains("busbar_connected{connection=\"edge \\\"1\\\"\"} 1\n"), "{answer}");
        assert!(answer.contains("queue_depth{sub=\"m/#\"} 3\n"), "{answer}");
        assert!(
            answer.contains("by_topic_total{topic=\"a/b\"} 2\nby_topic_total{topic=\"c\"} 5\n"),
            "{answer}"
        );
        let answer = scrape(server.local_addr(), "GET /other HTTP/1.1\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        let answer = scrape(server.local_addr(), "POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
        let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(10_000));
        let answer = scrape(server.local_addr(), &huge).await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    }

    #[tokio::test]
    async fn silent_scrapers_do_not_block_the_others() {
        let metrics = Metrics::new();
        metrics.counter("up_total", "x", &[], || 1).expect("valid");
        let server = metrics.serve("127.0.0.1:0").await.expect("serve");
        // More silent connections than scrape slots, then a real scrape: it is answered once
        // the silent ones are cut off (SCRAPE_WAIT), not never.
        let mut silent = Vec::new();
        for _ in 0..MAX_SCRAPES {
            silent.push(TcpStream::connect(server.local_addr()).await.expect("connect"));
        }
        let answer = tokio::time::timeout(
            SCRAPE_WAIT * 3,
            scrape(server.local_addr(), "GET /metrics HTTP/1.1\r\n\r\n"),
        )
        .await
        .expect("answered after the silent ones were cut off");
        assert!(answer.contains("up_total 1\n"), "{answer}");
    }
}
