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

    /// Compresses a body that `produce` hands over in pieces (see
    /// [`Compressor`]), appending it to `out`. `size` is the body's exact
    /// uncompressed size when known: zstd records it in the frame header.
    pub fn compress_pieces(
        &self,
        state: &mut Compressor,
        size: Option<u64>,
        out: &mut Vec<u8>,
        produce: impl FnOnce(&mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()>,
    ) -> io::Result<()> {
        let res = match self {
            Compression::Gzip => state.gzip(out, produce),
            Compression::Zstd => state.zstd(size, out, produce),
            Compression::None => produce(&mut |piece| {
                out.extend_from_slice(piece);
                Ok(())
            }),
        };
        if res.is_err() {
            // A stream abandoned half-way is not reliably cleared by a reset
            // (zlib-rs 0.6 keeps deflate_quick's open-block flag): the next
            // body starts from a fresh state.
            *state = Compressor::new();
        }
        res
    }

    /// Compresses `input`, a whole body, appending it to `out`, with the
    /// state kept in `state`. zstd compresses a whole input in one pass,
    /// without copying it into its ring buffer and matching across that
    /// buffer's wrap (the slower "extDict" path pieces take).
    pub fn compress_whole(
        &self,
        state: &mut Compressor,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        match self {
            Compression::Zstd => {
                let res = state.zstd_whole(input, out);
                if res.is_err() {
                    *state = Compressor::new();
                }
                res
            }
            _ => self.compress_pieces(state, Some(input.len() as u64), out, |sink| sink(input)),
        }
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

/// Compression state kept from one request body to the next, one per
/// encoder thread: the codecs' windows, hash tables and contexts are
/// allocated once instead of once per batch (a fresh zstd context is about a
/// megabyte, zeroed), and a body is compressed piece by piece as it is
/// encoded, so no buffer of the whole uncompressed body exists.
#[derive(Default)]
pub struct Compressor {
    gzip: Option<flate2::Compress>,
    zstd: Option<zstd::zstd_safe::CCtx<'static>>,
}

impl fmt::Debug for Compressor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compressor")
            .field("gzip", &self.gzip.is_some())
            .field("zstd", &self.zstd.is_some())
            .finish()
    }
}

/// The gzip member header flate2 writes at level 1: no name, no time,
/// XFL 4 ("fastest"), OS 255 ("unknown").
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 255];

impl Compressor {
    /// A compressor that allocates each codec's state on first use.
    pub fn new() -> Self {
        Compressor::default()
    }

    fn gzip(
        &mut self,
        out: &mut Vec<u8>,
        produce: impl FnOnce(&mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()>,
    ) -> io::Result<()> {
        let c = self
            .gzip
            .get_or_insert_with(|| flate2::Compress::new(flate2::Compression::fast(), false));
        c.reset();
        let mut crc = flate2::Crc::new();
        out.extend_from_slice(&GZIP_HEADER);
        produce(&mut |piece| {
            crc.update(piece);
            deflate_into(c, piece, out, flate2::FlushCompress::None)
        })?;
        deflate_into(c, &[], out, flate2::FlushCompress::Finish)?;
        out.extend_from_slice(&crc.sum().to_le_bytes());
        out.extend_from_slice(&crc.amount().to_le_bytes());
        Ok(())
    }

    fn zstd_context(&mut self) -> io::Result<&mut zstd::zstd_safe::CCtx<'static>> {
        use zstd::zstd_safe::{CCtx, CParameter};
        if self.zstd.is_none() {
            let mut cx = CCtx::try_create().ok_or_else(|| zstd_error(0))?;
            cx.set_parameter(CParameter::CompressionLevel(1))
                .map_err(zstd_error)?;
            cx.set_parameter(CParameter::ContentSizeFlag(true))
                .map_err(zstd_error)?;
            self.zstd = Some(cx);
        }
        self.zstd.as_mut().ok_or_else(|| zstd_error(0))
    }

    fn zstd_whole(&mut self, input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        let cx = self.zstd_context()?;
        out.reserve(zstd::zstd_safe::compress_bound(input.len()));
        // Appends after what `out` holds (the buffer's spare capacity).
        let mut tail = std::mem::take(out);
        let at = tail.len();
        let res = {
            let mut ob = zstd::zstd_safe::OutBuffer::around_pos(&mut tail, at);
            cx.compress_stream2(
                &mut ob,
                &mut zstd::zstd_safe::InBuffer::around(input),
                zstd::zstd_safe::zstd_sys::ZSTD_EndDirective::ZSTD_e_end,
            )
            .map_err(zstd_error)
        };
        *out = tail;
        match res? {
            0 => Ok(()),
            // Cannot happen with a bound-sized buffer; a frame left open
            // would corrupt the next body, so say so.
            _ => Err(io::Error::other("zstd: output buffer too small")),
        }
    }

