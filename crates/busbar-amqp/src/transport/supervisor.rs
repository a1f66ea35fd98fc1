//! The supervisor: the one task that owns the connection. It connects, opens the shared
//! channels, starts the reply consumer and attaches every subscription, then publishes the
//! live [`Link`]; when the connection fails (or a fresh token is due) it withdraws the link,
//! fails the requests whose replies can no longer come, and starts again with jittered
//! exponential backoff.

use std::sync::Arc;
use std::time::Duration;

use busbar_core::auth::TokenPlacement;
use busbar_core::error::{ConnectError, ConnectErrorKind, SubscribeError, SubscribeErrorKind};
use busbar_core::transport::ConnectionEvent;
use busbar_transport_kit::Server;
use busbar_transport_kit::endpoint::{self, config_error};
use busbar_transport_kit::login::{Login, Refresher, next_token};
use futures_util::StreamExt;
use lapin::ExchangeKind;
use lapin::options::{ConfirmSelectOptions, ExchangeDeclareOptions, QueueDeleteOptions};
use lapin::types::{FieldTable, ShortString};
use tokio::sync::{mpsc, oneshot};

use super::failure::{TRANSPORT, broker, connect_kind, describe};
use super::replies::start_replies;
use super::state::{Link, Shared, lock};
use crate::settings::DEFAULT_EXCHANGE;

/// Why the supervisor left a live link for a new one after a token refresh.
const TOKEN_REFRESH: &str = "token refresh";

/// The failure of connecting to `server`, from lapin's error.
fn connect_error(shared: &Shared, server: &Server, e: lapin::Error) -> ConnectError {
    let url = &shared.settings.shown;
    let at =
        if shared.settings.servers.len() > 1 { format!(" (at {server})") } else { String::new() };
    ConnectError::new(connect_kind(&e), format!("not connected to {url}{at}: {}", describe(&e)))
        .with_source(e)
}

/// A subscription that could not be restored, as the failure of the connection's set-up.
fn set_up_error(e: SubscribeError) -> ConnectError {
    e.map_kind(|k| match k {
        SubscribeErrorKind::NotConnected => ConnectErrorKind::Unreachable,
        SubscribeErrorKind::Refused => ConnectErrorKind::Refused,
        SubscribeErrorKind::TimedOut => ConnectErrorKind::TimedOut,
        _ => ConnectErrorKind::Broker,
    })
}

