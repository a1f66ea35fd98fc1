//! SASL logins. SCRAM against a Tansu broker that requires authentication: users are added
//! to the broker first (AlterUserScramCredentials, while it still takes anyone), then it
//! restarts with `--authentication` on the same storage. Tansu 0.6 offers SCRAM-SHA-256 and
//! -512 only (no PLAIN mechanism, and it refuses every OAUTHBEARER login), so PLAIN signs
//! in to the testkit's `SaslFront`, which answers the SASL requests itself and relays
//! everything else to a Tansu without authentication; so does OAUTHBEARER with a token
//! provider.

use std::sync::Arc;
use std::time::Duration;

use busbar_core::auth::{StaticToken, Token, TokenPlacement};
use busbar_core::error::ConnectErrorKind;
use busbar_core::transport::ConnectOptions;
use busbar_core::{Connection, Message, Topic};
use busbar_kafka::KafkaTransport;
use busbar_testkit::kafka_users::{Scram, add_scram_user};
use busbar_testkit::sasl_front::{Login, SaslFront};
use busbar_testkit::{BrokerProcess, skip_if_missing};

async fn round_trip(url: &str, topic: &str) {
    round_trip_with(url, ConnectOptions::new(), topic).await;
}

async fn round_trip_with(url: &str, options: ConnectOptions, topic: &str) {
    let conn = Connection::new(Arc::new(
        KafkaTransport::connect(url, options).await.expect("a known user connects"),
    ));
    let mut sub = conn.subscribe(topic).await.expect("subscribe");
    conn.publish(Message::new(Topic::new(topic).expect("topic"), "signed in"))
        .await
        .expect("confirmed");
    let m = tokio::time::timeout(Duration::from_secs(20), sub.recv())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(m.payload.to_bytes().expect("bytes").as_ref(), b"signed in");
    conn.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_users_sign_in_and_a_wrong_password_is_refused() {
    let Some(mut broker) = skip_if_missing("kafka sasl", BrokerProcess::tansu_lasting().await)
    else {
        return;
    };
    let port = broker.port();
    add_scram_user(port, "alice", "alice-secret", Scram::Sha256).await.expect("alice");
    add_scram_user(port, "bob", "bob-secret", Scram::Sha512).await.expect("bob");
    broker.restart_with(["--authentication"]).await.expect("restart with authentication");

    let at = format!("127.0.0.1:{port}");
    round_trip(&format!("kafka://alice:alice-secret@{at}?sasl=scram-sha-256"), "secure/a").await;
    round_trip(&format!("kafka://bob:bob-secret@{at}?sasl=scram-sha-512"), "secure/b").await;

    // A wrong password: refused (kind `Refused`, as on every transport), not repeated.
    let url = format!("kafka://alice:not-her-password@{at}?sasl=scram-sha-256&connect_timeout=5s");
    let err = KafkaTransport::connect(&url, ConnectOptions::new()).await.err().expect("refused");
    assert_eq!(err.kind(), ConnectErrorKind::Refused, "{err}");
    assert!(!err.to_string().contains("not-her-password"), "the password leaked: {err}");

    // The right password under the other mechanism is not a login either.
    let url = format!("kafka://alice:alice-secret@{at}?sasl=scram-sha-512&connect_timeout=5s");
    let err = KafkaTransport::connect(&url, ConnectOptions::new()).await.err().expect("refused");
    assert_eq!(err.kind(), ConnectErrorKind::Refused, "{err}");

    // No credentials at all: the broker answers nothing but the handshake, so connecting
    // ends by its timeout with an error instead of hanging.
    let url = format!("kafka://{at}?connect_timeout=3s");
    let err = KafkaTransport::connect(&url, ConnectOptions::new()).await.err().expect("refused");
    assert!(!err.to_string().is_empty());
}

/// A Tansu behind a SASL front end that signs `login` in.
async fn behind_front(login: Login) -> Option<(BrokerProcess, u16)> {
    let front = SaslFront::bind().await;
    let port = front.port();
    let broker =
        skip_if_missing("kafka sasl front", BrokerProcess::tansu_advertising(Some(port)).await)?;
    front.relay_to(([127, 0, 0, 1], broker.port()).into(), login);
    Some((broker, port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_users_sign_in_and_a_wrong_password_is_refused() {
    let login = Login::Plain { user: "carol".into(), password: "carol-secret".into() };
    let Some((_broker, port)) = behind_front(login).await else { return };
    let at = format!("127.0.0.1:{port}");
    round_trip(&format!("kafka://carol:carol-secret@{at}?sasl=plain"), "plain/a").await;

    let url = format!("kafka://carol:not-hers@{at}?sasl=plain&connect_timeout=5s");
    let err = KafkaTransport::connect(&url, ConnectOptions::new()).await.err().expect("refused");
    assert_eq!(err.kind(), ConnectErrorKind::Refused, "{err}");
    assert!(!err.to_string().contains("not-hers"), "the password leaked: {err}");
}

/// OAUTHBEARER with a token provider: every client of the connection signs in with the
/// provider's token, the admin client included (it connects, creates the topic, reads and
/// writes); a token the broker does not take is refused (kind `Refused`), and the error does not
/// repeat it. Failed before the admin client was handed its token: "no metadata from the
/// cluster".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_sign_in_and_a_wrong_token_is_refused() {
    let login = Login::Bearer { token: "the-right-token".into() };
    let Some((_broker, port)) = behind_front(login).await else { return };
    let url = format!("kafka://127.0.0.1:{port}?connect_timeout=10s");
    let with_token = |value: &str| {
        let provider = Arc::new(StaticToken(Token::forever(value)));
        ConnectOptions::new().token(provider, TokenPlacement::Password)
    };
    round_trip_with(&url, with_token("the-right-token"), "bearer/a").await;

    let url = format!("kafka://127.0.0.1:{port}?connect_timeout=5s");
    let err =
        KafkaTransport::connect(&url, with_token("a-stolen-guess")).await.err().expect("refused");
    assert_eq!(err.kind(), ConnectErrorKind::Refused, "{err}");
    assert!(!err.to_string().contains("a-stolen-guess"), "the token leaked: {err}");
}
