//! JSON object lines (structured loggers: logrus, zap, pino, slog, ...):
//! the line stays the record's body; its timestamp and level fields are
//! promoted to the record's time and severity.
//!
//! Invariant: only the promoted fields are decoded (borrowed from the line
//! where no escape forces a copy); every other field is skipped unread.

use super::time::{epoch_int_to_nanos, epoch_to_nanos, parse_rfc3339};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::fmt;

/// What a JSON line gives the record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JsonMeta {
    /// From `time`, `timestamp`, `ts` or `@timestamp` (first present), else 0.
    pub time_unix_nano: u64,
    /// OTLP severity number from `level`, `severity`, `lvl` or `log.level`.
    pub severity_number: i32,
    /// The level as written (numeric levels get their canonical name).
    pub severity_text: Option<Cow<'static, str>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Fields<'a> {
    #[serde(borrow)]
    time: Option<Scalar<'a>>,
    #[serde(borrow)]
    timestamp: Option<Scalar<'a>>,
    #[serde(borrow)]
    ts: Option<Scalar<'a>>,
    #[serde(borrow, rename = "@timestamp")]
    at_timestamp: Option<Scalar<'a>>,
    #[serde(borrow)]
    level: Option<Scalar<'a>>,
    #[serde(borrow)]
    severity: Option<Scalar<'a>>,
    #[serde(borrow)]
    lvl: Option<Scalar<'a>>,
    #[serde(borrow, rename = "log.level")]
    log_level: Option<Scalar<'a>>,
}

/// Whether the line starts (after blanks) like a JSON object.
pub fn looks_like_object(line: &[u8]) -> bool {
    line.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// Parses a JSON object line; the error is a short reason for
/// `log.parse.error`.
pub fn parse(line: &[u8]) -> Result<JsonMeta, &'static str> {
    if !looks_like_object(line) {
        return Err("not a JSON object");
    }
    let f: Fields = serde_json::from_slice(line).map_err(|_| "invalid JSON")?;
    let time = [f.time, f.timestamp, f.ts, f.at_timestamp]
        .into_iter()
        .flatten()
        .find(|v| !matches!(v, Scalar::Other));
    let level = [f.level, f.severity, f.lvl, f.log_level]
        .into_iter()
        .flatten()
        .find(|v| !matches!(v, Scalar::Other));
    let mut meta = JsonMeta {
        time_unix_nano: time.map_or(0, |t| t.as_time().unwrap_or(0)),
        ..JsonMeta::default()
    };
    match level {
        Some(Scalar::Str(s)) => {
            meta.severity_number = severity_number(&s);
            meta.severity_text = Some(severity_text(&s));
        }
        Some(Scalar::Int(n)) => set_numeric_level(&mut meta, n),
        Some(Scalar::UInt(n)) => set_numeric_level(&mut meta, i64::try_from(n).unwrap_or(-1)),
        _ => {}
    }
    Ok(meta)
}

/// OTLP severity number of a level name (case-insensitive), 0 if unknown.
pub fn severity_number(level: &str) -> i32 {
    const NAMES: &[(&str, i32)] = &[
        ("trace", 1),
        ("debug", 5),
        ("info", 9),
        ("information", 9),
        ("notice", 10),
        ("warn", 13),
        ("warning", 13),
        ("error", 17),
        ("err", 17),
        ("fatal", 21),
        ("critical", 21),
        ("crit", 21),
        ("alert", 21),
        ("emerg", 21),
        ("emergency", 21),
        ("panic", 21),
    ];
    let level = level.trim();
    NAMES
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(level))
        .map_or(0, |(_, n)| *n)
}

/// pino and bunyan write levels as numbers: 10 trace ... 60 fatal.
fn set_numeric_level(meta: &mut JsonMeta, n: i64) {
    let (number, name) = match n {
        10 => (1, "trace"),
        20 => (5, "debug"),
        30 => (9, "info"),
        40 => (13, "warn"),
        50 => (17, "error"),
        60 => (21, "fatal"),
        _ => return,
    };
    meta.severity_number = number;
    meta.severity_text = Some(Cow::Borrowed(name));
}

