//! Real samples of each format through [`LineDecoder`], and property tests:
//! no input panics, nothing is lost, the committed offset never passes a
//! buffered line.

use super::decoder::PARTIAL_TIMEOUT;
use super::*;
use bytes::Bytes;
use proptest::prelude::*;
use sidekick_pipeline::{AttrValue, LogRecord, SourceMeta};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Feeds lines the way the tailer does: each line's end offset is just past
/// its newline.
struct Feed {
    dec: LineDecoder,
    offset: u64,
    out: Vec<LogRecord>,
}

impl Feed {
    fn new(dec: LineDecoder) -> Self {
        Feed {
            dec,
            offset: 0,
            out: Vec::new(),
        }
    }

    /// Pushes one line; returns the committed offset after it.
    fn line(&mut self, line: impl Into<Vec<u8>>) -> u64 {
        let line = line.into();
        self.offset += line.len() as u64 + 1;
        self.dec
            .push(Bytes::from(line), self.offset, 7, &mut self.out);
        self.dec.committed_offset()
    }

    /// Pushes every line of `text`; returns the end offset of each.
    fn text(&mut self, text: &str) -> Vec<u64> {
        text.lines()
            .map(|l| {
                self.line(l);
                self.offset
            })
            .collect()
    }

    fn flush(&mut self) {
        self.dec.flush(&mut self.out);
    }

    fn bodies(&self) -> Vec<String> {
        self.out
            .iter()
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .collect()
    }
}

fn attr<'a>(r: &'a LogRecord, key: &str) -> Option<&'a AttrValue> {
    r.attributes.iter().find(|a| a.key == key).map(|a| &a.value)
}

fn iostream(r: &LogRecord) -> Option<&str> {
    match attr(r, "log.iostream") {
        Some(AttrValue::Str(s)) => Some(s),
        _ => None,
    }
}

fn truncated(r: &LogRecord) -> bool {
    attr(r, "log.record.truncated") == Some(&AttrValue::Bool(true))
}

fn parse_error(r: &LogRecord) -> Option<&str> {
    match attr(r, "log.parse.error") {
        Some(AttrValue::Str(s)) => Some(s),
        _ => None,
    }
}

const JAVA_CONTINUE: &str = r"^\s+at |^Caused by:|^\s+\.\.\. ";

const JAVA_TRACE: &str = "\
2024-01-02 03:04:05.123 ERROR [main] com.example.App - request failed
Exception in thread \"main\" java.lang.IllegalStateException: connection pool exhausted
\tat com.example.db.Pool.acquire(Pool.java:88)
\tat com.example.App.handle(App.java:42)
\tat com.example.App.main(App.java:10)
Caused by: java.net.ConnectException: Connection refused
\tat java.base/sun.nio.ch.Net.connect0(Native Method)
\t... 3 more
2024-01-02 03:04:06.001 INFO  [main] com.example.App - retrying
";

#[test]
fn raw_lines_are_records_as_they_are_without_copy() {
    let dec = LineDecoder::new(LogFormat::Raw, None, 1024)
        .starting_at(100)
        .with_source(Arc::new(SourceMeta::for_path("/var/log/a.log")));
    assert!(dec.is_passthrough());
    let mut f = Feed::new(dec);
    f.offset = 100;
    assert_eq!(f.dec.committed_offset(), 100);
    let buf = Bytes::from_static(b"one\xff\xfe\ntwo\n");
    f.dec.push(buf.slice(0..5), 106, 7, &mut f.out);
    assert_eq!(f.dec.committed_offset(), 106);
    f.dec.push(buf.slice(6..9), 110, 7, &mut f.out);
    assert_eq!(f.dec.committed_offset(), 110);
    assert_eq!(f.out.len(), 2);
    assert_eq!(&f.out[0].body[..], b"one\xff\xfe");
    assert_eq!(f.out[0].body.as_ptr(), buf.as_ptr());
    assert!(f.out[0].attributes.is_empty());
    assert_eq!(f.out[0].observed_time_unix_nano, 7);
    assert_eq!(f.out[1].source.as_ref().unwrap().name, "a.log");
    assert_eq!(f.dec.pending_deadline(), None);
}

