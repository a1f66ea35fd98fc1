//! The fault matrix, row "broker killed mid-stream": on each broker busbar can start and
//! kill here (Mosquitto with MQTT 5 and 3.1.1, Redis, NATS, RabbitMQ), a publisher sends a numbered
//! stream at the transport's best QoS to a clean subscriber; the broker process is killed
//! and started again mid-stream. Every message is accounted for: sent before the kill,
//! during the outage, after both sides are back; received, duplicated, lost, or refused to
//! the publisher. Each transport is held to what docs/faults.md promises for it, and the
//! figures are printed for that table.

use std::time::Duration;

use busbar::error::PublishErrorKind;
use busbar::{ConnectionEvent, ConnectionEvents, Message, Subscription, Topic};
use busbar_testkit::{BrokerProcess, MosquittoConfig, skip_if_missing};

const KILLED_AT: u32 = 300;
const BACK_AT: u32 = 400;
const TOTAL: u32 = 700;

/// What happened to the stream on one transport.
#[derive(Debug, Default)]
struct Tally {
    /// Numbers received, in arrival order (duplicates included).
    received: Vec<u32>,
    /// Outage publishes the publisher was told failed (and of which kind).
    refused: Vec<(u32, PublishErrorKind)>,
    /// Whether `close` confirmed everything published.
    closed_ok: bool,
}

impl Tally {
    fn count(&self, range: std::ops::Range<u32>) -> (usize, usize) {
        let mut seen = std::collections::HashSet::new();
        let mut dups = 0;
        for n in self.received.iter().filter(|n| range.contains(n)) {
            if !seen.insert(*n) {
                dups += 1;
            }
        }
        (seen.len(), dups)
    }

    fn in_order(&self, range: std::ops::Range<u32>) -> bool {
        let mut firsts = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for n in self.received.iter().filter(|n| range.contains(n)) {
            if seen.insert(*n) {
                firsts.push(*n);
            }
        }
        firsts.windows(2).all(|w| w[0] < w[1])
    }
}

async fn next_event(events: &mut ConnectionEvents, want: impl Fn(&ConnectionEvent) -> bool) {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), events.next()).await {
            Ok(Some(e)) if want(&e) => return,
            Ok(Some(_)) => {}
            other => panic!("the awaited connection event never came: {other:?}"),
        }
    }
}

fn numbered(topic: &Topic, n: u32) -> Message {
    Message::new(topic.clone(), n.to_be_bytes().to_vec())
}

/// The number a stream message carries.
fn number(m: &Message) -> u32 {
    let bytes = m.payload.to_bytes().expect("bytes");
    u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes"))
}

/// Takes what `sub` has until a message on a topic ending in `marker` arrives.
async fn drain(sub: &mut Subscription, tally: &mut Tally, marker: &str) {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(20), sub.recv())
            .await
            .unwrap_or_else(|_| panic!("{marker} never arrived"))
            .expect("subscription open");
        if m.topic.as_str().ends_with(marker) {
            return;
        }
        if m.topic.as_str().ends_with("/n") {
            tally.received.push(number(&m));
        }
    }
}

async fn run(mut broker: BrokerProcess, url: &str) -> Tally {
    let mut tally = Tally::default();
    let sub_conn = busbar::connect(url).await.expect("subscriber connects");
    let mut sub_events = sub_conn.events();
    let mut sub = sub_conn.subscribe("matrix/#").await.expect("subscribe");
    let publisher = busbar::connect(url).await.expect("publisher connects");
    let mut pub_events = publisher.events();
    let topic = Topic::new("matrix/n").expect("topic");
    let marker = |name: &str| Message::new(Topic::new(format!("matrix/{name}")).expect("t"), "");

    for n in 0..KILLED_AT {
        publisher.publish(numbered(&topic, n)).await.expect("publish before the kill");
    }
    publisher.publish(marker("killing")).await.expect("marker");
    drain(&mut sub, &mut tally, "killing").await;

    broker.stop().await.expect("the broker is killed");
    next_event(&mut pub_events, |e| matches!(e, ConnectionEvent::Disconnected { .. })).await;
    // Each outage publish is made now, while the broker is down. One that waits for the
    // broker's confirmation (MQTT at QoS 1 keeps it for the next connection) is awaited
    // once the broker is back.
    let mut unconfirmed = Vec::new();
    for n in KILLED_AT..BACK_AT {
        let mut done = publisher.publish(numbered(&topic, n));
        match tokio::time::timeout(Duration::ZERO, &mut done).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tally.refused.push((n, e.kind())),
            Err(_) => unconfirmed.push((n, done)),
        }
    }
    broker.restart().await.expect("the broker starts again");
    next_event(&mut sub_events, |e| matches!(e, ConnectionEvent::Reconnected { .. })).await;
    next_event(&mut pub_events, |e| matches!(e, ConnectionEvent::Reconnected { .. })).await;
    for (n, done) in unconfirmed {
        match tokio::time::timeout(Duration::from_secs(30), done).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tally.refused.push((n, e.kind())),
            Err(_) => {
                panic!("publish {n} was neither confirmed nor refused 30 s after the restart")
            }
        }
    }
    // Both are back once a probe gets through.
    'probing: for _ in 0..100 {
        publisher.publish(marker("probe")).await.expect("probe");
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), sub.recv()).await {
            if m.topic.as_str() == "matrix/probe" {
                break 'probing;
            }
            if m.topic.as_str() == "matrix/n" {
                tally.received.push(number(&m));
            }
        }
    }
    for n in BACK_AT..TOTAL {
        publisher.publish(numbered(&topic, n)).await.expect("publish after the restart");
    }
    publisher.publish(marker("end")).await.expect("end marker");
    drain(&mut sub, &mut tally, "end").await;
    tally.closed_ok = publisher.close().await.is_ok();
    tally
}

