//! What a user checks: defaults, every accepted form, and one clear line for
//! every kind of mistake.

use super::*;
use proptest::prelude::*;

const ORIGIN: &str = "config.yaml";

fn parse(text: &str) -> Config {
    match Config::from_yaml(text, ORIGIN) {
        Ok(config) => config,
        Err(e) => panic!("{text:?} failed: {e}"),
    }
}

/// The one-line error for `text`, after checking the shape every error
/// shares.
fn error(text: &str) -> String {
    let e = Config::from_yaml(text, ORIGIN).expect_err(text);
    let line = e.to_string();
    assert!(!line.contains('\n'), "more than one line: {line:?}");
    assert!(line.starts_with("config.yaml:"), "no file name: {line:?}");
    line
}

/// Asserts `line` starts with `config.yaml:LINE:COL:` for the given line.
fn assert_at(line: &str, expected_line: usize) {
    let rest = line.strip_prefix("config.yaml:").unwrap();
    let mut parts = rest.splitn(3, ':');
    let l: usize = parts
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("no line in {line:?}"));
    let c: usize = parts
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("no column in {line:?}"));
    assert_eq!(l, expected_line, "{line:?}");
    assert!(c >= 1, "{line:?}");
}

fn assert_contains(line: &str, parts: &[&str]) {
    for part in parts {
        assert!(line.contains(part), "{line:?} lacks {part:?}");
    }
}

// ---- defaults ----

#[test]
fn defaults_are_the_designs() {
    let c = Config::default();
    assert_eq!(c.data_dir, PathBuf::from("./sidekick-data"));
    assert_eq!(c.shutdown_timeout, Duration::from_secs(10));
    assert!(c.resource.is_empty() && c.target.is_none());
    assert!(c.logs.is_empty() && c.outputs.is_empty());
    assert_eq!(
        c.metrics,
        MetricsConfig {
            interval: Duration::from_secs(10),
            process: true,
            include_children: false,
            cgroup: true,
            host: false,
        }
    );
    assert_eq!(c.batch.max_records, 8192);
    assert_eq!(c.batch.max_bytes, ByteSize(4 << 20));
    assert_eq!(c.batch.timeout, Duration::from_secs(1));
    assert_eq!(c.spool.max_bytes, ByteSize(64 << 20));
    assert_eq!(c.telemetry.listen, Some("127.0.0.1:9464".parse().unwrap()));
    assert_eq!(c.limits.max_memory, None);
    c.validate().unwrap();
}

#[test]
fn an_empty_file_is_the_defaults() {
    assert_eq!(parse(""), Config::default());
    assert_eq!(parse("# nothing here\n"), Config::default());
}

#[test]
fn target_defaults() {
    let c = parse("target: { pid: 4242 }\n");
    let t = c.target.unwrap();
    assert_eq!(t.pid, Some(4242));
    assert_eq!(t.heartbeat_timeout, Duration::from_secs(30));
    assert_eq!(t.exit_with_target, None);
    assert_eq!(t.crash_context_lines, 50);
    assert_eq!(
        t,
        TargetConfig {
            pid: Some(4242),
            ..TargetConfig::default()
        }
    );
}

#[test]
fn log_source_defaults() {
    let c = parse("logs:\n  - include: [\"/var/log/app/*.log\"]\n");
    let s = &c.logs[0];
    assert_eq!(s, &LogSource::for_glob("/var/log/app/*.log"));
    assert!(s.exclude.is_empty());
    assert_eq!(s.start_at, StartAt::End);
    assert_eq!(s.format, LogFormat::Raw);
    assert_eq!(s.multiline, None);
    assert_eq!(s.max_line_bytes, ByteSize(1 << 20));
    assert_eq!(s.scan_interval, Duration::from_secs(5));
    assert_eq!(s.max_open_files, 1024);
    assert_eq!(s.fingerprint_bytes, ByteSize(1024));
    assert_eq!(s.read_budget, ByteSize(1 << 20));
}

#[test]
fn multiline_defaults() {
    let c = parse("logs:\n  - include: [a]\n    multiline: { start_pattern: '^\\d{4}-' }\n");
    let m = c.logs[0].multiline.clone().unwrap();
    assert_eq!(m.start_pattern.as_deref(), Some("^\\d{4}-"));
    assert_eq!(m.continue_pattern, None);
    assert_eq!(m.timeout, Duration::from_secs(1));
    assert_eq!(m.max_lines, 500);
    assert_eq!(m.max_bytes, ByteSize(1 << 20));
}

