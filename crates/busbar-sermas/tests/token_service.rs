//! The SERMAS platform's token service, played by a local HTTP server that answers as the
//! platform does (`POST /api/platform/token/access_token` and `/refresh`, Keycloak token
//! responses): an app client's first token, its renewal with the refresh token, a wrong
//! secret refused without repeating it, and a connection to a Mosquitto that knows only the
//! tokens as user names, still working after its token was renewed.

use std::sync::Arc;
use std::time::Duration;

use busbar::auth::TokenPlacement;
use busbar::{ConnectOptions, Message, Topic};
use busbar_sermas::SermasTokenProvider;
use busbar_testkit::{BrokerProcess, MosquittoConfig, skip_if_missing};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// A token service on loopback: the client `robot` of app `a1` with secret `s3cret` gets
/// `jwt-1` (valid `first_lifetime` seconds, with refresh token `r-1`), then `jwt-2`,
/// `jwt-3`... (five minutes each) for each refresh; every request's path and body is
/// reported on the channel.
async fn token_service(first_lifetime: u64) -> (String, mpsc::UnboundedReceiver<(String, Value)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let api = format!("http://{}/api", listener.local_addr().expect("address"));
    let (seen, heard) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut issued = 0;
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // One small request per connection: read to the end of its body.
            let (path, body) = loop {
                let Ok(n) = socket.read(&mut buf).await else { break (String::new(), Value::Null) };
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if body.len() >= length || n == 0 {
                        let path = head.split_whitespace().nth(1).unwrap_or_default().to_owned();
                        break (path, serde_json::from_str(body).unwrap_or(Value::Null));
                    }
                }
                if n == 0 {
                    break (String::new(), Value::Null);
                }
            };
            let _ = seen.send((path.clone(), body.clone()));
            let ok = match path.as_str() {
                "/api/platform/token/access_token" => {
                    body["appId"] == "a1"
                        && body["clientId"] == "robot"
                        && body["clientSecret"] == "s3cret"
                }
                "/api/platform/token/refresh" => {
                    body["clientId"] == "robot" && body["refreshToken"] == format!("r-{issued}")
                }
                _ => false,
            };
            let (status, answer) = if ok {
                issued += 1;
                let lifetime = if issued == 1 { first_lifetime } else { 300 };
                let answer = json!({
                    "access_token": format!("jwt-{issued}"), "expires_in": lifetime,
                    "refresh_token": format!("r-{issued}"), "refresh_expires_in": 600,
                    "token_type": "Bearer", "scope": "openid",
                });
                ("200 OK", answer)
            } else {
                ("401 Unauthorized", json!({"message": "Unauthorized", "statusCode": 401}))
            };
            let text = answer.to_string();
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                text.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        }
    });
    (api, heard)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_come_from_the_platform_and_are_renewed_with_the_refresh_token() {
    let (api, mut heard) = token_service(300).await;
    let provider = SermasTokenProvider::new(&api, "a1", "robot", "s3cret").expect("provider");
    assert_eq!(provider.access_token().await.expect("first").value, "jwt-1");
    let (path, _) = heard.recv().await.expect("a request");
    assert_eq!(path, "/api/platform/token/access_token");
    assert_eq!(provider.access_token().await.expect("renewed").value, "jwt-2");
    let (path, body) = heard.recv().await.expect("a request");
    assert_eq!(
        (path.as_str(), body["refreshToken"].clone()),
        ("/api/platform/token/refresh", json!("r-1"))
    );

    // A wrong secret: refused, naming the status, never the secret.
    let wrong = SermasTokenProvider::new(&api, "a1", "robot", "not-the-secret").expect("provider");
    let err = wrong.access_token().await.expect_err("refused");
    assert!(err.contains("401") && !err.contains("not-the-secret"), "{err}");
    assert!(!format!("{wrong:?}").contains("not-the-secret"));
    assert!(SermasTokenProvider::new("ftp://x", "a1", "robot", "s").is_err());
}

/// A connection logs in with the platform's token as its MQTT user name; the first token
/// lives two seconds, so the connection renews it (through the refresh token) and logs in
/// again with the new one, and messages go through on that login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_logs_in_with_platform_tokens_and_renews_them() {
    let test = "a_connection_logs_in_with_platform_tokens_and_renews_them";
    let mosquitto =
        (1..=20).fold(MosquittoConfig::new(), |c, i| c.user(format!("jwt-{i}"), "sermas"));
    let Some(broker) = skip_if_missing(test, BrokerProcess::mosquitto(mosquitto).await) else {
        return;
    };
    let (api, mut heard) = token_service(2).await;
    let provider = SermasTokenProvider::new(&api, "a1", "robot", "s3cret").expect("provider");
    let options = ConnectOptions::new().token(Arc::new(provider), TokenPlacement::Username);
    let url = format!("mqtt://:sermas@127.0.0.1:{}", broker.port());
    let conn = busbar::connect_with(&url, options).await.expect("logs in with jwt-1");
    let mut events = conn.events();
    assert_eq!(heard.recv().await.expect("request").0, "/api/platform/token/access_token");
    // The renewal, before the two seconds are up.
    let (path, _) = tokio::time::timeout(Duration::from_secs(10), heard.recv())
        .await
        .expect("renewed in time")
        .expect("request");
    assert_eq!(path, "/api/platform/token/refresh");
    // Logged in again, with jwt-2 (Mosquitto would refuse any other name).
    busbar_testkit::next_event(&mut events, |e| {
        matches!(e, busbar::ConnectionEvent::Reconnected { .. })
    })
    .await;
    let mut sub = conn.subscribe("app/a1/robotics/status").await.expect("subscribe");
    let topic = Topic::new("app/a1/robotics/status").expect("topic");
    conn.publish(Message::new(topic, r#"{"ok":true}"#)).await.expect("publish");
    let got = tokio::time::timeout(Duration::from_secs(10), sub.recv()).await.expect("in time");
    assert_eq!(got.expect("open").payload.to_bytes().expect("bytes").as_ref(), br#"{"ok":true}"#);
    conn.close().await.expect("close");
}
