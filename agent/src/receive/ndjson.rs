//! OTLP requests to NDJSON lines, one line per log record or metric data
//! point, in the shape the `stdout` and `file` outputs write.
//!
//! The encoder writes JSON by hand into one caller-owned `Vec` per request:
//! a request of thousands of records costs one growing buffer, no per-record
//! allocation, and the keys come out in the documented order. A resource's
//! attributes are encoded once and copied onto each of its lines.

use std::io::Write as _;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point;
use opentelemetry_proto::tonic::resource::v1::Resource;

/// Appends one line per log record of `request` to `out`; returns how many.
///
/// Line: `{"time_unix_nano":N,"observed_time_unix_nano":N,"severity_number":N,
/// ["severity_text":S,]"body":V,["body_bytes":true,]"attributes":{..},"resource":{..}}`.
pub(super) fn encode_logs(request: &ExportLogsServiceRequest, out: &mut Vec<u8>) -> usize {
    let mut lines = 0;
    let mut resource = Vec::new();
    for resource_logs in &request.resource_logs {
        encode_resource(resource_logs.resource.as_ref(), &mut resource);
        for scope_logs in &resource_logs.scope_logs {
            for record in &scope_logs.log_records {
                out.extend_from_slice(b"{\"time_unix_nano\":");
                push_u64(out, record.time_unix_nano);
                out.extend_from_slice(b",\"observed_time_unix_nano\":");
                push_u64(out, record.observed_time_unix_nano);
                out.extend_from_slice(b",\"severity_number\":");
                push_i64(out, i64::from(record.severity_number));
                if !record.severity_text.is_empty() {
                    out.extend_from_slice(b",\"severity_text\":");
                    push_str(out, &record.severity_text);
                }
                out.extend_from_slice(b",\"body\":");
                push_any(out, record.body.as_ref());
                if let Some(AnyValue {
                    value: Some(Value::BytesValue(_)),
                }) = &record.body
                {
                    out.extend_from_slice(b",\"body_bytes\":true");
                }
                out.extend_from_slice(b",\"attributes\":");
                push_attributes(out, &record.attributes);
                out.extend_from_slice(b",\"resource\":");
                out.extend_from_slice(&resource);
                out.extend_from_slice(b"}\n");
                lines += 1;
            }
        }
    }
    lines
}

/// What a data point carries: a number (gauge, sum) or aggregate statistics
/// (histogram, exponential histogram, summary).
enum PointValue {
    Number(Option<number_data_point::Value>),
    Stats { count: u64, sum: Option<f64> },
}