#[test]
fn output_defaults() {
    let c = parse("outputs:\n  - type: otlp_http\n    endpoint: http://127.0.0.1:4318\n");
    let o = &c.outputs[0];
    assert_eq!(o, &OutputSection::otlp_http("http://127.0.0.1:4318"));
    assert_eq!(o.compression, CompressionName::Gzip);
    assert!(o.headers.is_empty());
    assert_eq!(o.timeout, Duration::from_secs(10));
    assert_eq!(o.tls, None);
    assert_eq!(o.path, None);
    assert_eq!(o.max_in_flight, 4);
}

#[test]
fn the_design_example_loads() {
    let text = r#"
data_dir: ./sidekick-data
shutdown_timeout: 10s
resource: { service.name: checkout }
target:
  pid: 4242
  heartbeat_file: /shared/app.alive
  exit_with_target: true
logs:
  - include: ["/var/log/app/*.log"]
    exclude: ["*.gz"]
    start_at: end
    format: raw
    multiline: { start_pattern: '^\d{4}-', timeout: 1s, max_lines: 500 }
    max_line_bytes: 1MiB
    scan_interval: 5s
    max_open_files: 1024
metrics:
  interval: 10s
  process: true
  include_children: false
  cgroup: true
  host: false
batch: { max_records: 8192, max_bytes: 4MiB, timeout: 1s }
spool: { max_bytes: 64MiB }
telemetry: { listen: 127.0.0.1:9464 }
outputs:
  - type: otlp_http
    endpoint: http://127.0.0.1:4318
    compression: gzip
    headers: { authorization: "Bearer abc" }
    timeout: 10s
"#;
    let c = parse(text);
    assert_eq!(
        c.resource.get("service.name").map(String::as_str),
        Some("checkout")
    );
    assert_eq!(c.target.as_ref().unwrap().exit_with_target, Some(true));
    assert_eq!(c.logs[0].exclude, vec!["*.gz".to_owned()]);
    assert_eq!(c.outputs[0].headers["authorization"], "Bearer abc");
}

#[test]
fn config_example_yaml_loads() {
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config.example.yaml"
    ));
    let c = Config::load(path).unwrap_or_else(|e| panic!("{e}"));
    // The example shows the defaults: apart from its examples of logs,
    // target and outputs, it must be the defaults.
    let defaults = Config::default();
    assert_eq!(c.data_dir, defaults.data_dir);
    assert_eq!(c.shutdown_timeout, defaults.shutdown_timeout);
    assert_eq!(c.metrics, defaults.metrics);
    assert_eq!(c.batch, defaults.batch);
    assert_eq!(c.spool, defaults.spool);
    assert_eq!(c.telemetry, defaults.telemetry);
    assert_eq!(c.limits, defaults.limits);
    assert!(!c.logs.is_empty() && !c.outputs.is_empty());
    let t = c.target.unwrap();
    assert_eq!(
        t.heartbeat_timeout,
        TargetConfig::default().heartbeat_timeout
    );
    assert_eq!(
        t.crash_context_lines,
        TargetConfig::default().crash_context_lines
    );
    let s = &c.logs[0];
    let d = LogSource::for_glob("x");
    assert_eq!(
        (
            s.max_line_bytes,
            s.scan_interval,
            s.max_open_files,
            s.fingerprint_bytes,
            s.read_budget
        ),
        (
            d.max_line_bytes,
            d.scan_interval,
            d.max_open_files,
            d.fingerprint_bytes,
            d.read_budget
        )
    );
    let o = &c.outputs[0];
    let d = OutputSection::new(OutputType::OtlpHttp);
    assert_eq!(
        (o.compression, o.timeout, o.max_in_flight),
        (d.compression, d.timeout, d.max_in_flight)
    );
}

// ---- accepted forms ----

