//! commlib's optional body compression.
//!
//! commlib compresses the whole serialized body when an endpoint is built with a compression
//! level: zlib (RFC 1950) in 0.13.1, and in 0.13.2 too unless the Python `lz4` package is
//! installed, in which case it sends an LZ4 frame. Nothing on the wire says a body is
//! compressed, so commlib needs both ends configured alike.
//!
//! busbar is more forgiving on the receiving side: a commlib body is a JSON object and so
//! starts with `{` (or white space), while a zlib stream starts with a header whose check
//! bits no JSON text can satisfy, so every decoder here inflates a zlib body on its own and
//! takes a plain one as it is; an LZ4 frame starts with its magic number, which no JSON
//! text does either, so LZ4 bodies are read the same way. Only sending needs a setting
//! ([`Compression`]). A service answers in the compression its request came in, as a
//! commlib service configured like its client would.

use std::borrow::Cow;
use std::io::{Read, Write};

use bytes::Bytes;

use crate::error::{CommlibError, Result};

/// How a busbar endpoint compresses the bodies it sends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    /// Plain JSON: commlib's default (`CompressionType.NO_COMPRESSION`).
    #[default]
    None,
    /// zlib at `level` (1 fastest to 9 smallest), as commlib sends with a compression level
    /// set and no `lz4` installed. commlib's `DEFAULT_COMPRESSION` (-1) is level 6.
    Zlib {
        /// The zlib level, 0 to 9.
        level: u32,
    },
    /// An LZ4 frame, as commlib 0.13.2 sends with a compression level set and the Python
    /// `lz4` package installed (`lz4.frame.compress` with its defaults).
    Lz4,
}

impl Compression {
    /// zlib at zlib's default level, what commlib's `CompressionType.DEFAULT_COMPRESSION` gives.
    pub const fn zlib() -> Compression {
        Compression::Zlib { level: 6 }
    }

    /// Compresses an encoded body for the wire.
    pub(crate) fn apply(self, topic: &str, body: Bytes) -> Result<Bytes> {
        match self {
            Compression::None => Ok(body),
            Compression::Zlib { level } => {
                let level = flate2::Compression::new(level.min(9));
                let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), level);
                encoder
                    .write_all(&body)
                    .and_then(|()| encoder.finish())
                    .map(Bytes::from)
                    .map_err(|e| body_error(topic, format!("zlib compression failed: {e}")))
            }
            Compression::Lz4 => {
                let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
                encoder
                    .write_all(&body)
                    .map_err(|e| body_error(topic, format!("LZ4 compression failed: {e}")))?;
                encoder
                    .finish()
                    .map(Bytes::from)
                    .map_err(|e| body_error(topic, format!("LZ4 compression failed: {e}")))
            }
        }
    }

    /// The compression a received body arrived in.
    pub(crate) fn of(body: &[u8]) -> Compression {
        if body.starts_with(&LZ4_FRAME_MAGIC) {
            Compression::Lz4
        } else if is_zlib(body) {
            Compression::zlib()
        } else {
            Compression::None
        }
    }
}

fn body_error(topic: &str, reason: String) -> CommlibError {
    CommlibError::Body { topic: topic.to_owned(), reason }
}

/// The magic number that starts every LZ4 frame (little-endian 0x184D2204).
const LZ4_FRAME_MAGIC: [u8; 4] = [0x04, 0x22, 0x4d, 0x18];

/// The largest body inflated: a bound against a small compressed body that expands without
/// end. commlib bodies are messages, not files.
const MAX_INFLATED: u64 = 64 * 1024 * 1024;

/// A zlib stream: compression method 8 (deflate) with a window of at most 32 KiB, and the
/// two header bytes a multiple of 31 (RFC 1950, 2.2). A commlib body, a JSON object, never
/// starts that way: its first byte is `{` or white space.
fn is_zlib(body: &[u8]) -> bool {
    match body {
        [cmf, flg, ..] => {
            cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0
        }
        _ => false,
    }
}

/// The body as JSON bytes: inflated when it came zlib- or LZ4-compressed, as it is
/// otherwise.
pub(crate) fn open<'a>(topic: &str, body: &'a [u8]) -> Result<Cow<'a, [u8]>> {
    let (what, decoder): (&str, Box<dyn Read + 'a>) = if body.starts_with(&LZ4_FRAME_MAGIC) {
        ("LZ4", Box::new(lz4_flex::frame::FrameDecoder::new(body)))
    } else if is_zlib(body) {
        ("zlib", Box::new(flate2::read::ZlibDecoder::new(body)))
    } else {
        return Ok(Cow::Borrowed(body));
    };
    let mut inflated = Vec::new();
    decoder
        .take(MAX_INFLATED + 1)
        .read_to_end(&mut inflated)
        .map_err(|e| body_error(topic, format!("{what} body does not inflate: {e}")))?;
    if inflated.len() as u64 > MAX_INFLATED {
        return Err(body_error(
            topic,
            format!("{what} body inflates to more than {MAX_INFLATED} bytes"),
        ));
    }
    Ok(Cow::Owned(inflated))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zlib_round_trips_and_plain_passes_through() {
        let plain = Bytes::from_static(br#"{"n":-3,"text":"caf\u00e9"}"#);
        for level in [1, 6, 9] {
            let packed = Compression::Zlib { level }.apply("t", plain.clone()).expect("deflate");
            assert_ne!(packed, plain);
            assert_eq!(Compression::of(&packed), Compression::zlib());
            assert_eq!(open("t", &packed).expect("inflate").as_ref(), plain.as_ref());
        }
        assert_eq!(Compression::of(&plain), Compression::None);
        assert!(matches!(open("t", &plain), Ok(Cow::Borrowed(b)) if b == plain.as_ref()));
    }

    #[test]
    fn no_json_object_looks_like_zlib() {
        // Every byte a JSON object can start with.
        for first in b"{ \t\r\n" {
            for second in 0..=255u8 {
                assert!(!is_zlib(&[*first, second]), "{first} {second}");
            }
        }
    }

    #[test]
    fn broken_bodies_are_refused_with_reasons() {
        // A zlib header with garbage behind it.
        let err = open("plant/x", &[0x78, 0x9c, 1, 2, 3]).err().map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("zlib body does not inflate"));
        // An LZ4 frame header cut short.
        let err = open("plant/x", &[0x04, 0x22, 0x4d, 0x18, 0x64]).err().map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("LZ4 body does not inflate"));
    }

    #[test]
    fn lz4_frames_round_trip() {
        let plain = Bytes::from(br#"{"seq":1,"text":"caf\u00e9"}"#.repeat(50));
        let packed = Compression::Lz4.apply("t", plain.clone()).expect("compress");
        assert!(packed.starts_with(&LZ4_FRAME_MAGIC) && packed.len() < plain.len());
        assert_eq!(Compression::of(&packed), Compression::Lz4);
        assert_eq!(open("t", &packed).expect("decompress").as_ref(), plain.as_ref());
    }
}
