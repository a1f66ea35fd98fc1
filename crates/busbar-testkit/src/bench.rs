//! The busbar side of the comparison benches. Every transport's `benches/compare.rs` measures
//! its raw client crate its own way and busbar through these functions, so each comparison
//! runs the same busbar code path: the transport behind a [`Connection`].

use std::time::{Duration, Instant};

use busbar_core::RpcError;
use busbar_core::patterns::rpc::{RpcClient, RpcServer};
use busbar_core::{Connection, Message, QoS, SubscribeOptions, Topic, TopicFilter};

/// How long a receiver waits for a missing message before counting the rest as lost.
pub const IDLE: Duration = Duration::from_secs(3);

/// True unless the program was started with `--bench` (as `cargo bench` does): under
/// `cargo test` a bench runs a few messages only, to prove it still works.
pub fn quick() -> bool {
    !std::env::args().any(|a| a == "--bench")
}

/// The median and 99th percentile of `samples`, in microseconds.
pub fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort_unstable();
    let at = |p: f64| {
        let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
        samples.get(index).map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    (at(0.5), at(0.99))
}

/// Counts messages from `next` until `count` arrived or none came for [`IDLE`]; returns how
/// many arrived and when the last did.
pub async fn receive<F, Fut>(count: u64, mut next: F) -> (u64, Instant)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut received = 0u64;
    let mut last = Instant::now();
    while received < count {
        match tokio::time::timeout(IDLE, next()).await {
            Ok(true) => {
                received += 1;
                last = Instant::now();
            }
            _ => break,
        }
    }
    (received, last)
}

/// Messages per second and messages lost, from `started` to the last arrival.
pub fn rate(count: u64, received: u64, started: Instant, last: Instant) -> (f64, u64) {
    let elapsed = last.saturating_duration_since(started).as_secs_f64().max(1e-9);
    (received as f64 / elapsed, count - received)
}

/// Publishes a pub/sub bench keeps awaiting confirmation at once.
const PUBLISH_WINDOW: usize = 256;

/// One publisher connection sends `count` messages of `size` bytes at `qos` to one
/// subscriber connection whose queue holds `capacity`: messages/s received, and how many were
/// lost.
pub async fn busbar_pubsub(
    sub_conn: &Connection,
    pub_conn: &Connection,
    size: usize,
    count: u64,
    qos: QoS,
    capacity: usize,
) -> (f64, u64) {
    let topic = format!("bench/busbar/{}", crate::unique_name());
    let options = SubscribeOptions::from(TopicFilter::new(&topic).expect("filter"))
        .capacity(capacity)
        .qos(qos);
    let mut sub = sub_conn.subscribe_with(options).await.expect("subscribe");
    let receiver = tokio::spawn(async move {
        let mut received = 0u64;
        let mut last = Instant::now();
        while received < count {
            // Take what is queued without waiting; wait (with the idle bound) only when empty.
            if sub.try_recv().is_some() {
                received += 1;
                continue;
            }
            last = Instant::now();
            match tokio::time::timeout(IDLE, sub.recv()).await {
                Ok(Some(_)) => received += 1,
                _ => break,
            }
        }
        if received == count {
            last = Instant::now();
        }
        (received, last)
    });
    let message =
        Message::new(Topic::new(&topic).expect("topic"), bytes::Bytes::from(vec![0x5a; size]))
            .with_qos(qos);
    let started = Instant::now();
    // Confirmed publishes (QoS 1 and 2) in flight under a window, as the raw clients keep
    // them.
    let mut pipeline = pub_conn.pipeline(PUBLISH_WINDOW);
    for _ in 0..count {
        pipeline.publish(message.clone()).await.expect("publish");
    }
    pipeline.finish().await.map_err(|(e, _)| e).expect("publish");
    let (received, last) = receiver.await.expect("receiver");
    rate(count, received, started, last)
}

/// `calls` sequential calls of the typed RPC pattern (JSON, a 100-byte string echoed): p50
/// and p99 in microseconds.
pub async fn busbar_rpc(
    server_conn: &Connection,
    client_conn: &Connection,
    calls: usize,
) -> (f64, f64) {
    let topic = format!("bench/busbar-rpc/{}", crate::unique_name());
    let _server =
        RpcServer::spawn(server_conn, &topic, |s: String| async move { Ok::<_, RpcError>(s) })
            .await
            .expect("serve");
    let client = RpcClient::<String, String>::new(client_conn, &topic).expect("client");
    let request = "x".repeat(98); // 100 bytes as JSON
    client.call(request.clone()).await.expect("warm-up");
    let mut latencies = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        client.call(request.clone()).await.expect("call");
        latencies.push(t.elapsed());
    }
    percentiles(latencies)
}