#[test]
fn every_duration_and_size_form_in_yaml() {
    for (text, expected) in [
        ("500ms", Duration::from_millis(500)),
        ("1s", Duration::from_secs(1)),
        ("1.5s", Duration::from_millis(1500)),
        ("2m", Duration::from_secs(120)),
        ("1h", Duration::from_secs(3600)),
        ("10us", Duration::from_micros(10)),
        ("100ns", Duration::from_nanos(100)),
        ("\"3s\"", Duration::from_secs(3)),
    ] {
        let c = parse(&format!("shutdown_timeout: {text}\n"));
        assert_eq!(c.shutdown_timeout, expected, "{text}");
    }
    for (text, expected) in [
        ("4MiB", 4 << 20),
        ("512KiB", 512 << 10),
        ("1GiB", 1 << 30),
        ("10MB", 10_000_000),
        ("10kB", 10_000),
        ("100B", 100),
        ("4096", 4096),
    ] {
        let c = parse(&format!("spool: {{ max_bytes: {text} }}\n"));
        assert_eq!(c.spool.max_bytes, ByteSize(expected), "{text}");
    }
}

#[test]
fn enums_and_output_types() {
    let c = parse(
        "logs:\n  - include: [a]\n    start_at: beginning\n    format: cri\n  - include: [b]\n    format: auto\n\
         outputs:\n  - { type: http_ndjson, endpoint: 'https://x.example/in', compression: zstd }\n\
         \x20 - { type: file, path: /tmp/out.ndjson }\n  - { type: stdout }\n  - { type: otlp_http, endpoint: 'http://h:1', compression: none }\n",
    );
    assert_eq!(c.logs[0].start_at, StartAt::Beginning);
    assert_eq!(c.logs[0].format, LogFormat::Cri);
    assert_eq!(c.logs[1].format, LogFormat::Auto);
    let kinds: Vec<OutputType> = c.outputs.iter().map(|o| o.kind).collect();
    assert_eq!(
        kinds,
        [
            OutputType::HttpNdjson,
            OutputType::File,
            OutputType::Stdout,
            OutputType::OtlpHttp
        ]
    );
    assert_eq!(c.outputs[0].compression, CompressionName::Zstd);
    assert_eq!(c.outputs[3].compression, CompressionName::None);
    assert_eq!(c.outputs[1].path, Some(PathBuf::from("/tmp/out.ndjson")));
}

#[test]
fn telemetry_listen_forms() {
    for off in ["off", "false", "none", "Off", "~", "null", "\"off\""] {
        let c = parse(&format!("telemetry: {{ listen: {off} }}\n"));
        assert_eq!(c.telemetry.listen, None, "{off}");
    }
    let c = parse("telemetry:\n  listen: 0.0.0.0:9000\n");
    assert_eq!(c.telemetry.listen, Some("0.0.0.0:9000".parse().unwrap()));
    let c = parse("telemetry:\n  listen: \"[::1]:9464\"\n");
    assert_eq!(c.telemetry.listen, Some("[::1]:9464".parse().unwrap()));
    let e = error("telemetry:\n  listen: localhost\n");
    assert_at(&e, 2);
    assert_contains(&e, &["\"localhost\"", "`telemetry.listen`", "HOST:PORT"]);
    let e = error("telemetry:\n  listen: 9464\n");
    assert_contains(&e, &["`telemetry.listen`", "HOST:PORT"]);
}

#[test]
fn target_command_and_process_name() {
    let c = parse("target:\n  command: [/usr/bin/myapp, --flag]\n  exit_with_target: false\n");
    let t = c.target.unwrap();
    assert_eq!(
        t.command,
        Some(vec!["/usr/bin/myapp".to_owned(), "--flag".to_owned()])
    );
    assert_eq!(t.exit_with_target, Some(false));
    let c = parse("target: { process_name: 'java .*-jar app\\.jar', heartbeat_timeout: 1m }\n");
    assert_eq!(c.target.unwrap().heartbeat_timeout, Duration::from_secs(60));
}

// ---- errors: each one line, file, position and key ----

#[test]
fn unknown_top_level_key() {
    let e = error("data_dir: /x\nbatchh: { max_records: 1 }\n");
    assert_at(&e, 2);
    assert_contains(
        &e,
        &[
            "unknown key `batchh`",
            "top level",
            "did you mean `batch`",
            "expected one of",
            "logs",
        ],
    );
}

