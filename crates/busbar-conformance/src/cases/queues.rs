//! Delivery queues, queue groups, expiry and subscription lifetime.

use std::sync::Arc;
use std::time::Duration;

use busbar_core::message::Message;
use busbar_core::transport::SubscribeOptions;
use busbar_core::{Codec, ConnectionEvent, Error, Overflow, Topic, TopicFilter};

use super::{connect, ensure, next, prefix};
use crate::{Harness, TestResult};

fn numbered(topic: &Topic, n: u32) -> Result<Message, Error> {
    Ok(Message::new(topic.clone(), Codec::Json.encode(&n)?))
}

fn number(m: &Message) -> Result<u32, String> {
    let bytes = m.payload.to_bytes().map_err(|e| e.to_string())?;
    Codec::Json.decode(&bytes, m.topic.as_str()).map_err(|e| e.to_string())
}

/// Members of a queue group share the messages (each exactly once, every member gets some);
/// a plain subscriber on the same filter still gets them all.
pub async fn queue_groups_share_the_load(h: Arc<impl Harness>) -> TestResult {
    const N: u32 = 300;
    let p = prefix("groups");
    let conn = connect(&*h).await?;
    let filter = TopicFilter::new(format!("{p}/jobs"))?;
    if !conn.capabilities().queue_groups {
        let err = conn
            .subscribe_with(SubscribeOptions::from(filter).queue_group("g"))
            .await
            .err()
            .ok_or("a queue group subscription must be refused")?;
        ensure(err.kind() == busbar_core::error::SubscribeErrorKind::Unsupported, || {
            format!("wrong error {err}")
        })?;
        return Ok(());
    }
    let mut members = Vec::new();
    for _ in 0..3 {
        let c = connect(&*h).await?;
        let sub =
            c.subscribe_with(SubscribeOptions::from(filter.clone()).queue_group("workers")).await?;
        members.push((c, sub));
    }
    let mut everything =
        conn.subscribe_with(SubscribeOptions::from(filter.clone()).capacity(N as usize)).await?;
    let topic = Topic::new(filter.as_str())?;
    // Where a group shares a topic by partitions, messages spread by their keys (and keep
    // their order per partition only).
    let partitioned = conn.capabilities().partitioned_groups;
    for n in 0..N {
        let m = numbered(&topic, n)?;
        conn.publish(if partitioned { m.with_key(n.to_string()) } else { m }).await?;
    }
    let mut plain = vec![false; N as usize];
    for n in 0..N {
        let m = next(&mut everything, "the plain subscriber's copy").await?;
        let got = number(&m)?;
        ensure(partitioned || got == n, || format!("plain subscriber out of order at {n}"))?;
        let seen = plain.get_mut(got as usize).ok_or("a number never published")?;
        ensure(!*seen, || format!("plain subscriber got {got} twice"))?;
        *seen = true;
    }
    // Merge what the members receive, tagged with who got it.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut keep_open = Vec::new();
    for (i, (c, mut sub)) in members.into_iter().enumerate() {
        keep_open.push(c);
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.recv().await {
                if tx.send((i, m)).is_err() {
                    break;
                }
            }
        });
    }
    let mut seen = vec![false; N as usize];
    let mut per_member = [0u32; 3];
    for _ in 0..N {
        let (i, m) = crate::within(super::WAIT, "a group member's message", rx.recv())
            .await?
            .ok_or("group members ended early")?;
        let n = number(&m)? as usize;
        ensure(!seen[n], || format!("message {n} reached two group members"))?;
        seen[n] = true;
        per_member[i] += 1;
    }
    ensure(per_member.iter().all(|c| *c > 0), || format!("load not shared: {per_member:?}"))?;
    Ok(())
}

/// Publishes `n` numbered messages to a subscription that does not read, then waits until a
/// probe subscription on the same connection has seen them all, so the limited one has been
/// offered every message too.
async fn flood(
    h: &impl Harness,
    case: &str,
    capacity: usize,
    overflow: Overflow,
    n: u32,
) -> Result<
    (busbar_core::Connection, busbar_core::Subscription, Vec<u32>),
    Box<dyn std::error::Error + Send + Sync>,
> {
    let p = prefix(case);
    let conn = connect(h).await?;
    let filter = TopicFilter::new(format!("{p}/flood"))?;
    let mut events = conn.events();
    let mut limited = conn
        .subscribe_with(
            SubscribeOptions::from(filter.clone()).capacity(capacity).overflow(overflow),
        )
        .await?;
    let mut probe =
        conn.subscribe_with(SubscribeOptions::from(filter.clone()).capacity(n as usize)).await?;
    let topic = Topic::new(filter.as_str())?;
    for i in 0..n {
        conn.publish(numbered(&topic, i)?).await?;
    }
    for _ in 0..n {
        next(&mut probe, "the probe's copy").await?;
    }
    let slow = crate::within(super::WAIT, "a slow-consumer event", async {
        loop {
            match events.next().await {
                Some(ConnectionEvent::SlowConsumer { filter: f, .. }) if f == filter.as_str() => {
                    return true;
                }
                Some(_) => continue,
                None => return false,
            }
        }
    })
    .await?;
    ensure(slow, || "no slow-consumer event".into())?;
    let mut got = Vec::new();
    while let Some(m) = limited.try_next_now() {
        got.push(number(&m)?);
    }
    Ok((conn, limited, got))
}

