//! busbar's MQTT transport next to the raw rumqttc client, on the same broker in the same
//! run: pub/sub throughput at 100 B and 16 KiB (QoS 0 and 1) and RPC latency.
//!
//! `cargo bench -p busbar-mqtt --bench compare` starts its own Mosquitto twice, tuned
//! (`set_tcp_nodelay true`) and with its packaged default (Nagle on), unless
//! `BUSBAR_BENCH_MQTT_URL` names a broker. Under `cargo test` it runs
//! a few messages only, as a smoke test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use busbar_core::transport::ConnectOptions;
use busbar_core::{Connection, QoS};
use busbar_mqtt::MqttTransport;
use busbar_testkit::bench::{self, IDLE};
use busbar_testkit::{BrokerProcess, MosquittoConfig, skip_if_missing};
use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS as RawQoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};

fn raw_options(id: &str, host: &str, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(id, host, port);
    o.set_max_packet_size(Some(268_435_455));
    let mut n = rumqttc::NetworkOptions::new();
    n.set_tcp_nodelay(true);
    o.set_network_options(n);
    o
}

/// Raw rumqttc: one publisher, one subscriber; messages/s received and how many were lost.
async fn raw_pubsub(host: &str, port: u16, size: usize, count: u64, qos: RawQoS) -> (f64, u64) {
    let topic = format!("bench/raw/{}", uuid::Uuid::new_v4().simple());
    let (sub, mut sub_loop) = AsyncClient::new(
        raw_options(&format!("raw-sub-{}", uuid::Uuid::new_v4().simple()), host, port),
        10_000,
    );
    let (suback_tx, suback_rx) = tokio::sync::oneshot::channel();
    sub.subscribe(topic.clone(), qos).await.expect("raw subscribe");
    let receiver = tokio::spawn(async move {
        let mut suback = Some(suback_tx);
        let mut received = 0u64;
        let mut last = Instant::now();
        while received < count {
            match tokio::time::timeout(IDLE, sub_loop.poll()).await {
                Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => {
                    if let Some(tx) = suback.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Ok(Event::Incoming(Packet::Publish(_)))) => {
                    received += 1;
                    last = Instant::now();
                }
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => break,
            }
        }
        (received, last)
    });
    suback_rx.await.expect("raw suback");
    let (publisher, mut pub_loop) = AsyncClient::new(
        raw_options(&format!("raw-pub-{}", uuid::Uuid::new_v4().simple()), host, port),
        10_000,
    );
    let driver = tokio::spawn(async move { while pub_loop.poll().await.is_ok() {} });
    let payload = Bytes::from(vec![0x5a; size]);
    let started = Instant::now();
    for _ in 0..count {
        publisher.publish(topic.clone(), qos, false, payload.clone()).await.expect("raw publish");
    }
    let (received, last) = receiver.await.expect("raw receiver");
    driver.abort();
    let elapsed = last.saturating_duration_since(started).as_secs_f64().max(1e-9);
    (received as f64 / elapsed, count - received)
}

async fn busbar_connect(url: &str) -> Connection {
    Connection::new(Arc::new(
        MqttTransport::connect(url, ConnectOptions::new()).await.expect("busbar connect"),
    ))
}

/// busbar: one publisher connection, one subscriber connection.
async fn busbar_pubsub(url: &str, size: usize, count: u64, qos: QoS) -> (f64, u64) {
    let (sub_conn, pub_conn) = (busbar_connect(url).await, busbar_connect(url).await);
    bench::busbar_pubsub(&sub_conn, &pub_conn, size, count, qos, 64 * 1024).await
}