#[test]
fn unknown_nested_key() {
    let e = error("logs:\n  - include: [a]\n    batchh: 3\n");
    assert_eq!(&e[..18], "config.yaml:3:5: u");
    assert_contains(
        &e,
        &[
            "unknown key `batchh` in `logs[0]`",
            "expected one of",
            "include",
            "max_open_files",
        ],
    );
    let e = error("batch:\n  timeoutt: 1s\n");
    assert_at(&e, 2);
    assert_contains(
        &e,
        &[
            "unknown key `timeoutt` in `batch`",
            "did you mean `timeout`",
        ],
    );
}

#[test]
fn wrong_type() {
    let e = error("batch:\n  max_records: lots\n");
    assert_at(&e, 2);
    assert_contains(&e, &["`batch.max_records`", "non-negative integer"]);
    let e = error("metrics: { process: maybe }\n");
    assert_at(&e, 1);
    assert_contains(&e, &["`metrics.process`", "true or false"]);
    let e = error("logs: { include: [a] }\n");
    assert_at(&e, 1);
    assert_contains(&e, &["`logs`", "a list"]);
    let e = error("- a\n- b\n");
    assert_at(&e, 1);
    assert_contains(&e, &["mapping"]);
}

#[test]
fn bad_duration() {
    let e = error("data_dir: /x\nshutdown_timeout: 10 parsecs\n");
    assert!(
        e.starts_with("config.yaml:2:19: invalid duration \"10 parsecs\" for `shutdown_timeout`: expected a number with a unit: ns, us, ms, s, m, h"),
        "{e}"
    );
    let e = error("logs:\n  - include: [a]\n    scan_interval: 5\n");
    assert_at(&e, 3);
    assert_contains(
        &e,
        &[
            "invalid duration \"5\" for `logs[0].scan_interval`",
            "ns, us, ms, s, m, h",
        ],
    );
}

#[test]
fn bad_size() {
    let e = error("batch:\n  max_bytes: 4 potatoes\n");
    assert_at(&e, 2);
    assert_contains(
        &e,
        &[
            "invalid size \"4 potatoes\" for `batch.max_bytes`",
            "KiB",
            "MB",
        ],
    );
    let e = error("spool: { max_bytes: -1 }\n");
    assert_contains(&e, &["`spool.max_bytes`", "negative"]);
}

#[test]
fn bad_enum_value() {
    let e = error("logs:\n  - include: [a]\n    format: xml\n");
    assert_at(&e, 3);
    assert_contains(
        &e,
        &[
            "\"xml\"",
            "`logs[0].format`",
            "raw, json, cri, docker, auto",
        ],
    );
    let e = error("outputs:\n  - type: kafka\n");
    assert_at(&e, 2);
    assert_contains(
        &e,
        &[
            "\"kafka\"",
            "`outputs[0].type`",
            "otlp_http, http_ndjson, file, stdout",
        ],
    );
}

#[test]
fn bad_regex() {
    let e = error("logs:\n  - include: [a]\n    multiline:\n      start_pattern: '^(\\d{4}'\n");
    assert_at(&e, 4);
    assert_contains(
        &e,
        &[
            "invalid regex",
            "`logs[0].multiline.start_pattern`",
            "unclosed group",
        ],
    );
    let e = error("target:\n  process_name: '[a-'\n");
    assert_at(&e, 2);
    assert_contains(&e, &["invalid regex", "`target.process_name`"]);
}

#[test]
fn missing_include() {
    let e = error("logs:\n  - exclude: [a]\n");
    assert_at(&e, 2);
    assert_contains(&e, &["missing required key `include` in `logs[0]`"]);
    let e = error("logs:\n  - include: []\n");
    assert_at(&e, 2);
    assert_contains(&e, &["`logs[0].include`", "at least one"]);
}

#[test]
fn mutually_exclusive_target_keys() {
    let e = error("target:\n  pid: 1\n  process_name: java\n");
    assert_at(&e, 3);
    assert_contains(
        &e,
        &["`target.pid`", "`target.process_name`", "at most one"],
    );
    let e = error("target: { pid_file: /run/a.pid, command: [a] }\n");
    assert_contains(&e, &["`target.pid_file`", "`target.command`"]);
}

