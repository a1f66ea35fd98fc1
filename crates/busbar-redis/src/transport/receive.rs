//! The receive path for pub/sub: messages the socket reader handed over, routed in arrival
//! order to the local subscriptions they are for.

use std::sync::Arc;

use busbar_core::queue::QueueReceiver;
use busbar_core::topic::Topic;
use busbar_transport_kit::delivery::deliver_all;
use bytes::Bytes;

use super::state::Shared;
use crate::envelope;

/// What the socket reader hands to the dispatcher.
pub(super) struct Inbound {
    pub(super) pattern: Option<Vec<u8>>,
    pub(super) channel: Vec<u8>,
    pub(super) payload: Vec<u8>,
}

impl Shared {
    /// Routes pub/sub messages to local subscriptions, in arrival order.
    pub(super) async fn dispatch(self: Arc<Self>, mut rx: QueueReceiver<Inbound>) {
        loop {
            let item = tokio::select! {
                _ = self.life.token().cancelled() => return,
                item = std::future::poll_fn(|cx| rx.poll_recv(cx)) => match item {
                    Some(i) => i,
                    None => return,
                },
            };
            let Ok(channel) = std::str::from_utf8(&item.channel) else { continue };
            let key = match &item.pattern {
                Some(p) => match std::str::from_utf8(p) {
                    Ok(p) => (true, p.to_owned()),
                    Err(_) => continue,
                },
                None => (false, channel.to_owned()),
            };
            let targets = self.routes().targets(&key, channel);
            if targets.is_empty() {
                continue;
            }
            let Ok(topic) = Topic::new(channel) else {
                self.meter.discard("a message on a channel that is not a busbar topic", &channel);
                continue;
            };
            let message = match envelope::decode(Bytes::from(item.payload)) {
                Ok(d) => d.into_message(topic),
                Err(e) => {
                    self.meter.discard("a message with a malformed envelope", &e.0);
                    continue;
                }
            };
            // Waiting here (a full `Block` subscription) holds back the dispatcher: Redis keeps
            // sending meanwhile, and what arrives waits in the bounded push buffer (and then
            // in the server's output buffer).
            deliver_all(&targets, message).await;
        }
    }
}
