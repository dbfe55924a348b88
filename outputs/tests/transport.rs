//! The outputs against a real HTTP server on 127.0.0.1 (hyper, HTTP/1.1),
//! a real file, and the acknowledgement ledger.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message;
use sidekick_outputs::{
    Batch, Compression, HttpConfig, Ledger, OutputConfig, OutputError, OutputKind, Outputs,
    Resource, RetryConfig, TlsConfig,
};
use sidekick_pipeline::{Attr, LogRecord, MetricKind, MetricPoint, MetricValue};
use std::borrow::Cow;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

// ---------------------------------------------------------------------------
// A scripted HTTP server.

#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

impl Reply {
    fn status(status: u16) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: String::new(),
            delay: Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: hyper::HeaderMap,
    body: Vec<u8>,
    status: u16,
    arrived: Instant,
}

impl Received {
    /// The body after undoing its Content-Encoding.
    fn decoded(&self) -> Vec<u8> {
        match self
            .headers
            .get("content-encoding")
            .map(|v| v.to_str().unwrap())
        {
            Some("gzip") => {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&self.body[..])
                    .read_to_end(&mut out)
                    .unwrap();
                out
            }
            Some("zstd") => zstd::decode_all(&self.body[..]).unwrap(),
            None => self.body.clone(),
            Some(other) => panic!("unexpected content-encoding {other}"),
        }
    }

    fn log_bodies(&self) -> Vec<String> {
        let req = ExportLogsServiceRequest::decode(&self.decoded()[..]).unwrap();
        req.resource_logs[0].scope_logs[0]
            .log_records
            .iter()
            .map(|r| match r.body.as_ref().unwrap().value.as_ref().unwrap() {
                any_value::Value::StringValue(s) => s.clone(),
                other => panic!("unexpected body {other:?}"),
            })
            .collect()
    }
}

#[derive(Default)]
struct State {
    script: VecDeque<Reply>,
    received: Vec<Received>,
}

#[derive(Clone)]
struct Server {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Server {
    fn start(rt: &Runtime, script: Vec<Reply>) -> Server {
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        Server::serve(rt, listener, script)
    }

    fn serve(rt: &Runtime, listener: TcpListener, script: Vec<Reply>) -> Server {
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            script: script.into(),
            received: Vec::new(),
        }));
        let st = state.clone();
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(st.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Server { addr, state }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    fn ok(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.status == 200)
            .collect()
    }
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let arrived = Instant::now();
    let (parts, body) = req.into_parts();
    let body = body.collect().await.unwrap().to_bytes().to_vec();
    let reply = state
        .lock()
        .unwrap()
        .script
        .pop_front()
        .unwrap_or(Reply::status(200));
    tokio::time::sleep(reply.delay).await;
    state.lock().unwrap().received.push(Received {
        path: parts.uri.path().to_string(),
        headers: parts.headers,
        body,
        status: reply.status,
        arrived,
    });
    let mut resp = Response::builder().status(reply.status);
    for (k, v) in &reply.headers {
        resp = resp.header(*k, v);
    }
    Ok(resp.body(Full::new(Bytes::from(reply.body))).unwrap())
}

// ---------------------------------------------------------------------------
// Helpers.

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn resource() -> Arc<Resource> {
    Arc::new(Resource {
        attributes: vec![Attr::new("service.name", "checkout")],
    })
}

fn fast_retry() -> RetryConfig {
    RetryConfig {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(50),
    }
}

fn http(endpoint: String) -> HttpConfig {
    HttpConfig {
        retry: fast_retry(),
        timeout: Duration::from_secs(5),
        ..HttpConfig::new(endpoint)
    }
}

fn otlp(cfg: HttpConfig) -> Vec<OutputConfig> {
    vec![OutputConfig {
        name: "otlp_http[0]".into(),
        kind: OutputKind::OtlpHttp(cfg),
    }]
}

fn log_batch(ledger: &Ledger, bodies: &[&str]) -> Arc<Batch> {
    let logs: Vec<LogRecord> = bodies
        .iter()
        .map(|b| LogRecord {
            body: Bytes::from(b.to_string()),
            observed_time_unix_nano: 1_700_000_000_000_000_000,
            ..Default::default()
        })
        .collect();
    Arc::new(Batch {
        id: ledger.begin_batch(Vec::new()),
        bytes: logs.iter().map(|l| l.size()).sum(),
        logs,
        metrics: Vec::new(),
    })
}