/// Appends one line per metric data point of `request` to `out`; returns how
/// many.
///
/// Line: `{"name":S,"unit":S,"kind":K,["monotonic":B,]"value":V | "count":N,"sum":X,
/// "time_unix_nano":N,"start_time_unix_nano":N,"attributes":{..},"resource":{..}}`,
/// `kind` one of `gauge`, `sum`, `histogram`, `exponential_histogram`,
/// `summary`; `monotonic` on sums only. A metric with no data carries no
/// points and writes no line.
pub(super) fn encode_metrics(request: &ExportMetricsServiceRequest, out: &mut Vec<u8>) -> usize {
    let mut lines = 0;
    let mut resource = Vec::new();
    let mut head = Vec::new();
    for resource_metrics in &request.resource_metrics {
        encode_resource(resource_metrics.resource.as_ref(), &mut resource);
        for scope_metrics in &resource_metrics.scope_metrics {
            for metric in &scope_metrics.metrics {
                let Some(data) = &metric.data else {
                    continue;
                };
                let (kind, monotonic) = match data {
                    Data::Gauge(_) => ("gauge", None),
                    Data::Sum(sum) => ("sum", Some(sum.is_monotonic)),
                    Data::Histogram(_) => ("histogram", None),
                    Data::ExponentialHistogram(_) => ("exponential_histogram", None),
                    Data::Summary(_) => ("summary", None),
                };
                head.clear();
                head.extend_from_slice(b"{\"name\":");
                push_str(&mut head, &metric.name);
                head.extend_from_slice(b",\"unit\":");
                push_str(&mut head, &metric.unit);
                head.extend_from_slice(b",\"kind\":\"");
                head.extend_from_slice(kind.as_bytes());
                head.push(b'"');
                if let Some(monotonic) = monotonic {
                    head.extend_from_slice(b",\"monotonic\":");
                    push_bool(&mut head, monotonic);
                }
                let mut point = |value: PointValue, time: u64, start: u64, attrs: &[KeyValue]| {
                    out.extend_from_slice(&head);
                    match value {
                        PointValue::Number(value) => {
                            out.extend_from_slice(b",\"value\":");
                            match value {
                                Some(number_data_point::Value::AsInt(v)) => push_i64(out, v),
                                Some(number_data_point::Value::AsDouble(v)) => push_f64(out, v),
                                None => out.extend_from_slice(b"null"),
                            }
                        }
                        PointValue::Stats { count, sum } => {
                            out.extend_from_slice(b",\"count\":");
                            push_u64(out, count);
                            out.extend_from_slice(b",\"sum\":");
                            match sum {
                                Some(sum) => push_f64(out, sum),
                                None => out.extend_from_slice(b"null"),
                            }
                        }
                    }
                    out.extend_from_slice(b",\"time_unix_nano\":");
                    push_u64(out, time);
                    out.extend_from_slice(b",\"start_time_unix_nano\":");
                    push_u64(out, start);
                    out.extend_from_slice(b",\"attributes\":");
                    push_attributes(out, attrs);
                    out.extend_from_slice(b",\"resource\":");
                    out.extend_from_slice(&resource);
                    out.extend_from_slice(b"}\n");
                    lines += 1;
                };
                match data {
                    Data::Gauge(gauge) => {
                        for p in &gauge.data_points {
                            let value = PointValue::Number(p.value);
                            point(
                                value,
                                p.time_unix_nano,
                                p.start_time_unix_nano,
                                &p.attributes,
                            );
                        }
                    }
                    Data::Sum(sum) => {
                        for p in &sum.data_points {
                            let value = PointValue::Number(p.value);
                            point(
                                value,
                                p.time_unix_nano,
                                p.start_time_unix_nano,
                                &p.attributes,
                            );
                        }
                    }
                    Data::Histogram(histogram) => {
                        for p in &histogram.data_points {
                            let value = PointValue::Stats {
                                count: p.count,
                                sum: p.sum,
                            };
                            point(
                                value,
                                p.time_unix_nano,
                                p.start_time_unix_nano,
                                &p.attributes,
                            );
                        }
                    }
                    Data::ExponentialHistogram(histogram) => {
                        for p in &histogram.data_points {
                            let value = PointValue::Stats {
                                count: p.count,
                                sum: p.sum,
                            };
                            point(
                                value,
                                p.time_unix_nano,
                                p.start_time_unix_nano,
                                &p.attributes,
                            );
                        }
                    }
                    Data::Summary(summary) => {
                        for p in &summary.data_points {
                            let value = PointValue::Stats {
                                count: p.count,
                                sum: Some(p.sum),
                            };
                            point(
                                value,
                                p.time_unix_nano,
                                p.start_time_unix_nano,
                                &p.attributes,
                            );
                        }
                    }
                }
            }
        }
    }
    lines
}

/// Replaces `out` with the resource's attributes as a JSON object (`{}` when
/// there is no resource).
fn encode_resource(resource: Option<&Resource>, out: &mut Vec<u8>) {
    out.clear();
    push_attributes(out, resource.map_or(&[], |r| r.attributes.as_slice()));
}

/// Key-value pairs as a JSON object, in the order sent. A repeated key is
/// written twice (OTLP forbids it; JSON readers keep the last).
fn push_attributes(out: &mut Vec<u8>, attributes: &[KeyValue]) {
    out.push(b'{');
    for (i, kv) in attributes.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_str(out, &kv.key);
        out.push(b':');
        push_any(out, kv.value.as_ref());
    }
    out.push(b'}');
}

