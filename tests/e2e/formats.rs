//! Log formats end to end: real CRI, docker json-file, JSON and raw files
//! with multiline rules, tailed by a real `sidekick run` and shipped over
//! real HTTP to a real `sidekick receive`; each record is checked by its
//! exact body, timestamp, severity and attributes.
//!
//! What a user of `/var/log/pods` or `/var/lib/docker/containers` expects:
//! partial lines joined per stream before multiline rules, a stack trace as
//! one record, the last pending record shipped after its timeout and on
//! shutdown, and no line lost across a crash while a record is pending.

use sidekick_e2e::{serial, wait_until, Agent, AgentConfig, Receiver, Record, Scratch};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// 2024-01-15T10:00:00Z in Unix seconds.
const T0: u64 = 1_705_312_800;
const NS: u64 = 1_000_000_000;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Fast scans, short batches, files read from their start.
fn config(s: &Scratch, receiver: &Receiver) -> AgentConfig {
    let mut cfg = AgentConfig::new(&s.data, &[&s.log_glob()], receiver.endpoint());
    cfg.scan_interval = "200ms";
    cfg.start_at = "beginning";
    cfg.batch_timeout = "100ms";
    cfg.max_in_flight = 2;
    cfg
}

/// Appends `text` to `path` in one write, and flushes it.
fn append(path: &Path, text: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.write_all(text.as_bytes())
        .and_then(|()| f.flush())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Waits until a record whose body is `body` has arrived; returns it.
fn wait_body(receiver: &Receiver, body: &str, timeout: Duration) -> Record {
    let short = |s: &str| s.chars().take(120).collect::<String>();
    wait_until(
        timeout,
        &format!("a record with body {:?}", short(body)),
        || receiver.logs().iter().any(|r| r.body == body),
        || {
            let bodies: Vec<String> = receiver.logs().iter().map(|r| short(&r.body)).collect();
            format!("arrived: {bodies:#?}")
        },
    );
    receiver
        .logs()
        .into_iter()
        .find(|r| r.body == body)
        .expect("just seen")
}

/// Every record once nothing more arrives for a while.
fn settle(receiver: &Receiver) -> Vec<Record> {
    receiver.settle(Duration::from_millis(800), Duration::from_secs(10))
}

fn attr<'a>(r: &'a Record, key: &str) -> Option<&'a str> {
    r.attributes.get(key).and_then(serde_json::Value::as_str)
}

fn bodies(records: &[Record]) -> Vec<&str> {
    records.iter().map(|r| r.body.as_str()).collect()
}

/// The bodies of the records from stream `stream` (`log.iostream`), in
/// arrival order.
fn stream_bodies<'a>(records: &'a [Record], stream: &str) -> Vec<&'a str> {
    records
        .iter()
        .filter(|r| attr(r, "log.iostream") == Some(stream))
        .map(|r| r.body.as_str())
        .collect()
}

/// A CRI line as containerd writes it: `TIME STREAM P|F MESSAGE`.
fn cri(nanos_after_t0: u64, stream: &str, tag: &str, msg: &str) -> String {
    let t = T0 * NS + nanos_after_t0;
    let (secs, frac) = (t / NS - T0, t % NS);
    format!(
        "2024-01-15T10:{:02}:{:02}.{frac:09}Z {stream} {tag} {msg}\n",
        secs / 60,
        secs % 60
    )
}

/// A docker json-file line; `log` is JSON-escaped here.
fn docker(log: &str, stream: &str, nanos_after_t0: u64) -> String {
    let t = T0 * NS + nanos_after_t0;
    let secs = t / NS - T0;
    let time = format!(
        "2024-01-15T10:{:02}:{:02}.{:09}Z",
        secs / 60,
        secs % 60,
        t % NS
    );
    format!(
        "{{\"log\":{},\"stream\":\"{stream}\",\"time\":\"{time}\"}}\n",
        serde_json::Value::String(log.to_owned())
    )
}

/// A line of `n` bytes of printable text, distinct per `seed`.
fn long_text(seed: u8, n: usize) -> String {
    (0..n)
        .map(|i| char::from(b'a' + ((i + usize::from(seed)) % 26) as u8))
        .collect()
}

// ---------------------------------------------------------------------------
// 1. CRI
// ---------------------------------------------------------------------------

