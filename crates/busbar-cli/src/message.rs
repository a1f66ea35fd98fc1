//! Reading messages from the command line, and printing what arrives.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, bail};
use busbar::{Message, QoS};
use serde::Serialize;

/// Where a message body comes from: the argument, `--file`, or standard input.
#[derive(clap::Args, Debug, Clone)]
pub struct Body {
    /// The body, as text ("-" reads standard input).
    #[arg(value_name = "MESSAGE")]
    text: Option<String>,
    /// Read the body from this file.
    #[arg(long, value_name = "FILE", conflicts_with = "text")]
    file: Option<PathBuf>,
}

impl Body {
    /// The bodies to send: one from an argument or a file; with "-", one per line of
    /// standard input. No body at all is an empty message.
    pub fn read(&self) -> anyhow::Result<Vec<Vec<u8>>> {
        if let Some(path) = &self.file {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            return Ok(vec![bytes]);
        }
        match self.text.as_deref() {
            Some("-") => {
                let mut all = String::new();
                std::io::stdin().read_to_string(&mut all).context("reading standard input")?;
                Ok(all.lines().map(|l| l.as_bytes().to_vec()).collect())
            }
            Some(text) => Ok(vec![text.as_bytes().to_vec()]),
            None => Ok(vec![Vec::new()]),
        }
    }
}

/// `--header k=v`, any number of them.
pub fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not NAME=VALUE")),
    }
}

pub fn parse_qos(s: &str) -> Result<QoS, String> {
    match s {
        "0" => Ok(QoS::AtMostOnce),
        "1" => Ok(QoS::AtLeastOnce),
        "2" => Ok(QoS::ExactlyOnce),
        _ => Err(format!("{s:?} is not a QoS (0, 1 or 2)")),
    }
}

/// What `sub --json` prints for one message.
#[derive(Serialize)]
struct Line<'a> {
    topic: &'a str,
    /// The body as text when it is UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a str>,
    /// The body's bytes in hex when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_hex: Option<String>,
    qos: u8,
    retain: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    headers: Vec<(&'a str, &'a str)>,
}

/// One message as a line: `topic  payload`, or a JSON object with `json`.
pub fn render(message: &Message, json: bool) -> anyhow::Result<String> {
    let bytes = message.payload.to_bytes().context("the payload")?;
    let text = std::str::from_utf8(&bytes).ok();
    if !json {
        return Ok(match text {
            Some(t) => format!("{}  {t}", message.topic.as_str()),
            None => format!("{}  ({} bytes, not text)", message.topic.as_str(), bytes.len()),
        });
    }
    let line = Line {
        topic: message.topic.as_str(),
        payload: text,
        payload_hex: text.is_none().then(|| bytes.iter().map(|b| format!("{b:02x}")).collect()),
        // A transport that did not say carried it at most once.
        qos: message.qos.unwrap_or(QoS::AtMostOnce) as u8,
        retain: message.retain,
        headers: message.headers.iter().collect(),
    };
    Ok(serde_json::to_string(&line)?)
}

/// A dialect's JSON body as a line: `topic  {json}`, or `{"topic": ..., "payload": {json}}`.
pub fn render_json(topic: &str, payload: &serde_json::Value, json: bool) -> String {
    if json {
        serde_json::json!({"topic": topic, "payload": payload}).to_string()
    } else {
        format!("{topic}  {payload}")
    }
}

pub fn check_rate(rate: Option<f64>) -> anyhow::Result<Option<std::time::Duration>> {
    match rate {
        None => Ok(None),
        Some(r) if r.is_finite() && r > 0.0 => {
            Ok(Some(std::time::Duration::from_secs_f64(1.0 / r)))
        }
        Some(r) => bail!("--rate {r} is not a positive number of messages per second"),
    }
}

/// The moment `seconds` from now, for a command-line deadline: a number too large to reach
/// means no deadline, not a crash.
pub fn deadline_in(seconds: f64, what: &str) -> anyhow::Result<Option<tokio::time::Instant>> {
    let span = std::time::Duration::try_from_secs_f64(seconds)
        .map_err(|_| anyhow::anyhow!("{what} {seconds} is not a number of seconds"))?;
    Ok(tokio::time::Instant::now().checked_add(span))
}

/// A positive number of seconds on the command line (`5`, `0.25`), for clap's
/// `value_parser`: anything else is a usage error that shows the value.
pub fn positive_secs(s: &str) -> Result<std::time::Duration, String> {
    s.parse::<f64>()
        .ok()
        .and_then(|v| std::time::Duration::try_from_secs_f64(v).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{s:?} is not a positive number of seconds"))
}
