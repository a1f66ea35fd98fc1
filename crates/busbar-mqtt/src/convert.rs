//! Between busbar messages and MQTT 5 packets.

use std::time::Duration;

use busbar_core::message::{Headers, Message, QoS, header};
use busbar_core::topic::Topic;
use busbar_core::{Error, Result};
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

fn qos_in(q: MqttQoS) -> QoS {
    match q {
        MqttQoS::AtMostOnce => QoS::AtMostOnce,
        MqttQoS::AtLeastOnce => QoS::AtLeastOnce,
        MqttQoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

/// What a publish needs: payload bytes and properties.
pub(crate) fn outgoing(message: &Message) -> Result<(Bytes, PublishProperties)> {
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
pub(crate) fn incoming(p: Publish) -> Result<(Message, Vec<usize>)> {
    let topic = std::str::from_utf8(&p.topic).map_err(|_| Error::Broker {
        transport: "mqtt",
        message: "topic is not UTF-8".into(),
        source: None,
    })?;
    let topic = Topic::new(topic)?;
    let mut m = Message::new(topic, p.payload);
    m.qos = qos_in(p.qos);
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
