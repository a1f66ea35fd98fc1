//! The machine's RabbitMQ application stopped and started again (`rabbitmqctl stop_app` /
//! `start_app`) under a live connection.
//!
//! This is the only test in its binary, so no other test of this crate runs during the
//! outage (cargo runs test binaries one after another). A guard starts the application
//! again however the test ends.

use std::sync::Arc;
use std::time::Duration;

use busbar_amqp::AmqpTransport;
use busbar_core::error::RequestErrorKind;
use busbar_core::patterns::rpc::RpcServer;
use busbar_core::patterns::{RpcClient, RpcError};
use busbar_core::transport::ConnectOptions;
use busbar_core::{Connection, ConnectionEvent, Message, Topic};
use busbar_testkit::next_event_within;
use busbar_testkit::{BrokerKind, TestkitError, shared_broker, skip_if_missing};

fn rabbitmqctl(args: &[&str]) -> bool {
    std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Starts the RabbitMQ application again when dropped, even if the test panicked.
struct StartAppGuard;

impl Drop for StartAppGuard {
    fn drop(&mut self) {
        if !rabbitmqctl(&["start_app"]) {
            eprintln!("WARNING: rabbitmqctl start_app failed; start RabbitMQ by hand");
        }
        let _ = rabbitmqctl(&["await_startup"]);
    }
}

/// After the broker restarts, the connection comes back by itself: subscriptions (private
/// and queue group) are declared, bound and consumed again, RPC servers answer again, and a
/// call made during the outage ends with a typed error within its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_resumes_after_the_broker_restarts() {
    let test = "everything_resumes_after_the_broker_restarts";
    let Some(broker) = shared_broker(BrokerKind::Amqp).await else { return };
    let ctl = std::process::Command::new("rabbitmqctl").arg("help").output();
    let Some(_) =
        skip_if_missing(test, ctl.map_err(|_| TestkitError::BinaryMissing { name: "rabbitmqctl" }))
    else {
        return;
    };
    // Long enough for a restart of the Erlang application.
    let url = format!("{}?reconnect_wait=60", broker.url());
    let conn = |id: &str| {
        let url = url.clone();
        let id = id.to_owned();
        async move {
            Connection::new(Arc::new(
                AmqpTransport::connect(&url, ConnectOptions::new().client_id(id))
                    .await
                    .expect("connect"),
            ))
        }
    };
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let sub_conn = conn(&format!("restart-sub-{tag}")).await;
    let pub_conn = conn(&format!("restart-pub-{tag}")).await;
    let server_conn = conn(&format!("restart-srv-{tag}")).await;
    let topic = format!("restart/{tag}/a");
    let mut sub = sub_conn.subscribe(&format!("restart/{tag}/+")).await.expect("subscribe");
    let mut group = sub_conn
        .subscribe_with(
            busbar_core::SubscribeOptions::from(
                busbar_core::TopicFilter::new(format!("restart/{tag}/+")).expect("filter"),
            )
            .queue_group("g"),
        )
        .await
        .expect("group");
    let _server =
        RpcServer::spawn(&server_conn, &format!("restart/{tag}/svc"), |n: u32| async move {
            Ok::<_, RpcError>(n + 1)
        })
        .await
        .expect("server");
    let client = RpcClient::<u32, u32>::new(&pub_conn, &format!("restart/{tag}/svc"))
        .expect("client")
        .timeout(Duration::from_millis(500));
    assert_eq!(client.call(1).await.expect("call before"), 2);
    let (mut sub_events, mut pub_events, mut srv_events) =
        (sub_conn.events(), pub_conn.events(), server_conn.events());

    let guard = StartAppGuard;
    assert!(rabbitmqctl(&["stop_app"]), "rabbitmqctl stop_app failed");
    next_event_within(&mut sub_events, Duration::from_secs(60), |e| {
        matches!(e, ConnectionEvent::Disconnected { .. })
    })
    .await;
    next_event_within(&mut pub_events, Duration::from_secs(60), |e| {
        matches!(e, ConnectionEvent::Disconnected { .. })
    })
    .await;
    // During the outage a call ends with a typed error within its deadline.
    let started = tokio::time::Instant::now();
    let err = client.call(5).await.expect_err("a call with the broker down");
    assert!(
        matches!(err.kind(), RequestErrorKind::TimedOut | RequestErrorKind::NotConnected),
        "wrong error during the outage: {err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    drop(guard); // start_app, and wait for the broker to be up.

    next_event_within(&mut sub_events, Duration::from_secs(60), |e| {
        matches!(e, ConnectionEvent::Reconnected { .. })
    })
    .await;
    next_event_within(&mut pub_events, Duration::from_secs(60), |e| {
        matches!(e, ConnectionEvent::Reconnected { .. })
    })
    .await;
    next_event_within(&mut srv_events, Duration::from_secs(60), |e| {
        matches!(e, ConnectionEvent::Reconnected { .. })
    })
    .await;
    pub_conn
        .publish(Message::new(Topic::new(&topic).expect("topic"), &b"after"[..]))
        .await
        .expect("publish after the restart");
    for s in [&mut sub, &mut group] {
        let m = tokio::time::timeout(Duration::from_secs(10), s.recv())
            .await
            .expect("a message after the restart")
            .expect("the subscription survived");
        assert_eq!(m.payload.to_bytes().expect("bytes").as_ref(), b"after");
    }
    let client = client.timeout(Duration::from_secs(5));
    assert_eq!(client.call(10).await.expect("a call after the restart"), 11);
}
