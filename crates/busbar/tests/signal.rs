//! `run_until_signal` stops the node gracefully on SIGTERM. Its own test binary: it sends a
//! signal to this process.

#![cfg(unix)]

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_node() {
    // Keep a SIGTERM listener of our own so no signal can take the process down.
    let _guard =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("listen");
    let node = busbar::node("signal")
        .url("mem://signal-test")
        .heartbeat(None)
        .start()
        .await
        .expect("start");
    let run = tokio::spawn(node.run_until_signal());
    // A signal only reaches listeners registered before it, so repeat it until the node
    // has stopped (each repeat is harmless).
    let pid = std::process::id().to_string();
    for _ in 0..100 {
        if run.is_finished() {
            break;
        }
        let status =
            std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        assert!(status.success());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("stopped in time")
        .expect("join")
        .expect("stop");
    assert_eq!(report.aborted, 0);
}