/// containerd's CRI lines, stdout and stderr interleaved, a 40 KB line cut
/// into 16 KiB `P` pieces then `F`: records arrive joined per stream, with
/// `log.iostream` and the runtime's timestamp (the first piece's).
#[test]
fn cri_partial_lines_are_joined_per_stream() {
    let _serial = serial();
    let s = Scratch::new();
    let receiver = Receiver::start();
    let path = s.log("app.log");
    // Created first: the agent is ready once it says it tails it.
    append(&path, "");
    append(&path, &cri(123_456_789, "stdout", "F", "starting server"));
    let mut agent = Agent::start(
        &config(&s, &receiver).with_log_options(&[("format", "cri")]),
        s.path(),
    );
    agent.wait_tailing(&path);

    let long = long_text(3, 40_000);
    let (p1, p2, p3) = (&long[..16_384], &long[16_384..32_768], &long[32_768..]);
    // Pieces of one logical line written apart, the other stream between
    // them: the tailer reads each write on its own.
    append(
        &path,
        &(cri(1_000_000_000, "stdout", "P", p1)
            + &cri(1_000_000_001, "stderr", "P", "error: connection ")),
    );
    std::thread::sleep(Duration::from_millis(300));
    append(
        &path,
        &(cri(1_000_000_002, "stderr", "F", "refused (retrying in 5s)")
            + &cri(1_000_000_003, "stdout", "P", p2)),
    );
    std::thread::sleep(Duration::from_millis(300));
    append(
        &path,
        &(cri(1_000_000_004, "stderr", "F", "warning: disk 91% full")
            + &cri(1_000_000_005, "stdout", "F", p3)
            + &cri(2_500_000_000, "stdout", "F", "")
            + &cri(3_000_000_000, "stdout", "F", "ready")),
    );

    receiver.wait_for_logs(6, Duration::from_secs(20));
    let records = settle(&receiver);
    assert_eq!(
        stream_bodies(&records, "stdout"),
        vec!["starting server", long.as_str(), "", "ready"],
        "stdout records"
    );
    // stderr's `P` piece is joined to the next *stderr* piece, never to
    // stdout's pieces between them.
    assert_eq!(
        stream_bodies(&records, "stderr"),
        vec![
            "error: connection refused (retrying in 5s)",
            "warning: disk 91% full"
        ],
        "stderr records"
    );
    assert_eq!(records.len(), 6, "records: {:?}", bodies(&records));
    let time_of = |b: &str| {
        records
            .iter()
            .find(|r| r.body == b)
            .map(|r| r.time_unix_nano)
            .expect("arrived")
    };
    assert_eq!(time_of("starting server"), T0 * NS + 123_456_789);
    assert_eq!(
        time_of(&long),
        T0 * NS + 1_000_000_000,
        "first piece's time"
    );
    assert_eq!(
        time_of("error: connection refused (retrying in 5s)"),
        T0 * NS + 1_000_000_001
    );
    assert_eq!(time_of("ready"), T0 * NS + 3_000_000_000);
    for r in &records {
        assert_eq!(attr(r, "log.parse.error"), None, "{:?}", r.attributes);
        assert_eq!(attr(r, "log.file.name"), Some("app.log"));
        assert!(r.attributes.get("log.record.truncated").is_none());
    }
    agent.term(Duration::from_secs(15));
}

