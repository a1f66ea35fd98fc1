//! A thermostat served and used through the interface generated from
//! `api/home.climate.module.yaml`.
//!
//! `cargo run -p thermostat` runs both sides on the in-process bus;
//! `cargo run -p thermostat -- mqtt://127.0.0.1:1883` runs them on Mosquitto, where an
//! ApiGear Python or C++ client of `home.climate/Thermostat` can join in.

use std::sync::{Arc, Mutex};

use busbar_apigear::runtime::ApiError;

include!(concat!(env!("OUT_DIR"), "/apigear.rs"));

use home_climate::{
    Mode, Reading, Thermostat, ThermostatClient, ThermostatProperties, ThermostatProperty,
    ThermostatService, ThermostatSignal,
};

/// The real thing: what the generated service serves.
#[derive(Default)]
struct Room {
    state: Mutex<ThermostatProperties>,
}

impl Thermostat for Room {
    fn target(&self) -> f64 {
        self.state.lock().map(|s| s.target).unwrap_or_default()
    }

    async fn set_target(&self, value: f64) -> Result<(), ApiError> {
        if !(5.0..=30.0).contains(&value) {
            return Err(ApiError::refused("target", format!("{value} °C is out of range")));
        }
        self.state
            .lock()
            .map(|mut s| s.target = value)
            .map_err(|_| ApiError::refused("target", "busy"))
    }

    fn mode(&self) -> Mode {
        self.state.lock().map(|s| s.mode).unwrap_or_default()
    }

    async fn set_mode(&self, value: Mode) -> Result<(), ApiError> {
        self.state.lock().map(|mut s| s.mode = value).map_err(|_| ApiError::refused("mode", "busy"))
    }

    fn last_reading(&self) -> Reading {
        self.state.lock().map(|s| s.last_reading.clone()).unwrap_or_default()
    }

    async fn boost(&self, degrees: f64) -> Result<f64, ApiError> {
        let target = self.target() + degrees;
        self.set_target(target).await?;
        Ok(target)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::args().nth(1).unwrap_or_else(|| "mem://thermostat".to_owned());
    let conn = busbar::connect(&url).await?;

    // The service side: an implementation of the generated trait, served.
    let room = Arc::new(Room::default());
    room.state.lock().map(|mut s| s.target = 20.0).ok();
    let service = ThermostatService::serve(&conn, room.clone()).await?;

    // The client side: the same trait, over the bus.
    let client = ThermostatClient::connect(&conn).await?;
    let mut changes = client.changes();
    let mut signals = client.signals();
    client.set_mode(Mode::Heat).await?;
    client.set_target(21.5).await?;
    while client.target() != 21.5 || client.mode() != Mode::Heat {
        changes.recv().await?;
    }
    println!("target {} °C, mode {:?}", client.target(), client.mode());
    println!("boost by 2 -> {} °C", client.boost(2.0).await?);
    if let Err(e) = client.boost(40.0).await {
        println!("boost by 40 -> refused: {e}");
    }

    // The service announces what happens on its side.
    let reading = Reading { celsius: 31.2, humidity_percent: 40 };
    room.state.lock().map(|mut s| s.last_reading = reading.clone()).ok();
    service.notifier().last_reading_changed(&reading).await?;
    service.notifier().overheated(reading).await?;
    if let Ok(ThermostatSignal::Overheated { reading }) = signals.recv().await {
        println!("signal overheated: {} °C, {} %", reading.celsius, reading.humidity_percent);
    }
    while let Ok(change) = changes.recv().await {
        if let ThermostatProperty::LastReading(r) = change {
            println!("last reading now {} °C", r.celsius);
            break;
        }
    }
    conn.close().await?;
    Ok(())
}
