//! Docker's `json-file` log driver: one JSON object per line,
//! `{"log":"message\n","stream":"stderr","time":"2024-...Z"}`. Docker cuts
//! lines longer than 16 KiB into pieces; every piece but the last lacks the
//! trailing `\n` of `log`.
//!
//! Invariant: a `log` value with no escape but its final `\n` (the common
//! case) is returned as a zero-copy slice of the line; only one with other
//! escapes (`\"`, `\t`, `\u...`) is decoded into a copy.

use super::json::Scalar;
use super::time::parse_rfc3339;
use super::Stream;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Deserialize, Default)]
#[serde(default)]
struct DockerLine<'a> {
    #[serde(borrow)]
    log: Option<&'a RawValue>,
    #[serde(borrow)]
    stream: Option<Scalar<'a>>,
    #[serde(borrow)]
    time: Option<Scalar<'a>>,
}

/// One decoded json-file line.
#[derive(Debug, Clone, PartialEq)]
pub struct DockerEntry {
    /// `log` without its trailing newline (`\n` or `\r\n`).
    pub message: Bytes,
    /// `stream`, when it names stdout or stderr.
    pub stream: Option<Stream>,
    /// `time` as Unix nanoseconds, 0 if absent or unreadable.
    pub time_unix_nano: u64,
    /// `log` had no trailing newline: the next piece of this stream goes on.
    pub partial: bool,
}

/// Parses one json-file line; the error is a short reason for
/// `log.parse.error`.
pub fn parse(line: &Bytes) -> Result<DockerEntry, &'static str> {
    if !super::json::looks_like_object(line) {
        return Err("not a JSON object");
    }
    let d: DockerLine = serde_json::from_slice(line).map_err(|_| "invalid JSON")?;
    let raw = d.log.ok_or("no docker log field")?.get();
    let (mut message, partial) = match raw.as_bytes() {
        [b'"', inner @ .., b'"'] if !inner.contains(&b'\\') => (line.slice_ref(inner), true),
        [b'"', inner @ .., b'\\', b'n', b'"'] if !inner.contains(&b'\\') => {
            (line.slice_ref(inner), false)
        }
        [b'"', ..] => {
            let s: String = serde_json::from_str(raw).map_err(|_| "invalid JSON")?;
            let mut m = Bytes::from(s);
            let partial = !m.ends_with(b"\n");
            if !partial {
                m.truncate(m.len() - 1);
            }
            (m, partial)
        }
        _ => return Err("docker log field is not a string"),
    };
    if !partial && message.ends_with(b"\r") {
        message.truncate(message.len() - 1);
    }
    let stream = match d.stream {
        Some(Scalar::Str(s)) if s == "stdout" => Some(Stream::Stdout),
        Some(Scalar::Str(s)) if s == "stderr" => Some(Stream::Stderr),
        _ => None,
    };
    let time_unix_nano = match d.time {
        Some(Scalar::Str(s)) => parse_rfc3339(s.as_bytes()).unwrap_or(0),
        _ => 0,
    };
    Ok(DockerEntry {
        message,
        stream,
        time_unix_nano,
        partial,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_line_without_copying_it() {
        let line = Bytes::from_static(
            br#"{"log":"hello world\n","stream":"stderr","time":"2024-01-02T03:04:05.123456789Z"}"#,
        );
        let e = parse(&line).unwrap();
        assert_eq!(e.message, "hello world");
        assert_eq!(e.stream, Some(Stream::Stderr));
        assert_eq!(e.time_unix_nano, 1_704_164_645_123_456_789);
        assert!(!e.partial);
        // Zero copy: the message points into the line.
        let base = line.as_ptr() as usize;
        let at = e.message.as_ptr() as usize;
        assert!(at > base && at < base + line.len());
    }

    #[test]
    fn unescapes_and_flags_partial_pieces() {
        let line = Bytes::from_static(br#"{"log":"tab\there \"q\" \u00e9","stream":"stdout"}"#);
        let e = parse(&line).unwrap();
        assert_eq!(e.message, "tab\there \"q\" \u{e9}");
        assert!(e.partial);
        assert_eq!(e.time_unix_nano, 0);
        let line = Bytes::from_static(br#"{"log":"crlf\r\n","stream":"stdout","time":"x"}"#);
        assert_eq!(parse(&line).unwrap().message, "crlf");
    }

    #[test]
    fn reports_why_a_line_is_not_docker() {
        assert_eq!(
            parse(&Bytes::from_static(b"text")),
            Err("not a JSON object")
        );
        assert_eq!(
            parse(&Bytes::from_static(b"{\"log\":")),
            Err("invalid JSON")
        );
        assert_eq!(
            parse(&Bytes::from_static(b"{\"msg\":\"x\"}")),
            Err("no docker log field")
        );
        assert_eq!(
            parse(&Bytes::from_static(b"{\"log\":3}")),
            Err("docker log field is not a string")
        );
    }
}
