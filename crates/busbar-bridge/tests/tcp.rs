//! The TCP bridge against real loopback servers: long transfers both ways at once,
//! half-closes, servers that speak first, many callers, an unreachable target, shutdown.

use std::time::Duration;

use busbar_bridge::{TcpBridge, TcpBridgeOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const DEADLINE: Duration = Duration::from_secs(20);

/// A pattern that shows a lost, duplicated or reordered byte.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(31).wrapping_add(u32::from(seed)) as u8).collect()
}

/// A server that reads everything its caller sends until the caller half-closes, then
/// answers with the length it read and `reply` after it, and closes.
async fn counting_server(reply: Vec<u8>) -> (String, tokio::task::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.expect("read");
        s.write_all(&(got.len() as u64).to_be_bytes()).await.expect("write");
        s.write_all(&reply).await.expect("write");
        s.shutdown().await.expect("shutdown");
        got
    });
    (addr, task)
}

#[tokio::test]
async fn long_transfers_cross_both_ways_and_half_closes_are_passed_on() {
    let sent = pattern(3 * 1024 * 1024 + 17, 1);
    let reply = pattern(2 * 1024 * 1024 + 5, 2);
    let (server, received) = counting_server(reply.clone()).await;
    let bridge =
        TcpBridge::bind("127.0.0.1:0", &server, TcpBridgeOptions::default()).await.expect("bridge");

    let caller = TcpStream::connect(bridge.local_addr()).await.expect("connect");
    let (mut rx, mut tx) = caller.into_split();
    let writer = {
        let sent = sent.clone();
        tokio::spawn(async move {
            tx.write_all(&sent).await.expect("send");
            // The end of the request: only a half-close, the answer is still to come.
            tx.shutdown().await.expect("half-close");
        })
    };
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, rx.read_to_end(&mut answer))
        .await
        .expect("the answer in time")
        .expect("read");
    writer.await.expect("writer");

    let got = received.await.expect("server");
    assert!(got == sent, "the server read {} bytes, not the {} sent", got.len(), sent.len());
    assert_eq!(&answer[..8], &(sent.len() as u64).to_be_bytes());
    assert!(answer[8..] == reply[..], "the caller read {} bytes of answer", answer.len() - 8);

    // Counted once the tunnel has closed.
    let stats = wait_for(&bridge, |s| s.open == 0 && s.bytes_to_caller > 0).await;
    assert_eq!(stats.accepted, 1);
    assert_eq!(stats.failed, 0);
    assert_eq!(stats.bytes_to_target, sent.len() as u64);
    assert_eq!(stats.bytes_to_caller, answer.len() as u64);
}

#[tokio::test]
async fn a_server_that_speaks_first_is_heard_and_the_stream_stays_open() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server = listener.local_addr().expect("addr").to_string();
    // A greeting first, then an echo of each line until the caller leaves.
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        s.write_all(b"220 ready\n").await.expect("greet");
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => s.write_all(&buf[..n]).await.expect("echo"),
            }
        }
    });
    let bridge =
        TcpBridge::bind("127.0.0.1:0", &server, TcpBridgeOptions::default()).await.expect("bridge");
    let mut caller = TcpStream::connect(bridge.local_addr()).await.expect("connect");
    let mut greeting = [0u8; 10];
    tokio::time::timeout(DEADLINE, caller.read_exact(&mut greeting))
        .await
        .expect("in time")
        .expect("greeting");
    assert_eq!(&greeting, b"220 ready\n");
    // A conversation of many turns over the one tunnel.
    for i in 0..50u32 {
        let line = format!("turn {i}\n");
        caller.write_all(line.as_bytes()).await.expect("send");
        let mut back = vec![0u8; line.len()];
        tokio::time::timeout(DEADLINE, caller.read_exact(&mut back))
            .await
            .expect("in time")
            .expect("echo");
        assert_eq!(back, line.as_bytes());
    }
    assert_eq!(bridge.stats().open, 1);
}

#[tokio::test]
async fn many_callers_at_once_each_get_their_own_tunnel() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server = listener.local_addr().expect("addr").to_string();
    // How many tunnels reach the server at once, at most.
    let open = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let most = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (open_count, most_seen) = (open.clone(), most.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let now = open_count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            most_seen.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
            let open_count = open_count.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                if s.read_to_end(&mut got).await.is_ok() {
                    got.reverse();
                    let _ = s.write_all(&got).await;
                }
                // Counted down before the close: the bridge cannot free the slot (and let
                // another caller through) before this one stops counting.
                open_count.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                drop(s);
            });
        }
    });
    // Fewer slots than callers: the rest wait their turn, none is refused.
    let options = TcpBridgeOptions { max_connections: 4, ..TcpBridgeOptions::default() };
    let bridge = TcpBridge::bind("127.0.0.1:0", &server, options).await.expect("bridge");
    let addr = bridge.local_addr();
    let mut callers = tokio::task::JoinSet::new();
    for i in 0..20u8 {
        callers.spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            let sent = pattern(64 * 1024 + usize::from(i), i);
            s.write_all(&sent).await.expect("send");
            s.shutdown().await.expect("half-close");
            let mut back = Vec::new();
            s.read_to_end(&mut back).await.expect("read");
            back.reverse();
            assert!(back == sent, "caller {i} got {} bytes back", back.len());
        });
    }
    tokio::time::timeout(DEADLINE, async {
        while let Some(done) = callers.join_next().await {
            done.expect("a caller");
        }
    })
    .await
    .expect("every caller done in time");
    let stats = wait_for(&bridge, |s| s.open == 0).await;
    assert_eq!(stats.accepted, 20);
    assert_eq!(stats.failed, 0);
    let most = most.load(std::sync::atomic::Ordering::SeqCst);
    assert!((1..=4).contains(&most), "{most} tunnels at once, over the bound of 4");
}