fn metric(name: &'static str, v: i64) -> MetricPoint {
    MetricPoint {
        name: Cow::Borrowed(name),
        unit: Cow::Borrowed("By"),
        kind: MetricKind::Gauge,
        value: MetricValue::Int(v),
        time_unix_nano: 5,
        start_time_unix_nano: 0,
        attributes: Vec::new(),
    }
}

struct Rig {
    rt: Runtime,
    ledger: Arc<Ledger>,
    outputs: Outputs,
}

fn rig(rt: Runtime, configs: Vec<OutputConfig>) -> Rig {
    let ledger = Arc::new(Ledger::new(configs.len(), None).unwrap());
    let outputs = Outputs::start(configs, resource(), ledger.clone(), rt.handle().clone()).unwrap();
    Rig {
        rt,
        ledger,
        outputs,
    }
}

impl Rig {
    fn idle(&self) {
        assert!(
            self.ledger.wait_idle(Duration::from_secs(10)),
            "batches still unacknowledged"
        );
        assert_eq!(self.ledger.in_flight(), 0);
    }
}

// ---------------------------------------------------------------------------
// Tests.

#[test]
fn retries_503_then_delivers_once() {
    let rt = runtime();
    let server = Server::start(&rt, vec![Reply::status(503), Reply::status(503)]);
    let r = rig(rt, otlp(http(server.url())));
    let batch = log_batch(&r.ledger, &["one", "two", "three"]);
    r.outputs.send(batch);
    r.idle();

    let got = server.received();
    assert_eq!(
        got.iter().map(|g| g.status).collect::<Vec<_>>(),
        [503, 503, 200]
    );
    assert!(
        got.iter().all(|g| g.body == got[0].body),
        "same body each try"
    );
    let ok = server.ok();
    assert_eq!(ok.len(), 1, "delivered once");
    assert_eq!(ok[0].log_bodies(), ["one", "two", "three"]);

    let st = &r.outputs.stats()[0];
    assert_eq!(st.name, "otlp_http[0]");
    assert_eq!(st.retries.load(Relaxed), 2);
    assert_eq!(st.batches_sent.load(Relaxed), 1);
    assert_eq!(st.records_sent.load(Relaxed), 3);
    assert_eq!(st.bytes_sent.load(Relaxed), ok[0].body.len() as u64);
    assert_eq!(st.batches_dropped.load(Relaxed), 0);
    assert_eq!(st.in_flight.load(Relaxed), 0);
    assert!(st.last_success_unix_nano.load(Relaxed) > 0);
    assert!(r.outputs.shutdown(Instant::now() + Duration::from_secs(1)));
    drop(r.rt);
}

#[test]
fn honours_retry_after() {
    let rt = runtime();
    let mut busy = Reply::status(429);
    busy.headers.push(("retry-after", "1".into()));
    let server = Server::start(&rt, vec![busy]);
    let mut cfg = http(server.url());
    cfg.retry.max = Duration::from_secs(5);
    let r = rig(rt, otlp(cfg));
    r.outputs.send(log_batch(&r.ledger, &["x"]));
    r.idle();
    let got = server.received();
    assert_eq!(got.len(), 2);
    let waited = got[1].arrived - got[0].arrived;
    assert!(waited >= Duration::from_millis(950), "waited {waited:?}");
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");
    assert_eq!(r.outputs.stats()[0].retries.load(Relaxed), 1);
}

#[test]
fn refused_batch_is_dropped_counted_and_acknowledged() {
    let rt = runtime();
    let mut bad = Reply::status(400);
    bad.body = "invalid payload ".repeat(50);
    let server = Server::start(&rt, vec![bad]);
    let r = rig(rt, otlp(http(server.url())));
    r.outputs.send(log_batch(&r.ledger, &["poison", "pill"]));
    r.idle();
    r.outputs.send(log_batch(&r.ledger, &["next"]));
    r.idle();

    let got = server.received();
    assert_eq!(got.len(), 2, "a 400 is not retried");
    assert_eq!(server.ok()[0].log_bodies(), ["next"]);
    let st = &r.outputs.stats()[0];
    assert_eq!(st.batches_dropped.load(Relaxed), 1);
    assert_eq!(st.records_dropped.load(Relaxed), 2);
    assert_eq!(st.batches_sent.load(Relaxed), 1);
    assert_eq!(st.records_sent.load(Relaxed), 1);
    assert_eq!(st.retries.load(Relaxed), 0);
}

