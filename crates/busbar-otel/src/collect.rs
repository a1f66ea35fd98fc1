//! Turning busbar's `tracing` spans and events into finished spans: the spans
//! `busbar.request` and `busbar.handle` from when they open until they close, the events
//! `busbar.publish` and `busbar.deliver` as spans of no duration. Each
//! carries the W3C ids busbar put in the message headers (`trace_id`, `span_id`,
//! `parent_span_id`), so the exported spans and the ones other services export for the
//! same messages join into one trace.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::export::Counters;

/// What a span did, in OpenTelemetry's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpanKind {
    Server = 2,
    Client = 3,
    Producer = 4,
    Consumer = 5,
}

/// busbar's span and event names, and their kinds.
const KNOWN: &[(&str, SpanKind)] = &[
    ("busbar.publish", SpanKind::Producer),
    ("busbar.deliver", SpanKind::Consumer),
    ("busbar.request", SpanKind::Client),
    ("busbar.handle", SpanKind::Server),
];

/// A span ready to export.
#[derive(Debug, Clone)]
pub(crate) struct FinishedSpan {
    pub(crate) name: &'static str,
    pub(crate) kind: SpanKind,
    pub(crate) trace_id: String,
    pub(crate) span_id: String,
    pub(crate) parent_span_id: Option<String>,
    pub(crate) start: SystemTime,
    pub(crate) end: SystemTime,
    /// Other fields (topic, bridge name), as OpenTelemetry attribute names.
    pub(crate) attributes: Vec<(String, String)>,
}

/// The fields of one busbar span or event.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    trace_id: Option<String>,
    span_id: Option<String>,
    parent_span_id: Option<String>,
    attributes: Vec<(String, String)>,
}

impl Fields {
    fn finish(self, name: &'static str, kind: SpanKind, start: SystemTime) -> Option<FinishedSpan> {
        Some(FinishedSpan {
            name,
            kind,
            trace_id: self.trace_id?,
            span_id: self.span_id?,
            parent_span_id: self.parent_span_id,
            start,
            end: start,
            attributes: self.attributes,
        })
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `%value` fields arrive here as their Display text.
        self.put(field, format!("{value:?}"));
    }
}

impl Fields {
    fn put(&mut self, field: &Field, value: String) {
        match field.name() {
            "message" => self.message = Some(value),
            "trace_id" => self.trace_id = Some(value),
            "span_id" => self.span_id = Some(value),
            // Empty: the parent is not known (the sender's own span).
            "parent_span_id" => self.parent_span_id = Some(value).filter(|v| !v.is_empty()),
            // The semantic conventions' name for where a message goes.
            "topic" => self.attributes.push(("messaging.destination.name".into(), value)),
            other => self.attributes.push((format!("busbar.{other}"), value)),
        }
    }
}

/// A span opened and not yet closed, kept in the span's extensions.
struct Open(FinishedSpan);

/// The `tracing` layer that hands busbar's spans to the exporter. It only looks at spans
/// and events of busbar's crates (targets starting with `busbar`), and never waits: when
/// the export queue is full the span is dropped and counted (see
/// [`ExportReport`](crate::ExportReport)).
pub struct OtlpLayer {
    pub(crate) spans: mpsc::Sender<FinishedSpan>,
    pub(crate) counters: Arc<Counters>,
}

impl OtlpLayer {
    fn send(&self, span: FinishedSpan) {
        if self.spans.try_send(span).is_err() {
            self.counters.add_dropped(1);
        }
    }
}

fn known(name: &str) -> Option<(&'static str, SpanKind)> {
    KNOWN.iter().find(|(known, _)| *known == name).copied()
}

impl<S> Layer<S> for OtlpLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some((name, kind)) = known(attrs.metadata().name()) else { return };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let Some(span) = fields.finish(name, kind, SystemTime::now()) else { return };
        if let Some(entry) = ctx.span(id) {
            entry.extensions_mut().insert(Open(span));
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(entry) = ctx.span(&id) else { return };
        let open = entry.extensions_mut().remove::<Open>();
        if let Some(Open(mut span)) = open {
            span.end = SystemTime::now();
            self.send(span);
        }
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if !event.metadata().target().starts_with("busbar") {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let Some((name, kind)) = fields.message.as_deref().and_then(known) else { return };
        if let Some(span) = fields.finish(name, kind, SystemTime::now()) {
            self.send(span);
        }
    }
}
