//! `--metrics ADDR`: a long-running command's counters for a Prometheus scraper.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use busbar::Connection;
use busbar::metrics::{Metrics, MetricsServer};

/// The option, shared by the commands that run until stopped.
#[derive(clap::Args, Clone, Default)]
pub struct MetricsArgs {
    /// Serve this command's counters (messages, requests, drops, reconnects, its own
    /// answers) in the Prometheus text format at http://ADDR/metrics, e.g. 127.0.0.1:9464
    /// (`:0` picks a free port; the address in use is printed on standard error).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
}

/// The endpoint of a running command, with its own counters; nothing when not asked for.
pub struct Exported {
    metrics: Metrics,
    _server: MetricsServer,
}

impl MetricsArgs {
    /// Starts the endpoint for `command` with no connection of its own to export (a
    /// gateway's or a bridge's are inside them): only what is added to it.
    pub async fn start_bare(&self, command: &str) -> anyhow::Result<Option<Exported>> {
        self.serve(command, None).await
    }

    /// Starts the endpoint for `command`, exporting `conn` as `connection="<command>"`.
    pub async fn start(
        &self,
        command: &str,
        conn: &Connection,
    ) -> anyhow::Result<Option<Exported>> {
        self.serve(command, Some(conn)).await
    }

    /// The connection is exported before the address is announced: a scrape as soon as
    /// the line is out already sees it.
    async fn serve(
        &self,
        command: &str,
        conn: Option<&Connection>,
    ) -> anyhow::Result<Option<Exported>> {
        let Some(addr) = &self.metrics else { return Ok(None) };
        let metrics = Metrics::new();
        if let Some(conn) = conn {
            metrics.connection(command, conn);
        }
        let server = metrics
            .serve(addr)
            .await
            .with_context(|| format!("--metrics {addr}: cannot listen there"))?;
        eprintln!("busbar {command}: metrics on http://{}/metrics", server.local_addr());
        Ok(Some(Exported { metrics, _server: server }))
    }
}

impl Exported {
    /// What is exported, to add to.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// A counter of the command's own, bumped through the returned handle.
    pub fn counter(&self, name: &str, help: &str) -> anyhow::Result<Arc<AtomicU64>> {
        let value = Arc::new(AtomicU64::new(0));
        let read = value.clone();
        self.metrics.counter(name, help, &[], move || read.load(Ordering::Relaxed))?;
        Ok(value)
    }
}

impl Exported {
    /// A subscription's queue: its depth and its drops, labelled `filter="<filter>"`.
    pub fn queue(&self, filter: &str, queue: busbar::transport::DropCounter) -> anyhow::Result<()> {
        let labels = [("filter", filter)];
        let depth = queue.clone();
        self.metrics.gauge(
            "busbar_subscription_queued",
            "Messages waiting in a subscription's queue.",
            &labels,
            move || depth.queued() as f64,
        )?;
        self.metrics.counter(
            "busbar_subscription_dropped_total",
            "Messages a subscription's overflow policy discarded.",
            &labels,
            move || queue.get(),
        )?;
        Ok(())
    }
}

/// Adds one to a counter of [`Exported::counter`], if there is one.
pub fn bump(counter: &Option<Arc<AtomicU64>>) {
    if let Some(c) = counter {
        c.fetch_add(1, Ordering::Relaxed);
    }
}
