//! commlib bodies: UTF-8 JSON objects, decoded tolerantly.
//!
//! commlib 0.13.1 runs every body through `make_primitives`, which sends any negative integer
//! as a string (`{"n":-3}` goes out as `{"n":"-3"}`), nested values included; 0.13.2 sends
//! numbers. Decoding tries the body as it is; where the target type refuses a string that
//! spells a number, exactly that value is read as the number and decoding tries again. A
//! field that really is a string of digits keeps its string. Unknown keys are ignored (serde's
//! default), as commlib's pydantic models do.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::Compression;
use crate::error::{CommlibError, Result};

fn body_error(topic: &str, reason: impl Into<String>) -> CommlibError {
    CommlibError::Body { topic: topic.to_owned(), reason: reason.into() }
}

/// Encodes `value` as commlib sends bodies: a JSON object (commlib cannot receive anything
/// else: it calls `.items()` on the top level), its keys in the order the type declares
/// them, as commlib's pydantic models write theirs (the RPC envelope: `header` then `data`,
/// the header's keys in `CommRPCHeader`'s order).
pub fn encode<T: Serialize>(topic: &str, value: &T) -> Result<Bytes> {
    let json = serde_json::to_vec(value).map_err(|e| body_error(topic, e.to_string()))?;
    // serde_json writes no whitespace: an object is the one value that starts with `{`.
    if json.first() != Some(&b'{') {
        return Err(body_error(topic, "commlib bodies must be JSON objects"));
    }
    Ok(Bytes::from(json))
}

/// [`encode`], then compressed as `compression` says.
pub fn encode_with<T: Serialize>(
    topic: &str,
    value: &T,
    compression: Compression,
) -> Result<Bytes> {
    compression.apply(topic, encode(topic, value)?)
}

/// Parses a body as JSON, inflating it first when it came zlib-compressed.
pub fn parse(topic: &str, body: &[u8]) -> Result<Value> {
    let json = crate::compression::open(topic, body)?;
    serde_json::from_slice(&json).map_err(|e| body_error(topic, format!("not JSON: {e}")))
}

/// Decodes a body from either commlib generation, compressed or not, into `T`.
pub fn decode<T: DeserializeOwned>(topic: &str, body: &[u8]) -> Result<T> {
    decode_value(topic, parse(topic, body)?)
}

/// [`decode`] from an already parsed value.
pub fn decode_value<T: DeserializeOwned>(topic: &str, mut value: Value) -> Result<T> {
    // Each round fixes the one value the type refused; a body has finitely many strings.
    loop {
        let error = match serde_path_to_error::deserialize::<_, T>(&value) {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if !number_at(&mut value, error.path()) {
            return Err(body_error(topic, error.to_string()));
        }
    }
}

/// Reads the string at `path` as a number if it spells one; true when it did.
fn number_at(value: &mut Value, path: &serde_path_to_error::Path) -> bool {
    use serde_path_to_error::Segment;
    let mut at = value;
    for segment in path.iter() {
        at = match (segment, at) {
            (Segment::Map { key }, Value::Object(map)) => match map.get_mut(key) {
                Some(v) => v,
                None => return false,
            },
            (Segment::Seq { index }, Value::Array(items)) => match items.get_mut(*index) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    let Value::String(s) = at else { return false };
    if !looks_numeric(s) {
        return false;
    }
    let number = s
        .parse::<i64>()
        .map(Value::from)
        .ok()
        .or_else(|| s.parse::<f64>().ok().filter(|f| f.is_finite()).map(Value::from));
    match number {
        Some(n) => {
            *at = n;
            true
        }
        None => false,
    }
}

/// Only plain decimal spellings: `"inf"`, `"1e3"` or `" 7"` stay strings.
fn looks_numeric(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
        && digits.chars().filter(|c| *c == '.').count() <= 1
        && !digits.starts_with('.')
        && !digits.ends_with('.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Deserialize, Serialize)]
    struct Sample {
        n: i64,
        code: String,
        items: Vec<i32>,
    }

    #[test]
    fn both_generations_decode() {
        let new: Sample = decode("t", br#"{"n":-3,"code":"-7","items":[-1,2]}"#).expect("0.13.2");
        let old: Sample = decode("t", br#"{"n":"-3","code":"-7","items":["-1",2],"extra":true}"#)
            .expect("0.13.1");
        assert_eq!(new, old);
        // A string field keeps its digits.
        assert_eq!(old.code, "-7");
    }

    #[test]
    fn keys_keep_the_order_the_type_declares() {
        #[derive(serde::Serialize)]
        struct Ordered {
            zeta: i32,
            alpha: i32,
        }
        let body = encode("t", &Ordered { zeta: 1, alpha: 2 }).expect("encodes");
        assert_eq!(&body[..], br#"{"zeta":1,"alpha":2}"#);
    }

    #[test]
    fn what_cannot_be_a_body_is_refused() {
        assert!(encode("t", &vec![1, 2]).is_err());
        assert!(decode::<Sample>("t", b"[1]").is_err());
        assert!(decode::<Sample>("t", b"not json").is_err());
        let err = decode::<Sample>("plant/x", br#"{"n":"x"}"#).err().map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("plant/x"));
    }
}

/// commlib bodies as they arrive (JSON, zlib-compressed JSON, LZ4 frames busbar refuses):
/// a value or an error, never a panic, and no body keeps the decoder going round.
#[cfg(test)]
mod fuzz {
    use busbar_testkit::fuzz::Fuzz;

    use super::*;

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Probe {
        a: i64,
        b: Vec<f64>,
        c: Option<String>,
        data: Option<std::collections::BTreeMap<String, u32>>,
    }

    #[test]
    fn fuzz_body() {
        Fuzz::new("commlib_body", concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/body"))
            .dictionary(&["\"header\"", "\"data\"", "\"reply_to\"", "\"1\"", "\"1.5\"", "x\u{9c}"])
            .run(|input| {
                let _ = parse("fuzz/topic", input);
                let _ = decode::<Probe>("fuzz/topic", input);
                let _ = decode::<(u8, String)>("fuzz/topic", input);
            });
    }
}
