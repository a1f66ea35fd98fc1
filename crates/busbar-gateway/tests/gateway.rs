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

/// A configuration in the shape of CSTBox's documentation: `auth.username`, the broker's
/// `keep_alive`, `listened_topics`, and inbound productions `(var_type, var_name)` with no
/// builder slot; and the gateway it describes running end to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cstbox_documented_shapes_run() {
    let Some(mqtt) = shared_broker(BrokerKind::Mqtt).await else { return };
    let run = format!("gwdoc{}", std::process::id());
    let config = GatewayConfig::from_json(
        &json!({
            "events": {"url": format!("mem://{run}"), "topic": "cstbox/events"},
            "broker": {"host": mqtt.host(), "port": mqtt.port(), "keep_alive": 30},
            "auth": {"username": "box-7", "password": "not-checked-here"},
            "listened_topics": [format!("/{run}/data/#")],
            "adapters": {"inbound": {"rules": {
                format!("/{run}/data"): [["command/light_dim/(?P<what>[a-z0-9]+)", [["dim", "%(what)s"]]]]
            }}}
        })
        .to_string(),
    )
    .expect("CSTBox's documented shape reads");
    let url = config.broker_url_redacted();
    assert!(url.contains("box-7") && url.contains("keep_alive=30"), "{url}");
    assert!(!url.contains("not-checked-here"), "{url}");
    let registry = busbar::Registry::default();
    let gateway =
        Gateway::start(&config, &registry, &Builders::default()).await.expect("the gateway starts");
    let bus = busbar::connect(&format!("mem://{run}")).await.expect("the same in-process bus");
    let mut controls = bus.subscribe("cstbox/events/control").await.expect("subscribe");
    let broker = busbar::connect(mqtt.url()).await.expect("mqtt");
    broker
        .publish_bytes(&format!("{run}/data/command/light_dim/hall"), &br#"{"level": 7}"#[..])
        .await
        .expect("publish a command");
    let event: BusEvent =
        serde_json::from_slice(&recv(&mut controls).await.payload.to_bytes().expect("bytes"))
            .expect("event");
    assert_eq!((event.key().as_str(), event.data["level"].clone()), ("dim:hall", json!(7)));
    drop(gateway);

    // No filter at all: refused before connecting, as CSTBox refuses it.
    let none = r#"{"events": {"url": "mem://x"}, "broker": {"host": "h"}, "adapters": {}}"#;
    let none = GatewayConfig::from_json(none).expect("reads");
    let err = Gateway::start(&none, &registry, &Builders::default()).await.err();
    assert!(err.map(|e| e.to_string()).unwrap_or_default().contains("no filter at all"));
    // Topics listened to with no inbound rule to turn them into events.
    let deaf = json!({
        "events": {"url": "mem://x"}, "broker": {"host": "h"}, "listened_topics": ["/a/#"],
        "adapters": {"outbound": {"channels": {"sensor": {"default_builder": "event", "rules": [["a:b", "/t"]]}}}}
    });
    let deaf = GatewayConfig::from_json(&deaf.to_string()).expect("reads");
    let err = Gateway::start(&deaf, &registry, &Builders::default()).await.err();
    assert!(err.map(|e| e.to_string()).unwrap_or_default().contains("needs inbound rules"));
}

/// Filters in code, as CSTBox's applications subclass its filters: temperatures out in a
/// payload of the application's own, set points in from a topic no regex rule is needed
/// for; the configuration says only where the bus and the broker are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_in_code_decide_what_crosses() {
    use busbar_gateway::{Filters, InboundFilter, OutboundFilter, Produced, Routed};
    struct Temperatures;
    impl OutboundFilter for Temperatures {
        fn route(&self, event: &BusEvent) -> Option<Routed> {
            if event.var_type != "temperature" {
                return None;
            }
            let celsius = event.data.get("value")?.clone();
            let topic = format!("/home/{}/temperature", event.var_name);
            Some(Routed { topic, payload: json!({"celsius": celsius}) })
        }
    }
    struct SetPoints(String);
    impl InboundFilter for SetPoints {
        fn subscriptions(&self) -> Vec<String> {
            vec![format!("/{}/+/setpoint", self.0)]
        }
        fn produce(&self, topic: &str, payload: &[u8], timestamp: serde_json::Value) -> Produced {
            let room = topic.split('/').nth(2).unwrap_or_default().to_owned();
            let value: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
            let data = json!({"value": value}).as_object().cloned().unwrap_or_default();
            let event = BusEvent { timestamp, var_type: "setpoint".into(), var_name: room, data };
            vec![("control".to_owned(), event)]
        }
    }
    let Some(mqtt) = shared_broker(BrokerKind::Mqtt).await else { return };
    let run = format!("gwcode{}", std::process::id());
    let config = GatewayConfig::from_json(
        &json!({
            "events": {"url": format!("mem://{run}"), "topic": "events"},
            "broker": {"host": mqtt.host(), "port": mqtt.port()},
            "adapters": {}
        })
        .to_string(),
    )
    .expect("reads");
    let filters = Filters::new().outbound("sensor", Temperatures).inbound(SetPoints(run.clone()));
    let registry = busbar::Registry::default();
    let _gateway = Gateway::start_with_filters(&config, &registry, filters).await.expect("starts");
    let bus = busbar::connect(&format!("mem://{run}")).await.expect("bus");
    let broker = busbar::connect(mqtt.url()).await.expect("mqtt");
    let mut out = broker.subscribe("home/+/temperature").await.expect("subscribe");
    let mut controls = bus.subscribe("events/control").await.expect("subscribe");
    for (var_type, value) in [("humidity", 40), ("temperature", 21)] {
        let e = BusEvent {
            timestamp: json!(1),
            var_type: var_type.into(),
            var_name: "kitchen".into(),
            data: json!({"value": value}).as_object().cloned().unwrap_or_default(),
        };
        bus.publish_bytes("events/sensor", serde_json::to_vec(&e).expect("json"))
            .await
            .expect("publish");
    }
    let m = recv(&mut out).await;
    assert_eq!(m.topic.as_str(), "home/kitchen/temperature", "humidity stayed in");
    let body: serde_json::Value =
        serde_json::from_slice(&m.payload.to_bytes().expect("bytes")).expect("json");
    assert_eq!(body, json!({"celsius": 21}));
    broker.publish_bytes(&format!("{run}/lounge/setpoint"), &b"19.5"[..]).await.expect("publish");
    let event: BusEvent =
        serde_json::from_slice(&recv(&mut controls).await.payload.to_bytes().expect("bytes"))
            .expect("event");
    assert_eq!(
        (event.key().as_str(), event.data["value"].clone()),
        ("setpoint:lounge", json!(19.5))
    );
}
