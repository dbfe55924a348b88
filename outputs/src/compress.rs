//! Request body compression.
//!
//! One encoded batch is compressed once, as a whole, at the fastest level of
//! each codec: an agent beside an application should spend as little of its
//! CPU as it can, and level 1 already takes most of the gain on log text.

use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

/// How request bodies are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// gzip (RFC 1952), level 1.
    #[default]
    Gzip,
    /// Zstandard, level 1.
    Zstd,
    /// Sent as is.
    None,
}

impl Compression {
    /// The `Content-Encoding` header value, if any.
    pub fn content_encoding(&self) -> Option<&'static str> {
        match self {
            Compression::Gzip => Some("gzip"),
            Compression::Zstd => Some("zstd"),
            Compression::None => None,
        }
    }

    /// Appends `input`, compressed, to `out`.
    pub fn compress(&self, input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        match self {
            Compression::Gzip => {
                let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
                enc.write_all(input)?;
                enc.finish()?;
            }
            Compression::Zstd => {
                let mut enc = zstd::stream::write::Encoder::new(out, 1)?;
                // The frame then records the content size, which lets
                // receivers size their buffer once.
                enc.set_pledged_src_size(Some(input.len() as u64))?;
                enc.include_contentsize(true)?;
                enc.write_all(input)?;
                enc.finish()?;
            }
            Compression::None => out.extend_from_slice(input),
        }
        Ok(())
    }

    /// The name used in configuration (`gzip`, `zstd`, `none`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::None => "none",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A compression name that is not `gzip`, `zstd` or `none`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown compression {0:?}: expected gzip, zstd or none")]
pub struct UnknownCompression(pub String);

impl FromStr for Compression {
    type Err = UnknownCompression;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            "none" => Ok(Compression::None),
            other => Err(UnknownCompression(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample() -> Vec<u8> {
        let mut v = Vec::new();
        for i in 0..5000 {
            v.extend_from_slice(format!("2024-05-01T12:00:00Z INFO request {i} done\n").as_bytes());
        }
        v.extend_from_slice(&[0xff, 0x00, 0xfe]);
        v
    }

    #[test]
    fn gzip_round_trips_and_shrinks() {
        let input = sample();
        let mut out = b"prefix".to_vec();
        Compression::Gzip.compress(&input, &mut out).unwrap();
        assert_eq!(&out[..6], b"prefix", "compress appends");
        let body = &out[6..];
        assert!(body.len() < input.len() / 5);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(body)
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, input);
    }

    #[test]
    fn zstd_round_trips_and_shrinks() {
        let input = sample();
        let mut out = Vec::new();
        Compression::Zstd.compress(&input, &mut out).unwrap();
        assert!(out.len() < input.len() / 5);
        assert_eq!(zstd::decode_all(&out[..]).unwrap(), input);
        let size = zstd::zstd_safe::get_frame_content_size(&out).unwrap();
        assert_eq!(size, Some(input.len() as u64));
    }

    #[test]
    fn none_copies_and_empty_input_round_trips() {
        let mut out = Vec::new();
        Compression::None.compress(b"abc", &mut out).unwrap();
        assert_eq!(out, b"abc");
        for c in [Compression::Gzip, Compression::Zstd] {
            let mut out = Vec::new();
            c.compress(b"", &mut out).unwrap();
            let back = match c {
                Compression::Gzip => {
                    let mut v = Vec::new();
                    flate2::read::GzDecoder::new(&out[..])
                        .read_to_end(&mut v)
                        .unwrap();
                    v
                }
                _ => zstd::decode_all(&out[..]).unwrap(),
            };
            assert!(back.is_empty());
        }
    }

    #[test]
    fn names_and_headers() {
        for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
            assert_eq!(c.as_str().parse::<Compression>().unwrap(), c);
            assert_eq!(c.to_string(), c.as_str());
        }
        assert_eq!(Compression::Gzip.content_encoding(), Some("gzip"));
        assert_eq!(Compression::Zstd.content_encoding(), Some("zstd"));
        assert_eq!(Compression::None.content_encoding(), None);
        let err = "brotli".parse::<Compression>().unwrap_err();
        assert!(err.to_string().contains("brotli"));
        assert_eq!(Compression::default(), Compression::Gzip);
    }
}
