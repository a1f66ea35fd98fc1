//! The counters mean the same on every transport: `delivered`, `dropped`, `published`,
//! `requests`, `timeouts` and `late_replies` (the definitions are in the transport kit's
//! `delivery` and `inbox` modules). A transport that counts differently fails here.

use std::sync::Arc;
use std::time::Duration;

use busbar_core::message::Message;
use busbar_core::stats::StatsSnapshot;
use busbar_core::transport::SubscribeOptions;
use busbar_core::{Codec, Connection, Overflow, Topic, TopicFilter};

use super::{connect, ensure, next, prefix};
use crate::{Harness, TestResult};

/// Waits until `conn`'s counters satisfy `expected` (some transports count on a task of
/// their own, a moment after the message moved), failing with the last counters seen.
async fn counters_reach(
    conn: &Connection,
    what: &str,
    expected: impl Fn(&StatsSnapshot) -> bool,
) -> Result<StatsSnapshot, String> {
    let deadline = tokio::time::Instant::now() + super::WAIT;
    loop {
        let now = conn.stats();
        if expected(&now) {
            return Ok(now);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("{what}: the counters stayed at {now:?}"));
        }
        // Counters have no event to wait for: look again shortly.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn numbered(topic: &Topic, n: u32) -> Result<Message, busbar_core::Error> {
    Ok(Message::new(topic.clone(), Codec::Json.encode(&n)?))
}

/// Under each drop policy a subscription's counts add up: what was offered is `delivered +
/// dropped`, and its reader gets exactly `delivered` (a `DropOldest` message that replaces
/// an older one is not a second delivery). The publishing connection counts `published`.
pub async fn counters_of_deliveries(h: Arc<impl Harness>) -> TestResult {
    const N: u64 = 20;
    const CAPACITY: usize = 4;
    for overflow in [Overflow::DropNewest, Overflow::DropOldest] {
        let p = prefix("counters");
        let receiver = connect(&*h).await?;
        let sender = connect(&*h).await?;
        let filter = TopicFilter::new(format!("{p}/x"))?;
        let mut limited = receiver
            .subscribe_with(
                SubscribeOptions::from(filter.clone()).capacity(CAPACITY).overflow(overflow),
            )
            .await?;
        let mut probe =
            receiver.subscribe_with(SubscribeOptions::from(filter.clone()).capacity(64)).await?;
        let topic = Topic::new(filter.as_str())?;
        for n in 0..N as u32 {
            sender.publish(numbered(&topic, n)?).await?;
        }
        for _ in 0..N {
            next(&mut probe, "the probe's copy").await?;
        }
        let expected_delivered = N + CAPACITY as u64;
        let expected_dropped = N - CAPACITY as u64;
        let seen = counters_reach(&receiver, &format!("{overflow:?}"), |s| {
            s.delivered >= expected_delivered && s.dropped >= expected_dropped
        })
        .await?;
        ensure(seen.delivered == expected_delivered && seen.dropped == expected_dropped, || {
            format!(
                "{overflow:?}: {N} offered to a queue of {CAPACITY} and {N} to one with room: \
                 expected delivered {expected_delivered} and dropped {expected_dropped}, \
                 counted {seen:?}"
            )
        })?;
        let mut read = 0;
        while let Some(m) = limited.try_recv() {
            drop(m);
            read += 1;
        }
        ensure(read == CAPACITY, || {
            format!("{overflow:?}: the reader got {read}, not the {CAPACITY} delivered")
        })?;
        ensure(limited.dropped() == expected_dropped, || {
            format!("{overflow:?}: the subscription counted {} dropped", limited.dropped())
        })?;
        counters_reach(&sender, "the publisher", |s| s.published == N).await?;
        let received = receiver.stats();
        ensure(received.published == 0 && received.requests == 0, || {
            format!("the receiving connection counted what it did not send: {received:?}")
        })?;
    }
    Ok(())
}

/// Requests are counted on the requesting connection: every request in `requests`, a
/// deadline that passed in `timeouts`, and a reply that came after its request gave up in
/// `late_replies`. The replying connection counts its replies as published and nothing
/// else.
pub async fn counters_of_requests(h: Arc<impl Harness>) -> TestResult {
    let p = prefix("request-counters");
    let client = connect(&*h).await?;
    let server = connect(&*h).await?;
    let service = Topic::new(format!("{p}/svc"))?;
    let mut requests = server.subscribe(service.as_str()).await?;
    // The first request waits in vain: its reply is sent only after its deadline.
    let outcome =
        client.request(Message::new(service.clone(), &b"1"[..]), Duration::from_millis(300)).await;
    ensure(outcome.is_err(), || "a request nobody answered in time succeeded".into())?;
    let first = next(&mut requests, "the first request").await?;
    let late = Message::reply(&first, &b"late"[..]).ok_or("the request named no reply topic")?;
    server.publish(late).await?;
    let seen = counters_reach(&client, "a late reply", |s| s.late_replies >= 1).await?;
    ensure(seen.requests == 1 && seen.timeouts == 1 && seen.late_replies == 1, || {
        format!("one request that timed out and got a late reply, counted {seen:?}")
    })?;
    // The second is answered in time.
    let answering = {
        let server = server.clone();
        tokio::spawn(async move {
            let request = next(&mut requests, "the second request").await?;
            let reply = Message::reply(&request, &b"ok"[..]).ok_or("no reply topic")?;
            server.publish(reply).await.map_err(|e| e.to_string())
        })
    };
    let reply = client.request(Message::new(service.clone(), &b"2"[..]), super::WAIT).await?;
    ensure(reply.payload.to_bytes()?.as_ref() == b"ok", || "wrong reply".into())?;
    answering.await??;
    let client_seen = client.stats();
    ensure(
        client_seen.requests == 2 && client_seen.timeouts == 1 && client_seen.late_replies == 1,
        || format!("the requester counted {client_seen:?}"),
    )?;
    let server_seen = counters_reach(&server, "the replies", |s| s.published == 2).await?;
    ensure(
        server_seen.requests == 0 && server_seen.timeouts == 0 && server_seen.late_replies == 0,
        || format!("the replying connection counted requests of another: {server_seen:?}"),
    )?;
    Ok(())
}
