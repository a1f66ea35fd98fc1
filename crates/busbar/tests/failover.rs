//! Server lists and failover, on every broker transport that can be given several servers
//! here: a subscriber and a publisher connect with a list; the server they use is killed
//! mid-stream while the publisher goes on at a steady rate; both move on to the next server
//! (the `Reconnected` event names it) and the stream goes on there.
//!
//! A plain (not durable) subscriber loses what was published while it was away, and what
//! the dead server had taken but not yet passed on: that loss is counted and printed (the
//! figures in docs/clusters.md come from here), never silent. What the test holds every
//! transport to: the event names the new server, nothing published once both sides were
//! back is lost, what arrives arrives in order, and at-most-once transports never
//! duplicate. A durable subscriber (MQTT through a persistent session, NATS through a
//! JetStream stream on three nodes) reads the same stream and is held to the same checks;
//! its loss is printed next to the plain one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use busbar::error::PublishErrorKind;
use busbar::{ConnectionEvent, ConnectionEvents, Message, Subscription, Topic};
use tokio::sync::watch;
use tokio::time::Instant;

/// One message every this long.
const PERIOD: Duration = Duration::from_millis(5);
/// Messages received before the kill.
const BEFORE_KILL: usize = 50;
/// Messages published after both sides were back, and awaited at the subscriber.
const AFTER_BACK: u32 = 200;
/// How long anything in this test may take.
const PATIENCE: Duration = Duration::from_secs(60);
/// How long a durable subscriber waits, after the end marker, for what the broker gives
/// again once its ack wait passed (NATS: 30 s).
const ACK_WAIT: Duration = Duration::from_secs(40);

/// The number of the end marker: the stream's last message, on the stream's topic, so that
/// it arrives after the rest wherever order is kept (on Kafka, within one partition only).
const END: u32 = u32::MAX;

/// Refusals that say the broker could not be reached: all a failover may cost a publisher.
const UNREACHABLE: &[PublishErrorKind] = &[PublishErrorKind::NotConnected];

/// Refusals of publishes a JetStream stream keeps for a durable subscriber: its server out
/// of reach, or no confirmation in time (while the stream's leader is elected again).
const UNCONFIRMED: &[PublishErrorKind] =
    &[PublishErrorKind::NotConnected, PublishErrorKind::TimedOut];

/// What happened to one stream.
#[derive(Debug, Clone)]
struct Figures {
    /// Publishes the broker confirmed (or, at QoS 0, that were written).
    confirmed: Vec<u32>,
    /// Publishes refused to the publisher, with why.
    refused: Vec<(u32, PublishErrorKind)>,
    /// Numbers received, in arrival order, duplicates included.
    received: Vec<u32>,
    /// The first number published once both sides were back.
    back_from: u32,
    /// From the kill to the arrival of the first message published after it.
    kill_to_first: Duration,
}

impl Figures {
    fn unique(&self) -> std::collections::HashSet<u32> {
        self.received.iter().copied().collect()
    }

    fn duplicated(&self) -> usize {
        self.received.len() - self.unique().len()
    }

    /// Confirmed but never received.
    fn lost(&self) -> Vec<u32> {
        let got = self.unique();
        self.confirmed.iter().copied().filter(|n| !got.contains(n)).collect()
    }

    fn in_order(&self) -> bool {
        let mut seen = std::collections::HashSet::new();
        let firsts: Vec<u32> = self.received.iter().copied().filter(|n| seen.insert(*n)).collect();
        firsts.windows(2).all(|w| w[0] < w[1])
    }
}

fn numbered(topic: &Topic, n: u32) -> Message {
    Message::new(topic.clone(), n.to_be_bytes().to_vec())
}

fn number(m: &Message) -> u32 {
    let bytes = m.payload.to_bytes().expect("bytes");
    u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes"))
}

