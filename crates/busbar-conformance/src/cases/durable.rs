//! Durable subscriptions and acknowledgements: what the broker keeps for a subscriber that
//! is away, and what it gives again when a message was not acknowledged.

use std::sync::Arc;

use busbar_core::error::SubscribeErrorKind;
use busbar_core::transport::{Acknowledge, ConnectOptions, SubscribeOptions};
use busbar_core::{Codec, Connection, Message, Subscription, Topic, TopicFilter};

use super::{connect, ensure, next, prefix};
use crate::{Harness, TestResult};

fn numbered(topic: &str, n: u32) -> Result<Message, String> {
    let topic = Topic::new(topic).map_err(|e| e.to_string())?;
    let payload = Codec::Json.encode(&n).map_err(|e| e.to_string())?;
    Ok(Message::new(topic, payload))
}

async fn number(sub: &mut Subscription, what: &str) -> Result<(u32, Message), String> {
    let m = next(sub, what).await?;
    let bytes = m.payload.to_bytes().map_err(|e| e.to_string())?;
    let n = Codec::Json.decode::<u32>(&bytes, m.topic.as_str()).map_err(|e| e.to_string())?;
    Ok((n, m))
}

/// A new connection as the reader `client_id` (every reader of the case is one process
/// coming back: where the broker keeps a subscription in the client's session, as MQTT
/// does, the id is what finds it again).
async fn reader(h: &impl Harness, client_id: &str) -> Result<Connection, String> {
    h.connect(ConnectOptions::new().client_id(client_id))
        .await
        .map_err(|e| format!("connect failed: {e}"))
}

/// A new reader connection subscribed with `options`.
async fn subscribe_with(
    h: &impl Harness,
    client_id: &str,
    options: SubscribeOptions,
) -> Result<(Connection, Subscription), String> {
    let conn = reader(h, client_id).await?;
    let sub = conn.subscribe_with(options).await.map_err(|e| format!("subscribe: {e}"))?;
    Ok((conn, sub))
}

