//! Redis servers this test starts, stops and configures itself: restarts mid-stream, calls
//! in flight during a fault, wrong credentials, and a token refreshed before it expires.

use std::ffi::OsString;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use busbar_core::auth::{Token, TokenPlacement, TokenProvider};
use busbar_core::error::{
    BoxError, ConnectError, ConnectErrorKind, PublishErrorKind, RequestErrorKind,
};
use busbar_core::patterns::rpc::RpcServer;
use busbar_core::patterns::{RpcClient, RpcError};
use busbar_core::transport::{BoxFuture, ConnectOptions};
use busbar_core::{Connection, ConnectionEvent, Message, Topic};
use busbar_redis::RedisTransport;
use busbar_testkit::next_event;
use busbar_testkit::{BrokerProcess, skip_if_missing};
use tokio::sync::Notify;

async fn connect(url: &str) -> Connection {
    connect_with(url, ConnectOptions::new()).await.expect("connect")
}

async fn connect_with(url: &str, options: ConnectOptions) -> Result<Connection, ConnectError> {
    Ok(Connection::new(Arc::new(RedisTransport::connect(url, options).await?)))
}

async fn server(test: &str, extra: &[&str]) -> Option<BrokerProcess> {
    let extra = extra.iter().map(OsString::from).collect();
    skip_if_missing(test, BrokerProcess::redis_with(extra, false).await)
}

async fn recv(sub: &mut busbar_core::Subscription) -> Message {
    tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .expect("a message in time")
        .expect("subscription open")
}