#[tokio::test]
async fn an_unreachable_target_disconnects_the_caller_and_is_counted() {
    // A port that was free a moment ago: nothing listens there.
    let gone = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let target = gone.local_addr().expect("addr").to_string();
    drop(gone);
    let bridge =
        TcpBridge::bind("127.0.0.1:0", &target, TcpBridgeOptions::default()).await.expect("bridge");
    let mut caller = TcpStream::connect(bridge.local_addr()).await.expect("connect");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(DEADLINE, caller.read(&mut buf)).await.expect("in time");
    assert!(matches!(read, Ok(0) | Err(_)), "the caller is disconnected: {read:?}");
    let stats = wait_for(&bridge, |s| s.failed == 1).await;
    assert_eq!(stats.accepted, 1);

    // The bridge goes on: once something listens there, callers get through.
    let listener = TcpListener::bind(&target).await.expect("rebind the target's port");
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        s.write_all(b"hello").await.expect("write");
    });
    let mut caller = TcpStream::connect(bridge.local_addr()).await.expect("connect");
    let mut hello = Vec::new();
    tokio::time::timeout(DEADLINE, caller.read_to_end(&mut hello))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(hello, b"hello");
}

#[tokio::test]
async fn shutdown_closes_open_tunnels_and_stops_listening() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server = listener.local_addr().expect("addr").to_string();
    let (held_tx, held_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.expect("accept");
        // Keeps the server side open; only the bridge can end this tunnel.
        let _ = held_tx.send(());
        let _keep = s;
        std::future::pending::<()>().await;
    });
    let bridge =
        TcpBridge::bind("127.0.0.1:0", &server, TcpBridgeOptions::default()).await.expect("bridge");
    let addr = bridge.local_addr();
    let mut caller = TcpStream::connect(addr).await.expect("connect");
    held_rx.await.expect("the tunnel reached the server");
    bridge.shutdown().await;
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(DEADLINE, caller.read(&mut buf)).await.expect("in time");
    assert!(matches!(read, Ok(0) | Err(_)), "the tunnel is closed: {read:?}");
    assert!(TcpStream::connect(addr).await.is_err(), "nothing listens any more");
}

#[tokio::test]
async fn bad_targets_are_refused_with_a_reason() {
    for (target, reason) in
        [("127.0.0.1", "host:port"), ("127.0.0.1:mqtt", "port number"), (":1883", "no host")]
    {
        let err = TcpBridge::bind("127.0.0.1:0", target, TcpBridgeOptions::default())
            .await
            .expect_err(target)
            .to_string();
        assert!(err.contains(reason), "{target}: {err}");
    }
    let err = TcpBridge::bind("127.0.0.1:99999", "127.0.0.1:1", TcpBridgeOptions::default())
        .await
        .expect_err("a bad listen address")
        .to_string();
    assert!(err.contains("cannot listen"), "{err}");
}

/// Waits (by polling the counters, which have no event of their own) until `done` holds.
async fn wait_for(
    bridge: &TcpBridge,
    done: impl Fn(&busbar_bridge::TcpBridgeStats) -> bool,
) -> busbar_bridge::TcpBridgeStats {
    let start = tokio::time::Instant::now();
    loop {
        let stats = bridge.stats();
        if done(&stats) {
            return stats;
        }
        assert!(start.elapsed() < DEADLINE, "counters stuck at {stats:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Callers that connect and then say nothing once held every tunnel slot for good: with
/// one slot, a silent caller is closed after the idle timeout and the next caller gets
/// through; a tunnel in use is not closed however long it lasts.
#[tokio::test]
async fn silent_callers_are_closed_after_the_idle_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                // An echo, line by line.
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let idle = Duration::from_millis(300);
    let options = TcpBridgeOptions {
        max_connections: 1,
        idle_timeout: Some(idle),
        ..TcpBridgeOptions::default()
    };
    let bridge = TcpBridge::bind("127.0.0.1:0", &server, options).await.expect("bridge");
    let addr = bridge.local_addr();

    // A busy caller keeps its tunnel past several idle timeouts.
    let mut busy = TcpStream::connect(addr).await.expect("connect");
    for i in 0..8u8 {
        busy.write_all(&[i]).await.expect("send");
        let mut back = [0u8; 1];
        tokio::time::timeout(DEADLINE, busy.read_exact(&mut back))
            .await
            .expect("in time")
            .expect("echo");
        assert_eq!(back[0], i);
        tokio::time::sleep(idle / 3).await;
    }
    drop(busy);
    wait_for(&bridge, |s| s.open == 0).await;
    assert_eq!(bridge.stats().idle_closed, 0, "a busy tunnel was closed as idle");

    // A silent caller takes the one slot, and is closed once idle.
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(DEADLINE, silent.read(&mut buf)).await.expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "the silent caller is closed: {read:?}");
    // The slot is free again.
    let mut next = TcpStream::connect(addr).await.expect("connect");
    next.write_all(b"x").await.expect("send");
    tokio::time::timeout(DEADLINE, next.read_exact(&mut buf))
        .await
        .expect("in time")
        .expect("echo");
    assert_eq!(&buf, b"x");
    assert_eq!(bridge.stats().idle_closed, 1);
}
