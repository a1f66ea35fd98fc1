//! Publish/subscribe semantics.

use std::collections::HashMap;
use std::sync::Arc;

use busbar_core::message::{Message, header};
use busbar_core::patterns::{Publisher, Subscriber};
use busbar_core::{Codec, Error, Topic};
use serde::{Deserialize, Serialize};

use super::{connect, ensure, next, prefix};
use crate::{Harness, TestResult};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Numbered {
    publisher: u32,
    seq: u32,
}

/// Messages from each publisher arrive in the order it published them, none lost or doubled.
pub async fn ordering_per_publisher(h: Arc<impl Harness>) -> TestResult {
    const PER_PUBLISHER: u32 = 500;
    let p = prefix("ordering");
    let sub_conn = connect(&*h).await?;
    let mut sub = Subscriber::<Numbered>::new(&sub_conn, &format!("{p}/#")).await?;
    let mut tasks = Vec::new();
    for publisher in 0..2u32 {
        let conn = connect(&*h).await?;
        let topic = format!("{p}/pub{publisher}");
        tasks.push(tokio::spawn(async move {
            let out = Publisher::<Numbered>::new(&conn, &topic)?;
            for seq in 0..PER_PUBLISHER {
                out.publish(Numbered { publisher, seq }).await?;
            }
            Ok::<_, Error>(conn)
        }));
    }
    let mut next_seq: HashMap<u32, u32> = HashMap::new();
    for _ in 0..2 * PER_PUBLISHER {
        let got = crate::within(super::WAIT, "the next numbered message", sub.recv())
            .await?
            .ok_or("subscription ended early")??;
        let expected = next_seq.entry(got.value.publisher).or_insert(0);
        ensure(got.value.seq == *expected, || {
            format!(
                "publisher {} : got seq {} where {} was due",
                got.value.publisher, got.value.seq, expected
            )
        })?;
        *expected += 1;
    }
    for t in tasks {
        t.await??;
    }
    ensure(next_seq.values().all(|n| *n == PER_PUBLISHER), || format!("counts {next_seq:?}"))?;
    Ok(())
}

/// A QoS is kept or refused, never silently lowered: a publish asking for more than the
/// transport's `max_qos` fails with `Unsupported` and nothing of it arrives; one asking for
/// nothing travels at the transport's best up to at least once; and a received message says
/// the QoS it travelled with.
pub async fn qos_kept_or_refused(h: Arc<impl Harness>) -> TestResult {
    use busbar_core::QoS;
    use busbar_core::error::PublishErrorKind;
    let p = prefix("qos");
    let conn = connect(&*h).await?;
    let max = conn.capabilities().max_qos;
    let topic = Topic::new(format!("{p}/t")).map_err(|e| e.to_string())?;
    let mut sub = conn.subscribe(&format!("{p}/#")).await?;
    for asked in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let m = Message::new(topic.clone(), format!("{}", asked as u8)).with_qos(asked);
        let outcome = conn.publish(m).await;
        if asked > max {
            let kind = super::error_kind(outcome)?;
            ensure(kind == PublishErrorKind::Unsupported, || {
                format!(
                    "QoS {} over a transport of max {} failed as {kind:?}",
                    asked as u8, max as u8
                )
            })?;
        } else {
            outcome.map_err(|e| format!("QoS {} (max {}): {e}", asked as u8, max as u8))?;
        }
    }
    conn.publish(Message::new(topic.clone(), "default")).await?;
    // Behind everything on the same path: a refused message, had it been sent, comes first.
    conn.publish(Message::new(topic.clone(), "end")).await?;
    let best = QoS::AtLeastOnce.min(max);
    let mut expected: Vec<(String, Option<QoS>)> =
        [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
            .into_iter()
            .filter(|q| *q <= max)
            // What a broker hands over also depends on the subscription's QoS: only the bound
            // holds for these.
            .map(|q| (format!("{}", q as u8), None))
            .collect();
    expected.push(("default".to_owned(), Some(best)));
    expected.push(("end".to_owned(), Some(best)));
    // Publishes at different QoS may take different paths (AMQP confirms on a channel of
    // their own): matched by body, not by order.
    let mut waiting = expected;
    while !waiting.is_empty() {
        let got = next(&mut sub, &format!("the messages {waiting:?}")).await?;
        let text = got.payload.to_bytes().map_err(|e| e.to_string())?;
        let Some(at) = waiting.iter().position(|(body, _)| body.as_bytes() == text.as_ref()) else {
            return Err(format!(
                "{text:?} arrived where {waiting:?} were due (a refused QoS must send nothing)"
            )
            .into());
        };
        let (body, exactly) = waiting.remove(at);
        ensure(got.qos.is_some_and(|q| q <= max), || {
            format!("{body:?} arrived saying QoS {:?}, over the transport's max {max:?}", got.qos)
        })?;
        if let Some(qos) = exactly {
            ensure(got.qos == Some(qos), || {
                format!("{body:?} arrived at {:?}, expected the transport's best {qos:?}", got.qos)
            })?;
        }
    }
    conn.close().await?;
    Ok(())
}

