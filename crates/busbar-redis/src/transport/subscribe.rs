//! Subscribing: plain subscriptions (a Redis `SUBSCRIBE` or `PSUBSCRIBE` shared by every
//! local subscription that needs it), queue groups (a list per group, joined in the
//! registry) and named queues (a Redis list read directly).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use busbar_core::error::{OpError, SubscribeError, SubscribeErrorKind};
use busbar_core::queue::queue;
use busbar_core::topic::{Topic, TopicFilter, redis_subscription};
use busbar_core::transport::{Acknowledge, SubscribeOptions, Subscription, SubscriptionGuard};
use busbar_transport_kit::Target;

use super::groups;
use super::routes::ListRole;
use super::state::{Ctl, KIND, Outgoing, Shared};

/// Subscribes: to a named queue's list, to a queue group, or to a channel or pattern.
pub(super) async fn subscribe(
    s: &Arc<Shared>,
    options: SubscribeOptions,
) -> Result<Subscription, SubscribeError> {
    s.life.check()?;
    if options.no_local {
        return Err(OpError::unsupported(KIND, "no-local subscriptions"));
    }
    let (tx, rx) = queue(options.queue);
    let id = s.next_sub.fetch_add(1, Ordering::Relaxed);
    let filter = options.filter.clone();
    let target = Target::new(tx, filter.as_str(), &s.meter);
    let acknowledge = options.acknowledge;
    if acknowledge != Acknowledge::OnHandOver && options.durable.is_none() {
        return Err(OpError::unsupported(
            KIND,
            "acknowledging on read or explicitly outside a durable subscription (only a \
             durable subscription's stream tracks acknowledgements)",
        ));
    }
    let guard = match (filter.queue_name(), options.queue_group, options.durable) {
        (Some(_), _, Some(_)) => {
            return Err(OpError::new(
                SubscribeErrorKind::InvalidFilter,
                "a named queue keeps its messages already: subscribe to it without a durable name",
            ));
        }
        (Some(list), _, None) => subscribe_list(s, id, list, &filter, target)?,
        (None, _, Some(name)) => {
            subscribe_durable(s, id, &name, &filter, acknowledge, target).await?
        }
        (None, Some(group), None) => subscribe_group(s, id, &group, &filter, target).await?,
        (None, None, None) => subscribe_plain(s, id, filter.clone(), target).await?,
    };
    Ok(Subscription::new(filter, rx, s.meter.stats().clone(), guard).acknowledging(acknowledge))
}

/// Reads durable subscription `name` of `filter`: registered (stream, consumer group and
/// registry entry) before this returns, so that every later publish is kept for it.
async fn subscribe_durable(
    s: &Arc<Shared>,
    id: u64,
    name: &str,
    filter: &TopicFilter,
    acknowledge: Acknowledge,
    target: Target,
) -> Result<SubscriptionGuard, SubscribeError> {
    let entry = groups::durable_entry(name, filter);
    let key = groups::stream_key(name, filter.as_str());
    let _guard = s.sub_lock.lock().await;
    let mut conn = s.current::<SubscribeErrorKind>()?;
    groups::register_durable(&mut conn, &entry, &key)
        .await
        .map_err(|e| s.op_error(&format!("registering durable subscription {name}"), e))?;
    {
        let mut routes = s.routes();
        if let Some(reader) = routes.lists.get(&key)
            && !matches!(reader.role, ListRole::Durable { acknowledge: a, .. } if a == acknowledge)
        {
            return Err(OpError::new(
                SubscribeErrorKind::Unsupported,
                "subscriptions sharing one durable name on a connection must acknowledge the \
                 same way",
            ));
        }
        let started = routes.join_list(
            &key,
            || ListRole::Durable { entry, acknowledge },
            || s.life.token().child_token(),
            id,
            target,
        );
        if let Some(cancel) = started {
            s.acks.spawn(s.clone().serve_stream(key.clone(), acknowledge, cancel));
        }
    }
    let weak = Arc::downgrade(s);
    Ok(SubscriptionGuard::new(move || {
        if let Some(s) = weak.upgrade() {
            // The reader stops and gives back what it held; the subscription stays
            // registered, keeping what comes, until `remove_durable`.
            s.routes().leave_list(&key, id);
        }
    }))
}

