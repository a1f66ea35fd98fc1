//! rdkafka (librdkafka), used the way its documentation shows: a `FutureProducer` whose
//! delivery futures say the broker has a record, `StreamConsumer`s reading an assigned
//! partition, and an admin client making the topics. Configured as busbar configures its
//! own clients where that changes the figures (an idempotent producer that does not linger,
//! fetches the broker may hold 10 ms at most), and otherwise left at librdkafka's defaults.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::{ClientConfig, Message as _};
use tokio::sync::oneshot;

use super::super::Args;
use super::super::figures::{Figures, Frame, Tally, gather_calls, gather_tallies, shares};
use super::super::pubsub::{WINDOW, nanos};
use super::{Server, raw_name};

/// The header naming a request's reply topic, and the one carrying its correlation id.
const REPLY_TO: &str = "reply-to";
const CORRELATION: &str = "correlation";

fn config(server: &Server) -> anyhow::Result<ClientConfig> {
    if server.user.is_some() {
        bail!("--compare's raw Kafka client connects without SASL; compare on a broker without it");
    }
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", format!("{}:{}", server.host, server.port));
    Ok(c)
}

fn producer(server: &Server) -> anyhow::Result<FutureProducer> {
    config(server)?
        .set("enable.idempotence", "true")
        .set("linger.ms", "0")
        .create()
        .context("raw rdkafka: the producer")
}

/// A topic of one partition, made before anything reads or writes it.
async fn topic(server: &Server, name: &str) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        config(server)?.create().context("raw rdkafka: the admin client")?;
    let new = NewTopic::new(name, 1, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin.create_topics([&new], &options).await.context("raw rdkafka: creating")?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => bail!("raw rdkafka: creating {name:?}: {code}"),
        }
    }
    Ok(())
}