/// A publish that returned is sent even when the connection is closed right after it: a
/// graceful close delivers what was published before it, in order.
pub async fn close_sends_what_was_published(h: Arc<impl Harness>) -> TestResult {
    const N: u32 = 200;
    let p = prefix("close-flush");
    let sub_conn = connect(&*h).await?;
    let mut sub = Subscriber::<Numbered>::new(&sub_conn, &format!("{p}/#")).await?;
    // One message from a connection that closes at once (as a command-line `pub` does)...
    let conn = connect(&*h).await?;
    Publisher::<Numbered>::new(&conn, &format!("{p}/one"))?
        .publish(Numbered { publisher: 1, seq: 0 })
        .await?;
    conn.close().await?;
    let got = crate::within(super::WAIT, "the one message published before a close", sub.recv())
        .await?
        .ok_or("subscription ended early")??;
    ensure(got.value.publisher == 1, || format!("got {:?}", got.value))?;
    // ... and many.
    let conn = connect(&*h).await?;
    let out = Publisher::<Numbered>::new(&conn, &format!("{p}/last-words"))?;
    for seq in 0..N {
        out.publish(Numbered { publisher: 0, seq }).await?;
    }
    conn.close().await?;
    for seq in 0..N {
        let got = crate::within(super::WAIT, "a message published before the close", sub.recv())
            .await?
            .ok_or("subscription ended early")??;
        ensure(got.value.seq == seq, || format!("got seq {} where {seq} was due", got.value.seq))?;
    }
    Ok(())
}

/// Many subscribes on one connection at once (as per-call reply subscriptions make them):
/// each resolves only once it is in place, and each gets its own message.
pub async fn concurrent_subscribes(h: Arc<impl Harness>) -> TestResult {
    const N: usize = 60;
    let p = prefix("concurrent-subs");
    let conn = connect(&*h).await?;
    let subscribing: Vec<_> = (0..N)
        .map(|i| {
            let conn = conn.clone();
            let filter = format!("{p}/{i}");
            tokio::spawn(async move { conn.subscribe(&filter).await })
        })
        .collect();
    let mut subs = Vec::with_capacity(N);
    for s in subscribing {
        subs.push(crate::within(super::WAIT, "a subscription in place", s).await???);
    }
    for i in 0..N {
        conn.publish_bytes(&format!("{p}/{i}"), i.to_string().into_bytes()).await?;
    }
    for (i, sub) in subs.iter_mut().enumerate() {
        let m = crate::within(super::WAIT, "the subscription's own message", sub.recv())
            .await?
            .ok_or("subscription ended early")?;
        let body = m.payload.to_bytes()?;
        ensure(body.as_ref() == i.to_string().as_bytes(), || {
            format!("subscription {i} got {:?}", String::from_utf8_lossy(&body))
        })?;
    }
    Ok(())
}

