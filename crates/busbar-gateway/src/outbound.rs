//! Outbound rules: which bus events go to which topic, with which payload.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use regex::Regex;
use serde_json::{Map, Value};

use crate::error::{GatewayError, config};
use crate::event::BusEvent;
use crate::format;

/// Builds the MQTT payload of an event that matched a rule: `(topic, event, groups, extra)`.
pub type Builder = Arc<
    dyn Fn(&str, &BusEvent, &HashMap<String, String>, &Map<String, Value>) -> Value + Send + Sync,
>;

/// Payload builders by name, as rules name them. Three come built in:
///
/// * `event`: `{"timestamp", "var_type", "var_name"}` and the event's data;
/// * `data`: the event's data alone;
/// * `extra`: the event's data with the rule's extra values added.
#[derive(Clone)]
pub struct Builders(HashMap<String, Builder>);

impl Default for Builders {
    fn default() -> Self {
        let mut b = Builders(HashMap::new());
        b.add("event", |_, e, _, _| {
            let mut m = e.data.clone();
            m.insert("timestamp".into(), e.timestamp.clone());
            m.insert("var_type".into(), Value::from(e.var_type.clone()));
            m.insert("var_name".into(), Value::from(e.var_name.clone()));
            Value::Object(m)
        });
        b.add("data", |_, e, _, _| Value::Object(e.data.clone()));
        b.add("extra", |_, e, _, extra| {
            let mut m = e.data.clone();
            m.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
            Value::Object(m)
        });
        b
    }
}

impl Builders {
    /// Adds (or replaces) the builder `name`.
    pub fn add(
        &mut self,
        name: &str,
        builder: impl Fn(&str, &BusEvent, &HashMap<String, String>, &Map<String, Value>) -> Value
        + Send
        + Sync
        + 'static,
    ) {
        self.0.insert(name.to_owned(), Arc::new(builder));
    }

    fn get(&self, name: &str) -> Option<Builder> {
        self.0.get(name).cloned()
    }
}

/// One rule as configured: `[pattern, topic_format, extra?, builder?]`.
pub type RuleSpec = Vec<Value>;

/// A rule that matched: its index, and the groups it captured.
type Match = (usize, HashMap<String, String>);

struct Rule {
    pattern: Regex,
    topic: String,
    extra: Map<String, Value>,
    builder: Builder,
}

/// Where an event goes, when a rule takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    /// The topic.
    pub topic: String,
    /// The payload.
    pub payload: Value,
}

/// The rules of one channel: the first that matches an event's `var_type:var_name`
/// (anchored at the start, as Python's `re.match`) routes it; no match, no message.
pub struct OutboundRules {
    rules: Vec<Rule>,
    system_id: String,
    /// Event key -> the match, kept on a match only, as CSTBox does.
    cache: Mutex<HashMap<String, Match>>,
}

