//! commlib RPC: the `header`/`data` envelope, carried the way commlib carries it on each
//! transport ([`Wire`]):
//!
//! * MQTT: the request on the service's topic at QoS 1, the reply on a topic `rpc-<32 hex>`
//!   of the call's own, subscribed before the request goes out.
//! * Redis: `RPUSH` of the request on the list named after the service, the reply pushed on a
//!   list `rpc-<32 hex>` of the call's own (both read as busbar named queues).
//! * AMQP: the request to the queue named after the service through the default exchange,
//!   the reply through RabbitMQ's direct reply-to, matched by correlation id; a service
//!   answers in the shape it was asked in (0.13.1 sends bare bodies, 0.13.2 envelopes).
//!
//! commlib's own client keeps one reply slot, so one client object must not be used by two
//! callers at once. Here every call has its own reply name (or correlation id), so one
//! [`CommlibRpcClient`] serves any number of concurrent callers and every reply reaches its
//! caller.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use busbar_core::{Connection, Message, QoS, SubscribeOptions, Topic, TopicFilter};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::compression::Compression;
use crate::error::{CommlibError, Result};
use crate::{body, names, now_ns, pubsub};

/// commlib's RPC header. Every key is optional when reading (commlib's models default them
/// all) and every key is written, in commlib's order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RpcHeader {
    /// Where the reply goes (empty in a reply).
    #[serde(default)]
    pub reply_to: String,
    /// Present from 0.13.2 on, usually null; echoed in replies.
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// Nanoseconds since the epoch.
    #[serde(default)]
    pub timestamp: Value,
    /// Always `json`.
    #[serde(default)]
    pub content_type: String,
    /// Always `utf8`.
    #[serde(default)]
    pub encoding: String,
    /// Who sent it.
    #[serde(default)]
    pub agent: String,
}

impl RpcHeader {
    fn new(reply_to: String, correlation_id: Option<String>) -> Self {
        RpcHeader {
            reply_to,
            correlation_id,
            timestamp: Value::from(now_ns()),
            content_type: "json".into(),
            encoding: "utf8".into(),
            agent: "busbar".into(),
        }
    }
}

#[derive(Serialize)]
struct Outgoing<'a, T> {
    header: RpcHeader,
    data: &'a T,
}

/// How commlib carries RPC on a transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Wire {
    /// Topics: the service's topic, a reply topic per call (MQTT, and busbar's in-process bus).
    Topics,
    /// Lists: the service's list, a reply list per call (Redis).
    Lists,
    /// Queues: the service's queue, and the broker's own reply-to (AMQP's direct reply-to).
    Queues,
}

impl Wire {
    /// The mechanism commlib uses on `conn`'s transport, from what the broker offers:
    /// where it has named queues, requests go to the service's queue, with the broker's own
    /// reply mechanism where it has one (AMQP) and a reply list otherwise (Redis); elsewhere
    /// to the service's topic with a reply topic per call (MQTT).
    pub fn of(conn: &Connection) -> Result<Wire> {
        let caps = conn.capabilities();
        Ok(match (caps.named_queues, caps.native_request) {
            (true, true) => Wire::Queues,
            (true, false) => Wire::Lists,
            (false, _) => Wire::Topics,
        })
    }

    /// Where requests to the service `name` go.
    fn service_topic(self, conn: &Connection, name: &str) -> Result<Topic> {
        match self {
            Wire::Topics => pubsub::topic_for(conn, name),
            Wire::Lists | Wire::Queues => {
                names::validate_name(name)?;
                named_queue(name)
            }
        }
    }
}

fn named_queue(name: &str) -> Result<Topic> {
    Topic::named_queue(name).map_err(|e| CommlibError::Busbar(busbar_core::Error::Topic(e)))
}

/// An RPC body as it arrived: in the envelope (with its header) or bare (AMQP, 0.13.1),
/// compressed or not.
struct Opened {
    header: Option<RpcHeader>,
    data: Value,
    compression: Compression,
}

/// Opens an RPC body of either shape: an object with both `header` and `data` is an
/// envelope, any other object is a bare body.
fn open(topic: &str, bytes: &[u8]) -> Result<Opened> {
    let compression = Compression::of(bytes);
    let Value::Object(mut map) = body::parse(topic, bytes)? else {
        return Err(CommlibError::Body { topic: topic.to_owned(), reason: "not an object".into() });
    };
    if map.get("header").is_some_and(Value::is_object) && map.contains_key("data") {
        let header = map.remove("header").unwrap_or_default();
        let data = map.remove("data").unwrap_or_default();
        let header = Some(body::decode_value(topic, header)?);
        return Ok(Opened { header, data, compression });
    }
    Ok(Opened { header: None, data: Value::Object(map), compression })
}

