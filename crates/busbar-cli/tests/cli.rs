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
        // Machines read standard output; nothing is drawn on standard error either.
        assert!(!String::from_utf8_lossy(&out.stderr).contains('['), "a progress bar with --json");
        // Without --json, a progress bar on standard error reaches the end.
        let out = busbar(&["bench", "--pattern", pattern, "--count", "2000"]);
        let bar = String::from_utf8_lossy(&out.stderr);
        let end = if pattern == "pubsub" { "2000/2000 published" } else { "2000/2000 calls" };
        assert!(bar.contains(&format!("[####################] {end}")), "{pattern}: {bar}");
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

/// A configuration file in a fresh temporary directory.
fn config_file(text: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("busbar-cli-{}-{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("busbar.yaml");
    std::fs::write(&path, text).expect("write the configuration");
    path
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

#[test]
fn commands_take_a_named_broker_from_a_configuration() {
    let path = config_file(
        "default: local\nbrokers:\n  local:\n    url: mem://cli-config\n  off:\n    url: mem://x\n    enabled: false\n",
    );
    let file = path.to_string_lossy().into_owned();
    let out = busbar(&["bench", "--config", &file, "--count", "1000", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["url"], "local (mem://cli-config)", "{v}");

    // Mistakes, each one readable line naming what is wrong.
    for (args, expect) in [
        (
            vec!["bench", "--config", &file, "--broker", "nosuch"],
            "no broker named \"nosuch\" (it has local, off)",
        ),
        (vec!["bench", "--config", &file, "--broker", "off"], "broker \"off\" is disabled"),
        (
            vec!["bench", "--config", "/nonexistent/busbar.yaml"],
            "cannot read the configuration /nonexistent/busbar.yaml",
        ),
    ] {
        let out = busbar(&args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{args:?}: {err}");
    }
    let out = busbar(&["bench", "--broker", "local"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config"), "--broker needs --config");
    // The example file of docs/configuration.md, as shipped.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/busbar.example.yaml");
    let run = |secrets: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_busbar"));
        cmd.args(["bench", "--config", example, "--count", "1000", "--json"]);
        if secrets {
            cmd.env("OIDC_CLIENT_SECRET", "x").env("REDIS_PASSWORD", "y");
        } else {
            cmd.env_remove("OIDC_CLIENT_SECRET").env_remove("REDIS_PASSWORD");
        }
        cmd.output().expect("run busbar")
    };
    let out = run(true);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("OIDC_CLIENT_SECRET is not set"), "{err}");
    let bad = config_file("brokers:\n  local:\n    url: mem://x\n    colour: blue\n");
    let out = busbar(&["bench", "--config", &bad.to_string_lossy()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("busbar.yaml:4:") && err.contains("unknown field `colour`"), "{err}");
}

/// The demo on Mosquitto through a configuration whose broker puts every topic under a
/// prefix: a plain subscriber sees the tour's messages under it, and the crash is still
/// reported by the (prefixed) last will.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_through_a_configuration_with_a_topic_prefix() {
    use busbar_testkit::{BrokerKind, shared_broker};
    let Some(broker) = shared_broker(BrokerKind::Mqtt).await else { return };
    let prefix = format!("site-{}", rand_suffix());
    let path = config_file(&format!(
        "brokers:\n  plant:\n    transport: mqtt\n    host: {}\n    port: {}\n    topic_prefix: {prefix}\n",
        broker.host(),
        broker.port()
    ));
    let watcher = busbar::connect(broker.url()).await.expect("connect");
    let mut seen = watcher.subscribe(&format!("{prefix}/plant/#")).await.expect("subscribe");
    let file = path.to_string_lossy().into_owned();
    let out = tokio::task::spawn_blocking(move || busbar(&["demo", "--config", &file]))
        .await
        .expect("demo");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{text}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("on plant (mqtt://"), "{text}");
    assert!(text.contains("sensor-7 is DOWN (its last will arrived)"), "{text}");
    let m = tokio::time::timeout(std::time::Duration::from_secs(5), seen.recv())
        .await
        .expect("the tour's messages under the prefix")
        .expect("open");
    assert!(m.topic.as_str().starts_with(&format!("{prefix}/plant/")), "{}", m.topic.as_str());
}

/// `busbar bridge -c FILE` between Mosquitto and Redis: what is published on one arrives on
/// the other under the prefix, and Ctrl-C ends it with its counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_runs_the_bridges_of_a_configuration() {
    use busbar_testkit::{BrokerKind, shared_broker};
    use tokio::io::{AsyncBufReadExt, BufReader};
    let Some(mqtt) = shared_broker(BrokerKind::Mqtt).await else { return };
    let Some(redis) = shared_broker(BrokerKind::Redis).await else { return };
    let run = format!("clibridge{}", rand_suffix());
    let path = config_file(&format!(
        "brokers:\n  edge:\n    url: {}\n  cloud:\n    url: {}\nbridges:\n  - name: up\n    from: edge\n    to: cloud\n    topics: [\"{run}/#\"]\n    rewrite: {{add_prefix: site-a}}\n",
        mqtt.url(),
        redis.url()
    ));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_busbar"))
        .args(["bridge", "--config"])
        .arg(&path)
        .args(["--interval", "0"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start busbar bridge");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    loop {
        let line = lines.next_line().await.expect("output").expect("running line");
        if line.contains("bridge(s) running") {
            break;
        }
    }
    let cloud = busbar::connect(redis.url()).await.expect("redis");
    let mut arrived = cloud.subscribe(&format!("site-a/{run}/#")).await.expect("subscribe");
    let edge = busbar::connect(mqtt.url()).await.expect("mqtt");
    for i in 0..5 {
        edge.publish_bytes(&format!("{run}/m/{i}"), i.to_string().into_bytes())
            .await
            .expect("publish");
    }
    for i in 0..5 {
        let m = tokio::time::timeout(std::time::Duration::from_secs(10), arrived.recv())
            .await
            .expect("in time")
            .expect("open");
        assert_eq!(m.topic.as_str(), format!("site-a/{run}/m/{i}"));
    }
    let pid = child.id().expect("pid").to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().expect("kill").success());
    let status = child.wait().await.expect("exit");
    assert!(status.success(), "{status}");
    let mut rest = String::new();
    while let Ok(Some(line)) = lines.next_line().await {
        rest.push_str(&line);
        rest.push('\n');
    }
    assert!(rest.contains(&format!("up:{run}/#: forwarded 5, dropped 0, failed 0")), "{rest}");
}

/// Starts `busbar ARGS` and waits for the line on its standard error that says it is ready
/// (`busbar sub: listening ...`, `busbar serve: answering ...`).
async fn start_ready(args: &[&str]) -> tokio::process::Child {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_busbar"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start busbar");
    let mut err = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let line = tokio::time::timeout(std::time::Duration::from_secs(20), err.next_line())
        .await
        .expect("ready in time")
        .expect("stderr")
        .unwrap_or_default();
    assert!(line.starts_with("busbar "), "{args:?} did not start: {line}");
    child
}

/// `pub`, `sub`, `call` and `serve` against every broker, through the real binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_sub_call_and_serve_on_every_broker() {
    use busbar_testkit::{BrokerKind, shared_broker};
    for kind in BrokerKind::ALL {
        let Some(broker) = shared_broker(kind).await else { continue };
        let url = broker.url();
        let run = format!("cli{}{}", kind.name(), rand_suffix());

        eprintln!("cli on {}", kind.name());
        // sub (JSON lines, two filters) while pub sends from an argument and from stdin.
        let a = format!("{run}/a/#");
        let b = format!("{run}/b");
        let sub = start_ready(&[
            "sub",
            &a,
            &b,
            "--count",
            "3",
            "--timeout",
            "20",
            "--json",
            "--url",
            url,
        ])
        .await;
        let out = busbar(&["pub", &format!("{run}/a/1"), "héllo", "-H", "trace=t1", "--url", url]);
        assert!(out.status.success(), "{}: {}", kind.name(), String::from_utf8_lossy(&out.stderr));
        let mut piped = Command::new(env!("CARGO_BIN_EXE_busbar"))
            .args(["pub", &b, "-", "--url", url])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("pub from stdin");
        {
            use std::io::Write;
            let mut stdin = piped.stdin.take().expect("stdin");
            stdin.write_all(b"line 1\nline 2\n").expect("write");
        }
        assert!(piped.wait().expect("pub").success());
        let out = sub.wait_with_output().await.expect("sub");
        assert!(out.status.success(), "{}: sub", kind.name());
        let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        assert_eq!(lines.len(), 3, "{}: {lines:?}", kind.name());
        assert_eq!(lines[0]["topic"], format!("{run}/a/1"));
        assert_eq!(lines[0]["payload"], "héllo");
        assert_eq!(lines[0]["headers"][0], serde_json::json!(["trace", "t1"]), "{}", kind.name());
        assert_eq!(
            (lines[1]["payload"].as_str(), lines[2]["payload"].as_str()),
            (Some("line 1"), Some("line 2"))
        );

        eprintln!("cli on {}: serve", kind.name());
        // serve: an echo, then a command per request, with a failing one.
        let svc = format!("{run}/echo");
        let serve = start_ready(&["serve", &svc, "--count", "1", "--url", url]).await;
        let out = busbar(&["call", &svc, "{\"a\":1}", "--url", url]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "{\"a\":1}\n", "{}", kind.name());
        assert!(serve.wait_with_output().await.expect("serve").status.success());
        let svc = format!("{run}/upper");
        let _serve =
            start_ready(&["serve", &svc, "--exec", "tr a-z A-Z | grep -v FAIL", "--url", url])
                .await;
        let out = busbar(&["call", &svc, "quiet", "--url", url]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "QUIET\n", "{}", kind.name());
        let out = busbar(&["call", &svc, "fail", "--url", url]);
        assert_eq!(out.status.code(), Some(4), "{}: an error answer", kind.name());
        assert!(String::from_utf8_lossy(&out.stderr).contains("answered with an error"));
    }
}

