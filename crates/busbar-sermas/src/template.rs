//! SERMAS topic templates: `app/:appId/dialogue/messages/:sessionId`.

use std::collections::BTreeMap;

use busbar_core::{Topic, TopicFilter};
use serde_json::Value;

use crate::error::{Result, SermasError};

/// One level of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(String),
    Placeholder(String),
}

/// A topic with `:name` placeholders for whole levels, as SERMAS writes its topics.
///
/// SERMAS fills placeholders by replacing the text `:name` anywhere in the template; here a
/// placeholder is always a whole level, which is how every SERMAS topic uses them, so that
/// `:app` can never eat into `:appId`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplate {
    text: String,
    levels: Vec<Level>,
}

/// Values for placeholders, by name.
pub type Params = BTreeMap<String, String>;

impl TopicTemplate {
    /// Reads a template. Levels are literal, or `:name` (letters, digits, `_`).
    pub fn new(template: &str) -> Result<TopicTemplate> {
        let fail = |reason: String| SermasError::Template { template: template.to_owned(), reason };
        if template.is_empty() {
            return Err(fail("empty".into()));
        }
        let mut levels = Vec::new();
        for level in template.split('/') {
            match level.strip_prefix(':') {
                Some(name) => {
                    if name.is_empty()
                        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        return Err(fail(format!("{level:?} is not a placeholder (:name)")));
                    }
                    levels.push(Level::Placeholder(name.to_owned()));
                }
                None if level.contains(':') => {
                    return Err(fail(format!("{level:?} mixes text and a placeholder")));
                }
                None if level.contains(['+', '#']) => {
                    return Err(fail("wildcards belong in subscriptions, not templates".into()));
                }
                None => levels.push(Level::Literal(level.to_owned())),
            }
        }
        Ok(TopicTemplate { text: template.to_owned(), levels })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The placeholders' names, in order.
    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.levels.iter().filter_map(|l| match l {
            Level::Placeholder(name) => Some(name.as_str()),
            Level::Literal(_) => None,
        })
    }

    /// The topic with every placeholder filled from `params`; a placeholder without a value is
    /// [`SermasError::Unmapped`].
    pub fn fill(&self, params: &Params) -> Result<Topic> {
        let mut out = Vec::with_capacity(self.levels.len());
        for level in &self.levels {
            out.push(match level {
                Level::Literal(text) => text.as_str(),
                Level::Placeholder(name) => {
                    let value = params.get(name).filter(|v| !v.is_empty()).ok_or_else(|| {
                        SermasError::Unmapped {
                            template: self.text.clone(),
                            placeholder: name.clone(),
                        }
                    })?;
                    if value.contains(['/', '+', '#']) {
                        return Err(SermasError::Template {
                            template: self.text.clone(),
                            reason: format!(":{name} = {value:?} is not one topic level"),
                        });
                    }
                    value.as_str()
                }
            });
        }
        Ok(Topic::new(out.join("/")).map_err(busbar_core::Error::from)?)
    }

    /// The subscription for the template: given placeholders filled, the others `+`.
    pub fn filter(&self, params: &Params) -> Result<TopicFilter> {
        let levels: Vec<&str> = self
            .levels
            .iter()
            .map(|level| match level {
                Level::Literal(text) => text.as_str(),
                Level::Placeholder(name) => {
                    params.get(name).map(String::as_str).filter(|v| !v.is_empty()).unwrap_or("+")
                }
            })
            .collect();
        Ok(TopicFilter::new(levels.join("/")).map_err(busbar_core::Error::from)?)
    }

    /// The values a payload gives for this template's placeholders, as the SERMAS API fills
    /// topics on publish: each placeholder from the payload's field of the same name, and
    /// from a `record` (a record-change event): `<scope>Id`, where scope is the template's
    /// fourth level, and `sessionId` and `agentId`. Strings and numbers count.
    pub fn params_from(&self, payload: &Value) -> Params {
        let mut params = Params::new();
        let text = |v: &Value| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        if let Some(record) = payload.get("record") {
            let scope = match self.levels.get(3) {
                Some(Level::Literal(scope)) => Some(format!("{scope}Id")),
                _ => None,
            };
            for key in scope.iter().map(String::as_str).chain(["sessionId", "agentId"]) {
                if let Some(v) = record.get(key).and_then(text) {
                    params.insert(key.to_owned(), v);
                }
            }
        }
        for name in self.placeholders() {
            if let Some(v) = payload.get(name).and_then(text) {
                params.insert(name.to_owned(), v);
            }
        }
        params
    }
}

/// `[("appId", "a1")]` as [`Params`].
pub fn params<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Params {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_and_refuse_leftovers() {
        let t = TopicTemplate::new("app/:appId/dialogue/messages/:sessionId").expect("template");
        assert_eq!(t.placeholders().collect::<Vec<_>>(), ["appId", "sessionId"]);
        let topic = t.fill(&params([("appId", "a1"), ("sessionId", "s1")])).expect("filled");
        assert_eq!(topic.as_str(), "app/a1/dialogue/messages/s1");
        let err = t.fill(&params([("appId", "a1")])).expect_err("leftover");
        assert_eq!(
            err.to_string(),
            "unmapped topic variable :sessionId in \"app/:appId/dialogue/messages/:sessionId\""
        );
        assert!(t.fill(&params([("appId", "a/1"), ("sessionId", "s")])).is_err());
    }

    #[test]
    fn unset_placeholders_subscribe_as_plus() {
        let t = TopicTemplate::new("app/:appId/ui/interaction/:moduleId").expect("template");
        assert_eq!(t.filter(&Params::new()).expect("filter").as_str(), "app/+/ui/interaction/+");
        let f = t.filter(&params([("appId", "a1")])).expect("filter");
        assert_eq!(f.as_str(), "app/a1/ui/interaction/+");
    }

    #[test]
    fn payloads_and_records_fill_placeholders() {
        let t = TopicTemplate::new("app/:appId/session/agent/changed/:agentId").expect("template");
        let p = t.params_from(&serde_json::json!({
            "appId": "a1",
            "record": {"agentId": "ag-7", "sessionId": "s1"},
            "operation": "updated",
        }));
        assert_eq!(t.fill(&p).expect("filled").as_str(), "app/a1/session/agent/changed/ag-7");
        let t = TopicTemplate::new("app/:appId/dialogue/speech/:sessionId/:messageId/:chunkId")
            .expect("template");
        let p = t.params_from(
            &serde_json::json!({"appId": "a1", "sessionId": "s", "messageId": 4, "chunkId": "c"}),
        );
        assert_eq!(t.fill(&p).expect("filled").as_str(), "app/a1/dialogue/speech/s/4/c");
    }

    #[test]
    fn bad_templates_are_refused() {
        for bad in ["", "app/:/x", "app/x:y", "app/+/x", "app/:a-b"] {
            assert!(TopicTemplate::new(bad).is_err(), "{bad:?}");
        }
    }
}
