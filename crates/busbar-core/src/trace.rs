//! W3C trace context carried in message headers, so that one request can be followed from
//! a client through bridges to a server and back.
//!
//! A message is traced when it carries a `traceparent` header
//! (`00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`, as W3C Trace Context writes it).
//! Headers travel on every transport (natively, or in busbar's envelope where the broker
//! has none), so the header crosses wherever the message does. Tracing is opt-in: a message
//! gets the header only when its sender set it or sends it from inside a traced scope, so
//! untraced traffic keeps its wire shape (a dialect's peers see nothing new).
//!
//! * Start a trace with [`TraceContext::new_root`] and run the work [`in_scope`](TraceContext::in_scope):
//!   every publish and request made inside gets a `traceparent` of that trace, each with a
//!   span id of its own.
//! * An RPC server runs its handler in the scope of the request's trace (a child span), and
//!   its reply carries the trace back; calls the handler makes continue the same trace.
//! * A bridge forwards each message in the scope of the span it arrived with, so what it
//!   sends on is a new span of the same trace, the arriving one its parent: one hop, one
//!   span.
//! * Each of these steps is a `tracing` span or event (`busbar.publish`, `busbar.request`,
//!   `busbar.handle`, `busbar.deliver`) with `trace_id`, `span_id` and `parent_span_id`
//!   fields (each span id used by one step only), for a subscriber that exports them: the
//!   `busbar-otel` crate (`busbar::otel`) sends them to an OpenTelemetry collector.

use std::fmt;
use std::future::Future;

use crate::message::Message;

/// The header that carries the trace context.
pub const TRACEPARENT: &str = "traceparent";
/// The vendor part of W3C Trace Context: carried untouched, like any header.
pub const TRACESTATE: &str = "tracestate";

tokio::task_local! {
    /// The trace the current task works for (see [`TraceContext::in_scope`]).
    static CURRENT: TraceContext;
}

/// One span of a trace: the trace it belongs to, its own id, and whether it is sampled.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    sampled: bool,
}

impl TraceContext {
    /// The first span of a new trace (sampled).
    pub fn new_root() -> TraceContext {
        let mut trace_id = random::<16>();
        if trace_id == [0; 16] {
            trace_id[15] = 1;
        }
        TraceContext { trace_id, span_id: span_id(), sampled: true }
    }

    /// A new span of the same trace, below this one.
    pub fn child(&self) -> TraceContext {
        TraceContext { span_id: span_id(), ..*self }
    }

    /// Reads a `traceparent` value. `None` when it is not one (wrong length, not lowercase
    /// hex, version `ff`, an all-zero id), as W3C asks: a bad header starts no trace.
    pub fn parse(header: &str) -> Option<TraceContext> {
        let mut parts = header.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        // Version 00 has exactly four parts; later versions may add some after them.
        if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        let _ = hex::<1>(version)?;
        let trace_id = hex::<16>(trace)?;
        let span_id = hex::<8>(span)?;
        let flags = hex::<1>(flags)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceContext { trace_id, span_id, sampled: flags[0] & 1 == 1 })
    }

    /// The context `message` carries, if any.
    pub fn of(message: &Message) -> Option<TraceContext> {
        message.headers.get(TRACEPARENT).and_then(TraceContext::parse)
    }

    /// The trace of the current task, inside [`in_scope`](Self::in_scope).
    pub fn current() -> Option<TraceContext> {
        CURRENT.try_with(|c| *c).ok()
    }

    /// Runs `work` in this trace: what it publishes or requests carries it.
    ///
    /// `Connection::publish` stamps its message when it is called, not when it is awaited:
    /// call it inside the scope, `trace.in_scope(async { conn.publish(m).await })`, not
    /// `trace.in_scope(conn.publish(m))` (whose message is made before the scope begins).
    pub async fn in_scope<F: Future>(self, work: F) -> F::Output {
        CURRENT.scope(self, work).await
    }

    /// The trace id, 32 lowercase hex digits.
    pub fn trace_id(&self) -> String {
        to_hex(&self.trace_id)
    }

    /// This span's id, 16 lowercase hex digits.
    pub fn span_id(&self) -> String {
        to_hex(&self.span_id)
    }

    /// Whether the trace is sampled (its flags' lowest bit).
    pub fn sampled(&self) -> bool {
        self.sampled
    }

    /// The `traceparent` header value.
    pub fn to_header(&self) -> String {
        format!("00-{}-{}-{:02x}", self.trace_id(), self.span_id(), u8::from(self.sampled))
    }

    /// `message` with this context as its `traceparent`.
    pub fn stamp(&self, mut message: Message) -> Message {
        message.headers.insert(TRACEPARENT, self.to_header());
        message
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_header())
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_header())
    }
}

