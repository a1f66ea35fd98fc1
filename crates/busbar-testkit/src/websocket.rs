//! A WebSocket front end for an MQTT broker, for MQTT-over-WebSocket tests.
//!
//! Debian's Mosquitto is built without WebSockets. Deployments often put nginx or HAProxy in
//! front of a broker for `ws://` and `wss://`; this is that front end, run in the test: it
//! accepts WebSocket upgrades (over TLS with a [`Pki`] certificate when asked), answers the
//! `mqtt` subprotocol, and relays the binary frames to the broker over TCP. Everything MQTT is
//! the broker's; the front end only carries bytes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use async_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use ws_stream_tungstenite::WsStream;

use crate::Pki;

/// A running front end; it stops with the test's runtime.
pub struct WebSocketFront {
    port: u16,
    paths: Arc<Mutex<Vec<String>>>,
}

impl WebSocketFront {
    /// Relays WebSocket clients to the MQTT broker at `broker`; over TLS with `pki`'s server
    /// certificate when it is given.
    pub async fn start(broker: SocketAddr, pki: Option<&Pki>) -> WebSocketFront {
        let tls = pki.map(acceptor);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the front end");
        let port = listener.local_addr().expect("the front end's address").port();
        let paths = Arc::new(Mutex::new(Vec::new()));
        let seen = paths.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (tls, seen) = (tls.clone(), seen.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(stream) => relay(stream, broker, seen).await,
                            // Tests of refused certificates end here, by design.
                            Err(e) => eprintln!("front end: TLS handshake failed: {e}"),
                        },
                        None => relay(stream, broker, seen).await,
                    }
                });
            }
        });
        WebSocketFront { port, paths }
    }

    /// The port it listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The request paths clients asked for, in order.
    pub fn paths(&self) -> Vec<String> {
        self.paths.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

pub(crate) fn acceptor(pki: &Pki) -> TlsAcceptor {
    let (chain, key) = pki.server_identity();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("the server certificate");
    TlsAcceptor::from(Arc::new(config))
}

/// Upgrades one client connection to a WebSocket and relays it to the broker until either
/// side closes.
async fn relay<S>(stream: S, broker: SocketAddr, seen: Arc<Mutex<Vec<String>>>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The callback's signature, large error included, is tungstenite's.
    #[allow(clippy::result_large_err)]
    let answer = move |request: &Request, mut response: Response| {
        seen.lock().unwrap_or_else(|p| p.into_inner()).push(request.uri().path().to_owned());
        let offered = request
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|p| p.trim() == "mqtt"));
        if !offered {
            let mut refusal =
                ErrorResponse::new(Some("MQTT clients offer the mqtt subprotocol".into()));
            *refusal.status_mut() = StatusCode::BAD_REQUEST;
            return Err(refusal);
        }
        response.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static("mqtt"));
        Ok(response)
    };
    let Ok(ws) = async_tungstenite::tokio::accept_hdr_async(stream, answer).await else {
        return;
    };
    let Ok(mut tcp) = TcpStream::connect(broker).await else {
        return;
    };
    let mut ws = WsStream::new(ws);
    let _ = tokio::io::copy_bidirectional(&mut ws, &mut tcp).await;
}