#[test]
fn java_stack_trace_with_start_pattern() {
    let rules = MultilineRules::start_pattern(r"^\d{4}-").unwrap();
    let mut f = Feed::new(LineDecoder::new(LogFormat::Raw, Some(rules), 1 << 20));
    let ends = f.text(JAVA_TRACE);
    // The trace is held until the next record starts ...
    assert_eq!(f.out.len(), 1);
    let lines: Vec<&str> = JAVA_TRACE.lines().collect();
    assert_eq!(f.bodies()[0], lines[..8].join("\n"));
    assert!(f.out[0].attributes.is_empty());
    // ... which is pending in turn: the checkpoint stops before it.
    assert_eq!(f.dec.committed_offset(), ends[7]);
    assert!(f.dec.pending_deadline().is_some());
    f.flush();
    assert_eq!(f.bodies()[1], lines[8]);
    assert_eq!(f.dec.committed_offset(), ends[8]);
    assert_eq!(f.dec.pending_deadline(), None);
}

#[test]
fn java_stack_trace_with_continue_pattern() {
    let rules = MultilineRules::continue_pattern(JAVA_CONTINUE).unwrap();
    let mut f = Feed::new(LineDecoder::new(LogFormat::Raw, Some(rules), 1 << 20));
    let ends = f.text(JAVA_TRACE);
    f.flush();
    let lines: Vec<&str> = JAVA_TRACE.lines().collect();
    assert_eq!(
        f.bodies(),
        vec![
            lines[0].to_string(),
            lines[1..8].join("\n"),
            lines[8].to_string()
        ]
    );
    assert_eq!(f.dec.committed_offset(), *ends.last().unwrap());
}

