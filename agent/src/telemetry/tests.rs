use super::text::{parse, prometheus_name, sanitize, write_points, Exposition, Kind};
use super::*;
use sidekick_pipeline::{Attr, MetricKind, MetricPoint, MetricValue};
use std::borrow::Cow;
use std::sync::atomic::Ordering;

fn point(name: &'static str, unit: &'static str, kind: MetricKind, v: f64) -> MetricPoint {
    MetricPoint {
        name: Cow::Borrowed(name),
        unit: Cow::Borrowed(unit),
        kind,
        value: MetricValue::Double(v),
        time_unix_nano: 1_700_000_000_000_000_000,
        start_time_unix_nano: 0,
        attributes: Vec::new(),
    }
}

const SUM: MetricKind = MetricKind::Sum { monotonic: true };

#[test]
fn otel_names_map_to_prometheus_names() {
    let cases = [
        (
            "process.memory.usage",
            "By",
            MetricKind::Gauge,
            "process_memory_usage_bytes",
            Kind::Gauge,
        ),
        (
            "process.cpu.time",
            "s",
            SUM,
            "process_cpu_time_seconds_total",
            Kind::Counter,
        ),
        (
            "process.cpu.utilization",
            "1",
            MetricKind::Gauge,
            "process_cpu_utilization_ratio",
            Kind::Gauge,
        ),
        (
            "process.thread.count",
            "{thread}",
            MetricKind::Gauge,
            "process_thread_count",
            Kind::Gauge,
        ),
        (
            "cgroup.memory.oom_kill.count",
            "{event}",
            SUM,
            "cgroup_memory_oom_kill_count_total",
            Kind::Counter,
        ),
        (
            "cgroup.pressure.cpu.some.total",
            "s",
            SUM,
            "cgroup_pressure_cpu_some_seconds_total",
            Kind::Counter,
        ),
        (
            "process.uptime",
            "s",
            MetricKind::Gauge,
            "process_uptime_seconds",
            Kind::Gauge,
        ),
        (
            "updown",
            "By",
            MetricKind::Sum { monotonic: false },
            "updown_bytes",
            Kind::Gauge,
        ),
    ];
    for (name, unit, kind, want, want_kind) in cases {
        assert_eq!(
            prometheus_name(name, unit, kind),
            (want.to_string(), want_kind),
            "{name}"
        );
    }
    assert_eq!(sanitize("9a..b-c"), "_9a_b_c");
}

#[test]
fn exposition_escapes_and_round_trips() {
    let mut e = Exposition::default();
    e.family("x_total", Kind::Counter, "help with \\ and\nnewline");
    e.sample("x_total", &[("path", "/a \"q\"\\b\nc"), ("o", "1")], 42.0);
    e.sample("x_total", &[], 0.5);
    e.single("y", Kind::Gauge, "y", f64::NAN);
    let text = e.finish();
    assert!(text.contains("# HELP x_total help with \\\\ and\\nnewline\n# TYPE x_total counter\n"));
    assert!(
        text.contains("x_total{path=\"/a \\\"q\\\"\\\\b\\nc\",o=\"1\"} 42\n"),
        "{text}"
    );
    let samples = parse(&text);
    assert_eq!(samples.len(), 3);
    assert_eq!(samples[0].label("path"), Some("/a \"q\"\\b\nc"));
    assert_eq!(samples[0].label("o"), Some("1"));
    assert_eq!(samples[0].value, 42.0);
    assert_eq!(samples[1].value, 0.5);
    assert!(samples[2].value.is_nan());
}

#[test]
fn points_of_one_name_form_one_family() {
    let mut user = point("process.cpu.time", "s", SUM, 1.5);
    user.attributes.push(Attr::new("cpu.mode", "user"));
    let mut system = point("process.cpu.time", "s", SUM, 0.25);
    system.attributes.push(Attr::new("cpu.mode", "system"));
    let rss = point("process.memory.usage", "By", MetricKind::Gauge, 4096.0);
    let mut e = Exposition::default();
    write_points(&mut e, &[user, rss, system]);
    let text = e.finish();
    assert_eq!(
        text.matches("# TYPE process_cpu_time_seconds_total counter")
            .count(),
        1
    );
    assert!(text.contains("process_cpu_time_seconds_total{cpu_mode=\"user\"} 1.5\n"));
    assert!(text.contains("process_cpu_time_seconds_total{cpu_mode=\"system\"} 0.25\n"));
    assert!(text.contains("process_memory_usage_bytes 4096\n"));
    // Both samples of the counter follow its TYPE line, before the next family.
    let system = text.find("cpu_mode=\"system\"").unwrap();
    let mem = text.find("# HELP process_memory").unwrap();
    assert!(system < mem, "{text}");
}