/// An OTLP `AnyValue` as the JSON value a reader expects: bytes as lossy
/// UTF-8 text, an empty value as `null`. Nesting is bounded by the decoders
/// (prost and serde_json both stop at about a hundred levels).
fn push_any(out: &mut Vec<u8>, value: Option<&AnyValue>) {
    match value.and_then(|v| v.value.as_ref()) {
        None => out.extend_from_slice(b"null"),
        Some(Value::StringValue(s)) => push_str(out, s),
        Some(Value::BoolValue(b)) => push_bool(out, *b),
        Some(Value::IntValue(i)) => push_i64(out, *i),
        Some(Value::DoubleValue(d)) => push_f64(out, *d),
        Some(Value::ArrayValue(array)) => {
            out.push(b'[');
            for (i, item) in array.values.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_any(out, Some(item));
            }
            out.push(b']');
        }
        Some(Value::KvlistValue(list)) => push_attributes(out, &list.values),
        Some(Value::BytesValue(bytes)) => push_str(out, &String::from_utf8_lossy(bytes)),
        // An index into a profiles dictionary; logs and metrics have none, so
        // the index itself is all there is to show.
        Some(Value::StringValueStrindex(index)) => push_i64(out, i64::from(*index)),
    }
}

fn push_bool(out: &mut Vec<u8>, value: bool) {
    out.extend_from_slice(if value { b"true" } else { b"false" });
}

