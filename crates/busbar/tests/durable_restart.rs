//! The fault matrix, row "broker killed, persistent subscriber", for the transports whose
//! durable subscriptions live in the broker's own storage (Redis Streams, NATS JetStream):
//! a broker with lasting storage is killed with SIGKILL and started again, twice: once while
//! its durable subscription holds messages nobody has read yet, once while the reader holds
//! messages it has not acknowledged. Nothing is lost; what was acknowledged before or after
//! a restart does not come again (checked by a new reader that finds nothing before a
//! marker). MQTT and AMQP have their own tests of the same row (docs/faults.md).

#![cfg(any(feature = "redis", feature = "nats"))]

use std::time::Duration;

use busbar::{
    Acknowledge, ConnectOptions, Connection, ConnectionEvent, ConnectionEvents, Message,
    SubscribeOptions, Subscription, Topic, TopicFilter,
};
use busbar_testkit::{BrokerProcess, skip_if_missing};

/// Published while nobody reads, before the first kill.
const STORED: u32 = 20;
/// Of those, acknowledged before the second kill; the rest are held unacknowledged through
/// it and acknowledged after.
const ACKED_BEFORE: u32 = 10;
/// Published after the second restart.
const AFTER: u32 = 10;

async fn connect(url: &str, client_id: &str) -> Connection {
    busbar::connect_with(url, ConnectOptions::new().client_id(client_id))
        .await
        .unwrap_or_else(|e| panic!("{client_id} connects: {e}"))
}

fn numbered(topic: &Topic, n: u32) -> Message {
    Message::new(topic.clone(), n.to_be_bytes().to_vec())
}

fn number(m: &Message) -> u32 {
    let bytes = m.payload.to_bytes().expect("bytes");
    u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes"))
}

async fn next(sub: &mut Subscription, what: &str) -> Message {
    tokio::time::timeout(Duration::from_secs(30), sub.recv())
        .await
        .unwrap_or_else(|_| panic!("{what} did not arrive within 30 s"))
        .unwrap_or_else(|| panic!("the subscription ended before {what}"))
}

async fn reconnected(events: &mut ConnectionEvents, who: &str) {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), events.next()).await {
            Ok(Some(ConnectionEvent::Reconnected { .. })) => return,
            Ok(Some(_)) => {}
            other => panic!("{who} did not reconnect: {other:?}"),
        }
    }
}

/// Publishes `numbers` on a connection of its own and closes it: `close` returns once the
/// broker has everything, so a kill after it cannot take what was published.
async fn publish_all(url: &str, id: &str, topic: &Topic, numbers: std::ops::Range<u32>) {
    let publisher = connect(url, id).await;
    for n in numbers {
        publisher.publish(numbered(topic, n)).await.expect("publish");
    }
    publisher.close().await.expect("the broker has every publish");
}

/// Whether acknowledgements the broker has taken survive its being killed at once.
#[derive(Clone, Copy, PartialEq)]
enum AckDurability {
    /// Written before the broker answers (Redis with `appendfsync always`).
    Immediate,
    /// Written on a timer after the broker took them (nats-server writes a consumer's state
    /// about 10 ms after an acknowledgement): one taken just before a kill may be lost, and
    /// its message comes again. At least once: never lost.
    Deferred,
}