impl OutboundRules {
    /// Reads the rules of `channel`. `default_builder` serves rules that name none;
    /// `system_id` fills `%(__system_id__)s`.
    pub fn new(
        channel: &str,
        specs: &[RuleSpec],
        default_builder: Option<&str>,
        builders: &Builders,
        system_id: &str,
    ) -> Result<OutboundRules, GatewayError> {
        let mut rules = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            let at = format!("outbound rule {} of channel {channel}", i + 1);
            let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
            let (Some(pattern), Some(topic)) = (text(spec.first()), text(spec.get(1))) else {
                return Err(config(at, "incomplete rule"));
            };
            if pattern.is_empty() || topic.is_empty() {
                return Err(config(at, "empty member(s) found"));
            }
            let extra = match spec.get(2) {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(m)) => m.clone(),
                Some(other) => {
                    return Err(config(at, format!("extra must be an object, not {other}")));
                }
            };
            let builder_name = text(spec.get(3))
                .filter(|b| !b.trim().is_empty())
                .or_else(|| default_builder.filter(|b| !b.trim().is_empty()).map(str::to_owned))
                .ok_or_else(|| config(&at, "no builder specified and no default builder"))?;
            let builder = builders
                .get(&builder_name)
                .ok_or_else(|| config(&at, format!("builder not found: {builder_name}")))?;
            let regex = Regex::new(&format!("^(?:{pattern})"))
                .map_err(|e| config(&at, format!("bad regex {pattern:?}: {e}")))?;
            let groups: Vec<&str> = regex.capture_names().flatten().collect();
            let missing: Vec<String> = format::parameters(&topic)
                .into_iter()
                .filter(|p| p != "__system_id__" && !groups.contains(&p.as_str()))
                .collect();
            if !missing.is_empty() {
                return Err(config(
                    at,
                    format!(
                        "topic format parameter(s) not found in rule regex: {}",
                        missing.join(", ")
                    ),
                ));
            }
            rules.push(Rule { pattern: regex, topic, extra, builder });
        }
        Ok(OutboundRules { rules, system_id: system_id.to_owned(), cache: Mutex::default() })
    }

    /// Where `event` goes, or `None` when no rule takes it.
    pub fn route(&self, event: &BusEvent) -> Option<Routed> {
        let key = event.key();
        let cached = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key).cloned();
        let (index, groups) = match cached {
            Some(hit) => hit,
            None => {
                let (index, groups) = self.rules.iter().enumerate().find_map(|(i, rule)| {
                    let caps = rule.pattern.captures(&key)?;
                    let groups = rule
                        .pattern
                        .capture_names()
                        .flatten()
                        .filter_map(|n| Some((n.to_owned(), caps.name(n)?.as_str().to_owned())))
                        .collect::<HashMap<_, _>>();
                    Some((i, groups))
                })?;
                self.cache
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, (index, groups.clone()));
                (index, groups)
            }
        };
        let rule = &self.rules[index];
        let mut values = groups.clone();
        values.insert("__system_id__".into(), self.system_id.clone());
        let topic = format::fill(&rule.topic, &values)?;
        let payload = match (rule.builder)(&topic, event, &groups, &rule.extra) {
            Value::Null => Value::Object(Map::new()),
            other => other,
        };
        Some(Routed { topic, payload })
    }

    /// Events remembered as matched.
    pub fn cached(&self) -> usize {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(var_type: &str, var_name: &str) -> BusEvent {
        BusEvent {
            timestamp: json!(1_700_000_000),
            var_type: var_type.into(),
            var_name: var_name.into(),
            data: json!({"value": 3}).as_object().cloned().unwrap_or_default(),
        }
    }

    fn rules(specs: Value) -> Result<OutboundRules, GatewayError> {
        let specs: Vec<RuleSpec> = serde_json::from_value(specs).expect("rule list");
        OutboundRules::new("sensor", &specs, Some("event"), &Builders::default(), "box-7")
    }

    /// The vectors of CSTBox's `outbound.cfg` and its tests.
    #[test]
    fn cstbox_vectors() {
        let r = rules(json!([
            ["flow:main", "main_flow"],
            ["usage:water_(?P<which>[a-z0-9]+)", "usage_%(which)s"],
            ["usage:usage.(?P<which>[a-z0-9.]+)", "/data/observation/%(which)s"],
            ["temperature:bedroom", "/static/topic"],
            ["flow:.*", "/static/water/flow"],
            ["open:(?P<what>door|window)_(?P<where>[a-z]+)", "/dynamic/%(what)s/%(where)s"],
        ]))
        .expect("valid rules");
        let topic = |t: &str, n: &str| r.route(&event(t, n)).map(|x| x.topic);
        assert_eq!(topic("flow", "main").as_deref(), Some("main_flow"));
        assert_eq!(topic("usage", "water_kitchen").as_deref(), Some("usage_kitchen"));
        assert_eq!(topic("usage", "cupboard_kitchen"), None, "default deny");
        assert_eq!(
            topic("usage", "usage.kitchen.sink").as_deref(),
            Some("/data/observation/kitchen.sink")
        );
        assert_eq!(topic("temperature", "bedroom").as_deref(), Some("/static/topic"));
        assert_eq!(topic("flow", "kitchen").as_deref(), Some("/static/water/flow"));
        assert_eq!(topic("open", "door_entrance").as_deref(), Some("/dynamic/door/entrance"));
        assert_eq!(topic("open", "window_bedroom").as_deref(), Some("/dynamic/window/bedroom"));
        // Hits are remembered, misses are not.
        let before = r.cached();
        topic("usage", "cupboard_kitchen");
        topic("flow", "main");
        assert_eq!(r.cached(), before);
    }

    #[test]
    fn first_match_wins_anchored_at_the_start_only() {
        let r = rules(json!([["temp", "first"], ["temperature:.*", "second"]])).expect("rules");
        // `re.match` anchors at the start, not the end: "temp" takes temperature:x.
        assert_eq!(r.route(&event("temperature", "x")).map(|x| x.topic).as_deref(), Some("first"));
        assert_eq!(r.route(&event("xtemp", "x")), None);
    }

    #[test]
    fn payloads_come_from_the_builder() {
        let mut builders = Builders::default();
        builders.add("custom", |topic, e, groups, extra| {
            json!({"topic": topic, "v": e.data["value"], "g": groups["n"], "x": extra["unit"]})
        });
        let specs: Vec<RuleSpec> = serde_json::from_value(json!([
            ["a:(?P<n>.*)", "t/%(n)s/%(__system_id__)s", {"unit": "l"}, "custom"],
            ["b:.*", "t/b", {"unit": "m3"}, "extra"],
        ]))
        .expect("rules");
        let r = OutboundRules::new("sensor", &specs, None, &builders, "box-7").expect("rules");
        let a = r.route(&event("a", "one")).expect("routed");
        assert_eq!(a.topic, "t/one/box-7");
        assert_eq!(a.payload, json!({"topic": "t/one/box-7", "v": 3, "g": "one", "x": "l"}));
        let b = r.route(&event("b", "two")).expect("routed");
        assert_eq!(b.payload, json!({"value": 3, "unit": "m3"}));
    }

    #[test]
    fn configuration_errors_say_what_cstbox_says() {
        let errs = [
            (json!([["only-pattern"]]), "incomplete rule"),
            (json!([["", "t"]]), "empty member(s) found"),
            (json!([["a(", "t"]]), "bad regex"),
            (
                json!([["a:(?P<x>.*)", "t/%(y)s"]]),
                "topic format parameter(s) not found in rule regex: y",
            ),
            (json!([["a", "t", {}, "nosuch"]]), "builder not found: nosuch"),
        ];
        for (spec, expect) in errs {
            let err = rules(spec).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(expect), "{expect}: {err}");
            assert!(err.contains("outbound rule 1 of channel sensor"), "{err}");
        }
        let specs: Vec<RuleSpec> = serde_json::from_value(json!([["a", "t"]])).expect("rules");
        let err = OutboundRules::new("sensor", &specs, Some(" "), &Builders::default(), "x")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("no builder specified"), "{err}");
    }
}
