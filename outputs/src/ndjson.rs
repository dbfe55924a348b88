//! NDJSON encoding: one JSON object per record and line.
//!
//! This is the shape `sidekick receive` writes, so the `file`, `stdout` and
//! `http_ndjson` outputs and the receiver agree line for line:
//!
//! ```text
//! {"time_unix_nano":N,"observed_time_unix_nano":N,"severity_number":N,"severity_text":"WARN","body":"the line","attributes":{..},"resource":{..}}
//! {"name":"process.cpu.time","unit":"s","kind":"sum","monotonic":true,"value":1.5,"time_unix_nano":N,"start_time_unix_nano":N,"attributes":{..},"resource":{..}}
//! ```
//!
//! Logs come first, then metrics. `severity_text` is left out when unknown,
//! `monotonic` for gauges. A body that is not UTF-8 is written lossily
//! (U+FFFD). Records are written straight into the output buffer; the
//! resource object is rendered once per batch.

use crate::Resource;
use sidekick_pipeline::{Attr, AttrValue, Batch, LogRecord, MetricKind, MetricPoint, MetricValue};
use std::io::Write;

/// Appends `batch` as NDJSON to `out`.
pub fn encode(batch: &Batch, resource: &Resource, out: &mut Vec<u8>) {
    let mut res = Vec::with_capacity(64 + resource.attributes.len() * 32);
    put_object(&mut res, None, &resource.attributes);
    out.reserve(batch.bytes + (batch.logs.len() + batch.metrics.len()) * (res.len() + 96));
    for r in &batch.logs {
        put_log(out, r, &res);
    }
    for p in &batch.metrics {
        put_metric(out, p, &res);
    }
}

fn put_log(out: &mut Vec<u8>, r: &LogRecord, resource: &[u8]) {
    out.extend_from_slice(b"{\"time_unix_nano\":");
    put_u64(out, r.time_unix_nano);
    out.extend_from_slice(b",\"observed_time_unix_nano\":");
    put_u64(out, r.observed_time_unix_nano);
    out.extend_from_slice(b",\"severity_number\":");
    put_i64(out, i64::from(r.severity_number));
    if let Some(text) = &r.severity_text {
        out.extend_from_slice(b",\"severity_text\":");
        put_str(out, text);
    }
    out.extend_from_slice(b",\"body\":");
    // Borrowed (no copy) unless the body holds invalid UTF-8.
    put_str(out, &String::from_utf8_lossy(&r.body));
    out.extend_from_slice(b",\"attributes\":");
    let file = r.source.as_ref().map(|s| {
        [
            ("log.file.path", s.path.as_str()),
            ("log.file.name", s.name.as_str()),
        ]
    });
    put_object(out, file.as_ref().map(|f| &f[..]), &r.attributes);
    out.extend_from_slice(b",\"resource\":");
    out.extend_from_slice(resource);
    out.extend_from_slice(b"}\n");
}

fn put_metric(out: &mut Vec<u8>, p: &MetricPoint, resource: &[u8]) {
    out.extend_from_slice(b"{\"name\":");
    put_str(out, &p.name);
    out.extend_from_slice(b",\"unit\":");
    put_str(out, &p.unit);
    match p.kind {
        MetricKind::Gauge => out.extend_from_slice(b",\"kind\":\"gauge\""),
        MetricKind::Sum { monotonic } => {
            out.extend_from_slice(b",\"kind\":\"sum\",\"monotonic\":");
            out.extend_from_slice(if monotonic { b"true" } else { b"false" });
        }
    }
    out.extend_from_slice(b",\"value\":");
    match p.value {
        MetricValue::Int(i) => put_i64(out, i),
        MetricValue::Double(d) => put_f64(out, d),
    }
    out.extend_from_slice(b",\"time_unix_nano\":");
    put_u64(out, p.time_unix_nano);
    out.extend_from_slice(b",\"start_time_unix_nano\":");
    put_u64(out, p.start_time_unix_nano);
    out.extend_from_slice(b",\"attributes\":");
    put_object(out, None, &p.attributes);
    out.extend_from_slice(b",\"resource\":");
    out.extend_from_slice(resource);
    out.extend_from_slice(b"}\n");
}

/// Writes `{"k":v,...}`: the string pairs of `first`, then `attrs`.
fn put_object(out: &mut Vec<u8>, first: Option<&[(&str, &str)]>, attrs: &[Attr]) {
    out.push(b'{');
    let mut sep = false;
    for (k, v) in first.unwrap_or_default() {
        if sep {
            out.push(b',');
        }
        sep = true;
        put_str(out, k);
        out.push(b':');
        put_str(out, v);
    }
    for a in attrs {
        if sep {
            out.push(b',');
        }
        sep = true;
        put_str(out, &a.key);
        out.push(b':');
        match &a.value {
            AttrValue::Str(s) => put_str(out, s),
            AttrValue::Int(i) => put_i64(out, *i),
            AttrValue::Double(d) => put_f64(out, *d),
            AttrValue::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        }
    }
    out.push(b'}');
}

// Scalars go through serde_json so escaping and float formatting match what
// every JSON reader expects. Writing into a Vec cannot fail.

fn put_str(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *out, s);
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    let _ = write!(out, "{v}");
}

fn put_i64(out: &mut Vec<u8>, v: i64) {
    let _ = write!(out, "{v}");
}

