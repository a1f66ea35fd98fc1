//! busbar and the real commlib-py, 0.13.1 and 0.13.2, in both directions, on MQTT, Redis and
//! AMQP: the cases of the reference's interop table (numbered there; `docs/commlib.md` lists
//! them and the commlib bugs that rule some out).
//!
//! The Python side is `tests/peer/peer.py`, run with the interpreter of a virtual environment
//! per commlib version that `scripts/test-all` creates in `target/commlib-venvs/<version>`
//! (or the one named by `BUSBAR_COMMLIB_0131_PYTHON` / `BUSBAR_COMMLIB_0132_PYTHON`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use busbar_commlib::{CommlibPublisher, CommlibRpcClient, CommlibRpcService, CommlibSubscriber};
use busbar_core::Connection;
use busbar_core::transport::ConnectOptions;
use busbar_testkit::peer::Peer;
use busbar_testkit::{BrokerKind, SharedBroker, shared_broker};
use serde::{Deserialize, Serialize};
use serde_json::Value;

const VERSIONS: [&str; 2] = ["0.13.1", "0.13.2"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Sample {
    seq: i64,
    n: i64,
    text: String,
}

#[derive(Serialize)]
struct Add {
    a: i64,
    b: i64,
}

#[derive(Debug, Deserialize)]
struct Sum {
    c: i64,
}

/// The Python of the venv for `version`, or `None` (the test is then skipped, or fails when
/// brokers are required).
fn python(version: &str) -> Option<PathBuf> {
    let var = format!("BUSBAR_COMMLIB_{}_PYTHON", version.replace('.', ""));
    busbar_testkit::peer::python("commlib interop", &var, &format!("commlib-venvs/{version}"))
}

/// One commlib-py endpoint in a child process, on MQTT.
async fn start(python: &Path, broker: &SharedBroker, args: &[&str]) -> Peer {
    start_on("mqtt", python, broker, args).await
}

/// One commlib-py endpoint in a child process, on the broker of `kind`.
async fn start_on(kind: &str, python: &Path, broker: &SharedBroker, args: &[&str]) -> Peer {
    start_with(kind, python, broker, args, &[]).await
}

/// A peer with `env` set in its environment (see `peer.py` for `PEER_COMPRESSION`).
async fn start_with(
    kind: &str,
    python: &Path,
    broker: &SharedBroker,
    args: &[&str],
    env: &[(&str, &str)],
) -> Peer {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peer/peer.py");
    let mut all =
        vec![script.display().to_string(), format!("{kind}:{}:{}", broker.host(), broker.port())];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    Peer::start(python, &all, env).await
}

/// commlib reports a service running before the broker has its subscription (or, on AMQP,
/// its queue): call with short deadlines until one call is answered. Nothing announces the
/// moment, so where a call fails at once (no queue yet) the next waits for a 100 ms tick.
async fn wait_for_service(conn: &Connection, name: &str) {
    let probe = CommlibRpcClient::<Add, Sum>::new(conn, name)
        .expect("client")
        .timeout(Duration::from_millis(300));
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    for _ in 0..50 {
        tick.tick().await;
        if probe.call(&Add { a: 0, b: 0 }).await.is_ok() {
            return;
        }
    }
    panic!("the commlib service {name} never answered");
}

async fn connect(broker: &SharedBroker) -> Connection {
    Connection::new(Arc::new(
        busbar_mqtt::MqttTransport::connect(broker.url(), ConnectOptions::new())
            .await
            .expect("connect to Mosquitto"),
    ))
}

async fn connect_to(kind: BrokerKind, broker: &SharedBroker) -> Connection {
    let url = broker.url();
    let options = ConnectOptions::new();
    let transport: Arc<dyn busbar_core::transport::Transport> = match kind {
        BrokerKind::Redis => Arc::new(
            busbar_redis::RedisTransport::connect(url, options).await.expect("connect to Redis"),
        ),
        BrokerKind::Amqp => Arc::new(
            busbar_amqp::AmqpTransport::connect(url, options).await.expect("connect to RabbitMQ"),
        ),
        BrokerKind::Mqtt => Arc::new(
            busbar_mqtt::MqttTransport::connect(url, options).await.expect("connect to Mosquitto"),
        ),
        other => panic!("commlib-py has no transport for {other:?}"),
    };
    Connection::new(transport)
}

/// One busbar client, `callers` at once, against a commlib service: every caller gets the
/// answer to its own request.
async fn many_at_once(conn: &Connection, name: &str, version: &str, callers: i64) {
    let client = Arc::new(CommlibRpcClient::<Add, Sum>::new(conn, name).expect("client"));
    let sum = client.call(&Add { a: 2, b: -5 }).await.expect("call");
    assert_eq!(sum.c, -3, "{version}");
    let calls: Vec<_> = (0..callers)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { (i, client.call(&Add { a: i, b: -100 }).await) })
        })
        .collect();
    for call in calls {
        let (i, sum) = call.await.expect("join");
        assert_eq!(sum.expect("call").c, i - 100, "{version}: call {i}");
    }
}

#[derive(Deserialize)]
struct AddIn {
    a: i64,
    b: i64,
}

#[derive(Serialize)]
struct SumOut {
    c: i64,
}

/// A busbar service answering commlib clients: `extra` is appended to the peer's arguments.
async fn python_calls_busbar(
    kind: &str,
    conn: &Connection,
    broker: &SharedBroker,
    version: &str,
    extra: &[&str],
) {
    let Some(py) = python(version) else { return };
    let name = format!("{}.add", run_id(version));
    let _service =
        CommlibRpcService::spawn(conn, &name, |r: AddIn| async move { SumOut { c: r.a + r.b } })
            .await
            .expect("serve");
    for (a, b) in [(2i64, 3i64), (-7, 2)] {
        let (a_arg, b_arg) = (a.to_string(), b.to_string());
        let mut args = vec!["rpc-call", &name, &a_arg, &b_arg];
        args.extend_from_slice(extra);
        let mut peer = start_on(kind, &py, broker, &args).await;
        let got = peer.next().await;
        assert_eq!(got["response"]["c"], Value::from(a + b), "{kind} {version} {extra:?}: {got}");
    }
}

