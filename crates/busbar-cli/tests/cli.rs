//! The `busbar` binary as a user runs it.

use std::process::Command;

fn busbar(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_busbar")).args(args).output().expect("run busbar")
}

#[test]
fn demo_tells_the_whole_story() {
    let out = busbar(&["demo"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed: {}\n{text}", String::from_utf8_lossy(&out.stderr));
    for expected in [
        "plant is UP",
        "received 81.5 °C from plant/boiler/temperature",
        "set(140) -> error reply invalid_argument",
        "feedback: 10% 20% 30% 40%",
        "Canceling -> Canceled",
        "event `alarm` from plant",
        "plant is DOWN (stopped)",
        "sensor-7 is DOWN (its last will arrived)",
        "done.",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn bench_prints_one_json_object() {
    for pattern in ["pubsub", "rpc"] {
        let out =
            busbar(&["bench", "--pattern", pattern, "--count", "2000", "--json", "--baseline"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
        for key in ["msgs_per_s", "lost", "p50_us", "p99_us"] {
            assert!(v.get(key).is_some_and(|x| x.is_number()), "{pattern}: no {key} in {v}");
        }
        assert_eq!(v["lost"], 0, "{pattern}: {v}");
        assert!(v["msgs_per_s"].as_f64().is_some_and(|x| x > 0.0), "{v}");
        assert!(v["baseline"]["msgs_per_s"].as_f64().is_some_and(|x| x > 0.0), "{v}");
    }
}

#[test]
fn bad_input_gets_a_clear_error() {
    let out = busbar(&["bench", "--url", "nosuch://x", "--count", "10"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nosuch"), "{err}");
    let out = busbar(&["bench", "--count", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--count"));
}

#[tokio::test]
async fn demo_runs_on_a_real_mqtt_broker() {
    let Some(broker) = busbar_testkit::shared_broker(busbar_testkit::BrokerKind::Mqtt).await else {
        return;
    };
    let out = busbar(&["demo", "--url", broker.url()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo on MQTT failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("sensor-7 is DOWN (its last will arrived)"), "{text}");
    assert!(text.contains("Canceling -> Canceled"), "{text}");
}

/// `busbar bench` on every broker transport, through the URL alone.
#[tokio::test]
async fn bench_runs_on_every_broker() {
    use busbar_testkit::{BrokerKind, shared_broker};
    for kind in BrokerKind::ALL {
        let Some(broker) = shared_broker(kind).await else { continue };
        for pattern in ["pubsub", "rpc"] {
            let out = busbar(&[
                "bench",
                "--url",
                broker.url(),
                "--pattern",
                pattern,
                "--count",
                "500",
                "--json",
            ]);
            let name = kind.name();
            assert!(
                out.status.success(),
                "{name} {pattern}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: serde_json::Value =
                serde_json::from_slice(&out.stdout).expect("one JSON object");
            assert_eq!(v["lost"], 0, "{name} {pattern}: {v}");
            assert!(v["msgs_per_s"].as_f64().is_some_and(|x| x > 0.0), "{name} {pattern}: {v}");
        }
    }
}
