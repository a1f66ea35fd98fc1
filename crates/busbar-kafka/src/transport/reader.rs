//! Readers: one librdkafka consumer per subscription (and one for the reply inbox), each
//! on its own thread.
//!
//! Kafka is read by polling, and librdkafka's consumer calls back (rebalances, commits) from
//! inside its poll with blocking calls of its own, so each consumer gets a thread that polls
//! it and hands every record to the subscription's delivery queue in order. A full `Block`
//! queue holds the thread (and so the reading: librdkafka stops fetching once its own
//! buffer is full), which is Kafka's backpressure. The thread ends when the subscription is
//! dropped or the connection closes; dropping the consumer there leaves its group.
//!
//! Two ways to read:
//! * **Assigned** (plain subscriptions, the reply inbox): the reader picks the partitions
//!   itself and starts each where the subscription's [`StartAt`] says, as found when the
//!   subscription is made: by default at its end, so everything published after
//!   `subscribe` returns is delivered and nothing before it. A filter with wildcards looks
//!   for new matching topics every `metadata_interval` and reads those from their
//!   beginning (they were created after the subscription), or from the start time.
//! * **Group** (queue groups, durable subscriptions): a Kafka consumer group named after
//!   the queue group. Offsets are stored after a record was handed to the subscriber (or,
//!   acknowledging on read or explicitly, once it and all before it were acknowledged: see
//!   `offsets`) and committed from there (at least once: a member that dies before the
//!   commit leaves its records to the next).
//!   A partition the group has never committed starts where [`StartAt`] says, found and
//!   committed when it is first assigned (see [`GroupContext`]), so a later rebalance
//!   cannot skip records; one it has committed resumes there.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use busbar_core::Receipt;
use busbar_core::message::Message;
use busbar_core::topic::{TopicFilter, topic_from_kafka};
use busbar_core::transport::{Acknowledge, StartAt};
use busbar_transport_kit::Inbox;
use busbar_transport_kit::delivery::offer_all;
use rdkafka::ClientConfig;
use rdkafka::client::{Client, ClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::offsets::Pending;
use super::routes::Route;
use crate::context::Context;
use crate::convert::message_in;

/// How long a poll waits before the reader looks at its stop token again.
const POLL: Duration = Duration::from_millis(100);
/// How long one metadata or offset request from a reader may take.
const LOOKUP: Duration = Duration::from_secs(10);

/// Where a reader's records go.
pub(crate) enum Sink {
    /// The local subscriptions of a route.
    Route(Arc<Route>),
    /// The reply inbox: each record is a reply for a waiting request.
    Replies(Arc<Inbox>),
}

/// What a reader reads.
pub(crate) enum Plan {
    /// These topics' partitions, from `start`; for a wildcard `filter`, also the topics
    /// that come to match it later, from their beginning (or `start`'s time).
    Assigned {
        topics: Vec<String>,
        filter: Option<TopicFilter>,
        interval: Duration,
        start: StartAt,
    },
    /// The consumer group `group`, subscribed to `subscription` (a name or a `^` regex for
    /// the wildcard `filter`); partitions it never committed start at `start`; positions
    /// are committed after hand-over, or past what was acknowledged (see `offsets`).
    Group {
        subscription: String,
        filter: Option<TopicFilter>,
        start: StartAt,
        acknowledge: Acknowledge,
    },
}

/// A connection's reader threads, so that closing can wait for them to leave their groups.
#[derive(Default)]
pub(crate) struct Readers(Mutex<Vec<std::thread::JoinHandle<()>>>);

impl Readers {
    fn add(&self, thread: std::thread::JoinHandle<()>) {
        let mut threads = self.0.lock().unwrap_or_else(|p| p.into_inner());
        threads.retain(|t| !t.is_finished());
        threads.push(thread);
    }

    /// Waits, at most `limit`, for every reader to end (told to by the connection's token):
    /// a group member commits what it handed over and leaves its group on the way out, so
    /// that the group's next member starts where this one stopped. Blocks: call it off the
    /// runtime. Returns how many were still running at the deadline.
    pub(crate) fn wait_ended(&self, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            let running = {
                let mut threads = self.0.lock().unwrap_or_else(|p| p.into_inner());
                threads.retain(|t| !t.is_finished());
                threads.len()
            };
            if running == 0 || Instant::now() >= deadline {
                return running;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Starts a reader thread (kept in `readers`); resolves once it reads (its partitions
/// assigned and their start offsets fixed), or with why it cannot.
pub(crate) async fn start(
    config: ClientConfig,
    context: Context,
    plan: Plan,
    sink: Sink,
    stop: CancellationToken,
    readers: &Readers,
) -> Result<(), String> {
    let (ready_tx, ready_rx) = oneshot::channel();
    let runtime = tokio::runtime::Handle::current();
    let spawned = std::thread::Builder::new().name("busbar-kafka-reader".into()).spawn(move || {
        let reader = Reader { sink, stop, runtime, context: context.clone() };
        match plan {
            Plan::Assigned { topics, filter, interval, start } => {
                reader.assigned(config, topics, filter, interval, start, ready_tx)
            }
            Plan::Group { subscription, filter, start, acknowledge } => {
                let pending =
                    (acknowledge != Acknowledge::OnHandOver).then(|| Arc::new(Pending::default()));
                reader.group(config, &subscription, filter.as_ref(), start, pending, ready_tx)
            }
        }
    });
    match spawned {
        Ok(thread) => readers.add(thread),
        Err(e) => return Err(format!("cannot start a reader thread: {e}")),
    }
    ready_rx.await.unwrap_or_else(|_| Err("the reader stopped before it was ready".into()))
}

struct Reader {
    sink: Sink,
    stop: CancellationToken,
    runtime: tokio::runtime::Handle,
    context: Context,
}

type Ready = oneshot::Sender<Result<(), String>>;

impl Reader {
    /// Gives a new consumer the connection's OAUTHBEARER token, if it has a provider (see
    /// `oauth`): its first lookups come before its first poll, where it would ask for one.
    fn sign_in<C: ClientContext>(&self, client: &Client<C>) -> Result<(), String> {
        match self.context.oauth_token() {
            Some(token) => super::oauth::sign_in(client, &token),
            None => Ok(()),
        }
    }

    fn assigned(
        self,
        config: ClientConfig,
        topics: Vec<String>,
        filter: Option<TopicFilter>,
        interval: Duration,
        start: StartAt,
        ready: Ready,
    ) {
        let consumer: BaseConsumer<Context> = match config.create_with_context(self.context.clone())
        {
            Ok(c) => c,
            Err(e) => {
                let _ = ready.send(Err(format!("cannot create a Kafka consumer: {e}")));
                return;
            }
        };
        if let Err(why) = self.sign_in(consumer.client()) {
            let _ = ready.send(Err(why));
            return;
        }
        let mut known: HashMap<String, i32> = HashMap::new();
        let mut first = TopicPartitionList::new();
        let mut names = topics;
        if let Some(f) = &filter {
            match matching(&consumer, f) {
                Ok(found) => names.extend(found.into_keys()),
                Err(e) => {
                    let _ = ready.send(Err(format!("cannot list the Kafka topics: {e}")));
                    return;
                }
            }
        }
        for name in names {
            match first_offsets(&consumer, &name, start, &mut first) {
                Ok(n) => {
                    known.insert(name, n);
                }
                Err(e) => {
                    let _ = ready.send(Err(format!("cannot find where to read {name:?}: {e}")));
                    return;
                }
            }
        }
        if let Err(e) = consumer.assign(&first) {
            let _ = ready.send(Err(format!("cannot read the Kafka topics: {e}")));
            return;
        }
        let _ = ready.send(Ok(()));
        let mut next_look = Instant::now() + interval;
        while !self.stop.is_cancelled() {
            if let Some(f) = &filter
                && Instant::now() >= next_look
            {
                next_look = Instant::now() + interval;
                self.discover(&consumer, f, start, &mut known);
            }
            if !self.poll_once(&consumer, Store::Nothing) {
                return;
            }
        }
    }

    /// Starts reading, from their beginning (or the start time), topics (and partitions)
    /// that came to match `filter` since the last look.
    fn discover(
        &self,
        consumer: &BaseConsumer<Context>,
        filter: &TopicFilter,
        start: StartAt,
        known: &mut HashMap<String, i32>,
    ) {
        let found = match matching(consumer, filter) {
            Ok(found) => found,
            Err(e) => {
                tracing::debug!(error = %e, "looking for new Kafka topics");
                return;
            }
        };
        let mut more = TopicPartitionList::new();
        for (name, n) in found {
            let had = known.get(&name).copied().unwrap_or(0);
            for p in had..n {
                // Created since the subscription: all of it is new, unless a start time
                // still lies ahead.
                let offset = match start {
                    StartAt::Time(_) => match first_offset(consumer, &name, p, start) {
                        Ok(o) => Offset::Offset(o),
                        Err(e) => {
                            tracing::debug!(error = %e, "finding where to read {name}");
                            Offset::Beginning
                        }
                    },
                    _ => Offset::Beginning,
                };
                let _ = more.add_partition_offset(&name, p, offset);
            }
            known.insert(name, n.max(had));
        }
        if more.count() > 0
            && let Err(e) = consumer.incremental_assign(&more)
        {
            tracing::warn!(error = %e, "cannot read new Kafka topics matching {filter}");
        }
    }

    fn group(
        self,
        config: ClientConfig,
        subscription: &str,
        filter: Option<&TopicFilter>,
        start: StartAt,
        pending: Option<Arc<Pending>>,
        ready: Ready,
    ) {
        // A pattern's topics may be created after the subscription, and the group is
        // assigned them one metadata refresh later: "now" is the subscription's time, so
        // what was published in between is read too (records stamped from then on).
        let start = match (start, filter) {
            (StartAt::Now, Some(_)) => StartAt::Time(std::time::SystemTime::now()),
            (start, _) => start,
        };
        let context = GroupContext {
            base: self.context.clone(),
            start,
            ready: Mutex::new(None),
            pending: pending.clone(),
        };
        let consumer: BaseConsumer<GroupContext> = match config.create_with_context(context) {
            Ok(c) => c,
            Err(e) => {
                let _ = ready.send(Err(format!("cannot create a Kafka consumer: {e}")));
                return;
            }
        };
        if let Err(why) = self.sign_in(consumer.client()) {
            let _ = ready.send(Err(why));
            return;
        }
        // The first assignment, made inside a poll below, says the member reads.
        *consumer.context().ready.lock().unwrap_or_else(|p| p.into_inner()) = Some(ready);
        if let Err(e) = consumer.subscribe(&[subscription]) {
            if let Some(ready) = consumer.context().take_ready() {
                let _ = ready.send(Err(format!("cannot join the consumer group: {e}")));
            }
            return;
        }
        // librdkafka joins the group for a pattern only once a topic matches it: with none
        // yet, the subscription is in place now (a topic made later is assigned from the
        // subscription's time, above), rather than waiting for a topic that may never come.
        if let Some(filter) = filter {
            match matching(&consumer, filter) {
                Ok(found) if found.is_empty() => {
                    if let Some(ready) = consumer.context().take_ready() {
                        let _ = ready.send(Ok(()));
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "looking for topics matching {subscription}"),
            }
        }
        let store = match &pending {
            Some(p) => Store::ByReceipt(p),
            None => Store::OnHandOver,
        };
        while !self.stop.is_cancelled() {
            let reading = self.poll_once(&consumer, store);
            if let Some(p) = &pending {
                store_acknowledged(&consumer, p);
            }
            if !reading {
                break;
            }
        }
        // Leaving: what was handed over (or acknowledged, up to now) is committed before
        // the group hands the partitions to another member.
        if let Some(p) = &pending {
            store_acknowledged(&consumer, p);
        }
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => tracing::debug!(error = %e, "committing on leaving the group"),
        }
    }

    /// Polls once and hands over what came; false when the reader must end (its
    /// subscription is gone).
    fn poll_once<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>, store: Store<'_>) -> bool {
        let record = match consumer.poll(POLL) {
            None => return true,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "Kafka consumer");
                return true;
            }
            Some(Ok(record)) => record,
        };
        self.context.link.answered(&self.context.meter);
        match message_in(&record) {
            Ok(message) => {
                let message = match store {
                    Store::ByReceipt(pending) => message.with_receipt(Receipt::new(
                        pending.handed_over(record.topic(), record.partition(), record.offset()),
                    )),
                    _ => message,
                };
                if !self.hand_over(message) {
                    return false;
                }
            }
            Err(e) => {
                self.context.meter.discard("a record on a topic busbar cannot name", &e);
                if let Store::ByReceipt(pending) = store {
                    // Done with: it never reaches a subscriber to acknowledge it.
                    pending.handed_over(record.topic(), record.partition(), record.offset())();
                }
            }
        }
        if matches!(store, Store::OnHandOver)
            && let Err(e) = consumer.store_offset_from_message(&record)
        {
            tracing::debug!(error = %e, "storing a consumed offset");
        }
        true
    }

    /// Hands one message to the sink; false when the reader must stop.
    fn hand_over(&self, message: Message) -> bool {
        match &self.sink {
            Sink::Replies(inbox) => {
                let id = message.correlation_id.clone();
                inbox.complete(id.as_deref(), message);
                true
            }
            Sink::Route(route) => {
                let targets = route.targets();
                let blocked = offer_all(&targets, message);
                if blocked.is_empty() {
                    return true;
                }
                // A full `Block` queue: this thread waits for room, and so does the reading.
                self.runtime.block_on(async {
                    for (target, message) in blocked {
                        tokio::select! {
                            _ = target.deliver(message) => {}
                            _ = self.stop.cancelled() => return false,
                        }
                    }
                    true
                })
            }
        }
    }
}

/// When a reader stores the positions its group commits.
#[derive(Clone, Copy)]
enum Store<'a> {
    /// Never (a reader that picks its partitions itself commits nothing).
    Nothing,
    /// Once a record was handed over.
    OnHandOver,
    /// Past what was acknowledged.
    ByReceipt(&'a Arc<Pending>),
}

/// Stores, for the next commit, the positions that moved past acknowledged records.
fn store_acknowledged<C: ConsumerContext>(consumer: &BaseConsumer<C>, pending: &Pending) {
    let moved = pending.settle();
    if moved.is_empty() {
        return;
    }
    let mut positions = TopicPartitionList::new();
    for (topic, partition, position) in moved {
        if let Err(e) = positions.add_partition_offset(&topic, partition, Offset::Offset(position))
        {
            tracing::debug!(error = %e, "an acknowledged position");
        }
    }
    // A partition no longer assigned is refused: its next reader starts from the last commit.
    if let Err(e) = consumer.store_offsets(&positions) {
        tracing::debug!(error = %e, "storing acknowledged positions");
    }
}

/// The topics matching `filter` and their partition counts.
fn matching<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    filter: &TopicFilter,
) -> KafkaResult<HashMap<String, i32>> {
    let metadata = consumer.fetch_metadata(None, LOOKUP)?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .filter(|t| topic_from_kafka(t.name()).is_ok_and(|topic| filter.matches(&topic)))
        .map(|t| (t.name().to_owned(), i32::try_from(t.partitions().len()).unwrap_or(0)))
        .collect())
}