#[test]
fn python_traceback_with_start_pattern() {
    let log = "\
2024-01-02 03:04:05,123 ERROR worker: task failed
Traceback (most recent call last):
  File \"/app/worker.py\", line 12, in run
    result = handle(job)
  File \"/app/worker.py\", line 30, in handle
    raise ValueError(f\"bad job {job.id}\")
ValueError: bad job 42
2024-01-02 03:04:06,000 INFO worker: next job
";
    let rules = MultilineRules::start_pattern(r"^\d{4}-").unwrap();
    let mut f = Feed::new(LineDecoder::new(LogFormat::Raw, Some(rules), 1 << 20));
    let mut committed = Vec::new();
    for l in log.lines() {
        committed.push(f.line(l));
    }
    let lines: Vec<&str> = log.lines().collect();
    // Nothing is committed while the traceback is pending.
    assert!(committed[..7].iter().all(|&c| c == 0), "{committed:?}");
    assert_eq!(f.bodies(), vec![lines[..7].join("\n")]);
    let end_of_trace = log.find("\n2024-01-02 03:04:06").unwrap() as u64 + 1;
    assert_eq!(committed[7], end_of_trace);
    f.flush();
    assert_eq!(f.bodies()[1], lines[7]);
    assert_eq!(f.dec.committed_offset(), log.len() as u64);
}

/// A Java trace on stderr as containerd writes it: cut into `P` pieces,
/// interleaved with stdout lines.
const CRI_JAVA: &str = "\
2024-01-02T03:04:05.000000001Z stdout F 2024-01-02 03:04:05.000 INFO  serving on :8080
2024-01-02T03:04:05.100000000Z stderr P Exception in thread \"main\" java.lang.Illegal
2024-01-02T03:04:05.100000001Z stdout F 2024-01-02 03:04:05.100 INFO  GET /health 200
2024-01-02T03:04:05.100000002Z stderr F StateException: connection pool exhausted
2024-01-02T03:04:05.100000003Z stderr F \tat com.example.db.Pool.acquire(Pool.java:88)
2024-01-02T03:04:05.100000004Z stderr P \tat com.example.App.handle(App.ja
2024-01-02T03:04:05.100000005Z stderr P va:4
2024-01-02T03:04:05.100000006Z stderr F 2)
2024-01-02T03:04:05.100000007Z stderr F Caused by: java.net.ConnectException: Connection refused
2024-01-02T03:04:05.100000008Z stderr F \t... 3 more
2024-01-02T03:04:06.000000000Z stdout F 2024-01-02 03:04:06.000 INFO  retrying
";

#[test]
fn cri_partial_lines_are_joined_per_stream() {
    let mut f = Feed::new(LineDecoder::new(LogFormat::Cri, None, 1 << 20));
    let mut committed = Vec::new();
    let mut ends = Vec::new();
    for l in CRI_JAVA.lines() {
        committed.push(f.line(l));
        ends.push(f.offset);
    }
    let got: Vec<(String, Option<&str>, u64)> = f
        .out
        .iter()
        .map(|r| {
            (
                String::from_utf8_lossy(&r.body).into_owned(),
                iostream(r),
                r.time_unix_nano,
            )
        })
        .collect();
    let t = |n: u64| 1_704_164_645_000_000_000 + n;
    let s = |x: &str| x.to_string();
    assert_eq!(
        got,
        vec![
            (s("2024-01-02 03:04:05.000 INFO  serving on :8080"), Some("stdout"), t(1)),
            (s("2024-01-02 03:04:05.100 INFO  GET /health 200"), Some("stdout"), t(100_000_001)),
            (
                s("Exception in thread \"main\" java.lang.IllegalStateException: connection pool exhausted"),
                Some("stderr"),
                t(100_000_000)
            ),
            (s("\tat com.example.db.Pool.acquire(Pool.java:88)"), Some("stderr"), t(100_000_003)),
            (s("\tat com.example.App.handle(App.java:42)"), Some("stderr"), t(100_000_004)),
            (s("Caused by: java.net.ConnectException: Connection refused"), Some("stderr"), t(100_000_007)),
            (s("\t... 3 more"), Some("stderr"), t(100_000_008)),
            (s("2024-01-02 03:04:06.000 INFO  retrying"), Some("stdout"), t(1_000_000_000)),
        ]
    );
    // The stderr `P` line holds the checkpoint back, even past the stdout
    // line that completed after it.
    assert_eq!(committed[0], ends[0]);
    assert_eq!(committed[1], ends[0]);
    assert_eq!(committed[2], ends[0]);
    assert_eq!(committed[3], ends[3]);
    assert_eq!(committed[5], ends[4]);
    assert_eq!(committed[6], ends[4]);
    assert_eq!(committed[7], ends[7]);
    assert_eq!(*committed.last().unwrap(), *ends.last().unwrap());
    // A single-piece message is a slice of its line.
    assert!(f.out[0].body.len() < CRI_JAVA.len());
}

#[test]
fn cri_partials_are_joined_before_multiline_rules() {
    let rules = MultilineRules::continue_pattern(JAVA_CONTINUE).unwrap();
    let mut f = Feed::new(LineDecoder::new(LogFormat::Cri, Some(rules), 1 << 20));
    let ends = f.text(CRI_JAVA);
    // The stderr trace may go on (its last line continues it): it holds the
    // checkpoint at its first line, past the stdout lines since.
    assert_eq!(f.dec.committed_offset(), ends[0]);
    f.flush();
    assert_eq!(f.dec.committed_offset(), ends[10]);
    let got: Vec<(String, Option<&str>)> = f
        .out
        .iter()
        .map(|r| (String::from_utf8_lossy(&r.body).into_owned(), iostream(r)))
        .collect();
    let trace =
        "Exception in thread \"main\" java.lang.IllegalStateException: connection pool exhausted
\tat com.example.db.Pool.acquire(Pool.java:88)
\tat com.example.App.handle(App.java:42)
Caused by: java.net.ConnectException: Connection refused
\t... 3 more";
    let s = |x: &str| x.to_string();
    assert_eq!(
        got,
        vec![
            (
                s("2024-01-02 03:04:05.000 INFO  serving on :8080"),
                Some("stdout")
            ),
            (
                s("2024-01-02 03:04:05.100 INFO  GET /health 200"),
                Some("stdout")
            ),
            (s(trace), Some("stderr")),
            (s("2024-01-02 03:04:06.000 INFO  retrying"), Some("stdout")),
        ]
    );
    assert_eq!(f.out[2].time_unix_nano, 1_704_164_645_100_000_000);
}

#[test]
fn a_cri_line_longer_than_max_line_bytes_is_cut_and_its_rest_skipped() {
    let mut f = Feed::new(LineDecoder::new(LogFormat::Cri, None, 10));
    f.line("2024-01-02T03:04:05Z stdout P 0123456");
    f.line("2024-01-02T03:04:05Z stdout P 789abcdef");
    f.line("2024-01-02T03:04:05Z stdout P ghij");
    let before_last = f.line("2024-01-02T03:04:05Z stdout F klm");
    f.line("2024-01-02T03:04:05Z stdout F next");
    assert_eq!(f.bodies(), vec!["0123456789", "next"]);
    assert!(truncated(&f.out[0]));
    assert!(!truncated(&f.out[1]));
    assert_eq!(before_last, f.offset - 35);
}

#[test]
fn lines_that_are_not_cri_are_shipped_raw_with_the_reason() {
    let mut f = Feed::new(LineDecoder::new(LogFormat::Cri, None, 1024));
    f.line("panic: runtime error");
    f.line(b"2024-01-02T03:04:05Z stdout F caf\xe9".to_vec());
    assert_eq!(&f.out[0].body[..], b"panic: runtime error");
    assert_eq!(parse_error(&f.out[0]), Some("invalid CRI timestamp"));
    assert_eq!(&f.out[1].body[..], b"caf\xe9");
    assert_eq!(parse_error(&f.out[1]), None);
}

fn docker_line(log: &str, stream: &str) -> String {
    serde_json::json!({"log": log, "stream": stream, "time": "2024-01-02T03:04:05.123456789Z"})
        .to_string()
}

#[test]
fn docker_json_file_with_a_16k_split() {
    // A 40,000-byte line, which docker writes as pieces of 16 KiB.
    let long: String = (0..40_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let mut f = Feed::new(LineDecoder::new(LogFormat::Docker, None, 1 << 20));
    let c0 = f.line(docker_line("starting \"quoted\"\tand tabbed\n", "stdout"));
    let e0 = f.offset;
    let c1 = f.line(docker_line(&long[..16_384], "stderr"));
    let c2 = f.line(docker_line("between\n", "stdout"));
    let c3 = f.line(docker_line(&long[16_384..32_768], "stderr"));
    let c4 = f.line(docker_line(&format!("{}\n", &long[32_768..]), "stderr"));
    assert_eq!((c0, c1, c2, c3), (e0, e0, e0, e0));
    assert_eq!(c4, f.offset);
    assert_eq!(
        f.bodies(),
        vec!["starting \"quoted\"\tand tabbed", "between", long.as_str()]
    );
    assert_eq!(iostream(&f.out[2]), Some("stderr"));
    assert_eq!(f.out[2].time_unix_nano, 1_704_164_645_123_456_789);
    assert!(f
        .out
        .iter()
        .all(|r| !truncated(r) && parse_error(r).is_none()));

    // Bounded by max_line_bytes: cut, flagged, the rest skipped.
    let mut f = Feed::new(LineDecoder::new(LogFormat::Docker, None, 20_000));
    f.line(docker_line(&long[..16_384], "stdout"));
    f.line(docker_line(&long[16_384..32_768], "stdout"));
    f.line(docker_line(&format!("{}\n", &long[32_768..]), "stdout"));
    f.line(docker_line("after\n", "stdout"));
    assert_eq!(f.bodies(), vec![&long[..20_000], "after"]);
    assert!(truncated(&f.out[0]));
    assert_eq!(f.dec.committed_offset(), f.offset);
}

#[test]
fn docker_lines_that_do_not_parse_are_kept() {
    let mut f = Feed::new(LineDecoder::new(LogFormat::Docker, None, 1024));
    f.line(r#"{"log":"cut in the mid"#);
    f.line(r#"{"message":"x"}"#);
    assert_eq!(
        f.bodies(),
        vec![r#"{"log":"cut in the mid"#, r#"{"message":"x"}"#]
    );
    assert_eq!(parse_error(&f.out[0]), Some("invalid JSON"));
    assert_eq!(parse_error(&f.out[1]), Some("no docker log field"));
}

#[test]
fn json_lines_promote_time_and_severity() {
    let mut f = Feed::new(LineDecoder::new(LogFormat::Json, None, 1024));
    let line = r#"{"time":"2024-01-02T03:04:05Z","level":"error","msg":"boom"}"#;
    f.line(line);
    f.line(r#"{"ts":1704164645,"lvl":"Warning"}"#);
    f.line("not json");
    assert_eq!(f.bodies()[0], line);
    assert_eq!(f.out[0].time_unix_nano, 1_704_164_645_000_000_000);
    assert_eq!(f.out[0].severity_number, 17);
    assert_eq!(f.out[0].severity_text.as_deref(), Some("error"));
    assert_eq!(f.out[1].severity_number, 13);
    assert_eq!(f.out[1].time_unix_nano, 1_704_164_645_000_000_000);
    assert_eq!(parse_error(&f.out[2]), Some("not a JSON object"));
    assert_eq!(f.out[2].severity_number, 0);
}

#[test]
fn auto_detects_per_file_from_the_first_line_and_sticks() {
    let cases: [(&str, &str, &str); 4] = [
        ("2024-01-02T03:04:05Z stderr F hello", "hello", "cri"),
        (r#"{"log":"hello\n","stream":"stdout"}"#, "hello", "docker"),
        (
            r#"{"level":"info","msg":"hello"}"#,
            r#"{"level":"info","msg":"hello"}"#,
            "json",
        ),
        ("hello", "hello", "raw"),
    ];
    for (first, body, name) in cases {
        let mut f = Feed::new(LineDecoder::new(LogFormat::Auto, None, 1024));
        f.line("");
        f.line(first);
        f.line("plain text");
        assert_eq!(f.bodies()[1], body, "{name}");
        assert_eq!(f.out[1].severity_number, if name == "json" { 9 } else { 0 });
        // Once decided, a line of another shape is a parse error (not raw).
        let err = parse_error(&f.out[2]);
        assert_eq!(err.is_some(), name != "raw", "{name}: {err:?}");
    }
}

#[test]
fn multiline_bounds_cut_records_without_losing_lines() {
    let rules = MultilineRules::start_pattern("^S").unwrap().max_lines(3);
    let mut f = Feed::new(LineDecoder::new(LogFormat::Raw, Some(rules), 1024));
    f.text("S1\nc\nc\nc\nc\nS2\n");
    f.flush();
    assert_eq!(f.bodies(), vec!["S1\nc\nc", "c\nc", "S2"]);
    assert!(truncated(&f.out[0]));
    assert!(!truncated(&f.out[1]) && !truncated(&f.out[2]));

    let rules = MultilineRules::start_pattern("^S").unwrap().max_bytes(8);
    let mut f = Feed::new(LineDecoder::new(LogFormat::Raw, Some(rules), 1024));
    f.text("S1\nabc\nde\nlonger than max\nS2\n");
    f.flush();
    assert_eq!(f.bodies(), vec!["S1\nabc", "de", "longer than max", "S2"]);
    assert!(truncated(&f.out[0]) && truncated(&f.out[1]));
}

#[test]
fn a_pending_record_is_due_after_its_timeout() {
    let rules = MultilineRules::start_pattern("^S")
        .unwrap()
        .timeout(Duration::from_millis(200));
    let mut f = Feed::new(LineDecoder::new(LogFormat::Raw, Some(rules), 1024));
    let before = Instant::now();
    f.text("S1\n  more\n");
    let due = f.dec.pending_deadline().unwrap();
    assert!(due >= before + Duration::from_millis(200));
    assert!(due <= Instant::now() + Duration::from_millis(200));
    f.dec
        .flush_expired(due - Duration::from_millis(1), &mut f.out);
    assert!(f.out.is_empty());
    assert_eq!(f.dec.committed_offset(), 0);
    f.dec.flush_expired(due, &mut f.out);
    assert_eq!(f.bodies(), vec!["S1\n  more"]);
    assert_eq!(f.dec.committed_offset(), 10);
    assert_eq!(f.dec.pending_deadline(), None);
}

#[test]
fn a_lone_partial_line_is_due_after_the_partial_timeout() {
    let mut f = Feed::new(LineDecoder::new(LogFormat::Cri, None, 1024));
    f.line("2024-01-02T03:04:05Z stdout P no final piece");
    let due = f.dec.pending_deadline().unwrap();
    assert!(due > Instant::now() + PARTIAL_TIMEOUT - Duration::from_secs(1));
    assert_eq!(f.dec.committed_offset(), 0);
    f.dec.flush_expired(due, &mut f.out);
    assert_eq!(f.bodies(), vec!["no final piece"]);
    assert_eq!(f.dec.committed_offset(), f.offset);
}

#[test]
fn cut_lines_skips_and_rewinds() {
    let mut f = Feed::new(LineDecoder::new(LogFormat::Raw, None, 4));
    f.dec
        .push_cut(Bytes::from_static(b"abcd"), 4, 1, &mut f.out);
    f.dec.skip_to(10);
    assert_eq!(f.dec.committed_offset(), 10);
    assert!(truncated(&f.out[0]));

    let rules = MultilineRules::start_pattern("^S").unwrap();
    let mut f = Feed::new(LineDecoder::new(LogFormat::Raw, Some(rules), 4));
    f.text("S1\n c\n");
    f.dec
        .push_cut(Bytes::from_static(b" cut"), 100, 1, &mut f.out);
    f.dec.skip_to(120);
    assert_eq!(f.dec.committed_offset(), 0);
    f.dec.rewind(0, &mut f.out);
    assert_eq!(f.bodies(), vec!["S1\n c\n cut"]);
    assert!(truncated(&f.out[0]));
    assert_eq!(f.dec.committed_offset(), 0);
    assert_eq!(f.dec.pending_deadline(), None);
}

// ---- property tests ----

fn any_format() -> impl Strategy<Value = LogFormat> {
    prop_oneof![
        Just(LogFormat::Raw),
        Just(LogFormat::Json),
        Just(LogFormat::Cri),
        Just(LogFormat::Docker),
        Just(LogFormat::Auto),
    ]
}

fn any_rules() -> impl Strategy<Value = Option<MultilineRules>> {
    (0..3u8, 1..6usize, 1..200usize).prop_map(|(kind, lines, bytes)| {
        let rules = match kind {
            0 => return None,
            1 => MultilineRules::start_pattern(r"^\d").ok()?,
            _ => MultilineRules::continue_pattern(r"^\s").ok()?,
        };
        Some(rules.max_lines(lines).max_bytes(bytes))
    })
}

/// Lines of any bytes but a newline, and lines shaped like each format (so
/// the joins and their bounds are reached, not only parse errors).
fn any_line() -> impl Strategy<Value = Vec<u8>> {
    let text = "[ -~\t\u{e9}]{0,24}";
    prop_oneof![
        prop::collection::vec(
            any::<u8>().prop_filter("no newline", |b| *b != b'\n'),
            0..40
        ),
        (any::<bool>(), any::<bool>(), text).prop_map(|(err, p, msg)| {
            format!(
                "2024-01-02T03:04:05.{}Z {} {} {msg}",
                msg.len(),
                if err { "stderr" } else { "stdout" },
                if p { "P" } else { "F" }
            )
            .into_bytes()
        }),
        (any::<bool>(), any::<bool>(), text).prop_map(|(err, p, msg)| {
            let log = if p { msg } else { format!("{msg}\n") };
            let stream = if err { "stderr" } else { "stdout" };
            serde_json::json!({"log": log, "stream": stream, "time": "2024-01-02T03:04:05Z"})
                .to_string()
                .into_bytes()
        }),
        (text, "[a-zA-Z]{0,8}", any::<i64>()).prop_map(|(msg, level, ts)| {
            serde_json::json!({"msg": msg, "level": level, "ts": ts})
                .to_string()
                .into_bytes()
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_line_panics_and_the_committed_offset_stays_behind_buffered_lines(
        format in any_format(),
        rules in any_rules(),
        max_line_bytes in 1..64usize,
        lines in prop::collection::vec(any_line(), 0..40),
        flush_every in 0..8usize,
    ) {
        let mut dec = LineDecoder::new(format, rules, max_line_bytes);
        let mut out = Vec::new();
        let mut end = 0u64;
        let mut committed = 0;
        for (i, line) in lines.into_iter().enumerate() {
            end += line.len() as u64 + 1;
            dec.push(Bytes::from(line), end, 1, &mut out);
            let now = dec.committed_offset();
            prop_assert!(now <= end);
            prop_assert!(now >= committed, "went back from {committed} to {now}");
            committed = now;
            if flush_every > 0 && i % flush_every == 0 {
                dec.flush_expired(Instant::now() + Duration::from_secs(3600), &mut out);
                prop_assert_eq!(dec.committed_offset(), end);
            }
        }
        dec.flush(&mut out);
        prop_assert_eq!(dec.committed_offset(), end);
        prop_assert_eq!(dec.pending_deadline(), None);
        for r in &out {
            // Joined CRI/docker lines are bounded (raw lines are the
            // tailer's to bound).
            if iostream(r).is_some() {
                prop_assert!(r.body.len() <= max_line_bytes || rules_joined(r));
            }
        }
    }

    #[test]
    fn raw_and_multiline_records_account_for_every_line(
        rules in any_rules(),
        lines in prop::collection::vec(
            prop::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..12),
            0..40,
        ),
    ) {
        let multiline = rules.is_some();
        let mut dec = LineDecoder::new(LogFormat::Raw, rules, 1 << 20);
        let mut out: Vec<LogRecord> = Vec::new();
        let mut ends = vec![0u64];
        for line in &lines {
            let end = ends.last().unwrap() + line.len() as u64 + 1;
            ends.push(end);
            dec.push(Bytes::from(line.clone()), end, 1, &mut out);
            // Exactly the lines already in records are committed.
            let emitted: usize = out.iter().map(|r| r.body.iter().filter(|b| **b == b'\n').count() + 1).sum();
            prop_assert_eq!(dec.committed_offset(), ends[emitted]);
        }
        dec.flush(&mut out);
        prop_assert_eq!(dec.committed_offset(), *ends.last().unwrap());
        let got: Vec<&[u8]> = out.iter().map(|r| &r.body[..]).collect();
        prop_assert_eq!(got.join(&b'\n'), lines.join(&b'\n'));
        if !multiline {
            prop_assert_eq!(out.len(), lines.len());
        }
    }

    #[test]
    fn cri_pieces_are_joined_in_order_per_stream(
        pieces in prop::collection::vec((any::<bool>(), any::<bool>(), "[a-z ]{0,6}"), 0..40),
    ) {
        let mut dec = LineDecoder::new(LogFormat::Cri, None, 1 << 20);
        let mut out = Vec::new();
        let mut want: [Vec<String>; 2] = Default::default();
        let mut open: [Option<String>; 2] = Default::default();
        let mut end = 0;
        for (err, partial, msg) in &pieces {
            let s = usize::from(*err);
            let line = format!(
                "2024-01-02T03:04:05Z {} {} {msg}",
                if *err { "stderr" } else { "stdout" },
                if *partial { "P" } else { "F" }
            );
            end += line.len() as u64 + 1;
            dec.push(Bytes::from(line), end, 1, &mut out);
            let joined = open[s].get_or_insert_with(String::new);
            joined.push_str(msg);
            if !partial {
                want[s].push(open[s].take().unwrap_or_default());
            }
        }
        dec.flush(&mut out);
        for s in 0..2 {
            if let Some(rest) = open[s].take() {
                want[s].push(rest);
            }
        }
        let mut got: [Vec<String>; 2] = Default::default();
        for r in &out {
            let s = usize::from(iostream(r) == Some("stderr"));
            got[s].push(String::from_utf8_lossy(&r.body).into_owned());
        }
        prop_assert_eq!(got, want);
    }
}

/// A record joined by multiline rules (it holds more than one line).
fn rules_joined(r: &LogRecord) -> bool {
    r.body.contains(&b'\n')
}
