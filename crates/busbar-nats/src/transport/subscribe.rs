//! Subscribing: a local subscription joins the route of its (filter, queue group), made on
//! first use, and is returned once the server has the NATS subscriptions (a sync round trip).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use busbar_core::error::{OpError, SubscribeError, SubscribeErrorKind};
use busbar_core::queue::queue;
use busbar_core::topic::{TopicFilter, nats_filters};
use busbar_core::transport::{SubscribeOptions, Subscription, SubscriptionGuard};
use busbar_transport_kit::Target;

use super::pump::lock;
use super::routes::{Route, RouteKey};
use super::state::Shared;

impl Shared {
    /// A local subscription left: the route goes when it was the last one.
    fn remove_local(&self, key: &RouteKey, id: u64) {
        let mut routes = lock(&self.routes);
        let Some(route) = routes.get(key).cloned() else { return };
        // Dropping the subscribers sends their UNSUBs now, ahead of anything this
        // connection sends later.
        if let Some(subscribers) = route.remove(id) {
            routes.remove(key);
            drop(routes);
            self.sink.forget(&route.sids);
            drop(subscribers);
        }
    }

    /// The NATS subscriptions for `filter` (two for `a/#`), in a route not started yet.
    async fn new_route(
        &self,
        filter: &TopicFilter,
        group: Option<&str>,
    ) -> Result<Arc<Route>, SubscribeError> {
        let subjects = nats_filters(filter)?;
        let mut subscribers = Vec::with_capacity(subjects.len());
        let mut sids = Vec::with_capacity(subjects.len());
        for subject in &subjects {
            let made = match group {
                Some(g) => self.client.queue_subscribe(subject.clone(), g.to_owned()).await,
                None => self.client.subscribe(subject.clone()).await,
            };
            let subscriber = made.map_err(|e| {
                use async_nats::client::SubscribeErrorKind as K;
                match e.kind() {
                    K::InvalidQueueName => OpError::new(
                        SubscribeErrorKind::InvalidFilter,
                        format!(
                            "{:?} cannot be a NATS queue group name (no whitespace, not empty)",
                            group.unwrap_or("")
                        ),
                    ),
                    K::InvalidSubject => OpError::new(
                        SubscribeErrorKind::InvalidFilter,
                        format!("{subject} is not a valid NATS subject"),
                    ),
                    K::Other => self.life.not_connected(e),
                }
            })?;
            if let Some(sid) = sid_of(&subscriber) {
                self.sink.watch(sid, filter.as_str());
                sids.push(sid);
            }
            subscribers.push(subscriber);
        }
        Ok(Route::new(
            filter,
            group.is_some(),
            &subjects,
            subscribers,
            sids,
            self.life.token().child_token(),
            &self.meter,
        ))
    }
}

/// Subscribes: a new local subscription on the route of its (filter, queue group), made
/// when there is none; resolves once the server has it.
pub(super) async fn subscribe(
    s: &Arc<Shared>,
    options: SubscribeOptions,
) -> Result<Subscription, SubscribeError> {
    s.life.check()?;
    let filter = options.filter.clone();
    let key: RouteKey = (filter.as_str().to_owned(), options.queue_group.clone());
    let id = s.next_id.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = queue(options.queue);
    let mut target = Some(Target::new(tx, filter.as_str(), &s.meter));
    {
        // Joined under the lock of the routes, so the route cannot end meanwhile.
        let routes = lock(&s.routes);
        if let Some(route) = routes.get(&key)
            && let Some(t) = target.take()
        {
            route.add(id, t);
        }
    }
    if let Some(target) = target {
        let route = s.new_route(&filter, options.queue_group.as_deref()).await?;
        let mut routes = lock(&s.routes);
        s.life.check()?;
        match routes.get(&key) {
            // Another subscribe made the same route meanwhile: join it, drop ours.
            Some(existing) => {
                existing.add(id, target);
                s.sink.forget(&route.sids);
            }
            None => {
                route.add(id, target);
                routes.insert(key.clone(), route.clone());
                drop(routes);
                // Registers the waker (and takes anything already buffered).
                route.start();
            }
        }
    }
    let weak = Arc::downgrade(s);
    let guard = SubscriptionGuard::new(move || {
        if let Some(s) = weak.upgrade() {
            s.remove_local(&key, id);
        }
    });
    // The subscription is returned only once the server has it, so whatever is
    // published after this returns, from any connection, reaches it.
    s.sync().await?;
    Ok(Subscription::new(filter, rx, s.meter.stats().clone(), guard))
}

/// The sid async-nats gave a subscription. async-nats keeps it private but reports slow
/// consumers by sid, so it is read from the subscriber's `Debug` output
/// (`Subscriber { sid: N, .. }`); if that ever changes, drops are still counted, only not
/// attributed to a filter.
fn sid_of(subscriber: &async_nats::Subscriber) -> Option<u64> {
    let text = format!("{subscriber:?}");
    let rest = &text[text.find("sid: ")? + 5..];
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    rest[..end].parse().ok()
}