/// Opens a connection and its shared channels.
async fn open_link(shared: &Shared, generation: u64) -> Result<Arc<Link>, ConnectError> {
    let settings = &shared.settings;
    let login = lock(&shared.login).clone();
    let server = lock(&shared.servers).current().clone();
    let uri = lapin::uri::AMQPUri {
        scheme: if settings.tls.is_some() {
            lapin::uri::AMQPScheme::AMQPS
        } else {
            lapin::uri::AMQPScheme::AMQP
        },
        authority: lapin::uri::AMQPAuthority {
            userinfo: lapin::uri::AMQPUserInfo {
                username: login.user.unwrap_or_default(),
                password: login.password.unwrap_or_default(),
            },
            host: server.host.clone(),
            port: server.port,
        },
        vhost: settings.vhost.clone(),
        query: lapin::uri::AMQPQueryString {
            heartbeat: settings.heartbeat,
            frame_max: Some(settings.frame_max),
            connection_timeout: Some(
                u64::try_from(settings.connect_timeout.as_millis()).unwrap_or(u64::MAX),
            ),
            ..Default::default()
        },
    };
    let tls = crate::tls::config(settings.tls.as_ref())?;
    let properties = lapin::ConnectionProperties::default()
        .with_connection_name(shared.client_id.clone().into());
    let runtime = lapin::runtime::default_runtime()
        .map_err(|e| broker::<ConnectErrorKind>("no async runtime for lapin").with_source(e))?;
    let connecting = lapin::Connection::connect_uri_with_config(uri, properties, tls, runtime);
    let conn = match tokio::time::timeout(settings.connect_timeout, connecting).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err(connect_error(shared, &server, e)),
        Err(_) => {
            return Err(endpoint::connect_timed_out(&settings.shown, settings.connect_timeout));
        }
    };
    let channels = async {
        let plain = conn.create_channel().await?;
        let confirm = conn.create_channel().await?;
        confirm.confirm_select(ConfirmSelectOptions::default()).await?;
        let rpc = conn.create_channel().await?;
        rpc.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok::<_, lapin::Error>((plain, confirm, rpc))
    };
    let (plain, confirm, rpc) = match channels.await {
        Ok(c) => c,
        Err(e) => {
            let _ = conn.close(200, "busbar: set-up failed".into()).await;
            return Err(ConnectError::new(
                connect_kind(&e),
                format!("{TRANSPORT}: opening channels: {}", describe(&e)),
            )
            .with_source(e));
        }
    };
    if settings.exchange != DEFAULT_EXCHANGE {
        let declared = plain
            .exchange_declare(
                shared.exchange.clone(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() },
                FieldTable::default(),
            )
            .await;
        if let Err(e) = declared {
            let _ = conn.close(200, "busbar: set-up failed".into()).await;
            // The exchange the URL names: a setting that cannot be used.
            return Err(config_error(format!(
                "the exchange {:?} cannot be used as a topic exchange: {}",
                settings.exchange,
                describe(&e)
            )));
        }
    }
    let confirm = super::renew::ConfirmChannel::new(confirm);
    Ok(Arc::new(Link { generation, conn, plain, confirm, rpc, unsettled: Arc::default() }))
}

