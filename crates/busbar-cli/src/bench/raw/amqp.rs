//! lapin, as its documentation shows: a channel per role, queues bound to `amq.topic`
//! (where busbar's topics go too), `no_ack` consumers, and at QoS 1 or more publisher
//! confirms with up to 128 publishes waiting for theirs (one at a time would measure round
//! trips, not the client); RPC over RabbitMQ's direct reply-to.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, ConnectionProperties};
use tokio::sync::oneshot;

use super::super::Args;
use super::super::figures::{Figures, Frame, Tally, gather_calls, gather_tallies, shares};
use super::super::pubsub::{WINDOW, nanos};
use super::raw_name;

const EXCHANGE: &str = "amq.topic";

async fn channel(url: &str) -> anyhow::Result<(lapin::Connection, Channel)> {
    let conn = lapin::Connection::connect(url, ConnectionProperties::default())
        .await
        .context("raw lapin: connecting")?;
    let ch = conn.create_channel().await?;
    Ok((conn, ch))
}

/// A server-named queue on `ch` bound to `key` on `amq.topic`.
async fn bound_queue(ch: &Channel, key: &str) -> anyhow::Result<lapin::Queue> {
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
    ch.queue_bind(
        q.name().clone(),
        EXCHANGE.into(),
        key.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    Ok(q)
}

fn no_ack() -> BasicConsumeOptions {
    BasicConsumeOptions { no_ack: true, ..Default::default() }
}

pub(super) async fn pubsub(args: &Args, url: &str, size: usize) -> anyhow::Result<Figures> {
    let key = raw_name('.');
    let per_publisher = shares(args.count, args.publishers);
    let clock = Instant::now();
    let idle = args.idle_timeout;
    let (mut receiving, mut connections) = (Vec::new(), Vec::new());
    for s in 0..args.subscribers {
        let (conn, ch) = channel(url).await?;
        for i in 0..args.extra_subscriptions {
            bound_queue(&ch, &format!("{key}.extra.{i}")).await?;
        }
        let q = bound_queue(&ch, &key).await?;
        let tag = format!("raw-{s}");
        let mut consumer =
            ch.basic_consume(q.name().clone(), tag.into(), no_ack(), FieldTable::default()).await?;
        let mut tally = Tally::new(&per_publisher);
        receiving.push(tokio::spawn(async move {
            let mut last = Instant::now();
            while !tally.complete() {
                match tokio::time::timeout(idle, consumer.next()).await {
                    Ok(Some(Ok(d))) => {
                        last = Instant::now();
                        if let Some(frame) = Frame::read(&d.data) {
                            tally.record(frame, nanos(clock).saturating_sub(frame.sent_ns));
                        }
                    }
                    _ => break,
                }
            }
            (tally, last)
        }));
        connections.push(conn);
    }
    let confirms = args.qos > 0;
    let started = Instant::now();
    let mut publishing = Vec::new();
    for (i, n) in per_publisher.iter().enumerate() {
        let (conn, ch) = channel(url).await?;
        if confirms {
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
        }
        connections.push(conn);
        let (key, n) = (key.clone(), *n);
        publishing.push(tokio::spawn(async move {
            let mut outcomes = futures_util::stream::iter(0..n)
                .map(|sequence| {
                    let (ch, key) = (ch.clone(), key.clone());
                    let frame = Frame {
                        publisher: i as u32,
                        sequence: sequence as u32,
                        sent_ns: nanos(clock),
                    };
                    async move {
                        let confirm = ch
                            .basic_publish(
                                EXCHANGE.into(),
                                key.into(),
                                BasicPublishOptions::default(),
                                &frame.payload(size),
                                // Persistent at QoS 1, as busbar sends it (a durable
                                // queue then keeps it on disk).
                                if confirms {
                                    BasicProperties::default().with_delivery_mode(2)
                                } else {
                                    BasicProperties::default()
                                },
                            )
                            .await?;
                        if confirms {
                            confirm.await?;
                        }
                        anyhow::Ok(())
                    }
                })
                .buffered(if confirms { WINDOW } else { 1 });
            while let Some(outcome) = outcomes.next().await {
                outcome?;
            }
            anyhow::Ok(())
        }));
    }
    for p in publishing {
        p.await??;
    }
    let figures = gather_tallies(receiving, started).await?;
    for conn in connections {
        let _ = conn.close(200, "bye".into()).await;
    }
    Ok(figures)
}

pub(super) async fn rpc(args: &Args, url: &str, size: usize) -> anyhow::Result<Figures> {
    let key = raw_name('.');
    let (server_conn, sch) = channel(url).await?;
    let q = bound_queue(&sch, &key).await?;
    let mut requests =
        sch.basic_consume(q.name().clone(), "srv".into(), no_ack(), FieldTable::default()).await?;
    let server = tokio::spawn(async move {
        while let Some(Ok(d)) = requests.next().await {
            let (Some(reply_to), Some(corr)) =
                (d.properties.reply_to().clone(), d.properties.correlation_id().clone())
            else {
                continue;
            };
            let props = BasicProperties::default().with_correlation_id(corr);
            let options = BasicPublishOptions::default();
            let _ = sch.basic_publish("".into(), reply_to, options, &d.data, props).await;
        }
    });
    let (client_conn, cch) = channel(url).await?;
    let mut replies = cch
        .basic_consume(
            "amq.rabbitmq.reply-to".into(),
            "cli".into(),
            no_ack(),
            FieldTable::default(),
        )
        .await?;
    let waiting: Arc<Mutex<HashMap<String, oneshot::Sender<()>>>> = Arc::default();
    let routes = waiting.clone();
    let router = tokio::spawn(async move {
        while let Some(Ok(d)) = replies.next().await {
            let id = d.properties.correlation_id().as_ref().map(|c| c.as_str().to_owned());
            let tx = id.and_then(|id| routes.lock().ok()?.remove(&id));
            if let Some(tx) = tx {
                let _ = tx.send(());
            }
        }
    });
    let payload = vec![0x5a; size];
    let started = Instant::now();
    let next_id = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let callers: Vec<_> = shares(args.count, args.concurrency)
        .into_iter()
        .map(|n| {
            let (cch, waiting, payload, key) =
                (cch.clone(), waiting.clone(), payload.clone(), key.clone());
            let next_id = next_id.clone();
            tokio::spawn(async move {
                let (mut latencies, mut failed) = (Vec::with_capacity(n as usize), 0u64);
                for _ in 0..n {
                    let id = next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed).to_string();
                    let (tx, rx) = oneshot::channel();
                    if let Ok(mut w) = waiting.lock() {
                        w.insert(id.clone(), tx);
                    }
                    let props = BasicProperties::default()
                        .with_reply_to("amq.rabbitmq.reply-to".into())
                        .with_correlation_id(id.into());
                    let t = Instant::now();
                    let options = BasicPublishOptions::default();
                    let sent = cch
                        .basic_publish(
                            EXCHANGE.into(),
                            key.clone().into(),
                            options,
                            &payload,
                            props,
                        )
                        .await;
                    match (sent, tokio::time::timeout(Duration::from_secs(5), rx).await) {
                        (Ok(_), Ok(Ok(()))) => latencies.push(t.elapsed().as_nanos() as u64),
                        _ => failed += 1,
                    }
                }
                (latencies, failed)
            })
        })
        .collect();
    let figures = gather_calls(callers, started).await?;
    server.abort();
    router.abort();
    let _ = client_conn.close(200, "bye".into()).await;
    let _ = server_conn.close(200, "bye".into()).await;
    Ok(figures)
}