/// Calls a commlib RPC service.
pub struct CommlibRpcClient<Req, Resp> {
    conn: Connection,
    name: String,
    wire: Wire,
    topic: Topic,
    timeout: Duration,
    compression: Compression,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<Req: Serialize, Resp: DeserializeOwned> CommlibRpcClient<Req, Resp> {
    /// A client for the service `name` (e.g. `demo.add`), with a 10 s deadline per call.
    pub fn new(conn: &Connection, name: &str) -> Result<Self> {
        let wire = Wire::of(conn)?;
        Ok(CommlibRpcClient {
            conn: conn.clone(),
            name: name.to_owned(),
            wire,
            topic: wire.service_topic(conn, name)?,
            timeout: Duration::from_secs(10),
            compression: Compression::None,
            _types: PhantomData,
        })
    }

    /// Sets the deadline of each call.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Compresses requests, for a commlib service built with the same compression (replies
    /// are read compressed or not).
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Calls the service once.
    pub async fn call(&self, request: &Req) -> Result<Resp> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let reply = match self.wire {
            Wire::Topics | Wire::Lists => self.call_on_reply_name(request, deadline).await?,
            Wire::Queues => self.call_direct(request).await?,
        };
        let bytes = reply.payload.to_bytes().map_err(|e| CommlibError::Busbar(e.into()))?;
        let opened = open(reply.topic.as_str(), &bytes)?;
        body::decode_value(reply.topic.as_str(), opened.data)
    }

    fn timed_out(&self) -> CommlibError {
        CommlibError::Timeout { name: self.name.clone(), timeout: self.timeout }
    }

    /// MQTT and Redis: the reply comes on a name of the call's own, listened to before the
    /// request goes out so that it cannot arrive first.
    async fn call_on_reply_name(
        &self,
        request: &Req,
        deadline: tokio::time::Instant,
    ) -> Result<Message> {
        let reply_to = names::reply_name();
        let reply_topic = match self.wire {
            Wire::Lists => named_queue(&reply_to)?,
            _ => Topic::new(&reply_to)
                .map_err(|e| CommlibError::Busbar(busbar_core::Error::Topic(e)))?,
        };
        let options = SubscribeOptions::from(TopicFilter::from(reply_topic))
            .qos(QoS::AtLeastOnce)
            .capacity(4);
        let mut replies = self.conn.subscribe_with(options).await?;
        let envelope = Outgoing { header: RpcHeader::new(reply_to, None), data: request };
        let payload = body::encode_with(&self.name, &envelope, self.compression)?;
        let message = Message::new(self.topic.clone(), payload);
        self.conn.publish(message).await?;
        tokio::time::timeout_at(deadline, replies.recv())
            .await
            .map_err(|_| self.timed_out())?
            .ok_or_else(|| self.timed_out())
    }

    /// AMQP: direct reply-to, which the transport's request does; the envelope is what
    /// 0.13.2 services take (0.13.1's AMQP service never starts).
    async fn call_direct(&self, request: &Req) -> Result<Message> {
        let header = RpcHeader::new(DIRECT_REPLY_TO.to_owned(), None);
        let outgoing = Outgoing { header, data: request };
        let payload = body::encode_with(&self.name, &outgoing, self.compression)?;
        let message = Message::new(self.topic.clone(), payload)
            .with_header(busbar_core::message::header::CONTENT_TYPE, "application/json");
        match self.conn.request(message, self.timeout).await {
            Err(e) if e.kind() == busbar_core::error::RequestErrorKind::TimedOut => {
                Err(self.timed_out())
            }
            other => Ok(other?),
        }
    }
}

/// RabbitMQ's direct reply-to, which commlib's AMQP client names in its request header.
const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// The value commlib's Redis services skip in their list.
const QUEUE_INIT: &[u8] = b"QueueInit";

/// Serves a commlib RPC name: commlib clients (either generation) call it unchanged.
///
/// Replies carry both `header` and `data` (0.13.2 clients fail without the header), echo the
/// request's `correlation_id`, and go where commlib's clients wait: on MQTT to the request's
/// `reply_to` with dots turned into slashes, at QoS 1; on Redis pushed on the list it names;
/// on AMQP to the request's reply-to property, in the shape the request came in (bare for a
/// bare request), and compressed when the request was. Requests without a reply address are
/// dropped, as commlib does. Each request is handled in a task of its own. Stops when dropped.
pub struct CommlibRpcService {
    task: tokio::task::JoinHandle<()>,
    answered: tokio::sync::watch::Receiver<u64>,
}

