//! Owned broker processes and shared brokers, exercised against real servers.
//!
//! Each test skips (or fails, with `BUSBAR_REQUIRE_BROKERS=1`) when its broker is not
//! installed or not running.

use std::net::Ipv4Addr;
use std::time::Duration;

use busbar_testkit::{
    BrokerKind, BrokerProcess, MosquittoConfig, NatsConfig, shared_broker, skip_if_missing,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Bound on every network exchange in these tests, so a broken broker fails instead of
/// hanging.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

async fn connect(port: u16) -> TcpStream {
    timeout(IO_TIMEOUT, TcpStream::connect((Ipv4Addr::LOCALHOST, port)))
        .await
        .expect("connect timed out")
        .expect("connect to the broker")
}

async fn redis_ping(port: u16) {
    let mut stream = connect(port).await;
    stream.write_all(b"PING\r\n").await.expect("send PING");
    let mut reply = [0u8; 7];
    timeout(IO_TIMEOUT, stream.read_exact(&mut reply))
        .await
        .expect("PONG timed out")
        .expect("read PONG");
    assert_eq!(&reply, b"+PONG\r\n");
}

#[tokio::test]
async fn redis_ping_stop_restart() {
    let Some(mut redis) = skip_if_missing("redis_ping_stop_restart", BrokerProcess::redis().await)
    else {
        return;
    };
    let port = redis.port();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}"));
    let first_pid = redis.pid().expect("running redis has a pid");
    redis_ping(port).await;

    redis.stop().await.expect("stop redis");
    assert_eq!(redis.pid(), None);
    let refused = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await;
    assert!(refused.is_err(), "port {port} still accepts connections after stop");
    // Stopping twice is harmless.
    redis.stop().await.expect("second stop is a no-op");

    redis.restart().await.expect("restart redis");
    assert_eq!(redis.port(), port, "restart keeps the port");
    let second_pid = redis.pid().expect("restarted redis has a pid");
    assert_ne!(first_pid, second_pid, "restart runs a new process");
    redis_ping(port).await;

    let log = std::fs::read_to_string(redis.log_path()).expect("read redis log");
    assert_eq!(
        log.matches("--- busbar-testkit: starting").count(),
        2,
        "log covers both runs:\n{log}"
    );
}

#[tokio::test]
async fn dropping_a_broker_kills_it_and_removes_its_dir() {
    let Some(redis) = skip_if_missing(
        "dropping_a_broker_kills_it_and_removes_its_dir",
        BrokerProcess::redis().await,
    ) else {
        return;
    };
    let port = redis.port();
    let dir = redis.dir().to_owned();
    assert!(dir.is_dir());
    drop(redis);
    assert!(
        TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await.is_err(),
        "port {port} still accepts connections after drop"
    );
    assert!(!dir.exists(), "{} was not removed", dir.display());
}

#[tokio::test]
async fn nats_sends_info_on_connect() {
    let Some(nats) = skip_if_missing("nats_sends_info_on_connect", BrokerProcess::nats().await)
    else {
        return;
    };
    assert_eq!(nats.url(), format!("nats://127.0.0.1:{}", nats.port()));
    let mut reader = BufReader::new(connect(nats.port()).await);
    let mut line = String::new();
    timeout(IO_TIMEOUT, reader.read_line(&mut line))
        .await
        .expect("INFO timed out")
        .expect("read INFO");
    assert!(line.starts_with("INFO "), "unexpected greeting: {line:?}");
    assert!(line.ends_with("\r\n"), "INFO line not terminated: {line:?}");
}

#[tokio::test]
async fn nats_takes_extra_configuration() {
    let config = NatsConfig::new().line("authorization { token: \"s3cret\" }");
    let Some(nats) = skip_if_missing(
        "nats_takes_extra_configuration",
        BrokerProcess::nats_with_config(config).await,
    ) else {
        return;
    };
    let mut reader = BufReader::new(connect(nats.port()).await);
    let mut line = String::new();
    timeout(IO_TIMEOUT, reader.read_line(&mut line))
        .await
        .expect("INFO timed out")
        .expect("read INFO");
    assert!(line.contains("\"auth_required\":true"), "the token was not configured: {line:?}");
}

