//! The record model: what every collector produces and every output encodes.
//!
//! A log line's body is a [`Bytes`] slice of the buffer it was read into, so
//! building a record allocates nothing per line; per-file facts (path, name)
//! are shared through one `Arc<SourceMeta>`.

use bytes::Bytes;
use std::borrow::Cow;
use std::sync::Arc;

/// An attribute value, as in OTLP's `AnyValue` (the kinds sidekick emits).
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// A UTF-8 string.
    Str(Cow<'static, str>),
    /// A signed integer.
    Int(i64),
    /// A floating-point number.
    Double(f64),
    /// A boolean.
    Bool(bool),
}

impl From<&'static str> for AttrValue {
    fn from(s: &'static str) -> Self {
        AttrValue::Str(Cow::Borrowed(s))
    }
}
impl From<String> for AttrValue {
    fn from(s: String) -> Self {
        AttrValue::Str(Cow::Owned(s))
    }
}
impl From<i64> for AttrValue {
    fn from(v: i64) -> Self {
        AttrValue::Int(v)
    }
}
impl From<bool> for AttrValue {
    fn from(v: bool) -> Self {
        AttrValue::Bool(v)
    }
}
impl From<f64> for AttrValue {
    fn from(v: f64) -> Self {
        AttrValue::Double(v)
    }
}

/// A key/value attribute.
#[derive(Debug, Clone, PartialEq)]
pub struct Attr {
    /// The attribute's key (`log.file.path`, `cpu.mode`, ...).
    pub key: Cow<'static, str>,
    /// Its value.
    pub value: AttrValue,
}

impl Attr {
    /// An attribute from anything that converts into a value.
    pub fn new(key: impl Into<Cow<'static, str>>, value: impl Into<AttrValue>) -> Self {
        Attr {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// Facts shared by every record read from one source (a log file): encoded as
/// the record attributes `log.file.path` and `log.file.name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceMeta {
    /// The path the file was found at.
    pub path: String,
    /// Its file name (last path component).
    pub name: String,
}

impl SourceMeta {
    /// Meta for a file path.
    pub fn for_path(path: &str) -> Self {
        let name = path.rsplit('/').next().unwrap_or(path).to_string();
        SourceMeta {
            path: path.to_string(),
            name,
        }
    }
}

/// One log record (a line, a joined multiline record, or an event).
#[derive(Debug, Clone, Default)]
pub struct LogRecord {
    /// The line without its newline, exactly as read. Not necessarily UTF-8:
    /// encoders send invalid UTF-8 as a bytes value rather than lose it.
    pub body: Bytes,
    /// The record's own timestamp when its format gives one, else 0.
    pub time_unix_nano: u64,
    /// When sidekick read it.
    pub observed_time_unix_nano: u64,
    /// OTLP severity number (0 = unspecified).
    pub severity_number: i32,
    /// Severity text as found in the record, if any.
    pub severity_text: Option<Cow<'static, str>>,
    /// The file it came from, if it came from a file.
    pub source: Option<Arc<SourceMeta>>,
    /// Further attributes (empty for plain lines: no allocation).
    pub attributes: Vec<Attr>,
}

impl LogRecord {
    /// Bytes this record holds, as counted against batch and queue budgets.
    pub fn size(&self) -> usize {
        self.body.len() + 64 + self.attributes.len() * 32
    }
}

/// Whether a metric point is a gauge or a sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// A value at an instant.
    Gauge,
    /// A cumulative sum since `start_time_unix_nano`.
    Sum {
        /// Whether it only grows.
        monotonic: bool,
    },
}

/// A metric point's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MetricValue {
    /// An integer value.
    Int(i64),
    /// A floating-point value.
    Double(f64),
}

/// One metric data point.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    /// Metric name (`process.cpu.time`, `cgroup.memory.usage`, ...).
    pub name: Cow<'static, str>,
    /// UCUM unit (`s`, `By`, `1`, `{thread}`).
    pub unit: Cow<'static, str>,
    /// Gauge or sum.
    pub kind: MetricKind,
    /// The value.
    pub value: MetricValue,
    /// When it was sampled.
    pub time_unix_nano: u64,
    /// Start of a cumulative sum (0 for gauges).
    pub start_time_unix_nano: u64,
    /// Point attributes (`cpu.mode`, `disk.io.direction`, ...).
    pub attributes: Vec<Attr>,
}

/// Anything that travels through the pipeline.
#[derive(Debug, Clone)]
pub enum Record {
    /// A log record or event.
    Log(LogRecord),
    /// A metric point.
    Metric(MetricPoint),
}

impl Record {
    /// Bytes this record holds, as counted against batch and queue budgets.
    pub fn size(&self) -> usize {
        match self {
            Record::Log(l) => l.size(),
            Record::Metric(m) => 96 + m.attributes.len() * 32,
        }
    }
}
