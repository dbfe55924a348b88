//! `sidekick check` and `sidekick run` on bad config files: exit 2 and one
//! stderr line `FILE:LINE:COL: message naming the key` a user can act on.

use sidekick_e2e::{sidekick_bin, Scratch};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A valid config; the cases below break one line of it (1-based numbers
/// in the comments).
const VALID: &str = "\
data_dir: DATA_DIR
shutdown_timeout: 10s
resource:
  service.name: checkout
telemetry:
  listen: \"off\"
logs:
  - include: [\"LOG_GLOB\"]
    start_at: beginning
    max_line_bytes: 1MiB
    scan_interval: 5s
batch:
  max_records: 8192
  max_bytes: 4MiB
  timeout: 1s
outputs:
  - type: otlp_http
    endpoint: http://127.0.0.1:4318
    compression: gzip
    timeout: 10s
    max_in_flight: 4
";

fn valid(s: &Scratch) -> String {
    VALID
        .replace("DATA_DIR", s.data.to_str().unwrap())
        .replace("LOG_GLOB", s.log_glob().to_str().unwrap())
}

/// `VALID` with line `line` (1-based) replaced by `with`.
fn broken(s: &Scratch, line: usize, with: &str) -> String {
    let text = valid(s);
    let mut lines: Vec<&str> = text.lines().collect();
    lines[line - 1] = with;
    lines.join("\n") + "\n"
}

fn write(s: &Scratch, name: &str, text: &str) -> PathBuf {
    let p = s.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Runs `sidekick ARGS`, killing it after 20 s.
fn sidekick(args: &[&str]) -> Output {
    let mut child = Command::new(sidekick_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "`sidekick {}` still running after 20 s; stderr:\n{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn check(path: &Path) -> Output {
    sidekick(&["check", "-c", path.to_str().unwrap()])
}

/// Asserts exit 2 and exactly one stderr line; returns that line.
fn one_error_line(out: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{what}: expected exit 2, got {:?}; stderr:\n{stderr}",
        out.status
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: expected exactly one stderr line, got {}:\n{stderr}",
        lines.len()
    );
    lines[0].to_owned()
}

/// Asserts `check` rejects `text` (line `line` broken) with
/// `NAME:LINE:COL: ...key...`.
fn assert_rejected(s: &Scratch, name: &str, line: usize, with: &str, key: &str) {
    let text = broken(s, line, with);
    let path = write(s, name, &text);
    let err = one_error_line(&check(&path), name);
    let prefix = format!("{name}:{line}:");
    let at = err.find(&prefix).unwrap_or_else(|| {
        panic!("{name}: the error does not point at line {line} as `{prefix}COL:`: {err}")
    });
    let rest = &err[at + prefix.len()..];
    let col: usize = rest
        .split(':')
        .next()
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{name}: no `:COL:` after `{prefix}`: {err}"));
    let line_len = text.lines().nth(line - 1).unwrap().len();
    assert!(
        (1..=line_len + 1).contains(&col),
        "{name}: column {col} is outside line {line} ({line_len} chars): {err}"
    );
    assert!(
        rest.contains(key),
        "{name}: the message does not name the key `{key}`: {err}"
    );
    eprintln!("{name}: {err}");
}

#[test]
fn a_valid_config_passes_check() {
    let s = Scratch::new();
    let path = write(&s, "valid.yaml", &valid(&s));
    let out = check(&path);
    assert!(
        out.status.success(),
        "check of a valid config failed ({:?}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn config_example_at_the_repo_root_passes_check() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config.example.yaml");
    assert!(
        example.is_file(),
        "config.example.yaml is missing at the repository root ({})",
        example.display()
    );
    let out = check(&example);
    assert!(
        out.status.success(),
        "`sidekick check -c config.example.yaml` failed ({:?}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn unknown_keys_are_named_with_their_position() {
    let s = Scratch::new();
    assert_rejected(
        &s,
        "unknown-top.yaml",
        2,
        "shutdown_timeot: 10s",
        "shutdown_timeot",
    );
    assert_rejected(
        &s,
        "unknown-nested.yaml",
        13,
        "  max_recrods: 8192",
        "max_recrods",
    );
    assert_rejected(
        &s,
        "unknown-output.yaml",
        19,
        "    compresion: gzip",
        "compresion",
    );
}

#[test]
fn wrong_types_are_named_with_their_position() {
    let s = Scratch::new();
    assert_rejected(
        &s,
        "wrong-type.yaml",
        13,
        "  max_records: lots",
        "max_records",
    );
    assert_rejected(
        &s,
        "wrong-type-list.yaml",
        21,
        "    max_in_flight: [4]",
        "max_in_flight",
    );
}

#[test]
fn bad_durations_are_named_with_their_position() {
    let s = Scratch::new();
    assert_rejected(
        &s,
        "bad-duration.yaml",
        15,
        "  timeout: 5 parsecs",
        "timeout",
    );
    assert_rejected(
        &s,
        "bad-shutdown.yaml",
        2,
        "shutdown_timeout: soon",
        "shutdown_timeout",
    );
}

#[test]
fn bad_sizes_are_named_with_their_position() {
    let s = Scratch::new();
    assert_rejected(
        &s,
        "bad-size.yaml",
        10,
        "    max_line_bytes: 1MiBB",
        "max_line_bytes",
    );
    assert_rejected(
        &s,
        "bad-batch-size.yaml",
        14,
        "  max_bytes: four megs",
        "max_bytes",
    );
}

#[test]
fn a_missing_config_file_is_one_line_naming_it() {
    let s = Scratch::new();
    let path = s.path().join("no-such-config.yaml");
    let err = one_error_line(&check(&path), "missing file");
    assert!(
        err.contains("no-such-config.yaml") && err.contains("cannot read"),
        "the error should name the file and say it cannot be read: {err}"
    );
}

#[test]
fn run_refuses_a_bad_config_with_exit_2() {
    let s = Scratch::new();
    let path = write(&s, "bad-run.yaml", &broken(&s, 13, "  max_recrods: 8192"));
    let out = sidekick(&["run", "-c", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "`sidekick run -c bad.yaml` should exit 2; got {:?}, stderr:\n{stderr}",
        out.status
    );
    assert!(
        stderr.contains("bad-run.yaml:13:") && stderr.contains("max_recrods"),
        "`run` should report the same FILE:LINE:COL error as `check`:\n{stderr}"
    );
}
