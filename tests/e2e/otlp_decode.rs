//! What sidekick puts on the wire, decoded by a decoder that is not its own:
//! the official `opentelemetry-proto` Python package.

use serde_json::Value;
use sidekick_e2e::{
    line_for, serial, unix_nanos, Agent, AgentConfig, FaultProxy, LogFile, Receiver, Scratch,
};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/decode_otlp.py");

/// Whether `python3` can import the OTLP protobuf modules. Without them the
/// test is skipped on a developer's machine and fails in CI.
fn python_otlp_available() -> bool {
    let ok = Command::new("python3")
        .args([
            "-c",
            "import opentelemetry.proto.collector.logs.v1.logs_service_pb2, google.protobuf.json_format",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let msg = "python3 cannot import opentelemetry.proto (pip install opentelemetry-proto)";
        assert!(std::env::var_os("CI").is_none(), "{msg}; CI must have it");
        eprintln!("SKIPPED: {msg}");
    }
    ok
}

/// Decodes an uncompressed `ExportLogsServiceRequest` with Python.
fn python_decode(dir: &Path, body: &[u8]) -> Value {
    let file = dir.join("request.pb");
    std::fs::write(&file, body).unwrap();
    let out = Command::new("python3")
        .arg(SCRIPT)
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the official decoder rejected sidekick's request body ({:?}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the decoder prints JSON")
}

/// `[{key, value: {stringValue}}]` → the string value of `key`.
fn attr<'a>(attrs: &'a Value, key: &str) -> Option<&'a str> {
    attrs
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)?
        .pointer("/value/stringValue")?
        .as_str()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned()
}

fn decodes_with_the_official_package(compression: &'static str) {
    if !python_otlp_available() {
        return;
    }
    let _serial = serial();
    let s = Scratch::new();
    let receiver = Receiver::start();
    let proxy = FaultProxy::forwarding(receiver.endpoint(), 16);
    let path = s.log("app.log");
    let lines: Vec<String> = (0..20).map(|i| line_for(i, "décodé ✓", 80)).collect();
    let mut file = LogFile::create(&path);
    file.append_tagged(0..20, "décodé ✓", 80);
    let mut cfg = AgentConfig::new(&s.data, &[&s.log_glob()], &proxy.endpoint());
    cfg.start_at = "beginning";
    cfg.compression = compression;
    cfg.service_name = format!("decode-{compression}");
    let t_start = unix_nanos();
    let mut agent = Agent::start(&cfg, s.path());
    receiver.wait_for_logs(20, Duration::from_secs(30));
    let t_end = unix_nanos();
    assert!(agent.term(Duration::from_secs(15)).success());

    let requests: Vec<_> = proxy.saved().into_iter().filter(|r| r.is_logs()).collect();
    assert!(!requests.is_empty(), "no /v1/logs request was saved");
    let mut records = Vec::new();
    for req in &requests {
        assert_eq!(req.method, "POST");
        assert_eq!(
            req.header("content-encoding"),
            Some(compression),
            "Content-Encoding of a {compression} request"
        );
        assert_eq!(
            req.header("content-type"),
            Some("application/x-protobuf"),
            "Content-Type of an OTLP/HTTP protobuf request"
        );
        let decoded = python_decode(s.path(), &req.decoded_body());
        for rl in decoded["resourceLogs"].as_array().expect("resourceLogs") {
            let res = &rl["resource"]["attributes"];
            assert_eq!(
                attr(res, "service.name"),
                Some(cfg.service_name.as_str()),
                "{rl}"
            );
            assert_eq!(attr(res, "host.name"), Some(hostname().as_str()), "{rl}");
            for sl in rl["scopeLogs"].as_array().expect("scopeLogs") {
                records.extend(
                    sl["logRecords"]
                        .as_array()
                        .expect("logRecords")
                        .iter()
                        .cloned(),
                );
            }
        }
    }
    let bodies: Vec<&str> = records
        .iter()
        .map(|r| {
            r.pointer("/body/stringValue")
                .and_then(Value::as_str)
                .unwrap_or("<no string body>")
        })
        .collect();
    assert_eq!(bodies, lines, "bodies as decoded by opentelemetry-proto");
    for r in &records {
        // int64/fixed64 fields are strings in protobuf's JSON mapping.
        let observed: u64 = r["observedTimeUnixNano"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no observedTimeUnixNano: {r}"));
        assert!(
            (t_start..=t_end).contains(&observed),
            "observedTimeUnixNano {observed} outside the test's window {t_start}..={t_end}: {r}"
        );
        assert_eq!(
            attr(&r["attributes"], "log.file.path"),
            path.to_str(),
            "{r}"
        );
        assert_eq!(
            attr(&r["attributes"], "log.file.name"),
            Some("app.log"),
            "{r}"
        );
    }
    eprintln!(
        "{compression}: {} request(s), {} records decoded by opentelemetry-proto",
        requests.len(),
        records.len()
    );
}

#[test]
fn gzip_requests_decode_with_opentelemetry_proto() {
    decodes_with_the_official_package("gzip");
}

#[test]
fn zstd_requests_decode_with_opentelemetry_proto() {
    decodes_with_the_official_package("zstd");
}
