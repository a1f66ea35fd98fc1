fn main() {
    // Generates $OUT_DIR/apigear.rs from the module: a Rust module `home_climate` with
    // `Mode`, `Reading`, the trait `Thermostat`, `ThermostatService` and `ThermostatClient`.
    if let Err(e) = busbar_apigear::build::compile(&["api/home.climate.module.yaml"]) {
        panic!("{e}");
    }
}