/// `busbar gateway -c FILE`: a CSTBox configuration whose rule names an unknown topic
/// parameter is refused in one line, and a good one runs until Ctrl-C and reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_runs_a_cstbox_configuration() {
    use busbar_testkit::{BrokerKind, shared_broker};
    use tokio::io::{AsyncBufReadExt, BufReader};
    let bad = config_file(
        r#"{"events": {"url": "mem://gw"}, "broker": {"host": "127.0.0.1"}, "adapters": {"outbound": {"channels": {"sensor": {"default_builder": "event", "rules": [["a:(?P<x>.*)", "/t/%(y)s"]]}}}}}"#,
    );
    let out = busbar(&["gateway", "-c", &bad.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("topic format parameter(s) not found in rule regex: y"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    let Some(mqtt) = shared_broker(BrokerKind::Mqtt).await else { return };
    let good = config_file(&format!(
        r#"{{"events": {{"url": "mem://gw"}}, "broker": {{"host": "{}", "port": {}}}, "adapters": {{"outbound": {{"channels": {{"sensor": {{"default_builder": "event", "rules": [["flow:main", "/main_flow"]]}}}}}}}}}}"#,
        mqtt.host(),
        mqtt.port()
    ));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_busbar"))
        .args(["gateway", "-c"])
        .arg(&good)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next_line().await.expect("output").unwrap_or_default();
    assert!(first.starts_with("gateway running"), "{first}");
    let pid = child.id().expect("pid").to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().expect("kill").success());
    assert!(child.wait().await.expect("exit").success());
    let last = lines.next_line().await.expect("output").unwrap_or_default();
    assert!(last.starts_with("published 0, unrouted 0"), "{last}");
}

/// `busbar action` against an action served on Mosquitto: feedback in order and the result;
/// then Ctrl-C cancels a long goal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn action_follows_feedback_and_cancels_on_ctrl_c() {
    use busbar_testkit::{BrokerKind, shared_broker};
    use tokio::io::{AsyncBufReadExt, BufReader};
    let Some(mqtt) = shared_broker(BrokerKind::Mqtt).await else { return };
    let conn = busbar::connect(mqtt.url()).await.expect("connect");
    let name = format!("cliact{}/fill", rand_suffix());
    let _server = busbar::ActionServer::builder::<u32>(&conn, &name)
        .serve(|target: u32, ctx: std::sync::Arc<busbar::GoalContext<u32>>| async move {
            let mut level = 0;
            while level < target {
                tokio::select! {
                    _ = ctx.cancelled() => return Err(busbar::ActionError::Canceled),
                    _ = tokio::time::sleep(std::time::Duration::from_millis(20)) => {}
                }
                level += 10;
                ctx.feedback(level).await.map_err(|e| busbar::RpcError::internal(e.to_string()))?;
            }
            Ok(format!("filled to {level}"))
        })
        .await
        .expect("serve");

    let out = busbar(&["action", &name, "30", "--json", "--url", mqtt.url()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().collect::<Vec<_>>(), ["10", "20", "30", "\"filled to 30\""], "{text}");

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_busbar"))
        .args(["action", &name, "100000", "--json", "--url", mqtt.url()])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next_line().await.expect("output").unwrap_or_default();
    assert_eq!(first, "10", "feedback flows before the cancel");
    let pid = child.id().expect("pid").to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().expect("kill").success());
    let mut last = String::new();
    while let Ok(Some(line)) = lines.next_line().await {
        last = line;
    }
    assert_eq!(last, "canceled");
    assert!(child.wait().await.expect("exit").success());
}

