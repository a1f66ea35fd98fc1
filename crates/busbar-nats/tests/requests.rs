//! Requests on the connection's own reply inbox, against the machine's nats-server
//! (127.0.0.1:4222, or `BUSBAR_TEST_NATS_URL`): unguessable reply subjects, late replies
//! counted by the requester, and "no responders" at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use busbar_core::error::RequestErrorKind;
use busbar_core::transport::ConnectOptions;
use busbar_core::{Connection, Message, Topic};
use busbar_nats::NatsTransport;
use busbar_testkit::{BrokerKind, shared_broker};

async fn connect(url: &str) -> Connection {
    Connection::new(Arc::new(
        NatsTransport::connect(url, ConnectOptions::new()).await.expect("connect"),
    ))
}

fn unique(name: &str) -> String {
    format!("requests/{}/{name}", uuid::Uuid::new_v4().simple())
}

/// `_busbar/inbox/<32 hex>/<32 hex>`: the inbox and the correlation id, split.
fn inbox_and_id(reply_to: &Topic) -> (String, String) {
    let levels: Vec<&str> = reply_to.as_str().split('/').collect();
    assert_eq!(levels.len(), 4, "{reply_to}");
    assert_eq!(&levels[..2], ["_busbar", "inbox"], "{reply_to}");
    for hex in &levels[2..] {
        assert!(hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit()), "{reply_to}");
    }
    (levels[2].to_owned(), levels[3].to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_find_their_request_on_an_unguessable_inbox_and_late_ones_are_counted() {
    let Some(broker) = shared_broker(BrokerKind::Nats).await else { return };
    let (client, server) = (connect(broker.url()).await, connect(broker.url()).await);
    let service = unique("svc");
    let mut requests = server.subscribe(&service).await.expect("subscribe");
    let topic = Topic::new(&service).expect("topic");

    let mut seen = Vec::new();
    for n in 0..2u8 {
        let asking = {
            let client = client.clone();
            let request = Message::new(topic.clone(), vec![n]);
            tokio::spawn(async move { client.request(request, Duration::from_secs(5)).await })
        };
        let request = tokio::time::timeout(Duration::from_secs(5), requests.recv())
            .await
            .expect("in time")
            .expect("open");
        let reply_to = request.reply_to.clone().expect("a reply subject");
        seen.push(inbox_and_id(&reply_to));
        let reply = Message::reply(&request, vec![n + 10]).expect("a reply");
        server.publish(reply).await.expect("reply");
        let reply = asking.await.expect("join").expect("the reply");
        assert_eq!(reply.payload.to_bytes().expect("bytes").as_ref(), [n + 10]);
        assert_eq!(reply.topic, reply_to);
    }
    assert_eq!(seen[0].0, seen[1].0, "one inbox per connection");
    assert_ne!(seen[0].1, seen[1].1, "a correlation id per request");

    // A second reply to the first request finds nobody waiting: counted late, by the
    // requester.
    let again = Topic::new(format!("_busbar/inbox/{}/{}", seen[0].0, seen[0].1)).expect("topic");
    server.publish(Message::new(again, &b"again"[..])).await.expect("duplicate reply");
    let deadline = Instant::now() + Duration::from_secs(5);
    while client.stats().late_replies == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stats = client.stats();
    assert_eq!((stats.requests, stats.timeouts, stats.late_replies), (2, 0, 1), "{stats:?}");
    assert_eq!(server.stats().late_replies, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_nobody_serves_fails_at_once() {
    let Some(broker) = shared_broker(BrokerKind::Nats).await else { return };
    let client = connect(broker.url()).await;
    let nobody = unique("nobody");
    for _ in 0..2 {
        let started = Instant::now();
        let err = client
            .request(
                Message::new(Topic::new(&nobody).expect("topic"), &b"?"[..]),
                Duration::from_secs(10),
            )
            .await
            .expect_err("nobody serves it");
        assert_eq!(err.kind(), RequestErrorKind::NoResponders, "{err}");
        assert!(err.to_string().contains(&nobody), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    }
    let stats = client.stats();
    assert_eq!((stats.requests, stats.timeouts, stats.late_replies), (2, 0, 0), "{stats:?}");
}