/// A Java stack trace written through CRI, one of its lines cut into `P`/`F`
/// pieces and a stderr line in the middle: with a start pattern on the
/// application's timestamp, the trace arrives as one record.
#[test]
fn cri_partials_are_joined_before_multiline_rules() {
    let _serial = serial();
    let s = Scratch::new();
    let receiver = Receiver::start();
    let path = s.log("java.log");
    // Created first: the agent is ready once it says it tails it.
    append(&path, "");
    let mut agent = Agent::start(
        &config(&s, &receiver).with_log_options(&[
            ("format", "cri"),
            (
                "multiline",
                r"{start_pattern: '^\d{4}-\d{2}-\d{2}', timeout: 500ms}",
            ),
        ]),
        s.path(),
    );
    agent.wait_tailing(&path);
    let lines = [
        cri(
            1,
            "stdout",
            "F",
            "2024-01-15 10:00:00.001 INFO  [main] c.e.App - started",
        ),
        cri(
            2,
            "stdout",
            "F",
            "2024-01-15 10:00:02.000 ERROR [main] c.e.App - request failed",
        ),
        cri(3, "stdout", "F", "java.lang.IllegalStateException: boom"),
        // The start pattern matches `2024-...` at the start of a *piece*
        // here: joined first, this is no start line.
        cri(4, "stdout", "P", "\tat com.example.Service.handle(Serv"),
        cri(
            5,
            "stderr",
            "F",
            "2024-01-15 10:00:02.050 WARN  gc pause 120ms",
        ),
        cri(6, "stdout", "P", "ice.java:42"),
        cri(7, "stdout", "F", ")"),
        cri(8, "stdout", "F", "\tat com.example.App.main(App.java:10)"),
        cri(9, "stdout", "F", "Caused by: java.io.IOException: disk"),
        cri(10, "stdout", "F", "\t... 3 more"),
        cri(
            11,
            "stdout",
            "F",
            "2024-01-15 10:00:03.000 INFO  [main] c.e.App - recovered",
        ),
    ];
    // Two writes, cut inside the trace.
    append(&path, &lines[..5].concat());
    std::thread::sleep(Duration::from_millis(200));
    append(&path, &lines[5..].concat());

    let trace = "2024-01-15 10:00:02.000 ERROR [main] c.e.App - request failed\n\
                 java.lang.IllegalStateException: boom\n\
                 \tat com.example.Service.handle(Service.java:42)\n\
                 \tat com.example.App.main(App.java:10)\n\
                 Caused by: java.io.IOException: disk\n\
                 \t... 3 more";
    wait_body(&receiver, trace, Duration::from_secs(20));
    // The last record of each stream is shipped by the timeout.
    wait_body(
        &receiver,
        "2024-01-15 10:00:03.000 INFO  [main] c.e.App - recovered",
        Duration::from_secs(10),
    );
    let records = settle(&receiver);
    assert_eq!(
        stream_bodies(&records, "stdout"),
        vec![
            "2024-01-15 10:00:00.001 INFO  [main] c.e.App - started",
            trace,
            "2024-01-15 10:00:03.000 INFO  [main] c.e.App - recovered",
        ]
    );
    assert_eq!(
        stream_bodies(&records, "stderr"),
        vec!["2024-01-15 10:00:02.050 WARN  gc pause 120ms"]
    );
    assert_eq!(records.len(), 4, "records: {:#?}", bodies(&records));
    let rec = records.iter().find(|r| r.body == trace).expect("arrived");
    assert_eq!(rec.time_unix_nano, T0 * NS + 2, "the first line's CRI time");
    agent.term(Duration::from_secs(15));
}

// ---------------------------------------------------------------------------
// 2. Docker json-file
// ---------------------------------------------------------------------------

