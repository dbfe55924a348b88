//! sidekick's own telemetry, as an operator sees it: `/metrics` read by the
//! official Prometheus text parser (Python's `prometheus_client`) against
//! what the receiver counted and what `/proc` says of the target; `/healthz`
//! and `/readyz` while the receiver is up, down beyond the retry budget, and
//! back; `sidekick status`; a telemetry port already taken.

use serde_json::Value;
use sidekick_e2e::{
    serial, sidekick_bin, wait_until, Agent, AgentConfig, FaultProxy, LogFile, Receiver, Scratch,
};
use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PARSER: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        out.append({"family": fam.name, "type": fam.type, "name": s.name,
                    "labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;

/// Whether `python3` has `prometheus_client`. Without it the tests that
/// parse `/metrics` are skipped on a developer's machine and fail in CI.
fn python_prometheus_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import prometheus_client.parser"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let msg = "python3 cannot import prometheus_client (pip install prometheus-client)";
        assert!(std::env::var_os("CI").is_none(), "{msg}; CI must have it");
        eprintln!("SKIPPED: {msg}");
    }
    ok
}

/// One sample as the Prometheus parser read it.
#[derive(Debug, Clone)]
struct Sample {
    family: String,
    kind: String,
    name: String,
    labels: serde_json::Map<String, Value>,
    value: f64,
}

