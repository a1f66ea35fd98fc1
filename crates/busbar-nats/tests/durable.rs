//! Publishes to subjects a durable subscription keeps are confirmed by its JetStream stream.

use std::sync::Arc;
use std::time::Duration;

use busbar_core::error::PublishErrorKind;
use busbar_core::transport::ConnectOptions;
use busbar_core::{Connection, SubscribeOptions, TopicFilter};
use busbar_nats::NatsTransport;
use busbar_testkit::{BrokerProcess, NatsConfig, skip_if_missing};

async fn connect(url: &str) -> Connection {
    Connection::new(Arc::new(
        NatsTransport::connect(url, ConnectOptions::new()).await.expect("connect"),
    ))
}

/// A publish to a kept subject is done when the stream stored it: a stream that refuses
/// (full, and told to discard new messages) fails the publish with `Refused`, where a core
/// publish would have returned `Ok` for a message nobody keeps. Known to the connection that
/// made the durable subscription at once, and to one made later from the server's list;
/// subjects nobody keeps stay core publishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_to_a_kept_subject_are_confirmed_by_its_stream() {
    let test = "publishes_to_a_kept_subject_are_confirmed_by_its_stream";
    let Some(server) =
        skip_if_missing(test, BrokerProcess::nats_with_config(NatsConfig::new().jetstream()).await)
    else {
        return;
    };
    let url = format!("{}?confirm_timeout=3s", server.url());
    let maker = connect(&url).await;
    let filter = TopicFilter::new("kept/#").expect("filter");
    let sub = maker
        .subscribe_with(SubscribeOptions::from(filter).durable("confirmed"))
        .await
        .expect("durable subscription");
    drop(sub);
    let later = connect(&url).await;
    for (who, conn) in [("the maker", &maker), ("a later connection", &later)] {
        conn.publish_bytes("kept/a", &b"stored"[..]).await.unwrap_or_else(|e| panic!("{who}: {e}"));
    }

    // The stream is made full and refuses new messages.
    let raw = async_nats::connect(server.url()).await.expect("raw client");
    let js = async_nats::jetstream::new(raw);
    let mut config = js
        .get_stream("busbar-durable-confirmed")
        .await
        .expect("the durable stream")
        .cached_info()
        .config
        .clone();
    config.max_messages = 2;
    config.discard = async_nats::jetstream::stream::DiscardPolicy::New;
    js.update_stream(config).await.expect("limit the stream");
    for (who, conn) in [("the maker", &maker), ("a later connection", &later)] {
        let err =
            tokio::time::timeout(Duration::from_secs(10), conn.publish_bytes("kept/a", &b"x"[..]))
                .await
                .expect("answered within the deadline")
                .expect_err("refused by the full stream");
        assert_eq!(err.kind(), PublishErrorKind::Refused, "{who}: {err}");
        assert!(err.to_string().contains("durable subscription"), "{who}: {err}");
    }
    // A subject nobody keeps is a core publish as ever.
    later.publish_bytes("other/a", &b"free"[..]).await.expect("not kept");

    later.remove_durable("confirmed", "kept/#").await.expect("removed");
    // Gone, and known to be gone: a core publish again.
    later.publish_bytes("kept/a", &b"core"[..]).await.expect("no stream any more");
    maker.close().await.expect("close");
    later.close().await.expect("close");
}
