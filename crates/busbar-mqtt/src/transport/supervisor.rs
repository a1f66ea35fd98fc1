//! The supervisor: the one task that polls rumqttc's event loop. It reconnects (to the next
//! server of the list, with jittered exponential backoff after a whole round failed),
//! restores every subscription after a reconnect, swaps in fresh tokens, and announces
//! connection changes.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use busbar_core::auth::TokenPlacement;
use busbar_core::error::ConnectError;
use busbar_core::message::Message;
use busbar_core::transport::ConnectionEvent;
use busbar_transport_kit::Servers;
use busbar_transport_kit::login::{Login, Refresher, next_token};
use tokio::sync::oneshot;

use super::state::{Shared, lock};
use super::subscribe::SUBACK_TIMEOUT;
use crate::protocol::{Events, Happened};

/// The user name and password rumqttc presents, if any (it takes both or neither).
pub(super) fn credentials(login: &Login) -> Option<(String, String)> {
    if login.is_empty() {
        return None;
    }
    Some((login.user.clone().unwrap_or_default(), login.password.clone().unwrap_or_default()))
}

/// What the supervisor needs to connect again, to this server or the next.
pub(super) struct Dialing {
    /// The servers, and which is in use.
    pub(super) servers: Servers,
    /// Fetches the next token before the current one expires.
    pub(super) refresher: Option<Refresher>,
    /// The URL's credentials, which each token is placed in.
    pub(super) login: Login,
    pub(super) placement: TokenPlacement,
    /// The credentials presented now (with the current token).
    pub(super) presented: Login,
    pub(super) will: Option<Message>,
}

impl Dialing {
    /// Points the event loop at the next server (when there is another) and says how long
    /// to wait before connecting.
    fn next_server(&mut self, shared: &Shared, eventloop: &mut Events) -> std::time::Duration {
        let before = self.servers.current().clone();
        let wait = self.servers.failed();
        if *self.servers.current() != before {
            match super::options::options(
                &shared.settings,
                self.servers.current(),
                &shared.client_id,
                credentials(&self.presented),
                self.will.as_ref(),
            ) {
                Ok(options) => eventloop.aim(options, self.servers.current()),
                // The options were built once already; nothing about them can fail now.
                Err(e) => tracing::warn!(error = %e, "cannot move to the next server"),
            }
        }
        wait
    }
}