/// `+` matches one level, `#` the rest including none; subscribers learn the concrete topic.
pub async fn wildcard_semantics(h: Arc<impl Harness>) -> TestResult {
    let p = prefix("wildcards");
    let conn = connect(&*h).await?;
    let filters = ["a/+/c", "a/#", "+/b/+", "a/b/c", "a/+"];
    let unordered = conn.capabilities().topic_order_only;
    let mut subs = Vec::new();
    for f in filters {
        subs.push((f, Subscriber::<u32>::new(&conn, &format!("{p}/{f}")).await?));
    }
    // Relative to the prefix; a trailing `end` marker tells each subscriber it has seen all.
    let topics = ["a", "a/b", "a/b/c", "a/x/c", "a/b/c/d", "x/b/y", "b/b/b/b"];
    for (i, t) in topics.iter().enumerate() {
        conn.publish(message(&format!("{p}/{t}"), i as u32)?).await?;
    }
    for (f, sub) in &mut subs {
        let expected: Vec<&str> = topics
            .iter()
            .copied()
            .filter(|t| {
                busbar_core::TopicFilter::new(*f).map(|f| f.matches_str(t)).unwrap_or(false)
            })
            .collect();
        let mut got_topics = Vec::new();
        for t in &expected {
            let got = crate::within(super::WAIT, "a wildcard delivery", sub.recv())
                .await?
                .ok_or("ended")??;
            let want = format!("{p}/{t}");
            if !unordered {
                ensure(got.topic.as_str() == want, || {
                    format!("filter {f}: got {} where {want} was due", got.topic)
                })?;
            }
            got_topics.push(got.topic.as_str().to_owned());
        }
        // Where order holds per topic only, the same topics in any order.
        let mut want: Vec<String> = expected.iter().map(|t| format!("{p}/{t}")).collect();
        want.sort();
        got_topics.sort();
        ensure(got_topics == want, || format!("filter {f}: got {got_topics:?}, want {want:?}"))?;
    }
    // Nothing else may have arrived: publish a marker every filter matches... `a/b/c` does
    // (for all five filters), so it must be each subscriber's very next message.
    conn.publish(message(&format!("{p}/a/b/c"), 999)?).await?;
    for (f, sub) in &mut subs {
        if *f == "a/+" {
            continue;
        }
        let got = crate::within(super::WAIT, "the marker", sub.recv()).await?.ok_or("ended")??;
        ensure(got.value == 999, || {
            format!("filter {f} got an unexpected extra message on {}", got.topic)
        })?;
    }
    Ok(())
}

fn message(topic: &str, n: u32) -> Result<Message, Error> {
    Ok(Message::new(Topic::new(topic)?, Codec::Json.encode(&n)?))
}

