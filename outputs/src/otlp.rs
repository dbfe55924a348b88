//! OTLP protobuf encoding, written by hand straight from our records.
//!
//! Going through the generated `opentelemetry-proto` types would copy every
//! line body into a `String` and every attribute into a `KeyValue`; instead
//! each message is written directly into one output buffer. Protobuf puts a
//! submessage's length before its bytes, so every message has a `*_len`
//! function (its encoded size, computed without writing) beside its writer;
//! a parent asks its children for their sizes before writing its own header.
//! Sizes never depend on whether a body is valid UTF-8 (`string_value` and
//! `bytes_value` have one-byte tags alike), so a body is scanned only once.
//!
//! Invariants:
//! - varints are minimal, and the output decodes with `prost` as
//!   `ExportLogsServiceRequest` / `ExportMetricsServiceRequest`;
//! - a body that is not UTF-8 is sent as `bytes_value`, never lost or mangled;
//! - no allocation per record (metric grouping allocates per batch).

use crate::Resource;
use sidekick_pipeline::{
    Attr, AttrValue, LogRecord, MetricKind, MetricPoint, MetricValue, SourceMeta,
};
use std::collections::HashMap;
use std::sync::Arc;

/// The instrumentation scope every record is sent under.
const SCOPE_NAME: &str = "sidekick";
const SCOPE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// OTLP `AGGREGATION_TEMPORALITY_CUMULATIVE`.
const CUMULATIVE: u64 = 2;

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;

/// Encodes `logs` as an OTLP `ExportLogsServiceRequest`, appending to `out`.
pub fn encode_logs(logs: &[LogRecord], resource: &Resource, out: &mut Vec<u8>) {
    encode_logs_planned(logs, resource, &plan_logs(logs, resource), out);
}

/// [`encode_logs`] with the [`plan_logs`] of the same `logs` and `resource`
/// already worked out (a caller that needed the size first).
pub fn encode_logs_planned(
    logs: &[LogRecord],
    resource: &Resource,
    plan: &LogsPlan,
    out: &mut Vec<u8>,
) {
    debug_assert_eq!(plan.records.len(), logs.len());
    out.reserve(plan.total());
    put_logs_head(out, resource, plan);
    let mut attrs = SourceAttrs::default();
    for (r, &len) in logs.iter().zip(&plan.records) {
        put_log_record_field(out, r, len, &mut attrs);
    }
}

/// Encodes `logs` exactly as [`encode_logs`] does, but hands the request to
/// `sink` in pieces of about `piece` bytes, each written into `scratch`:
/// a compressor fed this way reads each piece while it is still in cache,
/// and no buffer of the whole encoded batch is ever held. `plan` is
/// [`plan_logs`] of the same `logs` and `resource`: the request's size is
/// known before the first piece (so a zstd frame can record it).
pub fn encode_logs_pieces(
    logs: &[LogRecord],
    resource: &Resource,
    plan: &LogsPlan,
    scratch: &mut Vec<u8>,
    piece: usize,
    sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    debug_assert_eq!(plan.records.len(), logs.len());
    scratch.clear();
    put_logs_head(scratch, resource, plan);
    let mut attrs = SourceAttrs::default();
    for (r, &len) in logs.iter().zip(&plan.records) {
        put_log_record_field(scratch, r, len, &mut attrs);
        if scratch.len() >= piece {
            sink(scratch)?;
            scratch.clear();
        }
    }
    if !scratch.is_empty() {
        sink(scratch)?;
        scratch.clear();
    }
    Ok(())
}

/// The sizes of the `ExportLogsServiceRequest` [`encode_logs`] writes for
/// `logs`, computed without writing it: every record's size is worked out
/// once, before its parents' headers need the sum.
pub fn plan_logs(logs: &[LogRecord], resource: &Resource) -> LogsPlan {
    LogsPlan::new(logs, resource)
}

/// The lengths an `ExportLogsServiceRequest`'s headers need before its
/// records are written (see [`plan_logs`]).
#[derive(Debug)]
pub struct LogsPlan {
    resource_logs: usize,
    scope_logs: usize,
    /// Each record's encoded size, for its header.
    records: Vec<usize>,
}

