//! Pub/sub through busbar: publishers and subscribers on connections of their own, every
//! message numbered and timed so loss, duplicates, disorder and latency are counted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use busbar::{Connection, Message, Payload, SubscribeOptions, Subscription, Topic};

use super::figures::{Figures, Frame, Tally, gather_tallies, shares};
use super::progress::Progress;
use super::{Args, bench_topic};

/// One run at `size` bytes.
pub(super) async fn run(args: &Args, size: usize) -> anyhow::Result<Figures> {
    let topic = bench_topic();
    let per_publisher = shares(args.count, args.publishers);
    let mut sub_conns = Vec::new();
    let mut readers = Vec::new();
    // Kept open for the whole run: the extra subscriptions the subscribers' connections
    // hold, which routing must look past.
    let mut extra: Vec<Subscription> = Vec::new();
    for _ in 0..args.subscribers {
        let conn = args.target.connect().await?;
        for i in 0..args.extra_subscriptions {
            extra.push(conn.subscribe(&format!("{topic}/extra/{i}")).await?);
        }
        let options = SubscribeOptions::new(&topic)?.capacity(64 * 1024).qos(args.level());
        readers.push(conn.subscribe_with(options).await?);
        sub_conns.push(conn);
    }
    let mut pub_conns = Vec::new();
    for _ in 0..args.publishers {
        pub_conns.push(args.target.connect().await?);
    }
    let clock = Instant::now();
    let idle = args.idle_timeout;
    let receiving: Vec<_> = readers
        .into_iter()
        .map(|sub| tokio::spawn(receive(sub, Tally::new(&per_publisher), clock, idle)))
        .collect();
    let progress = Arc::new(Progress::new("published", args.count, args.for_machines()));
    let started = Instant::now();
    let mut publishing = Vec::new();
    for (i, (conn, n)) in pub_conns.iter().zip(&per_publisher).enumerate() {
        let (conn, n, topic) = (conn.clone(), *n, Topic::new(&topic)?);
        let (qos, progress) = (args.level(), progress.clone());
        publishing.push(tokio::spawn(async move {
            publish(&conn, topic, i as u32, n, size, qos, clock, &progress).await
        }));
    }
    for p in publishing {
        p.await??;
    }
    let figures = gather_tallies(receiving, started).await?;
    progress.finish();
    drop(extra);
    for conn in pub_conns.iter().chain(&sub_conns) {
        conn.close().await?;
    }
    Ok(figures)
}

/// Publishes waiting for the broker's confirmation at once, per publisher, at QoS 1 or
/// more: each publish resolves when the broker has it, and awaiting them one by one would
/// measure round trips, not the transport (the raw clients get the same window).
pub(super) const WINDOW: usize = 128;

#[allow(clippy::too_many_arguments)]
async fn publish(
    conn: &Connection,
    topic: Topic,
    publisher: u32,
    count: u64,
    size: usize,
    qos: busbar::QoS,
    clock: Instant,
    progress: &Progress,
) -> anyhow::Result<()> {
    let window = if qos == busbar::QoS::AtMostOnce { 1 } else { WINDOW };
    let mut outcomes = futures_util::stream::iter(0..count)
        .map(|sequence| {
            let frame = Frame { publisher, sequence: sequence as u32, sent_ns: nanos(clock) };
            conn.publish(Message::new(topic.clone(), frame.payload(size)).with_qos(qos))
        })
        .buffered(window);
    while let Some(outcome) = outcomes.next().await {
        outcome?;
        progress.tick();
    }
    Ok(())
}

/// Reads until every message arrived or none came for `idle`; returns the tally and the
/// time of the last arrival.
async fn receive(
    mut sub: Subscription,
    mut tally: Tally,
    clock: Instant,
    idle: Duration,
) -> (Tally, Instant) {
    let mut last = Instant::now();
    while !tally.complete() {
        // A timer only when the queue is empty: one per message would measure the timer
        // wheel, not the bus.
        let message = match sub.try_recv() {
            Some(m) => m,
            None => match tokio::time::timeout(idle, sub.recv()).await {
                Ok(Some(m)) => m,
                Ok(None) | Err(_) => break,
            },
        };
        last = Instant::now();
        if let Payload::Bytes(b) = &message.payload
            && let Some(frame) = Frame::read(b)
        {
            tally.record(frame, nanos(clock).saturating_sub(frame.sent_ns));
        }
    }
    (tally, last)
}

/// Nanoseconds since `clock`.
pub(super) fn nanos(clock: Instant) -> u64 {
    clock.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64
}
