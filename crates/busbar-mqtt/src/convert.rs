//! Between busbar messages and MQTT 5 packets.

use std::time::Duration;

use busbar_core::error::{OpError, PublishError};
use busbar_core::message::{Headers, Message, QoS, header};
use busbar_core::topic::Topic;
use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS as MqttQoS;
use rumqttc::v5::mqttbytes::v5::{Publish, PublishProperties};
use tokio::time::Instant;

pub(crate) fn qos_out(q: QoS) -> MqttQoS {
    match q {
        QoS::AtMostOnce => MqttQoS::AtMostOnce,
        QoS::AtLeastOnce => MqttQoS::AtLeastOnce,
        QoS::ExactlyOnce => MqttQoS::ExactlyOnce,
    }
}

pub(crate) fn qos_in(q: MqttQoS) -> QoS {
    match q {
        MqttQoS::AtMostOnce => QoS::AtMostOnce,
        MqttQoS::AtLeastOnce => QoS::AtLeastOnce,
        MqttQoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

/// What a publish needs: payload bytes and properties.
pub(crate) fn outgoing(message: &Message) -> Result<(Bytes, PublishProperties), PublishError> {
    let payload = message.payload.to_bytes()?;
    let mut props = PublishProperties::default();
    for (name, value) in message.headers.iter() {
        if name == header::CONTENT_TYPE {
            props.content_type = Some(value.to_owned());
        } else {
            props.user_properties.push((name.to_owned(), value.to_owned()));
        }
    }
    if let Some(ttl) = message.remaining_ttl() {
        // MQTT counts whole seconds; round up so a message never expires early.
        let secs = ttl.as_millis().div_ceil(1000).clamp(1, u128::from(u32::MAX));
        props.message_expiry_interval = Some(secs as u32);
    }
    props.response_topic = message.reply_to.as_ref().map(|t| t.as_str().to_owned());
    props.correlation_data = message.correlation_id.clone();
    Ok((payload, props))
}

/// A received publish as a busbar message. Topics busbar cannot name (empty levels, control
/// characters) are refused with the topic error.
pub(crate) fn incoming(p: Publish) -> Result<(Message, Vec<usize>), String> {
    let topic = std::str::from_utf8(&p.topic).map_err(|_| "its topic is not UTF-8".to_owned())?;
    let topic = Topic::new(topic).map_err(|e| format!("topic {topic:?}: {e}"))?;
    let mut m = Message::new(topic, p.payload);
    m.qos = Some(qos_in(p.qos));
    m.retain = p.retain;
    let mut ids = Vec::new();
    if let Some(props) = p.properties {
        let mut headers = Headers::new();
        if let Some(ct) = props.content_type {
            headers.insert(header::CONTENT_TYPE, ct);
        }
        for (k, v) in props.user_properties {
            headers.insert(k, v);
        }
        m.headers = headers;
        if let Some(secs) = props.message_expiry_interval {
            m.expires_at = Instant::now().checked_add(Duration::from_secs(u64::from(secs)));
        }
        m.reply_to = props.response_topic.and_then(|t| Topic::new(t).ok());
        m.correlation_id = props.correlation_data;
        ids = props.subscription_identifiers;
    }
    Ok((m, ids))
}

/// The MQTT 3.1.1 envelope: 3.1.1 has no properties, so when a message carries headers, a
/// reply topic, a correlation id or an expiry they travel in front of the payload as
/// `MAGIC | u32 big-endian length | JSON | payload`. Messages without any of these are sent
/// as they are, so peers that are not busbar see plain payloads.
pub(crate) const ENVELOPE_MAGIC: &[u8; 8] = b"\0busbar\x01";

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Envelope {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    h: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    r: Option<String>,
    /// Correlation id, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    c: Option<String>,
    /// Seconds left before expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    e: Option<u32>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Bytes> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()
        .map(Bytes::from)
}

/// The payload to send on MQTT 3.1.1, wrapped when the message needs the envelope.
pub(crate) fn envelope(message: &Message) -> Result<(Bytes, usize), PublishError> {
    let payload = message.payload.to_bytes()?;
    let size = payload.len();
    let meta = Envelope {
        h: message.headers.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
        r: message.reply_to.as_ref().map(|t| t.as_str().to_owned()),
        c: message.correlation_id.as_ref().map(|c| hex(c)),
        e: message
            .remaining_ttl()
            .map(|ttl| ttl.as_millis().div_ceil(1000).clamp(1, u128::from(u32::MAX)) as u32),
    };
    if meta.h.is_empty() && meta.r.is_none() && meta.c.is_none() && meta.e.is_none() {
        return Ok((payload, size));
    }
    let json = serde_json::to_vec(&meta)
        .map_err(|e| OpError::broker("mqtt", format!("cannot encode the envelope: {e}")))?;
    let mut out = Vec::with_capacity(ENVELOPE_MAGIC.len() + 4 + json.len() + payload.len());
    out.extend_from_slice(ENVELOPE_MAGIC);
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&payload);
    Ok((Bytes::from(out), size))
}

/// A received MQTT 3.1.1 publish, unwrapping the envelope when there is one. A payload that
/// starts like an envelope but does not parse is delivered as it is.
pub(crate) fn incoming_v4(p: rumqttc::Publish) -> Result<(Message, Vec<usize>), String> {
    let topic = Topic::new(&p.topic).map_err(|e| format!("topic {:?}: {e}", p.topic))?;
    let mut payload = p.payload;
    let mut meta = Envelope::default();
    if payload.len() >= ENVELOPE_MAGIC.len() + 4 && payload.starts_with(ENVELOPE_MAGIC) {
        let at = ENVELOPE_MAGIC.len();
        let len =
            u32::from_be_bytes([payload[at], payload[at + 1], payload[at + 2], payload[at + 3]])
                as usize;
        let start = at + 4;
        if let Some(json) = payload.get(start..start.saturating_add(len))
            && let Ok(parsed) = serde_json::from_slice::<Envelope>(json)
        {
            meta = parsed;
            payload = payload.slice(start + len..);
        }
    }
    let mut m = Message::new(topic, payload);
    m.qos = Some(match p.qos {
        rumqttc::QoS::AtMostOnce => QoS::AtMostOnce,
        rumqttc::QoS::AtLeastOnce => QoS::AtLeastOnce,
        rumqttc::QoS::ExactlyOnce => QoS::ExactlyOnce,
    });
    m.retain = p.retain;
    m.headers = meta.h.into_iter().collect::<Headers>();
    m.reply_to = meta.r.and_then(|t| Topic::new(t).ok());
    m.correlation_id = meta.c.as_deref().and_then(unhex);
    if let Some(secs) = meta.e {
        m.expires_at = Instant::now().checked_add(Duration::from_secs(u64::from(secs)));
    }
    Ok((m, Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(payload: Bytes) -> rumqttc::Publish {
        rumqttc::Publish::new("a/b", rumqttc::QoS::AtLeastOnce, payload)
    }

    #[test]
    fn plain_messages_travel_unwrapped() {
        let m = Message::new(Topic::new("a/b").expect("topic"), &b"plain"[..]);
        assert_eq!(envelope(&m).expect("encode").0.as_ref(), b"plain");
    }

    #[test]
    fn the_envelope_carries_headers_reply_and_correlation() {
        let mut m = Message::new(Topic::new("a/b").expect("topic"), &b"body"[..])
            .with_header("k", "v")
            .with_expiry(Duration::from_secs(30));
        m.reply_to = Some(Topic::new("r/1").expect("topic"));
        m.correlation_id = Some(Bytes::from_static(&[0, 1, 254, 255]));
        let (wire, _) = envelope(&m).expect("encode");
        assert!(wire.starts_with(ENVELOPE_MAGIC));
        let (back, ids) = incoming_v4(publish(wire)).expect("decode");
        assert!(ids.is_empty());
        assert_eq!(back.payload.to_bytes().expect("bytes").as_ref(), b"body");
        assert_eq!(back.headers.get("k"), Some("v"));
        assert_eq!(back.reply_to.as_ref().map(|t| t.as_str()), Some("r/1"));
        assert_eq!(back.correlation_id.as_deref(), Some(&[0u8, 1, 254, 255][..]));
        assert!(back.remaining_ttl().is_some_and(|t| t > Duration::from_secs(28)));
    }

    #[test]
    fn a_payload_that_only_looks_like_an_envelope_is_kept_whole() {
        let mut fake = ENVELOPE_MAGIC.to_vec();
        fake.extend_from_slice(&1000u32.to_be_bytes());
        fake.extend_from_slice(b"not json");
        let (back, _) = incoming_v4(publish(Bytes::from(fake.clone()))).expect("decode");
        assert_eq!(back.payload.to_bytes().expect("bytes").as_ref(), &fake[..]);
    }
}

/// The MQTT 3.1.1 envelope decoder on malformed input: a message or an error, never a panic.
#[cfg(test)]
mod fuzz {
    use busbar_testkit::fuzz::Fuzz;

    use super::*;

    #[test]
    fn fuzz_envelope_v311() {
        let corpus = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/envelope_v311");
        Fuzz::new("mqtt_envelope_v311", corpus)
            .dictionary(&["\0busbar\x01", "\"h\":", "\"r\":", "\"c\":", "\"e\":", "null"])
            .run(|input| {
                let publish =
                    rumqttc::Publish::new("fuzz/topic", rumqttc::QoS::AtLeastOnce, input.to_vec());
                let _ = incoming_v4(publish);
            });
    }
}
