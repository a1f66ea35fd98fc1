//! SCRAM users on a Kafka broker, for tests of SASL authentication.
//!
//! Kafka brokers keep SCRAM credentials themselves and take new ones through the
//! AlterUserScramCredentials request (API key 51), which neither librdkafka's Rust binding
//! nor kafka-python offers; this module sends it over a plain connection. The broker must
//! accept the request unauthenticated, so tests add users before they switch
//! authentication on (see [`BrokerProcess::restart_with`](crate::BrokerProcess::restart_with)).

use std::num::NonZeroU32;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::TestkitError;

/// The SCRAM mechanisms Kafka knows, with their numbers on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scram {
    /// SCRAM-SHA-256.
    Sha256,
    /// SCRAM-SHA-512.
    Sha512,
}

/// Iterations of the password hash; Kafka's minimum.
const ITERATIONS: u32 = 4096;
const API_KEY: i16 = 51;
const CORRELATION_ID: i32 = 7;

/// Adds (or replaces) the SCRAM credentials of `user` on the Kafka broker at
/// 127.0.0.1:`port`.
///
/// # Errors
///
/// [`TestkitError::Admin`] when the broker cannot be reached, answers something that is not
/// an AlterUserScramCredentials response, or refuses the credentials.
pub async fn add_scram_user(
    port: u16,
    user: &str,
    password: &str,
    mechanism: Scram,
) -> Result<(), TestkitError> {
    let fail = |reason: String| TestkitError::Admin { action: "add a SCRAM user", reason };
    let request = request(user, password, mechanism);
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(&request).await?;
        let size = stream.read_i32().await?;
        let mut response = vec![0; usize::try_from(size).unwrap_or(0)];
        stream.read_exact(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| fail(format!("127.0.0.1:{port} did not answer within 10 s")))?
        .map_err(|e| fail(format!("127.0.0.1:{port}: {e}")))?;
    check(&response).map_err(fail)
}

/// The framed request: header v2 and body v0, both in Kafka's flexible encoding.
fn request(user: &str, password: &str, mechanism: Scram) -> Vec<u8> {
    let (algorithm, length, number) = match mechanism {
        Scram::Sha256 => (ring::pbkdf2::PBKDF2_HMAC_SHA256, 32, 1u8),
        Scram::Sha512 => (ring::pbkdf2::PBKDF2_HMAC_SHA512, 64, 2u8),
    };
    let salt = *b"busbar-test-salt";
    let mut salted = vec![0; length];
    let iterations = NonZeroU32::new(ITERATIONS).unwrap_or(NonZeroU32::MIN);
    ring::pbkdf2::derive(algorithm, iterations, &salt, password.as_bytes(), &mut salted);

    let mut body = Vec::new();
    body.extend_from_slice(&API_KEY.to_be_bytes());
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&CORRELATION_ID.to_be_bytes());
    let client = b"busbar-testkit";
    body.extend_from_slice(&(client.len() as i16).to_be_bytes());
    body.extend_from_slice(client);
    body.push(0); // header tags
    body.push(1); // deletions: none (a compact array stores its length + 1)
    body.push(2); // upsertions: one
    compact(&mut body, user.as_bytes());
    body.push(number);
    body.extend_from_slice(&(ITERATIONS as i32).to_be_bytes());
    compact(&mut body, &salt);
    compact(&mut body, &salted);
    body.push(0); // upsertion tags
    body.push(0); // body tags
    let mut framed = (body.len() as i32).to_be_bytes().to_vec();
    framed.extend_from_slice(&body);
    framed
}

/// Appends a compact string or byte string: its length + 1 as an unsigned varint, then it.
pub(crate) fn compact(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut n = bytes.len() as u64 + 1;
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out.extend_from_slice(bytes);
}

/// Reads the response (header v1, body v0): every result must have error code 0.
fn check(response: &[u8]) -> Result<(), String> {
    let mut r = Reader(response);
    if r.i32()? != CORRELATION_ID {
        return Err("the answer is not to this request".into());
    }
    r.tags()?;
    let _throttle = r.i32()?;
    let results = r.varint()?.saturating_sub(1);
    for _ in 0..results {
        let user = String::from_utf8_lossy(r.compact()?.unwrap_or_default()).into_owned();
        let code = r.i16()?;
        let message = r.compact()?.map(|m| String::from_utf8_lossy(m).into_owned());
        r.tags()?;
        if code != 0 {
            return Err(format!(
                "the broker refused {user:?}: error {code} {}",
                message.unwrap_or_default()
            ));
        }
    }
    Ok(())
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("the answer is cut short".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn i16(&mut self) -> Result<i16, String> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32, String> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a number in the answer is too long".into())
    }

    /// A compact nullable string: `None` for null.
    fn compact(&mut self) -> Result<Option<&'a [u8]>, String> {
        match self.varint()? {
            0 => Ok(None),
            n => self.take(usize::try_from(n - 1).map_err(|e| e.to_string())?).map(Some),
        }
    }

    fn tags(&mut self) -> Result<(), String> {
        for _ in 0..self.varint()? {
            let _tag = self.varint()?;
            let size = self.varint()?;
            self.take(usize::try_from(size).map_err(|e| e.to_string())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_lengths_are_varints_of_length_plus_one() {
        let mut out = Vec::new();
        compact(&mut out, &[0xaa; 200]);
        assert_eq!(&out[..2], &[0xc9, 0x01]);
        assert_eq!(out.len(), 202);
    }

    #[test]
    fn a_refusal_names_the_user_and_the_error() {
        let mut answer = CORRELATION_ID.to_be_bytes().to_vec();
        answer.push(0);
        answer.extend_from_slice(&0i32.to_be_bytes());
        answer.push(2);
        compact(&mut answer, b"alice");
        answer.extend_from_slice(&35i16.to_be_bytes());
        compact(&mut answer, b"no");
        answer.push(0);
        answer.push(0);
        let err = check(&answer).unwrap_err();
        assert!(err.contains("alice") && err.contains("35"), "{err}");
        assert!(check(&answer[..5]).is_err());
    }
}