/// The server the next `Reconnected` names.
async fn reconnected_to(events: &mut ConnectionEvents, who: &str) -> String {
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(PATIENCE, events.next()).await {
            Ok(Some(ConnectionEvent::Reconnected { server })) => return server,
            Ok(Some(other)) => seen.push(other),
            other => panic!("{who}: no Reconnected event ({other:?}); before it: {seen:?}"),
        }
    }
}

/// One case at a time: each starts and kills brokers of its own, and two cores shared by
/// several clusters starting at once would measure the machine, not the failover.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The next message of the stream (or of the end marker, as `None`).
async fn next(sub: &mut Subscription) -> Option<(u32, Instant)> {
    let m = tokio::time::timeout(PATIENCE, sub.recv())
        .await
        .expect("the stream stalled")
        .expect("the subscription stays open");
    let n = number(&m);
    (n != END).then(|| (n, Instant::now()))
}

/// What a durable subscriber read: up to the end marker, in arrival order, and what came
/// after it (given again by the broker after its ack wait: the reader that had it was on
/// the killed server).
type DurableReading = (Vec<u32>, Vec<u32>);

/// A durable subscriber on `url` (MQTT: through a persistent session) reading the stream
/// in a task of its own until the end marker, and then, when `confirmed` comes, until all
/// of it has come (within `ACK_WAIT`), with its events; `None` where the servers cannot keep one
/// (a NATS cluster without JetStream).
async fn durable_reader(
    url: &str,
    durable: &str,
    confirmed: tokio::sync::oneshot::Receiver<Vec<u32>>,
) -> Option<(tokio::task::JoinHandle<DurableReading>, ConnectionEvents)> {
    // MQTT keeps it in a persistent session.
    let url = if url.starts_with("mqtt") { format!("{url}?session_expiry=60") } else { url.into() };
    // NATS keeps it in a JetStream stream replicated to every node of the cluster.
    let url = if url.starts_with("nats") { format!("{url}?durable_replicas=3") } else { url };
    let options = busbar::ConnectOptions::new().client_id(format!("{durable}-reader"));
    let conn = busbar::connect_with(&url, options).await.expect("the durable subscriber connects");
    let filter = busbar::TopicFilter::new("failover/#").expect("filter");
    // A JetStream cluster just formed may still be electing its leader.
    let deadline = Instant::now() + PATIENCE;
    let mut sub = loop {
        let options = busbar::SubscribeOptions::from(filter.clone()).durable(durable);
        match conn.subscribe_with(options).await {
            Ok(sub) => break sub,
            Err(e) if e.kind() == busbar::error::SubscribeErrorKind::Unsupported => {
                eprintln!("failover: no durable subscriber here: {e}");
                return None;
            }
            Err(e) if Instant::now() < deadline => {
                eprintln!("failover: the durable subscription, again: {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("the durable subscription: {e}"),
        }
    };
    let events = conn.events();
    let reading = tokio::spawn(async move {
        let mut received = Vec::new();
        while let Some((n, _)) = next(&mut sub).await {
            received.push(n);
        }
        let mut late = Vec::new();
        if let Ok(confirmed) = confirmed.await {
            let mut missing: std::collections::HashSet<u32> =
                confirmed.into_iter().filter(|n| !received.contains(n)).collect();
            let deadline = Instant::now() + ACK_WAIT;
            while !missing.is_empty() {
                match tokio::time::timeout_at(deadline, sub.recv()).await {
                    Ok(Some(m)) if number(&m) != END => {
                        let n = number(&m);
                        missing.remove(&n);
                        late.push(n);
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }
        drop(sub);
        let _ = conn.close().await;
        (received, late)
    });
    Some((reading, events))
}

/// Runs the stream on `url` (a server list), killing the server in use with `kill`, and
/// checks that both sides move to `next_server` (`None` where the client moves without
/// reconnecting as a whole: a Kafka client holds a link to every broker it uses, and loses
/// only the dead one; both sides count as back once a message published after the kill
/// arrives). A durable subscriber reads the stream too,
/// where the servers keep one: its figures are printed, held to the same checks and
/// returned after the plain subscriber's (where the dead server held it alone, what it
/// held is beyond its reach; a cluster that replicates it is held to more by its test).
async fn stream_through_failover(
    name: &str,
    url: &str,
    next_server: Option<&str>,
    kill: impl std::future::Future<Output = ()>,
    refusals: &[PublishErrorKind],
) -> (Figures, Option<Figures>) {
    let subscriber = busbar::connect(url).await.expect("the subscriber connects");
    let mut sub_events = subscriber.events();
    let mut sub = subscriber.subscribe("failover/#").await.expect("subscribe");
    let durable_name = format!("failover-{}", std::process::id());
    let (confirmed_tx, confirmed_rx) = tokio::sync::oneshot::channel();
    let (durable, mut durable_events) = match durable_reader(url, &durable_name, confirmed_rx).await
    {
        Some((reading, events)) => (Some(reading), Some(events)),
        None => (None, None),
    };
    let publisher = busbar::connect(url).await.expect("the publisher connects");
    let mut pub_events = publisher.events();
    let topic = Topic::new("failover/n").expect("topic");

    // The publisher: one message per period until told to stop. Each publish is written
    // in order (its first poll), and one that cannot be confirmed at once is driven on in a
    // task of its own (a retry after a lost connection runs inside it), so the rate holds
    // through the outage and nothing waits on the test to be polled.
    let (stop_tx, mut stop) = watch::channel(false);
    let published = Arc::new(AtomicU32::new(0));
    let publishing = {
        let published = published.clone();
        let publisher = publisher.clone();
        tokio::spawn(async move {
            let mut results = Vec::new();
            let mut pending = Vec::new();
            let mut tick = tokio::time::interval(PERIOD);
            let mut n = 0;
            while !*stop.borrow_and_update() {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => break,
                }
                let conn = publisher.clone();
                let message = numbered(&topic, n);
                let mut done = Box::pin(async move { conn.publish(message).await });
                match tokio::time::timeout(Duration::ZERO, &mut done).await {
                    Ok(outcome) => results.push((n, outcome.map_err(|e| e.kind()))),
                    Err(_) => pending.push((n, tokio::spawn(done))),
                }
                n += 1;
                published.store(n, Ordering::Release);
            }
            for (n, done) in pending {
                let outcome = tokio::time::timeout(PATIENCE, done)
                    .await
                    .unwrap_or_else(|_| panic!("publish {n} neither confirmed nor refused"))
                    .expect("the publish task");
                results.push((n, outcome.map_err(|e| e.kind())));
            }
            results
        })
    };

    let mut received = Vec::new();
    while received.len() < BEFORE_KILL {
        if let Some((n, _)) = next(&mut sub).await {
            received.push(n);
        }
    }
    kill.await;
    let killed_at = Instant::now();
    let published_at_kill = published.load(Ordering::Acquire);
    // Messages keep arriving (from the dead server's last writes, then the new one) while
    // the two reconnect; the subscription's queue holds them meanwhile.
    let mut back_from = None;
    if let Some(next_server) = next_server {
        let (sub_server, pub_server, durable_server) = tokio::join!(
            reconnected_to(&mut sub_events, "the subscriber"),
            reconnected_to(&mut pub_events, "the publisher"),
            async {
                match durable_events.as_mut() {
                    Some(events) => Some(reconnected_to(events, "the durable subscriber").await),
                    None => None,
                }
            }
        );
        if let Some(server) = durable_server {
            assert_eq!(server, next_server, "{name}: the durable subscriber's Reconnected");
        }
        back_from = Some(published.load(Ordering::Acquire));
        assert_eq!(sub_server, next_server, "{name}: the subscriber's Reconnected names it");
        assert_eq!(pub_server, next_server, "{name}: the publisher's Reconnected names it");
    }

    let mut kill_to_first = None;
    loop {
        let Some((n, at)) = next(&mut sub).await else { continue };
        received.push(n);
        if n >= published_at_kill && kill_to_first.is_none() {
            kill_to_first = Some(at.saturating_duration_since(killed_at));
            // Without events, the first message published after the kill says both are back.
            back_from.get_or_insert_with(|| published.load(Ordering::Acquire));
        }
        if back_from.is_some_and(|back| n >= back + AFTER_BACK) {
            break;
        }
    }
    let back_from = back_from.expect("both sides came back");
    stop_tx.send_replace(true);
    let results = publishing.await.expect("the publisher task");
    // NATS gives a message again after its consumer's ack wait when the reader that had it
    // was on the killed node: the durable reader waits for those. Elsewhere what a dead
    // server held is not given again by another (independent servers), or comes at once.
    if url.starts_with("nats") {
        let confirmed = results.iter().filter(|(_, r)| r.is_ok()).map(|(n, _)| *n).collect();
        let _ = confirmed_tx.send(confirmed);
    } else {
        drop(confirmed_tx);
    }
    // The end marker is the test's own: sent again while the broker does not confirm it (a
    // NATS stream whose leader was on the killed node can take a while to take publishes
    // again; what it refused meanwhile is counted above). Two markers are harmless: readers
    // stop at the first.
    let end = numbered(&Topic::new("failover/n").expect("topic"), END);
    let give_up = tokio::time::Instant::now() + PATIENCE;
    loop {
        match publisher.publish(end.clone()).await {
            Ok(()) => break,
            Err(e) if refusals.contains(&e.kind()) && tokio::time::Instant::now() < give_up => {
                eprintln!("failover, {name}: the end marker not confirmed ({e}); again");
            }
            Err(e) => panic!("{name}: the end marker: {e}"),
        }
    }
    while let Some((n, _)) = next(&mut sub).await {
        received.push(n);
    }
    let durable_received = match durable {
        Some(reading) => Some(
            tokio::time::timeout(PATIENCE + ACK_WAIT, reading)
                .await
                .expect("the durable subscriber gets the end marker")
                .expect("the durable subscriber's task"),
        ),
        None => None,
    };
    let _ = publisher.close().await;
    let _ = subscriber.close().await;
    if durable_received.is_some() {
        let cleanup = busbar::connect(url).await.expect("connects");
        let _ = cleanup.remove_durable(&durable_name, "failover/#").await;
        let _ = cleanup.close().await;
    }

    let (confirmed, refused): (Vec<_>, Vec<_>) = results.into_iter().partition(|(_, r)| r.is_ok());
    let figures = Figures {
        confirmed: confirmed.into_iter().map(|(n, _)| n).collect(),
        refused: refused.into_iter().filter_map(|(n, r)| r.err().map(|k| (n, k))).collect(),
        received,
        back_from,
        kill_to_first: kill_to_first.expect("a message after the kill"),
    };
    let lost = figures.lost();
    eprintln!(
        "failover, {name}: sent {} ({} confirmed, {} refused), received {} (duplicated {}), \
         lost {} (confirmed, never received: {:?}), kill to first message {:?}, both back \
         from message {}",
        figures.confirmed.len() + figures.refused.len(),
        figures.confirmed.len(),
        figures.refused.len(),
        figures.unique().len(),
        figures.duplicated(),
        lost.len(),
        lost,
        figures.kill_to_first,
        figures.back_from,
    );
    assert!(figures.in_order(), "{name}: out of order: {:?}", figures.received);
    let lost_after_back: Vec<u32> =
        lost.iter().copied().filter(|n| *n >= figures.back_from).collect();
    assert!(lost_after_back.is_empty(), "{name}: lost once both were back: {lost_after_back:?}");
    let durable = durable_received.map(|(received, late)| {
        let in_order = Figures { received: received.clone(), ..figures.clone() }.in_order();
        let figures = Figures {
            received: received.into_iter().chain(late.iter().copied()).collect(),
            confirmed: figures.confirmed.clone(),
            ..figures.clone()
        };
        (figures, in_order, late)
    });
    let durable = durable.map(|(durable, in_order, late)| {
        let lost = durable.lost();
        eprintln!(
            "failover, {name}, durable subscriber: received {} (duplicated {}, given again \
             after the end: {late:?}), lost {} (confirmed, never received: {:?})",
            durable.unique().len(),
            durable.duplicated(),
            lost.len(),
            lost,
        );
        assert!(in_order, "{name}: durable out of order: {:?}", durable.received);
        let lost_after_back: Vec<u32> =
            lost.iter().copied().filter(|n| *n >= figures.back_from).collect();
        assert!(lost_after_back.is_empty(), "{name}: durable lost once back: {lost_after_back:?}");
        durable
    });
    assert!(
        figures.refused.iter().all(|(_, k)| refusals.contains(k)),
        "{name}: a refusal says why, one of {refusals:?}: {:?}",
        figures.refused
    );
    (figures, durable)
}

#[cfg(feature = "mqtt")]
mod mqtt {
    use busbar_testkit::clusters::server_list;
    use busbar_testkit::{BrokerProcess, MosquittoConfig, skip_if_missing};

    use super::*;

    /// Two Mosquitto brokers (MQTT has no clustering: the client fails over between
    /// independent brokers).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_list_fails_over_to_the_next_broker_on_mqtt() {
        let _one = ONE_AT_A_TIME.lock().await;
        let test = "a_server_list_fails_over_to_the_next_broker_on_mqtt";
        let Some(mut first) =
            skip_if_missing(test, BrokerProcess::mosquitto(MosquittoConfig::new()).await)
        else {
            return;
        };
        let second = BrokerProcess::mosquitto(MosquittoConfig::new()).await.expect("second");
        let url = server_list("mqtt", &[&first, &second]);
        let next = format!("127.0.0.1:{}", second.port());
        let kill = async { first.stop().await.expect("kill the first broker") };
        let (figures, _) =
            stream_through_failover("MQTT 5, QoS 1", &url, Some(&next), kill, UNREACHABLE).await;
        // At least once at QoS 1: the publisher keeps what it could not send and the next
        // broker confirms it, so nothing is refused.
        assert!(figures.refused.is_empty(), "{:?}", figures.refused);
    }

    /// A list whose first server is down connects to the next; one where every server is
    /// down fails with the connect error of the last one tried.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connect_skips_servers_that_are_down_on_mqtt() {
        let _one = ONE_AT_A_TIME.lock().await;
        let test = "connect_skips_servers_that_are_down_on_mqtt";
        let Some(live) =
            skip_if_missing(test, BrokerProcess::mosquitto(MosquittoConfig::new()).await)
        else {
            return;
        };
        let dead = busbar_testkit::free_port().expect("a port nobody listens on");
        let url = format!("mqtt://127.0.0.1:{dead},127.0.0.1:{}", live.port());
        let conn = busbar::connect(&url).await.expect("connects to the second server");
        conn.close().await.expect("close");
        let url = format!("mqtt://127.0.0.1:{dead},127.0.0.1:{dead}?connect_timeout=5s");
        let err = busbar::connect(&url).await.expect_err("nobody listens");
        assert_eq!(err.kind(), busbar::error::ConnectErrorKind::Unreachable, "{err}");
    }
}

#[cfg(feature = "nats")]
mod nats {
    use busbar_testkit::clusters::{nats_cluster, server_list};
    use busbar_testkit::skip_if_missing;

    use super::*;

    /// A three-node NATS cluster: the node both sides are on is killed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cluster_member_killed_mid_stream_on_nats() {
        let _one = ONE_AT_A_TIME.lock().await;
        let test = "a_cluster_member_killed_mid_stream_on_nats";
        let Some(mut nodes) = skip_if_missing(test, nats_cluster(3).await) else { return };
        let url = server_list("nats", &nodes.iter().collect::<Vec<_>>());
        // Listed order: both start on the first node and move to the second.
        let next = format!("127.0.0.1:{}", nodes[1].port());
        let first = &mut nodes[0];
        let kill = async { first.stop().await.expect("kill the first node") };
        let (_, durable) =
            stream_through_failover("NATS cluster, QoS 0", &url, Some(&next), kill, UNCONFIRMED)
                .await;
        // Publishes to a subject a durable subscription keeps are confirmed by its stream
        // (and tried again while its leader is away): every confirmed one reaches it.
        let durable = durable.expect("a durable subscriber on NATS");
        assert!(durable.lost().is_empty(), "durable lost confirmed: {:?}", durable.lost());
    }
}

#[cfg(feature = "redis")]
mod redis {
    use busbar_testkit::clusters::{SENTINEL_GROUP, SentinelGroup};
    use busbar_testkit::skip_if_missing;

    use super::*;

    /// A master, its replica and a Sentinel: the master is killed, the Sentinel promotes
    /// the replica, and busbar, which asks the Sentinel at every connect, follows.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_master_killed_mid_stream_under_sentinel() {
        let _one = ONE_AT_A_TIME.lock().await;
        let test = "the_master_killed_mid_stream_under_sentinel";
        let Some(mut group) = skip_if_missing(test, SentinelGroup::start().await) else {
            return;
        };
        let url = format!("redis://127.0.0.1:{}?sentinel={SENTINEL_GROUP}", group.sentinel.port());
        let next = format!("127.0.0.1:{}", group.replica.port());
        let master = &mut group.master;
        let kill = async { master.stop().await.expect("kill the master") };
        let (figures, _) = stream_through_failover(
            "Redis with Sentinel, QoS 0",
            &url,
            Some(&next),
            kill,
            UNREACHABLE,
        )
        .await;
        assert_eq!(figures.duplicated(), 0, "at most once: {:?}", figures.received);
    }

    /// A Sentinel that knows no such group is a configuration error that names it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unknown_master_group_is_named_in_the_error() {
        let _one = ONE_AT_A_TIME.lock().await;
        let test = "an_unknown_master_group_is_named_in_the_error";
        let Some(group) = skip_if_missing(test, SentinelGroup::start().await) else { return };
        let url = format!("redis://127.0.0.1:{}?sentinel=nosuchgroup", group.sentinel.port());
        let err = busbar::connect(&url).await.expect_err("no such group");
        assert_eq!(err.kind(), busbar::error::ConnectErrorKind::Config, "{err}");
        assert!(err.to_string().contains("nosuchgroup"), "{err}");
    }
}