/// Cases 9 and 10: RPC over Redis lists, both ways. commlib's client pushes the envelope on
/// the list named after the service and pops its reply from a list `rpc-<32 hex>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_rpc_both_ways() {
    let Some(broker) = shared_broker(BrokerKind::Redis).await else { return };
    let conn = connect_to(BrokerKind::Redis, &broker).await;
    for version in VERSIONS {
        let Some(py) = python(version) else { return };
        // commlib 0.13.1's Redis service thread dies after 10 s without a request (its
        // BLPOP timeout unpacks None): the calls below come well within that.
        let name = format!("{}.add", run_id(version));
        let _peer = start_on("redis", &py, &broker, &["rpc-service", &name]).await;
        // The list keeps requests until the service pops them: no probing needed.
        many_at_once(&conn, &name, version, 50).await;
        python_calls_busbar("redis", &conn, &broker, version, &[]).await;
    }
}

/// Cases 11 and 12: RPC over AMQP, both ways: the request to the queue named after the
/// service through the default exchange, the reply through direct reply-to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_rpc_both_ways() {
    let Some(broker) = shared_broker(BrokerKind::Amqp).await else { return };
    let conn = connect_to(BrokerKind::Amqp, &broker).await;
    for version in VERSIONS {
        let Some(py) = python(version) else { return };
        if version == "0.13.1" {
            // Known commlib-py bug: 0.13.1's AMQP RPCService never starts (`run_forever`
            // tests the None that `transport.start()` returns and raises "Failed to connect
            // to AMQP broker"), so a busbar client has no 0.13.1 service to call.
            eprintln!(
                "commlib interop: no 0.13.1 AMQP service to call (its RPCService never starts)"
            );
        } else {
            let name = format!("{}.add", run_id(version));
            let _peer = start_on("amqp", &py, &broker, &["rpc-service", &name]).await;
            wait_for_service(&conn, &name).await;
            // Known commlib-py limit: its AMQP service queue holds 10 requests
            // (`x-max-length=10`, `drop-head`), so the broker drops the oldest of 50 sent at
            // once before the service reads them. 10 at once fit.
            many_at_once(&conn, &name, version, 10).await;
        }
        // Either generation's client, with and without a correlation id: 0.13.1 sends and
        // expects bare bodies, 0.13.2 envelopes.
        python_calls_busbar("amqp", &conn, &broker, version, &[]).await;
        python_calls_busbar("amqp", &conn, &broker, version, &["corr"]).await;
    }
}

fn run_id(version: &str) -> String {
    format!("itest.v{}.{}", version.replace('.', ""), uuid_hex())
}