/// What a transport promises for a stream across a broker kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Promise {
    /// The client keeps what it could not send and the broker confirms it after the
    /// restart (MQTT at QoS 1): nothing refused, `close` confirms everything.
    KeptByClient,
    /// At least once with the broker's confirmation (AMQP publisher confirms): a publish is
    /// confirmed or refused, and a refusal says the broker could not be reached; a publish
    /// whose confirmation the kill took may be sent again.
    Confirmed,
    /// At most once: never a duplicate.
    AtMostOnce,
}

/// One broker's row: runs the stream and holds the transport to its promise.
async fn row(name: &str, broker: BrokerProcess, url: String, promise: Promise) {
    let t = run(broker, &url).await;
    let (before, before_dups) = t.count(0..KILLED_AT);
    let (outage, outage_dups) = t.count(KILLED_AT..BACK_AT);
    let (after, after_dups) = t.count(BACK_AT..TOTAL);
    let refused = t.refused.len();
    let outage_sent = (BACK_AT - KILLED_AT) as usize;
    let lost_unreported = outage_sent.saturating_sub(outage + refused);
    eprintln!(
        "fault matrix, broker killed mid-stream, {name}: before {before}/{KILLED_AT} \
         (dup {before_dups}); outage {outage} received, {refused} refused to the publisher, \
         {lost_unreported} lost unreported of {outage_sent} (dup {outage_dups}); after \
         {after}/{} (dup {after_dups}); close confirmed: {}",
        TOTAL - BACK_AT,
        t.closed_ok
    );
    // Everywhere: nothing sent before the kill (and delivered before it) or after both sides
    // were back is lost, and what arrives comes in order.
    assert_eq!(before, KILLED_AT as usize, "{name}: lost before the kill");
    assert_eq!(after, (TOTAL - BACK_AT) as usize, "{name}: lost after the restart");
    for range in [0..KILLED_AT, KILLED_AT..BACK_AT, BACK_AT..TOTAL] {
        assert!(t.in_order(range.clone()), "{name}: out of order in {range:?}: {:?}", t.received);
    }
    // A refusal is always one that says the broker could not be reached.
    assert!(
        t.refused.iter().all(|(_, k)| *k == PublishErrorKind::NotConnected),
        "{name}: {:?}",
        t.refused
    );
    if promise == Promise::KeptByClient {
        // MQTT at QoS 1: the client keeps what it could not send and the broker confirms
        // it all after the restart, so nothing is refused and close confirms everything;
        // duplicates are allowed (at least once), before the kill there are none.
        assert_eq!(refused, 0, "{name}: MQTT keeps publishes through an outage");
        assert!(t.closed_ok, "{name}: close did not confirm what was published");
        assert_eq!(before_dups, 0, "{name}");
    } else if promise == Promise::AtMostOnce {
        assert_eq!(before_dups + outage_dups + after_dups, 0, "{name}: duplicated");
    } else {
        // Confirmed: each outage publish was awaited to its end (confirmed or refused, see
        // `run`) and close confirms the rest. A confirmed one reaches the clean subscriber
        // only if its queue was declared again first, as on every broker.
        assert!(t.closed_ok, "{name}: close did not confirm what was published");
        assert_eq!(before_dups, 0, "{name}");
    }
}

#[cfg(feature = "mqtt")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_mid_stream_on_mqtt_5() {
    let test = "broker_killed_mid_stream_on_mqtt_5";
    let Some(broker) =
        skip_if_missing(test, BrokerProcess::mosquitto(MosquittoConfig::new()).await)
    else {
        return;
    };
    let url = broker.url();
    row("MQTT 5, QoS 1", broker, url, Promise::KeptByClient).await;
}

#[cfg(feature = "mqtt")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_mid_stream_on_mqtt_311() {
    let test = "broker_killed_mid_stream_on_mqtt_311";
    let Some(broker) =
        skip_if_missing(test, BrokerProcess::mosquitto(MosquittoConfig::new()).await)
    else {
        return;
    };
    let url = format!("{}?version=3.1.1", broker.url());
    row("MQTT 3.1.1, QoS 1", broker, url, Promise::KeptByClient).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_mid_stream_on_redis() {
    let Some(broker) =
        skip_if_missing("broker_killed_mid_stream_on_redis", BrokerProcess::redis().await)
    else {
        return;
    };
    let url = broker.url();
    row("Redis, QoS 0", broker, url, Promise::AtMostOnce).await;
}

#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_mid_stream_on_nats() {
    let Some(broker) =
        skip_if_missing("broker_killed_mid_stream_on_nats", BrokerProcess::nats().await)
    else {
        return;
    };
    let url = broker.url();
    row("NATS, QoS 0", broker, url, Promise::AtMostOnce).await;
}

#[cfg(feature = "amqp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_mid_stream_on_amqp() {
    let Some(broker) =
        skip_if_missing("broker_killed_mid_stream_on_amqp", BrokerProcess::rabbitmq().await)
    else {
        return;
    };
    let url = broker.url();
    row("AMQP, QoS 1", broker, url, Promise::Confirmed).await;
}
