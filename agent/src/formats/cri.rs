//! The CRI log format (containerd, CRI-O; what `/var/log/pods` holds):
//! `TIMESTAMP STREAM TAG MESSAGE`, where the first `:`-separated field of
//! `TAG` is `P` for a partial line (continued by the next line of the same
//! stream) or `F` for the final piece.
//!
//! Invariant: parsing borrows the line and returns offsets into it, so the
//! message becomes a zero-copy slice of the line.

use super::time::parse_rfc3339;
use super::Stream;

/// A line in CRI shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CriLine {
    /// The runtime's timestamp, Unix nanoseconds.
    pub time_unix_nano: u64,
    /// Which stream of the container wrote it.
    pub stream: Stream,
    /// A `P` piece: the logical line goes on in the next piece.
    pub partial: bool,
    /// Where the message starts in the line (it runs to the line's end).
    pub message_start: usize,
}

/// Parses one CRI line; the error is a short reason for `log.parse.error`.
pub fn parse(line: &[u8]) -> Result<CriLine, &'static str> {
    let (ts, rest) = split_space(line).ok_or("not a CRI line")?;
    let time_unix_nano = parse_rfc3339(ts).ok_or("invalid CRI timestamp")?;
    let (stream, rest) = split_space(rest).ok_or("not a CRI line")?;
    let stream = match stream {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return Err("invalid CRI stream"),
    };
    // The tag may be the last field when the message is empty.
    let (tag, message) = match split_space(rest) {
        Some((tag, _)) => (tag, tag.len() + 1),
        None => (rest, rest.len()),
    };
    let partial = match tag.split(|&b| b == b':').next() {
        Some(b"P") => true,
        Some(b"F") => false,
        _ => return Err("invalid CRI tag"),
    };
    Ok(CriLine {
        time_unix_nano,
        stream,
        partial,
        message_start: line.len() - rest.len() + message,
    })
}

fn split_space(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = memchr::memchr(b' ', s)?;
    Some((&s[..i], &s[i + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_final_and_partial_lines() {
        let line = b"2024-01-02T03:04:05.123456789Z stdout F hello world";
        let c = parse(line).unwrap();
        assert_eq!(c.time_unix_nano, 1_704_164_645_123_456_789);
        assert_eq!(c.stream, Stream::Stdout);
        assert!(!c.partial);
        assert_eq!(&line[c.message_start..], b"hello world");

        let line = b"2024-01-02T03:04:05.123456789+00:00 stderr P:extra  two spaces";
        let c = parse(line).unwrap();
        assert_eq!(c.stream, Stream::Stderr);
        assert!(c.partial);
        assert_eq!(&line[c.message_start..], b" two spaces");
    }

    #[test]
    fn an_empty_message_is_fine() {
        for line in [
            &b"2024-01-02T03:04:05Z stdout F"[..],
            b"2024-01-02T03:04:05Z stdout F ",
        ] {
            let c = parse(line).unwrap();
            assert_eq!(&line[c.message_start..], b"");
        }
    }

    #[test]
    fn reports_why_a_line_is_not_cri() {
        assert_eq!(parse(b"hello"), Err("not a CRI line"));
        assert_eq!(parse(b"yesterday stdout F x"), Err("invalid CRI timestamp"));
        assert_eq!(
            parse(b"2024-01-02T03:04:05Z stdin F x"),
            Err("invalid CRI stream")
        );
        assert_eq!(
            parse(b"2024-01-02T03:04:05Z stdout X x"),
            Err("invalid CRI tag")
        );
        assert_eq!(parse(b"2024-01-02T03:04:05Z stdout"), Err("not a CRI line"));
    }
}
