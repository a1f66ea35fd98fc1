//! Inbound rules: which MQTT topics become which bus events.

use std::collections::HashMap;

use regex::Regex;
use serde_json::{Map, Value};

use crate::error::{GatewayError, config};
use crate::event::{BusEvent, CONTROL_CHANNEL, SENSOR_CHANNEL};
use crate::format;

/// One production: `[var_type, var_name, builder?, channel?]`, the first two `%(group)s`
/// templates. CSTBox's documentation writes `(var_type, var_name, channel?)`, with no
/// builder: a third member that is a channel (`sensor`, `control`) is taken as such, and
/// the builder is then `json`.
#[derive(Debug, Clone)]
struct Production {
    var_type: String,
    var_name: String,
    builder: String,
    channel: String,
}

struct Rule {
    regex: Regex,
    produce: Vec<Production>,
}

/// The builder of productions that name none: a JSON object as the event's data, anything
/// else as its `value`.
const DEFAULT_BUILDER: &str = "json";

/// The channels a production may name in its third member.
const CHANNELS: [&str; 2] = [CONTROL_CHANNEL, SENSOR_CHANNEL];

/// A topic turned into events: each with its channel.
pub type Produced = Vec<(String, BusEvent)>;

/// The inbound rules: per subscription prefix, regexes on the rest of the topic, the first
/// that matches producing its events (none when its list is empty: that blocks the topic).
pub struct InboundRules {
    /// The subscription filters the rules need.
    pub filters: Vec<String>,
    rules: Vec<Rule>,
}

impl InboundRules {
    /// Reads `{prefix: [[topic_regex, [[var_type, var_name, builder?, channel?], ...]], ...]}`
    /// (`[var_type, var_name, channel]` too, as CSTBox's documentation writes it).
    ///
    /// A prefix ending in `/#` is subscribed as it is; one ending in `/` gets `#`; any other
    /// gets `/#`. A rule's regex applies to the topic after the prefix, anchored at the start.
    pub fn new(spec: &Map<String, Value>) -> Result<InboundRules, GatewayError> {
        let mut filters = Vec::new();
        let mut rules = Vec::new();
        for (prefix, list) in spec {
            let at = |i: usize| format!("inbound rule {} of {prefix}", i + 1);
            let (filter, base) = if let Some(p) = prefix.strip_suffix('#') {
                (prefix.clone(), p.to_owned())
            } else if prefix.ends_with('/') {
                (format!("{prefix}#"), prefix.clone())
            } else {
                (format!("{prefix}/#"), format!("{prefix}/"))
            };
            filters.push(filter);
            let Some(list) = list.as_array() else {
                return Err(config(prefix.clone(), "rules must be a list"));
            };
            for (i, rule) in list.iter().enumerate() {
                let (Some(re), Some(produce)) =
                    (rule.get(0).and_then(Value::as_str), rule.get(1).and_then(Value::as_array))
                else {
                    return Err(config(at(i), "incomplete rule"));
                };
                let pattern = format!("^{}{}", regex::escape(&base), re.trim_start_matches('/'));
                let regex = Regex::new(&pattern)
                    .map_err(|e| config(at(i), format!("bad regex {re:?}: {e}")))?;
                let groups: Vec<&str> = regex.capture_names().flatten().collect();
                let mut productions = Vec::new();
                for p in produce {
                    let text = |k: usize| p.get(k).and_then(Value::as_str).map(str::to_owned);
                    let (Some(var_type), Some(var_name)) = (text(0), text(1)) else {
                        return Err(config(at(i), "incomplete rule"));
                    };
                    // CSTBox's own shape has no builder: `[type, name]` or `[type, name,
                    // channel]`.
                    let (builder, channel) = match (text(2), text(3)) {
                        (None, _) => (DEFAULT_BUILDER.to_owned(), None),
                        (Some(third), None) if CHANNELS.contains(&third.as_str()) => {
                            (DEFAULT_BUILDER.to_owned(), Some(third))
                        }
                        (Some(builder), channel) => (builder, channel),
                    };
                    if var_type.is_empty() || var_name.is_empty() || builder.trim().is_empty() {
                        return Err(config(at(i), "empty member(s) found"));
                    }
                    for name in format::parameters(&var_type)
                        .into_iter()
                        .chain(format::parameters(&var_name))
                    {
                        if !groups.contains(&name.as_str()) {
                            return Err(config(
                                at(i),
                                format!("event parameter(s) not found in rule regex: {name}"),
                            ));
                        }
                    }
                    if !matches!(builder.as_str(), "json" | "value") {
                        return Err(config(
                            at(i),
                            format!(
                                "builder not found: {builder} (builders: json, value; a channel \
                                 in its place is one of {})",
                                CHANNELS.join(", ")
                            ),
                        ));
                    }
                    let channel = channel.unwrap_or_else(|| CONTROL_CHANNEL.to_owned());
                    productions.push(Production { var_type, var_name, builder, channel });
                }
                rules.push(Rule { regex, produce: productions });
            }
        }
        Ok(InboundRules { filters, rules })
    }