/// A finite double as a JSON number; NaN and infinities, which JSON cannot
/// hold, as `null`.
fn put_f64(out: &mut Vec<u8>, v: f64) {
    let _ = serde_json::to_writer(&mut *out, &v);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::{json, Value};
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

    fn lines(out: &[u8]) -> Vec<Value> {
        let text = std::str::from_utf8(out).unwrap();
        assert!(text.ends_with('\n'));
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn logs_then_metrics_in_the_receive_shape() {
        let batch = Batch {
            id: 3,
            logs: vec![
                LogRecord {
                    body: Bytes::from_static(b"disk \"almost\" full\tnow"),
                    time_unix_nano: 1_714_564_800_000_000_000,
                    observed_time_unix_nano: 1_714_564_800_123_456_789,
                    severity_number: 13,
                    severity_text: Some(Cow::Borrowed("WARN")),
                    source: Some(Arc::new(SourceMeta::for_path("/x/a.log"))),
                    attributes: vec![
                        Attr::new("log.iostream", "stdout"),
                        Attr::new("n", -3i64),
                        Attr::new("ratio", 0.5f64),
                        Attr::new("ok", true),
                    ],
                },
                LogRecord {
                    body: Bytes::from_static(b"bin\xffary"),
                    observed_time_unix_nano: 9,
                    ..Default::default()
                },
            ],
            metrics: vec![
                MetricPoint {
                    name: Cow::Borrowed("process.cpu.time"),
                    unit: Cow::Borrowed("s"),
                    kind: MetricKind::Sum { monotonic: true },
                    value: MetricValue::Double(1.5),
                    time_unix_nano: 20,
                    start_time_unix_nano: 10,
                    attributes: vec![Attr::new("cpu.mode", "user")],
                },
                MetricPoint {
                    name: Cow::Borrowed("process.memory.usage"),
                    unit: Cow::Borrowed("By"),
                    kind: MetricKind::Gauge,
                    value: MetricValue::Int(i64::MAX),
                    time_unix_nano: 20,
                    start_time_unix_nano: 0,
                    attributes: vec![],
                },
            ],
            bytes: 0,
        };
        let mut out = Vec::new();
        encode(&batch, &resource(), &mut out);
        let got = lines(&out);
        let res = json!({"service.name": "checkout", "process.pid": 4242});
        assert_eq!(
            got,
            [
                json!({
                    "time_unix_nano": 1_714_564_800_000_000_000u64,
                    "observed_time_unix_nano": 1_714_564_800_123_456_789u64,
                    "severity_number": 13,
                    "severity_text": "WARN",
                    "body": "disk \"almost\" full\tnow",
                    "attributes": {
                        "log.file.path": "/x/a.log",
                        "log.file.name": "a.log",
                        "log.iostream": "stdout",
                        "n": -3,
                        "ratio": 0.5,
                        "ok": true
                    },
                    "resource": res,
                }),
                json!({
                    "time_unix_nano": 0,
                    "observed_time_unix_nano": 9,
                    "severity_number": 0,
                    "body": "bin\u{fffd}ary",
                    "attributes": {},
                    "resource": res,
                }),
                json!({
                    "name": "process.cpu.time",
                    "unit": "s",
                    "kind": "sum",
                    "monotonic": true,
                    "value": 1.5,
                    "time_unix_nano": 20,
                    "start_time_unix_nano": 10,
                    "attributes": {"cpu.mode": "user"},
                    "resource": res,
                }),
                json!({
                    "name": "process.memory.usage",
                    "unit": "By",
                    "kind": "gauge",
                    "value": i64::MAX,
                    "time_unix_nano": 20,
                    "start_time_unix_nano": 0,
                    "attributes": {},
                    "resource": res,
                }),
            ]
        );
        // Integers stay integers; key order is the documented one.
        assert!(got[3]["value"].is_i64());
        let first = std::str::from_utf8(&out).unwrap().lines().next().unwrap();
        assert!(first
            .starts_with("{\"time_unix_nano\":1714564800000000000,\"observed_time_unix_nano\":"));
        assert!(first.contains(
            "\"attributes\":{\"log.file.path\":\"/x/a.log\",\"log.file.name\":\"a.log\","
        ));
        assert!(
            first.ends_with(",\"resource\":{\"service.name\":\"checkout\",\"process.pid\":4242}}")
        );
    }

    #[test]
    fn awkward_strings_and_numbers_stay_valid_json() {
        let batch = Batch {
            logs: vec![LogRecord {
                body: Bytes::from_static(b"ctl \x01\x1f \\ / \xe2\x9c\x93 \n"),
                attributes: vec![
                    Attr::new("nan", f64::NAN),
                    Attr::new("inf", f64::INFINITY),
                    Attr::new("whole", 2.0f64),
                    Attr::new("k\"ey", "v\u{2028}"),
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut out = Vec::new();
        encode(&batch, &Resource::default(), &mut out);
        let got = lines(&out);
        assert_eq!(got.len(), 1, "a newline in a body must be escaped");
        assert_eq!(got[0]["body"], "ctl \u{1}\u{1f} \\ / \u{2713} \n");
        assert_eq!(got[0]["attributes"]["nan"], Value::Null);
        assert_eq!(got[0]["attributes"]["inf"], Value::Null);
        assert_eq!(got[0]["attributes"]["whole"], 2.0);
        assert_eq!(got[0]["attributes"]["k\"ey"], "v\u{2028}");
        assert_eq!(got[0]["resource"], json!({}));
    }

    #[test]
    fn empty_batch_writes_nothing_and_encode_appends() {
        let mut out = b"x".to_vec();
        encode(&Batch::default(), &resource(), &mut out);
        assert_eq!(out, b"x");
    }
}
