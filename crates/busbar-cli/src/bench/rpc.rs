//! RPC through busbar's typed pattern: an echo server, and `--concurrency` callers on one
//! client connection, each making its share of the calls one after another.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use busbar::{RpcClient, RpcError, RpcServer};

use super::figures::{Figures, shares};
use super::progress::Progress;
use super::{Args, bench_topic};

/// One run at `size` bytes.
pub(super) async fn run(args: &Args, size: usize) -> anyhow::Result<Figures> {
    let topic = format!("{}/echo", bench_topic());
    let server_conn = args.target.connect().await?;
    let client_conn = args.target.connect().await?;
    let server =
        RpcServer::spawn(&server_conn, &topic, |s: String| async move { Ok::<_, RpcError>(s) })
            .await?;
    let client = RpcClient::<String, String>::new(&client_conn, &topic)?.qos(args.level());
    let request = "x".repeat(size);
    // A few untimed calls let both sides reach steady state.
    for _ in 0..args.count.min(1_000) / 10 {
        client.call(request.clone()).await?;
    }
    let progress = Arc::new(Progress::new("calls", args.count, args.for_machines()));
    let started = Instant::now();
    let callers: Vec<_> = shares(args.count, args.concurrency)
        .into_iter()
        .map(|n| {
            let (client, request, progress) = (client.clone(), request.clone(), progress.clone());
            tokio::spawn(async move { calls(&client, &request, n, &progress).await })
        })
        .collect();
    let (mut latencies, mut failed) = (Vec::with_capacity(args.count as usize), 0);
    for caller in callers {
        let (l, f) = caller.await??;
        latencies.extend(l);
        failed += f;
    }
    let elapsed = started.elapsed();
    progress.finish();
    server.stop(Duration::from_secs(1)).await;
    server_conn.close().await?;
    client_conn.close().await?;
    Ok(Figures::from_calls(latencies, failed, elapsed))
}

/// `n` calls one after another: their latencies (ns) and how many failed.
async fn calls(
    client: &RpcClient<String, String>,
    request: &str,
    n: u64,
    progress: &Progress,
) -> anyhow::Result<(Vec<u64>, u64)> {
    let (mut latencies, mut failed) = (Vec::with_capacity(n as usize), 0);
    for _ in 0..n {
        let t = Instant::now();
        match client.call(request.to_owned()).await {
            Ok(reply) if reply.len() == request.len() => {
                latencies.push(t.elapsed().as_nanos() as u64);
            }
            Ok(reply) => bail!("echo returned {} bytes for {}", reply.len(), request.len()),
            Err(_) => failed += 1,
        }
        progress.tick();
    }
    Ok((latencies, failed))
}
