//! busbar's NATS transport next to the raw async-nats client, on the same server in the same
//! run: pub/sub throughput at 100 B and 16 KiB, and request/reply latency.
//!
//! `cargo bench -p busbar-nats --bench compare` starts its own nats-server unless
//! `BUSBAR_BENCH_NATS_URL` names one. Both sides use the same async-nats subscription buffer
//! (1 Mi messages), so neither loses messages to a small client buffer. Under `cargo test`
//! it runs a few messages only, as a smoke test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use busbar_core::message::Message;
use busbar_core::transport::ConnectOptions;
use busbar_core::{Connection, Topic};
use busbar_nats::NatsTransport;
use busbar_testkit::bench::{self, IDLE};
use busbar_testkit::{BrokerProcess, skip_if_missing};
use bytes::Bytes;
use futures_util::StreamExt;

const BUFFER: usize = 1 << 20;

async fn raw_client(url: &str) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .subscription_capacity(BUFFER)
        .connect(url)
        .await
        .expect("raw connect")
}

/// Waits until the server has handled everything `client` sent: a request nobody serves is
/// answered "no responders" only after the earlier commands.
async fn raw_sync(client: &async_nats::Client) {
    let subject = format!("bench.sync.{}", uuid::Uuid::new_v4().simple());
    let _ = client.request(subject, Bytes::new()).await;
}

/// Raw async-nats: one publisher, one subscriber; messages/s received and how many were lost.
async fn raw_pubsub(url: &str, size: usize, count: u64) -> (f64, u64) {
    let subject = format!("bench.raw.{}", uuid::Uuid::new_v4().simple());
    let sub_client = raw_client(url).await;
    let mut sub = sub_client.subscribe(subject.clone()).await.expect("raw subscribe");
    raw_sync(&sub_client).await;
    let receiver = tokio::spawn(async move {
        let mut received = 0u64;
        let mut last = Instant::now();
        while received < count {
            match tokio::time::timeout(IDLE, sub.next()).await {
                Ok(Some(_)) => {
                    received += 1;
                    last = Instant::now();
                }
                _ => break,
            }
        }
        (received, last)
    });
    let publisher = raw_client(url).await;
    let payload = Bytes::from(vec![0x5a; size]);
    let started = Instant::now();
    for _ in 0..count {
        publisher.publish(subject.clone(), payload.clone()).await.expect("raw publish");
    }
    publisher.flush().await.expect("flush");
    let (received, last) = receiver.await.expect("raw receiver");
    let elapsed = last.saturating_duration_since(started).as_secs_f64().max(1e-9);
    (received as f64 / elapsed, count - received)
}

async fn busbar_connect(url: &str) -> Connection {
    Connection::new(Arc::new(
        NatsTransport::connect(
            &format!("{url}?subscription_capacity={BUFFER}"),
            ConnectOptions::new(),
        )
        .await
        .expect("busbar connect"),
    ))
}

/// busbar: one publisher connection, one subscriber connection.
async fn busbar_pubsub(url: &str, size: usize, count: u64) -> (f64, u64) {
    let (sub_conn, pub_conn) = (busbar_connect(url).await, busbar_connect(url).await);
    bench::busbar_pubsub(&sub_conn, &pub_conn, size, count, busbar_core::QoS::AtMostOnce, 64 * 1024)
        .await
}

/// Raw async-nats request/reply: an echo service and sequential requests.
async fn raw_rpc(url: &str, calls: usize) -> (f64, f64) {
    let subject = format!("bench.raw-rpc.{}", uuid::Uuid::new_v4().simple());
    let server = raw_client(url).await;
    let mut requests = server.subscribe(subject.clone()).await.expect("subscribe");
    raw_sync(&server).await;
    let serving = tokio::spawn(async move {
        while let Some(m) = requests.next().await {
            if let Some(reply) = m.reply {
                let _ = server.publish(reply, m.payload).await;
            }
        }
    });
    let client = raw_client(url).await;
    let payload = Bytes::from(vec![0x5a; 100]);
    client.request(subject.clone(), payload.clone()).await.expect("warm-up");
    let mut latencies = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        client.request(subject.clone(), payload.clone()).await.expect("request");
        latencies.push(t.elapsed());
    }
    serving.abort();
    bench::percentiles(latencies)
}

/// busbar's transport-level request against a plain echo subscriber.
async fn busbar_request(url: &str, calls: usize) -> (f64, f64) {
    let topic = format!("bench/busbar-req/{}", uuid::Uuid::new_v4().simple());
    let server_conn = busbar_connect(url).await;
    let client_conn = busbar_connect(url).await;
    let mut requests = server_conn.subscribe(&topic).await.expect("subscribe");
    let serving = {
        let conn = server_conn.clone();
        tokio::spawn(async move {
            while let Some(m) = requests.recv().await {
                if let Some(reply) = Message::reply(&m, m.payload.clone()) {
                    let _ = conn.publish(reply).await;
                }
            }
        })
    };
    let request = Message::new(Topic::new(&topic).expect("topic"), Bytes::from(vec![0x5a; 100]));
    client_conn.request(request.clone(), Duration::from_secs(5)).await.expect("warm-up");
    let mut latencies = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        client_conn.request(request.clone(), Duration::from_secs(5)).await.expect("request");
        latencies.push(t.elapsed());
    }
    serving.abort();
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
        let mut _owned = None;
        let url = match std::env::var("BUSBAR_BENCH_NATS_URL") {
            Ok(url) => url,
            Err(_) => {
                let Some(server) =
                    skip_if_missing("nats compare bench", BrokerProcess::nats().await)
                else {
                    return;
                };
                let url = server.url();
                _owned = Some(server);
                url
            }
        };
        let shown = busbar_nats::Settings::parse(&url).expect("NATS URL").shown;
        let scale = |n: u64| if quick { 50 } else { n };
        println!("NATS on {shown} (busbar vs raw async-nats, same server, same run)");
        println!("{:<22} {:>14} {:>14} {:>7}", "pub/sub", "busbar msgs/s", "raw msgs/s", "ratio");
        for (size, count) in [(100usize, scale(200_000)), (16 * 1024, scale(20_000))] {
            let (raw, raw_lost) = raw_pubsub(&url, size, count).await;
            let (ours, lost) = busbar_pubsub(&url, size, count).await;
            println!(
                "{:<22} {:>14.0} {:>14.0} {:>7.2}   lost: busbar {lost}, raw {raw_lost}",
                format!("{size} B, {count} msgs"),
                ours,
                raw,
                ours / raw
            );
        }
        let calls = if quick { 20 } else { 5_000 };
        let (raw50, raw99) = raw_rpc(&url, calls).await;
        let (req50, req99) = busbar_request(&url, calls).await;
        let (rpc50, rpc99) = busbar_rpc(&url, calls).await;
        println!("request/reply, 100 B, {calls} sequential calls (µs)");
        println!("  raw async-nats request   p50 {raw50:>6.0}  p99 {raw99:>6.0}");
        println!(
            "  busbar request           p50 {req50:>6.0}  p99 {req99:>6.0}  p50 ratio {:.2}",
            req50 / raw50
        );
        println!(
            "  busbar RpcClient (JSON)  p50 {rpc50:>6.0}  p99 {rpc99:>6.0}  p50 ratio {:.2}",
            rpc50 / raw50
        );
    });
}