/// A consumer reading partition 0 of the new topic `name` from its beginning.
fn reader(server: &Server, name: &str) -> anyhow::Result<StreamConsumer> {
    let consumer: StreamConsumer = config(server)?
        .set("group.id", format!("{name}.reader"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .context("raw rdkafka: a consumer")?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(name, 0, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    Ok(consumer)
}

/// What a delivery report said: the broker has the record, or the reason it has not.
fn confirmed(report: <DeliveryFuture as std::future::Future>::Output) -> anyhow::Result<()> {
    match report {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => bail!("raw rdkafka: not delivered: {e}"),
        Err(_) => bail!("raw rdkafka: the producer went away"),
    }
}

pub(super) async fn pubsub(args: &Args, server: &Server, size: usize) -> anyhow::Result<Figures> {
    let name = raw_name('.');
    topic(server, &name).await?;
    let per_publisher = shares(args.count, args.publishers);
    let clock = Instant::now();
    let idle = args.idle_timeout;
    let mut receiving = Vec::new();
    for _ in 0..args.subscribers {
        let consumer = reader(server, &name)?;
        let mut tally = Tally::new(&per_publisher);
        receiving.push(tokio::spawn(async move {
            let mut records = consumer.stream();
            let mut last = Instant::now();
            while !tally.complete() {
                match tokio::time::timeout(idle, records.next()).await {
                    Ok(Some(Ok(m))) => {
                        last = Instant::now();
                        if let Some(frame) = m.payload().and_then(Frame::read) {
                            tally.record(frame, nanos(clock).saturating_sub(frame.sent_ns));
                        }
                    }
                    Ok(Some(Err(_))) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            (tally, last)
        }));
    }
    let started = Instant::now();
    let confirm = args.qos >= 1;
    let mut publishing = Vec::new();
    for (i, n) in per_publisher.iter().enumerate() {
        let (producer, name, n) = (producer(server)?, name.clone(), *n);
        publishing.push(tokio::spawn(async move {
            // At QoS 1 and 2, WINDOW records in flight, each counted once confirmed (as
            // busbar's run does); at QoS 0 every delivery report is left unread.
            let mut in_flight = FuturesUnordered::<DeliveryFuture>::new();
            for sequence in 0..n {
                if in_flight.len() >= WINDOW
                    && let Some(report) = in_flight.next().await
                {
                    confirmed(report)?;
                }
                let frame =
                    Frame { publisher: i as u32, sequence: sequence as u32, sent_ns: nanos(clock) };
                let payload = frame.payload(size);
                let record = FutureRecord::<(), _>::to(&name).payload(&payload).partition(0);
                let sent = producer.send_result(record).map_err(|(e, _)| e)?;
                if confirm {
                    in_flight.push(sent);
                }
            }
            while let Some(report) = in_flight.next().await {
                confirmed(report)?;
            }
            anyhow::Ok(producer)
        }));
    }
    let mut producers = Vec::new();
    for p in publishing {
        producers.push(p.await??);
    }
    let figures = gather_tallies(receiving, started).await?;
    drop(producers);
    Ok(figures)
}

/// Request/reply by hand: requests name their reply topic and correlation id in headers; an
/// echo server answers there; one reader routes the replies to the waiting callers.
pub(super) async fn rpc(args: &Args, server: &Server, size: usize) -> anyhow::Result<Figures> {
    let requests = raw_name('.');
    let replies = format!("{requests}.replies");
    topic(server, &requests).await?;
    topic(server, &replies).await?;
    let (server_in, server_out) = (reader(server, &requests)?, producer(server)?);
    let serving = tokio::spawn(async move {
        let mut records = server_in.stream();
        while let Some(Ok(m)) = records.next().await {
            let headers = m.headers();
            let header = |key: &str| {
                headers.and_then(|h| h.iter().find(|h| h.key == key)).and_then(|h| h.value)
            };
            let (Some(to), Some(id)) = (header(REPLY_TO), header(CORRELATION)) else {
                continue;
            };
            let Ok(to) = std::str::from_utf8(to) else { continue };
            let headers = OwnedHeaders::new().insert(Header { key: CORRELATION, value: Some(id) });
            let payload = m.payload().unwrap_or_default();
            let record =
                FutureRecord::<(), _>::to(to).payload(payload).headers(headers).partition(0);
            // Sent without waiting for its report: the caller's receipt says it arrived.
            let _ = server_out.send_result(record);
        }
    });
    let waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<()>>>> = Arc::default();
    let routes = waiting.clone();
    let client_in = reader(server, &replies)?;
    let routing = tokio::spawn(async move {
        let mut records = client_in.stream();
        while let Some(Ok(m)) = records.next().await {
            let id = m
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == CORRELATION))
                .and_then(|h| h.value)
                .and_then(|v| v.try_into().ok())
                .map(u64::from_be_bytes);
            let tx = id.and_then(|id| routes.lock().ok()?.remove(&id));
            if let Some(tx) = tx {
                let _ = tx.send(());
            }
        }
    });
    let caller = producer(server)?;
    let payload = vec![0x5a; size];
    let next_id = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let callers: Vec<_> = shares(args.count, args.concurrency)
        .into_iter()
        .map(|n| {
            let (caller, waiting, payload) = (caller.clone(), waiting.clone(), payload.clone());
            let (requests, replies, next_id) = (requests.clone(), replies.clone(), next_id.clone());
            tokio::spawn(async move {
                let (mut latencies, mut failed) = (Vec::with_capacity(n as usize), 0u64);
                for _ in 0..n {
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    let (tx, rx) = oneshot::channel();
                    if let Ok(mut w) = waiting.lock() {
                        w.insert(id, tx);
                    }
                    let id_bytes = id.to_be_bytes();
                    let headers = OwnedHeaders::new()
                        .insert(Header { key: REPLY_TO, value: Some(replies.as_bytes()) })
                        .insert(Header { key: CORRELATION, value: Some(&id_bytes[..]) });
                    let record = FutureRecord::<(), _>::to(&requests)
                        .payload(&payload)
                        .headers(headers)
                        .partition(0);
                    let t = Instant::now();
                    let sent = caller.send_result(record).is_ok();
                    match tokio::time::timeout(Duration::from_secs(5), rx).await {
                        Ok(Ok(())) if sent => latencies.push(t.elapsed().as_nanos() as u64),
                        _ => failed += 1,
                    }
                }
                (latencies, failed)
            })
        })
        .collect();
    let figures = gather_calls(callers, started).await?;
    serving.abort();
    routing.abort();
    Ok(figures)
}