#[test]
fn connection_refused_until_the_server_appears() {
    let rt = runtime();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let r = rig(rt, otlp(http(format!("http://127.0.0.1:{port}"))));
    r.outputs.send(log_batch(&r.ledger, &["patience"]));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(r.ledger.in_flight(), 1, "not acknowledged while refused");
    assert!(r.outputs.stats()[0].retries.load(Relaxed) >= 2);

    let listener =
        r.rt.block_on(TcpListener::bind(("127.0.0.1", port)))
            .unwrap();
    let server = Server::serve(&r.rt, listener, Vec::new());
    r.idle();
    assert_eq!(server.ok().len(), 1);
    assert_eq!(server.ok()[0].log_bodies(), ["patience"]);
}

#[test]
fn otlp_requests_carry_headers_and_decode() {
    let rt = runtime();
    let server = Server::start(&rt, Vec::new());
    let mut cfg = http(format!("{}/", server.url()));
    cfg.headers
        .push(("authorization".into(), "Bearer s3cret".into()));
    let r = rig(rt, otlp(cfg));
    let mut batch = Arc::try_unwrap(log_batch(&r.ledger, &["alpha", "beta"])).unwrap();
    batch.metrics = vec![
        metric("process.memory.usage", 10),
        metric("process.memory.usage", 20),
    ];
    r.outputs.send(Arc::new(batch));
    r.idle();

    let mut got = server.ok();
    got.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(
        got.iter().map(|g| g.path.as_str()).collect::<Vec<_>>(),
        ["/v1/logs", "/v1/metrics"],
        "trailing slash trimmed"
    );
    for g in &got {
        assert_eq!(g.headers["content-type"], "application/x-protobuf");
        assert_eq!(g.headers["content-encoding"], "gzip");
        assert_eq!(g.headers["authorization"], "Bearer s3cret");
    }
    assert_eq!(got[0].log_bodies(), ["alpha", "beta"]);
    let req = ExportLogsServiceRequest::decode(&got[0].decoded()[..]).unwrap();
    let res = req.resource_logs[0].resource.as_ref().unwrap();
    assert_eq!(res.attributes[0].key, "service.name");
    let m = ExportMetricsServiceRequest::decode(&got[1].decoded()[..]).unwrap();
    let metrics = &m.resource_metrics[0].scope_metrics[0].metrics;
    assert_eq!(metrics.len(), 1, "same metric grouped");
    let st = &r.outputs.stats()[0];
    assert_eq!(st.batches_sent.load(Relaxed), 1);
    assert_eq!(st.records_sent.load(Relaxed), 4);
    assert_eq!(
        st.bytes_sent.load(Relaxed),
        (got[0].body.len() + got[1].body.len()) as u64
    );
}

#[test]
fn zstd_and_uncompressed_bodies() {
    for (compression, encoding) in [(Compression::Zstd, Some("zstd")), (Compression::None, None)] {
        let rt = runtime();
        let server = Server::start(&rt, Vec::new());
        let mut cfg = http(server.url());
        cfg.compression = compression;
        let r = rig(rt, otlp(cfg));
        r.outputs.send(log_batch(&r.ledger, &["z"]));
        r.idle();
        let got = server.ok();
        assert_eq!(
            got[0]
                .headers
                .get("content-encoding")
                .map(|v| v.to_str().unwrap()),
            encoding
        );
        assert_eq!(got[0].log_bodies(), ["z"]);
    }
}