impl LogsPlan {
    fn new(logs: &[LogRecord], resource: &Resource) -> Self {
        let mut attrs = SourceAttrs::default();
        let mut records_len = 0;
        let records = logs
            .iter()
            .map(|r| {
                let len = log_record_len(r, &mut attrs);
                records_len += field_len(len);
                len
            })
            .collect();
        let scope_logs = field_len(scope_len()) + records_len;
        LogsPlan {
            resource_logs: field_len(resource_len(resource)) + field_len(scope_logs),
            scope_logs,
            records,
        }
    }

    /// The whole request's size in bytes.
    pub fn total(&self) -> usize {
        field_len(self.resource_logs)
    }
}

/// Everything of an `ExportLogsServiceRequest` before its first record.
fn put_logs_head(out: &mut Vec<u8>, resource: &Resource, sizes: &LogsPlan) {
    // ExportLogsServiceRequest.resource_logs = 1
    put_header(out, 1, sizes.resource_logs);
    // ResourceLogs.resource = 1
    put_resource(out, 1, resource);
    // ResourceLogs.scope_logs = 2
    put_header(out, 2, sizes.scope_logs);
    // ScopeLogs.scope = 1
    put_scope(out, 1);
}

/// One record as `ScopeLogs.log_records` (field 2), `len` its encoded size.
fn put_log_record_field(out: &mut Vec<u8>, r: &LogRecord, len: usize, attrs: &mut SourceAttrs) {
    put_header(out, 2, len);
    put_log_record(out, r, attrs);
}

/// Encodes `points` as an OTLP `ExportMetricsServiceRequest`, appending to
/// `out`. Points with the same name, unit and kind become data points of one
/// `Metric`, in the order the metrics were first seen.
pub fn encode_metrics(points: &[MetricPoint], resource: &Resource, out: &mut Vec<u8>) {
    let groups = MetricGroups::new(points);
    let metrics_len: usize = groups
        .iter()
        .map(|g| field_len(metric_len(points, g)))
        .sum();
    let scope_metrics_len = field_len(scope_len()) + metrics_len;
    let resource_metrics_len = field_len(resource_len(resource)) + field_len(scope_metrics_len);
    out.reserve(field_len(resource_metrics_len));

    // ExportMetricsServiceRequest.resource_metrics = 1
    put_header(out, 1, resource_metrics_len);
    // ResourceMetrics.resource = 1
    put_resource(out, 1, resource);
    // ResourceMetrics.scope_metrics = 2
    put_header(out, 2, scope_metrics_len);
    // ScopeMetrics.scope = 1
    put_scope(out, 1);
    for g in groups.iter() {
        // ScopeMetrics.metrics = 2
        put_header(out, 2, metric_len(points, g));
        put_metric(out, points, g);
    }
}

// ---------------------------------------------------------------------------
// Wire primitives. Every field number we use is below 16, so a tag is one
// byte.

fn varint_len(v: u64) -> usize {
    // 1 byte per started group of 7 bits; 0 takes one byte.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_tag(out: &mut Vec<u8>, field: u8, wire_type: u8) {
    debug_assert!(field < 16);
    out.push((field << 3) | wire_type);
}

/// Size of a length-delimited field holding `len` bytes, tag included.
fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

fn put_header(out: &mut Vec<u8>, field: u8, len: usize) {
    put_tag(out, field, LEN);
    put_varint(out, len as u64);
}

fn put_bytes(out: &mut Vec<u8>, field: u8, bytes: &[u8]) {
    put_header(out, field, bytes.len());
    out.extend_from_slice(bytes);
}

