//! Subscribing: each subscription gets a reader (see `reader`), returned once it reads.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use busbar_core::error::{OpError, SubscribeError, SubscribeErrorKind};
use busbar_core::queue::queue;
use busbar_core::topic::{TopicFilter, kafka_subscription};
use busbar_core::transport::{
    Acknowledge, StartAt, SubscribeOptions, Subscription, SubscriptionGuard,
};
use busbar_transport_kit::Target;
use rdkafka::ClientConfig;

use super::Shared;
use super::reader::{self, Plan, Sink};
use super::routes::{Route, RouteKey};

impl Shared {
    /// The configuration of a reader: a member of consumer group `group`, or (`None`) a
    /// consumer that picks its partitions itself.
    pub(super) fn reader_config(&self, group: Option<&str>) -> ClientConfig {
        let s = &self.settings;
        let mut c = s.client_config(&self.client_id, self.context.token.is_some());
        c.set("fetch.wait.max.ms", s.fetch_wait.as_millis().to_string())
            .set("enable.partition.eof", "false")
            .set("allow.auto.create.topics", "false")
            .set("topic.metadata.refresh.interval.ms", s.metadata_interval.as_millis().to_string());
        let Some(group) = group else {
            // librdkafka reads assigned partitions only through a group handle, so a reader
            // that picks its partitions itself names a group of its own; it never joins or
            // commits to it.
            c.set(
                "group.id",
                format!("busbar-reader-{}", busbar_transport_kit::ids::random_name()),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // A position the log no longer has (the broker lost its data, or retention
            // removed what was not read yet) restarts at the oldest record there is:
            // everything in the log is newer than what this reader has seen.
            .set("auto.offset.reset", "earliest");
            return c;
        };
        {
            c.set("group.id", group)
                // Offsets are stored once a record was handed over, and committed from there.
                .set("enable.auto.offset.store", "false")
                .set("enable.auto.commit", "true")
                .set("auto.commit.interval.ms", "1000")
                .set("auto.offset.reset", "latest")
                .set("heartbeat.interval.ms", "1000")
                .set("session.timeout.ms", "10000");
        }
        c
    }
}

/// Subscribes: joins the route of (filter, queue group), starting its reader when there is
/// none; returns once the reader reads, so that whatever is published after this returns
/// reaches the subscription.
pub(super) async fn subscribe(
    s: &Arc<Shared>,
    options: SubscribeOptions,
) -> Result<Subscription, SubscribeError> {
    s.life.check()?;
    if options.no_local {
        return Err(OpError::unsupported("kafka", "noLocal"));
    }
    let filter = options.filter.clone();
    // A durable subscription is a consumer group: the broker keeps the group's committed
    // position while no member reads, and the next member resumes there.
    let group = options.queue_group.clone().or_else(|| options.durable.clone());
    if let Some(g) = &group
        && (g.is_empty() || g.len() > 255)
    {
        return Err(OpError::new(
            SubscribeErrorKind::InvalidFilter,
            format!("{g:?} cannot be a Kafka consumer group name (1 to 255 characters)"),
        ));
    }
    let acknowledge = options.acknowledge;
    if acknowledge != Acknowledge::OnHandOver && group.is_none() {
        return Err(OpError::new(
            SubscribeErrorKind::Unsupported,
            "Kafka tracks acknowledgements for consumer groups only: acknowledging on read or \
             explicitly needs a durable subscription or a queue group",
        ));
    }
    let subscription = kafka_subscription(&filter)?;
    let start = options.start;
    let key: RouteKey = (filter.as_str().to_owned(), group.clone(), start, acknowledge);
    let id = s.next_id.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = queue(options.queue);
    let target = Target::new(tx, filter.as_str(), &s.meter);
    let (route, fresh) = {
        let mut routes = lock(&s.routes);
        match routes.get(&key) {
            Some(route) => {
                route.add(id, target);
                (route.clone(), false)
            }
            None => {
                let route = Arc::new(Route::new(group.is_some(), s.life.token().child_token()));
                route.add(id, target);
                routes.insert(key.clone(), route.clone());
                (route, true)
            }
        }
    };
    // Made now, so that a failure below takes this subscription off its route too.
    let weak = Arc::downgrade(s);
    let guard = SubscriptionGuard::new(move || {
        if let Some(s) = weak.upgrade() {
            s.remove_local(&key, id);
        }
    });
    if fresh {
        let outcome =
            start_route(s, &filter, subscription, group, start, acknowledge, &route).await;
        route.set_ready(outcome.as_ref().map(|_| ()).map_err(ToString::to_string));
        outcome?;
    } else {
        route.ready().await.map_err(|why| s.life.not_connected::<SubscribeErrorKind>(why))?;
    }
    Ok(Subscription::new(filter, rx, s.meter.stats().clone(), guard).acknowledging(acknowledge))
}

/// Starts the reader of a new route.
async fn start_route(
    s: &Arc<Shared>,
    filter: &TopicFilter,
    subscription: String,
    group: Option<String>,
    start: StartAt,
    acknowledge: Acknowledge,
    route: &Arc<Route>,
) -> Result<(), SubscribeError> {
    let literal = !filter.is_wildcard();
    if literal {
        // Kafka reads only topics that exist: the topic is made now (or refused, as
        // configured), so a subscription may come before the first publish.
        s.topics.ensure(&subscription).await.map_err(|f| f.into_error(&s.settings.shown))?;
    }
    let plan = match &group {
        Some(_) => Plan::Group {
            subscription,
            filter: (!literal).then(|| filter.clone()),
            start,
            acknowledge,
        },
        None => Plan::Assigned {
            topics: if literal { vec![subscription] } else { Vec::new() },
            filter: (!literal).then(|| filter.clone()),
            interval: s.settings.metadata_interval,
            start,
        },
    };
    let group_id = group.map(|g| group_id(s, &g, filter));
    reader::start(
        s.reader_config(group_id.as_deref()),
        s.context.clone(),
        plan,
        Sink::Route(route.clone()),
        route.stop.clone(),
        &s.readers,
    )
    .await
    .map_err(|why| s.life.not_connected::<SubscribeErrorKind>(why))
}

impl Shared {
    /// A local subscription left: the route (and its reader) ends with its last one.
    fn remove_local(&self, key: &RouteKey, id: u64) {
        let mut routes = lock(&self.routes);
        let Some(route) = routes.get(key).cloned() else { return };
        if route.remove(id) {
            routes.remove(key);
            route.stop.cancel();
        }
    }
}

/// Locks a mutex, taking it over from a thread that panicked holding it.
/// The Kafka consumer group of the queue group or durable subscription `name` of `filter`:
/// `NAME@FILTER`, or `NAME` alone with `?group_names=exact`.
fn group_id(s: &Shared, name: &str, filter: &TopicFilter) -> String {
    if s.settings.exact_group_names {
        name.to_owned()
    } else {
        format!("{name}@{}", filter.as_str())
    }
}

/// Removes the durable subscription `name` of `filter`: its consumer group, with every
/// position it committed.
pub(super) async fn remove_durable(
    s: &Arc<Shared>,
    name: &str,
    filter: &TopicFilter,
) -> Result<(), SubscribeError> {
    s.life.check()?;
    let group = group_id(s, name, filter);
    let in_use = lock(&s.routes).keys().any(|(f, g, ..)| {
        g.as_deref() == Some(name) && (s.settings.exact_group_names || f == filter.as_str())
    });
    if in_use {
        return Err(busbar_transport_kit::durable::in_use(name, filter));
    }
    s.topics.delete_group(&group).await.map_err(|failure| failure.into_error(&s.settings.shown))
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