/// Docker json-file: a 40 KB line split at 16 KiB (pieces without the
/// trailing `\n`), and a Python `logger.exception` traceback on stderr with
/// the continue pattern a user writes for it.
#[test]
fn docker_json_file_partials_and_python_traceback() {
    let _serial = serial();
    let s = Scratch::new();
    let receiver = Receiver::start();
    let path = s.log("container-json.log");
    // Created first: the agent is ready once it says it tails it.
    append(&path, "");
    let mut agent = Agent::start(&config(&s, &receiver).with_log_options(&[
            ("format", "docker"),
            (
                "multiline",
                r"{continue_pattern: '^(\s|Traceback \(most recent call last\):|\S+(Error|Exception): )', timeout: 500ms}",
            ),
        ]), s.path());
    agent.wait_tailing(&path);
    let long = long_text(7, 40_000);
    let mut text = String::new();
    text += &docker("2024-01-15 10:00:00,000 INFO worker started\n", "stderr", 1);
    text += &docker("GET /healthz 200\n", "stdout", 2);
    text += &docker(&long[..16_384], "stdout", 3);
    text += &docker("2024-01-15 10:00:01,000 ERROR job 7 failed\n", "stderr", 4);
    text += &docker(&long[16_384..32_768], "stdout", 5);
    text += &docker("Traceback (most recent call last):\n", "stderr", 6);
    text += &docker("  File \"/app/worker.py\", line 10, in run\n", "stderr", 7);
    text += &docker(&(long[32_768..].to_owned() + "\n"), "stdout", 8);
    text += &docker("    process(job)\n", "stderr", 9);
    text += &docker(
        "  File \"/app/worker.py\", line 20, in process\n",
        "stderr",
        10,
    );
    text += &docker("    raise ValueError(\"bad value\")\n", "stderr", 11);
    text += &docker("ValueError: bad value\n", "stderr", 12);
    text += &docker("2024-01-15 10:00:02,000 INFO worker idle\n", "stderr", 13);
    text += &docker("GET /healthz 200\n", "stdout", 14);
    // In two writes, the second starting inside a piece's JSON line.
    let cut = text.len() / 2;
    append(&path, &text[..cut]);
    std::thread::sleep(Duration::from_millis(200));
    append(&path, &text[cut..]);

    let traceback = "2024-01-15 10:00:01,000 ERROR job 7 failed\n\
                     Traceback (most recent call last):\n  \
                     File \"/app/worker.py\", line 10, in run\n    \
                     process(job)\n  \
                     File \"/app/worker.py\", line 20, in process\n    \
                     raise ValueError(\"bad value\")\n\
                     ValueError: bad value";
    wait_body(&receiver, traceback, Duration::from_secs(20));
    wait_body(
        &receiver,
        "2024-01-15 10:00:02,000 INFO worker idle",
        Duration::from_secs(10),
    );
    let records = settle(&receiver);
    assert_eq!(
        stream_bodies(&records, "stderr"),
        vec![
            "2024-01-15 10:00:00,000 INFO worker started",
            traceback,
            "2024-01-15 10:00:02,000 INFO worker idle",
        ]
    );
    // The multiline rules apply to stdout too: none of these continues
    // another, so each is its own record.
    assert_eq!(
        stream_bodies(&records, "stdout"),
        vec!["GET /healthz 200", long.as_str(), "GET /healthz 200"]
    );
    assert_eq!(records.len(), 6, "records: {:#?}", bodies(&records));
    let time_of = |b: &str| {
        records
            .iter()
            .find(|r| r.body == b)
            .map(|r| r.time_unix_nano)
            .expect("arrived")
    };
    assert_eq!(time_of(&long), T0 * NS + 3, "the first piece's time");
    assert_eq!(time_of(traceback), T0 * NS + 4);
    for r in &records {
        assert_eq!(attr(r, "log.parse.error"), None, "{:?}", r.attributes);
        assert!(r.attributes.get("log.record.truncated").is_none());
    }
    agent.term(Duration::from_secs(15));
}

// ---------------------------------------------------------------------------
// 3. JSON
// ---------------------------------------------------------------------------