fn put_fixed64(out: &mut Vec<u8>, field: u8, v: u64) {
    put_tag(out, field, FIXED64);
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_varint_field(out: &mut Vec<u8>, field: u8, v: u64) {
    put_tag(out, field, VARINT);
    put_varint(out, v);
}

/// Size of a fixed64 field that is omitted when 0 (proto3 default).
fn opt_fixed64_len(v: u64) -> usize {
    if v == 0 {
        0
    } else {
        9
    }
}

fn put_opt_fixed64(out: &mut Vec<u8>, field: u8, v: u64) {
    if v != 0 {
        put_fixed64(out, field, v);
    }
}

// ---------------------------------------------------------------------------
// Common messages.

/// `AnyValue` size for an attribute value.
fn any_value_len(v: &AttrValue) -> usize {
    match v {
        AttrValue::Str(s) => field_len(s.len()),
        AttrValue::Bool(_) => 2,
        AttrValue::Int(i) => 1 + varint_len(*i as u64),
        AttrValue::Double(_) => 9,
    }
}

fn put_any_value(out: &mut Vec<u8>, v: &AttrValue) {
    match v {
        // AnyValue.string_value = 1
        AttrValue::Str(s) => put_bytes(out, 1, s.as_bytes()),
        // AnyValue.bool_value = 2
        AttrValue::Bool(b) => put_varint_field(out, 2, u64::from(*b)),
        // AnyValue.int64_value = 3 (int64: two's complement as a varint)
        AttrValue::Int(i) => put_varint_field(out, 3, *i as u64),
        // AnyValue.double_value = 4
        AttrValue::Double(d) => put_fixed64(out, 4, d.to_bits()),
    }
}

fn key_value_len(key: &str, value_len: usize) -> usize {
    field_len(key.len()) + field_len(value_len)
}

/// A `KeyValue` with a string value, as for `log.file.path`.
fn str_attr_len(key: &str, value: &str) -> usize {
    key_value_len(key, field_len(value.len()))
}

fn put_str_attr(out: &mut Vec<u8>, field: u8, key: &str, value: &str) {
    put_header(out, field, str_attr_len(key, value));
    // KeyValue.key = 1
    put_bytes(out, 1, key.as_bytes());
    // KeyValue.value = 2 -> AnyValue.string_value = 1
    put_header(out, 2, field_len(value.len()));
    put_bytes(out, 1, value.as_bytes());
}

fn attr_len(a: &Attr) -> usize {
    key_value_len(&a.key, any_value_len(&a.value))
}

/// Size of `attrs` as repeated `KeyValue` fields, tags included.
fn attrs_len(attrs: &[Attr]) -> usize {
    attrs.iter().map(|a| field_len(attr_len(a))).sum()
}

fn put_attrs(out: &mut Vec<u8>, field: u8, attrs: &[Attr]) {
    for a in attrs {
        put_header(out, field, attr_len(a));
        // KeyValue.key = 1
        put_bytes(out, 1, a.key.as_bytes());
        // KeyValue.value = 2
        put_header(out, 2, any_value_len(&a.value));
        put_any_value(out, &a.value);
    }
}

fn resource_len(r: &Resource) -> usize {
    // Resource.attributes = 1
    attrs_len(&r.attributes)
}

fn put_resource(out: &mut Vec<u8>, field: u8, r: &Resource) {
    put_header(out, field, resource_len(r));
    put_attrs(out, 1, &r.attributes);
}

fn scope_len() -> usize {
    // InstrumentationScope.name = 1, version = 2
    field_len(SCOPE_NAME.len()) + field_len(SCOPE_VERSION.len())
}

fn put_scope(out: &mut Vec<u8>, field: u8) {
    put_header(out, field, scope_len());
    put_bytes(out, 1, SCOPE_NAME.as_bytes());
    put_bytes(out, 2, SCOPE_VERSION.as_bytes());
}

// ---------------------------------------------------------------------------
// Logs.

const LOG_FILE_PATH: &str = "log.file.path";
const LOG_FILE_NAME: &str = "log.file.name";

/// The `log.file.path` and `log.file.name` attributes of the source last
/// seen, encoded once and copied whole into each of its records: every line
/// of a file carries the same two, and writing them field by field was the
/// larger part of encoding a line.
#[derive(Default)]
struct SourceAttrs {
    source: Option<Arc<SourceMeta>>,
    bytes: Vec<u8>,
}

impl SourceAttrs {
    /// The encoded attributes (`LogRecord.attributes` fields) of `src`.
    fn of(&mut self, src: &Arc<SourceMeta>) -> &[u8] {
        if !self.source.as_ref().is_some_and(|s| Arc::ptr_eq(s, src)) {
            self.bytes.clear();
            put_str_attr(&mut self.bytes, 6, LOG_FILE_PATH, &src.path);
            put_str_attr(&mut self.bytes, 6, LOG_FILE_NAME, &src.name);
            self.source = Some(src.clone());
        }
        &self.bytes
    }
}

fn log_record_len(r: &LogRecord, attrs: &mut SourceAttrs) -> usize {
    let mut len = opt_fixed64_len(r.time_unix_nano) + opt_fixed64_len(r.observed_time_unix_nano);
    if r.severity_number != 0 {
        // An enum is an int32 varint: negative values take 10 bytes.
        len += 1 + varint_len(i64::from(r.severity_number) as u64);
    }
    if let Some(text) = r.severity_text.as_deref().filter(|t| !t.is_empty()) {
        len += field_len(text.len());
    }
    // body: AnyValue holding string_value or bytes_value, same size.
    len += field_len(field_len(r.body.len()));
    if let Some(src) = &r.source {
        len += attrs.of(src).len();
    }
    len + attrs_len(&r.attributes)
}

fn put_log_record(out: &mut Vec<u8>, r: &LogRecord, attrs: &mut SourceAttrs) {
    // LogRecord.time_unix_nano = 1
    put_opt_fixed64(out, 1, r.time_unix_nano);
    // LogRecord.severity_number = 2
    if r.severity_number != 0 {
        put_varint_field(out, 2, i64::from(r.severity_number) as u64);
    }
    // LogRecord.severity_text = 3
    if let Some(text) = r.severity_text.as_deref().filter(|t| !t.is_empty()) {
        put_bytes(out, 3, text.as_bytes());
    }
    // LogRecord.body = 5
    put_header(out, 5, field_len(r.body.len()));
    let body_field = if simdutf8::basic::from_utf8(&r.body).is_ok() {
        1 // AnyValue.string_value
    } else {
        7 // AnyValue.bytes_value
    };
    put_bytes(out, body_field, &r.body);
    // LogRecord.attributes = 6
    if let Some(src) = &r.source {
        out.extend_from_slice(attrs.of(src));
    }
    put_attrs(out, 6, &r.attributes);
    // LogRecord.observed_time_unix_nano = 11
    if r.observed_time_unix_nano != 0 {
        out.push((11 << 3) | FIXED64);
        out.extend_from_slice(&r.observed_time_unix_nano.to_le_bytes());
    }
}

// ---------------------------------------------------------------------------
// Metrics.

/// The points of one batch grouped by (name, unit, kind), groups in
/// first-seen order, points in arrival order within a group.
struct MetricGroups {
    /// Point indices, grouped.
    order: Vec<u32>,
    /// `order[starts[g]..starts[g + 1]]` are group `g`'s points.
    starts: Vec<u32>,
}

impl MetricGroups {
    fn new(points: &[MetricPoint]) -> Self {
        let mut ids: HashMap<(&str, &str, u8), u32> = HashMap::new();
        let mut group_of = Vec::with_capacity(points.len());
        let mut sizes: Vec<u32> = Vec::new();
        for p in points {
            let next = sizes.len() as u32;
            let kind = match p.kind {
                MetricKind::Gauge => 0,
                MetricKind::Sum { monotonic: false } => 1,
                MetricKind::Sum { monotonic: true } => 2,
            };
            let g = *ids.entry((&p.name, &p.unit, kind)).or_insert(next);
            if g == next {
                sizes.push(0);
            }
            sizes[g as usize] += 1;
            group_of.push(g);
        }
        // Counting sort: stable, so arrival order holds within a group.
        let mut starts = Vec::with_capacity(sizes.len() + 1);
        let mut acc = 0u32;
        starts.push(0);
        for s in &sizes {
            acc += s;
            starts.push(acc);
        }
        let mut fill: Vec<u32> = starts[..sizes.len()].to_vec();
        let mut order = vec![0u32; points.len()];
        for (i, g) in group_of.iter().enumerate() {
            let slot = &mut fill[*g as usize];
            order[*slot as usize] = i as u32;
            *slot += 1;
        }
        MetricGroups { order, starts }
    }

    fn iter(&self) -> impl Iterator<Item = &[u32]> + '_ {
        self.starts
            .windows(2)
            .map(|w| &self.order[w[0] as usize..w[1] as usize])
    }
}

