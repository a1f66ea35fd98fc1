//! The raw equivalent of `mem://`: bare bounded tokio channels between tasks.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::super::Args;
use super::super::figures::{Figures, Frame, Tally, gather_calls, gather_tallies, shares};
use super::super::pubsub::nanos;

/// One channel per subscriber; each publisher sends every message to each of them.
pub(super) async fn pubsub(args: &Args, size: usize) -> anyhow::Result<Figures> {
    let per_publisher = shares(args.count, args.publishers);
    let clock = Instant::now();
    let (mut senders, mut receiving) = (Vec::new(), Vec::new());
    for _ in 0..args.subscribers {
        let (tx, mut rx) = mpsc::channel::<Bytes>(64 * 1024);
        senders.push(tx);
        let mut tally = Tally::new(&per_publisher);
        receiving.push(tokio::spawn(async move {
            while !tally.complete() {
                let Some(b) = rx.recv().await else { break };
                if let Some(frame) = Frame::read(&b) {
                    tally.record(frame, nanos(clock).saturating_sub(frame.sent_ns));
                }
            }
            (tally, Instant::now())
        }));
    }
    let senders = Arc::new(senders);
    let started = Instant::now();
    let publishing: Vec<_> = per_publisher
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let (senders, n) = (senders.clone(), *n);
            tokio::spawn(async move {
                for sequence in 0..n {
                    let frame = Frame {
                        publisher: i as u32,
                        sequence: sequence as u32,
                        sent_ns: nanos(clock),
                    };
                    let payload = Bytes::from(frame.payload(size));
                    for tx in senders.iter() {
                        let _ = tx.send(payload.clone()).await;
                    }
                }
            })
        })
        .collect();
    for p in publishing {
        let _ = p.await;
    }
    gather_tallies(receiving, started).await
}

/// Request/reply over an mpsc channel and a oneshot per call.
pub(super) async fn rpc(args: &Args, size: usize) -> anyhow::Result<Figures> {
    let (req_tx, mut req_rx) = mpsc::channel::<(Bytes, oneshot::Sender<Bytes>)>(64);
    tokio::spawn(async move {
        while let Some((b, reply)) = req_rx.recv().await {
            let _ = reply.send(b);
        }
    });
    let payload = Bytes::from(vec![0x5a; size]);
    let started = Instant::now();
    let callers: Vec<_> = shares(args.count, args.concurrency)
        .into_iter()
        .map(|n| {
            let (req_tx, payload) = (req_tx.clone(), payload.clone());
            tokio::spawn(async move {
                let (mut latencies, mut failed) = (Vec::with_capacity(n as usize), 0u64);
                for _ in 0..n {
                    let t = Instant::now();
                    let (tx, rx) = oneshot::channel();
                    if req_tx.send((payload.clone(), tx)).await.is_err() || rx.await.is_err() {
                        failed += 1;
                        continue;
                    }
                    latencies.push(t.elapsed().as_nanos() as u64);
                }
                (latencies, failed)
            })
        })
        .collect();
    gather_calls(callers, started).await
}
