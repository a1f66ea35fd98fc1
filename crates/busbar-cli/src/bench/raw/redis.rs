//! The redis crate: a pub/sub connection per subscriber, and `PUBLISH` on a multiplexed
//! connection per publisher with up to 128 commands in flight (its pipelining; one command
//! at a time would measure round trips, not the client).

use std::time::Instant;

use anyhow::Context;
use futures_util::StreamExt;

use super::super::Args;
use super::super::figures::{Figures, Frame, Tally, shares};
use super::super::pubsub::nanos;
use super::{Server, raw_name};

/// Commands one publisher keeps in flight.
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
            futures_util::stream::iter(0..n)
                .map(|sequence| {
                    let (mut con, channel) = (con.clone(), channel.clone());
                    let frame = Frame {
                        publisher: i as u32,
                        sequence: sequence as u32,
                        sent_ns: nanos(clock),
                    };
                    async move {
                        redis::cmd("PUBLISH")
                            .arg(channel)
                            .arg(frame.payload(size))
                            .query_async::<i64>(&mut con)
                            .await
                    }
                })
                .buffered(WINDOW)
                .for_each(|_| async {})
                .await;
        }));
    }
    for p in publishing {
        p.await?;
    }
    let (mut tallies, mut last) = (Vec::new(), started);
    for r in receiving {
        let (tally, at) = r.await?;
        last = last.max(at);
        tallies.push(tally);
    }
    Ok(Figures::from_tallies(tallies, last.saturating_duration_since(started)))
}