fn uuid_hex() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{}{nanos}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_publisher_to_busbar_subscriber() {
    let Some(broker) = shared_broker(BrokerKind::Mqtt).await else { return };
    for version in VERSIONS {
        let Some(py) = python(version) else { return };
        let name = format!("{}.sensors.sonar", run_id(version));
        let conn = connect(&broker).await;
        let mut sub = CommlibSubscriber::<Sample>::new(&conn, &name).await.expect("subscribe");
        let mut peer = start(&py, &broker, &["pub", &name, "5"]).await;
        peer.go().await;
        for i in 0..5 {
            let got = tokio::time::timeout(Duration::from_secs(10), sub.recv())
                .await
                .expect("in time")
                .expect("open")
                .expect("a commlib body decodes");
            // 0.13.1 sends the negative numbers as strings; both decode the same.
            assert_eq!(got.value, Sample { seq: i, n: -3 - i, text: "café".into() }, "{version}");
            assert_eq!(got.topic.as_str(), name.replace('.', "/"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busbar_publisher_to_python_subscribers() {
    let Some(broker) = shared_broker(BrokerKind::Mqtt).await else { return };
    for version in VERSIONS {
        let Some(py) = python(version) else { return };
        for mode in ["sub", "sub-untyped"] {
            let name = format!("{}.sensors.sonar", run_id(version));
            let mut peer = start(&py, &broker, &[mode, &name, "3"]).await;
            let conn = connect(&broker).await;
            let publisher = CommlibPublisher::<Value>::new(&conn, &name).expect("publisher");
            let probe = serde_json::json!({"seq": -1, "n": 0, "text": ""});
            peer.wait_subscribed(|| async { publisher.publish(&probe).await.expect("probe") })
                .await;
            for i in 0..3 {
                let body = serde_json::json!({"seq": i, "n": -i, "text": "é", "extra": [1]});
                publisher.publish(&body).await.expect("publish");
            }
            for i in 0..3 {
                let got = peer.next().await;
                let msg = &got["msg"];
                assert_eq!((msg["seq"].as_i64(), msg["n"].as_i64()), (Some(i), Some(-i)), "{got}");
                assert_eq!(msg["text"], "é", "{version} {mode}: {got}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_pattern_subscriber_hears_busbar_topics() {
    let Some(broker) = shared_broker(BrokerKind::Mqtt).await else { return };
    for version in VERSIONS {
        let Some(py) = python(version) else { return };
        let base = run_id(version);
        let pattern = format!("{base}.sensors.*");
        let mut peer = start(&py, &broker, &["psub", &pattern, "1"]).await;
        let conn = connect(&broker).await;
        let topic = format!("{base}.sensors.a.b");
        let publisher = CommlibPublisher::<Sample>::new(&conn, &topic).expect("publisher");
        let probe = Sample { seq: -1, n: 0, text: String::new() };
        peer.wait_subscribed(|| async { publisher.publish(&probe).await.expect("probe") }).await;
        publisher.publish(&Sample { seq: 1, n: 2, text: "x".into() }).await.expect("publish");
        let got = peer.next().await;
        // commlib's pattern subscribers report the MQTT topic, slashes and all.
        assert_eq!(got["topic"], Value::from(topic.replace('.', "/")), "{version}: {got}");
        assert_eq!(got["msg"]["seq"], 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busbar_client_calls_a_python_service_fifty_at_once() {
    let Some(broker) = shared_broker(BrokerKind::Mqtt).await else { return };
    for version in VERSIONS {
        let Some(py) = python(version) else { return };
        let name = format!("{}.add", run_id(version));
        let _peer = start(&py, &broker, &["rpc-service", &name]).await;
        let conn = connect(&broker).await;
        wait_for_service(&conn, &name).await;
        // commlib's own client cannot do this: one client, 50 callers at once.
        many_at_once(&conn, &name, version, 50).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_calls_a_busbar_service() {
    let Some(broker) = shared_broker(BrokerKind::Mqtt).await else { return };
    let conn = connect(&broker).await;
    for version in VERSIONS {
        python_calls_busbar("mqtt", &conn, &broker, version, &[]).await;
    }
}

/// Case 15: heartbeats both ways, on every broker commlib speaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_both_ways() {
    for kind in [BrokerKind::Mqtt, BrokerKind::Redis, BrokerKind::Amqp] {
        let Some(broker) = shared_broker(kind).await else { return };
        let conn = connect_to(kind, &broker).await;
        for version in VERSIONS {
            heartbeats_on(kind, &conn, &broker, version).await;
        }
    }
}

async fn heartbeats_on(kind: BrokerKind, conn: &Connection, broker: &SharedBroker, version: &str) {
    use busbar_commlib::heartbeat::{self, HeartbeatSender};
    let Some(py) = python(version) else { return };
    let scheme = scheme(kind);
    // A commlib node's heartbeats, watched from busbar: integer nanoseconds, rising, on
    // `<node>.heartbeat` as the transport spells it, under the name commlib gives the node
    // (`-` becomes `_`).
    let node = format!("py-node-{}", uuid_hex());
    let mut beats = heartbeat::watch(conn, &node).await.expect("watch");
    let _peer = start_on(scheme, &py, broker, &["heartbeats", &node]).await;
    let renamed = node.replace('-', "_");
    let topic = match kind {
        BrokerKind::Redis => format!("{renamed}.heartbeat"),
        _ => format!("{renamed}/heartbeat"),
    };
    let mut last = 0;
    for _ in 0..3 {
        let beat = tokio::time::timeout(Duration::from_secs(10), beats.recv())
            .await
            .unwrap_or_else(|_| panic!("{scheme} {version}: no heartbeat in time"))
            .expect("open")
            .expect("decodes");
        assert_eq!(beat.topic.as_str(), topic, "{scheme} {version}");
        assert!(beat.value.ts > last, "{scheme} {version}: {} after {last}", beat.value.ts);
        last = beat.value.ts;
    }
    // busbar's heartbeats, heard by an untyped commlib subscriber, under the name a commlib
    // node of that name would use.
    let ours = format!("rs-node-{}", uuid_hex());
    let name = heartbeat::heartbeat_name(&ours);
    assert_eq!(name, format!("{}.heartbeat", ours.replace('-', "_")));
    let mut peer = start_on(scheme, &py, broker, &["sub-untyped", &name, "2"]).await;
    let _sender = HeartbeatSender::spawn(conn, &ours, Duration::from_millis(200)).expect("send");
    for _ in 0..2 {
        let got = peer.next().await;
        assert!(got["msg"]["ts"].as_i64().is_some_and(|ts| ts > 0), "{scheme} {version}: {got}");
    }
}

fn scheme(kind: BrokerKind) -> &'static str {
    match kind {
        BrokerKind::Mqtt => "mqtt",
        BrokerKind::Redis => "redis",
        BrokerKind::Amqp => "amqp",
        other => panic!("commlib-py has no transport for {other:?}"),
    }
}

/// Case 16: a commlib node's `<node>.stop` control service, called from busbar by the
/// node's name as its owner wrote it (`-` and all; commlib serves it under `_`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busbar_stops_a_commlib_node() {
    let Some(broker) = shared_broker(BrokerKind::Mqtt).await else { return };
    for version in VERSIONS {
        let Some(py) = python(version) else { return };
        let node = format!("ctrl-node-{}", uuid_hex());
        let mut peer = start(&py, &broker, &["ctrl-node", &node]).await;
        let conn = connect(&broker).await;
        // `start` on a running node changes nothing (status 1): a safe probe that the control
        // services are subscribed.
        let mut answered = None;
        for _ in 0..50 {
            let probe = Duration::from_millis(300);
            if let Ok(r) = busbar_commlib::control::start_node(&conn, &node, probe).await {
                answered = Some(r);
                break;
            }
        }
        let started = answered.expect("the start service answers");
        assert_eq!(started.status, 1, "{version}: {started:?}");
        assert!(started.error.contains("transition"), "{version}: {started:?}");
        // commlib's stop handler stops the node, the stop service's own connection included,
        // before it returns its answer (0.13.1 and 0.13.2, `Node._stop_rpc_callback`), so
        // under load the answer can be lost: the node stopping is what must happen.
        match busbar_commlib::control::stop_node(&conn, &node, Duration::from_secs(5)).await {
            Ok(reply) => assert_eq!(reply.status, 0, "{version}: {reply:?}"),
            Err(e) => eprintln!("{version}: the stop service's answer was lost: {e}"),
        }
        let state = peer.next().await;
        assert_eq!(state["state"], "STOPPED", "{version}: {state}");
    }
}

/// Case 20: what commlib services tolerate, so busbar may send it: a header without
/// `timestamp`, header keys commlib does not know, unknown fields in `data`. A request
/// without `reply_to` before them leaves the service serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_services_tolerate_lean_and_extended_requests() {
    use busbar_core::{Message, QoS, SubscribeOptions, Topic, TopicFilter};
    let Some(broker) = shared_broker(BrokerKind::Mqtt).await else { return };
    for version in VERSIONS {
        let Some(py) = python(version) else { return };
        let name = format!("{}.add", run_id(version));
        let _peer = start(&py, &broker, &["rpc-service", &name]).await;
        let conn = connect(&broker).await;
        wait_for_service(&conn, &name).await;
        let service = Topic::new(name.replace('.', "/")).expect("topic");
        let send = |body: Value| {
            let m = Message::new(service.clone(), body.to_string().into_bytes())
                .with_qos(QoS::AtLeastOnce);
            conn.publish(m)
        };
        // Without reply_to first: the service must drop it and go on.
        send(serde_json::json!({"header": {}, "data": {"a": 1, "b": 1}})).await.expect("send");
        let reply = busbar_commlib::names::reply_name();
        let filter = TopicFilter::new(&reply).expect("filter");
        let mut replies = conn
            .subscribe_with(SubscribeOptions::from(filter).qos(QoS::AtLeastOnce))
            .await
            .expect("subscribe");
        let lean = serde_json::json!({
            "header": {"reply_to": reply, "trace": "t-1", "agent": "busbar"},
            "data": {"a": 40, "b": 2, "unit": "apples"},
        });
        send(lean).await.expect("send");
        let m = tokio::time::timeout(Duration::from_secs(10), replies.recv())
            .await
            .expect("a reply in time")
            .expect("open");
        let body: Value =
            serde_json::from_slice(&m.payload.to_bytes().expect("bytes")).expect("a JSON reply");
        assert_eq!(body["data"]["c"], Value::from(42), "{version}: {body}");
    }
}

/// Pub/sub both ways on a broker other than MQTT, through `conn`: a commlib publisher to a
/// busbar subscriber, then busbar to a commlib subscriber (few messages: commlib's AMQP
/// subscriber queue keeps 10).
async fn pubsub_both_ways(kind: &str, conn: &Connection, broker: &SharedBroker, version: &str) {
    let Some(py) = python(version) else { return };
    let name = format!("{}.sensors.sonar", run_id(version));
    let mut sub = CommlibSubscriber::<Sample>::new(conn, &name).await.expect("subscribe");
    let mut peer = start_on(kind, &py, broker, &["pub", &name, "3"]).await;
    peer.go().await;
    for i in 0..3 {
        let got = tokio::time::timeout(Duration::from_secs(10), sub.recv())
            .await
            .expect("in time")
            .expect("open")
            .expect("a commlib body decodes");
        assert_eq!(got.value, Sample { seq: i, n: -3 - i, text: "café".into() }, "{version}");
    }
    let name = format!("{}.sensors.sonar", run_id(version));
    let mut peer = start_on(kind, &py, broker, &["sub", &name, "3"]).await;
    let publisher = CommlibPublisher::<Sample>::new(conn, &name).expect("publisher");
    let probe = Sample { seq: -1, n: 0, text: String::new() };
    peer.wait_subscribed(|| async { publisher.publish(&probe).await.expect("probe") }).await;
    for i in 0..3 {
        let s = Sample { seq: i, n: -i, text: "é".into() };
        publisher.publish(&s).await.expect("publish");
    }
    for i in 0..3 {
        let got = peer.next().await;
        assert_eq!(got["msg"]["seq"], Value::from(i), "{kind} {version}: {got}");
        assert_eq!(got["msg"]["n"], Value::from(-i), "{kind} {version}: {got}");
    }
}

/// commlib over AMQP: `amq.topic`, the name as the routing key, bare JSON bodies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_pubsub_both_ways() {
    let Some(broker) = shared_broker(BrokerKind::Amqp).await else { return };
    let conn = Connection::new(Arc::new(
        busbar_amqp::AmqpTransport::connect(broker.url(), ConnectOptions::new())
            .await
            .expect("connect to RabbitMQ"),
    ));
    for version in VERSIONS {
        pubsub_both_ways("amqp", &conn, &broker, version).await;
    }
}

/// commlib over Redis: the name is the channel, bodies are bare JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_pubsub_both_ways() {
    let Some(broker) = shared_broker(BrokerKind::Redis).await else { return };
    let conn = Connection::new(Arc::new(
        busbar_redis::RedisTransport::connect(broker.url(), ConnectOptions::new())
            .await
            .expect("connect to Redis"),
    ));
    for version in VERSIONS {
        pubsub_both_ways("redis", &conn, &broker, version).await;
    }
}

/// commlib over Kafka (confluent-kafka): the name is the topic, bodies are bare JSON with
/// an empty key, and commlib's subscribers join the consumer group `main` reading from the
/// end. (commlib's Kafka RPC does not work in 0.13.1 or 0.13.2, so pub/sub is what a commlib
/// system runs on Kafka; 0.13.1's Kafka node hangs in `run()`, so 0.13.2 only.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_pubsub_both_ways() {
    let Some(broker) = shared_broker(BrokerKind::Kafka).await else { return };
    let conn = Connection::new(Arc::new(
        busbar_kafka::KafkaTransport::connect(broker.url(), ConnectOptions::new())
            .await
            .expect("connect to the Kafka broker"),
    ));
    // commlib 0.13.1's Kafka node never returns from `run()`.
    pubsub_both_ways("kafka", &conn, &broker, "0.13.2").await;
}

/// commlib's `unix_socket` connection parameter: busbar reaches a Redis server of the test's
/// own through its Unix socket (`redis+unix:///path`) and meets commlib nodes on the same
/// server, pub/sub both ways. (commlib itself cannot use the parameter with the redis-py it
/// installs, 8.2: both versions hand `unix_socket_path` to a `ConnectionPool` without the
/// Unix connection class, and redis-py refuses it with a TypeError; so the commlib side
/// comes over TCP.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_through_a_unix_socket_both_ways() {
    let test = "redis_through_a_unix_socket_both_ways";
    let args: Vec<std::ffi::OsString> = vec!["--unixsocket".into(), "redis.sock".into()];
    let Some(redis) = busbar_testkit::skip_if_missing(
        test,
        busbar_testkit::BrokerProcess::redis_with(args, false).await,
    ) else {
        return;
    };
    let (path, tcp) = (redis.dir().join("redis.sock").display().to_string(), redis.port());
    let conn = Connection::new(Arc::new(
        busbar_redis::RedisTransport::connect(
            &format!("redis+unix://{path}"),
            ConnectOptions::new(),
        )
        .await
        .expect("connect through the socket"),
    ));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peer/peer.py");
    let peer = |py: &Path, args: &[&str]| {
        let mut all = vec![script.display().to_string(), format!("redis:127.0.0.1:{tcp}")];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let py = py.to_owned();
        async move { Peer::start(&py, &all, &[]).await }
    };
    for version in VERSIONS {
        let Some(py) = python(version) else { return };
        let name = format!("{}.sensors.sonar", run_id(version));
        let mut sub = CommlibSubscriber::<Sample>::new(&conn, &name).await.expect("subscribe");
        let mut publisher = peer(&py, &["pub", &name, "2"]).await;
        publisher.go().await;
        for i in 0..2 {
            let got = tokio::time::timeout(Duration::from_secs(10), sub.recv())
                .await
                .unwrap_or_else(|_| panic!("{version}: nothing through the socket in time"))
                .expect("open")
                .expect("a commlib body decodes");
            assert_eq!(got.value.seq, i, "{version}");
        }
        let mut subscriber = peer(&py, &["sub", &name, "1"]).await;
        let ours = CommlibPublisher::<Sample>::new(&conn, &name).expect("publisher");
        let probe = Sample { seq: -1, n: 0, text: String::new() };
        subscriber.wait_subscribed(|| async { ours.publish(&probe).await.expect("probe") }).await;
        ours.publish(&Sample { seq: 5, n: -5, text: "é".into() }).await.expect("publish");
        let got = subscriber.next().await;
        assert_eq!(got["msg"]["seq"], 5, "{version}: {got}");
    }
}

/// Case 4, the pattern side: commlib's Redis subscribers are `PSUBSCRIBE` globs in which `*`
/// spans dots. busbar keeps exactly what such a glob matches, and a commlib pattern
/// subscriber hears busbar's channels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_patterns_both_ways() {
    let Some(broker) = shared_broker(BrokerKind::Redis).await else { return };
    let conn = connect_to(BrokerKind::Redis, &broker).await;
    for version in VERSIONS {
        let Some(py) = python(version) else { return };
        let base = run_id(version);
        let pattern = format!("{base}.sensors.*");
        let mut sub = CommlibSubscriber::<Sample>::new(&conn, &pattern).await.expect("subscribe");
        // First, channels the glob does not match; they reach Redis before the matching
        // ones, so one of them let through would be received first.
        for outside in [format!("{base}.sensorsX"), format!("{base}.other.sensors.a")] {
            let mut peer = start_on("redis", &py, &broker, &["pub", &outside, "2"]).await;
            peer.go().await;
            peer.finished().await;
        }
        let inside = format!("{base}.sensors.front.left");
        let mut peer = start_on("redis", &py, &broker, &["pub", &inside, "3"]).await;
        peer.go().await;
        for i in 0..3 {
            let got = tokio::time::timeout(Duration::from_secs(10), sub.recv())
                .await
                .expect("in time")
                .expect("open")
                .expect("a commlib body decodes");
            assert_eq!(got.topic.as_str(), inside, "{version}");
            assert_eq!(got.value.seq, i, "{version}");
        }

        let mut peer = start_on("redis", &py, &broker, &["psub", &pattern, "1"]).await;
        let publisher = CommlibPublisher::<Sample>::new(&conn, &inside).expect("publisher");
        let probe = Sample { seq: -1, n: 0, text: String::new() };
        peer.wait_subscribed(|| async { publisher.publish(&probe).await.expect("probe") }).await;
        publisher.publish(&Sample { seq: 7, n: -7, text: "é".into() }).await.expect("publish");
        let got = peer.next().await;
        assert_eq!(got["topic"], Value::from(inside.clone()), "{version}: {got}");
        assert_eq!(got["msg"]["seq"], 7, "{version}: {got}");
    }
}

/// commlib's AMQP pattern subscribers bind with `*` turned into `#`, so a trailing `*` takes
/// any number of words: a busbar commlib subscriber to `X.sensors.*` on AMQP hears a
/// commlib publisher's `X.sensors.front.left` (and not `X.sensorsX`), as commlib's own
/// pattern subscriber does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_patterns_take_every_word_after_a_trailing_star() {
    let Some(broker) = shared_broker(BrokerKind::Amqp).await else { return };
    let conn = connect_to(BrokerKind::Amqp, &broker).await;
    for version in VERSIONS {
        let Some(py) = python(version) else { return };
        let base = run_id(version);
        let pattern = format!("{base}.sensors.*");
        let mut sub = CommlibSubscriber::<Sample>::new(&conn, &pattern).await.expect("subscribe");
        // First a name the pattern does not take, sent on this connection before the peer
        // that sends the matching ones starts, so were it let through it would come first.
        let outside =
            CommlibPublisher::<Sample>::new(&conn, &format!("{base}.sensorsX")).expect("publisher");
        let probe = Sample { seq: -1, n: 0, text: String::new() };
        outside.publish(&probe).await.expect("sent");
        for inside in [format!("{base}.sensors.sonar"), format!("{base}.sensors.front.left")] {
            let mut peer = start_on("amqp", &py, &broker, &["pub", &inside, "2"]).await;
            peer.go().await;
            for i in 0..2 {
                let got = tokio::time::timeout(Duration::from_secs(10), sub.recv())
                    .await
                    .unwrap_or_else(|_| panic!("{version}: nothing from {inside} in time"))
                    .expect("open")
                    .expect("a commlib body decodes");
                // busbar's topic: the routing key's words as levels.
                assert_eq!(got.topic.as_str(), inside.replace('.', "/"), "{version}");
                assert_eq!(got.value.seq, i, "{version}");
            }
        }
    }
}

/// Case 18: commlib's compression (zlib, as both versions send it without lz4) on MQTT, in
/// every direction: the bodies on the wire are zlib streams, busbar inflates them whatever
/// its own setting, compresses when told to, and a busbar service answers compressed
/// requests compressed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_bodies_both_ways() {
    use busbar_commlib::Compression;
    let Some(broker) = shared_broker(BrokerKind::Mqtt).await else { return };
    let conn = connect(&broker).await;
    for version in VERSIONS {
        let Some(py) = python(version) else { return };
        let zlib = [("PEER_COMPRESSION", "zlib")];
        compressed_on(&conn, &broker, &py, version, &zlib, Compression::zlib(), &[0x78]).await;
    }
}

/// commlib 0.13.2 with the Python `lz4` package compresses with LZ4 frames: the same four
/// directions as above, the wire checked for the LZ4 frame magic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lz4_bodies_both_ways() {
    use busbar_commlib::Compression;
    let Some(broker) = shared_broker(BrokerKind::Mqtt).await else { return };
    let conn = connect(&broker).await;
    let Some(py) = python("0.13.2-lz4") else { return };
    let lz4 = [("PEER_COMPRESSION", "lz4")];
    let magic = [0x04, 0x22, 0x4d, 0x18];
    compressed_on(&conn, &broker, &py, "0.13.2", &lz4, Compression::Lz4, &magic).await;
}

/// Compressed bodies in four directions with a commlib peer whose environment `env` makes
/// it compress: its publisher to busbar (the wire starting with `magic`), busbar's
/// publisher compressing with `ours` to its subscriber, its client to a busbar service with
/// no setting, and a busbar client compressing with `ours` to its service.
async fn compressed_on(
    conn: &Connection,
    broker: &SharedBroker,
    py: &Path,
    version: &str,
    env: &[(&str, &str)],
    ours: busbar_commlib::Compression,
    magic: &[u8],
) {
    use busbar_core::{QoS, SubscribeOptions, TopicFilter};
    // A commlib publisher to busbar; a raw subscription beside it shows the wire.
    let name = format!("{}.sensors.sonar", run_id(version));
    let mut sub = CommlibSubscriber::<Sample>::new(conn, &name).await.expect("subscribe");
    let raw_filter = TopicFilter::new(name.replace('.', "/")).expect("filter");
    let mut raw = conn
        .subscribe_with(SubscribeOptions::from(raw_filter).qos(QoS::AtMostOnce))
        .await
        .expect("raw subscribe");
    let mut peer = start_with("mqtt", py, broker, &["pub", &name, "3"], env).await;
    peer.go().await;
    for i in 0..3 {
        let got = tokio::time::timeout(Duration::from_secs(10), sub.recv())
            .await
            .expect("in time")
            .expect("open")
            .expect("a compressed body decodes");
        assert_eq!(got.value, Sample { seq: i, n: -3 - i, text: "café".into() }, "{version}");
        let wire = raw.recv().await.expect("raw").payload.to_bytes().expect("bytes");
        assert!(wire.starts_with(magic), "{version}: not compressed as expected: {wire:?}");
    }

    // busbar compressing for a commlib subscriber built with compression.
    let name = format!("{}.sensors.sonar", run_id(version));
    let mut peer = start_with("mqtt", py, broker, &["sub", &name, "2"], env).await;
    let publisher =
        CommlibPublisher::<Sample>::new(conn, &name).expect("publisher").compression(ours);
    let probe = Sample { seq: -1, n: 0, text: String::new() };
    peer.wait_subscribed(|| async { publisher.publish(&probe).await.expect("probe") }).await;
    for i in 0..2 {
        let s = Sample { seq: i, n: -i, text: "é".into() };
        publisher.publish(&s).await.expect("publish");
    }
    for i in 0..2 {
        let got = peer.next().await;
        assert_eq!(got["msg"]["seq"], Value::from(i), "{version}: {got}");
    }

    // A commlib client with compression calls a busbar service that has no setting.
    let name = format!("{}.add", run_id(version));
    let _service =
        CommlibRpcService::spawn(conn, &name, |r: AddIn| async move { SumOut { c: r.a + r.b } })
            .await
            .expect("serve");
    let args = ["rpc-call", &name, "-7", "2"];
    let mut peer = start_with("mqtt", py, broker, &args, env).await;
    let got = peer.next().await;
    assert_eq!(got["response"]["c"], Value::from(-5), "{version}: {got}");

    // A busbar client with compression calls a commlib service built with it.
    let name = format!("{}.add", run_id(version));
    let _peer = start_with("mqtt", py, broker, &["rpc-service", &name], env).await;
    let client = CommlibRpcClient::<Add, Sum>::new(conn, &name)
        .expect("client")
        .compression(ours)
        .timeout(Duration::from_millis(300));
    let mut answered = None;
    for _ in 0..50 {
        if let Ok(sum) = client.call(&Add { a: 40, b: -2 }).await {
            answered = Some(sum.c);
            break;
        }
    }
    assert_eq!(answered, Some(38), "{version}");
}

/// Case 17: commlib's own pattern bridge from Redis to MQTT, with busbar at both ends: what
/// busbar publishes on Redis channels `<base>.sensors.*` arrives on MQTT under `robot/`, in
/// order, bodies unchanged (0.13.2) or with 0.13.1's number strings.
///
/// The peer starts the bridge's publisher itself: in both versions `PTopicBridge.run()`
/// starts only the subscriber, and every forward then fails (a commlib bug).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commlib_bridge_carries_busbar_messages_from_redis_to_mqtt() {
    let Some(redis) = shared_broker(BrokerKind::Redis).await else { return };
    let Some(mqtt) = shared_broker(BrokerKind::Mqtt).await else { return };
    let from = connect_to(BrokerKind::Redis, &redis).await;
    let to = connect(&mqtt).await;
    for version in VERSIONS {
        let Some(py) = python(version) else { return };
        let base = run_id(version);
        let mqtt_at = format!("mqtt:{}:{}", mqtt.host(), mqtt.port());
        let args = ["ptopic-bridge", &format!("{base}.sensors.*"), "robot", &mqtt_at];
        let _bridge = start_on("redis", &py, &redis, &args).await;
        let mut sub = CommlibSubscriber::<Value>::new(&to, &format!("robot.{base}.sensors.*"))
            .await
            .expect("subscribe");
        let channel = format!("{base}.sensors.x");
        let publisher = CommlibPublisher::<Value>::new(&from, &channel).expect("publisher");
        // The bridge reports itself running before its subscription is in place: probe
        // until one crosses.
        let mut crossed = false;
        for _ in 0..50 {
            publisher.publish(&serde_json::json!({"seq": -1})).await.expect("probe");
            if tokio::time::timeout(Duration::from_millis(200), sub.recv()).await.is_ok() {
                crossed = true;
                break;
            }
        }
        assert!(crossed, "{version}: nothing crossed the commlib bridge");
        let bodies: Vec<Value> = (0..5)
            .map(|i| serde_json::json!({"seq": i, "n": -i, "text": "caf\u{e9}", "nested": {"k": [i]}}))
            .collect();
        for body in &bodies {
            publisher.publish(body).await.expect("publish");
        }
        let mut got = Vec::new();
        while got.len() < bodies.len() {
            let m = tokio::time::timeout(Duration::from_secs(10), sub.recv())
                .await
                .unwrap_or_else(|_| panic!("{version}: only {} crossed", got.len()))
                .expect("open")
                .expect("decodes");
            if m.value["seq"] == -1 {
                continue; // a late probe
            }
            assert_eq!(m.topic.as_str(), format!("robot/{}", channel.replace('.', "/")));
            got.push(m.value);
        }
        if version == "0.13.1" {
            // 0.13.1 re-serializes what it bridges and so sends negative numbers as strings
            // (its make_primitives bug); busbar's tolerant decoding reads them back.
            let typed = |v: &Value| {
                busbar_commlib::body::decode_value::<Bridged>("bridged", v.clone())
                    .expect("decodes")
            };
            let got: Vec<Bridged> = got.iter().map(typed).collect();
            assert_eq!(got, bodies.iter().map(typed).collect::<Vec<_>>(), "{version}");
        } else {
            assert_eq!(got, bodies, "{version}");
        }
    }
}

#[derive(Debug, PartialEq, Deserialize)]
struct Bridged {
    seq: i64,
    n: i64,
    text: String,
    nested: BTreeMap<String, Vec<i64>>,
}

#[derive(Serialize)]
struct Goal {
    to: i64,
}

#[derive(Debug, Deserialize)]
struct Total {
    total: i64,
}

#[derive(Debug, Deserialize)]
struct At {
    at: i64,
}

/// Case 13 on MQTT: a busbar client drives a commlib action service: goal, feedback in
/// order, the result after the terminal status, and cancel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busbar_drives_a_python_action() {
    let Some(broker) = shared_broker(BrokerKind::Mqtt).await else { return };
    let conn = connect(&broker).await;
    for version in VERSIONS {
        drive_python_action("mqtt", &conn, &broker, version).await;
    }
}