/// Parses an exposition with `prometheus_client`; panics (with the text) if
/// the parser rejects it.
fn prometheus_parse(text: &str) -> Vec<Sample> {
    let mut child = Command::new("python3")
        .args(["-c", PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser rejected /metrics: {}\n---\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("the parser prints JSON");
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| Sample {
            family: s["family"].as_str().unwrap().to_owned(),
            kind: s["type"].as_str().unwrap().to_owned(),
            name: s["name"].as_str().unwrap().to_owned(),
            labels: s["labels"].as_object().unwrap().clone(),
            value: s["value"].as_f64().unwrap(),
        })
        .collect()
}

/// The value of the one sample named `name` with `labels` (all of them).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).and_then(Value::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

/// `GET path` on `addr`: status and body.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP reply");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// The address the agent's telemetry server bound (its `listening on` line).
fn telemetry_addr(agent: &Agent) -> String {
    let line = agent.wait_for_stderr_line(
        "the telemetry listening line",
        Duration::from_secs(15),
        |l| l.contains("telemetry: listening on http://"),
    );
    let rest = &line[line.find("http://").unwrap() + "http://".len()..];
    rest.split_whitespace().next().unwrap().to_owned()
}

/// A config from `cfg` with telemetry on a free port and `extra` appended.
fn write_config(cfg: &AgentConfig, dir: &Path, extra: &str) -> String {
    let yaml = cfg.to_yaml();
    let off = "telemetry:\n  listen: \"off\"";
    assert!(yaml.contains(off), "the harness writes {off:?}:\n{yaml}");
    let yaml = yaml.replace(off, "telemetry:\n  listen: 127.0.0.1:0") + extra;
    let path = dir.join("telemetry.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.to_str().unwrap().to_owned()
}

/// A target process: Python with four extra threads, all asleep. Killed on
/// drop.
struct Target(Child);

impl Target {
    fn start() -> Self {
        let child = Command::new("python3")
            .args([
                "-c",
                "import threading, time\n\
                 for _ in range(4): threading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n\
                 time.sleep(600)",
            ])
            .stdin(Stdio::null())
            .spawn()
            .expect("run python3");
        let t = Target(child);
        wait_until(
            Duration::from_secs(10),
            "the target's five threads",
            || t.proc_status("Threads") == Some(5),
            || format!("{:?}", t.proc_status("Threads")),
        );
        t
    }

    /// A numeric field of `/proc/PID/status` (`VmRSS` in KiB).
    fn proc_status(&self, field: &str) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).ok()?;
        let line = s.lines().find(|l| l.starts_with(&format!("{field}:")))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Metric points the receiver wrote (one NDJSON line each).
fn metric_points_received(receiver: &Receiver) -> usize {
    std::fs::read_to_string(receiver.out_dir().join("metrics.ndjson"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

fn status(addr: &str) -> std::process::Output {
    Command::new(sidekick_bin())
        .args(["status", "--telemetry", addr])
        .output()
        .expect("run sidekick status")
}

fn row<'a>(table: &'a str, key: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no {key:?} row in:\n{table}"))
}

#[test]
fn metrics_match_what_the_receiver_counted_and_what_proc_says() {
    if !python_prometheus_available() {
        return;
    }
    let _serial = serial();
    let scratch = Scratch::new();
    let receiver = Receiver::start();
    let target = Target::start();
    const LINES: u64 = 5000;
    let log = scratch.log("app.log");
    LogFile::create(&log).append(0..LINES, 100);
    let mut cfg = AgentConfig::new(&scratch.data, &[&scratch.log_glob()], receiver.endpoint());
    cfg.start_at = "beginning";
    let config = write_config(
        &cfg,
        scratch.path(),
        "metrics:\n  interval: 1s\n  process: true\n  cgroup: true\n",
    );
    let pid = target.0.id().to_string();
    let mut agent = Agent::start_args(&["run", "-c", &config, "--pid", &pid], scratch.path());
    let addr = telemetry_addr(&agent);

    receiver.wait_for_logs(LINES as usize, Duration::from_secs(60));
    let out = "otlp_http[0]";
    // Acknowledgements are counted once the 200 is read: a moment after the
    // receiver wrote the records.
    let samples = RefCell::new(Vec::new());
    wait_until(
        Duration::from_secs(10),
        "log records sent == lines received, and no lag",
        || {
            let s = prometheus_parse(&http_get(&addr, "/metrics").1);
            let ok = value(
                &s,
                "sidekick_output_log_records_sent_total",
                &[("output", out)],
            ) == Some(receiver.count() as f64)
                && value(&s, "sidekick_log_file_lag_bytes", &[]) == Some(0.0);
            *samples.borrow_mut() = s;
            ok
        },
        || format!("{:?}", samples.borrow()),
    );
    let samples = samples.into_inner();
    // Every line once, beside the target's `process.start` event (also a
    // log record).
    let received = receiver.logs();
    let lines = received.iter().filter(|r| r.file_path.is_some()).count();
    assert_eq!(lines, LINES as usize, "lines received");
    let logs_received = received.len();
    let size = std::fs::metadata(&log).unwrap().len() as f64;
    assert_eq!(
        value(&samples, "sidekick_log_records_read_total", &[]),
        Some(LINES as f64)
    );
    assert_eq!(
        value(&samples, "sidekick_log_bytes_read_total", &[]),
        Some(size)
    );
    let log_path = log.to_str().unwrap();
    assert_eq!(
        value(
            &samples,
            "sidekick_log_file_lag_bytes",
            &[("path", log_path)]
        ),
        Some(0.0)
    );
    for zero in [
        "sidekick_output_records_dropped_total",
        "sidekick_output_retries_total",
    ] {
        assert_eq!(
            value(&samples, zero, &[("output", out)]),
            Some(0.0),
            "{zero}"
        );
    }
    // Counters are counters to Prometheus (the family drops `_total`).
    let sent = samples
        .iter()
        .find(|s| s.name == "sidekick_output_records_sent_total")
        .unwrap();
    assert_eq!(
        (sent.family.as_str(), sent.kind.as_str()),
        ("sidekick_output_records_sent", "counter")
    );
    assert_eq!(value(&samples, "sidekick_log_files_open", &[]), Some(1.0));
    assert_eq!(
        value(&samples, "sidekick_queue_capacity_chunks", &[]),
        Some(8.0)
    );
    let last_send = value(
        &samples,
        "sidekick_output_last_success_timestamp_seconds",
        &[("output", out)],
    )
    .unwrap();
    let now = sidekick_e2e::unix_nanos() as f64 / 1e9;
    assert!(
        last_send > now - 30.0 && last_send <= now + 1.0,
        "{last_send} vs {now}"
    );

    // All records sent (log records and metric points) == all the receiver
    // counted, read in a moment when no sample is on its way.
    let seen = RefCell::new(String::new());
    wait_until(
        Duration::from_secs(15),
        "records sent == log records + metric points received",
        || {
            let before = metric_points_received(&receiver);
            let s = prometheus_parse(&http_get(&addr, "/metrics").1);
            let after = metric_points_received(&receiver);
            let sent = value(&s, "sidekick_output_records_sent_total", &[("output", out)]);
            *seen.borrow_mut() =
                format!("sent {sent:?}, received {before}..{after} points + {logs_received} logs");
            before == after && before > 0 && sent == Some((logs_received + before) as f64)
        },
        || seen.borrow().clone(),
    );

    // The target's figures are those of /proc.
    let samples = prometheus_parse(&http_get(&addr, "/metrics").1);
    assert_eq!(
        value(&samples, "sidekick_target_pid", &[]),
        Some(target.0.id() as f64)
    );
    assert_eq!(
        value(&samples, "process_thread_count", &[]),
        target.proc_status("Threads").map(|t| t as f64)
    );
    let rss = value(&samples, "process_memory_usage_bytes", &[]).expect("target RSS");
    let proc_rss = target.proc_status("VmRSS").unwrap() as f64 * 1024.0;
    assert!(
        (rss - proc_rss).abs() <= proc_rss * 0.05,
        "RSS in /metrics {rss} vs /proc {proc_rss}"
    );
    let cpu = samples
        .iter()
        .find(|s| s.name == "process_cpu_time_seconds_total")
        .expect("target CPU time");
    assert_eq!(cpu.kind, "counter");

    assert_eq!(http_get(&addr, "/healthz"), (200, "ok\n".to_owned()));
    assert_eq!(http_get(&addr, "/readyz"), (200, "ready\n".to_owned()));
    assert_eq!(http_get(&addr, "/nope").0, 404);

    let st = status(&addr);
    let table = String::from_utf8_lossy(&st.stdout);
    assert!(
        st.status.success(),
        "{st:?}\n{table}\n{}",
        String::from_utf8_lossy(&st.stderr)
    );
    assert!(row(&table, "state").ends_with(" ready"), "{table}");
    assert!(
        row(&table, "records read").contains(&format!(" {LINES} ")),
        "{table}"
    );
    assert!(
        row(&table, "records sent").contains(&format!("({logs_received} log records")),
        "{table}"
    );
    assert!(row(&table, "records dropped").ends_with(" 0"), "{table}");
    assert!(row(&table, "retries").ends_with(" 0"), "{table}");
    assert!(row(&table, "lag").contains(" 0 B over 1 files"), "{table}");
    assert!(row(&table, "last send").contains("ago"), "{table}");
    let t = row(&table, "target");
    assert!(
        t.contains(&format!("pid {pid}")) && t.contains("RSS ") && t.contains("5 threads"),
        "{table}"
    );
    agent.term(Duration::from_secs(15));
}

#[test]
fn readyz_fails_only_after_the_retry_budget_and_recovers() {
    if !python_prometheus_available() {
        return;
    }
    let _serial = serial();
    let scratch = Scratch::new();
    let receiver = Receiver::start();
    let (proxy, outage) = FaultProxy::with_outage(receiver.endpoint());
    let mut cfg = AgentConfig::new(&scratch.data, &[&scratch.log_glob()], &proxy.endpoint());
    cfg.start_at = "beginning";
    // A retry budget of three request timeouts: 1.5 s.
    cfg.output_timeout = "500ms";
    let config = write_config(&cfg, scratch.path(), "");
    let mut agent = Agent::start_args(&["run", "-c", &config], scratch.path());
    let addr = telemetry_addr(&agent);
    let mut log = LogFile::create(&scratch.log("app.log"));
    log.append(0..10, 80);
    receiver.wait_for_logs(10, Duration::from_secs(30));
    assert_eq!(http_get(&addr, "/readyz"), (200, "ready\n".to_owned()));

    outage.begin();
    let t0 = Instant::now();
    log.append(10..20, 80);
    let ready = RefCell::new((0, String::new()));
    wait_until(
        Duration::from_secs(20),
        "/readyz to answer 503 with the receiver down",
        || {
            let r = http_get(&addr, "/readyz");
            let done = r.0 == 503;
            *ready.borrow_mut() = r;
            done
        },
        || format!("{:?}", ready.borrow()),
    );
    let ready = ready.into_inner();
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(1400),
        "503 after {took:?}, within the 1.5 s retry budget"
    );
    let body = ready.1.trim_end_matches('\n');
    assert!(
        body.starts_with("not ready: ") && body.contains("otlp_http[0]") && !body.contains('\n'),
        "{body:?}"
    );
    assert_eq!(http_get(&addr, "/healthz").0, 200, "alive while not ready");
    let samples = prometheus_parse(&http_get(&addr, "/metrics").1);
    assert_eq!(value(&samples, "sidekick_ready", &[]), Some(0.0));
    assert!(value(&samples, "sidekick_output_retries_total", &[]).unwrap() > 0.0);
    assert!(value(&samples, "sidekick_output_failing_seconds", &[]).unwrap() > 1.0);
    assert!(value(&samples, "sidekick_log_file_lag_bytes", &[]).unwrap() > 0.0);
    let st = status(&addr);
    let table = String::from_utf8_lossy(&st.stdout);
    assert_eq!(st.status.code(), Some(3), "{table}");
    assert!(row(&table, "state").contains("NOT READY"), "{table}");

    outage.end();
    wait_until(
        Duration::from_secs(45),
        "/readyz back to 200 once the receiver is back",
        || http_get(&addr, "/readyz").0 == 200,
        || format!("{:?}", http_get(&addr, "/readyz")),
    );
    receiver.wait_for_logs(20, Duration::from_secs(30));
    agent.term(Duration::from_secs(15));
}

#[test]
fn a_taken_telemetry_port_is_a_warning_and_logs_still_ship() {
    let scratch = Scratch::new();
    let receiver = Receiver::start();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut cfg = AgentConfig::new(&scratch.data, &[&scratch.log_glob()], receiver.endpoint());
    cfg.start_at = "beginning";
    let config = write_config(&cfg, scratch.path(), "");
    let yaml = std::fs::read_to_string(&config)
        .unwrap()
        .replace("listen: 127.0.0.1:0", &format!("listen: {addr}"));
    std::fs::write(&config, yaml).unwrap();
    LogFile::create(&scratch.log("app.log")).append(0..50, 80);
    let mut agent = Agent::start_args(&["run", "-c", &config], scratch.path());
    let line = agent.wait_for_stderr_line("the telemetry warning", Duration::from_secs(15), |l| {
        l.contains("telemetry: cannot listen on")
    });
    assert!(line.contains("WARN") && line.contains(&addr), "{line}");
    receiver.wait_for_logs(50, Duration::from_secs(30));
    assert!(agent.is_running());
    agent.term(Duration::from_secs(15));
}

#[test]
fn status_without_an_agent_fails_with_one_line() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap().to_string();
    drop(free);
    let st = status(&addr);
    assert_eq!(st.status.code(), Some(1), "{st:?}");
    let err = String::from_utf8_lossy(&st.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cannot reach") && err.contains(&addr), "{err}");
    assert!(st.stdout.is_empty());
}