fn text(m: &Message) -> String {
    String::from_utf8(m.payload.to_bytes().expect("bytes").to_vec()).expect("utf-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_resume_after_the_server_restarts() {
    let Some(mut redis) = server("subscribers_resume_after_the_server_restarts", &[]).await else {
        return;
    };
    let url = redis.url();
    let sub_conn = connect(&url).await;
    let pub_conn = connect(&url).await;
    let mut sub_events = sub_conn.events();
    let mut pub_events = pub_conn.events();
    let mut pattern = sub_conn.subscribe("plant/+/temp").await.expect("subscribe");
    let mut exact = sub_conn.subscribe("plant/a/temp").await.expect("subscribe");
    pub_conn.publish_bytes("plant/a/temp", &b"before"[..]).await.expect("publish");
    assert_eq!(text(&recv(&mut pattern).await), "before");
    assert_eq!(text(&recv(&mut exact).await), "before");

    redis.stop().await.expect("stop");
    next_event(&mut sub_events, |e| matches!(e, ConnectionEvent::Disconnected { .. })).await;
    next_event(&mut pub_events, |e| matches!(e, ConnectionEvent::Disconnected { .. })).await;
    // During the outage calls fail at once with a typed error instead of vanishing.
    let err = pub_conn.publish_bytes("plant/a/temp", &b"lost"[..]).await.expect_err("down");
    assert_eq!(err.kind(), PublishErrorKind::NotConnected, "{err}");
    let started = tokio::time::Instant::now();
    let err = pub_conn
        .request(
            Message::new(Topic::new("plant/svc").expect("topic"), &b"?"[..]),
            Duration::from_millis(300),
        )
        .await
        .expect_err("no server");
    assert!(
        matches!(err.kind(), RequestErrorKind::NotConnected | RequestErrorKind::TimedOut),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_millis(1_000), "{:?}", started.elapsed());

    redis.restart().await.expect("restart");
    next_event(&mut sub_events, |e| matches!(e, ConnectionEvent::Reconnected { .. })).await;
    next_event(&mut pub_events, |e| matches!(e, ConnectionEvent::Reconnected { .. })).await;
    // Both subscriptions were restored (Reconnected is reported after re-subscribing), to
    // the same streams, and the stream goes on in order with nothing lost or doubled.
    for n in 0..200 {
        pub_conn.publish_bytes("plant/a/temp", format!("after-{n}")).await.expect("publish");
    }
    pub_conn.publish_bytes("plant/b/temp", &b"other"[..]).await.expect("publish");
    for n in 0..200 {
        assert_eq!(text(&recv(&mut pattern).await), format!("after-{n}"));
        assert_eq!(text(&recv(&mut exact).await), format!("after-{n}"));
    }
    assert_eq!(text(&recv(&mut pattern).await), "other");
    assert!(exact.try_recv().is_none(), "the exact subscription got another topic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rpc_in_flight_during_a_restart_ends_within_its_deadline() {
    let Some(mut redis) =
        server("an_rpc_in_flight_during_a_restart_ends_within_its_deadline", &[]).await
    else {
        return;
    };
    let url = redis.url();
    let server_conn = connect(&url).await;
    let client_conn = connect(&url).await;
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let _server = {
        let (started, release) = (started.clone(), release.clone());
        RpcServer::spawn(&server_conn, "svc/echo", move |n: u32| {
            let (started, release) = (started.clone(), release.clone());
            async move {
                if n == 1 {
                    started.notify_one();
                    release.notified().await;
                }
                Ok::<_, RpcError>(n)
            }
        })
        .await
        .expect("serve")
    };
    let client = RpcClient::<u32, u32>::new(&client_conn, "svc/echo")
        .expect("client")
        .timeout(Duration::from_secs(2));
    assert_eq!(client.call(7).await.expect("call before the fault"), 7);

    let mut server_events = server_conn.events();
    let mut client_events = client_conn.events();
    let call = {
        let client = client.clone();
        tokio::spawn(async move {
            let t = tokio::time::Instant::now();
            (client.call(1).await, t.elapsed())
        })
    };
    started.notified().await;
    redis.stop().await.expect("stop");
    release.notify_one();
    let (outcome, took) = call.await.expect("join");
    // The reply list died with the server: the call ends with a typed error, in time.
    match outcome {
        Ok(n) => assert_eq!(n, 1),
        Err(e) => assert!(
            matches!(e.kind(), RequestErrorKind::TimedOut | RequestErrorKind::NotConnected),
            "{e}"
        ),
    }
    assert!(took < Duration::from_millis(2_500), "took {took:?} with a 2 s deadline");

    redis.restart().await.expect("restart");
    next_event(&mut server_events, |e| matches!(e, ConnectionEvent::Reconnected { .. })).await;
    next_event(&mut client_events, |e| matches!(e, ConnectionEvent::Reconnected { .. })).await;
    // The server re-joined its queue group and the client's reply reader reconnected.
    for n in 10..20 {
        assert_eq!(client.call(n).await.expect("call after the restart"), n);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_give_a_clear_error() {
    let Some(redis) = server(
        "wrong_credentials_give_a_clear_error",
        &["--requirepass", "s3cret", "--user", "alice", "on", ">wonder", "~*", "&*", "+@all"],
    )
    .await
    else {
        return;
    };
    let hostport = redis.url().trim_start_matches("redis://").to_owned();
    for url in [
        format!("redis://:wrong-pw@{hostport}"),
        format!("redis://alice:wrong-pw@{hostport}"),
        format!("redis://nobody:wrong-pw@{hostport}"),
    ] {
        match connect_with(&url, ConnectOptions::new()).await {
            Err(e) => {
                assert_eq!(e.kind(), ConnectErrorKind::Refused, "{url}: {e}");
                assert!(!e.to_string().contains("wrong-pw"), "the password leaked: {e}");
                assert!(!format!("{e:?}").contains("wrong-pw"), "the password leaked: {e:?}");
            }
            Ok(_) => panic!("{url}: wrong credentials were accepted"),
        }
    }
    // No password at all: the server answers NOAUTH to the first command.
    let err = match connect_with(&format!("redis://{hostport}"), ConnectOptions::new()).await {
        Err(e) => e,
        Ok(_) => panic!("connected without a password"),
    };
    assert_eq!(err.kind(), ConnectErrorKind::Refused, "{err}");
    // The right ones work, as the default user and as an ACL user.
    for url in [format!("redis://:s3cret@{hostport}"), format!("redis://alice:wonder@{hostport}")] {
        let conn = connect(&url).await;
        let mut sub = conn.subscribe("auth/ok").await.expect("subscribe");
        conn.publish_bytes("auth/ok", &b"yes"[..]).await.expect("publish");
        assert_eq!(text(&recv(&mut sub).await), "yes");
    }
}

/// Hands out `tok-1` (valid for two seconds), then `tok-2` for good.
#[derive(Default)]
struct Rotating {
    calls: AtomicUsize,
    refreshed: Notify,
}

impl TokenProvider for Rotating {
    fn token(&self) -> BoxFuture<'_, Result<Token, BoxError>> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if n >= 2 {
            self.refreshed.notify_one();
        }
        Box::pin(async move {
            Ok(match n {
                1 => Token::valid_for("tok-1", Duration::from_secs(2)),
                _ => Token::forever("tok-2"),
            })
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refreshed_token_is_used_for_reauth_and_reconnects() {
    let Some(redis) =
        server("a_refreshed_token_is_used_for_reauth_and_reconnects", &["--requirepass", "tok-1"])
            .await
    else {
        return;
    };
    let url = redis.url();
    let provider = Arc::new(Rotating::default());
    let conn =
        connect_with(&url, ConnectOptions::new().token(provider.clone(), TokenPlacement::Password))
            .await
            .expect("connect with tok-1");
    let mut events = conn.events();
    let mut sub = conn.subscribe("tok/#").await.expect("subscribe");
    // The server now only accepts tok-2 (connections already authenticated stay so).
    let admin =
        redis::Client::open(format!("redis://:tok-1@{}", url.trim_start_matches("redis://")))
            .expect("admin client");
    let mut admin = admin.get_multiplexed_async_connection().await.expect("admin");
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("tok-2")
        .exec_async(&mut admin)
        .await
        .expect("config set");
    tokio::time::timeout(Duration::from_secs(10), provider.refreshed.notified())
        .await
        .expect("the token was refreshed before expiry");
    // The refreshed token re-authenticates the live connection (AUTH keeps subscriptions);
    // a message proves the connection still works after it.
    conn.publish_bytes("tok/a", &b"after refresh"[..]).await.expect("publish");
    assert_eq!(text(&recv(&mut sub).await), "after refresh");
    // Cut every client connection but the admin's: the transport must come back with tok-2.
    // (A connection with subscriptions counts as a pub/sub client.)
    for kind in ["pubsub", "normal"] {
        redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg(kind)
            .arg("SKIPME")
            .arg("yes")
            .exec_async(&mut admin)
            .await
            .expect("client kill");
    }
    next_event(&mut events, |e| matches!(e, ConnectionEvent::Reconnected { .. })).await;
    conn.publish_bytes("tok/b", &b"after reconnect"[..]).await.expect("publish");
    assert_eq!(text(&recv(&mut sub).await), "after reconnect");
}

/// A server that has just subscribed (in a queue group) is reachable at once from another
/// connection, which has not yet heard the group's notice: its request finds the group in the
/// registry instead of failing with `NoResponders`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_rpc_server_is_reached_at_once_from_another_connection() {
    let Some(broker) = busbar_testkit::shared_broker(busbar_testkit::BrokerKind::Redis).await
    else {
        return;
    };
    let server_conn = connect(broker.url()).await;
    let client_conn = connect(broker.url()).await;
    for round in 0..100 {
        let name = format!("fresh/{}/{round}", std::process::id());
        let _server =
            RpcServer::spawn(&server_conn, &name, |n: u32| async move { Ok::<_, RpcError>(n + 1) })
                .await
                .expect("serve");
        let client = RpcClient::<u32, u32>::new(&client_conn, &name).expect("client");
        assert_eq!(client.call(round).await.expect("the fresh server answers"), round + 1);
    }
}