/// Owns the connection until shutdown: connects, attaches every subscription, watches for
/// failure, and starts again. `login` is the URL's, in which each fresh token from the
/// `refresher` is placed where `placement` says.
pub(super) async fn supervise(
    shared: Arc<Shared>,
    first: oneshot::Sender<Result<(), ConnectError>>,
    mut trouble: mpsc::UnboundedReceiver<u64>,
    mut refresher: Option<Refresher>,
    login: Login,
    placement: TokenPlacement,
) {
    let mut first = Some(first);
    let mut generation: u64 = 0;
    // The first connect tries each server once before it gives up.
    let mut first_tries = shared.settings.servers.len();
    while !shared.life.token().is_cancelled() {
        let candidate = generation + 1;
        let setup = async {
            let link = open_link(&shared, candidate).await?;
            let replies = match start_replies(&shared, &link).await {
                Ok(r) => r,
                Err(e) => {
                    let _ = link.conn.close(200, "busbar: set-up failed".into()).await;
                    return Err(e);
                }
            };
            let _topology = shared.topology.lock().await;
            let ids: Vec<u64> = lock(&shared.subs).keys().copied().collect();
            for id in ids {
                if let Err(e) = shared.attach(&link, id).await {
                    replies.abort();
                    let _ = link.conn.close(200, "busbar: set-up failed".into()).await;
                    return Err(set_up_error(e));
                }
            }
            shared.link.send_replace(Some(link.clone()));
            Ok::<_, ConnectError>((link, replies))
        };
        let (link, replies) = match setup.await {
            Ok(v) => v,
            Err(e) => {
                let server = lock(&shared.servers).current().to_string();
                let wait = lock(&shared.servers).failed();
                if first.is_some() {
                    first_tries -= 1;
                    if first_tries > 0 {
                        tracing::debug!(%server, error = %e, "trying the next server");
                        continue;
                    }
                }
                if let Some(tx) = first.take() {
                    let _ = tx.send(Err(e));
                    return;
                }
                tracing::debug!(%server, error = %e, "reconnect failed");
                tokio::select! {
                    _ = shared.life.token().cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
                continue;
            }
        };
        generation = candidate;
        let server = {
            let mut servers = lock(&shared.servers);
            servers.connected();
            servers.current().to_string()
        };
        if let Some(tx) = first.take() {
            shared.meter.announce(ConnectionEvent::Connected { server });
            let _ = tx.send(Ok(()));
        } else {
            shared.meter.announce(ConnectionEvent::Reconnected { server });
        }
        let mut lapin_events = link.conn.events_listener();
        let reason = loop {
            tokio::select! {
                _ = shared.life.token().cancelled() => break None,
                Some(g) = trouble.recv() => {
                    if g == generation && !(link.plain.status().connected()
                        && link.confirm.connected()
                        && link.rpc.status().connected()
                        && link.conn.status().connected()
                        && consumers_alive(&shared, generation))
                    {
                        break Some("a channel or consumer failed".to_owned());
                    }
                }
                Some(token) = next_token(&mut refresher) => {
                    *lock(&shared.login) = login.with_token(&token, placement);
                    // Reconnect with the new token, keeping every subscription.
                    break Some(TOKEN_REFRESH.to_owned());
                }
                ev = lapin_events.next() => match ev {
                    Some(lapin::Event::Error(e)) if !link.conn.status().connected() => {
                        break Some(describe(&e));
                    }
                    Some(_) => {}
                    None => break Some("the connection ended".to_owned()),
                }
            }
        };
        replies.abort();
        let Some(reason) = reason else {
            // Shutdown: close gracefully, deleting private queues first.
            shutdown_link(&shared, &link).await;
            break;
        };
        shared.link.send_replace(None);
        shared.settle_before_newer(&link.unsettled);
        // Their replies can no longer come: direct reply-to lives and dies with its channel.
        shared.inbox.fail_where(
            |tag| tag <= generation,
            || {
                shared.life.not_connected(format!(
                    "the connection was lost before the reply came: {reason}"
                ))
            },
        );
        shared.meter.announce(ConnectionEvent::Disconnected { reason: reason.clone() });
        tracing::info!(url = %shared.settings.shown, reason = %reason, "connection lost; reconnecting");
        if link.conn.status().connected() {
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                link.conn.close(200, "busbar: reconnecting".into()),
            )
            .await;
        }
        if reason != TOKEN_REFRESH {
            // The broker in use is gone: the next one at once where there is another.
            let wait = lock(&shared.servers).failed();
            tokio::select! {
                _ = shared.life.token().cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// True when every subscription attached on `generation` still has its channel.
fn consumers_alive(shared: &Shared, generation: u64) -> bool {
    lock(&shared.subs).values().all(|s| match &s.active {
        // A consumer the broker cancelled (its queue deleted elsewhere) has ended with its
        // channel still open: it counts as broken, so the queue is declared again.
        Some(a) if a.generation == generation => {
            a.channel.status().connected() && !a.task.is_finished()
        }
        _ => true,
    })
}

async fn shutdown_link(shared: &Shared, link: &Link) {
    let private: Vec<String> =
        lock(&shared.subs).values().filter(|s| !s.shared_queue).map(|s| s.queue.clone()).collect();
    // The consumers acknowledge what they handed over and end, so that what a subscription
    // had is not given again after a clean close.
    let actives: Vec<super::state::Active> =
        lock(&shared.subs).values_mut().filter_map(|e| e.active.take()).collect();
    let aborts: Vec<_> = actives.iter().map(|a| a.task.abort_handle()).collect();
    let work = async {
        for active in &actives {
            active.stop.cancel();
        }
        for active in actives {
            let _ = active.task.await;
        }
        // Acknowledgements the application made go out before the goodbye.
        shared.acks.idle().await;
        for q in private {
            if let Ok(q) = ShortString::try_new(q) {
                let _ = link.plain.queue_delete(q, QueueDeleteOptions::default()).await;
            }
        }
        let _ = link.conn.close(200, "busbar: closed".into()).await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), work).await;
    for task in aborts {
        task.abort();
    }
}