/// Runs `work`, the handling of `request`, in a span of the request's trace when it
/// carries one: a `busbar.handle` span (a server span below the one the request was sent
/// as), in whose scope what `work` publishes or requests, the reply too, continues the
/// trace. An untraced request's `work` runs as it is. `RpcServer` does this itself; it is
/// for servers written by hand.
pub async fn handle<F: Future>(request: &Message, work: F) -> F::Output {
    use tracing::Instrument;
    let Some(caller) = TraceContext::of(request) else { return work.await };
    let span = caller.child();
    let traced = span.in_scope(work).instrument(tracing::info_span!(
        "busbar.handle",
        topic = %request.topic,
        trace_id = %span.trace_id(),
        span_id = %span.span_id(),
        parent_span_id = %caller.span_id()
    ));
    traced.await
}

/// The span a traced message is sent as, and its parent when busbar knows it.
pub(crate) struct Outgoing {
    /// The span the message's `traceparent` names.
    pub(crate) span: TraceContext,
    /// The scope's span when busbar stamped the message here; `None` when the sender
    /// stamped it (its span is the sender's own, with a parent busbar does not know).
    pub(crate) parent: Option<TraceContext>,
}

impl Outgoing {
    /// The parent's span id, or an empty string (a field `tracing` records either way).
    pub(crate) fn parent_span_id(&self) -> String {
        self.parent.map(|p| p.span_id()).unwrap_or_default()
    }
}

/// Gives `message` a span of the current trace when it carries none and the task works
/// inside one; the span it is sent as, if any. Cheap when nothing is traced: one
/// task-local lookup.
pub(crate) fn outgoing(message: &mut Message) -> Option<Outgoing> {
    if let Some(carried) = TraceContext::of(message) {
        return Some(Outgoing { span: carried, parent: None });
    }
    let parent = TraceContext::current()?;
    let span = parent.child();
    message.headers.insert(TRACEPARENT, span.to_header());
    Some(Outgoing { span, parent: Some(parent) })
}

fn span_id() -> [u8; 8] {
    let mut id = random::<8>();
    if id == [0; 8] {
        id[7] = 1;
    }
    id
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    if getrandom::fill(&mut bytes).is_err() {
        // No random source: ids need only be unlikely to repeat, not unguessable.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let seed = (nanos ^ (u128::from(n) << 64)).to_le_bytes();
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = seed[i % 16] ^ (i as u8).wrapping_mul(151);
        }
    }
    bytes
}

fn hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in text.as_bytes().chunks(2).enumerate() {
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_reads_and_writes_as_w3c_says() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ctx = TraceContext::parse(header).expect("the W3C example");
        assert_eq!(ctx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ctx.span_id(), "00f067aa0ba902b7");
        assert!(ctx.sampled());
        assert_eq!(ctx.to_header(), header);
        let child = ctx.child();
        assert_eq!(child.trace_id(), ctx.trace_id());
        assert_ne!(child.span_id(), ctx.span_id());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad:?}");
        }
        // A later version may carry more parts.
        assert!(
            TraceContext::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-x")
                .is_some()
        );
    }

    #[tokio::test]
    async fn messages_sent_in_a_scope_carry_its_trace() {
        let topic = crate::topic::Topic::new("t").expect("topic");
        let mut plain = Message::new(topic.clone(), "x");
        assert!(outgoing(&mut plain).is_none(), "no scope, no header");
        assert!(plain.headers.get(TRACEPARENT).is_none());
        let root = TraceContext::new_root();
        let mut traced = Message::new(topic.clone(), "x");
        let sent = root.in_scope(async { outgoing(&mut traced) }).await.expect("a span");
        assert_eq!(sent.span.trace_id(), root.trace_id());
        assert_ne!(sent.span.span_id(), root.span_id(), "a span of its own");
        assert_eq!(sent.parent, Some(root), "below the scope's");
        assert_eq!(TraceContext::of(&traced), Some(sent.span));
        // A header the sender set is kept, and is the sender's span (parent unknown).
        let other = TraceContext::new_root();
        let mut own = other.stamp(Message::new(topic, "x"));
        let kept = root.in_scope(async { outgoing(&mut own) }).await.expect("carried");
        assert_eq!((kept.span, kept.parent), (other, None));
        assert_eq!(kept.parent_span_id(), "");
    }
}
