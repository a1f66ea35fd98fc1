//! Building rumqttc's client and event loop for one connection: address and transport
//! (TCP, TLS, WebSockets), keep-alive, session, credentials, packet limits and the will.

use busbar_core::error::ConnectError;
use busbar_core::message::{Message, QoS};
use rumqttc::NetworkOptions;

use super::state::MQTT_MAX_PACKET;
use crate::convert::qos_out;
use busbar_transport_kit::Server;

use crate::protocol::{Client, Confirms, Events, Options, Version};
use crate::settings::Settings;

/// Requests rumqttc may hold before user calls wait (its own bounded channel).
const REQUEST_CHANNEL: usize = 1024;

/// MQTT 5: most QoS 1 and 2 publishes in flight at once, whatever larger window the broker
/// grants. rumqttc sizes its table of publishes in flight by this limit when the connection
/// is made, one slot per packet id; left unset it takes 65,535 slots, about 13 MiB of an
/// idle process. Brokers grant less by default (Mosquitto 20 unless configured), so this
/// bounds memory, not the pace.
const OUTGOING_WINDOW: u16 = 1024;

/// The client and event loop for `settings`, connecting to `server` and presenting
/// `client_id`, `credentials` and `will`.
pub(super) fn build(
    settings: &Settings,
    server: &Server,
    client_id: &str,
    credentials: Option<(String, String)>,
    will: Option<&Message>,
) -> Result<(Client, Events), ConnectError> {
    let confirms = std::sync::Arc::new(Confirms::default());
    Ok(match options(settings, server, client_id, credentials, will)? {
        Options::V5(mqtt) => {
            let (c, l) = rumqttc::v5::AsyncClient::new(*mqtt, REQUEST_CHANNEL);
            (Client::v5(c, confirms.clone()), Events::v5(l, confirms, server))
        }
        Options::V4(mqtt, network) => {
            let (c, mut l) = rumqttc::AsyncClient::new(*mqtt, REQUEST_CHANNEL);
            l.set_network_options(network);
            (Client::v4(c, confirms.clone()), Events::v4(l, confirms, server))
        }
    })
}