#[test]
fn multiline_needs_exactly_one_pattern() {
    let e = error("logs:\n  - include: [a]\n    multiline: { timeout: 2s }\n");
    assert_at(&e, 3);
    assert_contains(
        &e,
        &["`logs[0].multiline`", "start_pattern", "continue_pattern"],
    );
    let e = error("logs:\n  - include: [a]\n    multiline:\n      start_pattern: a\n      continue_pattern: b\n");
    assert_at(&e, 5);
    assert_contains(&e, &["cannot both be set"]);
}

#[test]
fn missing_endpoint() {
    let e = error("outputs:\n  - type: stdout\n  - type: otlp_http\n    compression: zstd\n");
    assert_at(&e, 3);
    assert_contains(
        &e,
        &["missing `outputs[1].endpoint`", "otlp_http", "http://"],
    );
}

#[test]
fn keys_that_do_not_belong_to_the_output_type() {
    let e = error("outputs:\n  - type: stdout\n    endpoint: http://x:1\n");
    assert_at(&e, 3);
    assert_contains(
        &e,
        &["`outputs[0].endpoint` does not apply to a `stdout` output"],
    );
    let e = error("outputs:\n  - type: otlp_http\n    endpoint: http://x:1\n    path: /tmp/x\n");
    assert_at(&e, 4);
    assert_contains(&e, &["`outputs[0].path`", "otlp_http"]);
    let e = error("outputs:\n  - type: file\n");
    assert_contains(&e, &["missing `outputs[0].path`"]);
    let e = error("outputs:\n  - type: file\n    path: /tmp/x\n    headers: { a: b }\n");
    assert_contains(&e, &["`outputs[0].headers`", "file"]);
}

#[test]
fn bad_endpoints_are_refused_without_echoing_them() {
    for endpoint in [
        "ftp://user:pw@host/x",
        "http://",
        "localhost:4318",
        "http://:80/x",
    ] {
        let e = error(&format!(
            "outputs:\n  - type: otlp_http\n    endpoint: '{endpoint}'\n"
        ));
        assert_at(&e, 3);
        assert_contains(&e, &["`outputs[0].endpoint`"]);
        assert!(!e.contains(endpoint), "{e}");
    }
    let e = error(
        "outputs:\n  - type: otlp_http\n    endpoint: http://h:1\n    tls: { ca_file: /ca.pem }\n",
    );
    assert_contains(&e, &["`outputs[0].tls`", "https://"]);
    let e = error("outputs:\n  - type: otlp_http\n    endpoint: https://h:1\n    tls: { cert_file: /c.pem }\n");
    assert_contains(&e, &["cert_file", "key_file"]);
}

#[test]
fn zero_limits_are_refused() {
    for (text, key) in [
        ("batch: { max_records: 0 }\n", "batch.max_records"),
        ("batch: { timeout: 0s }\n", "batch.timeout"),
        ("metrics: { interval: 0ms }\n", "metrics.interval"),
        (
            "logs: [{ include: [a], max_open_files: 0 }]\n",
            "logs[0].max_open_files",
        ),
        ("target: { pid: 0 }\n", "target.pid"),
    ] {
        let e = error(text);
        assert_at(&e, 1);
        assert_contains(&e, &[&format!("`{key}`")]);
    }
}

#[test]
fn bad_glob() {
    let e = error("logs:\n  - include: ['/var/log/[a.log']\n");
    assert_contains(&e, &["invalid glob", "`logs[0].include[0]`"]);
}

#[test]
fn duplicate_keys_are_refused() {
    let e = error("data_dir: a\ndata_dir: b\n");
    assert_at(&e, 2);
    assert_contains(&e, &["data_dir"]);
}

#[test]
fn yaml_syntax_errors_have_a_position() {
    let e = error("logs:\n  - include: [a\n");
    assert!(e.split(':').nth(1).unwrap().parse::<usize>().is_ok(), "{e}");
}

#[test]
fn missing_file() {
    let e = Config::load(Path::new("/nonexistent/sidekick.yaml")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "/nonexistent/sidekick.yaml: cannot read: No such file or directory (os error 2)"
    );
}