/// Case 13 on Redis: the action's three RPCs on lists, status and feedback on channels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busbar_drives_a_python_action_on_redis() {
    let Some(broker) = shared_broker(BrokerKind::Redis).await else { return };
    let conn = connect_to(BrokerKind::Redis, &broker).await;
    for version in VERSIONS {
        drive_python_action("redis", &conn, &broker, version).await;
    }
}

/// Actions on AMQP, busbar the client: commlib 0.13.2's AMQP action service (0.13.1's AMQP
/// services never start, see `amqp_rpc_both_ways`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busbar_drives_a_python_action_on_amqp() {
    let Some(broker) = shared_broker(BrokerKind::Amqp).await else { return };
    let conn = connect_to(BrokerKind::Amqp, &broker).await;
    drive_python_action("amqp", &conn, &broker, "0.13.2").await;
}

/// Actions on AMQP, busbar the service: commlib's AMQP action clients of both versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_drives_a_busbar_action_on_amqp() {
    let Some(broker) = shared_broker(BrokerKind::Amqp).await else { return };
    let conn = connect_to(BrokerKind::Amqp, &broker).await;
    for version in VERSIONS {
        python_drives_busbar_action("amqp", &conn, &broker, version).await;
    }
}

async fn drive_python_action(kind: &str, conn: &Connection, broker: &SharedBroker, version: &str) {
    use busbar_commlib::action::{CommlibActionClient, GoalStatus};
    let Some(py) = python(version) else { return };
    let name = format!("{}.count", run_id(version));
    let _peer = start_on(kind, &py, broker, &["action-service", &name]).await;
    let client = CommlibActionClient::<Goal, Total, At>::new(conn, &name);
    let mut goal = if kind == "redis" {
        // A list keeps the goal request until the service reads it: one send is enough.
        client.send_goal(&Goal { to: 4 }).await.expect("the action service took the goal")
    } else {
        // On MQTT commlib reports the service running before its subscriptions are in
        // place: send the goal with a short deadline until the service takes it (a goal that
        // was not received started nothing).
        let probing = CommlibActionClient::<Goal, Total, At>::new(conn, &name)
            .timeout(Duration::from_millis(500));
        let mut sent = None;
        for _ in 0..30 {
            if let Ok(g) = probing.send_goal(&Goal { to: 4 }).await {
                sent = Some(g);
                break;
            }
        }
        sent.expect("the action service took the goal")
    };
    assert!(goal.goal_id.len() == 32 && goal.goal_id.chars().all(|c| c.is_ascii_hexdigit()));
    for i in 1..=4 {
        let f = tokio::time::timeout(Duration::from_secs(10), goal.next_feedback())
            .await
            .expect("feedback in time")
            .expect("open")
            .expect("feedback decodes");
        assert_eq!(f.at, i, "{kind} {version}");
    }
    let (status, result) = goal.result(Duration::from_secs(10)).await.expect("a result");
    assert_eq!((status, result.total), (GoalStatus::Succeeded, 10), "{kind} {version}");

    // Cancel: 0.13.2 cancels; 0.13.1's cancel service fails (a known commlib bug: its cancel
    // response lacks a required field), and the goal runs to its end.
    let mut goal = client.send_goal(&Goal { to: 30 }).await.expect("second goal");
    goal.next_feedback().await.expect("open").expect("feedback");
    let cancelled = goal.cancel().await.unwrap_or(false);
    let (status, result) = goal.result(Duration::from_secs(10)).await.expect("a result");
    if version == "0.13.2" {
        assert!(cancelled, "{kind}: 0.13.2 refused the cancel");
        assert_eq!(status, GoalStatus::Canceled, "{kind}");
        assert!(result.total < 465, "{kind}: cancelled, yet counted to the end");
    } else {
        assert!(!cancelled, "{kind}: 0.13.1 cancels after all: update the note on its bug");
        assert_eq!((status, result.total), (GoalStatus::Succeeded, 465), "{kind}");
    }
}