trait TryNextNow {
    fn try_next_now(&mut self) -> Option<Message>;
}

impl TryNextNow for busbar_core::Subscription {
    fn try_next_now(&mut self) -> Option<Message> {
        use futures_util::FutureExt;
        self.recv().now_or_never().flatten()
    }
}

/// DropNewest keeps the first `capacity` messages and counts the rest as dropped.
pub async fn overflow_drop_newest(h: Arc<impl Harness>) -> TestResult {
    let (_conn, sub, got) = flood(&*h, "drop-newest", 10, Overflow::DropNewest, 50).await?;
    ensure(got == (0..10).collect::<Vec<_>>(), || format!("kept {got:?}"))?;
    ensure(sub.dropped() == 40, || format!("dropped count {}", sub.dropped()))?;
    Ok(())
}

/// DropOldest keeps the latest `capacity` messages and counts the rest as dropped.
pub async fn overflow_drop_oldest(h: Arc<impl Harness>) -> TestResult {
    let (conn, sub, got) = flood(&*h, "drop-oldest", 10, Overflow::DropOldest, 50).await?;
    ensure(got == (40..50).collect::<Vec<_>>(), || format!("kept {got:?}"))?;
    ensure(sub.dropped() == 40, || format!("dropped count {}", sub.dropped()))?;
    ensure(conn.stats().dropped >= 40, || format!("connection stats {:?}", conn.stats()))?;
    Ok(())
}

/// Block makes the publisher wait for a slow reader: everything arrives, in order.
pub async fn overflow_block_loses_nothing(h: Arc<impl Harness>) -> TestResult {
    const N: u32 = 2_000;
    let p = prefix("block");
    let conn = connect(&*h).await?;
    let filter = TopicFilter::new(format!("{p}/x"))?;
    let mut sub = conn
        .subscribe_with(
            SubscribeOptions::from(filter.clone()).capacity(4).overflow(Overflow::Block),
        )
        .await?;
    let topic = Topic::new(filter.as_str())?;
    let publisher = {
        let conn = conn.clone();
        tokio::spawn(async move {
            for n in 0..N {
                conn.publish(numbered(&topic, n)?).await?;
            }
            Ok::<_, Error>(())
        })
    };
    for n in 0..N {
        let m = next(&mut sub, "the next blocked message").await?;
        ensure(number(&m)? == n, || format!("out of order at {n}"))?;
        if n % 500 == 0 {
            tokio::task::yield_now().await;
        }
    }
    publisher.await??;
    ensure(sub.dropped() == 0, || format!("dropped {}", sub.dropped()))?;
    Ok(())
}

/// An expired message is not delivered (where the transport supports expiry).
pub async fn message_expiry(h: Arc<impl Harness>) -> TestResult {
    let p = prefix("expiry");
    let conn = connect(&*h).await?;
    let topic = Topic::new(format!("{p}/x"))?;
    // Whole seconds: MQTT 5 carries expiry in seconds, and every transport must pass this.
    let short = numbered(&topic, 1)?.with_expiry(Duration::from_secs(1));
    if !conn.capabilities().expiry {
        let err = conn.publish(short).await.err().ok_or("expiry must be refused")?;
        ensure(err.kind() == busbar_core::error::PublishErrorKind::Unsupported, || {
            format!("wrong error {err}")
        })?;
        return Ok(());
    }
    let mut sub = conn.subscribe(topic.as_str()).await?;
    conn.publish(short).await?;
    conn.publish(numbered(&topic, 2)?.with_expiry(Duration::from_secs(60))).await?;
    // Time passing is the condition under test here, so waiting is the point.
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    conn.publish(numbered(&topic, 3)?).await?;
    let first = next(&mut sub, "the long-lived message").await?;
    ensure(number(&first)? == 2, || {
        format!("got {} first: the expired message was delivered", number(&first).unwrap_or(0))
    })?;
    let second = next(&mut sub, "the message without expiry").await?;
    ensure(number(&second)? == 3, || "lost a message".into())?;
    ensure(conn.stats().expired >= 1, || format!("expired not counted: {:?}", conn.stats()))?;
    Ok(())
}