    /// The events a message on `topic` produces (none when no rule matches).
    pub fn produce(&self, topic: &str, payload: &[u8], timestamp: Value) -> Produced {
        let Some((rule, caps)) =
            self.rules.iter().find_map(|r| Some((r, r.regex.captures(topic)?)))
        else {
            return Vec::new();
        };
        let groups: HashMap<String, String> = rule
            .regex
            .capture_names()
            .flatten()
            .filter_map(|n| Some((n.to_owned(), caps.name(n)?.as_str().to_owned())))
            .collect();
        rule.produce
            .iter()
            .filter_map(|p| {
                let data = match p.builder.as_str() {
                    // A JSON object as the data; anything else as its `value`.
                    "json" => match serde_json::from_slice::<Value>(payload) {
                        Ok(Value::Object(m)) => m,
                        Ok(other) => Map::from_iter([("value".to_owned(), other)]),
                        Err(_) => text_value(payload),
                    },
                    _ => text_value(payload),
                };
                let event = BusEvent {
                    timestamp: timestamp.clone(),
                    var_type: format::fill(&p.var_type, &groups)?,
                    var_name: format::fill(&p.var_name, &groups)?,
                    data,
                };
                Some((p.channel.clone(), event))
            })
            .collect()
    }
}

fn text_value(payload: &[u8]) -> Map<String, Value> {
    Map::from_iter([(
        "value".to_owned(),
        Value::from(String::from_utf8_lossy(payload).into_owned()),
    )])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(spec: Value) -> Result<InboundRules, GatewayError> {
        InboundRules::new(spec.as_object().expect("an object"))
    }

    /// CSTBox's inbound example: `/data/command/light_dim/kitchen` gives `dim:kitchen`.
    #[test]
    fn topics_become_events() {
        let r = rules(json!({
            "/data/command/#": [
                ["light_dim/(?P<what>[a-z0-9]+)", [["dim", "%(what)s", "json"]]],
                ["blocked/.*", []],
                ["light_.*", [["never", "reached", "value"]]],
            ],
            "/data/setpoint": [["(?P<room>[a-z]+)", [["setpoint", "%(room)s", "value", "sensor"]]]],
        }))
        .expect("valid");
        assert_eq!(r.filters, ["/data/command/#", "/data/setpoint/#"]);
        let got = r.produce("/data/command/light_dim/kitchen", br#"{"level": 40}"#, json!(1));
        assert_eq!(got.len(), 1);
        let (channel, event) = &got[0];
        assert_eq!((channel.as_str(), event.key().as_str()), ("control", "dim:kitchen"));
        assert_eq!(event.data["level"], 40);
        assert!(r.produce("/data/command/blocked/x", b"{}", json!(1)).is_empty(), "blocked");
        assert!(r.produce("/data/other/x", b"{}", json!(1)).is_empty(), "no rule");
        let got = r.produce("/data/setpoint/lounge", b"21.5", json!(1));
        assert_eq!(got[0].0, "sensor");
        assert_eq!(got[0].1.data["value"], "21.5");
    }

    /// CSTBox's documented shape: `(var_type, var_name, channel?)`, no builder (`json`).
    #[test]
    fn productions_without_a_builder() {
        let r = rules(json!({
            "/data/command": [
                ["light_dim/(?P<what>[a-z0-9]+)", [["dim", "%(what)s"]]],
                ["temp/(?P<room>[a-z]+)", [["temperature", "%(room)s", "sensor"]]],
            ],
        }))
        .expect("valid");
        let got = r.produce("/data/command/light_dim/hall", br#"{"level": 7}"#, json!(1));
        assert_eq!((got[0].0.as_str(), got[0].1.data["level"].clone()), ("control", json!(7)));
        let got = r.produce("/data/command/temp/attic", b"19", json!(1));
        assert_eq!((got[0].0.as_str(), got[0].1.key().as_str()), ("sensor", "temperature:attic"));
        assert_eq!(got[0].1.data["value"], 19);
    }

    #[test]
    fn configuration_errors() {
        for (spec, expect) in [
            (json!({"/a": [["x"]]}), "incomplete rule"),
            (json!({"/a": [["(", [["t", "n", "json"]]]]}), "bad regex"),
            (
                json!({"/a": [["(?P<x>.*)", [["t", "%(y)s", "json"]]]]}),
                "not found in rule regex: y",
            ),
            (json!({"/a": [["x", [["t", "n", "nosuch"]]]]}), "builder not found"),
            (json!({"/a": [["x", [["", "n", "json"]]]]}), "empty member(s) found"),
        ] {
            let err = rules(spec).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(expect), "{expect}: {err}");
        }
    }
}
