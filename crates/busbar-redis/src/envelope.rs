//! The envelope that carries what Redis has no place for: headers, reply topic, correlation
//! id, expiry, and (on lists, which have no channel name) the topic.
//!
//! ```text
//! plain:   the payload bytes, unchanged
//! wrapped: "\0BBR" 0x01 flags
//!          [ttl_ms: u64]                        if flags & 0x01
//!          [reply_to: u16 len, UTF-8]           if flags & 0x02
//!          [correlation id: u16 len, bytes]     if flags & 0x04
//!          [headers: u16 count, then per header u16 len name, u32 len value] if flags & 0x08
//!          [topic: u16 len, UTF-8]              if flags & 0x10
//!          payload (the rest)
//! ```
//!
//! All integers are big-endian. A message with none of those properties goes out plain, so
//! ordinary pub/sub costs nothing and stays readable by non-busbar Redis clients. A plain
//! payload that happens to start with the magic is wrapped (with no fields), so decoding is
//! never ambiguous. Expiry travels as the time left when published (no clocks compared).

use std::time::Duration;

use busbar_core::message::Headers;
use busbar_core::{Message, QoS, Topic};
use bytes::{BufMut, Bytes, BytesMut};
use tokio::time::Instant;

const MAGIC: &[u8] = b"\0BBR\x01";
const TTL: u8 = 0x01;
const REPLY_TO: u8 = 0x02;
const CORRELATION: u8 = 0x04;
const HEADERS: u8 = 0x08;
const TOPIC: u8 = 0x10;

/// Serialises `message` (whose payload is already `payload`), including the topic when
/// `with_topic` (list items).
pub(crate) fn encode(message: &Message, payload: &Bytes, with_topic: bool) -> Bytes {
    let ttl = message.remaining_ttl();
    let needs = ttl.is_some()
        || message.reply_to.is_some()
        || message.correlation_id.is_some()
        || !message.headers.is_empty()
        || with_topic
        || payload.starts_with(MAGIC);
    if !needs {
        return payload.clone();
    }
    let mut flags = 0;
    let mut size = MAGIC.len() + 1 + payload.len();
    if ttl.is_some() {
        flags |= TTL;
        size += 8;
    }
    if let Some(r) = &message.reply_to {
        flags |= REPLY_TO;
        size += 2 + r.as_str().len();
    }
    if let Some(c) = &message.correlation_id {
        flags |= CORRELATION;
        size += 2 + c.len();
    }
    if !message.headers.is_empty() {
        flags |= HEADERS;
        size += 2 + message.headers.iter().map(|(n, v)| 6 + n.len() + v.len()).sum::<usize>();
    }
    if with_topic {
        flags |= TOPIC;
        size += 2 + message.topic.as_str().len();
    }
    let mut out = BytesMut::with_capacity(size);
    out.put_slice(MAGIC);
    out.put_u8(flags);
    if let Some(ttl) = ttl {
        // At least 1 ms: zero would read as "already expired" on arrival only if it was.
        out.put_u64(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1));
    }
    if let Some(r) = &message.reply_to {
        put_short(&mut out, r.as_str().as_bytes());
    }
    if let Some(c) = &message.correlation_id {
        put_short(&mut out, c);
    }
    if !message.headers.is_empty() {
        out.put_u16(u16::try_from(message.headers.len()).unwrap_or(u16::MAX));
        for (n, v) in message.headers.iter().take(u16::MAX as usize) {
            put_short(&mut out, n.as_bytes());
            out.put_u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
            out.put_slice(&v.as_bytes()[..v.len().min(u32::MAX as usize)]);
        }
    }
    if with_topic {
        put_short(&mut out, message.topic.as_str().as_bytes());
    }
    out.put_slice(payload);
    out.freeze()
}

/// Names and reply topics are far below 64 KiB (topics are limited to 65,535 bytes by
/// validation); anything longer is cut rather than corrupting the framing.
fn put_short(out: &mut BytesMut, b: &[u8]) {
    let len = b.len().min(u16::MAX as usize);
    out.put_u16(len as u16);
    out.put_slice(&b[..len]);
}

/// Why an envelope could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Malformed(pub &'static str);

/// A decoded item: the topic (when the envelope carried one) and the message parts.
pub(crate) struct Decoded {
    pub topic: Option<Topic>,
    pub payload: Bytes,
    pub headers: Headers,
    pub ttl: Option<Duration>,
    pub reply_to: Option<Topic>,
    pub correlation_id: Option<Bytes>,
}

impl Decoded {
    /// The message on `topic` (or the envelope's own topic).
    pub(crate) fn into_message(self, topic: Topic) -> Message {
        let mut m = Message::new(self.topic.unwrap_or(topic), self.payload);
        // All Redis can carry.
        m.qos = Some(QoS::AtMostOnce);
        m.headers = self.headers;
        m.expires_at = self.ttl.and_then(|t| Instant::now().checked_add(t));
        m.reply_to = self.reply_to;
        m.correlation_id = self.correlation_id;
        m
    }
}