impl Drop for CommlibRpcService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CommlibRpcService {
    /// Listens for requests to `name` (on MQTT at QoS 1, as commlib services do; on Redis
    /// the list `name`; on AMQP the queue `name`, declared as a shared queue so that
    /// several services can take turns) and answers each with `handler`.
    pub async fn spawn<Req, Resp, H, Fut>(conn: &Connection, name: &str, handler: H) -> Result<Self>
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        H: Fn(Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Resp> + Send + 'static,
    {
        let wire = Wire::of(conn)?;
        let filter = TopicFilter::from(wire.service_topic(conn, name)?);
        let options = SubscribeOptions::from(filter).qos(QoS::AtLeastOnce);
        let mut requests = conn.subscribe_with(options).await?;
        let (conn, handler, name) = (conn.clone(), Arc::new(handler), Arc::<str>::from(name));
        let (count, answered) = tokio::sync::watch::channel(0u64);
        let count = Arc::new(count);
        let task = tokio::spawn(async move {
            while let Some(request) = requests.recv().await {
                let (conn, handler, name) = (conn.clone(), handler.clone(), name.clone());
                let count = count.clone();
                tokio::spawn(async move {
                    match answer(wire, &conn, &name, &*handler, request).await {
                        Ok(true) => count.send_modify(|n| *n += 1),
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(service = &*name, error = %e, "commlib request not answered");
                        }
                    }
                });
            }
        });
        Ok(CommlibRpcService { task, answered })
    }

    /// The number of requests answered so far (answers handed to the connection), to read
    /// or to wait on.
    pub fn answered(&self) -> tokio::sync::watch::Receiver<u64> {
        self.answered.clone()
    }
}

/// Answers one request: `true` once the answer is handed to the connection, `false` for a
/// request that gets none (commlib's Redis sentinel, no reply address).
async fn answer<Req, Resp, H, Fut>(
    wire: Wire,
    conn: &Connection,
    name: &str,
    handler: &H,
    request: Message,
) -> Result<bool>
where
    Req: DeserializeOwned,
    Resp: Serialize,
    H: Fn(Req) -> Fut,
    Fut: Future<Output = Resp>,
{
    let bytes = request.payload.to_bytes().map_err(|e| CommlibError::Busbar(e.into()))?;
    if wire == Wire::Lists && bytes.as_ref() == QUEUE_INIT {
        return Ok(false);
    }
    let opened = open(name, &bytes)?;
    let header_reply = opened.header.as_ref().map(|h| h.reply_to.as_str()).unwrap_or_default();
    let reply_topic = match wire {
        Wire::Topics if !header_reply.is_empty() => Some(
            Topic::new(header_reply.replace('.', "/"))
                .map_err(|e| CommlibError::Busbar(busbar_core::Error::Topic(e)))?,
        ),
        Wire::Lists if !header_reply.is_empty() => Some(named_queue(header_reply)?),
        // The property first; 0.13.2 services fall back to the header's name too.
        Wire::Queues => match request.reply_to.clone() {
            Some(topic) => Some(topic),
            None if !header_reply.is_empty() => Some(named_queue(header_reply)?),
            None => None,
        },
        _ => None,
    };
    let Some(reply_topic) = reply_topic else {
        tracing::debug!(service = name, "commlib request without a reply address dropped");
        return Ok(false);
    };
    // The reply address came off the wire: one the broker would refuse is never answered.
    if let Err(e) = conn.check_destination(&reply_topic) {
        tracing::warn!(service = name, error = %e, "commlib request refused: no reply can reach its reply address");
        return Ok(false);
    }
    let enveloped = opened.header.is_some() || wire != Wire::Queues;
    let compression = opened.compression;
    let correlation = opened.header.and_then(|h| h.correlation_id);
    let response = handler(body::decode_value(name, opened.data)?).await;
    let payload: Bytes = if enveloped {
        let envelope =
            Outgoing { header: RpcHeader::new(String::new(), correlation), data: &response };
        body::encode_with(name, &envelope, compression)?
    } else {
        body::encode_with(name, &response, compression)?
    };
    drop(response);
    let mut reply = Message::new(reply_topic, payload);
    if wire == Wire::Queues {
        reply.correlation_id = request.correlation_id;
        reply = reply.with_header(busbar_core::message::header::CONTENT_TYPE, "application/json");
    }
    conn.publish(reply).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The envelope goes out as commlib 0.13.2's models write it: `header` then `data`, the
    /// header's keys in `CommRPCHeader`'s order.
    #[test]
    fn the_envelope_keeps_commlibs_key_order() {
        let data = serde_json::json!({"a": 1});
        let envelope = Outgoing { header: RpcHeader::new("r".into(), None), data: &data };
        let body = body::encode("t", &envelope).expect("encodes");
        let text = String::from_utf8(body.to_vec()).expect("utf-8");
        let keys = ["header", "reply_to", "correlation_id", "timestamp", "content_type"];
        let at: Vec<usize> = keys
            .iter()
            .chain(&["encoding", "agent", "data"])
            .map(|k| text.find(&format!("\"{k}\":")).unwrap_or_else(|| panic!("{k} in {text}")))
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "keys out of commlib's order: {text}");
    }
}