/// Owns the event loop until shutdown. Reports the first connection's outcome on `first`.
pub(super) async fn supervise(
    shared: Arc<Shared>,
    mut eventloop: Events,
    first: oneshot::Sender<Result<(), ConnectError>>,
    mut dialing: Dialing,
) {
    // The first connect tries each server once before it gives up.
    let mut first_tries = dialing.servers.all().len();
    let mut first = Some(first);
    let mut connected = false;
    let mut ever_connected = false;
    // Set while a DISCONNECT is on its way for a token refresh: the loop goes on to
    // reconnect with the new credentials instead of ending.
    let mut refreshing = false;
    // Set once that DISCONNECT is out: the connection it ends comes back to the same server,
    // at once.
    let mut renewing = false;
    loop {
        let polled = tokio::select! {
            _ = shared.life.token().cancelled() => break,
            Some(token) = next_token(&mut dialing.refresher) => {
                dialing.presented = dialing.login.with_token(&token, dialing.placement);
                if let Some((user, pass)) = credentials(&dialing.presented) {
                    eventloop.set_credentials(user, pass);
                }
                // A clean goodbye (no will), then a reconnect that presents the new token.
                refreshing = shared.client.try_disconnect().is_ok();
                continue;
            }
            p = eventloop.poll() => p,
        };
        match polled {
            Ok(Happened::Connected { max_packet, resent }) => {
                dialing.servers.connected();
                let server = dialing.servers.current().to_string();
                if resent > 0 {
                    tracing::info!(
                        resent,
                        "re-sending the requests the last connection left unfinished"
                    );
                }
                connected = true;
                let epoch = {
                    let mut e = lock(&shared.epoch);
                    *e += 1;
                    *e
                };
                if ever_connected {
                    announce_when_restored(shared.clone(), epoch, server);
                } else {
                    ever_connected = true;
                    shared.meter.announce(ConnectionEvent::Connected { server });
                }
                let broker_max = max_packet.map_or(usize::MAX, |m| m as usize);
                shared.max_packet.store(shared.packet_limit().min(broker_max), Ordering::Relaxed);
                if let Some(tx) = first.take() {
                    let _ = tx.send(Ok(()));
                }
            }
            Ok(Happened::Message(received, incoming)) => {
                let _turn = if shared.settings.acknowledges_after_hand_over() {
                    Some(shared.handing_over.lock().await)
                } else {
                    None
                };
                shared.dispatch(received, incoming).await;
            }
            Ok(Happened::SubAck { pkid, refused }) => shared.on_suback(pkid, refused),
            Ok(Happened::SentSubscribe(pkid)) => shared.on_outgoing_subscribe(pkid),
            Ok(Happened::Unsubscribed { pkid, refused }) => shared.on_unsuback(pkid, refused),
            Ok(Happened::SentUnsubscribe(pkid)) => shared.on_outgoing_unsubscribe(pkid),
            // The DISCONNECT of a graceful close is on the wire: stop here, or the loop would
            // reconnect (and a later cut would make the broker send the will after all).
            Ok(Happened::SentDisconnect) if refreshing => {
                refreshing = false;
                renewing = true;
            }
            Ok(Happened::SentDisconnect) => break,
            // A QoS 1 publish is done at its PUBACK, a QoS 2 one at its PUBCOMP.
            Ok(Happened::Acked(_) | Happened::Completed) => shared.on_acked(),
            Ok(Happened::Refused { reason, caller_told, .. }) => {
                shared.refused(&reason, caller_told)
            }
            Ok(
                Happened::SentPublish(_)
                | Happened::HeldBack(_)
                | Happened::Received(_)
                | Happened::Other,
            ) => {}
            Err(failure) => {
                for given_up in eventloop.take_given_up() {
                    shared.give_up(&given_up.topic);
                }
                if first.is_some() {
                    first_tries -= 1;
                    if first_tries > 0 {
                        tracing::debug!(
                            server = %dialing.servers.current(),
                            reason = failure.reason(),
                            "trying the next server"
                        );
                        dialing.next_server(&shared, &mut eventloop);
                        continue;
                    }
                }
                if let Some(tx) = first.take() {
                    let _ = tx.send(Err(failure.into_connect_error(&shared.settings.shown)));
                    return;
                }
                if connected {
                    connected = false;
                    let mut epoch = lock(&shared.epoch);
                    *epoch += 1;
                    shared.meter.announce(ConnectionEvent::Disconnected {
                        reason: failure.reason().to_owned(),
                    });
                }
                let wait = if std::mem::take(&mut renewing) {
                    std::time::Duration::ZERO
                } else {
                    dialing.next_server(&shared, &mut eventloop)
                };
                if dialing.servers.exhausted() {
                    // `?max_reconnect_attempts=` reached: the connection closes, and says so.
                    tracing::warn!(
                        reason = failure.reason(),
                        "giving up reconnecting to {} after the attempts allowed",
                        shared.settings.shown
                    );
                    shared.end();
                    break;
                }
                tokio::select! {
                    _ = shared.life.token().cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// After a reconnect: re-subscribes everything and announces `Reconnected` once the broker
/// acknowledged every restored subscription (which the supervisor must go on polling to
/// receive), within one deadline for all of them, and not at all if the connection was lost
/// again meanwhile. A refused or unanswered one is logged; the event still comes, as
/// waiting longer would not change it.
fn announce_when_restored(shared: Arc<Shared>, epoch: u64, server: String) {
    let acks = shared.resubscribe_all();
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + SUBACK_TIMEOUT;
        for ack in acks {
            match tokio::time::timeout_at(deadline, ack).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => {
                    tracing::warn!(error = %e, "a subscription was not restored");
                }
                // The connection went again: its own reconnect takes over.
                Ok(Err(_)) => return,
                Err(_) => {
                    tracing::warn!(
                        "the broker did not acknowledge every restored subscription within \
                         {SUBACK_TIMEOUT:?}"
                    );
                    break;
                }
            }
        }
        let current = lock(&shared.epoch);
        if *current == epoch {
            shared.meter.announce(ConnectionEvent::Reconnected { server });
        }
    });
}
