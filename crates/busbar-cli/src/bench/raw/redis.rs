//! The redis crate: a pub/sub connection per subscriber, and `PUBLISH` on a multiplexed
//! connection per publisher in pipelines of 128 commands, one after the other (one command
//! at a time would measure round trips, not the client; commands sent concurrently on the
//! multiplexed connection may go out of order).

use std::time::Instant;

use anyhow::Context;
use futures_util::StreamExt;

use super::super::Args;
use super::super::figures::{Figures, Frame, Tally, gather_tallies, shares};
use super::super::pubsub::nanos;
use super::{Server, raw_name};

/// Commands in one pipeline.
const WINDOW: usize = 128;

fn client(server: &Server) -> anyhow::Result<redis::Client> {
    let auth = match &server.user {
        Some((user, pass)) => format!("{user}:{pass}@"),
        None => String::new(),
    };
    redis::Client::open(format!("redis://{auth}{}:{}/", server.host, server.port))
        .context("raw redis: the URL")
}

pub(super) async fn pubsub(args: &Args, server: &Server, size: usize) -> anyhow::Result<Figures> {
    let channel = raw_name(':');
    let per_publisher = shares(args.count, args.publishers);
    let clock = Instant::now();
    let idle = args.idle_timeout;
    let mut receiving = Vec::new();
    for _ in 0..args.subscribers {
        let mut pubsub = client(server)?.get_async_pubsub().await?;
        for i in 0..args.extra_subscriptions {
            pubsub.subscribe(format!("{channel}:extra:{i}")).await?;
        }
        pubsub.subscribe(&channel).await?;
        let mut tally = Tally::new(&per_publisher);
        receiving.push(tokio::spawn(async move {
            let mut last = Instant::now();
            let mut messages = pubsub.on_message();
            while !tally.complete() {
                match tokio::time::timeout(idle, messages.next()).await {
                    Ok(Some(m)) => {
                        last = Instant::now();
                        if let Some(frame) = Frame::read(m.get_payload_bytes()) {
                            tally.record(frame, nanos(clock).saturating_sub(frame.sent_ns));
                        }
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            (tally, last)
        }));
    }
    let started = Instant::now();
    let mut publishing = Vec::new();
    for (i, n) in per_publisher.iter().enumerate() {
        let con = client(server)?.get_multiplexed_async_connection().await?;
        let (channel, n) = (channel.clone(), *n);
        publishing.push(tokio::spawn(async move {
            let mut con = con;
            let mut sequence = 0u64;
            while sequence < n {
                let mut pipe = redis::pipe();
                for _ in 0..WINDOW.min((n - sequence) as usize) {
                    let frame = Frame {
                        publisher: i as u32,
                        sequence: sequence as u32,
                        sent_ns: nanos(clock),
                    };
                    pipe.cmd("PUBLISH").arg(&channel).arg(frame.payload(size)).ignore();
                    sequence += 1;
                }
                pipe.query_async::<()>(&mut con).await?;
            }
            anyhow::Ok(())
        }));
    }
    for p in publishing {
        p.await??;
    }
    let figures = gather_tallies(receiving, started).await?;
    Ok(figures)
}