/// Raw rumqttc request/response at QoS 1: response topic and correlation data by hand.
async fn raw_rpc(host: &str, port: u16, calls: usize) -> (f64, f64) {
    let topic = format!("bench/raw-rpc/{}", uuid::Uuid::new_v4().simple());
    let reply_topic = format!("{topic}/reply");
    let (server, mut server_loop) =
        AsyncClient::new(raw_options("raw-rpc-server", host, port), 1_000);
    server.subscribe(topic.clone(), RawQoS::AtLeastOnce).await.expect("subscribe");
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let serving = tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        while let Ok(ev) = server_loop.poll().await {
            match ev {
                Event::Incoming(Packet::SubAck(_)) => {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                }
                Event::Incoming(Packet::Publish(p)) => {
                    let props = p.properties.unwrap_or_default();
                    if let Some(to) = props.response_topic {
                        let reply = PublishProperties {
                            correlation_data: props.correlation_data,
                            ..Default::default()
                        };
                        // Never wait inside the polling task.
                        let _ = server.try_publish_with_properties(
                            to,
                            RawQoS::AtLeastOnce,
                            false,
                            p.payload,
                            reply,
                        );
                    }
                }
                _ => {}
            }
        }
    });
    ready_rx.await.expect("server ready");
    let (client, mut client_loop) =
        AsyncClient::new(raw_options("raw-rpc-client", host, port), 1_000);
    client.subscribe(reply_topic.clone(), RawQoS::AtLeastOnce).await.expect("subscribe");
    let (reply_tx, mut replies) = tokio::sync::mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let receiving = tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        while let Ok(ev) = client_loop.poll().await {
            match ev {
                Event::Incoming(Packet::SubAck(_)) => {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                }
                Event::Incoming(Packet::Publish(_)) => {
                    let _ = reply_tx.send(());
                }
                _ => {}
            }
        }
    });
    ready_rx.await.expect("client ready");
    let payload = Bytes::from(vec![0x5a; 100]);
    let mut latencies = Vec::with_capacity(calls);
    for i in 0..calls {
        let props = PublishProperties {
            response_topic: Some(reply_topic.clone()),
            correlation_data: Some(Bytes::copy_from_slice(&(i as u64).to_be_bytes())),
            ..Default::default()
        };
        let t = Instant::now();
        client
            .publish_with_properties(
                topic.clone(),
                RawQoS::AtLeastOnce,
                false,
                payload.clone(),
                props,
            )
            .await
            .expect("request");
        tokio::time::timeout(Duration::from_secs(5), replies.recv())
            .await
            .expect("reply in time")
            .expect("open");
        latencies.push(t.elapsed());
    }
    serving.abort();
    receiving.abort();
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
        if let Ok(url) = std::env::var("BUSBAR_BENCH_MQTT_URL") {
            return measure(&url, "the broker of BUSBAR_BENCH_MQTT_URL", quick, false).await;
        }
        // Mosquitto as tuned for speed, and as Debian packages it: Nagle's algorithm on for
        // the broker's sockets, which costs a raw client 40 ms per QoS 1 round trip.
        let setups = [
            ("tuned: set_tcp_nodelay true", MosquittoConfig::new()),
            (
                "packaged default: set_tcp_nodelay false",
                MosquittoConfig::new().line("set_tcp_nodelay false"),
            ),
        ];
        for (name, config) in setups {
            let config = config.line("max_queued_messages 0");
            let Some(broker) =
                skip_if_missing("mqtt compare bench", BrokerProcess::mosquitto(config).await)
            else {
                return;
            };
            let nagle = name.starts_with("packaged");
            measure(&broker.url(), name, quick, nagle).await;
        }
    });
}

/// Every figure on the broker at `url`. On a broker with Nagle on (`nagle`) the raw RPC
/// takes 40 ms a call, so it makes fewer.
async fn measure(url: &str, name: &str, quick: bool, nagle: bool) {
    let settings = busbar_mqtt::Settings::parse(url).expect("mqtt URL");
    let (host, port) = (settings.servers[0].host.as_str(), settings.servers[0].port);
    let scale = |n: u64| if quick { 50 } else { n };
    println!("MQTT 5 on {} ({name}; busbar vs raw rumqttc, same broker, same run)", settings.shown);
    println!("{:<26} {:>14} {:>14} {:>7}", "pub/sub", "busbar msgs/s", "raw msgs/s", "ratio");
    for (size, count) in [(100usize, scale(200_000)), (16 * 1024, scale(20_000))] {
        for (qos, raw_qos, qos_name) in [
            (QoS::AtMostOnce, RawQoS::AtMostOnce, "QoS 0"),
            (QoS::AtLeastOnce, RawQoS::AtLeastOnce, "QoS 1"),
        ] {
            let (raw, raw_lost) = raw_pubsub(host, port, size, count, raw_qos).await;
            let (ours, lost) = busbar_pubsub(url, size, count, qos).await;
            println!(
                "{:<26} {:>14.0} {:>14.0} {:>7.2}   lost: busbar {lost}, raw {raw_lost}",
                format!("{size} B, {qos_name}, {count} msgs"),
                ours,
                raw,
                ours / raw
            );
        }
    }
    let calls = match (quick, nagle) {
        (true, _) => 20,
        (false, true) => 200,
        (false, false) => 2_000,
    };
    let (raw50, raw99) = raw_rpc(host, port, calls).await;
    let (p50, p99) = busbar_rpc(url, calls).await;
    println!(
        "RPC QoS 1, {calls} calls: busbar p50 {p50:.0} µs p99 {p99:.0} µs; raw p50 {raw50:.0} µs p99 {raw99:.0} µs; p50 ratio {:.2}",
        p50 / raw50
    );
}