/// `busbar monitor` sees a node come up and go down, and counts a topic's messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_shows_nodes_and_topic_rates() {
    use busbar_testkit::{BrokerKind, shared_broker};
    use tokio::io::{AsyncBufReadExt, BufReader};
    let Some(mqtt) = shared_broker(BrokerKind::Mqtt).await else { return };
    let run = format!("climon{}", rand_suffix());
    let filter = format!("{run}/#");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_busbar"))
        .args(["monitor", "--filter", &filter, "--interval", "0.3", "--json", "--url", mqtt.url()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start");
    let mut err = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let ready = err.next_line().await.expect("stderr").unwrap_or_default();
    assert!(ready.starts_with("busbar monitor: watching"), "{ready}");
    let mut reports = BufReader::new(child.stdout.take().expect("stdout")).lines();

    let node_name = format!("{run}-node");
    let node = busbar::node(&node_name)
        .url(mqtt.url())
        .heartbeat(Some(std::time::Duration::from_secs(1)))
        .start()
        .await
        .expect("node");
    for i in 0..5 {
        node.connection()
            .publish_bytes(&format!("{run}/x"), i.to_string().into_bytes())
            .await
            .expect("publish");
    }
    let mut seen_up = false;
    for _ in 0..100 {
        let line = tokio::time::timeout(std::time::Duration::from_secs(20), reports.next_line())
            .await
            .expect("a report in time")
            .expect("stdout")
            .unwrap_or_default();
        let r: serde_json::Value = serde_json::from_str(&line).expect("a JSON report");
        if r["nodes"][&node_name] == "up" && r["totals"][format!("{run}/x")] == 5 {
            seen_up = true;
            break;
        }
    }
    assert!(seen_up, "the node and its messages never showed");
    node.stop().await.expect("stop");
    let mut seen_down = false;
    for _ in 0..100 {
        let line = reports.next_line().await.expect("stdout").unwrap_or_default();
        let r: serde_json::Value = serde_json::from_str(&line).expect("a JSON report");
        if r["nodes"][&node_name] == "down (stopped)" {
            seen_down = true;
            break;
        }
    }
    assert!(seen_down, "the stop never showed");
}
