//! commlib RPC: the `header`/`data` envelope, and on MQTT one reply topic `rpc-<32 hex>` per
//! call, subscribed before the request goes out, at QoS 1.
//!
//! commlib's own client keeps one reply slot, so one client object must not be used by two
//! callers at once. Here every call has its own reply topic, so one [`CommlibRpcClient`]
//! serves any number of concurrent callers and every reply reaches its caller.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use busbar_core::{Connection, Message, QoS, SubscribeOptions, Topic, TopicFilter};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// Splits an envelope into header and data; the header may be missing (0.13.1 replies
/// without one), the data may not.
fn open_envelope(topic: &str, bytes: &[u8]) -> Result<(RpcHeader, Value)> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| CommlibError::Body {
        topic: topic.to_owned(),
        reason: format!("not JSON: {e}"),
    })?;
    let Value::Object(mut map) = value else {
        return Err(CommlibError::Body { topic: topic.to_owned(), reason: "not an object".into() });
    };
    let data = map.remove("data").ok_or_else(|| CommlibError::Body {
        topic: topic.to_owned(),
        reason: "an RPC body without `data`".into(),
    })?;
    let header = match map.remove("header") {
        Some(h) => body::decode_value(topic, h)?,
        None => RpcHeader::default(),
    };
    Ok((header, data))
}

/// Calls a commlib RPC service.
pub struct CommlibRpcClient<Req, Resp> {
    conn: Connection,
    name: String,
    topic: Topic,
    timeout: Duration,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<Req: Serialize, Resp: DeserializeOwned> CommlibRpcClient<Req, Resp> {
    /// A client for the service `name` (e.g. `demo.add`), with a 10 s deadline per call.
    pub fn new(conn: &Connection, name: &str) -> Result<Self> {
        Ok(CommlibRpcClient {
            conn: conn.clone(),
            name: name.to_owned(),
            topic: pubsub::topic_for(conn, name)?,
            timeout: Duration::from_secs(10),
            _types: PhantomData,
        })
    }

    /// Sets the deadline of each call.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Calls the service once.
    pub async fn call(&self, request: &Req) -> Result<Resp> {
        let reply_to = names::reply_name();
        let filter = TopicFilter::new(&reply_to)
            .map_err(|e| CommlibError::Busbar(busbar_core::Error::Topic(e)))?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        // Subscribed (and acknowledged) before the request goes out, so the reply cannot
        // arrive first.
        let options = SubscribeOptions::new(filter).qos(QoS::AtLeastOnce).capacity(4);
        let mut replies = self.conn.subscribe_with(options).await?;
        let envelope = Outgoing { header: RpcHeader::new(reply_to, None), data: request };
        let payload = body::encode(self.topic.as_str(), &envelope)?;
        let message = Message::new(self.topic.clone(), payload).with_qos(QoS::AtLeastOnce);
        self.conn.publish(message).await?;
        let timeout = || CommlibError::Timeout { name: self.name.clone(), timeout: self.timeout };
        let reply = tokio::time::timeout_at(deadline, replies.recv())
            .await
            .map_err(|_| timeout())?
            .ok_or_else(timeout)?;
        let bytes = reply.payload.to_bytes().map_err(|e| CommlibError::Busbar(e.into()))?;
        let (_, data) = open_envelope(reply.topic.as_str(), &bytes)?;
        body::decode_value(reply.topic.as_str(), data)
    }
}

/// Serves a commlib RPC name: commlib clients (either generation) call it unchanged.
///
/// Replies always carry both `header` and `data` (0.13.2 clients fail without the header),
/// go to the request's `reply_to` with dots turned into slashes, at QoS 1, and echo the
/// request's `correlation_id`. Requests without `reply_to` are dropped, as commlib does.
/// Stops when dropped.
pub struct CommlibRpcService {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CommlibRpcService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CommlibRpcService {
    /// Subscribes to `name` (at QoS 1, as commlib services do) and answers each request with
    /// `handler`, each call in a task of its own.
    pub async fn spawn<Req, Resp, H, Fut>(conn: &Connection, name: &str, handler: H) -> Result<Self>
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        H: Fn(Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Resp> + Send + 'static,
    {
        let filter = TopicFilter::from(pubsub::topic_for(conn, name)?);
        let options = SubscribeOptions::new(filter).qos(QoS::AtLeastOnce);
        let mut requests = conn.subscribe_with(options).await?;
        let (conn, handler) = (conn.clone(), Arc::new(handler));
        let task = tokio::spawn(async move {
            while let Some(request) = requests.recv().await {
                let (conn, handler) = (conn.clone(), handler.clone());
                tokio::spawn(async move {
                    if let Err(e) = answer(&conn, &*handler, request).await {
                        tracing::warn!(error = %e, "commlib request not answered");
                    }
                });
            }
        });
        Ok(CommlibRpcService { task })
    }
}

async fn answer<Req, Resp, H, Fut>(conn: &Connection, handler: &H, request: Message) -> Result<()>
where
    Req: DeserializeOwned,
    Resp: Serialize,
    H: Fn(Req) -> Fut,
    Fut: Future<Output = Resp>,
{
    let topic = request.topic.as_str();
    let bytes = request.payload.to_bytes().map_err(|e| CommlibError::Busbar(e.into()))?;
    let (header, data) = open_envelope(topic, &bytes)?;
    if header.reply_to.is_empty() {
        tracing::debug!(topic, "commlib request without reply_to dropped");
        return Ok(());
    }
    let reply_topic = Topic::new(header.reply_to.replace('.', "/"))
        .map_err(|e| CommlibError::Busbar(busbar_core::Error::Topic(e)))?;
    let response = handler(body::decode_value(topic, data)?).await;
    let payload = {
        let envelope = Outgoing {
            header: RpcHeader::new(String::new(), header.correlation_id),
            data: &response,
        };
        body::encode(reply_topic.as_str(), &envelope)?
    };
    drop(response);
    conn.publish(Message::new(reply_topic, payload).with_qos(QoS::AtLeastOnce)).await?;
    Ok(())
}
