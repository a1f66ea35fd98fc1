//! busbar's Kafka transport next to the raw rdkafka client, on the same broker in the same
//! run: pub/sub throughput at 100 B and 16 KiB (publishes confirmed by the broker on both
//! sides, 256 in flight), and request/reply latency.
//!
//! `cargo bench -p busbar-kafka --bench compare` starts its own Tansu broker unless
//! `BUSBAR_BENCH_KAFKA_URL` names one (`kafka://host:port`). Both sides use the same
//! librdkafka settings where they matter: an idempotent producer with `linger.ms=0`, and
//! `fetch.wait.max.ms` equal to busbar's `fetch_wait` (10 ms; Tansu holds an empty fetch that
//! long). Under `cargo test` it runs a few messages only, as a smoke test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use busbar_core::transport::ConnectOptions;
use busbar_core::{Connection, QoS};
use busbar_kafka::KafkaTransport;
use busbar_testkit::bench::{self, IDLE};
use busbar_testkit::{BrokerProcess, skip_if_missing, unique_name};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::{ClientConfig, Message as _};

const WINDOW: usize = 256;

fn config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

fn raw_producer(bootstrap: &str) -> FutureProducer {
    config(bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "0")
        .create()
        .expect("raw producer")
}

async fn raw_topic(bootstrap: &str, name: &str) {
    let admin: AdminClient<DefaultClientContext> = config(bootstrap).create().expect("admin");
    let topic = NewTopic::new(name, 1, TopicReplication::Fixed(1));
    admin.create_topics([&topic], &AdminOptions::new()).await.expect("create the topic");
}