async fn row(name: &str, mut broker: BrokerProcess, url: String, acks: AckDurability) {
    let run = format!("restart{}", std::process::id());
    let topic = Topic::new(format!("{run}/n")).expect("topic");
    let durable_name = format!("{run}-durable");
    let options = || {
        SubscribeOptions::from(TopicFilter::new(topic.as_str()).expect("filter"))
            .durable(durable_name.clone())
            .acknowledge(Acknowledge::Explicit)
    };
    let reader_id = format!("{run}.reader");

    // 1. The subscription is made, its reader goes, and messages wait for it in the broker
    //    when it is killed.
    let reader = connect(&url, &reader_id).await;
    drop(reader.subscribe_with(options()).await.expect("durable subscription"));
    reader.close().await.expect("the reader goes");
    publish_all(&url, &format!("{run}.first"), &topic, 0..STORED).await;
    broker.restart().await.expect("the broker is killed and starts again");

    // 2. A reader comes back: everything stored, in order. It acknowledges the first ones
    //    and goes (its close returns once the broker has the acknowledgements, and gives
    //    the rest back); the next reader takes the rest and holds them, unacknowledged,
    //    when the broker is killed again.
    let reader = connect(&url, &reader_id).await;
    let mut sub = reader.subscribe_with(options()).await.expect("durable subscription again");
    for n in 0..STORED {
        let m = next(&mut sub, &format!("{name}: stored message {n}")).await;
        assert_eq!(number(&m), n, "{name}: what the broker kept through a kill, in order");
        if n < ACKED_BEFORE {
            m.ack();
        }
    }
    drop(sub);
    reader.close().await.expect("the reader goes");
    let reader = connect(&url, &reader_id).await;
    let mut events = reader.events();
    let mut sub = reader.subscribe_with(options()).await.expect("durable subscription again");
    let mut held = Vec::new();
    for n in ACKED_BEFORE..STORED {
        let m = next(&mut sub, &format!("{name}: given back message {n}")).await;
        assert_eq!(number(&m), n, "{name}: what the first reader gave back, in order");
        held.push(m);
    }
    broker.restart().await.expect("the broker is killed and starts again");
    reconnected(&mut events, "the reader").await;

    // 3. After the restart: the held ones are acknowledged now, and what is published goes
    //    to the same subscription. What was never acknowledged may come again (at least
    //    once); nothing may be missing.
    for m in held {
        m.ack();
    }
    publish_all(&url, &format!("{run}.second"), &topic, STORED..STORED + AFTER).await;
    let mut seen = std::collections::BTreeSet::new();
    let mut again = Vec::new();
    let mut acked_again = Vec::new();
    while seen.len() < AFTER as usize {
        let m = next(&mut sub, &format!("{name}: published after the restart")).await;
        let n = number(&m);
        m.ack();
        if n >= STORED {
            assert!(seen.insert(n), "{name}: {n} delivered twice after the restart");
            assert_eq!(seen.iter().next_back(), Some(&n), "{name}: {n} out of order");
        } else if n >= ACKED_BEFORE {
            // Held, never acknowledged before the kill: it may come again.
            again.push(n);
        } else {
            // Acknowledged before the kill: only where the broker writes acknowledgements
            // after taking them may one have been lost with the process.
            assert!(acks == AckDurability::Deferred, "{name}: {n} was acknowledged and came again");
            acked_again.push(n);
        }
    }
    drop(sub);
    reader.close().await.expect("the reader closes");

    // 4. Every acknowledgement, before or after the restart, reached the broker: a new
    //    reader finds nothing before the marker published now.
    let reader = connect(&url, &reader_id).await;
    let mut sub = reader.subscribe_with(options()).await.expect("durable subscription, last");
    publish_all(&url, &format!("{run}.marker"), &topic, 1000..1001).await;
    let m = next(&mut sub, &format!("{name}: the marker")).await;
    assert_eq!(number(&m), 1000, "{name}: something acknowledged came again");
    m.ack();
    drop(sub);
    eprintln!(
        "durable subscriber through two broker kills, {name}: {STORED} stored kept in order, \
         {AFTER} after the restart once each, given again after the restart: {again:?}, \
         acknowledged just before the kill and given again: {acked_again:?}"
    );
    reader.remove_durable(&durable_name, topic.as_str()).await.expect("remove the durable");
    reader.close().await.expect("close");
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_subscription_survives_broker_kills_on_redis() {
    // Every write is in the append-only file before Redis answers it.
    let lasting =
        vec!["--appendonly".into(), "yes".into(), "--appendfsync".into(), "always".into()];
    let Some(broker) = skip_if_missing(
        "a_durable_subscription_survives_broker_kills_on_redis",
        BrokerProcess::redis_with(lasting, false).await,
    ) else {
        return;
    };
    let url = broker.url();
    row("Redis", broker, url, AckDurability::Immediate).await;
}

#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_subscription_survives_broker_kills_on_nats() {
    let config = busbar_testkit::NatsConfig::new().jetstream();
    let Some(broker) = skip_if_missing(
        "a_durable_subscription_survives_broker_kills_on_nats",
        BrokerProcess::nats_with_config(config).await,
    ) else {
        return;
    };
    let url = broker.url();
    row("NATS", broker, url, AckDurability::Deferred).await;
}