#[derive(Deserialize)]
struct CountTo {
    to: i64,
}

#[derive(Serialize)]
struct Counted {
    total: i64,
}

#[derive(Serialize)]
struct Step {
    at: i64,
}

/// Case 14: a commlib action client drives a busbar action service: feedback, the result
/// (the terminal status goes out only once it is stored), and cancel.
///
/// On MQTT commlib's action client subscribes to status and feedback on two connections of
/// its own and reports itself running before either subscription is in place; a client that
/// misses the terminal status never asks for the result. The peer therefore waits for the
/// broker's SUBACKs of both before it reports READY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_drives_a_busbar_action() {
    let Some(broker) = shared_broker(BrokerKind::Mqtt).await else { return };
    let conn = connect(&broker).await;
    for version in VERSIONS {
        python_drives_busbar_action("mqtt", &conn, &broker, version).await;
    }
}

/// Case 14 on Redis, where status and feedback are channels and the RPCs lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_drives_a_busbar_action_on_redis() {
    let Some(broker) = shared_broker(BrokerKind::Redis).await else { return };
    let conn = connect_to(BrokerKind::Redis, &broker).await;
    for version in VERSIONS {
        python_drives_busbar_action("redis", &conn, &broker, version).await;
    }
}

async fn python_drives_busbar_action(
    kind: &str,
    conn: &Connection,
    broker: &SharedBroker,
    version: &str,
) {
    use busbar_commlib::{CommlibActionService, GoalContext};
    let Some(py) = python(version) else { return };
    let name = format!("{}.count", run_id(version));
    // commlib reports its client running before its subscriptions are in place, and a
    // client that misses the terminal status never asks for the result. So each goal first
    // sends probe feedback (`at` 0) until the test has seen one reach the client (or the
    // client cancels), then counts to `to`, a step per 50 ms, stopping early when cancelled.
    let heard = Arc::new(tokio::sync::Notify::new());
    let probe_heard = heard.clone();
    let _service = CommlibActionService::spawn(
        conn,
        &name,
        move |goal: CountTo, mut ctx: GoalContext<Step>| {
            let heard = probe_heard.clone();
            async move {
                let fail = |e: busbar_commlib::CommlibError| e.to_string();
                loop {
                    ctx.feedback(&Step { at: 0 }).await.map_err(fail)?;
                    tokio::select! {
                        _ = heard.notified() => break,
                        _ = ctx.cancelled() => return Ok(Counted { total: 0 }),
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    }
                }
                let mut total = 0;
                for at in 1..=goal.to {
                    total += at;
                    ctx.feedback(&Step { at }).await.map_err(fail)?;
                    tokio::select! {
                        _ = ctx.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    }
                }
                Ok::<_, String>(Counted { total })
            }
        },
    )
    .await
    .expect("serve the action");

    let mut peer = start_on(kind, &py, broker, &["action-client", &name, "4"]).await;
    peer.go().await;
    // Feedback may be printed before the goal's reply: read everything until both are in.
    let (mut goal, mut result) = (None, None);
    let mut feedback = Vec::new();
    while goal.is_none() || result.is_none() {
        let line = peer.next().await;
        match line["feedback"].as_i64() {
            Some(0) => heard.notify_one(),
            Some(at) => feedback.push(at),
            None if line.get("goal").is_some() => goal = Some(line),
            None if line.get("result").is_some() => result = Some(line),
            None => {}
        }
    }
    let (goal, result) = (goal.unwrap_or_default(), result.unwrap_or_default());
    assert_eq!(goal["goal"]["status"], 1, "{kind} {version}: {goal}");
    let id = goal["goal"]["goal_id"].as_str().unwrap_or_default().to_owned();
    assert!(id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
    // The result is there at the terminal status: commlib 0.13.1 asks for it exactly once.
    assert_eq!(result["result"]["total"], 10, "{kind} {version}: {result}");
    assert_eq!(feedback, [1, 2, 3, 4], "{kind} {version}");

    // Cancel after the first real feedback (the probes done, the client's subscriptions
    // work): the goal ends CANCELED with what it had counted.
    let mut peer = start_on(kind, &py, broker, &["action-client", &name, "100", "cancel"]).await;
    peer.go().await;
    let mut cancel = None;
    let result = loop {
        let line = peer.next().await;
        if line["feedback"].as_i64() == Some(0) {
            heard.notify_one();
        } else if line.get("cancel").is_some() {
            cancel = Some(line);
        } else if line.get("result").is_some() {
            break line;
        }
    };
    if let Some(cancel) = cancel.filter(|_| version == "0.13.2") {
        assert_eq!(cancel["cancel"]["status"], 1, "{kind} {version}: {cancel}");
    }
    let total = result["result"]["total"].as_i64().unwrap_or(-1);
    assert!((1..5050).contains(&total), "{kind} {version}: cancelled at {total}: {result}");
}
