//! [`Connection`]: the cheap, cloneable handle every endpoint holds, and [`Connector`]: how
//! a URL becomes one.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::message::Message;
use crate::stats::StatsSnapshot;
use crate::topic::{Topic, TopicFilter};
use crate::transport::{
    BoxFuture, Capabilities, Completion, ConnectOptions, ConnectionEvents, SubscribeOptions,
    Subscription, Transport,
};

/// A handle to one broker connection. Clones share the connection; every endpoint of a node
/// holds one, so a node uses a single connection however many endpoints it has.
#[derive(Clone)]
pub struct Connection {
    transport: Arc<dyn Transport>,
}

impl Connection {
    /// Wraps a transport.
    pub fn new(transport: Arc<dyn Transport>) -> Self {
        Connection { transport }
    }

    /// The same connection with every topic under `prefix`: published and subscribed topics
    /// get `prefix/` put before them, and arriving messages have it taken off (see
    /// [`Prefixed`](crate::transport::Prefixed)).
    pub fn with_topic_prefix(&self, prefix: &str) -> Result<Connection> {
        let layer = crate::transport::Prefixed::new(self.transport.clone(), prefix)?;
        Ok(Connection::new(Arc::new(layer)))
    }

    /// The underlying transport.
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    /// Transport kind, e.g. `mem`.
    pub fn kind(&self) -> &'static str {
        self.transport.kind()
    }

    /// This connection's client id.
    pub fn client_id(&self) -> &str {
        self.transport.client_id()
    }

    /// What the transport supports.
    pub fn capabilities(&self) -> &Capabilities {
        self.transport.capabilities()
    }

    /// Publishes a message. (A plain function returning the transport's completion rather
    /// than an `async fn`: the message then moves once, straight to the transport.)
    pub fn publish(&self, message: Message) -> Completion<'_, ()> {
        match self.check(&message) {
            Ok(()) => self.transport.publish(message),
            Err(e) => Completion::ready(Err(e)),
        }
    }

    /// Publishes raw bytes on `topic` with default properties.
    pub async fn publish_bytes(&self, topic: &str, payload: impl Into<Bytes>) -> Result<()> {
        let topic = Topic::new(topic)?;
        self.publish(Message::new(topic, payload.into())).await
    }

    /// Subscribes with full options.
    pub async fn subscribe_with(&self, options: SubscribeOptions) -> Result<Subscription> {
        if options.queue_group.is_some() && !self.capabilities().queue_groups {
            return Err(self.unsupported("queue groups"));
        }
        if options.no_local && !self.capabilities().no_local {
            return Err(self.unsupported("no-local subscriptions"));
        }
        self.check_named_queue(options.filter.as_str(), options.filter.queue_name().is_some())?;
        self.transport.subscribe(options).await
    }

    /// Subscribes to `filter` with default options.
    pub async fn subscribe(&self, filter: &str) -> Result<Subscription> {
        self.subscribe_with(SubscribeOptions::new(TopicFilter::new(filter)?)).await
    }

    /// Sends a request and waits for its reply.
    pub async fn request(&self, message: Message, timeout: Duration) -> Result<Message> {
        self.check(&message)?;
        self.transport.request(message, timeout).await
    }

    /// Connection events.
    pub fn events(&self) -> ConnectionEvents {
        self.transport.events()
    }

    /// Counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.transport.stats()
    }

    /// Closes the connection for every clone of this handle.
    pub async fn close(&self) -> Result<()> {
        self.transport.close().await
    }

    /// The error for a feature this transport lacks.
    pub fn unsupported(&self, feature: &'static str) -> Error {
        Error::Unsupported { transport: self.kind(), feature }
    }

    /// Refuses what the transport cannot honour instead of silently degrading it.
    fn check(&self, message: &Message) -> Result<()> {
        let caps = self.capabilities();
        if message.retain && !caps.retained {
            return Err(self.unsupported("retained messages"));
        }
        if message.expires_at.is_some() && !caps.expiry {
            return Err(self.unsupported("message expiry"));
        }
        self.check_named_queue(message.topic.as_str(), message.topic.queue_name().is_some())
    }

    /// Refuses a topic or filter in the named-queue namespace where the transport has no
    /// named queues, or that names no queue (`names_one`) because it was not made by
    /// `Topic::named_queue`.
    fn check_named_queue(&self, name: &str, names_one: bool) -> Result<()> {
        if !crate::topic::is_queue_namespace(name) {
            return Ok(());
        }
        if !self.capabilities().named_queues {
            return Err(self.unsupported("named queues"));
        }
        if !names_one {
            return Err(Error::Config(format!(
                "{name} is in the named-queue namespace but names no queue; make it with \
                 Topic::named_queue"
            )));
        }
        Ok(())
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("kind", &self.kind())
            .field("client_id", &self.client_id())
            .finish()
    }
}

/// Turns URLs of some schemes into connections. Each transport crate provides one; the
/// `busbar` crate combines those compiled in.
pub trait Connector: Send + Sync + 'static {
    /// URL schemes handled, lowercase, without `://`.
    fn schemes(&self) -> &[&'static str];

    /// Connects to `url`.
    fn connect(&self, url: &str, options: ConnectOptions)
    -> BoxFuture<'static, Result<Connection>>;
}

/// The scheme of `url` (before `://`), lowercased.
pub fn url_scheme(url: &str) -> Result<String> {
    match url.split_once("://") {
        Some((scheme, _)) if !scheme.is_empty() => Ok(scheme.to_ascii_lowercase()),
        _ => Err(Error::InvalidUrl {
            url: redact_url(url),
            reason: "expected SCHEME://..., for example mem:// or mqtt://127.0.0.1:1883".into(),
        }),
    }
}

/// `url` with any password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    // The authority ends at the path or the query, whichever comes first (a query value
    // may hold an `@`).
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{path}")
            } else {
                format!("{scheme}://{user}@{host}{path}")
            }
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact_url("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact_url("mqtt://user@h"), "mqtt://user@h");
        // An `@` in the query is not the end of a login.
        assert_eq!(redact_url("mqtt://:p@h?x=@"), "mqtt://:***@h?x=@");
        assert_eq!(redact_url("mqtt://h?ca=a@b"), "mqtt://h?ca=a@b");
        assert_eq!(redact_url("mem://"), "mem://");
    }

    #[test]
    fn scheme_is_required() {
        assert_eq!(url_scheme("MQTT://h:1").expect("scheme"), "mqtt");
        let err = url_scheme("localhost:1883").expect_err("no scheme");
        assert!(err.to_string().contains("SCHEME://"), "{err}");
    }
}
