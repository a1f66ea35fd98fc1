//! Durable subscriptions: a Redis stream per subscription (its name and filter), which
//! every publish matching the filter adds to once the subscription is registered (see
//! `groups`), read in the consumer group `busbar` by every connection subscribed under the
//! name, each entry to one of them.
//!
//! An entry read is pending for the reader's connection (its consumer, named by the client
//! id) until acknowledged (`XACK`, then `XDEL`: nothing else reads the stream). What a
//! reader had not acknowledged when it stops is given back: made claimable at once
//! (`XCLAIM ... IDLE`), so the next reader takes it first. What a reader that died had
//! not acknowledged is taken by another reader after [`CLAIM_IDLE`], as is what its own
//! application holds unacknowledged that long. A connection under the same client id
//! first reads what is still pending for it.

use std::sync::Arc;
use std::time::Duration;

use busbar_core::Receipt;
use busbar_core::transport::Acknowledge;
use bytes::Bytes;
use redis::Value;
use redis::aio::MultiplexedConnection;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::groups::STREAM_GROUP;
use super::state::Shared;
use crate::envelope;

/// Most entries one read takes.
const READ_COUNT: usize = 16;
/// Longest one read blocks: how long a reader may outlive its last subscriber.
const READ_BLOCK: Duration = Duration::from_millis(500);
/// How long an entry may stay unacknowledged before another reader may take it.
pub(super) const CLAIM_IDLE: Duration = Duration::from_secs(30);
/// How often a reader looks for such entries.
const CLAIM_EVERY: Duration = Duration::from_secs(10);
/// Most entries given back or claimed in one go.
const BATCH: usize = 1000;

/// What a reader reads next.
enum Phase {
    /// What is still pending for this consumer (a connection with the same client id that
    /// ended before acknowledging).
    OwnPending,
    /// Entries other readers left unacknowledged too long, from this cursor.
    Claim(String),
    /// New entries.
    New,
}

impl Shared {
    /// Reads durable subscription stream `key` for this connection's subscribers to it,
    /// until `cancel`; then gives back what they had not acknowledged.
    pub(super) async fn serve_stream(
        self: Arc<Self>,
        key: String,
        acknowledge: Acknowledge,
        cancel: CancellationToken,
    ) {
        let mut conn: Option<MultiplexedConnection> = None;
        let mut phase = Phase::OwnPending;
        let mut next_claim = Instant::now();
        while !cancel.is_cancelled() {
            let Some(c) = self.reading_connection(&mut conn, &cancel).await else { break };
            if matches!(phase, Phase::New) && Instant::now() >= next_claim {
                phase = Phase::Claim("0-0".into());
            }
            let (reply, then) = match &phase {
                Phase::OwnPending => {
                    (self.read(c, &key, "0", None).await, Phase::Claim("0-0".into()))
                }
                Phase::Claim(cursor) => match self.claim(c, &key, cursor).await {
                    Ok((next, entries)) if next != "0-0" && !entries.is_empty() => {
                        (Ok(entries), Phase::Claim(next))
                    }
                    Ok((_, entries)) => {
                        next_claim = Instant::now() + CLAIM_EVERY;
                        (Ok(entries), Phase::New)
                    }
                    Err(e) => (Err(e), Phase::New),
                },
                Phase::New => (self.read(c, &key, ">", Some(READ_BLOCK)).await, Phase::New),
            };
            let entries = match reply {
                Ok(entries) => entries,
                Err(e) => {
                    tracing::debug!(error = %e, key, "durable stream read failed; reconnecting");
                    conn = None;
                    continue;
                }
            };
            phase = then;
            if !self.hand_over(c, &key, entries, acknowledge).await {
                break;
            }
        }
        if let Some(c) = conn.as_mut() {
            self.give_back(c, &key).await;
        }
    }

