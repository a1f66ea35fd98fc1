//! A gateway whose filters are code, as CSTBox applications subclass its filters: sensor
//! temperatures go out to the broker as `/home/<room>/temperature` with a payload of the
//! application's own, and set points published on `home/<room>/setpoint` come back as
//! `setpoint` events on the control channel. The event bus is in-process here; the broker
//! is a Mosquitto on 127.0.0.1:1883.
//!
//! ```sh
//! cargo run -p busbar-gateway --example filters_in_code
//! mosquitto_sub -t 'home/#' -v &   # sees home/kitchen/temperature {"celsius":21.5}
//! ```

use busbar_gateway::{
    BusEvent, Filters, Gateway, GatewayConfig, InboundFilter, OutboundFilter, Produced, Routed,
};
use serde_json::{Value, json};

/// Temperatures out; every other event stays in.
struct Temperatures;

impl OutboundFilter for Temperatures {
    fn route(&self, event: &BusEvent) -> Option<Routed> {
        if event.var_type != "temperature" {
            return None;
        }
        let celsius = event.data.get("value")?.clone();
        Some(Routed {
            topic: format!("/home/{}/temperature", event.var_name),
            payload: json!({"celsius": celsius, "at": event.timestamp}),
        })
    }
}

/// `home/<room>/setpoint` in, as a `setpoint:<room>` event on the control channel.
struct SetPoints;

impl InboundFilter for SetPoints {
    fn subscriptions(&self) -> Vec<String> {
        vec!["/home/+/setpoint".to_owned()]
    }

    fn produce(&self, topic: &str, payload: &[u8], timestamp: Value) -> Produced {
        let Some(room) = topic.split('/').nth(2) else { return Vec::new() };
        let Ok(value) = serde_json::from_slice::<Value>(payload) else { return Vec::new() };
        let data = json!({"value": value}).as_object().cloned().unwrap_or_default();
        let event =
            BusEvent { timestamp, var_type: "setpoint".into(), var_name: room.to_owned(), data };
        vec![("control".to_owned(), event)]
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = GatewayConfig::from_json(
        r#"{"events": {"url": "mem://home"}, "broker": {"host": "127.0.0.1", "port": 1883},
            "adapters": {}}"#,
    )?;
    let filters = Filters::new().outbound("sensor", Temperatures).inbound(SetPoints);
    let gateway =
        Gateway::start_with_filters(&config, &busbar::Registry::default(), filters).await?;
    let bus = busbar::connect("mem://home").await?;
    let event = BusEvent {
        timestamp: json!(1_700_000_000),
        var_type: "temperature".into(),
        var_name: "kitchen".into(),
        data: json!({"value": 21.5}).as_object().cloned().unwrap_or_default(),
    };
    bus.publish_bytes("cstbox/events/sensor", serde_json::to_vec(&event)?).await?;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    println!("{:?}", gateway.stats());
    Ok(())
}
