//! async-nats, used as its documentation shows: one client per role, `subscribe`,
//! `publish`, `request`.

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures_util::StreamExt;

use super::super::Args;
use super::super::figures::{Figures, Frame, Tally, gather_calls, gather_tallies, shares};
use super::super::pubsub::nanos;
use super::{Server, raw_name};

async fn client(server: &Server) -> anyhow::Result<async_nats::Client> {
    let mut options = async_nats::ConnectOptions::new();
    if let Some((user, pass)) = &server.user {
        options = options.user_and_password(user.clone(), pass.clone());
    }
    options
        .connect(format!("{}:{}", server.host, server.port))
        .await
        .context("raw async-nats: connecting")
}

pub(super) async fn pubsub(args: &Args, server: &Server, size: usize) -> anyhow::Result<Figures> {
    let subject = raw_name('.');
    let per_publisher = shares(args.count, args.publishers);
    let clock = Instant::now();
    let idle = args.idle_timeout;
    let (mut receiving, mut keep) = (Vec::new(), Vec::new());
    for _ in 0..args.subscribers {
        let c = client(server).await?;
        for i in 0..args.extra_subscriptions {
            keep.push(c.subscribe(format!("{subject}.extra.{i}")).await?);
        }
        let mut sub = c.subscribe(subject.clone()).await?;
        c.flush().await?;
        let mut tally = Tally::new(&per_publisher);
        receiving.push(tokio::spawn(async move {
            let mut last = Instant::now();
            while !tally.complete() {
                match tokio::time::timeout(idle, sub.next()).await {
                    Ok(Some(m)) => {
                        last = Instant::now();
                        if let Some(frame) = Frame::read(&m.payload) {
                            tally.record(frame, nanos(clock).saturating_sub(frame.sent_ns));
                        }
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            // The client lives as long as its subscriber reads.
            drop(c);
            (tally, last)
        }));
    }
    let started = Instant::now();
    let mut publishing = Vec::new();
    for (i, n) in per_publisher.iter().enumerate() {
        let c = client(server).await?;
        let (subject, n) = (subject.clone(), *n);
        publishing.push(tokio::spawn(async move {
            for sequence in 0..n {
                let frame =
                    Frame { publisher: i as u32, sequence: sequence as u32, sent_ns: nanos(clock) };
                c.publish(subject.clone(), Bytes::from(frame.payload(size))).await?;
            }
            c.flush().await?;
            anyhow::Ok(())
        }));
    }
    for p in publishing {
        p.await??;
    }
    let figures = gather_tallies(receiving, started).await?;
    drop(keep);
    Ok(figures)
}

pub(super) async fn rpc(args: &Args, server: &Server, size: usize) -> anyhow::Result<Figures> {
    let subject = raw_name('.');
    let serving = client(server).await?;
    let mut requests = serving.subscribe(subject.clone()).await?;
    serving.flush().await?;
    let server_task = tokio::spawn(async move {
        while let Some(m) = requests.next().await {
            if let Some(reply) = m.reply {
                let _ = serving.publish(reply, m.payload).await;
            }
        }
    });
    let caller = client(server).await?;
    let payload = Bytes::from(vec![0x5a; size]);
    let started = Instant::now();
    let callers: Vec<_> = shares(args.count, args.concurrency)
        .into_iter()
        .map(|n| {
            let (caller, subject, payload) = (caller.clone(), subject.clone(), payload.clone());
            tokio::spawn(async move {
                let (mut latencies, mut failed) = (Vec::with_capacity(n as usize), 0u64);
                for _ in 0..n {
                    let t = Instant::now();
                    let call = caller.request(subject.clone(), payload.clone());
                    match tokio::time::timeout(Duration::from_secs(5), call).await {
                        Ok(Ok(_)) => latencies.push(t.elapsed().as_nanos() as u64),
                        _ => failed += 1,
                    }
                }
                (latencies, failed)
            })
        })
        .collect();
    let figures = gather_calls(callers, started).await?;
    server_task.abort();
    Ok(figures)
}