/// Adds every partition of `name` at the offset `start` names to `list`; returns the
/// partition count.
fn first_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    name: &str,
    start: StartAt,
    list: &mut TopicPartitionList,
) -> KafkaResult<i32> {
    let metadata = consumer.fetch_metadata(Some(name), LOOKUP)?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == name)
        .map(|t| t.partitions().iter().map(|p| p.id()).collect::<Vec<i32>>())
        .unwrap_or_default();
    for &p in &partitions {
        let offset = first_offset(consumer, name, p, start)?;
        list.add_partition_offset(name, p, Offset::Offset(offset))?;
    }
    Ok(i32::try_from(partitions.len()).unwrap_or(i32::MAX))
}

/// The offset in partition `partition` of `topic` where `start` says to read: the end (the
/// next record's offset), the oldest record kept, or the first record stamped at or after a
/// time (the end when none is). Always a concrete offset, so that a group can commit it.
fn first_offset<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
    start: StartAt,
) -> KafkaResult<i64> {
    let (low, high) = consumer.fetch_watermarks(topic, partition, LOOKUP)?;
    let at = match start {
        StartAt::Earliest => return Ok(low),
        StartAt::Time(at) => at,
        _ => return Ok(high),
    };
    // Kafka stamps records in milliseconds since 1970; a time before 1970 means everything.
    let millis = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let mut query = TopicPartitionList::new();
    query.add_partition_offset(topic, partition, Offset::Offset(millis))?;
    let found = consumer.offsets_for_times(query, LOOKUP)?;
    let offset = found.find_partition(topic, partition).map(|e| e.offset());
    Ok(match offset {
        Some(Offset::Offset(o)) => o.clamp(low, high),
        // No record that recent: what comes next.
        _ => high,
    })
}