fn push_u64(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        // `value % 10` is a single digit, so the cast cannot truncate.
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

fn push_i64(out: &mut Vec<u8>, value: i64) {
    if value < 0 {
        out.push(b'-');
    }
    push_u64(out, value.unsigned_abs());
}

/// A finite double in Rust's shortest round-trip form, which is valid JSON
/// and keeps a fraction (`2.0`, not `2`) so readers still see a double. JSON
/// has no NaN or infinity: those are written as `null`.
fn push_f64(out: &mut Vec<u8>, value: f64) {
    if value.is_finite() {
        // Writing into a Vec<u8> cannot fail.
        let _ = write!(out, "{value:?}");
    } else {
        out.extend_from_slice(b"null");
    }
}

/// A JSON string literal. `value` is valid UTF-8, so only the quote, the
/// backslash and control characters need escaping.
fn push_str(out: &mut Vec<u8>, value: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = value.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if short.is_empty() {
            let b = usize::from(b);
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[b >> 4], HEX[b & 0xf]]);
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::metrics::v1::{
        metric, ExponentialHistogram, ExponentialHistogramDataPoint, Metric, NumberDataPoint,
        ResourceMetrics, ScopeMetrics, Summary, SummaryDataPoint,
    };

    fn any(value: Value) -> Option<AnyValue> {
        Some(AnyValue { value: Some(value) })
    }

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: any(value),
            ..Default::default()
        }
    }

    fn one_log(record: LogRecord, resource: Option<Resource>) -> String {
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource,
                scope_logs: vec![ScopeLogs {
                    log_records: vec![record],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let mut out = Vec::new();
        assert_eq!(encode_logs(&request, &mut out), 1);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn log_line_has_the_documented_keys_in_order() {
        let record = LogRecord {
            time_unix_nano: 1,
            observed_time_unix_nano: 2,
            severity_number: 13,
            severity_text: "WARN".into(),
            body: any(Value::StringValue("the line".into())),
            attributes: vec![
                kv("log.file.path", Value::StringValue("/x/a.log".into())),
                kv("log.file.name", Value::StringValue("a.log".into())),
            ],
            ..Default::default()
        };
        let resource = Resource {
            attributes: vec![
                kv("service.name", Value::StringValue("checkout".into())),
                kv("process.pid", Value::IntValue(42)),
            ],
            ..Default::default()
        };
        assert_eq!(
            one_log(record, Some(resource)),
            concat!(
                r#"{"time_unix_nano":1,"observed_time_unix_nano":2,"severity_number":13,"#,
                r#""severity_text":"WARN","body":"the line","#,
                r#""attributes":{"log.file.path":"/x/a.log","log.file.name":"a.log"},"#,
                r#""resource":{"service.name":"checkout","process.pid":42}}"#,
                "\n"
            )
        );
    }

    #[test]
    fn empty_severity_text_is_left_out_and_missing_body_is_null() {
        let line = one_log(LogRecord::default(), None);
        assert_eq!(
            line,
            "{\"time_unix_nano\":0,\"observed_time_unix_nano\":0,\"severity_number\":0,\
             \"body\":null,\"attributes\":{},\"resource\":{}}\n"
        );
    }

    #[test]
    fn any_values_map_to_json_types() {
        let nested = Value::KvlistValue(KeyValueList {
            values: vec![
                kv("i", Value::IntValue(-7)),
                kv("d", Value::DoubleValue(2.0)),
                kv("b", Value::BoolValue(true)),
                kv(
                    "a",
                    Value::ArrayValue(ArrayValue {
                        values: vec![
                            AnyValue {
                                value: Some(Value::StringValue("x".into())),
                            },
                            AnyValue { value: None },
                        ],
                    }),
                ),
                kv("nan", Value::DoubleValue(f64::NAN)),
                kv("big", Value::DoubleValue(1e300)),
            ],
        });
        let record = LogRecord {
            body: any(nested),
            ..Default::default()
        };
        let line = one_log(record, None);
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            json["body"],
            serde_json::json!({"i": -7, "d": 2.0, "b": true, "a": ["x", null], "nan": null, "big": 1e300})
        );
        assert!(
            line.contains(r#""d":2.0"#),
            "double keeps its fraction: {line}"
        );
        assert!(json.get("body_bytes").is_none());
    }

    #[test]
    fn bytes_body_is_lossy_text_and_flagged() {
        let record = LogRecord {
            body: any(Value::BytesValue(b"ok \xff end".to_vec())),
            ..Default::default()
        };
        let json: serde_json::Value = serde_json::from_str(&one_log(record, None)).unwrap();
        assert_eq!(json["body"], "ok \u{fffd} end");
        assert_eq!(json["body_bytes"], true);
    }

    #[test]
    fn strings_are_escaped() {
        let text = "quote \" backslash \\ newline \n tab \t bell \u{7} nul \0 é 日本";
        let record = LogRecord {
            body: any(Value::StringValue(text.into())),
            ..Default::default()
        };
        let line = one_log(record, None);
        assert_eq!(line.matches('\n').count(), 1, "one line: {line:?}");
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(json["body"], text);
    }

    #[test]
    fn integers_cover_their_whole_range() {
        for v in [0, 1, 9, 10, -1, i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            push_i64(&mut out, v);
            assert_eq!(String::from_utf8(out).unwrap(), v.to_string());
        }
        let mut out = Vec::new();
        push_u64(&mut out, u64::MAX);
        assert_eq!(String::from_utf8(out).unwrap(), u64::MAX.to_string());
    }

    #[test]
    fn summary_and_exponential_histogram_points_carry_count_and_sum() {
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![
                        Metric {
                            name: "rpc.latency".into(),
                            unit: "ms".into(),
                            data: Some(metric::Data::Summary(Summary {
                                data_points: vec![SummaryDataPoint {
                                    count: 3,
                                    sum: 4.5,
                                    time_unix_nano: 9,
                                    ..Default::default()
                                }],
                            })),
                            ..Default::default()
                        },
                        Metric {
                            name: "rpc.size".into(),
                            data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
                                data_points: vec![ExponentialHistogramDataPoint {
                                    count: 2,
                                    sum: None,
                                    ..Default::default()
                                }],
                                aggregation_temporality: 2,
                            })),
                            ..Default::default()
                        },
                        Metric {
                            name: "no.data".into(),
                            data: None,
                            ..Default::default()
                        },
                        Metric {
                            name: "no.value".into(),
                            data: Some(metric::Data::Gauge(
                                opentelemetry_proto::tonic::metrics::v1::Gauge {
                                    data_points: vec![NumberDataPoint::default()],
                                },
                            )),
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let mut out = Vec::new();
        assert_eq!(encode_metrics(&request, &mut out), 3);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            r#"{"name":"rpc.latency","unit":"ms","kind":"summary","count":3,"sum":4.5,"time_unix_nano":9,"start_time_unix_nano":0,"attributes":{},"resource":{}}"#
        );
        assert_eq!(
            lines[1],
            r#"{"name":"rpc.size","unit":"","kind":"exponential_histogram","count":2,"sum":null,"time_unix_nano":0,"start_time_unix_nano":0,"attributes":{},"resource":{}}"#
        );
        assert_eq!(
            lines[2],
            r#"{"name":"no.value","unit":"","kind":"gauge","value":null,"time_unix_nano":0,"start_time_unix_nano":0,"attributes":{},"resource":{}}"#
        );
    }
}