#[cfg(feature = "amqp")]
mod amqp {
    use busbar_testkit::clusters::{rabbitmq_cluster, server_list};
    use busbar_testkit::{BrokerProcess, skip_if_missing};

    use super::*;

    /// Two RabbitMQ nodes of their own (not clustered: a node's queues are its own, so the
    /// subscriber's queue is declared again on the next node).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_list_fails_over_to_the_next_node_on_amqp() {
        let _one = ONE_AT_A_TIME.lock().await;
        let test = "a_server_list_fails_over_to_the_next_node_on_amqp";
        let Some(mut first) = skip_if_missing(test, BrokerProcess::rabbitmq().await) else {
            return;
        };
        let second = BrokerProcess::rabbitmq().await.expect("second node");
        let url = server_list("amqp", &[&first, &second]);
        let next = format!("127.0.0.1:{}", second.port());
        let kill = async { first.stop().await.expect("kill the first node") };
        stream_through_failover("AMQP, publisher confirms", &url, Some(&next), kill, UNREACHABLE)
            .await;
    }

    /// Three RabbitMQ nodes in one cluster, durable subscriptions on quorum queues
    /// (replicated on every node, so two of three keep a majority): the node everybody is
    /// on is killed. The plain subscriber's queue lived on that node and is declared again
    /// on the next (what it held is lost, counted); the durable subscriber's quorum queue
    /// elects a new leader and hands over everything the broker confirmed: nothing lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cluster_node_killed_mid_stream_on_amqp_loses_nothing_durable() {
        let _one = ONE_AT_A_TIME.lock().await;
        let test = "a_cluster_node_killed_mid_stream_on_amqp_loses_nothing_durable";
        let Some(mut nodes) = skip_if_missing(test, rabbitmq_cluster(3).await) else { return };
        let list = server_list("amqp", &nodes.iter().collect::<Vec<_>>());
        let url = format!("{list}?durable_queues=quorum");
        let next = format!("127.0.0.1:{}", nodes[1].port());
        let first = &mut nodes[0];
        let kill = async { first.stop().await.expect("kill the first node") };
        let name = "RabbitMQ cluster of 3, publisher confirms, quorum queue";
        // A publish the quorum queue could not take while it elected its new leader is
        // nacked: refused, and counted as such.
        let refusals = &[PublishErrorKind::NotConnected, PublishErrorKind::Refused];
        let (plain, durable) =
            stream_through_failover(name, &url, Some(&next), kill, refusals).await;
        let durable = durable.expect("a durable subscriber on AMQP");
        assert_eq!(
            durable.lost(),
            Vec::<u32>::new(),
            "the durable subscriber lost confirmed messages"
        );
        // The publisher's channel is renewed after a nack (RabbitMQ 3.10 would otherwise
        // nack all it sends to the queue from then on, the end marker included): once the
        // queue has its new leader, publishes are confirmed again, the last one too.
        let last = plain.confirmed.iter().chain(plain.refused.iter().map(|(n, _)| n)).max();
        assert!(
            last.is_some_and(|n| plain.confirmed.contains(n)),
            "the stream ends refused: {:?}",
            plain.refused
        );
    }
}

