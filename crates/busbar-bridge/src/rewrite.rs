//! How a bridge renames topics on the way across.

use busbar_core::{Topic, TopicFilter};

use crate::BridgeError;

/// A topic rewrite rule.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Rewrite {
    /// The same topic on the other side.
    #[default]
    Keep,
    /// `prefix/` put before the topic.
    AddPrefix(String),
    /// `prefix/` taken off the topic (a topic without it crosses unchanged).
    StripPrefix(String),
    /// A template whose `{1}`, `{2}`, ... are the levels the filter's wildcards captured, in
    /// order (a `#` captures the rest, slashes included): with the filter
    /// `sensors/+/temp/#`, `site-a/{1}/{2}` sends `sensors/boiler/temp/c/max` to
    /// `site-a/boiler/c/max`.
    Template(String),
    /// Every `.` becomes a level break: `sensors.sonar.front` -> `sensors/sonar/front`. For
    /// dotted names (commlib's) that are one level on one side (a Redis channel) and levels
    /// on the other (MQTT topics, AMQP routing keys).
    DotsToLevels,
    /// Every level break becomes a `.`: `sensors/sonar/front` -> `sensors.sonar.front`
    /// (the other way of [`Rewrite::DotsToLevels`]).
    LevelsToDots,
}

impl Rewrite {
    /// Checks the rule against the bridge's filter: a template may only use captures the
    /// filter has, and prefixes must be topics.
    pub fn check(&self, filter: &TopicFilter) -> Result<(), BridgeError> {
        let bad = |reason: String| BridgeError::Rewrite { rule: format!("{self:?}"), reason };
        match self {
            Rewrite::Keep | Rewrite::DotsToLevels | Rewrite::LevelsToDots => Ok(()),
            Rewrite::AddPrefix(p) | Rewrite::StripPrefix(p) => {
                Topic::new(p.trim_matches('/')).map(|_| ()).map_err(|e| bad(e.to_string()))
            }
            Rewrite::Template(t) => {
                let captures = filter.levels().filter(|l| *l == "+" || *l == "#").count();
                let mut rest = t.as_str();
                while let Some(open) = rest.find('{') {
                    let Some(close) = rest[open..].find('}') else {
                        return Err(bad("an unclosed `{`".into()));
                    };
                    let index = &rest[open + 1..open + close];
                    match index.parse::<usize>() {
                        Ok(n) if (1..=captures).contains(&n) => {}
                        _ => {
                            return Err(bad(format!(
                                "{{{index}}} is not one of the filter's {captures} capture(s)"
                            )));
                        }
                    }
                    rest = &rest[open + close + 1..];
                }
                Ok(())
            }
        }
    }

    /// The topic `topic` (which `filter` matched) becomes on the other side.
    pub fn apply(&self, filter: &TopicFilter, topic: &Topic) -> Result<Topic, BridgeError> {
        let text = match self {
            Rewrite::Keep => return Ok(topic.clone()),
            Rewrite::DotsToLevels => topic.as_str().replace('.', "/"),
            Rewrite::LevelsToDots => topic.as_str().replace('/', "."),
            Rewrite::AddPrefix(p) => format!("{}/{}", p.trim_matches('/'), topic.as_str()),
            Rewrite::StripPrefix(p) => {
                let p = p.trim_matches('/');
                match topic.as_str().strip_prefix(p).and_then(|r| r.strip_prefix('/')) {
                    Some(rest) if !rest.is_empty() => rest.to_owned(),
                    _ => return Ok(topic.clone()),
                }
            }
            Rewrite::Template(t) => {
                let captures = captures(filter, topic);
                let mut out = String::with_capacity(t.len());
                let mut rest = t.as_str();
                while let Some(open) = rest.find('{') {
                    out.push_str(&rest[..open]);
                    let close = rest[open..].find('}').map_or(rest.len(), |c| open + c);
                    let n: usize = rest[open + 1..close].parse().unwrap_or(0);
                    out.push_str(captures.get(n.wrapping_sub(1)).map_or("", String::as_str));
                    rest = rest.get(close + 1..).unwrap_or("");
                }
                out.push_str(rest);
                out
            }
        };
        Topic::new(&text).map_err(|e| BridgeError::Rewrite {
            rule: format!("{self:?}"),
            reason: format!("{} became {text:?}: {e}", topic.as_str()),
        })
    }
}

/// The levels of `topic` that `filter`'s wildcards stand for.
fn captures(filter: &TopicFilter, topic: &Topic) -> Vec<String> {
    let mut out = Vec::new();
    let levels: Vec<&str> = topic.levels().collect();
    for (i, f) in filter.levels().enumerate() {
        match f {
            "+" => out.push(levels.get(i).copied().unwrap_or_default().to_owned()),
            "#" => {
                out.push(levels.get(i..).map(|l| l.join("/")).unwrap_or_default());
                break;
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Topic {
        Topic::new(s).expect("topic")
    }

    #[test]
    fn rules_rename_topics() {
        let f = TopicFilter::new("sensors/+/temp/#").expect("filter");
        let topic = t("sensors/boiler/temp/c/max");
        assert_eq!(Rewrite::Keep.apply(&f, &topic).expect("keep"), topic);
        let add = Rewrite::AddPrefix("/edge-7/".into());
        assert_eq!(
            add.apply(&f, &topic).expect("add").as_str(),
            "edge-7/sensors/boiler/temp/c/max"
        );
        let strip = Rewrite::StripPrefix("sensors".into());
        assert_eq!(strip.apply(&f, &topic).expect("strip").as_str(), "boiler/temp/c/max");
        assert_eq!(strip.apply(&f, &t("other/x")).expect("kept").as_str(), "other/x");
        let tpl = Rewrite::Template("site-a/{1}/{2}".into());
        tpl.check(&f).expect("valid");
        assert_eq!(tpl.apply(&f, &topic).expect("template").as_str(), "site-a/boiler/c/max");
    }

    #[test]
    fn dotted_names_become_levels_and_back() {
        let all = TopicFilter::new("#").expect("filter");
        let to_levels =
            Rewrite::DotsToLevels.apply(&all, &t("sensors.sonar.front")).expect("levels");
        assert_eq!(to_levels.as_str(), "sensors/sonar/front");
        let back = Rewrite::LevelsToDots.apply(&all, &to_levels).expect("dots");
        assert_eq!(back.as_str(), "sensors.sonar.front");
        // An empty part is no topic: the forward fails (and is counted), nothing is made up.
        assert!(Rewrite::DotsToLevels.apply(&all, &t("sensors..front")).is_err());
    }

    #[test]
    fn bad_rules_are_refused_before_anything_runs() {
        let f = TopicFilter::new("sensors/+").expect("filter");
        for bad in ["x/{2}", "x/{0}", "x/{a}", "x/{1"] {
            assert!(Rewrite::Template(bad.into()).check(&f).is_err(), "{bad}");
        }
        assert!(Rewrite::AddPrefix("a/#".into()).check(&f).is_err());
    }
}