    /// The reader's connection, made (again) when there is none; `None` once cancelled or
    /// closed.
    async fn reading_connection<'a>(
        &self,
        conn: &'a mut Option<MultiplexedConnection>,
        cancel: &CancellationToken,
    ) -> Option<&'a mut MultiplexedConnection> {
        let mut attempt = 0;
        while conn.is_none() {
            tokio::select! {
                _ = cancel.cancelled() => return None,
                up = self.wait_up() => { up?; }
            }
            match self.blocking_connection().await {
                Ok(c) => *conn = Some(c),
                Err(e) => {
                    tracing::debug!(error = %e, "durable stream reader could not connect");
                    tokio::select! {
                        _ = cancel.cancelled() => return None,
                        _ = tokio::time::sleep(busbar_transport_kit::backoff::backoff(attempt)) => {}
                    }
                    attempt += 1;
                }
            }
        }
        conn.as_mut()
    }

    /// `XREADGROUP` from `from` (`0`: this consumer's pending entries; `>`: new ones).
    async fn read(
        &self,
        c: &mut MultiplexedConnection,
        key: &str,
        from: &str,
        block: Option<Duration>,
    ) -> redis::RedisResult<Vec<(String, Option<Bytes>)>> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(STREAM_GROUP).arg(&self.client_id).arg("COUNT").arg(READ_COUNT);
        if let Some(block) = block {
            cmd.arg("BLOCK").arg(block.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(key).arg(from);
        let reply: Value = cmd.query_async(c).await?;
        Ok(streams_entries(reply))
    }

    /// `XAUTOCLAIM`: entries idle longer than [`CLAIM_IDLE`], from `cursor`; the next cursor
    /// (`0-0` once the whole pending list was looked at).
    async fn claim(
        &self,
        c: &mut MultiplexedConnection,
        key: &str,
        cursor: &str,
    ) -> redis::RedisResult<(String, Vec<(String, Option<Bytes>)>)> {
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(key)
            .arg(STREAM_GROUP)
            .arg(&self.client_id)
            .arg(CLAIM_IDLE.as_millis() as u64)
            .arg(cursor)
            .arg("COUNT")
            .arg(READ_COUNT)
            .query_async(c)
            .await?;
        let mut parts = into_items(reply).into_iter();
        let next = parts.next().and_then(text).unwrap_or_else(|| "0-0".into());
        let entries = parts.next().map(entries).unwrap_or_default();
        Ok((next, entries))
    }

    /// Hands entries to this connection's subscribers, one each in turn; acknowledges them
    /// once handed over, or gives each a receipt. False when no subscriber is left.
    async fn hand_over(
        self: &Arc<Self>,
        c: &mut MultiplexedConnection,
        key: &str,
        entries: Vec<(String, Option<Bytes>)>,
        acknowledge: Acknowledge,
    ) -> bool {
        let mut done = Vec::new();
        for (id, item) in entries {
            let decoded = item
                .ok_or_else(|| "its entry has no message field".to_owned())
                .and_then(|item| envelope::decode(item).map_err(|e| e.0.to_owned()))
                .and_then(|d| match d.topic.clone() {
                    Some(topic) => Ok(d.into_message(topic)),
                    None => Err("its envelope names no topic".to_owned()),
                });
            let message = match decoded {
                Ok(m) => m,
                Err(e) => {
                    // Never deliverable: done with.
                    self.meter.discard("a durable stream entry", &e);
                    done.push(id);
                    continue;
                }
            };
            let target = {
                let routes = self.routes();
                let Some(reader) = routes.lists.get(key) else { return false };
                reader.members.pick().cloned()
            };
            let Some(target) = target else { return false };
            if acknowledge == Acknowledge::OnHandOver {
                target.deliver(message).await;
                done.push(id);
            } else {
                target.deliver(message.with_receipt(self.stream_receipt(key, id))).await;
            }
        }
        if !done.is_empty()
            && let Err(e) = acknowledge_entries(c, key, &done).await
        {
            tracing::debug!(error = %e, key, "acknowledging durable stream entries");
        }
        true
    }

    /// A receipt acknowledging entry `id` of stream `key` over the main connection.
    fn stream_receipt(self: &Arc<Self>, key: &str, id: String) -> Receipt {
        let shared = Arc::downgrade(self);
        let key = key.to_owned();
        self.acks.receipt(async move {
            let Some(shared) = shared.upgrade() else { return };
            let Some(mut conn) = shared.live() else { return };
            if let Err(e) = acknowledge_entries(&mut conn, &key, &[id]).await {
                // Taken by a reader again after CLAIM_IDLE: at least once.
                tracing::debug!(error = %e, key, "acknowledging a durable stream entry");
            }
        })
    }

    /// Makes what is pending for this consumer claimable by the next reader at once.
    async fn give_back(&self, c: &mut MultiplexedConnection, key: &str) {
        let pending: redis::RedisResult<Value> = redis::cmd("XPENDING")
            .arg(key)
            .arg(STREAM_GROUP)
            .arg("-")
            .arg("+")
            .arg(BATCH)
            .arg(&self.client_id)
            .query_async(c)
            .await;
        let ids: Vec<String> = match pending {
            Ok(v) => into_items(v)
                .into_iter()
                .filter_map(|p| into_items(p).into_iter().next())
                .filter_map(text)
                .collect(),
            Err(e) => {
                tracing::debug!(error = %e, key, "listing what a durable reader holds");
                return;
            }
        };
        if ids.is_empty() {
            return;
        }
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(key).arg(STREAM_GROUP).arg(&self.client_id).arg(0);
        for id in &ids {
            cmd.arg(id);
        }
        // Idle as if held for a day: past CLAIM_IDLE for every reader.
        cmd.arg("IDLE").arg(86_400_000u64).arg("JUSTID");
        if let Err(e) = cmd.query_async::<Value>(c).await {
            tracing::debug!(error = %e, key, "giving back what a durable reader held");
        }
    }
}