/// Structured JSON lines: time and level promoted (OTLP severity numbers);
/// a line that is not JSON is shipped as it is, with `log.parse.error`.
#[test]
fn json_lines_promote_time_and_severity() {
    let _serial = serial();
    let s = Scratch::new();
    let receiver = Receiver::start();
    let path = s.log("app.json.log");
    // Created first: the agent is ready once it says it tails it.
    append(&path, "");
    let mut agent = Agent::start(
        &config(&s, &receiver).with_log_options(&[("format", "json")]),
        s.path(),
    );
    agent.wait_tailing(&path);
    let lines = [
        r#"{"time":"2024-01-15T10:00:00.5Z","level":"info","msg":"started"}"#,
        r#"{"ts":1705312801250,"severity":"WARN","msg":"slow request","ms":1200}"#,
        r#"{"timestamp":"2024-01-15T11:00:02.000000007+01:00","level":"error","msg":"failed","err":{"code":7}}"#,
        r#"{"time":1705312803,"level":50,"msg":"pino error"}"#,
        "panic: runtime error: index out of range [3] with length 3",
        r#"{"level":"info","msg":"cut short"#,
        r#"{"msg":"no time, no level"}"#,
    ];
    append(&path, &(lines.join("\n") + "\n"));
    receiver.wait_for_logs(lines.len(), Duration::from_secs(20));
    let records = settle(&receiver);
    assert_eq!(bodies(&records), lines, "bodies are the lines as written");
    let got: Vec<(u64, i64, Option<&str>)> = records
        .iter()
        .map(|r| {
            (
                r.time_unix_nano,
                r.severity_number,
                attr(r, "log.parse.error"),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (T0 * NS + 500_000_000, 9, None),
            (T0 * NS + 1_250_000_000, 13, None),
            (T0 * NS + 2_000_000_007, 17, None),
            (T0 * NS + 3 * NS, 17, None),
            (0, 0, Some("not a JSON object")),
            (0, 0, Some("invalid JSON")),
            (0, 0, None),
        ],
        "(time_unix_nano, severity_number, log.parse.error) per line"
    );
    agent.term(Duration::from_secs(15));
}

// ---------------------------------------------------------------------------
// 4. Multiline timeout and shutdown
// ---------------------------------------------------------------------------

const TRACE: &str = "2024-01-15 10:00:01.000 ERROR request failed\n\
                     java.lang.NullPointerException\n\
                     \tat com.example.Handler.run(Handler.java:7)\n\
                     \tat java.base/java.lang.Thread.run(Thread.java:1583)";

/// A stack trace with no line after it is shipped `multiline.timeout` after
/// its last line, with no further write.
#[test]
fn pending_multiline_record_is_shipped_after_its_timeout() {
    let _serial = serial();
    let s = Scratch::new();
    let receiver = Receiver::start();
    let path = s.log("app.log");
    // Created first: the agent is ready once it says it tails it.
    append(&path, "");
    let mut agent = Agent::start(
        &config(&s, &receiver).with_log_options(&[(
            "multiline",
            r"{start_pattern: '^\d{4}-\d{2}-\d{2} ', timeout: 500ms}",
        )]),
        s.path(),
    );
    agent.wait_tailing(&path);
    let first = "2024-01-15 10:00:00.000 INFO ready";
    append(&path, &format!("{first}\n{TRACE}\n"));
    let written = Instant::now();
    wait_body(&receiver, first, Duration::from_secs(10));
    wait_body(&receiver, TRACE, Duration::from_secs(10));
    let waited = written.elapsed();
    assert!(
        waited >= Duration::from_millis(450),
        "the trace arrived {waited:?} after it was written: before its 500ms timeout"
    );
    let records = settle(&receiver);
    assert_eq!(bodies(&records), vec![first, TRACE]);
    agent.term(Duration::from_secs(15));
}

/// SIGTERM with a pending record and a long timeout: the record is shipped
/// before the agent exits.
#[test]
fn pending_multiline_record_is_shipped_on_sigterm() {
    let _serial = serial();
    let s = Scratch::new();
    let receiver = Receiver::start();
    let path = s.log("app.log");
    // Created first: the agent is ready once it says it tails it.
    append(&path, "");
    let mut agent = Agent::start(
        &config(&s, &receiver).with_log_options(&[(
            "multiline",
            r"{start_pattern: '^\d{4}-\d{2}-\d{2} ', timeout: 60s}",
        )]),
        s.path(),
    );
    agent.wait_tailing(&path);
    let first = "2024-01-15 10:00:00.000 INFO ready";
    // One write: once `first` arrives, the trace has been read too.
    append(&path, &format!("{first}\n{TRACE}\n"));
    wait_body(&receiver, first, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(receiver.count(), 1, "the trace waits for its 60s timeout");
    let status = agent.term(Duration::from_secs(15));
    assert!(status.success(), "sidekick exited with {status:?}");
    let records = settle(&receiver);
    assert_eq!(bodies(&records), vec![first, TRACE]);
}

// ---------------------------------------------------------------------------
// 5. auto
// ---------------------------------------------------------------------------

/// `format: auto`, one source: a CRI file, a JSON file and a plain file are
/// each read in their own format.
#[test]
fn auto_detects_each_files_format() {
    let _serial = serial();
    let s = Scratch::new();
    let receiver = Receiver::start();
    let (cri_path, json_path, raw_path) = (s.log("cri.log"), s.log("json.log"), s.log("raw.log"));
    append(
        &cri_path,
        &(cri(5, "stderr", "P", "half ") + &cri(6, "stderr", "F", "and half")),
    );
    append(
        &json_path,
        "{\"time\":\"2024-01-15T10:00:07Z\",\"level\":\"warn\",\"msg\":\"w\"}\n",
    );
    append(&raw_path, "plain text line\n{\"level\":\"error\"}\n");
    let mut agent = Agent::start(
        &config(&s, &receiver).with_log_options(&[("format", "auto")]),
        s.path(),
    );
    receiver.wait_for_logs(4, Duration::from_secs(20));
    // More lines after detection keep each file's format.
    append(&cri_path, &cri(8, "stdout", "F", "second"));
    append(&json_path, "{\"ts\":1705312809,\"level\":\"error\"}\n");
    receiver.wait_for_logs(6, Duration::from_secs(20));
    let records = settle(&receiver);
    assert_eq!(records.len(), 6, "records: {:#?}", bodies(&records));
    let of = |name: &str| -> Vec<(String, u64, i64, Option<String>)> {
        records
            .iter()
            .filter(|r| r.file_name.as_deref() == Some(name))
            .map(|r| {
                (
                    r.body.clone(),
                    r.time_unix_nano,
                    r.severity_number,
                    attr(r, "log.iostream").map(str::to_owned),
                )
            })
            .collect()
    };
    assert_eq!(
        of("cri.log"),
        vec![
            (
                "half and half".to_owned(),
                T0 * NS + 5,
                0,
                Some("stderr".to_owned())
            ),
            (
                "second".to_owned(),
                T0 * NS + 8,
                0,
                Some("stdout".to_owned())
            ),
        ]
    );
    assert_eq!(
        of("json.log"),
        vec![
            (
                "{\"time\":\"2024-01-15T10:00:07Z\",\"level\":\"warn\",\"msg\":\"w\"}".to_owned(),
                T0 * NS + 7 * NS,
                13,
                None
            ),
            (
                "{\"ts\":1705312809,\"level\":\"error\"}".to_owned(),
                T0 * NS + 9 * NS,
                17,
                None
            ),
        ]
    );
    // Detected from its first line as raw: a later JSON-looking line stays
    // raw (no severity) and nothing is flagged as a parse error.
    assert_eq!(
        of("raw.log"),
        vec![
            ("plain text line".to_owned(), 0, 0, None),
            ("{\"level\":\"error\"}".to_owned(), 0, 0, None),
        ]
    );
    for r in &records {
        assert_eq!(attr(r, "log.parse.error"), None, "{r:?}");
    }
    agent.term(Duration::from_secs(15));
}

// ---------------------------------------------------------------------------
// 6. Crash safety with a pending record
// ---------------------------------------------------------------------------

/// kill -9 while a trace is pending (its timeout far away): after a restart
/// the trace arrives whole — the checkpoint never passed its lines — and
/// every line arrives at least once.
#[test]
fn kill9_with_a_pending_record_loses_nothing() {
    let _serial = serial();
    let s = Scratch::new();
    let receiver = Receiver::start();
    let path = s.log("app.log");
    // Created first: the agent is ready once it says it tails it.
    append(&path, "");
    let cfg = config(&s, &receiver).with_log_options(&[(
        "multiline",
        r"{start_pattern: '^\d{4}-\d{2}-\d{2} ', timeout: 60s}",
    )]);
    let mut agent = Agent::start(&cfg, s.path());
    agent.wait_tailing(&path);
    let first = "2024-01-15 10:00:00.000 INFO ready";
    append(&path, &format!("{first}\n{TRACE}\n"));
    wait_body(&receiver, first, Duration::from_secs(10));
    // Let the checkpoint of `first`'s batch reach the disk: it must stop at
    // the trace's first line.
    std::thread::sleep(Duration::from_millis(500));
    agent.kill9();
    assert_eq!(bodies(&receiver.logs()), vec![first], "before the crash");

    let mut agent = Agent::start(&cfg, s.path());
    agent.wait_tailing(&path);
    let next = "2024-01-15 10:00:02.000 INFO next";
    append(&path, &format!("{next}\n"));
    wait_body(&receiver, TRACE, Duration::from_secs(15));
    // `next` is pending now; SIGTERM ships it.
    agent.term(Duration::from_secs(15));
    let records = settle(&receiver);
    let got = bodies(&records);
    for want in [first, TRACE, next] {
        assert!(got.contains(&want), "{want:?} missing from {got:#?}");
    }
    // Nothing but whole records: no trace line arrived on its own.
    for b in &got {
        assert!([first, TRACE, next].contains(b), "unexpected record {b:?}");
    }
    assert_eq!(got.iter().filter(|b| **b == TRACE).count(), 1);
    assert_eq!(got.iter().filter(|b| **b == next).count(), 1);
}
