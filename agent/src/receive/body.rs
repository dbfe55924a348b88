//! From an HTTP request's headers and body bytes to NDJSON: which media type
//! and encoding were used, bounded decompression, decoding the OTLP message.
//!
//! Every failure is a [`Rejection`] with the status to answer and a one-line
//! reason for the client; nothing here panics on input.

use std::io::Read;

use hyper::header::{HeaderMap, CONTENT_ENCODING, CONTENT_TYPE};
use hyper::StatusCode;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;

use super::ndjson;

/// A request the receiver refuses: the status to answer and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Rejection {
    pub(super) status: StatusCode,
    /// One line of plain text, sent as the response body.
    pub(super) reason: String,
}

impl Rejection {
    pub(super) fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        let mut reason = reason.into();
        // Decoder messages are one line today; keep it so if one ever is not.
        if reason.contains(['\n', '\r']) {
            reason = reason.replace(['\n', '\r'], " ");
        }
        Self { status, reason }
    }

    pub(super) fn bad_request(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, reason)
    }

    fn too_large(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, reason)
    }

    fn unsupported(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, reason)
    }
}

/// The OTLP signal an export request carries, chosen by its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Signal {
    Logs,
    Metrics,
}

/// The two OTLP/HTTP body encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MediaType {
    Protobuf,
    Json,
}

impl MediaType {
    /// The `Content-Type` of a successful answer, the same as the request's.
    pub(super) fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => "application/x-protobuf",
            Self::Json => "application/json",
        }
    }

    /// The body of a successful answer: an empty `Export*ServiceResponse`,
    /// which is zero bytes in protobuf and `{}` in JSON.
    pub(super) fn empty_response(self) -> &'static [u8] {
        match self {
            Self::Protobuf => b"",
            Self::Json => b"{}",
        }
    }
}

/// How the body bytes were compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Compression {
    None,
    Gzip,
    Zstd,
}

/// The media type and compression announced by a request's headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BodyFormat {
    pub(super) media_type: MediaType,
    pub(super) compression: Compression,
}

impl BodyFormat {
    /// Reads `Content-Type` (protobuf when absent, parameters such as
    /// `charset` ignored) and `Content-Encoding` (none when absent); anything
    /// else is a 415.
    pub(super) fn from_headers(headers: &HeaderMap) -> Result<Self, Rejection> {
        let media_type = match headers.get(CONTENT_TYPE) {
            None => MediaType::Protobuf,
            Some(value) => {
                let text = value.to_str().unwrap_or("");
                let essence = text.split(';').next().unwrap_or("").trim();
                if essence.eq_ignore_ascii_case("application/x-protobuf")
                    || essence.eq_ignore_ascii_case("application/protobuf")
                {
                    MediaType::Protobuf
                } else if essence.eq_ignore_ascii_case("application/json") {
                    MediaType::Json
                } else {
                    return Err(Rejection::unsupported(format!(
                        "unsupported Content-Type {:?}: use application/x-protobuf or application/json",
                        String::from_utf8_lossy(value.as_bytes())
                    )));
                }
            }
        };
        let compression = match headers.get(CONTENT_ENCODING) {
            None => Compression::None,
            Some(value) => {
                let text = value.to_str().unwrap_or("").trim();
                if text.is_empty() || text.eq_ignore_ascii_case("identity") {
                    Compression::None
                } else if text.eq_ignore_ascii_case("gzip") || text.eq_ignore_ascii_case("x-gzip") {
                    Compression::Gzip
                } else if text.eq_ignore_ascii_case("zstd") {
                    Compression::Zstd
                } else {
                    return Err(Rejection::unsupported(format!(
                        "unsupported Content-Encoding {:?}: use gzip, zstd or identity",
                        String::from_utf8_lossy(value.as_bytes())
                    )));
                }
            }
        };
        Ok(Self {
            media_type,
            compression,
        })
    }
}

/// What [`decode_to_ndjson`] made of a body.
#[derive(Debug)]
pub(super) struct Decoded {
    /// Complete lines, each ending in `\n`; empty when the request had none.
    pub(super) ndjson: Vec<u8>,
    pub(super) records: usize,
}