/// `XACK`s and deletes entries of stream `key`: done with (only its one group reads it).
async fn acknowledge_entries(
    c: &mut MultiplexedConnection,
    key: &str,
    ids: &[String],
) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    pipe.cmd("XACK").arg(key).arg(STREAM_GROUP).arg(ids).ignore();
    pipe.cmd("XDEL").arg(key).arg(ids).ignore();
    pipe.exec_async(c).await
}

/// The items of an array, set or map (keys and values in turn); nothing for anything else.
fn into_items(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) | Value::Set(items) => items,
        Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => Vec::new(),
    }
}

fn text(v: Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

/// The entries of an `XREADGROUP` reply (one stream: `[key, entries]`, or a RESP3 map).
fn streams_entries(reply: Value) -> Vec<(String, Option<Bytes>)> {
    match reply {
        Value::Map(streams) => streams.into_iter().flat_map(|(_, e)| entries(e)).collect(),
        Value::Array(streams) => streams
            .into_iter()
            .flat_map(|s| into_items(s).into_iter().nth(1).map(entries).unwrap_or_default())
            .collect(),
        _ => Vec::new(),
    }
}

/// Stream entries `[[id, [field, value, ...]], ...]`: each id with its `m` field. An entry
/// deleted meanwhile comes without fields.
fn entries(v: Value) -> Vec<(String, Option<Bytes>)> {
    into_items(v)
        .into_iter()
        .filter_map(|entry| {
            let mut parts = into_items(entry).into_iter();
            let id = parts.next().and_then(text)?;
            let mut fields = parts.next().map(into_items).unwrap_or_default().into_iter();
            let mut message = None;
            while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
                if let (Some("m"), Value::BulkString(b)) = (text(name).as_deref(), value) {
                    message = Some(Bytes::from(b));
                }
            }
            Some((id, message))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn entries_are_read_from_resp2_and_resp3_replies() {
        let entry = Value::Array(vec![bulk("1-0"), Value::Array(vec![bulk("m"), bulk("x")])]);
        let deleted = Value::Array(vec![bulk("2-0"), Value::Nil]);
        let list = Value::Array(vec![entry, deleted]);
        let resp3 = Value::Map(vec![(bulk("k"), list.clone())]);
        let resp2 = Value::Array(vec![Value::Array(vec![bulk("k"), list])]);
        for reply in [resp3, resp2] {
            let got = streams_entries(reply);
            assert_eq!(got.len(), 2);
            assert_eq!(got[0], ("1-0".into(), Some(Bytes::from_static(b"x"))));
            assert_eq!(got[1], ("2-0".into(), None));
        }
        assert!(streams_entries(Value::Nil).is_empty());
    }
}
