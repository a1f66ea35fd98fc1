//! A Redis server reached through its Unix socket (`redis+unix:///path`, commlib's
//! `unix_socket` connection parameter): a server of the test's own listening on a socket in
//! its scratch directory, with a password.

use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use busbar_core::error::ConnectErrorKind;
use busbar_core::transport::{ConnectOptions, ConnectionEvent};
use busbar_core::{Connection, Message, Topic};
use busbar_redis::RedisTransport;
use busbar_testkit::{BrokerProcess, skip_if_missing};

/// A redis-server with a Unix socket `redis.sock` in its directory (it changes into that
/// directory before it makes the socket) and the password `sock-secret`.
async fn server_with_socket(test: &str) -> Option<(BrokerProcess, String)> {
    let args: Vec<OsString> = ["--unixsocket", "redis.sock", "--unixsocketperm", "700"]
        .into_iter()
        .chain(["--requirepass", "sock-secret"])
        .map(OsString::from)
        .collect();
    let redis = skip_if_missing(test, BrokerProcess::redis_with(args, false).await)?;
    let path = redis.dir().join("redis.sock").display().to_string();
    Some((redis, path))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_socket_carries_messages_and_names_itself() {
    let test = "a_unix_socket_carries_messages_and_names_itself";
    let Some((_redis, path)) = server_with_socket(test).await else { return };
    let url = format!("redis+unix://:sock-secret@{path}?db=2");
    let transport = RedisTransport::connect(&url, ConnectOptions::new()).await.expect("connect");
    let conn = Connection::new(Arc::new(transport));
    assert_eq!(conn.server().as_deref(), Some(format!("unix:{path}").as_str()));
    let mut events = conn.events();
    let mut sub = conn.subscribe("plant/#").await.expect("subscribe");
    for i in 0..3 {
        let topic = Topic::new(format!("plant/line/{i}")).expect("topic");
        conn.publish(Message::new(topic, i.to_string())).await.expect("publish");
    }
    for i in 0..3 {
        let m = tokio::time::timeout(Duration::from_secs(10), sub.recv())
            .await
            .expect("in time")
            .expect("open");
        assert_eq!(m.topic.as_str(), format!("plant/line/{i}"));
        assert_eq!(m.payload.to_bytes().expect("bytes").as_ref(), i.to_string().as_bytes());
    }
    // Named queues are lists in the database the URL chose.
    let queue = Topic::named_queue("jobs").expect("named queue");
    let mut jobs = conn.subscribe(queue.as_str()).await.expect("queue");
    conn.publish(Message::new(queue, "job")).await.expect("job");
    let job = tokio::time::timeout(Duration::from_secs(10), jobs.recv()).await.expect("in time");
    assert_eq!(job.expect("open").payload.to_bytes().expect("bytes").as_ref(), b"job");
    conn.close().await.expect("close");
    busbar_testkit::next_event(&mut events, |e| matches!(e, ConnectionEvent::Closed)).await;

    // A wrong password is refused, and the message does not repeat it.
    let url = format!("redis+unix://:not-it@{path}");
    let err = RedisTransport::connect(&url, ConnectOptions::new()).await.err().expect("refused");
    assert_eq!(err.kind(), ConnectErrorKind::Refused, "{err}");
    assert!(!err.to_string().contains("not-it"), "the password leaked: {err}");
    // No socket there: unreachable, naming the path.
    let url = format!("redis+unix://{path}.gone?connect_timeout=2s");
    let err = RedisTransport::connect(&url, ConnectOptions::new()).await.err().expect("no socket");
    assert_eq!(err.kind(), ConnectErrorKind::Unreachable, "{err}");
    assert!(err.to_string().contains(".gone"), "{err}");
}