/// An MQTT 3.1.1 CONNECT packet with a clean session, keepalive 30 and the given client id.
fn mqtt_connect_packet(client_id: &str) -> Vec<u8> {
    let id = client_id.as_bytes();
    let id_len = u16::try_from(id.len()).expect("client id fits a u16 length");
    let mut body = Vec::new();
    body.extend_from_slice(&[0x00, 0x04]);
    body.extend_from_slice(b"MQTT");
    body.push(0x04); // protocol level 4 = 3.1.1
    body.push(0x02); // connect flags: clean session
    body.extend_from_slice(&30u16.to_be_bytes()); // keepalive seconds
    body.extend_from_slice(&id_len.to_be_bytes());
    body.extend_from_slice(id);

    let mut packet = vec![0x10]; // CONNECT
    let mut remaining = body.len();
    loop {
        let mut byte = u8::try_from(remaining % 128).expect("below 128");
        remaining /= 128;
        if remaining > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if remaining == 0 {
            break;
        }
    }
    packet.extend_from_slice(&body);
    packet
}

#[test]
fn mqtt_connect_packet_layout() {
    let packet = mqtt_connect_packet("testkit");
    assert_eq!(packet[0], 0x10);
    assert_eq!(usize::from(packet[1]), packet.len() - 2);
    assert_eq!(&packet[2..8], b"\x00\x04MQTT");
    assert_eq!(&packet[8..12], &[0x04, 0x02, 0x00, 30]);
    assert_eq!(&packet[12..], b"\x00\x07testkit");
}

#[tokio::test]
async fn mosquitto_accepts_an_mqtt_connect() {
    let Some(mosquitto) = skip_if_missing(
        "mosquitto_accepts_an_mqtt_connect",
        BrokerProcess::mosquitto(MosquittoConfig::new()).await,
    ) else {
        return;
    };
    assert_eq!(mosquitto.url(), format!("mqtt://127.0.0.1:{}", mosquitto.port()));
    let mut stream = connect(mosquitto.port()).await;
    stream.write_all(&mqtt_connect_packet("testkit")).await.expect("send CONNECT");
    let mut connack = [0u8; 4];
    timeout(IO_TIMEOUT, stream.read_exact(&mut connack))
        .await
        .expect("CONNACK timed out")
        .expect("read CONNACK");
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
}

#[tokio::test]
async fn mosquitto_extra_lines_reach_the_config() {
    // The extra line lands after the listener, and the broker starts with it.
    let config = MosquittoConfig::new().line("max_connections 5");
    let Some(mosquitto) = skip_if_missing(
        "mosquitto_extra_lines_reach_the_config",
        BrokerProcess::mosquitto(config).await,
    ) else {
        return;
    };
    let conf = std::fs::read_to_string(mosquitto.dir().join("mosquitto.conf"))
        .expect("read generated config");
    let port_line = format!("listener {} 127.0.0.1", mosquitto.port());
    let lines: Vec<&str> = conf.lines().collect();
    let listener = lines.iter().position(|l| *l == port_line).expect("listener line present");
    let extra = lines.iter().position(|l| *l == "max_connections 5").expect("extra line present");
    assert!(extra > listener, "extra lines follow the listener:\n{conf}");
    assert!(lines.contains(&"allow_anonymous true"));
    assert!(lines.contains(&"set_tcp_nodelay true"));
    connect(mosquitto.port()).await;
}

#[tokio::test]
async fn a_broken_mosquitto_config_fails_with_its_log() {
    if BrokerProcess::mosquitto(MosquittoConfig::new()).await.is_err() {
        // Covered by `mosquitto_accepts_an_mqtt_connect`, which skips or fails as appropriate.
        return;
    }
    let config = MosquittoConfig::new().line("this_is_not_an_option 1");
    let err = BrokerProcess::mosquitto(config)
        .await
        .expect_err("mosquitto must reject an unknown option");
    let text = err.to_string();
    assert!(text.contains("mosquitto exited"), "{text}");
    assert!(text.contains("this_is_not_an_option"), "log tail missing: {text}");
}

#[tokio::test]
async fn shared_brokers_are_reachable() {
    for kind in BrokerKind::ALL {
        let Some(broker) = shared_broker(kind).await else {
            continue;
        };
        assert_eq!(broker.kind(), kind);
        if std::env::var_os(kind.env_var()).is_none() {
            assert_eq!(broker.url(), kind.default_url());
            assert_eq!(broker.port(), kind.default_port());
        }
        // The probe's answer holds: a fresh connection succeeds too.
        timeout(IO_TIMEOUT, TcpStream::connect((broker.host(), broker.port())))
            .await
            .expect("connect timed out")
            .expect("shared broker accepts connections");
    }
}
