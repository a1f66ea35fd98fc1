//! Codecs: how a typed value becomes bytes and back.
//!
//! JSON is the default because every peer system speaks it; MessagePack is available for
//! compact payloads (feature `msgpack`, on by default). A [`Codec`] is a small `Copy` value so
//! it can travel with a typed payload and be chosen per endpoint.

use std::fmt;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// How deep MessagePack arrays and maps may nest in a payload: JSON's limit (serde_json
/// refuses past 128). rmp-serde's own default, 1,024, is deeper than a 2 MiB thread stack
/// can take in a debug build, and a stack overflow aborts the whole process: a hostile
/// payload must be an error instead.
#[cfg(feature = "msgpack")]
const MAX_MSGPACK_DEPTH: usize = 128;

/// A serialisation format for typed payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Codec {
    /// JSON via serde_json (default).
    #[default]
    Json,
    /// MessagePack via rmp-serde (struct fields encoded by name, so peers need no schema).
    MsgPack,
}

/// Failure to encode or decode a payload.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// A value could not be serialised.
    #[error("could not encode {type_name} as {codec}: {reason}")]
    Encode {
        /// The codec in use.
        codec: Codec,
        /// Rust type being encoded.
        type_name: &'static str,
        /// The serialiser's explanation.
        reason: String,
    },
    /// A payload did not decode into the expected type. Carries the topic so a person can
    /// find the sender, and a short preview of the bytes.
    #[error(
        "malformed {codec} payload on topic {topic:?} (expected {type_name}, {len} bytes, starts {preview:?}): {reason}"
    )]
    Decode {
        /// The codec in use.
        codec: Codec,
        /// Topic the payload arrived on (empty when unknown).
        topic: String,
        /// Rust type expected.
        type_name: &'static str,
        /// Payload length in bytes.
        len: usize,
        /// The first bytes of the payload, lossily as text.
        preview: String,
        /// The deserialiser's explanation.
        reason: String,
    },
    /// The codec is not compiled into this build.
    #[error("the {0} codec is not enabled in this build")]
    Disabled(Codec),
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

const PREVIEW_BYTES: usize = 48;

impl Codec {
    /// Short lowercase name (`json`, `msgpack`).
    pub fn name(self) -> &'static str {
        match self {
            Codec::Json => "json",
            Codec::MsgPack => "msgpack",
        }
    }

    /// MIME type carried in the `content-type` header.
    pub fn content_type(self) -> &'static str {
        match self {
            Codec::Json => "application/json",
            Codec::MsgPack => "application/msgpack",
        }
    }

    /// The codec named by a `content-type` header, if busbar knows it.
    pub fn from_content_type(ct: &str) -> Option<Codec> {
        let base = ct.split(';').next().unwrap_or(ct).trim();
        match base {
            "application/json" | "text/json" => Some(Codec::Json),
            "application/msgpack" | "application/x-msgpack" | "application/vnd.msgpack" => {
                Some(Codec::MsgPack)
            }
            _ => None,
        }
    }

    /// Parses a codec name as used on the command line and in configuration.
    pub fn from_name(name: &str) -> Option<Codec> {
        match name.to_ascii_lowercase().as_str() {
            "json" => Some(Codec::Json),
            "msgpack" | "messagepack" | "mpk" => Some(Codec::MsgPack),
            _ => None,
        }
    }

    /// Serialises `value`.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Bytes, CodecError> {
        let encode_err = |reason: String| CodecError::Encode {
            codec: self,
            type_name: std::any::type_name::<T>(),
            reason,
        };
        match self {
            Codec::Json => {
                serde_json::to_vec(value).map(Bytes::from).map_err(|e| encode_err(e.to_string()))
            }
            #[cfg(feature = "msgpack")]
            Codec::MsgPack => rmp_serde::to_vec_named(value)
                .map(Bytes::from)
                .map_err(|e| encode_err(e.to_string())),
            #[cfg(not(feature = "msgpack"))]
            Codec::MsgPack => Err(CodecError::Disabled(self)),
        }
    }

    /// Deserialises `bytes` into `T`; `topic` only feeds the error message.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8], topic: &str) -> Result<T, CodecError> {
        let result = match self {
            Codec::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
            #[cfg(feature = "msgpack")]
            Codec::MsgPack => {
                let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
                de.set_max_depth(MAX_MSGPACK_DEPTH);
                T::deserialize(&mut de).map_err(|e| e.to_string())
            }
            #[cfg(not(feature = "msgpack"))]
            Codec::MsgPack => return Err(CodecError::Disabled(self)),
        };
        result.map_err(|reason| CodecError::Decode {
            codec: self,
            topic: topic.to_owned(),
            type_name: std::any::type_name::<T>(),
            len: bytes.len(),
            preview: String::from_utf8_lossy(&bytes[..bytes.len().min(PREVIEW_BYTES)]).into_owned(),
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A payload nested deeper than a thread stack can follow was a stack overflow (the
    /// process aborts, no panic to catch); now it is a decode error.
    #[cfg(feature = "msgpack")]
    #[test]
    fn deeply_nested_msgpack_is_an_error_not_a_crash() {
        let mut hostile = vec![0x91u8; 100_000];
        hostile.push(0xc0);
        let err = Codec::MsgPack.decode::<serde_json::Value>(&hostile, "t");
        assert!(err.is_err());
        let mut fine = vec![0x91u8; 100];
        fine.push(0xc0);
        assert!(Codec::MsgPack.decode::<serde_json::Value>(&fine, "t").is_ok());
    }
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Reading {
        sensor: String,
        value: f64,
    }

    #[test]
    fn round_trips_in_every_codec() {
        let r = Reading { sensor: "t1".into(), value: 21.5 };
        for codec in [Codec::Json, Codec::MsgPack] {
            let bytes = codec.encode(&r).expect("encode");
            let back: Reading = codec.decode(&bytes, "x").expect("decode");
            assert_eq!(back, r, "{codec}");
        }
    }

    #[test]
    fn malformed_payload_names_topic_type_and_bytes() {
        let err = Codec::Json
            .decode::<Reading>(b"{not json", "plant/boiler/temp")
            .expect_err("must fail");
        let text = err.to_string();
        assert!(text.contains("plant/boiler/temp"), "{text}");
        assert!(text.contains("Reading"), "{text}");
        assert!(text.contains("{not json"), "{text}");
    }

    #[test]
    fn content_type_round_trip() {
        for codec in [Codec::Json, Codec::MsgPack] {
            assert_eq!(Codec::from_content_type(codec.content_type()), Some(codec));
        }
        assert_eq!(Codec::from_content_type("application/json; charset=utf-8"), Some(Codec::Json));
        assert_eq!(Codec::from_content_type("text/plain"), None);
    }
}