#[test]
fn validate_after_overrides_names_the_key() {
    let mut c = Config::default();
    c.outputs.push(OutputSection::new(OutputType::HttpNdjson));
    let e = c.validate().unwrap_err();
    assert_contains(&e.to_string(), &["`outputs[0].endpoint`"]);
    assert_eq!(e.key(), Some("outputs[0].endpoint"));
    let e = e.with_origin("command line");
    assert!(e.to_string().starts_with("command line: "), "{e}");
    c.outputs[0].endpoint = Some("https://collector:4318".into());
    c.logs.push(LogSource::for_glob("/var/log/*.log"));
    c.validate().unwrap();
}

#[test]
fn header_values_are_hidden_from_debug() {
    let c = parse("outputs:\n  - type: otlp_http\n    endpoint: http://h:1\n    headers: { authorization: Bearer hunter2 }\n");
    let debug = format!("{c:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("authorization"), "{debug}");
}

#[test]
fn warnings_point_out_doubtful_settings() {
    let c = parse("telemetry: { listen: 0.0.0.0:9464 }\noutputs:\n  - type: otlp_http\n    endpoint: http://h:1\n    headers: { Authorization: x }\n");
    let w = c.warnings();
    assert!(w.iter().any(|w| w.contains("telemetry.listen")), "{w:?}");
    assert!(w.iter().any(|w| w.contains("outputs[0].headers")), "{w:?}");
    assert!(w.iter().all(|w| !w.contains('\n')));
}

// ---- environment expansion ----

#[test]
fn env_variables_and_defaults() {
    std::env::set_var("SIDEKICK_CFGTEST_DIR", "/srv/data");
    std::env::set_var("SIDEKICK_CFGTEST_EMPTY", "");
    let c = parse(
        "data_dir: ${SIDEKICK_CFGTEST_DIR}\n\
         shutdown_timeout: ${SIDEKICK_CFGTEST_UNSET:-3s}\n\
         resource: { env: \"${SIDEKICK_CFGTEST_EMPTY:-prod}\", cost: $$5 }\n",
    );
    assert_eq!(c.data_dir, PathBuf::from("/srv/data"));
    assert_eq!(c.shutdown_timeout, Duration::from_secs(3));
    assert_eq!(c.resource["env"], "prod");
    assert_eq!(c.resource["cost"], "$5");
}

#[test]
fn undefined_variable_is_an_error_naming_it() {
    let e = error("data_dir: /x\nshutdown_timeout: ${SIDEKICK_CFGTEST_NEVER_SET}\n");
    assert!(e.starts_with("config.yaml:2:19: "), "{e}");
    assert_contains(&e, &["SIDEKICK_CFGTEST_NEVER_SET", "not set"]);
}

#[test]
fn file_references() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cr3t-t0ken\n").unwrap();
    let text = format!(
        "outputs:\n  - type: otlp_http\n    endpoint: http://h:1\n    headers: {{ authorization: \"Bearer ${{file:{}}}\" }}\n",
        token.display()
    );
    let c = parse(&text);
    assert_eq!(c.outputs[0].headers["authorization"], "Bearer s3cr3t-t0ken");

    let missing = dir.path().join("missing");
    let e = error(&format!("data_dir: ${{file:{}}}\n", missing.display()));
    assert_at(&e, 1);
    assert_contains(&e, &[&missing.display().to_string(), "cannot read"]);
}