/// Retained messages: the latest per topic reaches new subscribers flagged as retained; an
/// empty retained publish deletes it.
pub async fn retained_messages(h: Arc<impl Harness>) -> TestResult {
    let p = prefix("retained");
    let conn = connect(&*h).await?;
    let topic = Topic::new(format!("{p}/state"))?;
    let retained =
        |n: u32| -> Result<Message, Error> { Ok(message(topic.as_str(), n)?.with_retain(true)) };
    if !conn.capabilities().retained {
        let err =
            conn.publish(retained(1)?).await.err().ok_or("retained publish must be refused")?;
        ensure(err.kind() == busbar_core::error::PublishErrorKind::Unsupported, || {
            format!("wrong error {err}")
        })?;
        return Ok(());
    }
    conn.publish(retained(1)?).await?;
    conn.publish(retained(2)?).await?;
    let mut late = Subscriber::<u32>::new(&conn, &format!("{p}/+")).await?;
    let got =
        crate::within(super::WAIT, "the retained message", late.recv()).await?.ok_or("ended")??;
    ensure(got.value == 2 && got.retained, || {
        format!("got {} retained={}", got.value, got.retained)
    })?;
    // A retained publish reaches current subscribers as a live message, unflagged.
    conn.publish(retained(3)?).await?;
    let got = crate::within(super::WAIT, "a live message", late.recv()).await?.ok_or("ended")??;
    ensure(got.value == 3 && !got.retained, || {
        format!("live message: {} retained={}", got.value, got.retained)
    })?;
    // Queue groups share live traffic only: a group member is not seeded from the store.
    if conn.capabilities().queue_groups {
        let filter = busbar_core::TopicFilter::new(format!("{p}/+"))?;
        let mut member = conn
            .subscribe_with(busbar_core::SubscribeOptions::from(filter).queue_group("g"))
            .await?;
        conn.publish(message(&format!("{p}/group-marker"), 5)?).await?;
        let first = next(&mut member, "the marker on a group member").await?;
        ensure(first.topic.as_str().ends_with("/group-marker"), || {
            format!("a queue group member got the retained message on {}", first.topic)
        })?;
    }
    // Delete, then a new subscriber's first message must be a live marker, not the store.
    conn.publish(Message::new(topic.clone(), bytes::Bytes::new()).with_retain(true)).await?;
    // A publish may still be on its way to a broker when it returns: the delete has been
    // applied once our own subscriber sees it go by (empty, so it does not decode).
    loop {
        match crate::within(super::WAIT, "the delete going by", late.recv()).await? {
            Some(Err(Error::Codec(_))) => break,
            Some(Ok(r)) if r.topic != topic => continue,
            other => return Err(format!("expected the empty delete, got {other:?}").into()),
        }
    }
    // A fresh connection makes a fresh subscription at the broker, which consults its store.
    let other = connect(&*h).await?;
    let mut after = other.subscribe(&format!("{p}/+")).await?;
    conn.publish(message(&format!("{p}/marker"), 4)?).await?;
    let first = next(&mut after, "the marker after deletion").await?;
    ensure(first.topic.as_str().ends_with("/marker"), || {
        format!("deleted retained message still delivered on {}", first.topic)
    })?;
    Ok(())
}

/// A payload that does not decode is reported with its topic, and the next one still arrives.
pub async fn malformed_payloads(h: Arc<impl Harness>) -> TestResult {
    let p = prefix("malformed");
    let conn = connect(&*h).await?;
    let mut sub = Subscriber::<Numbered>::new(&conn, &format!("{p}/#")).await?;
    conn.publish_bytes(&format!("{p}/bad"), &b"{\"publisher\": oops"[..]).await?;
    Publisher::<Numbered>::new(&conn, &format!("{p}/good"))?
        .publish(Numbered { publisher: 1, seq: 2 })
        .await?;
    let mut bad =
        crate::within(super::WAIT, "the malformed message", sub.recv()).await?.ok_or("ended")?;
    let mut good = None;
    if conn.capabilities().topic_order_only && bad.is_ok() {
        // Two topics: where order holds per topic only, the good one may come first.
        good = Some(bad);
        bad = crate::within(super::WAIT, "the malformed message", sub.recv())
            .await?
            .ok_or("ended")?;
    }
    match bad {
        Err(Error::Codec(e)) => {
            let text = e.to_string();
            ensure(text.contains(&format!("{p}/bad")), || {
                format!("decode error lacks the topic: {text}")
            })?;
        }
        other => return Err(format!("expected a decode error, got {other:?}").into()),
    }
    let good = match good {
        Some(good) => good?,
        None => {
            crate::within(super::WAIT, "the good message", sub.recv()).await?.ok_or("ended")??
        }
    };
    ensure(good.value == Numbered { publisher: 1, seq: 2 }, || format!("got {:?}", good.value))?;
    Ok(())
}

