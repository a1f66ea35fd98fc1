//! OpenTelemetry export of busbar's traces.
//!
//! busbar carries W3C trace context in message headers and marks each step of a traced
//! message with a `tracing` span or event (see `busbar::trace`). This crate turns those
//! into OpenTelemetry spans and posts them to a collector with OTLP over HTTP, in its JSON
//! encoding (`POST /v1/traces`; an OpenTelemetry Collector, Jaeger and Tempo take it on
//! port 4318). The spans keep the ids the headers carry, so spans that other services
//! export for the same messages join them in one trace.
//!
//! | span | kind | from | to |
//! |---|---|---|---|
//! | `busbar.publish` | producer | a traced publish | (an instant) |
//! | `busbar.request` | client | a traced request | its reply |
//! | `busbar.handle` | server | a traced request reaching an RPC server | its reply |
//! | `busbar.deliver` | consumer | a traced message handed to a subscriber | (an instant) |
//!
//! A bridge sends what it forwards in the scope of the span it arrived as: its publish or
//! request on the other side is a span of the trace, the arriving one its parent.
//!
//! Add the layer to the `tracing` subscriber, inside a tokio runtime (the export runs in a
//! task of its own), and flush before the program ends:
//!
//! ```no_run
//! use tracing_subscriber::layer::SubscriberExt;
//! use tracing_subscriber::util::SubscriberInitExt;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! // OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318, as for any OpenTelemetry SDK.
//! if let Some(config) = busbar_otel::OtlpConfig::from_env("my-service")? {
//!     let (layer, exporter) = busbar_otel::layer(config);
//!     tracing_subscriber::registry().with(layer).init();
//!     // ... work ...
//!     let report = exporter.flush(std::time::Duration::from_secs(5)).await;
//!     if !report.complete() {
//!         eprintln!("traces: {report}");
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Nothing waits on the collector: spans queue (2048 at most, then they are dropped and
//! counted) and go out in batches; what could not be delivered is counted in the
//! [`ExportReport`], never lost silently.
//!
//! An application that already runs the OpenTelemetry SDK can keep its own exporter and
//! continue busbar's traces from its spans: give busbar the SDK's `traceparent` with
//! `TraceContext::parse(..).in_scope(..)`, and read busbar's from a received message with
//! `TraceContext::of(&message)`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod collect;
mod config;
mod encode;
mod export;

use std::sync::Arc;

pub use collect::OtlpLayer;
pub use config::{OtlpConfig, OtlpConfigError};
pub use export::{ExportReport, Exporter};

/// The layer to add to a `tracing` subscriber and the handle of its export task, started
/// on the current tokio runtime.
///
/// # Panics
///
/// Outside a tokio runtime.
pub fn layer(config: OtlpConfig) -> (OtlpLayer, Exporter) {
    let (spans_tx, spans_rx) = tokio::sync::mpsc::channel(config.queue.max(1));
    let counters = Arc::new(export::Counters::default());
    let exporter = export::start(config, spans_rx, counters.clone());
    (OtlpLayer { spans: spans_tx, counters }, exporter)
}