/// A group member's context: on each assignment, partitions the group never committed
/// start at their end, read and committed right away; the first assignment tells the
/// subscriber it reads.
struct GroupContext {
    base: Context,
    /// Where partitions the group never committed start.
    start: StartAt,
    ready: Mutex<Option<Ready>>,
    /// Records handed over and not acknowledged yet (acknowledging one by one).
    pending: Option<Arc<Pending>>,
}

impl GroupContext {
    fn take_ready(&self) -> Option<Ready> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Fixes where each newly assigned partition starts; returns the partitions that start
    /// where `start` says for want of a committed offset (to be committed).
    fn start_offsets(
        &self,
        consumer: &BaseConsumer<Self>,
        assigned: &mut TopicPartitionList,
    ) -> KafkaResult<TopicPartitionList> {
        let committed = consumer.committed_offsets(assigned.clone(), LOOKUP)?;
        let mut fresh = TopicPartitionList::new();
        for elem in committed.elements() {
            let offset = match elem.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => {
                    let first = first_offset(consumer, elem.topic(), elem.partition(), self.start)?;
                    fresh.add_partition_offset(
                        elem.topic(),
                        elem.partition(),
                        Offset::Offset(first),
                    )?;
                    Offset::Offset(first)
                }
            };
            assigned.set_partition_offset(elem.topic(), elem.partition(), offset)?;
        }
        Ok(fresh)
    }
}