/// The level as written: the usual spellings cost no allocation; anything
/// else is copied, at most 64 bytes of it.
fn severity_text(level: &str) -> Cow<'static, str> {
    const COMMON: &[&str] = &[
        "TRACE", "DEBUG", "INFO", "WARN", "WARNING", "ERROR", "FATAL", "CRITICAL", "trace",
        "debug", "info", "warn", "warning", "error", "fatal", "critical", "Trace", "Debug", "Info",
        "Warn", "Warning", "Error", "Fatal", "Critical", "ERR", "err", "notice", "NOTICE", "panic",
        "PANIC",
    ];
    if let Some(s) = COMMON.iter().find(|s| **s == level) {
        return Cow::Borrowed(s);
    }
    let mut end = level.len().min(64);
    while !level.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(level[..end].to_owned())
}

/// A JSON value as far as sidekick reads it: a string or number, or
/// something else (skipped without being built).
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    /// A string, borrowed from the line unless it has escapes.
    Str(Cow<'a, str>),
    /// A negative integer.
    Int(i64),
    /// A non-negative integer.
    UInt(u64),
    /// A number with a fraction or exponent.
    Float(f64),
    /// `null`, a boolean, an array or an object.
    Other,
}

impl Scalar<'_> {
    /// The value read as a timestamp: RFC 3339 text or an epoch number (in
    /// seconds, milliseconds, microseconds or nanoseconds).
    pub fn as_time(&self) -> Option<u64> {
        match self {
            Scalar::Str(s) => parse_rfc3339(s.as_bytes()).or_else(|| {
                let s = s.trim();
                match s.parse::<u64>() {
                    Ok(n) => epoch_int_to_nanos(n),
                    Err(_) => epoch_to_nanos(s.parse::<f64>().ok()?),
                }
            }),
            Scalar::UInt(n) => epoch_int_to_nanos(*n),
            Scalar::Int(_) | Scalar::Other => None,
            Scalar::Float(f) => epoch_to_nanos(*f),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Other)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(if v >= 0 {
            Scalar::UInt(v as u64)
        } else {
            Scalar::Int(v)
        })
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar::UInt(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Scalar::Float(v))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Other)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Other)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Scalar::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promotes_time_and_level() {
        let m =
            parse(br#"{"ts":"2024-01-02T03:04:05.5Z","level":"WARN","msg":"x","n":{"a":[1,2]}}"#)
                .unwrap();
        assert_eq!(m.time_unix_nano, 1_704_164_645_500_000_000);
        assert_eq!(m.severity_number, 13);
        assert_eq!(m.severity_text.as_deref(), Some("WARN"));
        assert!(matches!(m.severity_text, Some(Cow::Borrowed(_))));

        let m = parse(br#"{"time":1704164645123,"severity":"Critical"}"#).unwrap();
        assert_eq!(m.time_unix_nano, 1_704_164_645_123_000_000);
        assert_eq!(m.severity_number, 21);

        let m = parse(br#"{"timestamp":1704164645.25,"lvl":"err"}"#).unwrap();
        assert_eq!(m.time_unix_nano, 1_704_164_645_250_000_000);
        assert_eq!(m.severity_number, 17);

        // pino: numeric level, epoch millis.
        let m = parse(br#"{"level":30,"time":1704164645000,"msg":"hi"}"#).unwrap();
        assert_eq!(m.severity_number, 9);
        assert_eq!(m.severity_text.as_deref(), Some("info"));

        // ECS names; an escaped string is copied, not refused.
        let m =
            parse(br#"{"@timestamp":"2024-01-02T03:04:05Z","log.level":"w\u0061rning"}"#).unwrap();
        assert_eq!(m.time_unix_nano, 1_704_164_645_000_000_000);
        assert_eq!(m.severity_number, 13);
        assert_eq!(m.severity_text.as_deref(), Some("warning"));
    }

    #[test]
    fn odd_field_types_are_ignored_not_fatal() {
        let m = parse(br#"{"time":{"s":1},"level":null,"ts":true,"severity":["x"]}"#).unwrap();
        assert_eq!(m, JsonMeta::default());
        let m = parse(br#"{"time":"yesterday","level":"chatty"}"#).unwrap();
        assert_eq!(m.time_unix_nano, 0);
        assert_eq!(m.severity_number, 0);
        assert_eq!(m.severity_text.as_deref(), Some("chatty"));
    }

    #[test]
    fn non_objects_are_refused_with_a_reason() {
        assert_eq!(parse(b"[1,2]"), Err("not a JSON object"));
        assert_eq!(parse(b"plain text"), Err("not a JSON object"));
        assert_eq!(parse(b"{\"a\":"), Err("invalid JSON"));
        assert_eq!(parse(b"{} trailing"), Err("invalid JSON"));
    }
}
