//! The list readers: each queue group's and named queue's list, read for this connection's
//! members, and the reply inbox, read for its requests. Each blocks on `BLMPOP` over a
//! connection of its own (a blocked command would hold up everything pipelined behind it on
//! the shared connection).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use busbar_core::error::ConnectError;
use busbar_core::message::{Message, QoS};
use busbar_transport_kit::backoff::backoff;
use bytes::Bytes;
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use tokio_util::sync::CancellationToken;

use super::routes::ListRole;
use super::state::Shared;
use crate::envelope;

/// Most items one BLMPOP takes from a queue group's list: small, so that members share the
/// load, while still amortising the round trip under a burst.
const GROUP_POP: usize = 16;
/// Longest one BLMPOP blocks: how long a list reader may outlive its last subscriber.
const POP_BLOCK: Duration = Duration::from_millis(500);
/// Most replies one BLMPOP takes from the inbox.
const INBOX_POP: usize = 256;

impl Shared {
    /// A connection of its own for a blocking list read.
    pub(super) async fn blocking_connection(&self) -> Result<MultiplexedConnection, ConnectError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.settings.connect_timeout))
            .set_response_timeout(None);
        self.client()
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| self.connect_error(e))
    }

    /// Pops up to `count` items from `key`, blocking until there is one. `None` when the
    /// transport or `cancel` ends; connection losses are repaired here.
    ///
    /// A pop in flight is never abandoned: the server may already have taken items for it,
    /// which would then be lost. Each pop blocks for at most [`POP_BLOCK`], `cancel` is looked
    /// at between pops, and items that arrive after it are pushed back to the head of the
    /// list, in order, for the next reader.
    async fn pop(
        &self,
        conn: &mut Option<MultiplexedConnection>,
        key: &str,
        count: usize,
        cancel: &CancellationToken,
    ) -> Option<Vec<Vec<u8>>> {
        let mut attempt = 0;
        loop {
            if cancel.is_cancelled() {
                return None;
            }
            if conn.is_none() {
                tokio::select! {
                    _ = cancel.cancelled() => return None,
                    up = self.wait_up() => { up?; }
                }
                match self.blocking_connection().await {
                    Ok(c) => {
                        *conn = Some(c);
                        attempt = 0;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "list reader could not connect");
                        tokio::select! {
                            _ = cancel.cancelled() => return None,
                            _ = tokio::time::sleep(backoff(attempt)) => {}
                        }
                        attempt += 1;
                        continue;
                    }
                }
            }
            let c = conn.as_mut()?;
            let mut cmd = redis::cmd("BLMPOP");
            cmd.arg(POP_BLOCK.as_secs_f64()).arg(1).arg(key).arg("LEFT").arg("COUNT").arg(count);
            match cmd.query_async::<Option<(String, Vec<Vec<u8>>)>>(c).await {
                Ok(Some((_, items))) if cancel.is_cancelled() => {
                    let mut back = redis::cmd("LPUSH");
                    back.arg(key);
                    for item in items.iter().rev() {
                        back.arg(item.as_slice());
                    }
                    if let Err(e) = back.query_async::<i64>(c).await {
                        tracing::warn!(error = %e, key, lost = items.len(), "could not return items taken after a reader stopped");
                    }
                    return None;
                }
                Ok(Some((_, items))) => return Some(items),
                Ok(None) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, key, "list read failed; reconnecting");
                    *conn = None;
                }
            }
        }
    }

    /// Starts the reply reader the first time a request is made.
    pub(super) fn ensure_inbox(self: &Arc<Self>) {
        if self.inbox_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let shared = self.clone();
        tokio::spawn(async move {
            let mut conn = None;
            let cancel = shared.life.token().clone();
            while let Some(items) =
                shared.pop(&mut conn, &shared.inbox_key, INBOX_POP, &cancel).await
            {
                for item in items {
                    let d = match envelope::decode(Bytes::from(item)) {
                        Ok(d) => d,
                        Err(e) => {
                            shared.meter.discard("a reply with a malformed envelope", &e.0);
                            continue;
                        }
                    };
                    let correlation = d.correlation_id.clone();
                    let reply = d.into_message(shared.inbox_topic.clone());
                    // A reply nobody waits for any more is counted late there.
                    shared.inbox.complete(correlation.as_deref(), reply);
                }
            }
        });
    }

    /// Reads one list (a queue group's or a named queue's) for this connection's members.
    pub(super) async fn serve_list(self: Arc<Self>, key: String, cancel: CancellationToken) {
        let named = match self.routes().lists.get(&key).map(|r| &r.role) {
            Some(ListRole::Named { topic }) => Some(topic.clone()),
            Some(ListRole::Group { .. }) => None,
            Some(ListRole::Durable { .. }) | None => return,
        };
        let mut conn = None;
        while let Some(items) = self.pop(&mut conn, &key, GROUP_POP, &cancel).await {
            for item in items {
                let m = match &named {
                    // A named queue holds bare payloads, as other Redis clients push them.
                    Some(topic) => {
                        Message::new(topic.clone(), Bytes::from(item)).with_qos(QoS::AtMostOnce)
                    }
                    None => {
                        let d = match envelope::decode(Bytes::from(item)) {
                            Ok(d) => d,
                            Err(e) => {
                                self.meter
                                    .discard("a queue-group item with a malformed envelope", &e.0);
                                continue;
                            }
                        };
                        let Some(topic) = d.topic.clone() else {
                            self.meter
                                .discard("a queue-group item", &"its envelope names no topic");
                            continue;
                        };
                        d.into_message(topic)
                    }
                };
                // One member takes it: the next in turn with room.
                let target = {
                    let routes = self.routes();
                    let Some(reader) = routes.lists.get(&key) else { return };
                    if reader.members.is_empty() {
                        return;
                    }
                    reader.members.pick().cloned()
                };
                match target {
                    Some(t) => {
                        t.deliver(m).await;
                    }
                    None => tracing::debug!(key, "every member of the list's reader is gone"),
                }
            }
        }
    }
}
