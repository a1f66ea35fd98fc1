//! busbar's Redis transport next to raw redis-rs, on the same server in the same run:
//! pub/sub throughput at 100 B and 16 KiB (one publisher, one subscriber, each on its own
//! connection) and sequential RPC latency (busbar RpcClient/RpcServer against raw
//! RPUSH/BLPOP on request and reply lists).
//!
//! `cargo bench -p busbar-redis --bench compare` starts its own redis-server unless
//! `BUSBAR_BENCH_REDIS_URL` names one. Run without `--bench` (as `cargo test --benches`
//! does) it sends a few messages only, as a smoke test.

use std::sync::Arc;
use std::time::Instant;

use busbar_core::Connection;
use busbar_core::transport::ConnectOptions;
use busbar_redis::RedisTransport;
use busbar_testkit::bench::{self, IDLE};
use busbar_testkit::{BrokerProcess, skip_if_missing};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, PushInfo, PushKind};

/// PUBLISH commands per raw pipeline: the raw client keeps this many in flight.
const RAW_IN_FLIGHT: usize = 64;

async fn raw_conn(
    url: &str,
    push: Option<tokio::sync::mpsc::UnboundedSender<PushInfo>>,
) -> MultiplexedConnection {
    let url = format!("{url}?protocol=resp3");
    let client = redis::Client::open(url).expect("raw client");
    let mut config = AsyncConnectionConfig::new().set_response_timeout(None);
    if let Some(tx) = push {
        config = config.set_push_sender(tx);
    }
    client.get_multiplexed_async_connection_with_config(&config).await.expect("raw connect")
}

/// Raw redis-rs: messages/s received and how many were lost.
async fn raw_pubsub(url: &str, size: usize, count: u64) -> (f64, u64) {
    let channel = format!("bench/raw/{}", uuid::Uuid::new_v4().simple());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut sub = raw_conn(url, Some(tx)).await;
    sub.subscribe(&channel).await.expect("raw subscribe");
    let mut publisher = raw_conn(url, None).await;
    let payload = vec![b'x'; size];
    let receiver = tokio::spawn(async move {
        let _keep = sub;
        let mut received = 0u64;
        let mut last = Instant::now();
        while received < count {
            match tokio::time::timeout(IDLE, rx.recv()).await {
                Ok(Some(info)) if info.kind == PushKind::Message => {
                    received += 1;
                    last = Instant::now();
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        (received, last)
    });
    let start = Instant::now();
    let mut sent = 0;
    while sent < count {
        let n = RAW_IN_FLIGHT.min((count - sent) as usize);
        let mut pipe = redis::pipe();
        for _ in 0..n {
            pipe.cmd("PUBLISH").arg(&channel).arg(&payload).ignore();
        }
        pipe.exec_async(&mut publisher).await.expect("raw publish");
        sent += n as u64;
    }
    let (received, last) = receiver.await.expect("receiver");
    (received as f64 / (last - start).as_secs_f64(), count - received)
}

async fn busbar_conn(url: &str) -> Connection {
    Connection::new(Arc::new(
        RedisTransport::connect(url, ConnectOptions::new()).await.expect("busbar connect"),
    ))
}

/// busbar: one publisher connection, one subscriber connection.
async fn busbar_pubsub(url: &str, size: usize, count: u64) -> (f64, u64) {
    let (sub_conn, pub_conn) = (busbar_conn(url).await, busbar_conn(url).await);
    bench::busbar_pubsub(
        &sub_conn,
        &pub_conn,
        size,
        count,
        busbar_core::QoS::AtMostOnce,
        count as usize,
    )
    .await
}

/// Raw RPC: the client RPUSHes the request and BLPOPs its reply list; the server BLPOPs the
/// request list and RPUSHes the reply. Each blocking reader has its own connection.
async fn raw_rpc(url: &str, calls: usize) -> (f64, f64) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let req_key = format!("bench:raw:req:{id}");
    let rep_key = format!("bench:raw:rep:{id}");
    let mut server_conn = raw_conn(url, None).await;
    let server = {
        let (req_key, rep_key, url) = (req_key.clone(), rep_key.clone(), url.to_owned());
        tokio::spawn(async move {
            let mut out = raw_conn(&url, None).await;
            for _ in 0..calls {
                let (_, body): (String, Vec<u8>) = redis::cmd("BLPOP")
                    .arg(&req_key)
                    .arg(0)
                    .query_async(&mut server_conn)
                    .await
                    .expect("server blpop");
                redis::cmd("RPUSH")
                    .arg(&rep_key)
                    .arg(body)
                    .exec_async(&mut out)
                    .await
                    .expect("reply");
            }
        })
    };
    let mut client = raw_conn(url, None).await;
    let mut waiter = raw_conn(url, None).await;
    let body = vec![b'x'; 100];
    let mut lat = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        redis::cmd("RPUSH").arg(&req_key).arg(&body).exec_async(&mut client).await.expect("rpush");
        let _: (String, Vec<u8>) =
            redis::cmd("BLPOP").arg(&rep_key).arg(0).query_async(&mut waiter).await.expect("blpop");
        lat.push(t.elapsed());
    }
    server.await.expect("server");
    bench::percentiles(lat)
}

/// busbar's typed RPC pattern (JSON, a handler task per call, the reply inbox).
async fn busbar_rpc(url: &str, calls: usize) -> (f64, f64) {
    bench::busbar_rpc(&busbar_conn(url).await, &busbar_conn(url).await, calls).await
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let owned;
        let url = match std::env::var("BUSBAR_BENCH_REDIS_URL") {
            Ok(u) => u,
            Err(_) => {
                let Some(p) = skip_if_missing("compare", BrokerProcess::redis().await) else {
                    return;
                };
                owned = p;
                owned.url()
            }
        };
        let (n_small, n_large, calls) = if full { (200_000, 20_000, 5_000) } else { (500, 50, 20) };
        println!("busbar-redis vs raw redis-rs 1.x on {url} (same server, same run)");
        for (size, count) in [(100usize, n_small), (16 * 1024, n_large)] {
            let (raw, raw_lost) = raw_pubsub(&url, size, count).await;
            let (bb, bb_lost) = busbar_pubsub(&url, size, count).await;
            println!(
                "pub/sub {size:>6} B x {count}: raw {raw:>9.0} msg/s (lost {raw_lost}), busbar {bb:>9.0} msg/s (lost {bb_lost}), ratio {:.2}",
                bb / raw
            );
        }
        let (raw50, raw99) = raw_rpc(&url, calls).await;
        let (bb50, bb99) = busbar_rpc(&url, calls).await;
        println!(
            "rpc 100 B x {calls}: raw p50 {raw50:.0} us p99 {raw99:.0} us, busbar p50 {bb50:.0} us p99 {bb99:.0} us, p50 ratio {:.2}, p99 ratio {:.2}",
            bb50 / raw50,
            bb99 / raw99
        );
    });
}