/// Reads `data`: plain payloads come back as they are.
pub(crate) fn decode(data: Bytes) -> Result<Decoded, Malformed> {
    let mut d = Decoded {
        topic: None,
        payload: Bytes::new(),
        headers: Headers::new(),
        ttl: None,
        reply_to: None,
        correlation_id: None,
    };
    if !data.starts_with(MAGIC) {
        d.payload = data;
        return Ok(d);
    }
    let mut r = Reader { data: &data, pos: MAGIC.len() };
    let flags = r.u8()?;
    if flags & TTL != 0 {
        d.ttl = Some(Duration::from_millis(r.u64()?));
    }
    if flags & REPLY_TO != 0 {
        let len = r.u16()? as usize;
        d.reply_to = Some(r.topic(len)?);
    }
    if flags & CORRELATION != 0 {
        let len = r.u16()? as usize;
        let (start, end) = r.span(len)?;
        d.correlation_id = Some(data.slice(start..end));
    }
    if flags & HEADERS != 0 {
        let count = r.u16()?;
        for _ in 0..count {
            let nlen = r.u16()? as usize;
            let name = r.str(nlen)?.to_owned();
            let vlen = r.u32()? as usize;
            let value = r.str(vlen)?.to_owned();
            d.headers.insert(name, value);
        }
    }
    if flags & TOPIC != 0 {
        let len = r.u16()? as usize;
        d.topic = Some(r.topic(len)?);
    }
    d.payload = data.slice(r.pos..);
    Ok(d)
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn span(&mut self, len: usize) -> Result<(usize, usize), Malformed> {
        let end = self.pos.checked_add(len).filter(|e| *e <= self.data.len());
        let end = end.ok_or(Malformed("the envelope is cut short"))?;
        let start = self.pos;
        self.pos = end;
        Ok((start, end))
    }
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        let (s, e) = self.span(N)?;
        let mut a = [0; N];
        a.copy_from_slice(&self.data[s..e]);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.bytes::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, Malformed> {
        Ok(u16::from_be_bytes(self.bytes()?))
    }
    fn u32(&mut self) -> Result<u32, Malformed> {
        Ok(u32::from_be_bytes(self.bytes()?))
    }
    fn u64(&mut self) -> Result<u64, Malformed> {
        Ok(u64::from_be_bytes(self.bytes()?))
    }
    fn str(&mut self, len: usize) -> Result<&str, Malformed> {
        let (s, e) = self.span(len)?;
        std::str::from_utf8(&self.data[s..e]).map_err(|_| Malformed("a name is not UTF-8"))
    }
    fn topic(&mut self, len: usize) -> Result<Topic, Malformed> {
        Topic::new(self.str(len)?).map_err(|_| Malformed("a topic in the envelope is invalid"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(s: &str) -> Topic {
        Topic::new(s).expect("topic")
    }

    #[test]
    fn plain_messages_go_unwrapped() {
        let m = Message::new(topic("a/b"), &b"hello"[..]);
        let p = m.payload.to_bytes().expect("bytes");
        assert_eq!(encode(&m, &p, false), p);
        let d = decode(p.clone()).expect("decode");
        assert_eq!(d.payload, p);
        assert!(d.topic.is_none() && d.reply_to.is_none() && d.headers.is_empty());
    }

    #[test]
    fn everything_round_trips() {
        let mut m = Message::new(topic("a/b"), &b"body"[..])
            .with_header("content-type", "application/msgpack")
            .with_header("x", "")
            .with_expiry(Duration::from_secs(5));
        m.reply_to = Some(topic("_busbar/inbox/1"));
        m.correlation_id = Some(Bytes::from_static(b"\x00\x01"));
        let p = m.payload.to_bytes().expect("bytes");
        let d = decode(encode(&m, &p, true)).expect("decode");
        assert_eq!(d.topic, Some(topic("a/b")));
        assert_eq!(d.payload.as_ref(), b"body");
        assert_eq!(d.headers, m.headers);
        assert_eq!(d.reply_to, m.reply_to);
        assert_eq!(d.correlation_id, m.correlation_id);
        let ttl = d.ttl.expect("ttl");
        assert!(ttl > Duration::from_secs(4) && ttl <= Duration::from_secs(5), "{ttl:?}");
    }

    #[test]
    fn a_payload_that_looks_like_an_envelope_survives() {
        let tricky = Bytes::from_static(b"\0BBR\x01\xffnot really");
        let m = Message::new(topic("t"), tricky.clone());
        let d = decode(encode(&m, &tricky, false)).expect("decode");
        assert_eq!(d.payload, tricky);
    }

    #[test]
    fn truncated_envelopes_are_refused() {
        let m = Message::new(topic("t"), &b"x"[..]).with_header("k", "v");
        let full = encode(&m, &Bytes::from_static(b"x"), true);
        for cut in MAGIC.len() + 1..full.len() - 1 {
            if let Ok(d) = decode(full.slice(..cut)) {
                // A cut inside the payload itself is indistinguishable; any field cut is not.
                assert!(d.topic.is_some(), "cut at {cut}");
            }
        }
        assert_eq!(
            decode(full.slice(..MAGIC.len())).err(),
            Some(Malformed("the envelope is cut short"))
        );
    }
}

/// The envelope decoder on malformed input: an error or a message, never a panic.
#[cfg(test)]
mod fuzz {
    use busbar_testkit::fuzz::Fuzz;

    use super::*;

    #[test]
    fn fuzz_envelope() {
        Fuzz::new("redis_envelope", concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/envelope"))
            .dictionary(&["\0BBR\x01", "_busbar/inbox/", "content-type"])
            .run(|input| {
                if let Ok(decoded) = decode(Bytes::copy_from_slice(input)) {
                    let topic = Topic::new("fuzz/topic").expect("a valid topic");
                    let _ = decoded.into_message(topic);
                }
            });
    }
}
