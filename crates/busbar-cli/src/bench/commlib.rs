//! The same patterns on commlib's wire: JSON bodies `{"data": "<size bytes>"}` encoded and
//! decoded on every message, and commlib's RPC of the transport; what a commlib-py system
//! would see.

use std::time::Instant;

use anyhow::bail;
use busbar_commlib::{CommlibPublisher, CommlibRpcClient, CommlibRpcService, CommlibSubscriber};

use super::Args;
use super::figures::Figures;
use super::progress::Progress;

/// What commlib bodies carry in the benchmark: `size` bytes of text.
fn body(size: usize) -> serde_json::Value {
    serde_json::json!({"data": "Z".repeat(size)})
}

/// A commlib publisher and subscriber. commlib bodies carry no sequence numbers: loss is
/// the count that did not arrive.
pub(super) async fn pubsub(args: &Args, size: usize) -> anyhow::Result<Figures> {
    let name = format!("bench.{}", std::process::id());
    let sub_conn = args.target.connect().await?;
    let pub_conn = args.target.connect().await?;
    let mut sub = CommlibSubscriber::<serde_json::Value>::new(&sub_conn, &name).await?;
    let publisher = CommlibPublisher::<serde_json::Value>::new(&pub_conn, &name)?;
    let (count, idle) = (args.count, args.idle_timeout);
    let receiver = tokio::spawn(async move {
        let mut received = 0u64;
        let mut last = Instant::now();
        while received < count {
            match tokio::time::timeout(idle, sub.recv()).await {
                Ok(Some(Ok(_))) => {
                    received += 1;
                    last = Instant::now();
                }
                Ok(Some(Err(_))) => {}
                Ok(None) | Err(_) => break,
            }
        }
        (received, last)
    });
    let body = body(size);
    let progress = Progress::new("published", count, args.for_machines());
    let started = Instant::now();
    for _ in 0..count {
        publisher.publish(&body).await?;
        progress.tick();
    }
    let (received, last) = receiver.await?;
    progress.finish();
    pub_conn.close().await?;
    sub_conn.close().await?;
    let elapsed = last.saturating_duration_since(started).as_secs_f64().max(1e-9);
    Ok(Figures {
        msgs_per_s: received as f64 / elapsed,
        lost: count - received,
        elapsed_s: elapsed,
        received,
        ..Figures::default()
    })
}

/// Sequential calls on commlib's RPC of the transport, to a commlib echo service.
pub(super) async fn rpc(args: &Args, size: usize) -> anyhow::Result<Figures> {
    let name = format!("bench.{}.echo", std::process::id());
    let server_conn = args.target.connect().await?;
    let client_conn = args.target.connect().await?;
    let _service =
        CommlibRpcService::spawn(&server_conn, &name, |v: serde_json::Value| async move { v })
            .await?;
    let client =
        CommlibRpcClient::<serde_json::Value, serde_json::Value>::new(&client_conn, &name)?;
    let request = body(size);
    // The first calls also wait for the service's subscription to be in place.
    for _ in 0..(args.count.min(1_000) / 10).max(1) {
        client.call(&request).await?;
    }
    let mut latencies = Vec::with_capacity(args.count as usize);
    let progress = Progress::new("calls", args.count, args.for_machines());
    let started = Instant::now();
    for _ in 0..args.count {
        let t = Instant::now();
        let reply = client.call(&request).await?;
        latencies.push(t.elapsed().as_nanos() as u64);
        progress.tick();
        if reply != request {
            bail!("the echo came back changed");
        }
    }
    let elapsed = started.elapsed();
    progress.finish();
    server_conn.close().await?;
    client_conn.close().await?;
    Ok(Figures::from_calls(latencies, 0, elapsed))
}