    fn zstd(
        &mut self,
        size: Option<u64>,
        out: &mut Vec<u8>,
        produce: impl FnOnce(&mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()>,
    ) -> io::Result<()> {
        use zstd::zstd_safe::{CCtx, InBuffer, OutBuffer, ResetDirective};
        let cx = self.zstd_context()?;
        // A body that failed half-way leaves a frame open: start afresh.
        cx.reset(ResetDirective::SessionOnly).map_err(zstd_error)?;
        cx.set_pledged_src_size(size).map_err(zstd_error)?;
        let cx_ref = &mut *cx;
        produce(&mut |piece| {
            let mut input = InBuffer::around(piece);
            while input.pos() < piece.len() {
                out.reserve(zstd::zstd_safe::compress_bound(piece.len() - input.pos()));
                let at = out.len();
                let mut output = OutBuffer::around_pos(out, at);
                cx_ref
                    .compress_stream2(
                        &mut output,
                        &mut input,
                        zstd::zstd_safe::zstd_sys::ZSTD_EndDirective::ZSTD_e_continue,
                    )
                    .map_err(zstd_error)?;
            }
            Ok(())
        })?;
        loop {
            out.reserve(CCtx::out_size());
            let at = out.len();
            let mut output = OutBuffer::around_pos(out, at);
            let left = cx
                .compress_stream2(
                    &mut output,
                    &mut InBuffer::around(&[]),
                    zstd::zstd_safe::zstd_sys::ZSTD_EndDirective::ZSTD_e_end,
                )
                .map_err(zstd_error)?;
            if left == 0 {
                return Ok(());
            }
        }
    }
}

/// Deflates `input` into `out`, growing `out` as needed; with `Finish`,
/// until the stream is complete.
fn deflate_into(
    c: &mut flate2::Compress,
    mut input: &[u8],
    out: &mut Vec<u8>,
    flush: flate2::FlushCompress,
) -> io::Result<()> {
    let finish = matches!(flush, flate2::FlushCompress::Finish);
    loop {
        // Level 1 rarely takes more than half of log text; the loop covers
        // the rest.
        out.reserve(input.len() / 2 + 4096);
        let before = c.total_in();
        let status = c
            .compress_vec(input, out, flush)
            .map_err(io::Error::other)?;
        input = &input[(c.total_in() - before) as usize..];
        let done = if finish {
            status == flate2::Status::StreamEnd
        } else {
            input.is_empty()
        };
        if done {
            return Ok(());
        }
    }
}

fn zstd_error(code: usize) -> io::Error {
    let name = if code == 0 {
        "cannot allocate a context"
    } else {
        zstd::zstd_safe::get_error_name(code)
    };
    io::Error::other(format!("zstd: {name}"))
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

    fn decompress(c: Compression, body: &[u8]) -> Vec<u8> {
        match c {
            Compression::Gzip => {
                let mut v = Vec::new();
                flate2::read::GzDecoder::new(body)
                    .read_to_end(&mut v)
                    .unwrap();
                v
            }
            Compression::Zstd => zstd::decode_all(body).unwrap(),
            Compression::None => body.to_vec(),
        }
    }

    #[test]
    fn pieces_round_trip_with_one_compressor_reused() {
        let input = sample();
        let mut state = Compressor::new();
        for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
            // Reuse across bodies, sizes (empty included) and piece splits.
            for (len, piece) in [
                (input.len(), 7),
                (0, 1),
                (input.len(), 4096),
                (1000, 1 << 20),
            ] {
                let data = &input[..len];
                let mut out = b"prefix".to_vec();
                c.compress_pieces(&mut state, Some(len as u64), &mut out, |sink| {
                    data.chunks(piece).try_for_each(sink)
                })
                .unwrap();
                assert_eq!(&out[..6], b"prefix", "compress appends");
                let body = &out[6..];
                assert_eq!(decompress(c, body), data, "{c} len {len} piece {piece}");
                if c != Compression::None && len > 10_000 {
                    assert!(body.len() < len / 5, "{c} shrinks");
                }
                if c == Compression::Zstd {
                    let size = zstd::zstd_safe::get_frame_content_size(body).unwrap();
                    assert_eq!(size, Some(len as u64), "frame records the size");
                }
            }
        }
    }

    #[test]
    fn whole_bodies_round_trip_and_mix_with_pieces() {
        let input = sample();
        let mut state = Compressor::new();
        for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
            for len in [input.len(), 0, 1000] {
                let mut out = b"prefix".to_vec();
                c.compress_whole(&mut state, &input[..len], &mut out)
                    .unwrap();
                assert_eq!(&out[..6], b"prefix", "compress appends");
                assert_eq!(decompress(c, &out[6..]), &input[..len], "{c} len {len}");
                let mut out = Vec::new();
                c.compress_pieces(&mut state, None, &mut out, |sink| sink(&input[..len]))
                    .unwrap();
                assert_eq!(decompress(c, &out), &input[..len], "{c} len {len}, pieces");
            }
        }
    }

    #[test]
    fn a_body_that_failed_half_way_does_not_spoil_the_next() {
        let input = sample();
        let mut state = Compressor::new();
        for c in [Compression::Gzip, Compression::Zstd] {
            let mut out = Vec::new();
            let err = c
                .compress_pieces(&mut state, Some(input.len() as u64), &mut out, |sink| {
                    sink(&input[..5000])?;
                    Err(io::Error::other("encoder gave up"))
                })
                .unwrap_err();
            assert_eq!(err.to_string(), "encoder gave up");
            let mut out = Vec::new();
            c.compress_pieces(&mut state, None, &mut out, |sink| sink(&input))
                .unwrap();
            assert_eq!(decompress(c, &out), input, "{c}");
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
