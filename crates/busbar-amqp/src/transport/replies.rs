//! The reply path: one consumer of RabbitMQ's direct reply-to per link, handing each reply
//! to the request waiting for it (or counting it late).

use std::sync::Arc;

use busbar_core::error::{ConnectError, RequestError};
use busbar_core::topic::Topic;
use busbar_transport_kit::CorrelationId;
use futures_util::StreamExt;
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::failure::{connect_kind, describe};
use super::state::{Link, Shared};
use crate::convert;

/// The topic replies carry: direct reply-to names no topic of the request's.
const REPLY_TOPIC: &str = "_busbar/amqp-reply";

/// Consumes direct reply-to on the link's rpc channel and completes waiting requests.
pub(super) async fn start_replies(
    shared: &Arc<Shared>,
    link: &Link,
) -> Result<AbortHandle, ConnectError> {
    let consumer = link
        .rpc
        .basic_consume(
            convert::DIRECT_REPLY_TO.into(),
            format!("busbar-replies-{}", shared.nonce).into(),
            BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() },
            FieldTable::default(),
        )
        .await
        .map_err(|e| {
            ConnectError::new(
                connect_kind(&e),
                format!("amqp: consuming direct reply-to: {}", describe(&e)),
            )
            .with_source(e)
        })?;
    let weak = Arc::downgrade(shared);
    let generation = link.generation;
    Ok(tokio::spawn(async move {
        let mut consumer = consumer;
        let reply_topic = Topic::new(REPLY_TOPIC).ok();
        while let Some(next) = consumer.next().await {
            let Some(shared) = weak.upgrade() else { return };
            let delivery = match next {
                Ok(d) => d,
                Err(_) => {
                    let _ = shared.trouble.send(generation);
                    return;
                }
            };
            // Our requests carry their correlation id in hex; anything else is no reply of
            // ours that anyone waits for, and counted late.
            let id = delivery
                .properties
                .correlation_id()
                .as_ref()
                .and_then(|c| CorrelationId::from_hex(c.as_str()));
            let reply = match &reply_topic {
                Some(topic) => convert::message(
                    topic.clone(),
                    &delivery.properties,
                    delivery.data,
                    Instant::now(),
                )
                .map_err(RequestError::from),
                None => Err(RequestError::broker("amqp", "no topic for replies")),
            };
            shared.inbox.complete_id(id, reply);
        }
    })
    .abort_handle())
}
