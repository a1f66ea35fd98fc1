//! A TLS front end for a broker that speaks plain TCP, for TLS tests of clients whose
//! broker cannot be given a certificate here (Tansu 0.6's command line refuses `--cert`
//! together with `--key`). Deployments put such a terminator (HAProxy, stunnel) in front of
//! a broker in the same way; everything past the handshake is the broker's.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

use crate::Pki;

/// A bound front end; it relays once [`relay_to`](Self::relay_to) is called, and stops
/// with the test's runtime.
pub struct TlsFront {
    listener: TcpListener,
    port: u16,
}

impl TlsFront {
    /// Binds a free loopback port (known before the broker behind it starts, so the broker
    /// can advertise it).
    pub async fn bind() -> TlsFront {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the TLS front end");
        let port = listener.local_addr().expect("the front end's address").port();
        TlsFront { listener, port }
    }

    /// The port it listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Accepts TLS clients with `pki`'s server certificate and relays each to `broker`.
    pub fn relay_to(self, broker: SocketAddr, pki: &Pki) {
        let acceptor = crate::websocket::acceptor(pki);
        tokio::spawn(async move {
            while let Ok((stream, _)) = self.listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let mut tls = match acceptor.accept(stream).await {
                        Ok(tls) => tls,
                        // Tests of refused certificates end here, by design.
                        Err(e) => return eprintln!("TLS front end: handshake failed: {e}"),
                    };
                    if let Ok(mut tcp) = TcpStream::connect(broker).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut tcp).await;
                    }
                });
            }
        });
    }
}
