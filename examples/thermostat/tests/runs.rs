//! The example runs and tells its story.

#[test]
fn the_example_runs_on_the_in_process_bus() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_thermostat")).output().expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{text}", String::from_utf8_lossy(&out.stderr));
    for line in [
        "target 21.5 °C, mode Heat",
        "boost by 2 -> 23.5 °C",
        "boost by 40 -> refused: boost failed: target: 63.5 °C is out of range",
        "signal overheated: 31.2 °C, 40 %",
        "last reading now 31.2 °C",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
}

#[tokio::test]
async fn the_example_runs_on_mosquitto() {
    let Some(broker) = busbar_testkit::skip_if_missing(
        "the_example_runs_on_mosquitto",
        busbar_testkit::BrokerProcess::mosquitto(busbar_testkit::MosquittoConfig::new()).await,
    ) else {
        return;
    };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_thermostat"))
        .arg(broker.url())
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{text}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("last reading now 31.2 °C"), "{text}");
}
