//! A SASL front end for a Kafka broker, for tests of mechanisms the broker of the tests
//! does not offer (Tansu 0.6 has no PLAIN and refuses every OAUTHBEARER login). It answers
//! the client's SaslHandshake and SaslAuthenticate requests itself, checking PLAIN
//! credentials or an OAUTHBEARER token, and relays every other request (ApiVersions before
//! the login, everything after it) to the broker behind it, which runs without
//! authentication. Kafka deployments put SASL in the broker; the exchange the client sees
//! is the same.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::kafka_users::compact;

const SASL_HANDSHAKE: i16 = 17;
const SASL_AUTHENTICATE: i16 = 36;
/// Kafka's SASL_AUTHENTICATION_FAILED.
const AUTHENTICATION_FAILED: i16 = 58;
/// Kafka's UNSUPPORTED_SASL_MECHANISM.
const UNSUPPORTED_MECHANISM: i16 = 33;

/// Who may sign in.
#[derive(Debug, Clone)]
pub enum Login {
    /// SASL/PLAIN with this user name and password.
    Plain {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
    /// SASL/OAUTHBEARER with this bearer token.
    Bearer {
        /// The token.
        token: String,
    },
}

impl Login {
    fn mechanism(&self) -> &'static str {
        match self {
            Login::Plain { .. } => "PLAIN",
            Login::Bearer { .. } => "OAUTHBEARER",
        }
    }

    /// Whether the client's first (and, for these two mechanisms, only) message signs in.
    fn accepts(&self, message: &[u8]) -> bool {
        match self {
            // authzid NUL authcid NUL password
            Login::Plain { user, password } => {
                let mut parts = message.split(|b| *b == 0);
                let (_authz, authc, given) = (parts.next(), parts.next(), parts.next());
                authc == Some(user.as_bytes()) && given == Some(password.as_bytes())
            }
            // RFC 7628: a GS2 header, then key=value pairs separated by 0x01.
            Login::Bearer { token } => {
                message.split(|b| *b == 1).any(|kv| kv == format!("auth=Bearer {token}").as_bytes())
            }
        }
    }
}

/// A bound front end; it serves once [`relay_to`](Self::relay_to) is called, and stops with
/// the test's runtime.
pub struct SaslFront {
    listener: TcpListener,
    port: u16,
}

impl SaslFront {
    /// Binds a free loopback port (known before the broker behind it starts, so the broker
    /// can advertise it).
    pub async fn bind() -> SaslFront {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the SASL front end");
        let port = listener.local_addr().expect("the front end's address").port();
        SaslFront { listener, port }
    }

    /// The port it listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Signs clients in with `login` and relays them to `broker`.
    pub fn relay_to(self, broker: SocketAddr, login: Login) {
        let login = Arc::new(login);
        tokio::spawn(async move {
            while let Ok((client, _)) = self.listener.accept().await {
                let login = login.clone();
                tokio::spawn(async move {
                    if let Ok(upstream) = TcpStream::connect(broker).await {
                        let _ = serve(client, upstream, &login).await;
                    }
                });
            }
        });
    }
}

/// Relays request by request until the client signed in, then everything as it comes.
async fn serve(
    mut client: TcpStream,
    mut upstream: TcpStream,
    login: &Login,
) -> std::io::Result<()> {
    let mut signed_in = false;
    loop {
        let request = read_frame(&mut client).await?;
        let (key, version, correlation) = header(&request)?;
        match key {
            SASL_HANDSHAKE => {
                let asked = string_after_header(&request, false)?;
                let code =
                    if asked == login.mechanism().as_bytes() { 0 } else { UNSUPPORTED_MECHANISM };
                let mut body = code.to_be_bytes().to_vec();
                body.extend_from_slice(&1i32.to_be_bytes());
                let name = login.mechanism().as_bytes();
                body.extend_from_slice(&(name.len() as i16).to_be_bytes());
                body.extend_from_slice(name);
                write_frame(&mut client, correlation, false, &body).await?;
            }
            SASL_AUTHENTICATE => {
                let flexible = version >= 2;
                let message = bytes_after_header(&request, flexible)?;
                signed_in = login.accepts(message);
                let (code, text) = if signed_in {
                    (0i16, None)
                } else {
                    (AUTHENTICATION_FAILED, Some("wrong credentials".as_bytes()))
                };
                let mut body = code.to_be_bytes().to_vec();
                if flexible {
                    match text {
                        Some(t) => compact(&mut body, t),
                        None => body.push(0),
                    }
                    body.push(1); // empty auth bytes
                    body.extend_from_slice(&0i64.to_be_bytes());
                    body.push(0);
                } else {
                    match text {
                        Some(t) => {
                            body.extend_from_slice(&(t.len() as i16).to_be_bytes());
                            body.extend_from_slice(t);
                        }
                        None => body.extend_from_slice(&(-1i16).to_be_bytes()),
                    }
                    body.extend_from_slice(&0i32.to_be_bytes());
                    if version >= 1 {
                        body.extend_from_slice(&0i64.to_be_bytes());
                    }
                }
                write_frame(&mut client, correlation, flexible, &body).await?;
                if signed_in {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    return Ok(());
                }
            }
            // Before signing in, only ApiVersions goes through (as a broker allows).
            18 if !signed_in => {
                upstream.write_all(&(request.len() as i32).to_be_bytes()).await?;
                upstream.write_all(&request).await?;
                let answer = read_frame(&mut upstream).await?;
                client.write_all(&(answer.len() as i32).to_be_bytes()).await?;
                client.write_all(&answer).await?;
            }
            _ => return Ok(()),
        }
    }
}

async fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let size = stream.read_i32().await?;
    let mut frame = vec![0; usize::try_from(size).unwrap_or(0)];
    stream.read_exact(&mut frame).await?;
    Ok(frame)
}

/// Writes a response: header v0 (the correlation id), or v1 (and no tags) when flexible.
async fn write_frame(
    stream: &mut TcpStream,
    correlation: i32,
    flexible: bool,
    body: &[u8],
) -> std::io::Result<()> {
    let mut frame = correlation.to_be_bytes().to_vec();
    if flexible {
        frame.push(0);
    }
    frame.extend_from_slice(body);
    stream.write_all(&(frame.len() as i32).to_be_bytes()).await?;
    stream.write_all(&frame).await
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

/// API key, version and correlation id.
fn header(request: &[u8]) -> std::io::Result<(i16, i16, i32)> {
    let h = request.get(..8).ok_or_else(|| bad("short request"))?;
    Ok((
        i16::from_be_bytes([h[0], h[1]]),
        i16::from_be_bytes([h[2], h[3]]),
        i32::from_be_bytes([h[4], h[5], h[6], h[7]]),
    ))
}

/// The body after a request header v1 (client id) or v2 (client id and tags).
fn body(request: &[u8], flexible: bool) -> std::io::Result<&[u8]> {
    let id = request.get(8..10).ok_or_else(|| bad("short request"))?;
    let id_len = usize::try_from(i16::from_be_bytes([id[0], id[1]]).max(0)).unwrap_or(0);
    let mut at = 10 + id_len;
    if flexible {
        // An empty tag section is one zero byte; clients send no tags here.
        at += 1;
    }
    request.get(at..).ok_or_else(|| bad("short request"))
}

/// SaslHandshake's mechanism (a string with an i16 length).
fn string_after_header(request: &[u8], flexible: bool) -> std::io::Result<&[u8]> {
    let b = body(request, flexible)?;
    let len = b.get(..2).ok_or_else(|| bad("short request"))?;
    let len = usize::try_from(i16::from_be_bytes([len[0], len[1]]).max(0)).unwrap_or(0);
    b.get(2..2 + len).ok_or_else(|| bad("short request"))
}

/// SaslAuthenticate's auth bytes (i32 length, or a compact length when flexible).
fn bytes_after_header(request: &[u8], flexible: bool) -> std::io::Result<&[u8]> {
    let b = body(request, flexible)?;
    if flexible {
        let (mut len, mut shift, mut at) = (0usize, 0, 0);
        loop {
            let byte = *b.get(at).ok_or_else(|| bad("short request"))?;
            len |= usize::from(byte & 0x7f) << shift;
            at += 1;
            if byte & 0x80 == 0 || shift > 28 {
                break;
            }
            shift += 7;
        }
        return b.get(at..at + len.saturating_sub(1)).ok_or_else(|| bad("short request"));
    }
    let len = b.get(..4).ok_or_else(|| bad("short request"))?;
    let len =
        usize::try_from(i32::from_be_bytes([len[0], len[1], len[2], len[3]]).max(0)).unwrap_or(0);
    b.get(4..4 + len).ok_or_else(|| bad("short request"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_check_what_the_mechanism_carries() {
        let plain = Login::Plain { user: "carol".into(), password: "pw".into() };
        assert!(plain.accepts(b"\0carol\0pw"));
        assert!(!plain.accepts(b"\0carol\0other"));
        assert!(!plain.accepts(b"\0dave\0pw"));
        let bearer = Login::Bearer { token: "t-1".into() };
        assert!(bearer.accepts(b"n,,\x01auth=Bearer t-1\x01\x01"));
        assert!(!bearer.accepts(b"n,,\x01auth=Bearer t-2\x01\x01"));
    }
}