fn telemetry(dir: &std::path::Path, budget: Duration) -> Telemetry {
    let (_tx, rx) = crossbeam_channel::bounded(16);
    let stats = Arc::new(OutputStats::new("otlp_http[0]"));
    Telemetry {
        started: SystemTime::now(),
        tail: Arc::new(TailStats::default()),
        outputs: OutputViews::new(vec![OutputView { stats, budget }]),
        ledger: Arc::new(Ledger::new(1, None).unwrap()),
        queue: rx,
        checkpoint_file: dir.join("checkpoints.json"),
        spool: Some(Arc::new(crate::spool::SpoolStats::default())),
        crash: Arc::new(CrashContext::new(0)),
        target_pid: Arc::new(AtomicU32::new(0)),
    }
}

#[test]
fn not_ready_only_after_failing_longer_than_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let t = telemetry(dir.path(), Duration::from_secs(5));
    let stats = t.outputs.get()[0].stats.clone();
    assert_eq!(t.readiness(), Ok(()), "nothing failed yet");
    let now = now_unix_nano();
    stats
        .failing_since_unix_nano
        .store(now - 1_000_000_000, Ordering::Relaxed);
    *stats.last_error.lock().unwrap() = "connection refused".into();
    assert_eq!(t.readiness(), Ok(()), "within the budget");
    stats
        .failing_since_unix_nano
        .store(now - 6_000_000_000, Ordering::Relaxed);
    let why = t.readiness().unwrap_err();
    assert!(
        why.contains("otlp_http[0]") && why.contains("connection refused"),
        "{why}"
    );
    assert!(!why.contains('\n'));
    stats.failing_since_unix_nano.store(0, Ordering::Relaxed);
    assert_eq!(t.readiness(), Ok(()), "a success clears it");
}

#[test]
fn lag_is_file_size_minus_committed_offset() {
    use std::os::unix::fs::MetadataExt as _;
    let dir = tempfile::tempdir().unwrap();
    let t = telemetry(dir.path(), Duration::from_secs(5));
    let path = dir.path().join("a.log");
    std::fs::write(&path, vec![b'x'; 1000]).unwrap();
    let m = std::fs::metadata(&path).unwrap();
    let (id, _) = t.ledger.source(&format!("{}:{}", m.dev(), m.ino()));
    t.ledger
        .set_meta(id, serde_json::json!({"path": path.to_str().unwrap()}));
    t.ledger.set_committed(id, 400);
    // A source whose path now names another file is not reported.
    let (other, _) = t.ledger.source("1:2");
    t.ledger
        .set_meta(other, serde_json::json!({"path": path.to_str().unwrap()}));
    t.tail.lines.store(7, Ordering::Relaxed);
    let samples = parse(&t.render());
    let lag: Vec<_> = samples
        .iter()
        .filter(|s| s.name == "sidekick_log_file_lag_bytes")
        .collect();
    assert_eq!(lag.len(), 1, "{lag:?}");
    assert_eq!(lag[0].value, 600.0);
    assert_eq!(lag[0].label("path"), path.to_str());
    let get = |n: &str| samples.iter().find(|s| s.name == n).map(|s| s.value);
    assert_eq!(get("sidekick_log_records_read_total"), Some(7.0));
    assert_eq!(get("sidekick_queue_capacity_chunks"), Some(16.0));
    assert_eq!(get("sidekick_ready"), Some(1.0));
    assert_eq!(get("sidekick_spool_bytes"), Some(0.0));
    assert!(get("sidekick_resident_memory_bytes").unwrap() > 0.0);
}

#[test]
fn status_table_shows_the_figures() {
    let text = "\
sidekick_start_time_seconds 1000
sidekick_log_records_read_total 120
sidekick_output_records_sent_total{output=\"otlp_http[0]\"} 100
sidekick_output_records_dropped_total{output=\"otlp_http[0]\"} 20
sidekick_output_retries_total{output=\"otlp_http[0]\"} 3
sidekick_output_last_success_timestamp_seconds{output=\"otlp_http[0]\"} 1090
sidekick_queue_chunks 2
sidekick_queue_capacity_chunks 16
sidekick_log_file_lag_bytes{path=\"/a\"} 2048
sidekick_target_pid 4242
process_memory_usage_bytes 1048576
process_thread_count 5
";
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1100);
    let out = status::table("127.0.0.1:9464", "ready", &parse(text), now);
    for (key, want) in [
        ("state", "ready"),
        ("uptime", "1m40s"),
        ("records read", "120"),
        ("records sent", "100"),
        ("records dropped", "20"),
        ("retries", "3"),
        ("queue depth", "2/16 chunks"),
        ("lag", "2.0 KiB over 1 files"),
        ("last send", "10.0s ago (otlp_http[0]: 100 sent)"),
        ("target", "pid 4242, RSS 1.0 MiB, 5 threads"),
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{key}  ")))
            .unwrap_or_else(|| panic!("no {key} row in:\n{out}"));
        assert!(
            line[key.len()..].trim_start().starts_with(want),
            "{key}: {want:?} not in:\n{out}"
        );
    }
}