/// Decompresses `body` (to at most `max_bytes`), decodes the export request of
/// `signal` and encodes its records as NDJSON. CPU-bound: call it off the
/// async runtime's workers for large bodies.
pub(super) fn decode_to_ndjson(
    signal: Signal,
    format: BodyFormat,
    body: &[u8],
    max_bytes: usize,
) -> Result<Decoded, Rejection> {
    let decompressed;
    let raw: &[u8] = match format.compression {
        Compression::None => {
            if body.len() > max_bytes {
                return Err(too_large(body.len(), max_bytes));
            }
            body
        }
        Compression::Gzip => {
            decompressed = read_bounded(
                flate2::read::MultiGzDecoder::new(body),
                "gzip",
                body.len(),
                max_bytes,
            )?;
            &decompressed
        }
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::with_buffer(body)
                .map_err(|e| Rejection::bad_request(format!("cannot decompress zstd body: {e}")))?;
            decompressed = read_bounded(decoder, "zstd", body.len(), max_bytes)?;
            &decompressed
        }
    };
    // The NDJSON is typically a little larger than the protobuf it came from.
    let mut ndjson = Vec::with_capacity(raw.len() + raw.len() / 2);
    let records = match signal {
        Signal::Logs => {
            let request: ExportLogsServiceRequest =
                decode_message(format.media_type, raw, "ExportLogsServiceRequest")?;
            ndjson::encode_logs(&request, &mut ndjson)
        }
        Signal::Metrics => {
            let request: ExportMetricsServiceRequest =
                decode_message(format.media_type, raw, "ExportMetricsServiceRequest")?;
            ndjson::encode_metrics(&request, &mut ndjson)
        }
    };
    Ok(Decoded { ndjson, records })
}

fn decode_message<M>(media_type: MediaType, raw: &[u8], name: &str) -> Result<M, Rejection>
where
    M: prost::Message + Default + serde::de::DeserializeOwned,
{
    match media_type {
        MediaType::Protobuf => {
            M::decode(raw).map_err(|e| Rejection::bad_request(format!("cannot decode {name}: {e}")))
        }
        MediaType::Json => serde_json::from_slice(raw).map_err(|e| {
            Rejection::bad_request(format!("cannot decode {name} from OTLP/JSON: {e}"))
        }),
    }
}

/// Reads a decompressor to its end, refusing to produce more than
/// `max_bytes`: a small compressed body must not expand without bound.
fn read_bounded(
    reader: impl Read,
    what: &str,
    compressed_len: usize,
    max_bytes: usize,
) -> Result<Vec<u8>, Rejection> {
    let limit = u64::try_from(max_bytes)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    let mut out = Vec::with_capacity(compressed_len.saturating_mul(4).min(max_bytes));
    reader
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| Rejection::bad_request(format!("cannot decompress {what} body: {e}")))?;
    if out.len() > max_bytes {
        return Err(Rejection::too_large(format!(
            "{what} body decompresses to more than the limit of {max_bytes} bytes"
        )));
    }
    Ok(out)
}

/// The 413 for a body that is too large before any decompression.
pub(super) fn too_large(len: impl std::fmt::Display, max_bytes: usize) -> Rejection {
    Rejection::too_large(format!(
        "request body of {len} bytes exceeds the limit of {max_bytes} bytes"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(content_type: Option<&'static str>, encoding: Option<&'static str>) -> HeaderMap {
        let mut map = HeaderMap::new();
        if let Some(v) = content_type {
            map.insert(CONTENT_TYPE, HeaderValue::from_static(v));
        }
        if let Some(v) = encoding {
            map.insert(CONTENT_ENCODING, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn headers_select_the_format() {
        let cases = [
            (None, None, MediaType::Protobuf, Compression::None),
            (
                Some("application/x-protobuf"),
                Some("gzip"),
                MediaType::Protobuf,
                Compression::Gzip,
            ),
            (
                Some("application/json; charset=utf-8"),
                Some("zstd"),
                MediaType::Json,
                Compression::Zstd,
            ),
            (
                Some("Application/JSON"),
                Some("identity"),
                MediaType::Json,
                Compression::None,
            ),
        ];
        for (ct, ce, media_type, compression) in cases {
            assert_eq!(
                BodyFormat::from_headers(&headers(ct, ce)),
                Ok(BodyFormat {
                    media_type,
                    compression
                }),
                "{ct:?} {ce:?}"
            );
        }
    }

    #[test]
    fn unknown_media_type_or_encoding_is_415_with_a_reason() {
        let err = BodyFormat::from_headers(&headers(Some("text/plain"), None)).unwrap_err();
        assert_eq!(err.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(err.reason.contains("text/plain"), "{}", err.reason);
        let err = BodyFormat::from_headers(&headers(None, Some("br"))).unwrap_err();
        assert_eq!(err.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(err.reason.contains("\"br\""), "{}", err.reason);
    }

    #[test]
    fn decompression_stops_at_the_limit() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &vec![0u8; 10_000]).unwrap();
        let body = gz.finish().unwrap();
        let format = BodyFormat {
            media_type: MediaType::Protobuf,
            compression: Compression::Gzip,
        };
        let err = decode_to_ndjson(Signal::Logs, format, &body, 9_999).unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
        // Exactly at the limit is fine (and zeros are not a valid request).
        let err = decode_to_ndjson(Signal::Logs, format, &body, 10_000).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert!(
            err.reason
                .starts_with("cannot decode ExportLogsServiceRequest: "),
            "{}",
            err.reason
        );
    }

    #[test]
    fn reasons_are_one_line() {
        assert_eq!(Rejection::bad_request("a\nb\r\nc").reason, "a b  c");
    }
}
