//! Typed publish/subscribe with a wildcard subscription and a slow-consumer policy.
//!
//! `cargo run -p busbar --example pubsub`

use busbar::SubscribeOptions;
use busbar::{Overflow, Publisher, Subscriber};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Reading {
    sensor: String,
    value: f64,
}

#[tokio::main]
async fn main() -> busbar::Result<()> {
    let conn = busbar::connect("mem://").await?;
    // Keep only the latest 16 readings if this subscriber falls behind.
    let options =
        SubscribeOptions::new("sensors/+/reading")?.capacity(16).overflow(Overflow::DropOldest);
    let mut readings = Subscriber::<Reading>::with_options(&conn, options).await?;
    for (sensor, value) in [("t1", 20.5), ("t2", 19.0), ("t1", 20.75)] {
        Publisher::<Reading>::new(&conn, &format!("sensors/{sensor}/reading"))?
            .publish(Reading { sensor: sensor.into(), value })
            .await?;
    }
    for _ in 0..3 {
        if let Some(r) = readings.recv().await {
            let r = r?;
            println!("{} -> {:?}", r.topic, r.value);
        }
    }
    println!("dropped: {}", readings.subscription().dropped());
    Ok(())
}