impl ClientContext for GroupContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn log(&self, level: RDKafkaLogLevel, facility: &str, line: &str) {
        self.base.log(level, facility, line);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.base.error(error, reason);
    }

    fn generate_oauth_token(
        &self,
        config: Option<&str>,
    ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        self.base.generate_oauth_token(config)
    }
}

impl ConsumerContext for GroupContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        partitions: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let outcome = self.start_offsets(consumer, partitions).and_then(|fresh| {
                    consumer.assign(partitions)?;
                    if fresh.count() > 0 {
                        consumer.commit(&fresh, CommitMode::Sync)?;
                    }
                    Ok(())
                });
                if let Err(e) = &outcome {
                    tracing::warn!(error = %e, "taking over Kafka partitions");
                }
                if let Some(ready) = self.take_ready() {
                    let _ =
                        ready.send(outcome.map_err(|e| format!("joining the consumer group: {e}")));
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                if let Some(pending) = &self.pending {
                    store_acknowledged(consumer, pending);
                    pending.revoked();
                }
                match consumer.commit_consumer_state(CommitMode::Sync) {
                    Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                    Err(e) => tracing::debug!(error = %e, "committing before a rebalance"),
                }
                if let Err(e) = consumer.unassign() {
                    tracing::debug!(error = %e, "giving up Kafka partitions");
                }
            }
            other => tracing::warn!(error = ?other, "Kafka group rebalance failed"),
        }
    }
}