#[test]
fn http_ndjson_posts_to_the_endpoint_as_given() {
    let rt = runtime();
    let server = Server::start(&rt, Vec::new());
    let cfg = http(format!("{}/ingest/ndjson", server.url()));
    let r = rig(
        rt,
        vec![OutputConfig {
            name: "http_ndjson[0]".into(),
            kind: OutputKind::HttpNdjson(cfg),
        }],
    );
    let mut batch = Arc::try_unwrap(log_batch(&r.ledger, &["hello"])).unwrap();
    batch.metrics = vec![metric("process.memory.usage", 1)];
    r.outputs.send(Arc::new(batch));
    r.idle();
    let got = server.ok();
    assert_eq!(got.len(), 1, "one request for logs and metrics");
    assert_eq!(got[0].path, "/ingest/ndjson");
    assert_eq!(got[0].headers["content-type"], "application/x-ndjson");
    assert_eq!(got[0].headers["content-encoding"], "gzip");
    let text = String::from_utf8(got[0].decoded()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["body"], "hello");
    assert_eq!(lines[0]["resource"]["service.name"], "checkout");
    assert_eq!(lines[1]["name"], "process.memory.usage");
}

#[test]
fn send_blocks_while_max_in_flight_is_reached() {
    let rt = runtime();
    let mut slow = Reply::status(200);
    slow.delay = Duration::from_millis(600);
    let server = Server::start(&rt, vec![slow]);
    let mut cfg = http(server.url());
    cfg.max_in_flight = 1;
    let r = rig(rt, otlp(cfg));

    let t0 = Instant::now();
    r.outputs.send(log_batch(&r.ledger, &["first"]));
    assert!(
        t0.elapsed() < Duration::from_millis(300),
        "first send is free"
    );
    r.outputs.send(log_batch(&r.ledger, &["second"]));
    let blocked = t0.elapsed();
    assert!(
        blocked >= Duration::from_millis(500),
        "returned after {blocked:?}"
    );
    // The first batch was complete (delivered and acknowledged) before the
    // second was taken.
    assert_eq!(server.ok().len(), 1);
    assert_eq!(server.ok()[0].log_bodies(), ["first"]);
    assert!(r.ledger.in_flight() <= 1);
    r.idle();
    assert_eq!(server.ok().len(), 2);
}

#[test]
fn empty_batch_is_acknowledged_without_a_request() {
    let rt = runtime();
    let server = Server::start(&rt, Vec::new());
    let r = rig(rt, otlp(http(server.url())));
    r.outputs.send(log_batch(&r.ledger, &[]));
    assert_eq!(r.ledger.in_flight(), 0, "acknowledged at once");
    std::thread::sleep(Duration::from_millis(50));
    assert!(server.received().is_empty());
}

#[test]
fn shutdown_abandons_what_the_deadline_cannot_deliver() {
    let rt = runtime();
    let server = Server::start(&rt, vec![Reply::status(503); 1000]);
    let r = rig(rt, otlp(http(server.url())));
    r.outputs.send(log_batch(&r.ledger, &["stuck"]));
    let t0 = Instant::now();
    let all = r
        .outputs
        .shutdown(Instant::now() + Duration::from_millis(300));
    assert!(!all);
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(2),
        "{took:?}"
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(r.ledger.in_flight(), 1, "abandoned, not acknowledged");
    let tries = server.received().len();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(server.received().len(), tries, "no retry after abandoning");
}

#[test]
fn shutdown_waits_for_retries_within_the_deadline() {
    let rt = runtime();
    let server = Server::start(&rt, vec![Reply::status(503); 3]);
    let r = rig(rt, otlp(http(server.url())));
    r.outputs.send(log_batch(&r.ledger, &["late"]));
    assert!(r.outputs.shutdown(Instant::now() + Duration::from_secs(5)));
    assert_eq!(r.ledger.in_flight(), 0);
    assert_eq!(server.ok().len(), 1);
}

#[test]
fn shutdown_retries_at_once_instead_of_sleeping_out_a_long_backoff() {
    // The server asks for 20 s; the shutdown deadline is 5 s away. The
    // retry is made when the shutdown begins, not after the deadline.
    let rt = runtime();
    let mut wait = Reply::status(503);
    wait.headers.push(("retry-after", "20".into()));
    let server = Server::start(&rt, vec![wait]);
    let cfg = HttpConfig {
        retry: RetryConfig {
            initial: Duration::from_secs(20),
            max: Duration::from_secs(30),
        },
        ..http(server.url())
    };
    let r = rig(rt, otlp(cfg));
    r.outputs.send(log_batch(&r.ledger, &["back in time"]));
    let t0 = Instant::now();
    while server.received().is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(10), "no first attempt");
        std::thread::sleep(Duration::from_millis(10));
    }
    let t1 = Instant::now();
    assert!(r.outputs.shutdown(Instant::now() + Duration::from_secs(5)));
    let took = t1.elapsed();
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(r.ledger.in_flight(), 0);
    assert_eq!(server.ok().len(), 1);
}