fn data_point_len(p: &MetricPoint) -> usize {
    // time_unix_nano is always written: a point without a time is invalid
    // in OTLP, and 0 says so plainly.
    opt_fixed64_len(p.start_time_unix_nano) + 9 + 9 + attrs_len(&p.attributes)
}

fn put_data_point(out: &mut Vec<u8>, p: &MetricPoint) {
    // NumberDataPoint.start_time_unix_nano = 2
    put_opt_fixed64(out, 2, p.start_time_unix_nano);
    // NumberDataPoint.time_unix_nano = 3
    put_fixed64(out, 3, p.time_unix_nano);
    match p.value {
        // NumberDataPoint.as_double = 4
        MetricValue::Double(d) => put_fixed64(out, 4, d.to_bits()),
        // NumberDataPoint.as_int = 6 (sfixed64)
        MetricValue::Int(i) => put_fixed64(out, 6, i as u64),
    }
    // NumberDataPoint.attributes = 7
    put_attrs(out, 7, &p.attributes);
}

/// Size of the data points of a group as repeated fields.
fn data_points_len(points: &[MetricPoint], group: &[u32]) -> usize {
    group
        .iter()
        .map(|&i| field_len(data_point_len(&points[i as usize])))
        .sum()
}

/// Size of the Gauge or Sum message of a group.
fn series_len(points: &[MetricPoint], group: &[u32]) -> usize {
    let dps = data_points_len(points, group);
    match points[group[0] as usize].kind {
        MetricKind::Gauge => dps,
        // Sum.aggregation_temporality = 2, is_monotonic = 3 (omitted if false)
        MetricKind::Sum { monotonic } => dps + 2 + if monotonic { 2 } else { 0 },
    }
}

