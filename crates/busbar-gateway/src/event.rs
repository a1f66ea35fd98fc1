//! Events on the local bus, as CSTBox's event manager carries them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// CSTBox's channels: measurements and commands.
pub const SENSOR_CHANNEL: &str = "sensor";
/// Where inbound rules put events unless they name a channel.
pub const CONTROL_CHANNEL: &str = "control";

/// One event: what a variable (`var_type:var_name`) did, and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BusEvent {
    /// Seconds since the epoch (CSTBox's timestamps), or anything the emitter chose.
    #[serde(default)]
    pub timestamp: Value,
    /// What kind of variable, e.g. `temperature`.
    pub var_type: String,
    /// Which one, e.g. `kitchen`.
    pub var_name: String,
    /// Its data, e.g. `{"value": 21.5, "unit": "degC"}`.
    #[serde(default)]
    pub data: Map<String, Value>,
}

impl BusEvent {
    /// The key rules are matched against: `var_type:var_name`.
    pub fn key(&self) -> String {
        format!("{}:{}", self.var_type, self.var_name)
    }
}
