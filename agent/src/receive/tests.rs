//! End-to-end tests of the receiver: a real server on 127.0.0.1, raw
//! HTTP/1.1 over TCP, and the NDJSON files read back as a user would.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::Path;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, KeyValueList};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::*;

/// A receiver serving on a free loopback port in a temporary directory.
struct TestReceiver {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestReceiver {
    async fn start(max_body_bytes: usize) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), max_body_bytes).await
    }

    async fn start_in(dir: tempfile::TempDir, max_body_bytes: usize) -> Self {
        let opts = ReceiveOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            out_dir: dir.path().join("out"),
            max_body_bytes,
        };
        let receiver = Receiver::bind(opts).await.unwrap();
        let addr = receiver.local_addr();
        assert_ne!(addr.port(), 0);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(receiver.serve(async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            dir,
            stop,
            task,
        }
    }

    /// Stops the receiver, checks that it returned `Ok`, keeps its files.
    async fn stop(self) -> tempfile::TempDir {
        self.stop.send(()).unwrap();
        self.task.await.unwrap().unwrap();
        self.dir
    }

    fn lines(&self, file: &str) -> Vec<serde_json::Value> {
        read_lines(&self.dir.path().join("out").join(file))
    }
}

fn read_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "whole lines only");
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}")))
        .collect()
}

/// A parsed HTTP response.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request on a fresh connection (`Connection: close`) and reads
/// the whole answer. `body: None` sends the headers only.
async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Reply {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(body) = body {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = head.into_bytes();
    request.extend_from_slice(body.unwrap_or_default());
    stream.write_all(&request).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    parse_reply(&raw)
}

fn parse_reply(raw: &[u8]) -> Reply {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {:?}", String::from_utf8_lossy(raw)));
    let head = std::str::from_utf8(&raw[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.trim().to_owned(), value.trim().to_owned())
        })
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if let Some((_, len)) = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        body.truncate(len.parse().unwrap());
    }
    Reply {
        status,
        headers,
        body,
    }
}

async fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    send(addr, "POST", path, headers, Some(body)).await
}

const PROTOBUF: (&str, &str) = ("Content-Type", "application/x-protobuf");
const JSON: (&str, &str) = ("Content-Type", "application/json");
const GZIP: (&str, &str) = ("Content-Encoding", "gzip");
const ZSTD: (&str, &str) = ("Content-Encoding", "zstd");

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 3).unwrap()
}

fn string(s: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(Value::StringValue(s.into())),
    })
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn resource() -> Option<Resource> {
    Some(Resource {
        attributes: vec![
            kv("service.name", Value::StringValue("checkout".into())),
            kv("process.pid", Value::IntValue(42)),
        ],
        ..Default::default()
    })
}

fn file_attributes(path: &str) -> Vec<KeyValue> {
    let name = path.rsplit('/').next().unwrap();
    vec![
        kv("log.file.path", Value::StringValue(path.into())),
        kv("log.file.name", Value::StringValue(name.into())),
    ]
}