/// A MessagePack publisher and a JSON-default subscriber understand each other (the codec
/// travels with the message), and raw bytes subscribers see the declared content type.
pub async fn codecs_interoperate(h: Arc<impl Harness>) -> TestResult {
    let p = prefix("codecs");
    let conn = connect(&*h).await?;
    let topic = format!("{p}/x");
    let mut typed = Subscriber::<Numbered>::new(&conn, &topic).await?;
    let mut raw = conn.subscribe(&topic).await?;
    Publisher::<Numbered>::new(&conn, &topic)?
        .codec(Codec::MsgPack)
        .publish(Numbered { publisher: 7, seq: 8 })
        .await?;
    let got =
        crate::within(super::WAIT, "the msgpack message", typed.recv()).await?.ok_or("ended")??;
    ensure(got.value == Numbered { publisher: 7, seq: 8 }, || format!("got {:?}", got.value))?;
    let m = next(&mut raw, "the raw message").await?;
    ensure(m.headers.get(header::CONTENT_TYPE) == Some(Codec::MsgPack.content_type()), || {
        format!("content type {:?}", m.headers.get(header::CONTENT_TYPE))
    })?;
    let bytes = m.payload.to_bytes()?;
    let back: Numbered = Codec::MsgPack.decode(&bytes, &topic)?;
    ensure(back == Numbered { publisher: 7, seq: 8 }, || format!("bytes decode to {back:?}"))?;
    Ok(())
}

/// Named events land on `base/name` with their data and source.
pub async fn events(h: Arc<impl Harness>) -> TestResult {
    use busbar_core::patterns::{Event, EventEmitter};
    let p = prefix("events");
    let conn = connect(&*h).await?;
    let mut sub = Subscriber::<Event<String>>::new(&conn, &format!("{p}/+")).await?;
    let emitter = EventEmitter::new(&conn, &p)?;
    emitter.emit("door-opened", "north".to_owned()).await?;
    let bad = emitter.emit("two/levels", String::new()).await;
    ensure(bad.is_err(), || "an event name with '/' must be refused".into())?;
    let got = crate::within(super::WAIT, "the event", sub.recv()).await?.ok_or("ended")??;
    ensure(got.topic.as_str() == format!("{p}/door-opened"), || format!("topic {}", got.topic))?;
    ensure(got.value.name == "door-opened" && got.value.data == "north", || {
        format!("{:?}", got.value)
    })?;
    ensure(got.value.source == conn.client_id(), || format!("source {}", got.value.source))?;
    Ok(())
}

/// A no-local subscription skips what its own connection publishes and gets everyone
/// else's (refused where unsupported).
pub async fn no_local(h: Arc<impl Harness>) -> TestResult {
    let p = prefix("no-local");
    let conn = connect(&*h).await?;
    let filter = busbar_core::TopicFilter::new(format!("{p}/x"))?;
    let options = busbar_core::SubscribeOptions::from(filter.clone()).no_local(true);
    if !conn.capabilities().no_local {
        let err = conn.subscribe_with(options).await.err().ok_or("no-local must be refused")?;
        ensure(err.kind() == busbar_core::error::SubscribeErrorKind::Unsupported, || {
            format!("wrong error {err}")
        })?;
        return Ok(());
    }
    let mut skips_own = conn.subscribe_with(options).await?;
    // The plain subscription lives on the other connection (MQTT keeps one subscription per
    // filter and connection, so the two kinds cannot share one there).
    let other = connect(&*h).await?;
    let mut plain = other.subscribe_with(busbar_core::SubscribeOptions::from(filter)).await?;
    conn.publish(message(&format!("{p}/x"), 1)?).await?;
    other.publish(message(&format!("{p}/x"), 2)?).await?;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let m = next(&mut plain, "both messages on the plain subscription").await?;
        seen.push(
            busbar_core::Codec::Json.decode::<u32>(&m.payload.to_bytes()?, m.topic.as_str())?,
        );
    }
    seen.sort_unstable();
    ensure(seen == [1, 2], || format!("plain subscription saw {seen:?}"))?;
    let first = next(&mut skips_own, "the other connection's message").await?;
    let n: u32 =
        busbar_core::Codec::Json.decode(&first.payload.to_bytes()?, first.topic.as_str())?;
    ensure(n == 2, || format!("the no-local subscription got its own connection's message ({n})"))?;
    Ok(())
}