#[cfg(feature = "kafka")]
mod kafka {
    use busbar_testkit::clusters::{TansuPair, server_list};
    use busbar_testkit::skip_if_missing;

    use super::*;

    /// Two Tansu brokers on one PostgreSQL database, a list naming both: the first is
    /// killed mid-stream. Both serve the same log, so the clients (librdkafka follows the
    /// cluster's metadata to the live broker) go on where they were: every confirmed
    /// message reaches the durable subscriber (a consumer group whose committed position
    /// is in the shared database) and the plain one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_broker_of_two_on_one_database_killed_mid_stream_on_kafka() {
        let _one = ONE_AT_A_TIME.lock().await;
        let test = "a_broker_of_two_on_one_database_killed_mid_stream_on_kafka";
        let Some(mut pair) = skip_if_missing(test, TansuPair::start().await) else { return };
        let url = server_list("kafka", &pair.brokers.iter().collect::<Vec<_>>());
        // The stream's topic exists before the subscribers come (a subscription to a name
        // makes its topic), so the durable subscriber's group has its partitions when the
        // stream starts, as a subscriber of a running system has; a group still forming when
        // its coordinator dies is another case.
        let setup = busbar::connect(&url).await.expect("connects");
        drop(setup.subscribe("failover/n").await.expect("the topic is made"));
        setup.close().await.expect("close");
        let first = &mut pair.brokers[0];
        let kill = async { first.stop().await.expect("kill the first broker") };
        let name = "Kafka, two Tansu brokers on one PostgreSQL database";
        let refusals = &[PublishErrorKind::NotConnected, PublishErrorKind::TimedOut];
        let (plain, durable) = stream_through_failover(name, &url, None, kill, refusals).await;
        assert_eq!(plain.lost(), Vec::<u32>::new(), "the plain subscriber lost confirmed messages");
        let durable = durable.expect("a durable subscriber on Kafka");
        assert_eq!(
            durable.lost(),
            Vec::<u32>::new(),
            "the durable subscriber lost confirmed messages"
        );
    }
}