#[test]
fn file_and_http_both_acknowledge() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.ndjson");
    std::fs::write(&path, b"{\"existing\":1}\n").unwrap();
    let rt = runtime();
    let server = Server::start(&rt, vec![Reply::status(500)]);
    let r = rig(
        rt,
        vec![
            OutputConfig {
                name: "file[0]".into(),
                kind: OutputKind::File { path: path.clone() },
            },
            OutputConfig {
                name: "otlp_http[1]".into(),
                kind: OutputKind::OtlpHttp(http(server.url())),
            },
        ],
    );
    assert_eq!(r.outputs.len(), 2);
    for i in 0..5 {
        let body = format!("line {i}");
        r.outputs.send(log_batch(&r.ledger, &[&body, "tail"]));
    }
    r.idle();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 11, "appended after the existing line");
    assert_eq!(lines[0]["existing"], 1);
    for i in 0..5 {
        assert_eq!(lines[1 + 2 * i]["body"], format!("line {i}"), "in order");
        assert_eq!(lines[2 + 2 * i]["body"], "tail");
    }
    let stats = r.outputs.stats();
    assert_eq!(stats[0].name, "file[0]");
    assert_eq!(stats[0].batches_sent.load(Relaxed), 5);
    assert_eq!(stats[0].records_sent.load(Relaxed), 10);
    assert_eq!(stats[0].bytes_sent.load(Relaxed), text.len() as u64 - 15);
    assert_eq!(stats[1].batches_sent.load(Relaxed), 5);
    assert_eq!(stats[1].retries.load(Relaxed), 1);
    assert!(r.outputs.shutdown(Instant::now() + Duration::from_secs(1)));
}

#[test]
fn configuration_errors_name_the_output_and_the_culprit() {
    let rt = runtime();
    let ledger = Arc::new(Ledger::new(1, None).unwrap());
    let start = |kind: OutputKind| -> OutputError {
        Outputs::start(
            vec![OutputConfig {
                name: "out[3]".into(),
                kind,
            }],
            resource(),
            ledger.clone(),
            rt.handle().clone(),
        )
        .unwrap_err()
    };
    let msg = |e: OutputError| e.to_string();

    let e = msg(start(OutputKind::OtlpHttp(HttpConfig::new("not a url"))));
    assert!(e.contains("out[3]") && e.contains("not a url"), "{e}");
    let e = msg(start(OutputKind::OtlpHttp(HttpConfig::new("ftp://host/x"))));
    assert!(e.contains("ftp"), "{e}");

    let mut cfg = HttpConfig::new("https://collector:4318");
    cfg.tls = TlsConfig {
        ca_file: Some("/nonexistent/ca.pem".into()),
        ..TlsConfig::default()
    };
    let e = msg(start(OutputKind::OtlpHttp(cfg.clone())));
    assert!(
        e.contains("out[3]") && e.contains("/nonexistent/ca.pem"),
        "{e}"
    );

    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    cfg.tls.ca_file = Some(junk.clone());
    let e = msg(start(OutputKind::OtlpHttp(cfg.clone())));
    assert!(e.contains("junk.pem"), "{e}");

    cfg.tls = TlsConfig {
        cert_file: Some(junk),
        ..TlsConfig::default()
    };
    let e = msg(start(OutputKind::OtlpHttp(cfg.clone())));
    assert!(e.contains("key_file"), "{e}");

    let mut cfg = HttpConfig::new("http://collector:4318");
    cfg.headers
        .push(("bad header".into(), "secret-value".into()));
    let e = msg(start(OutputKind::HttpNdjson(cfg)));
    assert!(
        e.contains("bad header") && !e.contains("secret-value"),
        "{e}"
    );

    let e = msg(start(OutputKind::File {
        path: dir.path().join("missing/dir/out.ndjson"),
    }));
    assert!(
        e.contains("out[3]") && e.contains("missing/dir/out.ndjson"),
        "{e}"
    );

    let e =
        Outputs::start(Vec::new(), resource(), ledger.clone(), rt.handle().clone()).unwrap_err();
    assert!(matches!(e, OutputError::NoOutputs));
}