/// A subscription can start before now where the broker keeps a log (refused with
/// `Unsupported` elsewhere): from the oldest message kept, or from a time; a queue group
/// starts there once and afterwards resumes where it left off.
pub async fn start_before_now(h: Arc<impl Harness>) -> TestResult {
    use busbar_core::{StartAt, SubscribeOptions, TopicFilter};
    use std::time::{Duration, SystemTime};

    let p = prefix("start");
    let topic = format!("{p}/log");
    let conn = connect(&*h).await?;
    let filter = TopicFilter::new(&topic)?;
    if !conn.capabilities().replay {
        let options = SubscribeOptions::from(filter).start(StartAt::Earliest);
        let err = conn.subscribe_with(options).await.err().ok_or("a replay must be refused")?;
        ensure(err.kind() == busbar_core::error::SubscribeErrorKind::Unsupported, || {
            format!("wrong error {err}")
        })?;
        return Ok(());
    }
    let publish = |n| {
        let conn = &conn;
        let topic = &topic;
        async move { Ok::<_, Error>(conn.publish(message(topic, n)?).await?) }
    };
    let numbers = |sub: busbar_core::Subscription, count: usize, what: &'static str| async move {
        let mut sub = sub;
        let mut seen = Vec::new();
        while seen.len() < count {
            let m = next(&mut sub, what).await?;
            seen.push(Codec::Json.decode::<u32>(&m.payload.to_bytes()?, m.topic.as_str())?);
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>((seen, sub))
    };
    publish(1).await?;
    publish(2).await?;
    // Brokers stamp records to the millisecond: a gap of a few of them on the clock (not a
    // wait for anything) puts 1 and 2 before the start time and 3 and 4 after it.
    let between = SystemTime::now() + Duration::from_millis(3);
    tokio::time::sleep(Duration::from_millis(6)).await;
    publish(3).await?;
    publish(4).await?;

    let earliest = conn
        .subscribe_with(SubscribeOptions::from(filter.clone()).start(StartAt::Earliest))
        .await?;
    let (seen, _) = numbers(earliest, 4, "the kept messages from the oldest").await?;
    ensure(seen == [1, 2, 3, 4], || format!("from the oldest: {seen:?}"))?;

    let timed = conn
        .subscribe_with(SubscribeOptions::from(filter.clone()).start(StartAt::Time(between)))
        .await?;
    let (seen, _) = numbers(timed, 2, "the messages after the start time").await?;
    ensure(seen == [3, 4], || format!("from the start time: {seen:?}"))?;

    // A plain subscription starts now: the first thing it gets is what follows.
    let now = conn.subscribe_with(SubscribeOptions::from(filter.clone())).await?;
    publish(5).await?;
    let (seen, _) = numbers(now, 1, "the message published after subscribing").await?;
    ensure(seen == [5], || format!("from now: {seen:?}"))?;

    // A group starts at the oldest once, then resumes where it left off.
    let group = format!("{}-readers", p.replace('/', "-"));
    let grouped =
        || SubscribeOptions::from(filter.clone()).queue_group(&group).start(StartAt::Earliest);
    let member = connect(&*h).await?;
    let first = member.subscribe_with(grouped()).await?;
    let (seen, _first) = numbers(first, 5, "the group's first reading").await?;
    ensure(seen == [1, 2, 3, 4, 5], || format!("the group's first reading: {seen:?}"))?;
    // The member goes away, as a process that ends does; what follows is the group's.
    member.close().await?;
    publish(6).await?;
    let other = connect(&*h).await?;
    let again = other.subscribe_with(grouped()).await?;
    let (seen, _) = numbers(again, 1, "the group's next reading").await?;
    ensure(seen == [6], || format!("the group resumed with {seen:?}, not where it left off"))?;
    Ok(())
}
