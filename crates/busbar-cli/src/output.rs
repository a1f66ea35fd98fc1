//! How `sub` prints what arrives: `topic  payload` lines (control characters escaped, so one
//! message is one line), JSON lines, the payload alone (`--raw`), or a template of the
//! user's (`--format`).

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use busbar::{Message, QoS};

/// One message as `sub` prints it, from busbar or from a dialect.
pub struct Arrival<'a> {
    pub topic: &'a str,
    /// The body as it came (a dialect's: its JSON, written out again).
    pub bytes: std::borrow::Cow<'a, [u8]>,
    /// Where the transport says (busbar's profile).
    pub qos: Option<QoS>,
    pub retain: Option<bool>,
    pub headers: Vec<(&'a str, &'a str)>,
    /// The decoded body of a dialect.
    pub value: Option<&'a serde_json::Value>,
    pub at: SystemTime,
}

impl<'a> Arrival<'a> {
    pub fn of_message(message: &'a Message, at: SystemTime) -> anyhow::Result<Self> {
        Ok(Arrival {
            topic: message.topic.as_str(),
            bytes: std::borrow::Cow::Owned(
                message.payload.to_bytes().context("the payload")?.to_vec(),
            ),
            // A transport that did not say carried it at most once.
            qos: Some(message.qos.unwrap_or(QoS::AtMostOnce)),
            retain: Some(message.retain),
            headers: message.headers.iter().collect(),
            value: None,
            at,
        })
    }

    pub fn of_json(topic: &'a str, value: &'a serde_json::Value, at: SystemTime) -> Self {
        Arrival {
            topic,
            bytes: std::borrow::Cow::Owned(value.to_string().into_bytes()),
            qos: None,
            retain: None,
            headers: Vec::new(),
            value: Some(value),
            at,
        }
    }

    fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.bytes).ok()
    }

    fn hex(&self) -> String {
        self.bytes.iter().fold(String::with_capacity(self.bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }

    /// The JSON line: the same keys under every profile (`payload` as a JSON value for a
    /// dialect's body, as text for busbar's, `payload_hex` when it is not text).
    fn json(&self) -> serde_json::Value {
        let mut line = serde_json::Map::new();
        line.insert("topic".into(), self.topic.into());
        match (self.value, self.text()) {
            (Some(value), _) => {
                line.insert("payload".into(), value.clone());
            }
            (None, Some(text)) => {
                line.insert("payload".into(), text.into());
            }
            (None, None) => {
                line.insert("payload_hex".into(), self.hex().into());
            }
        }
        if let Some(qos) = self.qos {
            line.insert("qos".into(), (qos as u8).into());
        }
        if let Some(retain) = self.retain {
            line.insert("retain".into(), retain.into());
        }
        if !self.headers.is_empty() {
            let headers: Vec<_> = self.headers.iter().map(|(k, v)| [*k, *v]).collect();
            line.insert("headers".into(), serde_json::json!(headers));
        }
        line.insert("received_at".into(), stamp(self.at).into());
        serde_json::Value::Object(line)
    }
}

/// The receive time as JavaScript writes a date (`2026-12-07T13:40:01.123Z`).
fn stamp(at: SystemTime) -> String {
    busbar::time::iso8601_millis(at)
}

/// How messages are printed.
#[derive(Debug, Clone)]
pub enum Style {
    /// `topic  payload`, control characters escaped.
    Lines,
    /// One JSON object per message.
    Json,
    /// The payload alone, as it came, then a newline.
    Raw,
    /// A template of the user's.
    Format(Template),
}

impl Style {
    /// What to write for one arrival (a line ending included).
    pub fn print(&self, a: &Arrival<'_>) -> Vec<u8> {
        match self {
            Style::Lines => {
                let mut line = match a.text() {
                    Some(t) => format!("{}  {}", a.topic, escaped(t)),
                    None => format!("{}  ({} bytes, not text)", a.topic, a.bytes.len()),
                };
                line.push('\n');
                line.into_bytes()
            }
            Style::Json => {
                let mut line = a.json().to_string();
                line.push('\n');
                line.into_bytes()
            }
            Style::Raw => {
                let mut bytes = a.bytes.to_vec();
                bytes.push(b'\n');
                bytes
            }
            Style::Format(template) => {
                let mut line = template.fill(a);
                line.push('\n');
                line.into_bytes()
            }
        }
    }
}

/// Control characters as escapes (`\n`, `\t`, `\u{1b}`), so a payload cannot break a line
/// or write to the terminal.
fn escaped(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() })
        .collect()
}

/// One piece of a `--format` template.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Topic,
    Payload,
    Hex,
    Qos,
    Retain,
    Time,
    Unix,
    Header(String),
    Headers,
    Json,
}

