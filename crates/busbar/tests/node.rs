//! Nodes: graceful stop drains work within its bound, heartbeats announce up and down.

use std::sync::Arc;
use std::time::Duration;

use busbar::error::{ConnectErrorKind, GoalErrorKind};
use busbar::heartbeat::DownReason;
use busbar::{
    ActionClient, ActionError, Error, GoalContext, LivenessEvent, LivenessMonitor, RpcClient,
    RpcError,
};
use tokio::sync::Notify;

fn bus(name: &str) -> String {
    format!("mem://node-test-{name}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_lets_a_call_in_flight_finish() {
    let url = bus("drain");
    let node = busbar::node("server").url(&url).heartbeat(None).start().await.expect("start");
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let (s, r) = (started.clone(), release.clone());
    node.serve_rpc("slow/echo", move |n: u32| {
        let (s, r) = (s.clone(), r.clone());
        async move {
            s.notify_one();
            r.notified().await;
            Ok::<_, RpcError>(n)
        }
    })
    .await
    .expect("serve");
    let client_conn = busbar::connect(&url).await.expect("client");
    let client = RpcClient::<u32, u32>::new(&client_conn, "slow/echo").expect("client");
    let call = tokio::spawn(async move { client.call(7).await });
    started.notified().await;
    let bus = busbar::mem::MemConnector::bus_for(&url).expect("bus");
    let serving = bus.subscription_count();
    let stopping = tokio::spawn(node.stop());
    // Release the handler only once the server has stopped taking requests (its subscription
    // is gone), so the call is really drained rather than finished before the stop.
    tokio::time::timeout(Duration::from_secs(5), async {
        while bus.subscription_count() >= serving {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("server unsubscribed");
    release.notify_one();
    let report = stopping.await.expect("join").expect("stop");
    assert_eq!((report.completed, report.aborted), (1, 0));
    assert_eq!(call.await.expect("join").expect("reply"), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_aborts_work_beyond_the_bound_and_tells_goal_clients() {
    let url = bus("abort");
    let node = busbar::node("server")
        .url(&url)
        .heartbeat(None)
        .drain_timeout(Duration::from_millis(100))
        .start()
        .await
        .expect("start");
    node.serve_action("forever", |_: u32, ctx: Arc<GoalContext<u32>>| async move {
        ctx.feedback(1).await.map_err(|e| RpcError::internal(e.to_string()))?;
        std::future::pending::<Result<u32, ActionError>>().await
    })
    .await
    .expect("serve");
    let client_conn = busbar::connect(&url).await.expect("client");
    let client = ActionClient::<u32, u32, u32>::new(&client_conn, "forever").await.expect("client");
    let mut goal = client.send_goal(1).await.expect("accepted");
    assert_eq!(goal.feedback().await, Some(1));
    let report = node.stop().await.expect("stop");
    assert_eq!(report.aborted, 1);
    let err = goal.result().await.expect_err("the server stopped");
    assert_eq!(err.kind(), GoalErrorKind::Aborted, "{err}");
    assert_eq!(err.remote_error().map(|e| e.code.as_str()), Some(RpcError::UNAVAILABLE), "{err}");
}

async fn next_about(monitor: &mut LivenessMonitor, node: &str) -> LivenessEvent {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(5), monitor.next())
            .await
            .expect("liveness event in time")
            .expect("monitor open");
        match &ev {
            LivenessEvent::Up { node: n } | LivenessEvent::Down { node: n, .. } if n == node => {
                return ev;
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_announce_start_stop_and_crash() {
    let url = bus("liveness");
    let watcher = busbar::connect(&url).await.expect("watcher");
    let mut monitor = LivenessMonitor::spawn(&watcher, 3).await.expect("monitor");
    let a = busbar::node("a")
        .url(&url)
        .heartbeat(Some(Duration::from_millis(20)))
        .start()
        .await
        .expect("a");
    assert_eq!(next_about(&mut monitor, "a").await, LivenessEvent::Up { node: "a".into() });
    a.stop().await.expect("stop");
    assert_eq!(
        next_about(&mut monitor, "a").await,
        LivenessEvent::Down { node: "a".into(), reason: DownReason::Stopped }
    );
    let b = busbar::node("b")
        .url(&url)
        .heartbeat(Some(Duration::from_millis(20)))
        .start()
        .await
        .expect("b");
    assert_eq!(next_about(&mut monitor, "b").await, LivenessEvent::Up { node: "b".into() });
    let bus = busbar::mem::MemConnector::bus_for(&url).expect("bus");
    assert!(bus.disconnect(b.connection().client_id()));
    assert_eq!(
        next_about(&mut monitor, "b").await,
        LivenessEvent::Down { node: "b".into(), reason: DownReason::LastWill }
    );
}

#[tokio::test]
async fn bad_node_names_are_refused() {
    let err = busbar::node("a/b").url(bus("names")).start().await.err().expect("refused");
    assert!(err.to_string().contains("single topic level"), "{err}");
    let err = busbar::node("a").url("nosuch://x").start().await.err().expect("refused");
    assert!(
        matches!(&err, Error::Connect(e) if e.kind() == ConnectErrorKind::UnknownScheme),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_node_goes_down_by_its_last_will_not_as_stopped() {
    let url = bus("dropped");
    let watcher = busbar::connect(&url).await.expect("watcher");
    let mut monitor = LivenessMonitor::spawn(&watcher, 100).await.expect("monitor");
    let node = busbar::node("c")
        .url(&url)
        .heartbeat(Some(Duration::from_millis(20)))
        .start()
        .await
        .expect("c");
    assert_eq!(next_about(&mut monitor, "c").await, LivenessEvent::Up { node: "c".into() });
    drop(node);
    assert_eq!(
        next_about(&mut monitor, "c").await,
        LivenessEvent::Down { node: "c".into(), reason: DownReason::LastWill }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_cannot_speak_for_another_node() {
    use busbar::heartbeat::{Heartbeat, NodeState, heartbeat_topic};
    let url = bus("spoof");
    let conn = busbar::connect(&url).await.expect("conn");
    let mut monitor = LivenessMonitor::spawn(&conn, 3).await.expect("monitor");
    let beat = |node: &str, topic_of: &str| -> (busbar::Publisher<Heartbeat>, Heartbeat) {
        let topic = heartbeat_topic(topic_of).expect("topic");
        let hb = Heartbeat {
            node: node.into(),
            seq: 1,
            interval_ms: 1000,
            state: NodeState::Up,
            reason: None,
            server: None,
        };
        (busbar::Publisher::new(&conn, topic.as_str()).expect("publisher"), hb)
    };
    let (p, hb) = beat("victim", "liar");
    p.publish(hb).await.expect("publish");
    let (p, hb) = beat("honest", "honest");
    p.publish(hb).await.expect("publish");
    let first = tokio::time::timeout(Duration::from_secs(5), monitor.next())
        .await
        .expect("event")
        .expect("open");
    assert_eq!(first, LivenessEvent::Up { node: "honest".into() }, "the spoofed heartbeat counted");
}

#[tokio::test]
async fn a_zero_heartbeat_interval_is_refused_before_connecting() {
    let err = busbar::node("z")
        .url(bus("zero"))
        .heartbeat(Some(Duration::ZERO))
        .start()
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("heartbeat interval"), "{err}");
}