async fn subscribe_plain(
    s: &Arc<Shared>,
    id: u64,
    filter: TopicFilter,
    target: Target,
) -> Result<SubscriptionGuard, SubscribeError> {
    let rs = redis_subscription(&filter);
    let key = (rs.is_pattern, rs.pattern_or_channel);
    let _guard = s.sub_lock.lock().await;
    s.routes().add_plain(key.clone(), filter.clone(), rs.needs_refilter, id, target);
    let remove = {
        let weak = Arc::downgrade(s);
        let key = key.clone();
        move || {
            let Some(s) = weak.upgrade() else { return };
            if s.routes().remove_plain(&key, &filter, id) {
                let _ = s.ctl.send(Ctl::Unsubscribe(key.clone()));
            }
        }
    };
    // Sent even when another local subscription has it already: the call then returns
    // only once the server has confirmed (Redis ignores the repeat).
    let r = match s.current::<SubscribeErrorKind>() {
        Ok(mut conn) => {
            if key.0 {
                conn.psubscribe(&key.1).await
            } else {
                conn.subscribe(&key.1).await
            }
        }
        // Down: the reconnect subscribes everything in the routes.
        Err(e) if e.kind() == SubscribeErrorKind::Closed => {
            remove();
            return Err(e);
        }
        Err(_) => Ok(()),
    };
    if let Err(e) = r
        && !(e.is_io_error() || e.is_connection_dropped())
    {
        remove();
        return Err(s.op_error(&format!("subscribing to {}", key.1), e));
    }
    Ok(SubscriptionGuard::new(remove))
}

/// Reads the named queue (Redis list) `list`, sharing its items among this connection's
/// subscribers to it; other connections reading it compete for the items.
fn subscribe_list(
    s: &Arc<Shared>,
    id: u64,
    list: String,
    filter: &TopicFilter,
    target: Target,
) -> Result<SubscriptionGuard, SubscribeError> {
    let topic = Topic::new(filter.as_str())?;
    {
        let mut routes = s.routes();
        let started = routes.join_list(
            &list,
            || ListRole::Named { topic },
            || s.life.token().child_token(),
            id,
            target,
        );
        if let Some(cancel) = started {
            tokio::spawn(s.clone().serve_list(list.clone(), cancel));
        }
    }
    let weak = Arc::downgrade(s);
    Ok(SubscriptionGuard::new(move || {
        if let Some(s) = weak.upgrade() {
            s.routes().leave_list(&list, id);
        }
    }))
}

async fn subscribe_group(
    s: &Arc<Shared>,
    id: u64,
    group: &str,
    filter: &TopicFilter,
    target: Target,
) -> Result<SubscriptionGuard, SubscribeError> {
    let entry = groups::entry(group, filter);
    let key = groups::list_key(&entry);
    let _guard = s.sub_lock.lock().await;
    let is_new = {
        let mut routes = s.routes();
        let started = routes.join_list(
            &key,
            || ListRole::Group { entry: entry.clone() },
            || s.life.token().child_token(),
            id,
            target,
        );
        match started {
            Some(cancel) => {
                tokio::spawn(s.clone().serve_list(key.clone(), cancel));
                true
            }
            None => false,
        }
    };
    let remove = {
        let weak = Arc::downgrade(s);
        move || {
            let Some(s) = weak.upgrade() else { return };
            let reader = s.routes().leave_list(&key, id);
            if let Some(ListRole::Group { entry }) = reader.map(|r| r.role) {
                let _ = s.ctl.send(Ctl::Leave(entry));
            }
        }
    };
    if is_new {
        match s.current::<SubscribeErrorKind>() {
            Ok(mut conn) => {
                if let Err(e) = groups::join(&mut conn, &s.client_id, &entry).await {
                    remove();
                    return Err(s.op_error(&format!("joining queue group {group}"), e));
                }
            }
            Err(e) if e.kind() == SubscribeErrorKind::Closed => {
                remove();
                return Err(e);
            }
            Err(_) => {} // joined by the reconnect
        }
    }
    Ok(SubscriptionGuard::new(remove))
}

/// Deletes durable subscription `name` of `filter` with its stream; refused while a
/// subscription of this connection reads it.
pub(super) async fn remove_durable(
    s: &Arc<Shared>,
    name: &str,
    filter: &TopicFilter,
) -> Result<(), SubscribeError> {
    s.life.check()?;
    let entry = groups::durable_entry(name, filter);
    let key = groups::stream_key(name, filter.as_str());
    let _guard = s.sub_lock.lock().await;
    if s.routes().lists.contains_key(&key) {
        return Err(busbar_transport_kit::durable::in_use(name, filter));
    }
    // What this connection published before goes in first (publishes return once queued).
    let (done, sent) = tokio::sync::oneshot::channel();
    if s.outgoing.push(Outgoing::Flush(done)).await.is_ok() {
        let _ = tokio::time::timeout(s.settings.response_timeout, sent).await;
    }
    let mut conn = s.current::<SubscribeErrorKind>()?;
    groups::remove_durable(&mut conn, &entry, &key)
        .await
        .map_err(|e| s.op_error(&format!("removing durable subscription {name}"), e))
}
