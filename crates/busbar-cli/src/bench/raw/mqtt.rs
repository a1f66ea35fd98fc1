//! rumqttc's MQTT 5 client, used the way its documentation shows: an `AsyncClient` and an
//! event loop polled in a task of its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use tokio::sync::oneshot;

use super::super::Args;
use super::super::figures::{Figures, Frame, Tally, gather_calls, gather_tallies, shares};
use super::super::pubsub::nanos;
use super::{Server, raw_name};

fn client(server: &Server, role: &str) -> (AsyncClient, EventLoop) {
    let id = format!("raw-{role}-{}-{}", std::process::id(), rand_suffix());
    let mut o = MqttOptions::new(id, server.host.clone(), server.port);
    o.set_max_packet_size(Some(268_435_455));
    if let Some((user, pass)) = &server.user {
        o.set_credentials(user.clone(), pass.clone());
    }
    let mut n = rumqttc::NetworkOptions::new();
    n.set_tcp_nodelay(true);
    o.set_network_options(n);
    AsyncClient::new(o, 10_000)
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(nanos(Instant::now()));
    h.finish() % 1_000_000
}

fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// Polls until `subacks` SUBACKs came, failing on a connection error.
async fn await_subacks(l: &mut EventLoop, mut subacks: usize) -> anyhow::Result<()> {
    while subacks > 0 {
        match tokio::time::timeout(Duration::from_secs(10), l.poll()).await {
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => subacks -= 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => bail!("raw rumqttc: {e}"),
            Err(_) => bail!("raw rumqttc: no SUBACK within 10 s"),
        }
    }
    Ok(())
}

pub(super) async fn pubsub(args: &Args, server: &Server, size: usize) -> anyhow::Result<Figures> {
    let topic = raw_name('/');
    let per_publisher = shares(args.count, args.publishers);
    let clock = Instant::now();
    let idle = args.idle_timeout;
    let mut receiving = Vec::new();
    let mut subscribers = Vec::new();
    for _ in 0..args.subscribers {
        let (c, mut l) = client(server, "sub");
        for i in 0..args.extra_subscriptions {
            c.subscribe(format!("{topic}/extra/{i}"), QoS::AtMostOnce).await?;
        }
        c.subscribe(topic.clone(), qos(args.qos)).await?;
        await_subacks(&mut l, args.extra_subscriptions + 1).await?;
        let mut tally = Tally::new(&per_publisher);
        receiving.push(tokio::spawn(async move {
            let mut last = Instant::now();
            while !tally.complete() {
                match tokio::time::timeout(idle, l.poll()).await {
                    Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                        last = Instant::now();
                        if let Some(frame) = Frame::read(&p.payload) {
                            tally.record(frame, nanos(clock).saturating_sub(frame.sent_ns));
                        }
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) | Err(_) => break,
                }
            }
            (tally, last)
        }));
        subscribers.push(c);
    }
    let started = Instant::now();
    let mut publishing = Vec::new();
    let mut drivers = Vec::new();
    for (i, n) in per_publisher.iter().enumerate() {
        let (c, mut l) = client(server, "pub");
        drivers.push(tokio::spawn(async move { while l.poll().await.is_ok() {} }));
        let (topic, n, level) = (topic.clone(), *n, qos(args.qos));
        publishing.push(tokio::spawn(async move {
            for sequence in 0..n {
                let frame =
                    Frame { publisher: i as u32, sequence: sequence as u32, sent_ns: nanos(clock) };
                c.publish(topic.clone(), level, false, frame.payload(size)).await?;
            }
            Ok::<_, rumqttc::v5::ClientError>(c)
        }));
    }
    let mut publishers = Vec::new();
    for p in publishing {
        publishers.push(p.await?.context("raw rumqttc publish")?);
    }
    let figures = gather_tallies(receiving, started).await?;
    for d in drivers {
        d.abort();
    }
    drop((publishers, subscribers));
    Ok(figures)
}

/// Request/reply by hand: response topic and correlation data, the replies routed to the
/// waiting caller by correlation.
pub(super) async fn rpc(args: &Args, server: &Server, size: usize) -> anyhow::Result<Figures> {
    let topic = raw_name('/');
    let reply_topic = format!("{topic}/reply");
    let level = qos(args.qos);
    let (serving, mut server_loop) = client(server, "rpc-server");
    serving.subscribe(topic.clone(), level).await?;
    await_subacks(&mut server_loop, 1).await?;
    let server_task = tokio::spawn(async move {
        while let Ok(ev) = server_loop.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = ev {
                let props = p.properties.unwrap_or_default();
                if let Some(to) = props.response_topic {
                    let reply = PublishProperties {
                        correlation_data: props.correlation_data,
                        ..Default::default()
                    };
                    // Never wait inside the polling task.
                    let _ = serving.try_publish_with_properties(to, level, false, p.payload, reply);
                }
            }
        }
    });
    let (caller, mut client_loop) = client(server, "rpc-client");
    caller.subscribe(reply_topic.clone(), level).await?;
    await_subacks(&mut client_loop, 1).await?;
    let waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<()>>>> = Arc::default();
    let routes = waiting.clone();
    let client_task = tokio::spawn(async move {
        while let Ok(ev) = client_loop.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = ev {
                let id = p
                    .properties
                    .and_then(|props| props.correlation_data)
                    .and_then(|c| c.as_ref().try_into().ok())
                    .map(u64::from_be_bytes);
                let tx = id.and_then(|id| routes.lock().ok()?.remove(&id));
                if let Some(tx) = tx {
                    let _ = tx.send(());
                }
            }
        }
    });
    let payload = Bytes::from(vec![0x5a; size]);
    let started = Instant::now();
    let next_id = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let callers: Vec<_> = shares(args.count, args.concurrency)
        .into_iter()
        .map(|n| {
            let (caller, waiting, payload) = (caller.clone(), waiting.clone(), payload.clone());
            let (topic, reply_topic, next_id) =
                (topic.clone(), reply_topic.clone(), next_id.clone());
            tokio::spawn(async move {
                let (mut latencies, mut failed) = (Vec::with_capacity(n as usize), 0u64);
                for _ in 0..n {
                    let id = next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let (tx, rx) = oneshot::channel();
                    if let Ok(mut w) = waiting.lock() {
                        w.insert(id, tx);
                    }
                    let props = PublishProperties {
                        response_topic: Some(reply_topic.clone()),
                        correlation_data: Some(Bytes::copy_from_slice(&id.to_be_bytes())),
                        ..Default::default()
                    };
                    let t = Instant::now();
                    let sent = caller
                        .publish_with_properties(
                            topic.clone(),
                            level,
                            false,
                            payload.clone(),
                            props,
                        )
                        .await;
                    match (sent, tokio::time::timeout(Duration::from_secs(5), rx).await) {
                        (Ok(()), Ok(Ok(()))) => latencies.push(t.elapsed().as_nanos() as u64),
                        _ => failed += 1,
                    }
                }
                (latencies, failed)
            })
        })
        .collect();
    let figures = gather_calls(callers, started).await?;
    server_task.abort();
    client_task.abort();
    Ok(figures)
}