fn logs_request(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn line_record(body: &str) -> LogRecord {
    LogRecord {
        observed_time_unix_nano: 1,
        body: string(body),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_logs_are_written_field_by_field_for_each_compression() {
    let server = TestReceiver::start(DEFAULT_MAX_BODY_BYTES).await;
    let warn = LogRecord {
        time_unix_nano: 1_700_000_000_000_000_001,
        observed_time_unix_nano: 1_700_000_000_000_000_002,
        severity_number: 13,
        severity_text: "WARN".into(),
        body: string("the line"),
        attributes: file_attributes("/x/a.log"),
        ..Default::default()
    };
    let mut structured = LogRecord {
        observed_time_unix_nano: 5,
        body: Some(AnyValue {
            value: Some(Value::KvlistValue(KeyValueList {
                values: vec![
                    kv("n", Value::IntValue(-3)),
                    kv("ratio", Value::DoubleValue(0.25)),
                    kv("ok", Value::BoolValue(false)),
                    kv(
                        "tags",
                        Value::ArrayValue(ArrayValue {
                            values: vec![string("a").unwrap(), string("b").unwrap()],
                        }),
                    ),
                ],
            })),
        }),
        attributes: file_attributes("/x/b.log"),
        ..Default::default()
    };
    let bytes = LogRecord {
        observed_time_unix_nano: 6,
        body: Some(AnyValue {
            value: Some(Value::BytesValue(b"raw \xfe bytes".to_vec())),
        }),
        ..Default::default()
    };
    let plain = logs_request(vec![warn.clone()]).encode_to_vec();
    let reply = post(server.addr, "/v1/logs", &[], &plain).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/x-protobuf"));
    assert!(reply.body.is_empty(), "an empty ExportLogsServiceResponse");

    structured.severity_number = 9;
    let request = logs_request(vec![structured]).encode_to_vec();
    let reply = post(server.addr, "/v1/logs", &[PROTOBUF, GZIP], &gzip(&request)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    let request = logs_request(vec![bytes]).encode_to_vec();
    let reply = post(server.addr, "/v1/logs", &[PROTOBUF, ZSTD], &zstd(&request)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    // The files are complete when the 200 arrives, before any shutdown.
    let raw = std::fs::read_to_string(server.dir.path().join("out/logs.ndjson")).unwrap();
    assert_eq!(
        raw.lines().next().unwrap(),
        concat!(
            r#"{"time_unix_nano":1700000000000000001,"observed_time_unix_nano":1700000000000000002,"#,
            r#""severity_number":13,"severity_text":"WARN","body":"the line","#,
            r#""attributes":{"log.file.path":"/x/a.log","log.file.name":"a.log"},"#,
            r#""resource":{"service.name":"checkout","process.pid":42}}"#
        )
    );
    let lines = server.lines("logs.ndjson");
    assert_eq!(lines.len(), 3);
    assert_eq!(
        lines[1],
        json!({
            "time_unix_nano": 0,
            "observed_time_unix_nano": 5,
            "severity_number": 9,
            "body": {"n": -3, "ratio": 0.25, "ok": false, "tags": ["a", "b"]},
            "attributes": {"log.file.path": "/x/b.log", "log.file.name": "b.log"},
            "resource": {"service.name": "checkout", "process.pid": 42}
        })
    );
    assert_eq!(
        lines[2],
        json!({
            "time_unix_nano": 0,
            "observed_time_unix_nano": 6,
            "severity_number": 0,
            "body": "raw \u{fffd} bytes",
            "body_bytes": true,
            "attributes": {},
            "resource": {"service.name": "checkout", "process.pid": 42}
        })
    );
    assert!(server.lines("metrics.ndjson").is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_write_one_line_per_data_point() {
    let server = TestReceiver::start(DEFAULT_MAX_BODY_BYTES).await;
    let point = |value, attrs: Vec<KeyValue>| NumberDataPoint {
        attributes: attrs,
        start_time_unix_nano: 100,
        time_unix_nano: 200,
        value: Some(value),
        ..Default::default()
    };
    let metric = |name: &str, unit: &str, data| Metric {
        name: name.into(),
        unit: unit.into(),
        data: Some(data),
        ..Default::default()
    };
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    metric(
                        "process.memory.usage",
                        "By",
                        metric::Data::Gauge(Gauge {
                            data_points: vec![point(number_data_point::Value::AsInt(4096), vec![])],
                        }),
                    ),
                    metric(
                        "process.cpu.time",
                        "s",
                        metric::Data::Sum(Sum {
                            data_points: vec![
                                point(
                                    number_data_point::Value::AsDouble(1.5),
                                    vec![kv("cpu.mode", Value::StringValue("user".into()))],
                                ),
                                point(
                                    number_data_point::Value::AsDouble(0.5),
                                    vec![kv("cpu.mode", Value::StringValue("system".into()))],
                                ),
                            ],
                            aggregation_temporality: 2,
                            is_monotonic: true,
                        }),
                    ),
                    metric(
                        "process.thread.count",
                        "{thread}",
                        metric::Data::Sum(Sum {
                            data_points: vec![point(number_data_point::Value::AsInt(7), vec![])],
                            aggregation_temporality: 2,
                            is_monotonic: false,
                        }),
                    ),
                    metric(
                        "http.server.duration",
                        "ms",
                        metric::Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint {
                                start_time_unix_nano: 100,
                                time_unix_nano: 200,
                                count: 4,
                                sum: Some(10.0),
                                bucket_counts: vec![1, 3],
                                explicit_bounds: vec![5.0],
                                ..Default::default()
                            }],
                            aggregation_temporality: 2,
                        }),
                    ),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let body = gzip(&request.encode_to_vec());
    let reply = post(server.addr, "/v1/metrics", &[PROTOBUF, GZIP], &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let res = json!({"service.name": "checkout", "process.pid": 42});
    assert_eq!(
        server.lines("metrics.ndjson"),
        vec![
            json!({"name": "process.memory.usage", "unit": "By", "kind": "gauge", "value": 4096,
                   "time_unix_nano": 200, "start_time_unix_nano": 100, "attributes": {}, "resource": res}),
            json!({"name": "process.cpu.time", "unit": "s", "kind": "sum", "monotonic": true, "value": 1.5,
                   "time_unix_nano": 200, "start_time_unix_nano": 100,
                   "attributes": {"cpu.mode": "user"}, "resource": res}),
            json!({"name": "process.cpu.time", "unit": "s", "kind": "sum", "monotonic": true, "value": 0.5,
                   "time_unix_nano": 200, "start_time_unix_nano": 100,
                   "attributes": {"cpu.mode": "system"}, "resource": res}),
            json!({"name": "process.thread.count", "unit": "{thread}", "kind": "sum", "monotonic": false,
                   "value": 7, "time_unix_nano": 200, "start_time_unix_nano": 100,
                   "attributes": {}, "resource": res}),
            json!({"name": "http.server.duration", "unit": "ms", "kind": "histogram", "count": 4, "sum": 10.0,
                   "time_unix_nano": 200, "start_time_unix_nano": 100, "attributes": {}, "resource": res}),
        ]
    );
    // An int point stays a JSON integer, a double keeps its fraction.
    let raw = std::fs::read_to_string(server.dir.path().join("out/metrics.ndjson")).unwrap();
    assert!(raw.contains(r#""value":4096,"#), "{raw}");
    assert!(raw.contains(r#""sum":10.0,"#), "{raw}");
    assert!(server.lines("logs.ndjson").is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_json_logs_and_metrics_are_accepted() {
    let server = TestReceiver::start(DEFAULT_MAX_BODY_BYTES).await;
    // As the OTLP/JSON spec writes it: camelCase keys, 64-bit integers as
    // strings, ids in hex, enums as integers.
    let logs = r#"{"resourceLogs":[{
        "resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}},
                                  {"key":"process.pid","value":{"intValue":"42"}}]},
        "scopeLogs":[{"scope":{"name":"sidekick"},"logRecords":[{
            "timeUnixNano":"1700000000000000001","observedTimeUnixNano":1700000000000000002,
            "severityNumber":17,"severityText":"ERROR",
            "traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
            "body":{"stringValue":"boom"},
            "attributes":[{"key":"log.file.path","value":{"stringValue":"/x/a.log"}},
                          {"key":"retry","value":{"boolValue":true}},
                          {"key":"n","value":{"intValue":3}},
                          {"key":"d","value":{"doubleValue":2.5}},
                          {"key":"raw","value":{"bytesValue":"aGVsbG8="}}],
            "unknownFieldIsIgnored":1}]}]}]}"#;
    let reply = post(server.addr, "/v1/logs", &[JSON], logs.as_bytes()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.text(), "{}");
    assert_eq!(
        server.lines("logs.ndjson"),
        vec![json!({
            "time_unix_nano": 1_700_000_000_000_000_001u64,
            "observed_time_unix_nano": 1_700_000_000_000_000_002u64,
            "severity_number": 17,
            "severity_text": "ERROR",
            "body": "boom",
            "attributes": {"log.file.path": "/x/a.log", "retry": true, "n": 3, "d": 2.5, "raw": "hello"},
            "resource": {"service.name": "checkout", "process.pid": 42}
        })]
    );

    let metrics = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[
        {"name":"process.cpu.time","unit":"s","sum":{"aggregationTemporality":2,"isMonotonic":true,
         "dataPoints":[{"startTimeUnixNano":"1","timeUnixNano":"2","asDouble":1.5,
                        "attributes":[{"key":"cpu.mode","value":{"stringValue":"user"}}]}]}},
        {"name":"process.thread.count","gauge":{"dataPoints":[{"timeUnixNano":"2","asInt":"9"}]}}
    ]}]}]}"#;
    let reply = post(
        server.addr,
        "/v1/metrics",
        &[JSON, GZIP],
        &gzip(metrics.as_bytes()),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        server.lines("metrics.ndjson"),
        vec![
            json!({"name": "process.cpu.time", "unit": "s", "kind": "sum", "monotonic": true, "value": 1.5,
                   "time_unix_nano": 2, "start_time_unix_nano": 1, "attributes": {"cpu.mode": "user"},
                   "resource": {}}),
            json!({"name": "process.thread.count", "unit": "", "kind": "gauge", "value": 9,
                   "time_unix_nano": 2, "start_time_unix_nano": 0, "attributes": {}, "resource": {}}),
        ]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_get_400_with_a_reason_and_the_server_keeps_working() {
    let server = TestReceiver::start(DEFAULT_MAX_BODY_BYTES).await;
    let good = logs_request(vec![line_record("still here")]).encode_to_vec();
    let truncated = &good[..good.len() - 3];
    let bad_gzip = {
        let mut gz = gzip(&good);
        gz.truncate(gz.len() / 2);
        gz
    };
    // (path, headers, body, start of the expected reason)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<u8>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "/v1/logs",
            vec![],
            b"not protobuf at all".to_vec(),
            "cannot decode ExportLogsServiceRequest: ",
        ),
        (
            "/v1/logs",
            vec![PROTOBUF],
            truncated.to_vec(),
            "cannot decode ExportLogsServiceRequest: ",
        ),
        (
            "/v1/metrics",
            vec![],
            vec![0xff; 64],
            "cannot decode ExportMetricsServiceRequest: ",
        ),
        (
            "/v1/logs",
            vec![GZIP],
            b"\x1f\x8b but not really gzip".to_vec(),
            "cannot decompress gzip body: ",
        ),
        (
            "/v1/logs",
            vec![GZIP],
            bad_gzip,
            "cannot decompress gzip body: ",
        ),
        (
            "/v1/logs",
            vec![GZIP],
            good.clone(),
            "cannot decompress gzip body: ",
        ),
        (
            "/v1/logs",
            vec![ZSTD],
            b"definitely not zstd".to_vec(),
            "cannot decompress zstd body: ",
        ),
        (
            "/v1/logs",
            vec![JSON],
            b"{\"resourceLogs\": 5}".to_vec(),
            "cannot decode ExportLogsServiceRequest from OTLP/JSON: ",
        ),
        (
            "/v1/logs",
            vec![JSON],
            b"{\"resourceLogs\": [".to_vec(),
            "cannot decode ExportLogsServiceRequest from OTLP/JSON: ",
        ),
        (
            "/v1/metrics",
            vec![JSON],
            good.clone(),
            "cannot decode ExportMetricsServiceRequest from OTLP/JSON: ",
        ),
    ];
    for (path, headers, body, reason) in &cases {
        let reply = post(server.addr, path, headers, body).await;
        assert_eq!(reply.status, 400, "{path} {headers:?}: {}", reply.text());
        assert_eq!(
            reply.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        let text = reply.text();
        assert!(text.starts_with(reason), "{path} {headers:?}: {text:?}");
        assert_eq!(text.lines().count(), 1, "one line: {text:?}");
    }
    let reply = post(server.addr, "/v1/logs", &[PROTOBUF], &good).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let lines = server.lines("logs.ndjson");
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["body"], "still here");
    assert!(server.lines("metrics.ndjson").is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_methods_and_media_types() {
    let server = TestReceiver::start(DEFAULT_MAX_BODY_BYTES).await;
    let good = logs_request(vec![line_record("x")]).encode_to_vec();

    let reply = send(server.addr, "GET", "/healthz", &[], None).await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "ok\n"));

    let reply = post(server.addr, "/v1/traces", &[], &good).await;
    assert_eq!(reply.status, 404);
    assert!(reply.text().contains("/v1/traces"), "{}", reply.text());
    let reply = send(server.addr, "GET", "/", &[], None).await;
    assert_eq!(reply.status, 404);

    let reply = send(server.addr, "GET", "/v1/logs", &[], None).await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("POST"));
    let reply = post(server.addr, "/healthz", &[], b"").await;
    assert_eq!(reply.status, 405);

    let reply = post(
        server.addr,
        "/v1/logs",
        &[("Content-Encoding", "br")],
        &good,
    )
    .await;
    assert_eq!(reply.status, 415);
    assert!(
        reply.text().contains("Content-Encoding \"br\""),
        "{}",
        reply.text()
    );
    let reply = post(
        server.addr,
        "/v1/logs",
        &[("Content-Type", "text/plain")],
        &good,
    )
    .await;
    assert_eq!(reply.status, 415);
    assert!(
        reply.text().contains("Content-Type \"text/plain\""),
        "{}",
        reply.text()
    );

    // An empty request is a valid export of nothing.
    let reply = post(server.addr, "/v1/metrics", &[PROTOBUF], b"").await;
    assert_eq!(reply.status, 200);
    assert!(server.lines("logs.ndjson").is_empty());
    assert!(server.lines("metrics.ndjson").is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413() {
    let max = 64 * 1024;
    let server = TestReceiver::start(max).await;
    // Announced too large: refused from the headers alone.
    let too_long = (max + 1).to_string();
    let reply = send(
        server.addr,
        "POST",
        "/v1/logs",
        &[PROTOBUF, ("Content-Length", &too_long)],
        None,
    )
    .await;
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert!(
        reply.text().contains("exceeds the limit of 65536 bytes"),
        "{}",
        reply.text()
    );

    // Small when compressed, too large once decompressed.
    let records = (0..2000)
        .map(|i| line_record(&format!("line {i} {}", "x".repeat(40))))
        .collect();
    let big = logs_request(records).encode_to_vec();
    assert!(big.len() > max);
    for (encoding, body) in [(GZIP, gzip(&big)), (ZSTD, zstd(&big))] {
        assert!(body.len() < max);
        let reply = post(server.addr, "/v1/logs", &[PROTOBUF, encoding], &body).await;
        assert_eq!(reply.status, 413, "{encoding:?}: {}", reply.text());
        assert!(
            reply.text().contains("decompresses to more than the limit"),
            "{}",
            reply.text()
        );
    }

    // Under the limit still works.
    let small = logs_request(vec![line_record("fits")]).encode_to_vec();
    let reply = post(server.addr, "/v1/logs", &[PROTOBUF, ZSTD], &zstd(&small)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(server.lines("logs.ndjson").len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_never_interleave_lines() {
    let server = TestReceiver::start(DEFAULT_MAX_BODY_BYTES).await;
    let clients = 8;
    let requests = 5;
    let per_request = 2000;
    let mut tasks = JoinSet::new();
    for client in 0..clients {
        let addr = server.addr;
        tasks.spawn(async move {
            for request in 0..requests {
                let records = (0..per_request)
                    .map(|i| line_record(&format!("c{client} r{request} l{i} {}", "y".repeat(100))))
                    .collect();
                let body = zstd(&logs_request(records).encode_to_vec());
                let reply = post(addr, "/v1/logs", &[PROTOBUF, ZSTD], &body).await;
                assert_eq!(reply.status, 200, "{}", reply.text());
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let lines = server.lines("logs.ndjson");
    assert_eq!(lines.len(), clients * requests * per_request);
    let bodies: HashSet<&str> = lines.iter().map(|l| l["body"].as_str().unwrap()).collect();
    assert_eq!(bodies.len(), lines.len(), "every line once");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_receiver_appends_to_earlier_lines() {
    let server = TestReceiver::start(DEFAULT_MAX_BODY_BYTES).await;
    let first = logs_request(vec![line_record("first run")]).encode_to_vec();
    assert_eq!(post(server.addr, "/v1/logs", &[], &first).await.status, 200);
    let dir = server.stop().await;

    let server = TestReceiver::start_in(dir, DEFAULT_MAX_BODY_BYTES).await;
    let second = logs_request(vec![line_record("second run")]).encode_to_vec();
    assert_eq!(
        post(server.addr, "/v1/logs", &[], &second).await.status,
        200
    );
    let bodies: Vec<_> = server
        .lines("logs.ndjson")
        .iter()
        .map(|l| l["body"].clone())
        .collect();
    assert_eq!(bodies, vec![json!("first run"), json!("second run")]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connections_serve_many_requests_and_do_not_block_shutdown() {
    let server = TestReceiver::start(DEFAULT_MAX_BODY_BYTES).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    for i in 0..3 {
        let body = logs_request(vec![line_record(&format!("ka {i}"))]).encode_to_vec();
        let head = format!(
            "POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&body).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200 "),
            "{:?}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
    assert_eq!(server.lines("logs.ndjson").len(), 3);
    // The idle connection stays open; shutdown must close it, not wait.
    let started = std::time::Instant::now();
    server.stop().await;
    assert!(
        started.elapsed() < DRAIN_TIMEOUT / 2,
        "{:?}",
        started.elapsed()
    );
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_prints_nothing_else_and_stops_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ReceiveOptions::new("127.0.0.1:0".parse().unwrap(), dir.path().join("a/b"));
    run(opts, async {}).await.unwrap();
    assert!(dir.path().join("a/b/logs.ndjson").exists());
    assert!(dir.path().join("a/b/metrics.ndjson").exists());

    // A port already taken is a clear error, not a panic.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let opts = ReceiveOptions::new(taken.local_addr().unwrap(), dir.path().join("c"));
    let err = run(opts, async {}).await.unwrap_err();
    assert!(
        format!("{err:#}").starts_with("cannot listen on 127.0.0.1:"),
        "{err:#}"
    );
}