/// A durable subscription keeps what is published while its subscriber is away and hands
/// it, in order, to the next subscriber with the same name; with explicit acknowledgement,
/// a message received but not acknowledged when the subscriber went is given again. Where
/// the broker cannot keep a subscription, both are refused with `Unsupported`.
pub async fn durable_subscriptions(h: Arc<impl Harness>) -> TestResult {
    let p = prefix("durable");
    let topic = format!("{p}/d");
    let name = p.replace('/', "-");
    let filter = TopicFilter::new(&topic)?;
    let reader_id = format!("{name}.reader");
    let publisher = connect(&*h).await?;
    let first = reader(&*h, &reader_id).await?;
    let capabilities = first.capabilities().clone();
    let durable = || SubscribeOptions::from(filter.clone()).durable(&name);
    if !capabilities.durable {
        let err = first.subscribe_with(durable()).await.err().ok_or("durable accepted")?;
        ensure(err.kind() == SubscribeErrorKind::Unsupported, || format!("wrong error {err}"))?;
    }
    if !capabilities.acknowledgements {
        let explicit = SubscribeOptions::from(filter.clone()).acknowledge(Acknowledge::Explicit);
        let err = first.subscribe_with(explicit).await.err().ok_or("explicit ack accepted")?;
        ensure(err.kind() == SubscribeErrorKind::Unsupported, || format!("wrong error {err}"))?;
    }
    let bad = SubscribeOptions::from(filter.clone()).durable("no spaces");
    let refused = first.subscribe_with(bad).await.err();
    first.close().await.map_err(|e| e.to_string())?;
    if !capabilities.durable {
        return Ok(());
    }
    let err = refused.ok_or("a bad name accepted")?;
    ensure(err.kind() == SubscribeErrorKind::InvalidFilter, || format!("wrong error {err}"))?;
    let publish = |n: u32| {
        let publisher = publisher.clone();
        let topic = topic.clone();
        async move { publisher.publish(numbered(&topic, n)?).await.map_err(|e| e.to_string()) }
    };
    let subscribe = |options: SubscribeOptions| {
        let h = h.clone();
        let reader_id = reader_id.clone();
        async move { subscribe_with(&*h, &reader_id, options).await }
    };

    // The first subscriber makes the subscription, reads 1 and goes away.
    let (conn, mut sub) = subscribe(durable()).await?;
    publish(1).await?;
    let (n, _) = number(&mut sub, "the first message").await?;
    ensure(n == 1, || format!("got {n} first"))?;
    drop(sub);
    conn.close().await.map_err(|e| e.to_string())?;

    // What is published while nobody reads is kept for the next subscriber of the name.
    publish(2).await?;
    publish(3).await?;
    let (conn, mut sub) = subscribe(durable()).await?;
    for want in [2, 3] {
        let (n, _) = number(&mut sub, "what was published while away").await?;
        ensure(n == want, || format!("got {n}, expected {want}"))?;
    }
    drop(sub);
    conn.close().await.map_err(|e| e.to_string())?;
    if !capabilities.acknowledgements {
        return Ok(());
    }

    // Explicit acknowledgement: received but not acknowledged is given again.
    let explicit = || durable().acknowledge(Acknowledge::Explicit);
    let (conn, mut sub) = subscribe(explicit()).await?;
    publish(4).await?;
    let (n, m) = number(&mut sub, "a message to leave unacknowledged").await?;
    ensure(n == 4, || format!("got {n}, expected 4"))?;
    drop(m);
    drop(sub);
    conn.close().await.map_err(|e| e.to_string())?;
    let (conn, mut sub) = subscribe(explicit()).await?;
    let (n, m) = number(&mut sub, "the unacknowledged message again").await?;
    ensure(n == 4, || format!("got {n} instead of 4 again"))?;
    ensure(m.ack(), || "the message had nothing to acknowledge".into())?;
    ensure(!m.ack(), || "acknowledged twice".into())?;
    // Once acknowledged it is done with: the next subscriber starts after it.
    drop(sub);
    conn.close().await.map_err(|e| e.to_string())?;
    let (conn, mut sub) = subscribe(explicit()).await?;
    publish(5).await?;
    let (n, m) = number(&mut sub, "the message after the acknowledged one").await?;
    ensure(n == 5, || format!("got {n}: an acknowledged message came again"))?;
    m.ack();
    // Not removed under its own reader.
    match conn.remove_durable(&name, &topic).await {
        Err(e)
            if matches!(
                e.kind(),
                SubscribeErrorKind::InvalidFilter | SubscribeErrorKind::Unsupported
            ) => {}
        other => return Err(format!("removed while read on the same connection: {other:?}").into()),
    }
    drop(sub);
    conn.close().await.map_err(|e| e.to_string())?;

    // Removed, with what it kept: the name starts afresh. Removed by a reader (where the
    // broker keeps the subscription in the client's session, as MQTT does, only that
    // client can remove it).
    publish(6).await?;
    let remover = reader(&*h, &reader_id).await?;
    let removed = remover.remove_durable(&name, &topic).await;
    remover.close().await.map_err(|e| e.to_string())?;
    match removed {
        Ok(()) => {
            let (conn, mut sub) = subscribe(explicit()).await?;
            publish(7).await?;
            let (n, m) = number(&mut sub, "the first message after the removal").await?;
            ensure(n == 7, || format!("got {n}: the removed subscription kept it"))?;
            m.ack();
            drop(sub);
            conn.close().await.map_err(|e| e.to_string())?;
            // Nothing is left behind on the broker.
            let remover = reader(&*h, &reader_id).await?;
            remover.remove_durable(&name, &topic).await.map_err(|e| e.to_string())?;
            remover.close().await.map_err(|e| e.to_string())?;
        }
        Err(e) if e.kind() == SubscribeErrorKind::Unsupported => {}
        Err(e) => return Err(format!("removing the durable subscription: {e}").into()),
    }
    Ok(())
}