/// rumqttc's options for a connection to `server`: what [`build`] starts with, and what
/// the event loop is given to move to another server of the list.
pub(super) fn options(
    settings: &Settings,
    server: &Server,
    client_id: &str,
    credentials: Option<(String, String)>,
    will: Option<&Message>,
) -> Result<Options, ConnectError> {
    let tls_config = match &settings.tls {
        Some(tls) => Some(rumqttc::TlsConfiguration::Rustls(busbar_tls::client_config(tls)?)),
        None => None,
    };
    // For WebSockets rumqttc takes the whole URL as the broker address. It is built here
    // from the scheme that was asked for, so a wss:// connection can never go out as plain
    // ws://.
    let (broker_addr, transport) = match (&settings.websocket_path, tls_config) {
        (None, None) => (server.host.clone(), None),
        (None, Some(tls)) => (server.host.clone(), Some(rumqttc::Transport::Tls(tls))),
        (Some(path), None) => (format!("ws://{server}{path}"), Some(rumqttc::Transport::Ws)),
        (Some(path), Some(tls)) => {
            (format!("wss://{server}{path}"), Some(rumqttc::Transport::Wss(tls)))
        }
    };
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    network.set_connection_timeout(whole_seconds(settings.connect_timeout));
    let will = match will {
        Some(w) => Some((
            w.topic.as_str().to_owned(),
            w.payload.to_bytes().map_err(will_error)?,
            w.effective_qos(QoS::ExactlyOnce),
            w.retain,
        )),
        None => None,
    };
    Ok(match settings.version {
        Version::V5 => {
            use rumqttc::v5::mqttbytes::v5::LastWill;
            let mut mqtt = rumqttc::v5::MqttOptions::new(client_id, broker_addr, server.port);
            mqtt.set_keep_alive(settings.keep_alive);
            mqtt.set_connection_timeout(whole_seconds(settings.connect_timeout));
            mqtt.set_clean_start(settings.session_expiry.is_none());
            mqtt.set_outgoing_inflight_upper_limit(OUTGOING_WINDOW);
            mqtt.set_manual_acks(settings.acknowledges_after_hand_over());
            if let Some(expiry) = settings.session_expiry {
                mqtt.set_session_expiry_interval(Some(
                    expiry.as_secs().min(u64::from(u32::MAX)) as u32
                ));
            }
            if let Some((user, pass)) = credentials {
                mqtt.set_credentials(user, pass);
            }
            // rumqttc refuses incoming packets over 10 KiB unless told otherwise: accept what
            // MQTT can carry, so the broker's own limit is the one that applies.
            mqtt.set_max_packet_size(Some(MQTT_MAX_PACKET));
            mqtt.set_network_options(network);
            if let Some(t) = transport {
                mqtt.set_transport(t);
            }
            if let Some((topic, payload, qos, retain)) = will {
                mqtt.set_last_will(LastWill::new(
                    topic,
                    payload.to_vec(),
                    qos_out(qos),
                    retain,
                    None,
                ));
            }
            Options::V5(Box::new(mqtt))
        }
        Version::V311 => {
            let mut mqtt = rumqttc::MqttOptions::new(client_id, broker_addr, server.port);
            mqtt.set_keep_alive(settings.keep_alive);
            // 3.1.1 has no expiry interval: a persistent session lasts until the broker's own
            // limit.
            mqtt.set_clean_session(settings.session_expiry.is_none());
            mqtt.set_manual_acks(settings.acknowledges_after_hand_over());
            if let Some((user, pass)) = credentials {
                mqtt.set_credentials(user, pass);
            }
            let max = MQTT_MAX_PACKET as usize;
            mqtt.set_max_packet_size(max, max);
            if let Some(t) = transport {
                mqtt.set_transport(t);
            }
            if let Some((topic, payload, qos, retain)) = will {
                let qos = match qos {
                    QoS::AtMostOnce => rumqttc::QoS::AtMostOnce,
                    QoS::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
                    QoS::ExactlyOnce => rumqttc::QoS::ExactlyOnce,
                };
                mqtt.set_last_will(rumqttc::LastWill::new(topic, payload, qos, retain));
            }
            Options::V4(Box::new(mqtt), network)
        }
    })
}

/// A will whose typed payload cannot be encoded: the options are unusable.
fn will_error(e: busbar_core::codec::CodecError) -> ConnectError {
    busbar_transport_kit::endpoint::config_error(format!("the last will cannot be encoded: {e}"))
}

/// rumqttc bounds each connection attempt in whole seconds: at least one, rounded up.
fn whole_seconds(d: std::time::Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0)).max(1)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use busbar_testkit::{BrokerProcess, MosquittoConfig, skip_if_missing};

    use super::*;
    use crate::protocol::Happened;

    /// An event loop connected to `url` as `id`.
    async fn connected(url: &str, id: &str) -> Events {
        let settings = Settings::parse(url).expect("url");
        let (_client, mut events) =
            build(&settings, &settings.servers[0], id, None, None).expect("options");
        loop {
            match events.poll().await {
                Ok(Happened::Connected { .. }) => return events,
                Ok(_) => {}
                Err(e) => panic!("connect: {}", e.reason()),
            }
        }
    }

    /// On a broker with Nagle's algorithm on (Mosquitto's packaged default), each
    /// connection finds its own socket to acknowledge at once, even when several connect
    /// to the same broker at the same moment; on both protocol versions.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_connection_finds_its_own_socket() {
        let config = MosquittoConfig::new().line("set_tcp_nodelay false");
        let test = "each_connection_finds_its_own_socket";
        let Some(broker) = skip_if_missing(test, BrokerProcess::mosquitto(config).await) else {
            return;
        };
        let v5 = broker.url();
        let v4 = format!("{v5}?version=3.1.1");
        let (a, b, c) = tokio::join!(
            connected(&v5, "quick-a"),
            connected(&v5, "quick-b"),
            connected(&v4, "quick-c")
        );
        let sockets: Vec<_> = [&a, &b, &c].iter().map(|e| e.quick_ack_socket()).collect();
        assert!(sockets.iter().all(Option::is_some), "every socket found: {sockets:?}");
        let mut distinct = sockets.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 3, "each its own: {sockets:?}");
    }
}