#[test]
fn expanded_values_never_appear_in_errors() {
    std::env::set_var("SIDEKICK_CFGTEST_SECRET", "hunter2");
    for text in [
        "shutdown_timeout: ${SIDEKICK_CFGTEST_SECRET}\n",
        "logs:\n  - include: [a]\n    format: ${SIDEKICK_CFGTEST_SECRET}\n",
        "telemetry: { listen: \"x${SIDEKICK_CFGTEST_SECRET}\" }\n",
        "target: { process_name: '(${SIDEKICK_CFGTEST_SECRET}' }\n",
        "outputs:\n  - type: otlp_http\n    endpoint: \"ftp://${SIDEKICK_CFGTEST_SECRET}\"\n",
    ] {
        let e = error(text);
        assert!(!e.contains("hunter2"), "{e}");
        assert!(
            e.contains("${SIDEKICK_CFGTEST_SECRET}") || e.contains("endpoint"),
            "{e}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "sw0rdfish\n").unwrap();
    let e = error(&format!(
        "batch: {{ max_bytes: \"${{file:{}}}\" }}\n",
        secret.display()
    ));
    assert!(!e.contains("sw0rdfish"), "{e}");
}

#[test]
fn columns_after_an_expansion_are_the_files() {
    std::env::set_var("SIDEKICK_CFGTEST_LONG", "a-rather-long-value");
    let e = error("resource: { a: ${SIDEKICK_CFGTEST_LONG}, b: [x] }\n");
    // `[x]` is at column 45 in the file (not where it is after expansion).
    assert!(e.starts_with("config.yaml:1:45: "), "{e}");
}

// ---- properties ----

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn from_yaml_never_panics(text in any::<String>()) {
        if let Err(e) = Config::from_yaml(&text, ORIGIN) {
            prop_assert!(!e.to_string().contains('\n'));
        }
    }

    #[test]
    fn from_yaml_never_panics_on_yamlish_text(
        parts in proptest::collection::vec(
            prop_oneof![
                Just("logs:\n"), Just("  - include: [a]\n"), Just("    multiline: {"),
                Just("outputs:\n"), Just("  - type: otlp_http\n"), Just("    endpoint: "),
                Just("target:\n"), Just("  pid: "), Just("batch: { max_bytes: "), Just("}"),
                Just("]"), Just("["), Just("1.5s"), Just("4MiB"), Just("-"), Just(": "),
                Just("${X}"), Just("$$"), Just("${file:/}"), Just("\""), Just("'"), Just("#"),
                Just("&a "), Just("*a "), Just("\n"), Just("  "), Just("\t"), Just("!!str "),
                Just("telemetry: { listen: "), Just("off"), Just("---\n"), Just("? "),
            ],
            0..40,
        )
    ) {
        let text: String = parts.concat();
        if let Err(e) = Config::from_yaml(&text, ORIGIN) {
            prop_assert!(!e.to_string().contains('\n'));
        }
    }

    #[test]
    fn durations_round_trip_through_yaml(millis in 1u64..10_000_000) {
        let d = Duration::from_millis(millis);
        let c = Config::from_yaml(&format!("shutdown_timeout: {}\n", units::format_duration(d)), ORIGIN).unwrap();
        prop_assert_eq!(c.shutdown_timeout, d);
    }

    #[test]
    fn sizes_round_trip_through_yaml(bytes in 1u64..(1 << 50)) {
        let c = Config::from_yaml(&format!("batch: {{ max_bytes: {} }}\n", ByteSize(bytes)), ORIGIN).unwrap();
        prop_assert_eq!(c.batch.max_bytes, ByteSize(bytes));
    }
}

// ---- security: plain http warning, memory bound ----

#[test]
fn plain_http_beyond_this_host_is_warned_about() {
    let warned = |endpoint: &str| {
        let c = parse(&format!(
            "outputs:\n  - type: otlp_http\n    endpoint: {endpoint}\n"
        ));
        c.warnings().iter().any(|w| w.contains("plain http://"))
    };
    assert!(warned("http://collector.example.com:4318"));
    assert!(warned("http://10.0.0.7:4318/otlp"));
    assert!(warned("http://user:pw@[2001:db8::1]:4318"));
    assert!(!warned("http://127.0.0.1:4318"));
    assert!(!warned("http://localhost:4318"));
    assert!(!warned("http://[::1]:4318"));
    assert!(!warned("https://collector.example.com"));
    let c = parse("outputs:\n  - type: otlp_http\n    endpoint: http://u:hunter2@h:1\n");
    assert!(c.warnings().iter().all(|w| !w.contains("hunter2")));
}

#[test]
fn a_config_above_max_memory_is_refused_with_its_parts() {
    let e = error("limits: { max_memory: 64MiB }\nlogs:\n  - include: [/x/*.log]\noutputs:\n  - type: otlp_http\n    endpoint: http://127.0.0.1:1\n");
    assert_at(&e, 1);
    assert_contains(
        &e,
        &[
            "`limits.max_memory` is 64MiB",
            "log files 1.3GiB",
            "1024 open files",
            "max_open_files",
        ],
    );
    parse("limits: { max_memory: 64MiB }\nlogs:\n  - include: [/x/*.log]\n    max_open_files: 16\n    max_line_bytes: 64KiB\n");
}
