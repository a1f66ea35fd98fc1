//! Bridges on real brokers: every pair of transports (the in-process bus included), loops
//! stopped in two-way set-ups, overflow policies, a broker restart, and RPC across brokers.

use std::time::Duration;

use busbar::{Connection, ConnectionEvent, Overflow, RpcClient, RpcError, RpcServer};
use busbar_bridge::{Bridge, BridgeOptions, Rewrite};
use busbar_testkit::{BrokerKind, BrokerProcess, MosquittoConfig, next_event, shared_broker};

fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("bridge{}x{nanos}", std::process::id())
}

/// A connection to each transport there is, the in-process bus first (its own bus per
/// call); `None` where a broker is missing (skipped, or failed when brokers are required).
async fn every_transport() -> Vec<Option<(String, Connection)>> {
    let mut all = vec![Some((
        "mem".to_owned(),
        busbar::connect(&format!("mem://{}", run_id())).await.expect("mem"),
    ))];
    for kind in BrokerKind::EVERY {
        all.push(match shared_broker(kind).await {
            Some(b) => {
                Some((kind.name().to_owned(), busbar::connect(b.url()).await.expect("connect")))
            }
            None => None,
        });
    }
    all
}

/// Waits for the next message. Generous, as a test only waits this long when it fails: a
/// durable subscription taken over by a new process waits for the broker to hand it over (a
/// Kafka group rebalance, a session timing out), which on a loaded CI machine once took
/// longer than the 10 s this allowed before (that failure did not name its broker; the
/// message now does).
async fn recv(sub: &mut busbar::Subscription, what: &str) -> busbar::Message {
    tokio::time::timeout(Duration::from_secs(30), sub.recv())
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing arrived in time"))
        .unwrap_or_else(|| panic!("{what}: the subscription ended"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pair_of_transports_carries_messages_in_order() {
    let sources = every_transport().await;
    let targets = every_transport().await;
    for (from_name, from) in sources.iter().flatten() {
        for (to_name, to) in targets.iter().flatten() {
            let pair = format!("{from_name} -> {to_name}");
            let run = run_id();
            let rewrite = Rewrite::Template(format!("{run}/out/{{1}}"));
            let options = BridgeOptions { rewrite, ..BridgeOptions::default() };
            let bridge = Bridge::topics(&pair, from, to, &format!("{run}/in/#"), options)
                .await
                .unwrap_or_else(|e| panic!("{pair}: {e}"));
            let mut out = to.subscribe(&format!("{run}/out/#")).await.expect("subscribe");
            const N: usize = 20;
            for i in 0..N {
                let topic = format!("{run}/in/sensor/{i}");
                from.publish_bytes(&topic, i.to_string().into_bytes()).await.expect("publish");
            }
            // Twenty topics: on Kafka each is its own log, so they keep no order between them.
            let unordered =
                from.capabilities().topic_order_only || to.capabilities().topic_order_only;
            let mut got = Vec::new();
            for i in 0..N {
                let m = recv(&mut out, &pair).await;
                let n: usize = String::from_utf8_lossy(&m.payload.to_bytes().expect("bytes"))
                    .parse()
                    .expect("a number");
                assert!(unordered || n == i, "{pair}: {n} where {i} was due");
                assert_eq!(m.topic.as_str(), format!("{run}/out/sensor/{n}"), "{pair}");
                assert_eq!(m.headers.get(busbar_bridge::VIA_HEADER), Some(pair.as_str()), "{pair}");
                got.push(n);
            }
            got.sort_unstable();
            assert_eq!(got, (0..N).collect::<Vec<_>>(), "{pair}");
            // The counters move once a publish has completed, which can be just after the
            // copy arrives: one more message through the (sequential) bridge settles them.
            from.publish_bytes(&format!("{run}/in/end"), &b"end"[..]).await.expect("publish");
            assert_eq!(recv(&mut out, &pair).await.topic.as_str(), format!("{run}/out/end"));
            let stats = bridge.stats();
            assert!(stats.forwarded >= N as u64, "{pair}: {stats:?}");
            assert_eq!((stats.failed, stats.dropped, stats.looped), (0, 0, 0), "{pair}");
        }
    }
}

/// A two-way bridge between the in-process bus and Mosquitto: a message crosses once and
/// never comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_way_bridges_never_send_a_message_back() {
    let Some(broker) = shared_broker(BrokerKind::Mqtt).await else { return };
    let run = run_id();
    let a = busbar::connect(&format!("mem://{run}")).await.expect("mem");
    let b = busbar::connect(broker.url()).await.expect("mqtt");
    let filter = format!("{run}/x/#");
    let (there, back) =
        Bridge::two_way("edge", &a, &b, (&filter, Rewrite::Keep), (&filter, Rewrite::Keep))
            .await
            .expect("bridges");
    let mut on_a = a.subscribe(&filter).await.expect("subscribe");
    let mut on_b = b.subscribe(&filter).await.expect("subscribe");
    a.publish_bytes(&format!("{run}/x/1"), &b"from a"[..]).await.expect("publish");
    assert_eq!(recv(&mut on_a, "a, own").await.topic.as_str(), format!("{run}/x/1"));
    assert_eq!(recv(&mut on_b, "b, crossed").await.topic.as_str(), format!("{run}/x/1"));
    // b's copy reached the broker before this marker; the way back reads both in that order,
    // so had it sent x/1 back, a would get it before the marker.
    b.publish_bytes(&format!("{run}/x/marker"), &b"from b"[..]).await.expect("publish");
    assert_eq!(recv(&mut on_a, "a, marker").await.topic.as_str(), format!("{run}/x/marker"));
    // The way back counted x/1 as looped before it forwarded the marker.
    assert_eq!(back.stats().looped, 1, "x/1 stopped on the way back");
    assert_eq!(there.stats().failed + back.stats().failed, 0);
}

/// A target that does not read: with `DropNewest` the source never waits and the excess is
/// counted; with `Block` nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_target_slows_or_drops_by_the_declared_policy() {
    for overflow in [Overflow::DropNewest, Overflow::Block] {
        let run = run_id();
        let from = busbar::connect(&format!("mem://{run}-a")).await.expect("mem");
        let to = busbar::connect(&format!("mem://{run}-b")).await.expect("mem");
        let options = BridgeOptions { capacity: 4, overflow, ..BridgeOptions::default() };
        let bridge = Bridge::topics("slow", &from, &to, "t/#", options).await.expect("bridge");
        // The target's reader holds one message and does not read yet: the bridge's publish
        // waits, and so the bridge stops reading its own queue.
        let target_options =
            busbar::SubscribeOptions::from(busbar::TopicFilter::new("t/#").expect("filter"))
                .capacity(1)
                .overflow(Overflow::Block);
        let mut reader = to.subscribe_with(target_options).await.expect("subscribe");
        const N: u64 = 50;
        let publisher = {
            let from = from.clone();
            tokio::spawn(async move {
                for i in 0..N {
                    from.publish_bytes("t/v", i.to_string().into_bytes()).await.expect("publish");
                }
            })
        };
        if overflow == Overflow::DropNewest {
            // The publisher is never held up, whatever the target does.
            tokio::time::timeout(Duration::from_secs(10), publisher)
                .await
                .expect("the publisher finished while the target did not read")
                .expect("join");
            let dropped = bridge.stats().dropped;
            assert!(dropped > 0, "nothing dropped");
            let mut last = None;
            for _ in 0..N - dropped {
                let m = recv(&mut reader, "drop-newest").await;
                let v: u64 = String::from_utf8_lossy(&m.payload.to_bytes().expect("bytes"))
                    .parse()
                    .expect("a number");
                assert!(last.is_none_or(|l| l < v), "out of order");
                last = Some(v);
            }
        } else {
            for i in 0..N {
                let m = recv(&mut reader, "block").await;
                assert_eq!(m.payload.to_bytes().expect("bytes").as_ref(), i.to_string().as_bytes());
            }
            publisher.await.expect("join");
            assert_eq!(bridge.stats().dropped, 0);
        }
    }
}

/// The target broker restarts: the bridge carries on once the connections are back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_outlives_a_broker_restart() {
    let test = "a_bridge_outlives_a_broker_restart";
    let Some(mut broker) = busbar_testkit::skip_if_missing(
        test,
        BrokerProcess::mosquitto(MosquittoConfig::new()).await,
    ) else {
        return;
    };
    let run = run_id();
    let from = busbar::connect(&format!("mem://{run}")).await.expect("mem");
    let to = busbar::connect(&broker.url()).await.expect("mqtt");
    let watcher = busbar::connect(&broker.url()).await.expect("mqtt");
    let _bridge = Bridge::topics("up", &from, &to, "plant/#", BridgeOptions::default())
        .await
        .expect("bridge");
    let mut seen = watcher.subscribe("plant/#").await.expect("subscribe");
    from.publish_bytes("plant/a", &b"before"[..]).await.expect("publish");
    assert_eq!(
        recv(&mut seen, "before").await.payload.to_bytes().expect("bytes").as_ref(),
        b"before"
    );

    let (mut to_events, mut watcher_events) = (to.events(), watcher.events());
    broker.restart().await.expect("restart");
    next_event(&mut to_events, |e| matches!(e, ConnectionEvent::Reconnected { .. })).await;
    next_event(&mut watcher_events, |e| matches!(e, ConnectionEvent::Reconnected { .. })).await;
    from.publish_bytes("plant/a", &b"after"[..]).await.expect("publish");
    // At least once: a copy of "before" whose acknowledgement the restart cut off may come
    // again; nothing else may.
    loop {
        let m = recv(&mut seen, "after").await;
        match m.payload.to_bytes().expect("bytes").as_ref() {
            b"after" => break,
            b"before" => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// The source broker restarts (Mosquitto, then Redis): the bridge's subscription is restored
/// with its connection, and what is published after the restart crosses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_outlives_a_restart_of_its_source() {
    let test = "a_bridge_outlives_a_restart_of_its_source";
    let Some(mosquitto) = busbar_testkit::skip_if_missing(
        test,
        BrokerProcess::mosquitto(MosquittoConfig::new()).await,
    ) else {
        return;
    };
    let Some(redis) = busbar_testkit::skip_if_missing(test, BrokerProcess::redis().await) else {
        return;
    };
    for mut broker in [mosquitto, redis] {
        let run = run_id();
        let from = busbar::connect(&broker.url()).await.expect("source");
        let publisher = busbar::connect(&broker.url()).await.expect("publisher");
        let to = busbar::connect(&format!("mem://{run}")).await.expect("mem");
        let _bridge = Bridge::topics("down", &from, &to, "plant/#", BridgeOptions::default())
            .await
            .expect("bridge");
        let mut seen = to.subscribe("plant/#").await.expect("subscribe");
        publisher.publish_bytes("plant/a", &b"before"[..]).await.expect("publish");
        let m = recv(&mut seen, "before").await;
        assert_eq!(m.payload.to_bytes().expect("bytes").as_ref(), b"before", "{}", broker.url());

        let (mut from_events, mut publisher_events) = (from.events(), publisher.events());
        broker.restart().await.expect("restart");
        next_event(&mut from_events, |e| matches!(e, ConnectionEvent::Reconnected { .. })).await;
        next_event(&mut publisher_events, |e| matches!(e, ConnectionEvent::Reconnected { .. }))
            .await;
        for i in 0..5 {
            publisher.publish_bytes(&format!("plant/{i}"), &b"after"[..]).await.expect("publish");
        }
        // At least once: a "before" whose acknowledgement the restart cut off may come again.
        let mut after = Vec::new();
        while after.len() < 5 {
            let m = recv(&mut seen, &format!("after the restart of {}", broker.url())).await;
            match m.payload.to_bytes().expect("bytes").as_ref() {
                b"after" => after.push(m.topic.as_str().to_owned()),
                b"before" => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
        let expected: Vec<String> = (0..5).map(|i| format!("plant/{i}")).collect();
        assert_eq!(after, expected, "{}: in order, none lost", broker.url());
    }
}

/// RPC across brokers: a client on MQTT calls a service on NATS through the bridge; with no
/// service behind it, the caller gets `unavailable` at the bridge's deadline, not its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_crosses_brokers_with_errors_and_deadlines() {
    let Some(mqtt) = shared_broker(BrokerKind::Mqtt).await else { return };
    let Some(nats) = shared_broker(BrokerKind::Nats).await else { return };
    let run = run_id();
    let edge = busbar::connect(mqtt.url()).await.expect("mqtt");
    let cloud = busbar::connect(nats.url()).await.expect("nats");
    let service = format!("{run}/cloud/add");
    let _server = RpcServer::spawn(&cloud, &service, |(a, b): (i64, i64)| async move {
        if a < 0 {
            return Err(RpcError::new(RpcError::INVALID_ARGUMENT, "a must not be negative"));
        }
        Ok(a + b)
    })
    .await
    .expect("serve");
    let local = format!("{run}/edge/add");
    let bridge = Bridge::rpc("rpc", &edge, &cloud, &local, &service, Duration::from_secs(5))
        .await
        .expect("bridge");
    let client = RpcClient::<(i64, i64), i64>::new(&edge, &local).expect("client");
    assert_eq!(client.call((40, 2)).await.expect("a call across"), 42);
    let err = client.call((-1, 2)).await.expect_err("the service's error");
    assert!(err.to_string().contains("must not be negative"), "{err}");

    let nobody = format!("{run}/edge/nobody");
    let _dead = Bridge::rpc(
        "dead",
        &edge,
        &cloud,
        &nobody,
        &format!("{run}/cloud/nobody"),
        Duration::from_millis(300),
    )
    .await
    .expect("bridge");
    let client = RpcClient::<(i64, i64), i64>::new(&edge, &nobody).expect("client");
    let started = std::time::Instant::now();
    let err = client.call((1, 2)).await.expect_err("nobody serves");
    assert!(err.to_string().contains("unavailable"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(4), "the caller waited for its own deadline");
    assert_eq!(bridge.stats().forwarded, 2);
}

/// A commlib system on Redis and one on MQTT joined by a two-way bridge from a configuration
/// file: commlib spells a name as one dotted Redis channel and as MQTT levels, and
/// `dots_to_levels` respells it each way, so commlib endpoints on either side meet; nothing
/// comes back where it started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commlib_names_cross_between_redis_and_mqtt() {
    use busbar_commlib::{CommlibPublisher, CommlibSubscriber};
    let Some(redis) = shared_broker(BrokerKind::Redis).await else { return };
    let Some(mqtt) = shared_broker(BrokerKind::Mqtt).await else { return };
    let run = run_id();
    let name = format!("{run}.sensors.temp");
    let text = format!(
        "brokers:\n  robot: {{url: \"{}\"}}\n  site: {{url: \"{}\"}}\nbridges:\n  - name: commlib\n    from: robot\n    to: site\n    topics: [\"{name}\"]\n    rewrite: {{dots_to_levels: true}}\n    two_way: true\n",
        redis.url(),
        mqtt.url()
    );
    let config = busbar::Config::parse(&text, "bridge.yaml", |_| None).expect("configuration");
    let _bridges = config.start_bridges().await.expect("bridges");
    let on_redis = busbar::connect(redis.url()).await.expect("redis");
    let on_mqtt = busbar::connect(mqtt.url()).await.expect("mqtt");
    let mut heard_on_mqtt =
        CommlibSubscriber::<serde_json::Value>::new(&on_mqtt, &name).await.expect("sub");
    let mut heard_on_redis =
        CommlibSubscriber::<serde_json::Value>::new(&on_redis, &name).await.expect("sub");

    CommlibPublisher::new(&on_redis, &name)
        .expect("publisher")
        .publish(&serde_json::json!({"from": "robot"}))
        .await
        .expect("publish");
    let got = tokio::time::timeout(Duration::from_secs(10), heard_on_mqtt.recv())
        .await
        .expect("in time")
        .expect("open")
        .expect("a commlib body");
    assert_eq!(got.topic.as_str(), format!("{run}/sensors/temp"));
    assert_eq!(got.value["from"], "robot");
    // The Redis side hears its own publish once, directly.
    let own = tokio::time::timeout(Duration::from_secs(10), heard_on_redis.recv())
        .await
        .expect("in time")
        .expect("open")
        .expect("body");
    assert_eq!(own.value["from"], "robot");

    CommlibPublisher::new(&on_mqtt, &name)
        .expect("publisher")
        .publish(&serde_json::json!({"from": "site"}))
        .await
        .expect("publish");
    let got = tokio::time::timeout(Duration::from_secs(10), heard_on_redis.recv())
        .await
        .expect("in time")
        .expect("open")
        .expect("body");
    assert_eq!(
        (got.topic.as_str(), &got.value["from"]),
        (name.as_str(), &serde_json::json!("site"))
    );
    // The MQTT side hears only its own publish: nothing looped back.
    let own = tokio::time::timeout(Duration::from_secs(10), heard_on_mqtt.recv())
        .await
        .expect("in time")
        .expect("open")
        .expect("body");
    assert_eq!(own.value["from"], "site");
    let extra = tokio::time::timeout(Duration::from_millis(300), heard_on_mqtt.recv()).await;
    assert!(extra.is_err(), "a message came back: {extra:?}");
}

/// Receives the numbers `range`, in order, as text payloads.
async fn expect_numbers(
    seen: &mut busbar::Subscription,
    range: std::ops::RangeInclusive<u32>,
    broker: &str,
    what: &str,
) {
    let what = format!("{broker}: {what}");
    for i in range {
        let m = recv(seen, &what).await;
        let got = String::from_utf8(m.payload.to_bytes().expect("bytes").to_vec()).expect("text");
        assert_eq!(got, i.to_string(), "{what}");
    }
}

/// A bridge reading a durable subscription is stopped (its process gone: connection
/// closed) while messages keep arriving at the source; started again under the same name,
/// it forwards what the source kept, in order, and nothing it had forwarded already. On
/// every broker as the source (MQTT through a persistent session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_bridge_restarted_forwards_what_the_source_kept() {
    for kind in BrokerKind::EVERY {
        let Some(broker) = shared_broker(kind).await else { continue };
        let run = run_id();
        let source_url = match kind {
            BrokerKind::Mqtt => format!("{}?session_expiry=60", broker.url()),
            _ => broker.url().to_owned(),
        };
        let bridge_process = || async {
            let options = busbar::ConnectOptions::new().client_id(format!("{run}-bridge"));
            busbar::connect_with(&source_url, options).await.expect("source")
        };
        let publisher = busbar::connect(broker.url()).await.expect("publisher");
        let to = busbar::connect(&format!("mem://{run}")).await.expect("mem");
        let mut seen = to.subscribe("plant/#").await.expect("subscribe");
        let topic = format!("plant/{run}");
        let durable = format!("{run}-durable");
        let options =
            || BridgeOptions { durable: Some(durable.clone()), ..BridgeOptions::default() };
        let publish = |from: u32, to: u32| {
            let (publisher, topic) = (publisher.clone(), topic.clone());
            async move {
                for i in from..=to {
                    publisher
                        .publish_bytes(&topic, i.to_string().into_bytes())
                        .await
                        .expect("publish");
                }
            }
        };
        let source = bridge_process().await;
        let bridge =
            Bridge::topics("durable", &source, &to, &topic, options()).await.expect("bridge");
        publish(1, 3).await;
        expect_numbers(&mut seen, 1..=3, kind.name(), "while the bridge runs").await;
        // A graceful stop finishes (and acknowledges) what it forwarded.
        bridge.stop().await;
        source.close().await.expect("the bridge's connection closes");

        // Kept by the source while no bridge reads.
        publish(4, 6).await;
        let source = bridge_process().await;
        let bridge =
            Bridge::topics("durable", &source, &to, &topic, options()).await.expect("bridge");
        let kept = "what the source kept while the bridge was stopped";
        expect_numbers(&mut seen, 4..=6, kind.name(), kept).await;
        publish(7, 7).await;
        expect_numbers(&mut seen, 7..=7, kind.name(), "after the restart").await;
        assert!(seen.try_recv().is_none(), "{}: nothing twice", kind.name());
        drop(bridge);
        let _ = source.remove_durable(&durable, &topic).await;
        let _ = source.close().await;
    }

    // A durable bridge keeps every message: a drop policy is refused.
    let mem = busbar::connect(&format!("mem://{}", run_id())).await.expect("mem");
    let options = BridgeOptions {
        durable: Some("d".into()),
        overflow: Overflow::DropOldest,
        ..BridgeOptions::default()
    };
    let err = Bridge::topics("drops", &mem, &mem, "t/#", options).await.expect_err("refused");
    assert!(err.to_string().contains("overflow must be block"), "{err}");
}

/// A durable bridge whose *target* broker goes away (killed) while messages keep arriving
/// at the source: the bridge keeps trying the message it holds (backing off), the source
/// keeps the rest, and once the target is back everything arrives there in order, nothing
/// lost. Source: Redis (a stream); target: a RabbitMQ node of the test's own, read through
/// a durable subscription so the reader's own reconnect loses nothing either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_bridge_holds_what_it_could_not_deliver_while_the_target_is_away() {
    let test = "a_durable_bridge_holds_what_it_could_not_deliver_while_the_target_is_away";
    let Some(redis) = shared_broker(BrokerKind::Redis).await else { return };
    let Some(mut target) = busbar_testkit::skip_if_missing(test, BrokerProcess::rabbitmq().await)
    else {
        return;
    };
    let run = run_id();
    let topic = format!("plant/{run}");
    let reader = busbar::connect(&target.url()).await.expect("target");
    let options = busbar::SubscribeOptions::from(busbar::TopicFilter::new(&topic).expect("filter"))
        .durable(format!("{run}-reader"));
    let mut seen = reader.subscribe_with(options).await.expect("the target's reader");
    let source = busbar::connect_with(
        redis.url(),
        busbar::ConnectOptions::new().client_id(format!("{run}-bridge")),
    )
    .await
    .expect("source");
    // Its publishes fail after 1 s without a connection (instead of waiting 10 s for the
    // next one), so the outage outlasts them and the bridge's own retries are what keep the
    // message.
    let to = busbar::connect(&format!("{}?reconnect_wait=1", target.url()))
        .await
        .expect("the bridge's target");
    let durable = format!("{run}-durable");
    let options = BridgeOptions { durable: Some(durable.clone()), ..BridgeOptions::default() };
    let bridge = Bridge::topics("away", &source, &to, &topic, options).await.expect("bridge");
    let publisher = busbar::connect(redis.url()).await.expect("publisher");
    let publish = |from: u32, to: u32| {
        let (publisher, topic) = (publisher.clone(), topic.clone());
        async move {
            for i in from..=to {
                publisher.publish_bytes(&topic, i.to_string().into_bytes()).await.expect("publish");
            }
        }
    };
    publish(1, 3).await;
    expect_numbers(&mut seen, 1..=3, "rabbitmq", "while the target is up").await;

    target.stop().await.expect("kill the target");
    publish(4, 8).await;
    target.restart().await.expect("the target comes back");
    // The first one may wait for the node to start, the reader and the bridge to reconnect
    // and the bridge's backoff (5 s at most).
    let first = tokio::time::timeout(Duration::from_secs(60), seen.recv())
        .await
        .expect("the first message kept while the target was away, in time")
        .expect("the reader's subscription survives the target's restart");
    assert_eq!(first.payload.to_bytes().expect("bytes").as_ref(), b"4", "in order");
    expect_numbers(&mut seen, 5..=8, "rabbitmq", "the rest kept while the target was away").await;
    publish(9, 9).await;
    expect_numbers(&mut seen, 9..=9, "rabbitmq", "after the target came back").await;
    // The reader can have the last message before the bridge has the broker's confirmation
    // of it (and counts it): a graceful stop finishes the message in hand first.
    let counters = bridge.stats_reader();
    bridge.stop().await;
    let stats = counters.read();
    assert_eq!((stats.forwarded, stats.failed, stats.dropped), (9, 0, 0), "the bridge's counters");
    let _ = source.remove_durable(&durable, &topic).await;
}
