//! A layer that puts every topic of a connection under a prefix.
//!
//! Deployments share one broker between sites or tenants by a topic prefix (CELINE's
//! `topic_prefix`, `celine/dt/...`). Under this layer the application names its topics as if
//! the prefix did not exist: `plant/boiler` is published as `<prefix>/plant/boiler`, a
//! subscription to `plant/#` is made to `<prefix>/plant/#`, and what arrives carries its
//! topic (and reply topic) with the prefix taken off.
//!
//! Topics whose first level starts with `_` belong to the transports (`_busbar/...` reply
//! inboxes and named queues, NATS's `_INBOX`) and stay as they are: a reply goes back to the
//! inbox its request named, wherever that is.

use std::sync::Arc;
use std::time::Duration;

use super::{
    BoxFuture, Capabilities, Completion, ConnectionEvents, SubscribeOptions, Subscription,
    Transport,
};
use crate::error::{CloseError, Error, PublishError, RequestError, Result, SubscribeError};
use crate::message::Message;
use crate::stats::StatsSnapshot;
use crate::topic::{Topic, TopicError, TopicFilter};

/// A transport whose topics all live under a prefix.
pub struct Prefixed {
    inner: Arc<dyn Transport>,
    /// Without a trailing `/`.
    prefix: Arc<str>,
}

impl Prefixed {
    /// Puts `inner`'s topics under `prefix` (leading and trailing `/` ignored). The prefix
    /// must be a valid topic without wildcards.
    pub fn new(inner: Arc<dyn Transport>, prefix: &str) -> Result<Prefixed> {
        let prefix = prefix.trim_matches('/');
        Topic::new(prefix).map_err(|e| Error::Config(format!("topic prefix {prefix:?}: {e}")))?;
        Ok(Prefixed { inner, prefix: prefix.into() })
    }

    /// The prefix, without slashes around it.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn add(&self, topic: &Topic) -> Result<Topic, TopicError> {
        if transport_owned(topic.as_str()) {
            return Ok(topic.clone());
        }
        Topic::new(format!("{}/{}", self.prefix, topic.as_str()))
    }

    fn add_to_message(&self, mut message: Message) -> Result<Message, TopicError> {
        message.topic = self.add(&message.topic)?;
        if let Some(reply) = message.reply_to.take() {
            message.reply_to = Some(self.add(&reply)?);
        }
        Ok(message)
    }
}

/// Reply inboxes and named queues: names a transport made, never prefixed.
fn transport_owned(topic: &str) -> bool {
    topic.starts_with('_')
}

/// Takes `prefix/` off `topic`; a topic outside the prefix (a transport's own reply inbox)
/// stays as it is.
fn strip(prefix: &str, topic: Topic) -> Topic {
    let rest = topic.as_str().strip_prefix(prefix).and_then(|r| r.strip_prefix('/'));
    match rest.map(Topic::new) {
        Some(Ok(t)) => t,
        _ => topic,
    }
}

fn strip_message(prefix: &str, mut m: Message) -> Message {
    m.topic = strip(prefix, m.topic);
    m.reply_to = m.reply_to.map(|r| strip(prefix, r));
    m
}

impl Transport for Prefixed {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn client_id(&self) -> &str {
        self.inner.client_id()
    }

    fn server(&self) -> Option<String> {
        self.inner.server()
    }

    fn capabilities(&self) -> &Capabilities {
        self.inner.capabilities()
    }

    fn check_destination(&self, topic: &Topic) -> Result<(), PublishError> {
        self.inner.check_destination(&self.add(topic)?)
    }

    fn publish(&self, message: Message) -> Completion<'_> {
        match self.add_to_message(message) {
            Ok(m) => self.inner.publish(m),
            Err(e) => Completion::ready(Err(e.into())),
        }
    }

    fn remove_durable<'a>(
        &'a self,
        name: &'a str,
        filter: &'a TopicFilter,
    ) -> BoxFuture<'a, Result<(), SubscribeError>> {
        Box::pin(async move {
            let filter = if transport_owned(filter.as_str()) {
                filter.clone()
            } else {
                TopicFilter::new(format!("{}/{}", self.prefix, filter.as_str()))?
            };
            self.inner.remove_durable(name, &filter).await
        })
    }

    fn subscribe(
        &self,
        options: SubscribeOptions,
    ) -> BoxFuture<'_, Result<Subscription, SubscribeError>> {
        Box::pin(async move {
            let asked = options.filter.clone();
            let mut options = options;
            if !transport_owned(asked.as_str()) {
                options.filter = TopicFilter::new(format!("{}/{}", self.prefix, asked.as_str()))?;
            }
            let subscription = self.inner.subscribe(options).await?;
            let prefix = self.prefix.clone();
            Ok(subscription.rewritten(asked, move |m| strip_message(&prefix, m)))
        })
    }

    fn request(
        &self,
        message: Message,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Message, RequestError>> {
        Box::pin(async move {
            let message = self.add_to_message(message)?;
            let reply = self.inner.request(message, timeout).await?;
            Ok(strip_message(&self.prefix, reply))
        })
    }

    fn events(&self) -> ConnectionEvents {
        self.inner.events()
    }

    fn stats(&self) -> StatsSnapshot {
        self.inner.stats()
    }

    fn close(&self) -> BoxFuture<'_, Result<(), CloseError>> {
        self.inner.close()
    }
}