fn metric_len(points: &[MetricPoint], group: &[u32]) -> usize {
    let first = &points[group[0] as usize];
    let mut len = field_len(first.name.len());
    if !first.unit.is_empty() {
        len += field_len(first.unit.len());
    }
    len + field_len(series_len(points, group))
}

fn put_metric(out: &mut Vec<u8>, points: &[MetricPoint], group: &[u32]) {
    let first = &points[group[0] as usize];
    // Metric.name = 1
    put_bytes(out, 1, first.name.as_bytes());
    // Metric.unit = 3
    if !first.unit.is_empty() {
        put_bytes(out, 3, first.unit.as_bytes());
    }
    // Metric.gauge = 5 | Metric.sum = 7
    let field = match first.kind {
        MetricKind::Gauge => 5,
        MetricKind::Sum { .. } => 7,
    };
    put_header(out, field, series_len(points, group));
    for &i in group {
        let p = &points[i as usize];
        // Gauge.data_points = 1, Sum.data_points = 1
        put_header(out, 1, data_point_len(p));
        put_data_point(out, p);
    }
    if let MetricKind::Sum { monotonic } = first.kind {
        put_varint_field(out, 2, CUMULATIVE);
        if monotonic {
            put_varint_field(out, 3, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
    use prost::Message;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use sidekick_pipeline::SourceMeta;
    use std::borrow::Cow;
    use std::sync::Arc;

    fn resource() -> Resource {
        Resource {
            attributes: vec![
                Attr::new("service.name", "checkout"),
                Attr::new("process.pid", 4242i64),
            ],
        }
    }

    fn expect_attr(value: &AttrValue) -> any_value::Value {
        match value {
            AttrValue::Str(s) => any_value::Value::StringValue(s.to_string()),
            AttrValue::Int(i) => any_value::Value::IntValue(*i),
            AttrValue::Double(d) => any_value::Value::DoubleValue(*d),
            AttrValue::Bool(b) => any_value::Value::BoolValue(*b),
        }
    }

    fn expect_kvs(attrs: &[Attr]) -> Vec<KeyValue> {
        attrs
            .iter()
            .map(|a| KeyValue {
                key: a.key.to_string(),
                value: Some(AnyValue {
                    value: Some(expect_attr(&a.value)),
                }),
                ..Default::default()
            })
            .collect()
    }

    fn str_kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.into())),
            }),
            ..Default::default()
        }
    }

    fn all_kinds() -> Vec<Attr> {
        vec![
            Attr::new("s", "text"),
            Attr::new("empty", ""),
            Attr::new("i", -7i64),
            Attr::new("big", i64::MAX),
            Attr::new("min", i64::MIN),
            Attr::new("zero", 0i64),
            Attr::new("d", 1.5f64),
            Attr::new("nd", -0.25f64),
            Attr::new("t", true),
            Attr::new("f", false),
        ]
    }

    /// Checks the decoded request against what was encoded, field by field.
    fn check_logs(logs: &[LogRecord], res: &Resource) {
        let mut out = Vec::new();
        encode_logs(logs, res, &mut out);
        let req = ExportLogsServiceRequest::decode(&out[..]).unwrap();
        // A re-encode by prost must give the same length: our lengths and
        // varints are minimal.
        assert_eq!(req.encoded_len(), out.len());
        assert_eq!(req.resource_logs.len(), 1);
        let rl = &req.resource_logs[0];
        let r = rl.resource.as_ref().unwrap();
        assert_eq!(r.attributes, expect_kvs(&res.attributes));
        assert_eq!(rl.scope_logs.len(), 1);
        let sl = &rl.scope_logs[0];
        let scope = sl.scope.as_ref().unwrap();
        assert_eq!(scope.name, "sidekick");
        assert_eq!(scope.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(sl.log_records.len(), logs.len());
        for (got, want) in sl.log_records.iter().zip(logs) {
            assert_eq!(got.time_unix_nano, want.time_unix_nano);
            assert_eq!(got.observed_time_unix_nano, want.observed_time_unix_nano);
            assert_eq!(got.severity_number, want.severity_number);
            assert_eq!(
                got.severity_text,
                want.severity_text.as_deref().unwrap_or("")
            );
            let body = got.body.as_ref().unwrap().value.clone().unwrap();
            match std::str::from_utf8(&want.body) {
                Ok(s) => assert_eq!(body, any_value::Value::StringValue(s.into())),
                Err(_) => assert_eq!(body, any_value::Value::BytesValue(want.body.to_vec())),
            }
            let mut attrs = Vec::new();
            if let Some(src) = &want.source {
                attrs.push(str_kv("log.file.path", &src.path));
                attrs.push(str_kv("log.file.name", &src.name));
            }
            attrs.extend(expect_kvs(&want.attributes));
            assert_eq!(got.attributes, attrs);
            assert_eq!(got.flags, 0);
            assert!(got.trace_id.is_empty() && got.span_id.is_empty());
            assert!(got.event_name.is_empty());
        }
    }

    #[test]
    fn logs_decode_field_by_field() {
        let src = Arc::new(SourceMeta::for_path("/var/log/app/a.log"));
        let logs = vec![
            LogRecord {
                body: Bytes::from_static(b"2024-05-01 WARN disk almost full"),
                time_unix_nano: 1_714_564_800_000_000_000,
                observed_time_unix_nano: 1_714_564_800_123_456_789,
                severity_number: 13,
                severity_text: Some(Cow::Borrowed("WARN")),
                source: Some(src.clone()),
                attributes: vec![],
            },
            LogRecord {
                // Invalid UTF-8 must survive as bytes.
                body: Bytes::from_static(b"bin\xff\xfe\x00line"),
                observed_time_unix_nano: 5,
                source: Some(src),
                attributes: all_kinds(),
                ..Default::default()
            },
            LogRecord {
                body: Bytes::new(),
                observed_time_unix_nano: u64::MAX,
                severity_number: 24,
                ..Default::default()
            },
            LogRecord {
                body: Bytes::from("é ünïcödé ✓".to_string()),
                time_unix_nano: 1,
                observed_time_unix_nano: 2,
                severity_number: -1,
                severity_text: Some(Cow::Owned("weird".into())),
                ..Default::default()
            },
        ];
        check_logs(&logs, &resource());
    }

    #[test]
    fn empty_inputs_decode() {
        check_logs(&[], &Resource::default());
        let mut out = Vec::new();
        encode_metrics(&[], &Resource::default(), &mut out);
        let req = ExportMetricsServiceRequest::decode(&out[..]).unwrap();
        assert!(req.resource_metrics[0].scope_metrics[0].metrics.is_empty());
    }

    #[test]
    fn encode_appends_to_the_buffer() {
        let mut out = b"xyz".to_vec();
        encode_logs(&[LogRecord::default()], &resource(), &mut out);
        assert_eq!(&out[..3], b"xyz");
        ExportLogsServiceRequest::decode(&out[3..]).unwrap();
    }

    #[test]
    fn pieces_make_the_same_request_as_one_buffer() {
        let meta = std::sync::Arc::new(sidekick_pipeline::SourceMeta::for_path("/var/log/a.log"));
        let logs: Vec<LogRecord> = (0..500)
            .map(|i| LogRecord {
                body: bytes::Bytes::from(format!("line {i} {}", "x".repeat(i % 90))),
                observed_time_unix_nano: 1 + i as u64,
                source: Some(meta.clone()),
                ..LogRecord::default()
            })
            .collect();
        let mut whole = Vec::new();
        encode_logs(&logs, &resource(), &mut whole);
        let plan = plan_logs(&logs, &resource());
        assert_eq!(plan.total(), whole.len());
        for piece in [1, 100, 4096, 1 << 20] {
            let (mut joined, mut scratch, mut calls) = (Vec::new(), Vec::new(), 0);
            encode_logs_pieces(&logs, &resource(), &plan, &mut scratch, piece, &mut |p| {
                assert!(!p.is_empty());
                calls += 1;
                joined.extend_from_slice(p);
                Ok(())
            })
            .unwrap();
            assert_eq!(joined, whole, "piece size {piece}");
            assert!(
                calls >= whole.len() / (piece + 400),
                "piece size {piece}: {calls} calls"
            );
        }
    }

    #[test]
    fn varints_are_minimal() {
        for v in [0u64, 1, 127, 128, 16383, 16384, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
            assert_eq!(prost::encoding::decode_varint(&mut &out[..]).unwrap(), v);
            assert_eq!(out.len(), prost::encoding::encoded_len_varint(v));
        }
    }

    /// A large body pushes lengths past one- and two-byte varints.
    #[test]
    fn long_bodies_and_many_records() {
        let long = Bytes::from(vec![b'x'; 300_000]);
        let logs: Vec<LogRecord> = (0..200)
            .map(|i| LogRecord {
                body: if i == 0 {
                    long.clone()
                } else {
                    Bytes::from(format!("line {i}"))
                },
                observed_time_unix_nano: i,
                ..Default::default()
            })
            .collect();
        check_logs(&logs, &resource());
    }

    fn point(
        name: &'static str,
        unit: &'static str,
        kind: MetricKind,
        v: MetricValue,
    ) -> MetricPoint {
        MetricPoint {
            name: Cow::Borrowed(name),
            unit: Cow::Borrowed(unit),
            kind,
            value: v,
            time_unix_nano: 2_000,
            start_time_unix_nano: 0,
            attributes: vec![],
        }
    }

    #[test]
    fn metrics_group_and_decode_field_by_field() {
        let sum = MetricKind::Sum { monotonic: true };
        let mut points = vec![
            MetricPoint {
                start_time_unix_nano: 1_000,
                attributes: vec![Attr::new("cpu.mode", "user")],
                ..point("process.cpu.time", "s", sum, MetricValue::Double(1.5))
            },
            point(
                "process.memory.usage",
                "By",
                MetricKind::Gauge,
                MetricValue::Int(1 << 40),
            ),
            MetricPoint {
                start_time_unix_nano: 1_000,
                attributes: vec![Attr::new("cpu.mode", "system")],
                ..point("process.cpu.time", "s", sum, MetricValue::Double(0.25))
            },
            point(
                "process.thread.count",
                "{thread}",
                MetricKind::Gauge,
                MetricValue::Int(-3),
            ),
            // Same name but another kind: its own Metric.
            point(
                "process.cpu.time",
                "s",
                MetricKind::Sum { monotonic: false },
                MetricValue::Int(0),
            ),
            point(
                "process.memory.usage",
                "By",
                MetricKind::Gauge,
                MetricValue::Int(7),
            ),
            point(
                "no.unit",
                "",
                MetricKind::Gauge,
                MetricValue::Double(f64::NAN),
            ),
        ];
        points[6].attributes = all_kinds();
        let mut out = Vec::new();
        encode_metrics(&points, &resource(), &mut out);
        let req = ExportMetricsServiceRequest::decode(&out[..]).unwrap();
        assert_eq!(req.encoded_len(), out.len());
        let rm = &req.resource_metrics[0];
        assert_eq!(
            rm.resource.as_ref().unwrap().attributes,
            expect_kvs(&resource().attributes)
        );
        let sm = &rm.scope_metrics[0];
        assert_eq!(sm.scope.as_ref().unwrap().name, "sidekick");
        let names: Vec<(&str, &str)> = sm
            .metrics
            .iter()
            .map(|m| (m.name.as_str(), m.unit.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("process.cpu.time", "s"),
                ("process.memory.usage", "By"),
                ("process.thread.count", "{thread}"),
                ("process.cpu.time", "s"),
                ("no.unit", ""),
            ]
        );
        let expected_groups: [&[usize]; 5] = [&[0, 2], &[1, 5], &[3], &[4], &[6]];
        for (m, idx) in sm.metrics.iter().zip(expected_groups) {
            assert!(m.description.is_empty());
            let dps = match m.data.as_ref().unwrap() {
                metric::Data::Gauge(g) => {
                    assert_eq!(points[idx[0]].kind, MetricKind::Gauge);
                    &g.data_points
                }
                metric::Data::Sum(s) => {
                    let MetricKind::Sum { monotonic } = points[idx[0]].kind else {
                        panic!("sum for a gauge");
                    };
                    assert_eq!(s.is_monotonic, monotonic);
                    assert_eq!(s.aggregation_temporality, 2);
                    &s.data_points
                }
                other => panic!("unexpected {other:?}"),
            };
            assert_eq!(dps.len(), idx.len());
            for (dp, &i) in dps.iter().zip(idx) {
                let p = &points[i];
                assert_eq!(dp.time_unix_nano, p.time_unix_nano);
                assert_eq!(dp.start_time_unix_nano, p.start_time_unix_nano);
                assert_eq!(dp.attributes, expect_kvs(&p.attributes));
                match (dp.value.unwrap(), p.value) {
                    (number_data_point::Value::AsInt(a), MetricValue::Int(b)) => assert_eq!(a, b),
                    (number_data_point::Value::AsDouble(a), MetricValue::Double(b)) => {
                        assert_eq!(a.to_bits(), b.to_bits())
                    }
                    (a, b) => panic!("value kind {a:?} vs {b:?}"),
                }
            }
        }
    }

    fn random_attr(rng: &mut StdRng, i: usize) -> Attr {
        let key = format!("k{i}.{}", "x".repeat(rng.random_range(0..200)));
        let value = match rng.random_range(0..4) {
            0 => AttrValue::Str(Cow::Owned("v".repeat(rng.random_range(0..300)))),
            1 => AttrValue::Int(rng.random()),
            2 => AttrValue::Double(rng.random::<f64>() * 1e6 - 5e5),
            _ => AttrValue::Bool(rng.random()),
        };
        Attr {
            key: Cow::Owned(key),
            value,
        }
    }

    /// Randomized records of every shape must decode back to themselves.
    #[test]
    fn randomized_round_trips() {
        let mut rng = StdRng::seed_from_u64(0x5eed);
        for _ in 0..50 {
            let n = rng.random_range(0..40);
            let logs: Vec<LogRecord> = (0..n)
                .map(|_| {
                    let len = rng.random_range(0..400);
                    let body: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                    LogRecord {
                        body: Bytes::from(body),
                        time_unix_nano: if rng.random() { rng.random() } else { 0 },
                        observed_time_unix_nano: rng.random(),
                        severity_number: rng.random_range(-2..25),
                        severity_text: rng.random::<bool>().then_some(Cow::Borrowed("INFO")),
                        source: rng
                            .random::<bool>()
                            .then(|| Arc::new(SourceMeta::for_path("/a/b.log"))),
                        attributes: (0..rng.random_range(0..4))
                            .map(|i| random_attr(&mut rng, i))
                            .collect(),
                    }
                })
                .collect();
            let res = Resource {
                attributes: (0..rng.random_range(0..5))
                    .map(|i| random_attr(&mut rng, i))
                    .collect(),
            };
            check_logs(&logs, &res);

            let names = ["a", "b", "c"];
            let points: Vec<MetricPoint> = (0..rng.random_range(0..60))
                .map(|_| MetricPoint {
                    name: Cow::Borrowed(names[rng.random_range(0..3)]),
                    unit: Cow::Borrowed(if rng.random() { "s" } else { "" }),
                    kind: match rng.random_range(0..3) {
                        0 => MetricKind::Gauge,
                        1 => MetricKind::Sum { monotonic: true },
                        _ => MetricKind::Sum { monotonic: false },
                    },
                    value: if rng.random() {
                        MetricValue::Int(rng.random())
                    } else {
                        MetricValue::Double(rng.random())
                    },
                    time_unix_nano: rng.random(),
                    start_time_unix_nano: if rng.random() { rng.random() } else { 0 },
                    attributes: (0..rng.random_range(0..3))
                        .map(|i| random_attr(&mut rng, i))
                        .collect(),
                })
                .collect();
            let mut out = Vec::new();
            encode_metrics(&points, &res, &mut out);
            let req = ExportMetricsServiceRequest::decode(&out[..]).unwrap();
            assert_eq!(req.encoded_len(), out.len());
            let total: usize = req.resource_metrics[0].scope_metrics[0]
                .metrics
                .iter()
                .map(|m| match m.data.as_ref().unwrap() {
                    metric::Data::Gauge(g) => g.data_points.len(),
                    metric::Data::Sum(s) => s.data_points.len(),
                    _ => unreachable!(),
                })
                .sum();
            assert_eq!(total, points.len());
        }
    }
}