/// A `--format` template: text with `{topic}`, `{payload}`, `{hex}`, `{qos}`, `{retain}`,
/// `{time}` (the receive time, UTC), `{unix}` (seconds since 1970, milliseconds after the
/// point), `{header:NAME}`, `{headers}` (a JSON object), `{json}` (the `--json` line);
/// `{{` and `}}` for braces, `\n` and `\t` for a new line and a tab.
#[derive(Debug, Clone, PartialEq)]
pub struct Template(Vec<Piece>);

impl Template {
    /// For clap's `value_parser`: an unknown placeholder is a usage error that names it.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '\\' if chars.peek() == Some(&'n') => {
                    chars.next();
                    literal.push('\n');
                }
                '\\' if chars.peek() == Some(&'t') => {
                    chars.next();
                    literal.push('\t');
                }
                '{' => {
                    let name: String = chars.by_ref().take_while(|c| *c != '}').collect();
                    let piece = match name.as_str() {
                        "topic" => Piece::Topic,
                        "payload" => Piece::Payload,
                        "hex" => Piece::Hex,
                        "qos" => Piece::Qos,
                        "retain" => Piece::Retain,
                        "time" => Piece::Time,
                        "unix" => Piece::Unix,
                        "headers" => Piece::Headers,
                        "json" => Piece::Json,
                        other => match other.strip_prefix("header:") {
                            Some(h) if !h.is_empty() => Piece::Header(h.to_owned()),
                            _ => {
                                return Err(format!(
                                    "{{{other}}} is not a placeholder: use {{topic}}, \
                                     {{payload}}, {{hex}}, {{qos}}, {{retain}}, {{time}}, \
                                     {{unix}}, {{header:NAME}}, {{headers}}, {{json}} (and \
                                     {{{{ }}}} for braces)"
                                ));
                            }
                        },
                    };
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(piece);
                }
                '}' => return Err("a lone } in the format: write }} for a brace".into()),
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Template(pieces))
    }

    fn fill(&self, a: &Arrival<'_>) -> String {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Topic => out.push_str(a.topic),
                Piece::Payload => match a.text() {
                    Some(t) => out.push_str(t),
                    None => out.push_str(&a.hex()),
                },
                Piece::Hex => out.push_str(&a.hex()),
                Piece::Qos => {
                    if let Some(q) = a.qos {
                        let _ = write!(out, "{}", q as u8);
                    }
                }
                Piece::Retain => {
                    if let Some(r) = a.retain {
                        let _ = write!(out, "{r}");
                    }
                }
                Piece::Time => out.push_str(&stamp(a.at)),
                Piece::Unix => {
                    let since = a.at.duration_since(UNIX_EPOCH).unwrap_or_default();
                    let _ = write!(out, "{}.{:03}", since.as_secs(), since.subsec_millis());
                }
                Piece::Header(name) => {
                    if let Some((_, v)) = a.headers.iter().find(|(k, _)| k == name) {
                        out.push_str(v);
                    }
                }
                Piece::Headers => {
                    let map: serde_json::Map<String, serde_json::Value> =
                        a.headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).into())).collect();
                    out.push_str(&serde_json::Value::Object(map).to_string());
                }
                Piece::Json => out.push_str(&a.json().to_string()),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrival<'a>(bytes: &'a [u8], headers: Vec<(&'a str, &'a str)>) -> Arrival<'a> {
        Arrival {
            topic: "plant/t",
            bytes: std::borrow::Cow::Borrowed(bytes),
            qos: Some(QoS::AtLeastOnce),
            retain: Some(false),
            headers,
            value: None,
            at: UNIX_EPOCH + std::time::Duration::from_millis(1_765_000_000_123),
        }
    }

    #[test]
    fn templates_fill_placeholders() {
        let t = Template::parse("{topic} q{qos} {payload}|{header:unit}|{hex}|{unix}{{x}}\\t.")
            .expect("valid");
        let a = arrival(b"81.5", vec![("unit", "degC")]);
        assert_eq!(t.fill(&a), "plant/t q1 81.5|degC|38312e35|1765000000.123{x}\t.");
        assert!(Template::parse("{nope}").expect_err("unknown").contains("{nope}"));
        assert!(Template::parse("a } b").is_err());
    }

    #[test]
    fn lines_keep_one_message_on_one_line() {
        let a = arrival(b"two\nlines\x1b[31m", Vec::new());
        let printed = Style::Lines.print(&a);
        assert_eq!(String::from_utf8(printed).expect("text"), "plant/t  two\\nlines\\u{1b}[31m\n");
        let raw = Style::Raw.print(&a);
        assert_eq!(raw, b"two\nlines\x1b[31m\n");
    }
}
