//! The gateway end to end: events on a Redis bus go to Mosquitto by the rules, and MQTT
//! commands come back as events.

use std::time::Duration;

use busbar_gateway::{Builders, BusEvent, Gateway, GatewayConfig};
use busbar_testkit::{BrokerKind, shared_broker};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_go_out_by_the_rules_and_commands_come_back() {
    let Some(redis) = shared_broker(BrokerKind::Redis).await else { return };
    let Some(mqtt) = shared_broker(BrokerKind::Mqtt).await else { return };
    let run = format!("gw{}", std::process::id());
    let config = GatewayConfig::from_json(
        &json!({
            "events": {"url": redis.url(), "topic": format!("{run}/events")},
            "broker": {"host": mqtt.host(), "port": mqtt.port(), "client_id": format!("{run}-gw")},
            "qos": 1,
            "system_id": "box-7",
            "svcobj_class": "pycstbox.mqtt.gateway.MQTTGatewayServiceObject",
            "adapters": {
                "outbound": {"channels": {"sensor": {
                    "adapter_class": "pycstbox.mqtt.re_adapters.REOutboundAdapter",
                    "default_builder": "event",
                    "rules": [
                        ["flow:main", format!("/{run}/main_flow")],
                        ["usage:water_(?P<which>[a-z0-9]+)", format!("/{run}/%(__system_id__)s/usage_%(which)s")]
                    ]
                }}},
                "inbound": {"rules": {
                    format!("/{run}/data/command"): [["light_dim/(?P<what>[a-z0-9]+)", [["dim", "%(what)s", "json"]]]]
                }}
            }
        })
        .to_string(),
    )
    .expect("the configuration reads");
    let gateway = Gateway::start(&config, &busbar::Registry::default(), &Builders::default())
        .await
        .expect("the gateway starts");

    let bus = busbar::connect(redis.url()).await.expect("redis");
    let broker = busbar::connect(mqtt.url()).await.expect("mqtt");
    let mut out = broker.subscribe(&format!("{run}/#")).await.expect("subscribe");
    let mut controls = bus.subscribe(&format!("{run}/events/control")).await.expect("subscribe");
    for (t, n) in [("usage", "cupboard_kitchen"), ("flow", "main"), ("usage", "water_kitchen")] {
        let e = BusEvent {
            timestamp: json!(1_700_000_000),
            var_type: t.into(),
            var_name: n.into(),
            data: json!({"value": 12}).as_object().cloned().unwrap_or_default(),
        };
        let topic = format!("{run}/events/sensor");
        bus.publish_bytes(&topic, serde_json::to_vec(&e).expect("json")).await.expect("publish");
    }
    // The cupboard event matched no rule: the first message out is flow:main.
    let m = recv(&mut out).await;
    assert_eq!(m.topic.as_str(), format!("{run}/main_flow"));
    let body: serde_json::Value =
        serde_json::from_slice(&m.payload.to_bytes().expect("bytes")).expect("json");
    assert_eq!(
        body,
        json!({"timestamp": 1_700_000_000, "var_type": "flow", "var_name": "main", "value": 12})
    );
    let m = recv(&mut out).await;
    assert_eq!(m.topic.as_str(), format!("{run}/box-7/usage_kitchen"));
    assert_eq!(gateway.stats().unrouted, 1);

    broker
        .publish_bytes(&format!("{run}/data/command/light_dim/kitchen"), &br#"{"level": 40}"#[..])
        .await
        .expect("publish a command");
    // The broker subscription sees the command too; the bus gets the event.
    let e = recv(&mut controls).await;
    let event: BusEvent =
        serde_json::from_slice(&e.payload.to_bytes().expect("bytes")).expect("event");
    assert_eq!(event.key(), "dim:kitchen");
    assert_eq!(event.data["level"], 40);
}

#[tokio::test]
async fn a_bad_rule_stops_the_gateway_before_it_connects() {
    let config = GatewayConfig::from_json(
        &json!({
            "events": {"url": "mem://gw-bad"},
            "broker": {"host": "127.0.0.1"},
            "adapters": {"outbound": {"channels": {"sensor": {"rules": [["a:(?P<x>.*)", "t/%(y)s"]]}}}}
        })
        .to_string(),
    )
    .expect("reads");
    let err = Gateway::start(&config, &busbar::Registry::default(), &Builders::default())
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("no builder specified"), "{err}");
    assert!(
        GatewayConfig::from_json(
            r#"{"events": {"url": "mem://"}, "broker": {"host": "h"}, "adapters": {}, "colour": 1}"#
        )
        .is_err()
    );
}

async fn recv(sub: &mut busbar::Subscription) -> busbar::Message {
    tokio::time::timeout(Duration::from_secs(10), sub.recv()).await.expect("in time").expect("open")
}
