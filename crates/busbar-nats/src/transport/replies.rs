//! The reply inbox: one NATS subscription per connection, to `_busbar.inbox.<32 random hex
//! digits>.*`, made on the first request. Each request's reply subject is that inbox plus
//! one token, its [`CorrelationId`] in hex, so nobody else can guess where a reply would be
//! taken; a reply is handed to its waiting request by that token, and one for no waiting
//! request is counted late.
//!
//! Replies are taken from async-nats' buffer by the inbox's waker (see the `pump` room):
//! completing a request never waits, so a reply reaches its requester with no task of
//! busbar's in between.
//!
//! A request to a subject nobody subscribes to is answered at once by the server with a
//! message of status 503 on the reply subject (async-nats announces headers and "no
//! responders" support in its CONNECT): that request fails with `NoResponders`.

use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::Poll;

use busbar_core::error::RequestError;
use busbar_transport_kit::{CorrelationId, Inbox};
use futures_util::Stream;
use tokio_util::sync::CancellationToken;

use super::pump::{Drain, Pump};
use crate::convert::message_in;

/// This connection's reply inbox subscription.
pub(super) struct Replies {
    /// The inbox subject, without the wildcard token.
    subject: String,
    subscriber: Mutex<async_nats::Subscriber>,
    pump: Pump,
    inbox: Arc<Inbox>,
}

impl Replies {
    /// Takes replies from `subscriber` (subscribed to `subject` plus `.*`) into `inbox`,
    /// until `stop`.
    pub(super) fn start(
        subject: String,
        subscriber: async_nats::Subscriber,
        inbox: Arc<Inbox>,
        stop: CancellationToken,
    ) -> Arc<Replies> {
        let replies = Arc::new(Replies {
            subject,
            subscriber: Mutex::new(subscriber),
            pump: Pump::new(),
            inbox,
        });
        replies.pump.arm(&replies);
        tokio::spawn(redrain(Arc::downgrade(&replies), stop));
        // Registers the waker.
        replies.drain();
        replies
    }

    /// The reply subject of the request `id`.
    pub(super) fn reply_subject(&self, id: CorrelationId) -> String {
        format!("{}.{}", self.subject, id.to_hex())
    }

    /// Hands one message on the inbox to the request it answers (by the subject's last
    /// token), or counts it late.
    fn complete(&self, m: async_nats::Message) {
        let id = m.subject.rsplit_once('.').and_then(|(_, token)| CorrelationId::from_hex(token));
        let outcome = if m.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
            // The request names its topic when it fails (see `Shared::request`).
            Err(RequestError::no_responders("the requested topic"))
        } else {
            message_in(m, None).map_err(RequestError::from)
        };
        self.inbox.complete_id(id, outcome);
    }
}

impl Drain for Replies {
    fn drain(&self) {
        self.pump.run(&self.subscriber, |subscriber, cx| {
            while let Poll::Ready(Some(m)) = Pin::new(&mut *subscriber).poll_next(cx) {
                self.complete(m);
            }
        });
    }
}

/// Drains the inbox again when a wake came while a drain ran (see the `pump` room).
async fn redrain(replies: Weak<Replies>, stop: CancellationToken) {
    loop {
        let Some(r) = replies.upgrade() else { return };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = r.pump.redrain_wanted() => {
                tokio::task::unconstrained(async { r.drain() }).await;
            }
        }
    }
}
