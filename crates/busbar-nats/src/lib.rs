//! `nats://` and `tls://`: busbar's transport for core NATS, on the official async-nats
//! client (no JetStream).
//!
//! * Topics map to subjects with [`busbar_core::topic::native`]: `/` becomes `.`, `+` becomes
//!   `*`, `#` becomes `>`; a filter `a/#` is two NATS subscriptions (`a` and `a.>`), because
//!   NATS `a.>` does not match `a` itself. async-nats gives each subscription its own
//!   buffer, so the order *between* the two halves is not kept: messages on `a` keep their
//!   order, messages under `a/...` keep theirs, but one on `a` may overtake one on `a/b`
//!   published before it (or the other way round).
//! * Queue groups are NATS queue groups. Requests are NATS requests on one reply inbox per
//!   connection, subscribed on the first request: each request's reply subject is
//!   `_busbar.inbox.<32 random hex digits>.<its correlation id in hex>`, so no other client
//!   can guess it, and a reply that comes after its request gave up is counted in
//!   `late_replies`. A request fails at once with `NoResponders` when nobody listens (the
//!   server answers it with status 503). A server that limits what its users may
//!   subscribe to must let requesters subscribe to `_busbar.inbox.>`.
//! * Headers are NATS headers. Core NATS keeps no retained messages, has no per-message
//!   expiry, no last will and no per-subscription no-local: those are declared absent in the
//!   capabilities and refused with `Unsupported`.
//! * async-nats reconnects (jittered exponential backoff, 100 ms to 5 s, without end) and
//!   re-subscribes; busbar turns its events into [`ConnectionEvent`](busbar_core::ConnectionEvent)s
//!   and its slow-consumer drops into the `dropped` counter.

#![forbid(unsafe_code)]

mod convert;
mod settings;
mod transport;

pub use settings::{Credentials, DEFAULT_SUBSCRIPTION_CAPACITY, Settings, TlsSettings};
pub use transport::NatsTransport;

use std::sync::Arc;

use busbar_core::error::ConnectError;
use busbar_core::transport::{BoxFuture, ConnectOptions};
use busbar_core::{Connection, Connector};

/// Connects `nats://` and `tls://` URLs.
#[derive(Debug, Default, Clone, Copy)]
pub struct NatsConnector;

impl Connector for NatsConnector {
    fn schemes(&self) -> &[&'static str] {
        &["nats", "tls"]
    }

    fn connect(
        &self,
        url: &str,
        options: ConnectOptions,
    ) -> BoxFuture<'static, Result<Connection, ConnectError>> {
        let url = url.to_owned();
        Box::pin(async move {
            Ok(Connection::new(Arc::new(NatsTransport::connect(&url, options).await?)))
        })
    }
}
