//! busbar's AMQP transport next to the raw lapin client, on the same RabbitMQ in the same
//! run: pub/sub throughput at 100 B and 16 KiB (QoS 0: no confirms; QoS 1: each publish
//! waits for its confirm, on both sides) and RPC latency over direct reply-to.
//!
//! `cargo bench -p busbar-amqp --bench compare` uses the machine's RabbitMQ (or
//! `BUSBAR_BENCH_AMQP_URL`). Under `cargo test` it runs a few messages only, as a smoke test.
//!
//! The raw subscriber consumes with `no_ack` (the fastest lapin can go); busbar acknowledges
//! every delivery (in batches) once it is in the subscription's queue, so nothing is lost
//! if the connection drops.

use std::sync::Arc;
use std::time::Instant;

use busbar_amqp::AmqpTransport;
use busbar_core::transport::ConnectOptions;
use busbar_core::{Connection, QoS};
use busbar_testkit::bench::{self, IDLE};
use busbar_testkit::{BrokerKind, shared_broker};
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, ConnectionProperties};

async fn raw_connect(url: &str) -> lapin::Connection {
    lapin::Connection::connect(url, ConnectionProperties::default()).await.expect("raw connect")
}

/// Raw lapin: one publisher connection, one subscriber connection; messages/s received and
/// how many were lost.
async fn raw_pubsub(url: &str, size: usize, count: u64, confirms: bool) -> (f64, u64) {
    let key = format!("bench.raw.{}", uuid::Uuid::new_v4().simple());
    let sub_conn = raw_connect(url).await;
    let ch = sub_conn.create_channel().await.expect("channel");
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("declare");
    ch.queue_bind(
        q.name().clone(),
        "amq.topic".into(),
        key.clone().into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind");
    let mut consumer = ch
        .basic_consume(
            q.name().clone(),
            "raw".into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let receiver = tokio::spawn(async move {
        let mut received = 0u64;
        let mut last = Instant::now();
        while received < count {
            match tokio::time::timeout(IDLE, consumer.next()).await {
                Ok(Some(Ok(_))) => {
                    received += 1;
                    last = Instant::now();
                }
                _ => break,
            }
        }
        (received, last)
    });
    let pub_conn = raw_connect(url).await;
    let publisher = pub_conn.create_channel().await.expect("channel");
    if confirms {
        publisher.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    }
    let payload = vec![0x5a; size];
    let started = Instant::now();
    for _ in 0..count {
        let confirm = publisher
            .basic_publish(
                "amq.topic".into(),
                key.clone().into(),
                BasicPublishOptions::default(),
                &payload,
                BasicProperties::default(),
            )
            .await
            .expect("raw publish");
        if confirms {
            confirm.await.expect("raw confirm");
        }
    }
    let (received, last) = receiver.await.expect("raw receiver");
    let _ = pub_conn.close(200, "bye".into()).await;
    let _ = sub_conn.close(200, "bye".into()).await;
    let elapsed = last.saturating_duration_since(started).as_secs_f64().max(1e-9);
    (received as f64 / elapsed, count - received)
}

async fn busbar_connect(url: &str) -> Connection {
    Connection::new(Arc::new(
        AmqpTransport::connect(url, ConnectOptions::new()).await.expect("busbar connect"),
    ))
}

/// busbar: one publisher connection, one subscriber connection.
async fn busbar_pubsub(url: &str, size: usize, count: u64, qos: QoS) -> (f64, u64) {
    let (sub_conn, pub_conn) = (busbar_connect(url).await, busbar_connect(url).await);
    let result = bench::busbar_pubsub(&sub_conn, &pub_conn, size, count, qos, 64 * 1024).await;
    let _ = pub_conn.close().await;
    let _ = sub_conn.close().await;
    result
}

/// Raw lapin request/reply: a service queue on amq.topic, direct reply-to, correlation ids
/// by hand, no confirms.
async fn raw_rpc(url: &str, calls: usize) -> (f64, f64) {
    let key = format!("bench.raw-rpc.{}", uuid::Uuid::new_v4().simple());
    let server_conn = raw_connect(url).await;
    let sch = server_conn.create_channel().await.expect("channel");
    let q = sch
        .queue_declare(
            "".into(),
            QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("declare");
    sch.queue_bind(
        q.name().clone(),
        "amq.topic".into(),
        key.clone().into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind");
    let mut requests = sch
        .basic_consume(
            q.name().clone(),
            "srv".into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let server = tokio::spawn(async move {
        while let Some(Ok(d)) = requests.next().await {
            let (Some(reply_to), Some(corr)) =
                (d.properties.reply_to().clone(), d.properties.correlation_id().clone())
            else {
                continue;
            };
            let _ = sch
                .basic_publish(
                    "".into(),
                    reply_to,
                    BasicPublishOptions::default(),
                    &d.data,
                    BasicProperties::default().with_correlation_id(corr),
                )
                .await;
        }
    });
    let client_conn = raw_connect(url).await;
    let cch = client_conn.create_channel().await.expect("channel");
    let mut replies = cch
        .basic_consume(
            "amq.rabbitmq.reply-to".into(),
            "cli".into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("consume replies");
    let request = vec![b'x'; 100];
    let mut latencies = Vec::with_capacity(calls);
    for i in 0..=calls {
        let t = Instant::now();
        cch.basic_publish(
            "amq.topic".into(),
            key.clone().into(),
            BasicPublishOptions::default(),
            &request,
            BasicProperties::default()
                .with_reply_to("amq.rabbitmq.reply-to".into())
                .with_correlation_id(i.to_string().into()),
        )
        .await
        .expect("request");
        loop {
            let d = replies.next().await.expect("reply").expect("reply ok");
            if d.properties.correlation_id().as_ref().map(|c| c.as_str())
                == Some(i.to_string().as_str())
            {
                break;
            }
        }
        if i > 0 {
            latencies.push(t.elapsed());
        }
    }
    server.abort();
    let _ = client_conn.close(200, "bye".into()).await;
    let _ = server_conn.close(200, "bye".into()).await;
    bench::percentiles(latencies)
}

/// busbar's typed RPC pattern (JSON, a handler task per call, the reply inbox).
async fn busbar_rpc(url: &str, calls: usize) -> (f64, f64) {
    bench::busbar_rpc(&busbar_connect(url).await, &busbar_connect(url).await, calls).await
}

fn main() {
    let quick = bench::quick();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let url = match std::env::var("BUSBAR_BENCH_AMQP_URL") {
            Ok(url) => url,
            Err(_) => match shared_broker(BrokerKind::Amqp).await {
                Some(b) => b.url().to_owned(),
                None => return,
            },
        };
        let shown = busbar_core::url::redact(&url);
        let scale = |n: u64| if quick { 50 } else { n };
        println!("AMQP 0.9.1 on {shown} (busbar vs raw lapin, same broker, same run)");
        println!("{:<30} {:>14} {:>14} {:>7}", "pub/sub", "busbar msgs/s", "raw msgs/s", "ratio");
        for (size, count) in [(100usize, scale(100_000)), (16 * 1024, scale(20_000))] {
            for (qos, confirms, name) in
                [(QoS::AtMostOnce, false, "QoS 0"), (QoS::AtLeastOnce, true, "QoS 1 confirms")]
            {
                let (raw, raw_lost) = raw_pubsub(&url, size, count, confirms).await;
                let (ours, lost) = busbar_pubsub(&url, size, count, qos).await;
                println!(
                    "{:<30} {:>14.0} {:>14.0} {:>7.2}   lost: busbar {lost}, raw {raw_lost}",
                    format!("{size} B, {name}, {count} msgs"),
                    ours,
                    raw,
                    ours / raw
                );
            }
        }
        let calls = if quick { 20 } else { 2_000 };
        let (raw50, raw99) = raw_rpc(&url, calls).await;
        let (p50, p99) = busbar_rpc(&url, calls).await;
        println!(
            "RPC 100 B, {calls} calls: busbar p50 {p50:.0} µs p99 {p99:.0} µs; raw p50 {raw50:.0} µs p99 {raw99:.0} µs; p50 ratio {:.2}",
            p50 / raw50
        );
    });
}