/// A consumer reading partition 0 of `name` from its beginning (the topic is new).
fn raw_reader(bootstrap: &str, name: &str) -> StreamConsumer {
    let consumer: StreamConsumer = config(bootstrap)
        .set("group.id", format!("bench-{}", unique_name()))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .expect("raw consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(name, 0, Offset::Beginning).expect("partition");
    consumer.assign(&tpl).expect("assign");
    consumer
}

/// Raw rdkafka: one producer (a window of confirmed sends), one consumer.
async fn raw_pubsub(bootstrap: &str, size: usize, count: u64) -> (f64, u64) {
    let name = format!("bench.raw.{}", unique_name());
    raw_topic(bootstrap, &name).await;
    let consumer = raw_reader(bootstrap, &name);
    let receiver = tokio::spawn(async move {
        let mut stream = consumer.stream();
        let mut received = 0u64;
        let mut last = Instant::now();
        while received < count {
            match tokio::time::timeout(IDLE, stream.next()).await {
                Ok(Some(Ok(_))) => {
                    received += 1;
                    last = Instant::now();
                }
                _ => break,
            }
        }
        (received, last)
    });
    let producer = raw_producer(bootstrap);
    let payload = vec![0x5a; size];
    let started = Instant::now();
    let mut in_flight: FuturesUnordered<rdkafka::producer::DeliveryFuture> =
        FuturesUnordered::new();
    for _ in 0..count {
        if in_flight.len() >= WINDOW {
            let sent = in_flight.next().await.expect("a send").expect("reported");
            sent.map_err(|(e, _)| e).expect("confirmed");
        }
        let record = FutureRecord::<(), _>::to(&name).payload(&payload).partition(0);
        in_flight.push(producer.send_result(record).map_err(|(e, _)| e).expect("queued"));
    }
    while let Some(sent) = in_flight.next().await {
        sent.expect("reported").map_err(|(e, _)| e).expect("confirmed");
    }
    let (received, last) = receiver.await.expect("raw receiver");
    bench::rate(count, received, started, last)
}

async fn busbar_connect(url: &str) -> Connection {
    Connection::new(Arc::new(
        KafkaTransport::connect(url, ConnectOptions::new()).await.expect("busbar connect"),
    ))
}

async fn busbar_pubsub(url: &str, size: usize, count: u64) -> (f64, u64) {
    let (sub_conn, pub_conn) = (busbar_connect(url).await, busbar_connect(url).await);
    bench::busbar_pubsub(&sub_conn, &pub_conn, size, count, QoS::AtLeastOnce, 64 * 1024).await
}

/// Raw rdkafka request/reply: an echo server reading the request topic and answering on the
/// reply topic named in a header, and sequential requests.
async fn raw_rpc(bootstrap: &str, calls: usize) -> (f64, f64) {
    let requests = format!("bench.raw-rpc.{}", unique_name());
    let replies = format!("bench.raw-replies.{}", unique_name());
    raw_topic(bootstrap, &requests).await;
    raw_topic(bootstrap, &replies).await;
    let server_in = raw_reader(bootstrap, &requests);
    let server_out = raw_producer(bootstrap);
    let serving = tokio::spawn(async move {
        let mut stream = server_in.stream();
        while let Some(Ok(m)) = stream.next().await {
            let Some(reply_to) = m
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == "reply-to"))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
            else {
                continue;
            };
            let payload = m.payload().unwrap_or_default().to_vec();
            let record = FutureRecord::<(), _>::to(&reply_to).payload(&payload).partition(0);
            let _ = server_out.send(record, Duration::from_secs(5)).await;
        }
    });
    let client_in = raw_reader(bootstrap, &replies);
    let client_out = raw_producer(bootstrap);
    let payload = vec![0x5a; 100];
    let mut stream = client_in.stream();
    let mut latencies = Vec::with_capacity(calls);
    for i in 0..=calls {
        let t = Instant::now();
        let headers =
            OwnedHeaders::new().insert(Header { key: "reply-to", value: Some(replies.as_bytes()) });
        let record =
            FutureRecord::<(), _>::to(&requests).payload(&payload).headers(headers).partition(0);
        client_out.send(record, Duration::from_secs(5)).await.expect("request sent");
        stream.next().await.expect("a reply").expect("a reply");
        // The first call is the warm-up.
        if i > 0 {
            latencies.push(t.elapsed());
        }
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
        let url = match std::env::var("BUSBAR_BENCH_KAFKA_URL") {
            Ok(url) => url,
            Err(_) => {
                let Some(broker) =
                    skip_if_missing("kafka compare bench", BrokerProcess::tansu().await)
                else {
                    return;
                };
                let url = broker.url();
                _owned = Some(broker);
                url
            }
        };
        let bootstrap = url.trim_start_matches("kafka://").to_owned();
        let scale = |n: u64| if quick { 50 } else { n };
        println!("Kafka on {url} (busbar vs raw rdkafka, same broker, same run)");
        println!("{:<22} {:>14} {:>14} {:>7}", "pub/sub", "busbar msgs/s", "raw msgs/s", "ratio");
        for (size, count) in [(100usize, scale(100_000)), (16 * 1024, scale(10_000))] {
            let (raw, raw_lost) = raw_pubsub(&bootstrap, size, count).await;
            let (ours, lost) = busbar_pubsub(&url, size, count).await;
            println!(
                "{:<22} {:>14.0} {:>14.0} {:>7.2}   lost: busbar {lost}, raw {raw_lost}",
                format!("{size} B, {count} msgs"),
                ours,
                raw,
                ours / raw
            );
        }
        let calls = if quick { 10 } else { 1_000 };
        let (raw50, raw99) = raw_rpc(&bootstrap, calls).await;
        let (rpc50, rpc99) = busbar_rpc(&url, calls).await;
        println!("request/reply, 100 B, {calls} sequential calls (µs)");
        println!("  raw rdkafka request      p50 {raw50:>6.0}  p99 {raw99:>6.0}");
        println!(
            "  busbar RpcClient (JSON)  p50 {rpc50:>6.0}  p99 {rpc99:>6.0}  p50 ratio {:.2}",
            rpc50 / raw50
        );
    });
}