/// Dropping a subscription unsubscribes it at the broker: in a queue group, a dropped
/// member stops taking its share, so the remaining member gets everything.
pub async fn unsubscribe_on_drop(h: Arc<impl Harness>) -> TestResult {
    const N: u32 = 50;
    let p = prefix("unsubscribe");
    let conn = connect(&*h).await?;
    let filter = TopicFilter::new(format!("{p}/x"))?;
    let topic = Topic::new(filter.as_str())?;
    let options = || {
        let o = SubscribeOptions::from(filter.clone()).capacity(N as usize);
        if conn.capabilities().queue_groups { o.queue_group("g") } else { o }
    };
    let gone = conn.subscribe_with(options()).await?;
    let mut stays = conn.subscribe_with(options()).await?;
    let before = conn.stats().delivered;
    drop(gone);
    for n in 0..N {
        conn.publish(numbered(&topic, n)?).await?;
    }
    for n in 0..N {
        let m = next(&mut stays, "the remaining subscriber's message").await?;
        ensure(number(&m)? == n, || format!("message {n} went to the dropped subscription"))?;
    }
    let delivered = conn.stats().delivered - before;
    ensure(delivered == N as u64, || {
        format!("{delivered} deliveries for {N} messages: the dropped subscription still receives")
    })?;
    Ok(())
}

/// After close, calls fail with `Closed` and subscriptions end.
pub async fn close_ends_everything(h: Arc<impl Harness>) -> TestResult {
    let p = prefix("close");
    let conn = connect(&*h).await?;
    let mut sub = conn.subscribe(&format!("{p}/#")).await?;
    conn.close().await?;
    let ended = crate::within(super::WAIT, "the subscription to end", sub.recv()).await?;
    ensure(ended.is_none(), || "subscription still delivering after close".into())?;
    let err = conn
        .publish_bytes(&format!("{p}/x"), &b"1"[..])
        .await
        .err()
        .ok_or("publish after close succeeded")?;
    ensure(err.kind() == busbar_core::error::PublishErrorKind::Closed, || {
        format!("wrong error after close: {err}")
    })?;
    Ok(())
}

/// A named queue (an AMQP queue, a Redis list) gives each message to one of its readers, each
/// reader's share in publish order, and keeps what is published while nobody reads for the
/// next reader. Transports without named queues refuse them.
pub async fn named_queues(h: Arc<impl Harness>) -> TestResult {
    const N: u32 = 60;
    const LATER: u32 = 5;
    let p = prefix("named-queue");
    let conn = connect(&*h).await?;
    let topic = Topic::named_queue(&p.replace('/', "."))?;
    let filter = TopicFilter::from(&topic);
    if !conn.capabilities().named_queues {
        let err = conn
            .publish(numbered(&topic, 0)?)
            .await
            .err()
            .ok_or("a publish to a named queue must be refused")?;
        ensure(err.kind() == busbar_core::error::PublishErrorKind::Unsupported, || {
            format!("wrong error {err}")
        })?;
        let err = conn
            .subscribe_with(SubscribeOptions::from(filter))
            .await
            .err()
            .ok_or("a named-queue subscription must be refused")?;
        ensure(err.kind() == busbar_core::error::SubscribeErrorKind::Unsupported, || {
            format!("wrong error {err}")
        })?;
        return Ok(());
    }
    let mut readers = Vec::new();
    for _ in 0..2 {
        let c = connect(&*h).await?;
        let sub = c.subscribe_with(SubscribeOptions::from(filter.clone())).await?;
        readers.push((c, sub));
    }
    for n in 0..N {
        conn.publish(numbered(&topic, n)?).await?;
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut reading = Vec::new();
    let mut keep_open = Vec::new();
    for (i, (c, mut sub)) in readers.into_iter().enumerate() {
        keep_open.push(c);
        let tx = tx.clone();
        reading.push(tokio::spawn(async move {
            while let Some(m) = sub.recv().await {
                if tx.send((i, m)).is_err() {
                    break;
                }
            }
        }));
    }
    let mut seen = vec![false; N as usize];
    let mut last: [Option<u32>; 2] = [None, None];
    for _ in 0..N {
        let (i, m) = crate::within(super::WAIT, "a reader's message", rx.recv())
            .await?
            .ok_or("the readers ended early")?;
        ensure(m.topic == topic, || format!("delivered on {} instead of {topic}", m.topic))?;
        let n = number(&m)?;
        ensure(!seen[n as usize], || format!("message {n} reached two readers"))?;
        seen[n as usize] = true;
        ensure(last[i].is_none_or(|l| l < n), || format!("reader {i} got {n} after {last:?}"))?;
        last[i] = Some(n);
    }
    // Nobody reads now: what is published waits in the queue for the next reader.
    // Aborting a reader's task drops its subscription; waiting for the task makes sure it
    // is gone before anything else is published (what a subscription holds unread when it
    // is dropped goes with it).
    for task in reading {
        task.abort();
        let _ = task.await;
    }
    for n in N..N + LATER {
        conn.publish(numbered(&topic, n)?).await?;
    }
    let mut late = conn.subscribe_with(SubscribeOptions::from(filter)).await?;
    let mut got = Vec::new();
    for _ in 0..LATER {
        got.push(number(&next(&mut late, "a message kept for the next reader").await?)?);
    }
    got.sort_unstable();
    ensure(got == (N..N + LATER).collect::<Vec<_>>(), || format!("kept for later: {got:?}"))?;
    Ok(())
}
