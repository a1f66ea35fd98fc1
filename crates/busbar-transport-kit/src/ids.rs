//! Identifiers nobody else can guess: correlation ids and private names.

use std::fmt;

/// 128 bits from the operating system's random source. A reply inbox name or a correlation
/// id made of these cannot be guessed by another client of the broker, so a forged reply
/// cannot be slipped in for a request (nor a reply list read ahead of its owner).
pub fn random_bytes() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // The same source through another door (uuid reads it too); a version-4 UUID
        // keeps 122 of its 128 bits random.
        bytes = uuid::Uuid::new_v4().into_bytes();
    }
    bytes
}

/// 128 random bits as 32 lowercase hex digits: a name part for reply inboxes and queues.
pub fn random_name() -> String {
    CorrelationId::new().to_hex()
}

/// The id that ties a reply to its request: 16 random bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CorrelationId([u8; 16]);

impl CorrelationId {
    /// A fresh random id.
    pub fn new() -> Self {
        CorrelationId(random_bytes())
    }

    /// The id in `bytes`, if they are one (16 bytes).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        <[u8; 16]>::try_from(bytes).ok().map(CorrelationId)
    }

    /// The id written as 32 hex digits (for brokers whose correlation ids are text), if
    /// `text` is one.
    pub fn from_hex(text: &str) -> Option<Self> {
        let text = text.as_bytes();
        if text.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, pair) in text.chunks(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Some(CorrelationId(out))
    }

    /// The 16 bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The id as 32 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(32);
        for b in self.0 {
            s.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
            s.push(char::from_digit(u32::from(b & 15), 16).unwrap_or('0'));
        }
        s
    }
}

impl Default for CorrelationId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CorrelationId({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_differ() {
        let a = CorrelationId::new();
        assert_eq!(CorrelationId::from_bytes(a.as_bytes()), Some(a));
        assert_eq!(CorrelationId::from_hex(&a.to_hex()), Some(a));
        assert_eq!(a.to_hex().len(), 32);
        assert_ne!(a, CorrelationId::new());
        assert_eq!(CorrelationId::from_bytes(&[1, 2, 3]), None);
        assert_eq!(CorrelationId::from_hex("zz"), None);
        assert_eq!(CorrelationId::from_hex(&"g".repeat(32)), None);
        let names: std::collections::HashSet<_> = (0..100).map(|_| random_name()).collect();
        assert_eq!(names.len(), 100);
    }
}
