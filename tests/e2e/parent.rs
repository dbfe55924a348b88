//! The parent end to end (issue 4, "What it must show"): real child
//! processes attached by PID, launched in wrapper mode, found by name,
//! killed, restarted, OOM-killed in a cgroup of their own, or seen only
//! through a heartbeat file; a real `sidekick run` watches them and ships
//! its events and metrics over real HTTP to a real `sidekick receive`.
//!
//! The figures sidekick ships are compared with `/proc` read by the test
//! itself, while the child sleeps so that both readings are of the same
//! state.

use serde_json::{Map, Value};
use sidekick_e2e::{
    python, python3, seq_of, serial, unix_nanos, wait_until, Agent, Proc, Receiver, Record, Scratch,
};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

const MIB: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------
// Helpers (small additions to the harness, kept here)
// ---------------------------------------------------------------------------

/// What a test's config says beyond the common parts.
#[derive(Default)]
struct Setup<'a> {
    /// Lines under `target:` (each indented two spaces), none: no target.
    target: &'a [String],
    /// `metrics.interval`.
    interval: &'a str,
    /// The one log source (`start_at: beginning`), if any.
    log: Option<&'a Path>,
}

/// Writes the config of `setup` to `dir` and returns its path. Always
/// `telemetry.listen: "off"`, a 1 s batch timeout (the default) and the
/// receiver as the one output.
fn write_config(s: &Scratch, receiver: &Receiver, setup: &Setup<'_>) -> PathBuf {
    let q = |v: &str| Value::String(v.to_owned()).to_string();
    let mut y = String::new();
    let _ = writeln!(y, "data_dir: {}", q(s.data.to_str().expect("UTF-8 path")));
    let _ = writeln!(y, "shutdown_timeout: 10s");
    let _ = writeln!(y, "resource:\n  service.name: sidekick-e2e-parent");
    let _ = writeln!(y, "telemetry:\n  listen: \"off\"");
    if !setup.target.is_empty() {
        let _ = writeln!(y, "target:");
        for line in setup.target {
            let _ = writeln!(y, "  {line}");
        }
    }
    let interval = if setup.interval.is_empty() {
        "500ms"
    } else {
        setup.interval
    };
    let _ = writeln!(
        y,
        "metrics:\n  interval: {interval}\n  process: true\n  include_children: false\n  \
         cgroup: true\n  host: false"
    );
    if let Some(log) = setup.log {
        let _ = writeln!(
            y,
            "logs:\n  - include: [{}]\n    start_at: beginning\n    scan_interval: 200ms",
            q(log.to_str().expect("UTF-8 path"))
        );
    }
    let _ = writeln!(y, "batch:\n  timeout: 1s");
    let _ = writeln!(
        y,
        "outputs:\n  - type: otlp_http\n    endpoint: {}\n    compression: gzip",
        q(receiver.endpoint())
    );
    let path = (0..)
        .map(|n| s.path().join(format!("parent-{n}.yaml")))
        .find(|p| !p.exists())
        .expect("a free config name");
    std::fs::write(&path, y).expect("write the config");
    path
}

/// `sidekick run -c CONFIG EXTRA...`.
fn start_agent(s: &Scratch, config: &Path, extra: &[&str]) -> Agent {
    let mut args = vec!["run", "-c", config.to_str().expect("UTF-8 path")];
    args.extend_from_slice(extra);
    Agent::start_args(&args, s.path())
}

/// A YAML string scalar.
fn yq(v: &str) -> String {
    Value::String(v.to_owned()).to_string()
}

/// The `event.name` of a record, if it is an event.
fn event_name(r: &Record) -> Option<&str> {
    r.attributes.get("event.name").and_then(Value::as_str)
}

fn attr_i64(r: &Record, key: &str) -> Option<i64> {
    r.attributes.get(key).and_then(Value::as_i64)
}

fn attr_str<'a>(r: &'a Record, key: &str) -> Option<&'a str> {
    r.attributes.get(key).and_then(Value::as_str)
}

/// Every event seen so far, one per line, for failure messages.
fn events_summary(receiver: &Receiver) -> String {
    receiver
        .logs()
        .iter()
        .filter(|r| event_name(r).is_some())
        .map(|r| format!("{} {:?}", r.body, r.attributes))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits for the first event named `name` that satisfies `pred`.
fn wait_for_event(
    receiver: &Receiver,
    name: &str,
    timeout: Duration,
    pred: impl Fn(&Record) -> bool,
) -> Record {
    let mut found = None;
    wait_until(
        timeout,
        &format!("a `{name}` event at the receiver"),
        || {
            found = receiver
                .logs()
                .into_iter()
                .find(|r| event_name(r) == Some(name) && pred(r));
            found.is_some()
        },
        || format!("events so far:\n{}", events_summary(receiver)),
    );
    found.expect("found")
}

fn p_name(p: &Map<String, Value>) -> &str {
    p.get("name").and_then(Value::as_str).unwrap_or_default()
}

fn p_time(p: &Map<String, Value>) -> u64 {
    p.get("time_unix_nano")
        .and_then(Value::as_u64)
        .unwrap_or_default()
}

fn p_f64(p: &Map<String, Value>) -> f64 {
    p.get("value").and_then(Value::as_f64).unwrap_or(f64::NAN)
}

fn p_attr<'a>(p: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    p.get("attributes").and_then(|a| a.get(key))
}

fn p_resource<'a>(p: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    p.get("resource").and_then(|a| a.get(key))
}

/// The names of the metrics seen so far, for failure messages.
fn metric_names(receiver: &Receiver) -> String {
    let names: BTreeSet<String> = receiver
        .metric_points()
        .iter()
        .map(|p| p_name(p).to_owned())
        .collect();
    format!(
        "{} points; names: {names:?}",
        receiver.metric_points().len()
    )
}

/// Clock ticks per second, as `getconf CLK_TCK` says.
fn clk_tck() -> f64 {
    let out = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("run getconf CLK_TCK");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("CLK_TCK is a number")
}

/// utime + stime of `pid` in seconds, from `/proc/PID/stat`.
fn proc_cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command (which may hold spaces and parentheses):
    // state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').expect("a stat line") + 1..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    ticks as f64 / clk_tck()
}

/// `VmRSS` of `pid` in bytes, from `/proc/PID/status`.
fn proc_rss_bytes(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line");
    kib * 1024
}

/// The state of `pid` as `/proc/PID/stat` shows it, for failure messages.
fn proc_state(pid: u32) -> String {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => format!(
            "process {pid} is in state {}",
            stat.rsplit(')')
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .next()
                .unwrap_or("?")
        ),
        Err(e) => format!("process {pid} is gone ({e})"),
    }
}

/// A marker unique to this test run, for command lines and file contents.
fn marker(what: &str) -> String {
    format!(
        "sidekick-e2e-{what}-{}-{}",
        std::process::id(),
        unix_nanos()
    )
}

/// Waits up to `timeout` for the agent to exit by itself; panics otherwise.
fn wait_exit(agent: &mut Agent, timeout: Duration, what: &str) -> ExitStatus {
    agent.wait(timeout).unwrap_or_else(|| {
        panic!(
            "sidekick did not exit within {timeout:?} {what}; its stderr:\n{}",
            agent.stderr()
        )
    })
}

// ---------------------------------------------------------------------------
// Process metrics agree with /proc
// ---------------------------------------------------------------------------

/// A child that burns 2 s of CPU and holds 100 MiB: the `process.cpu.time`
/// (user + system) and `process.memory.usage` sidekick ships agree with
/// `/proc/N/stat` and `/proc/N/status` read by the test while the child
/// sleeps after its burn.
#[test]
fn cpu_time_and_rss_agree_with_proc() {
    let _serial = serial();
    let s = Scratch::new();
    let receiver = Receiver::start();
    let burned = s.path().join("burned");
    // Touches every page of 100 MiB (a zeroed bytearray is not resident until
    // written), burns until it has used 2 s of CPU (bounded by 30 s of wall
    // time on a busy machine), says so, then sleeps without using any CPU.
    let code = "import sys, time\n\
                b = bytearray(100 * 1024 * 1024)\n\
                for i in range(0, len(b), 4096):\n    b[i] = 1\n\
                deadline = time.time() + 30\n\
                while time.process_time() < 2.0 and time.time() < deadline:\n    pass\n\
                open(sys.argv[1], 'w').write('done')\n\
                time.sleep(300)\n";
    let mut child = Proc::spawn(&mut python(code, &[burned.to_str().expect("UTF-8 path")]));
    let pid = child.pid();
    let target = [format!("pid: {pid}")];
    let cfg = write_config(
        &s,
        &receiver,
        &Setup {
            target: &target,
            interval: "500ms",
            log: None,
        },
    );
    let mut agent = start_agent(&s, &cfg, &[]);
    wait_for_event(&receiver, "process.start", Duration::from_secs(15), |r| {
        attr_i64(r, "process.pid") == Some(i64::from(pid))
    });
    wait_until(
        Duration::from_secs(40),
        "the child to finish its 2 s CPU burn",
        || burned.exists(),
        || proc_state(pid),
    );
    // The child is asleep from here on: its figures no longer change.
    std::thread::sleep(Duration::from_millis(200));
    let read_at = unix_nanos();
    let cpu = proc_cpu_secs(pid);
    let rss = proc_rss_bytes(pid);
    eprintln!("/proc/{pid}: utime+stime {cpu:.3} s, VmRSS {rss} bytes");
    assert!(cpu >= 1.9, "the child burned only {cpu} s of CPU");
    assert!(rss >= 100 * MIB, "the child holds only {rss} bytes");

    // The first sample sidekick took after the test's reading (both are of
    // the sleeping child).
    let mut shipped: Option<(f64, f64, Map<String, Value>)> = None;
    wait_until(
        Duration::from_secs(10),
        "process.cpu.time (user and system) and process.memory.usage sampled after the test read /proc",
        || {
            let points = receiver.metric_points();
            let Some(t) = points
                .iter()
                .filter(|p| p_name(p) == "process.cpu.time" && p_time(p) >= read_at)
                .map(p_time)
                .min()
            else {
                return false;
            };
            let at_t = |mode: &str| {
                points.iter().find(|p| {
                    p_name(p) == "process.cpu.time"
                        && p_time(p) == t
                        && p_attr(p, "cpu.mode").and_then(Value::as_str) == Some(mode)
                })
            };
            let mem = points
                .iter()
                .find(|p| p_name(p) == "process.memory.usage" && p_time(p) == t);
            match (at_t("user"), at_t("system"), mem) {
                (Some(u), Some(sys), Some(m)) => {
                    shipped = Some((p_f64(u) + p_f64(sys), p_f64(m), m.clone()));
                    true
                }
                _ => false,
            }
        },
        || metric_names(&receiver),
    );
    let (shipped_cpu, shipped_rss, mem_point) = shipped.expect("found");
    eprintln!(
        "shipped: process.cpu.time user+system {shipped_cpu:.3} s, process.memory.usage \
         {shipped_rss} bytes"
    );
    // The child sleeps in one syscall between both readings, so they should
    // be equal; 0.05 s (5 ticks at 100 Hz) covers rounding and a wake-up.
    assert!(
        (shipped_cpu - cpu).abs() <= 0.05,
        "process.cpu.time {shipped_cpu} s vs /proc/{pid}/stat utime+stime {cpu} s"
    );
    // RSS of a sleeping process is stable; 2 MiB covers the interpreter's
    // own page-ins between the readings.
    assert!(
        (shipped_rss - rss as f64).abs() <= (2 * MIB) as f64,
        "process.memory.usage {shipped_rss} vs /proc/{pid}/status VmRSS {rss}"
    );
    assert_eq!(
        mem_point.get("unit").and_then(Value::as_str),
        Some("By"),
        "unit of process.memory.usage: {mem_point:?}"
    );
    // Attached: the target's exit ends sidekick with status 0.
    child.kill9();
    let status = wait_exit(
        &mut agent,
        Duration::from_secs(15),
        "after its target was killed",
    );
    assert_eq!(
        status.code(),
        Some(0),
        "exit status of an attached sidekick"
    );
}

// ---------------------------------------------------------------------------
// Wrapper mode: last words, crash context, the child's exit status
// ---------------------------------------------------------------------------

/// `sidekick run -c cfg -- sh -c 'echo last words >> app.log; exit 3'`: the
/// line is at the receiver, the `process.exit` event says 3 and carries it
/// as crash context, and sidekick exits 3.
#[test]
fn wrapper_ships_last_words_and_exits_with_the_childs_code() {
    let _serial = serial();
    let s = Scratch::new();
    let receiver = Receiver::start();
    let log = s.log("app.log");
    let cfg = write_config(
        &s,
        &receiver,
        &Setup {
            log: Some(&log),
            ..Setup::default()
        },
    );
    let script = format!("echo last words >> {}; exit 3", log.display());
    let mut agent = start_agent(&s, &cfg, &["--", "sh", "-c", &script]);
    let started = Instant::now();
    let status = wait_exit(
        &mut agent,
        Duration::from_secs(20),
        "after its child exited 3",
    );
    eprintln!("sidekick exited {status:?} after {:?}", started.elapsed());
    assert_eq!(status.code(), Some(3), "sidekick's exit status");

    // sidekick exited after its batches were acknowledged: they are written.
    let records = receiver.logs();
    let line = records
        .iter()
        .find(|r| r.body == "last words")
        .unwrap_or_else(|| panic!("`last words` not at the receiver; records: {records:#?}"));
    assert_eq!(line.file_path.as_deref(), log.to_str(), "{line:?}");
    let exit = wait_for_event(&receiver, "process.exit", Duration::from_secs(2), |_| true);
    assert_eq!(
        attr_i64(&exit, "process.exit.code"),
        Some(3),
        "the exit event: {exit:?}"
    );
    let last_lines = attr_str(&exit, "process.crash.last_lines").unwrap_or_default();
    assert!(
        last_lines.contains("last words"),
        "process.crash.last_lines of the exit event: {last_lines:?} ({exit:?})"
    );
    assert!(
        exit.attributes.contains_key("process.uptime"),
        "process.uptime in the exit event: {exit:?}"
    );
}

/// A child killed by SIGKILL: sidekick exits 128 + 9 and the exit event
/// names the signal.
#[test]
fn wrapper_exits_128_plus_the_signal_that_killed_the_child() {
    let _serial = serial();
    let s = Scratch::new();
    let receiver = Receiver::start();
    let cfg = write_config(&s, &receiver, &Setup::default());
    let mut agent = start_agent(&s, &cfg, &["--", "sh", "-c", "kill -9 $$"]);
    let status = wait_exit(
        &mut agent,
        Duration::from_secs(20),
        "after its child was killed",
    );
    assert_eq!(status.code(), Some(128 + 9), "sidekick's exit status");
    let exit = wait_for_event(&receiver, "process.exit", Duration::from_secs(2), |_| true);
    assert_eq!(
        attr_i64(&exit, "process.exit.signal"),
        Some(9),
        "the exit event: {exit:?}"
    );
}

// ---------------------------------------------------------------------------
// Attach by PID, kill -9
// ---------------------------------------------------------------------------

/// A target that writes a numbered line (`seq=NNNNNNNNNN`) to `log` every
/// 20 ms, flushed at each newline, the file held open for writing; `tag` is
/// its last argument.
fn spawn_log_writer(log: &Path, tag: &str) -> Proc {
    let code = "import sys, time\n\
                f = open(sys.argv[1], 'a', buffering=1)\n\
                i = 0\n\
                while True:\n    f.write('seq=%010d attached\\n' % i)\n    i += 1\n    time.sleep(0.02)\n";
    Proc::spawn(&mut python(code, &[log.to_str().expect("UTF-8 path"), tag]))
}

/// Attached with `--pid` (no log source: the file the process writes is
/// found by sidekick), the target is killed with SIGKILL: the exit event
/// arrives, sidekick exits 0 within 1 s plus the drain, and every line the
/// target wrote while sidekick tailed it arrived.
#[test]
fn attach_kill_9_ships_the_exit_and_the_last_lines_then_exits() {
    let _serial = serial();
    let s = Scratch::new();
    let receiver = Receiver::start();
    let log = s.log("attached.log");
    let mut child = spawn_log_writer(&log, "attached");
    let pid = child.pid();
    wait_until(
        Duration::from_secs(10),
        "the target to write its log",
        || std::fs::metadata(&log).is_ok_and(|m| m.len() > 0),
        || proc_state(pid),
    );
    let cfg = write_config(&s, &receiver, &Setup::default());
    let pid_arg = pid.to_string();
    let mut agent = start_agent(&s, &cfg, &["--pid", &pid_arg]);
    wait_for_event(&receiver, "process.start", Duration::from_secs(15), |r| {
        attr_i64(r, "process.pid") == Some(i64::from(pid))
    });
    // Tailing has begun once lines arrive; let a few more batches through.
    wait_until(
        Duration::from_secs(15),
        "lines of the auto-discovered log at the receiver",
        || {
            receiver
                .logs()
                .iter()
                .any(|r| r.file_path.as_deref() == log.to_str())
        },
        || agent.stderr(),
    );
    std::thread::sleep(Duration::from_millis(500));

    let killed = Instant::now();
    child.kill9();
    let status = wait_exit(
        &mut agent,
        Duration::from_secs(15),
        "after its target was killed",
    );
    let took = killed.elapsed();
    eprintln!("sidekick exited {status:?} {took:?} after kill -9 of its target");
    assert_eq!(
        status.code(),
        Some(0),
        "exit status of an attached sidekick"
    );
    // 1 s to notice and catch up, the batch timeout (1 s), 1 s of slack.
    assert!(
        took < Duration::from_secs(3),
        "sidekick took {took:?} from the target's kill -9 to its own exit"
    );

    let exit = wait_for_event(&receiver, "process.exit", Duration::from_secs(2), |r| {
        attr_i64(r, "process.pid") == Some(i64::from(pid))
    });
    eprintln!("exit event: {}", exit.body);
    assert!(
        exit.attributes.contains_key("process.uptime"),
        "process.uptime in the exit event: {exit:?}"
    );

    // Every line from the first one shipped (the source starts at the end of
    // the file) to the last one written before the kill arrived.
    let written = std::fs::read_to_string(&log).expect("read the target's log");
    let last_line = written.lines().last().expect("the target wrote lines");
    let last_written = seq_of(last_line).expect("a numbered line");
    // Not a clean exit (killed, or an unknown code): crash context, caught
    // up to the target's very last line before the event was made.
    let last_lines = attr_str(&exit, "process.crash.last_lines").unwrap_or_default();
    assert_eq!(
        last_lines.lines().last(),
        Some(last_line),
        "the last of process.crash.last_lines is not the last line the target wrote \
         ({last_lines:?})"
    );
    let last_sample = attr_str(&exit, "process.crash.last_sample").unwrap_or_default();
    assert!(
        last_sample.contains("process.memory.usage"),
        "process.crash.last_sample: {last_sample:?}"
    );

    let records = receiver.logs();
    let got: BTreeSet<u64> = records
        .iter()
        .filter(|r| r.file_path.as_deref() == log.to_str())
        .filter_map(|r| seq_of(&r.body))
        .collect();
    let first = *got.first().expect("lines arrived");
    let missing: Vec<u64> = (first..=last_written)
        .filter(|n| !got.contains(n))
        .collect();
    eprintln!(
        "lines shipped: seq {first}..={last_written}, {} distinct, missing {}",
        got.len(),
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "lines written before the kill missing at the receiver (first {:?} of {}), last written \
         {last_written}",
        missing.first(),
        missing.len()
    );
}

/// The resource of what sidekick ships about an attached target, its
/// metrics and the lines of its log alike, names it: `process.pid`,
/// `process.parent_pid`, `process.executable.name`, `process.command_line`
/// (so logs and metrics correlate).
#[test]
fn resource_names_the_target_on_its_metrics_and_logs() {
    let _serial = serial();
    let s = Scratch::new();
    let receiver = Receiver::start();
    let log = s.log("resource.log");
    let tag = marker("resource");
    let mut child = spawn_log_writer(&log, &tag);
    let pid = child.pid();
    wait_until(
        Duration::from_secs(10),
        "the target to write its log",
        || std::fs::metadata(&log).is_ok_and(|m| m.len() > 0),
        || proc_state(pid),
    );
    let cfg = write_config(&s, &receiver, &Setup::default());
    let pid_arg = pid.to_string();
    let mut agent = start_agent(&s, &cfg, &["--pid", &pid_arg]);
    let mut found: Option<(Map<String, Value>, Record)> = None;
    wait_until(
        Duration::from_secs(15),
        "a process.memory.usage point and a line of the target's log",
        || {
            let mem = receiver
                .metric_points()
                .into_iter()
                .find(|p| p_name(p) == "process.memory.usage");
            let line = receiver
                .logs()
                .into_iter()
                .find(|r| r.file_path.as_deref() == log.to_str());
            match (mem, line) {
                (Some(m), Some(l)) => {
                    found = Some((m, l));
                    true
                }
                _ => false,
            }
        },
        || metric_names(&receiver),
    );
    let (mem, line) = found.expect("found");
    child.kill9();
    let status = wait_exit(
        &mut agent,
        Duration::from_secs(15),
        "after its target was killed",
    );
    assert_eq!(
        status.code(),
        Some(0),
        "exit status of an attached sidekick"
    );

    let metric_resource = mem
        .get("resource")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (what, resource) in [
        ("metrics", &metric_resource),
        ("log records", &*line.resource),
    ] {
        let int = |k: &str| resource.get(k).and_then(Value::as_i64);
        let text = |k: &str| resource.get(k).and_then(Value::as_str).unwrap_or_default();
        assert_eq!(
            int("process.pid"),
            Some(i64::from(pid)),
            "process.pid in the resource of the target's {what}: {resource:?}"
        );
        assert_eq!(
            int("process.parent_pid"),
            Some(i64::from(std::process::id())),
            "process.parent_pid in the resource of the target's {what}: {resource:?}"
        );
        assert!(
            text("process.executable.name").starts_with("python"),
            "process.executable.name in the resource of the target's {what}: {resource:?}"
        );
        assert!(
            text("process.command_line").contains(&tag),
            "process.command_line in the resource of the target's {what}: {resource:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// process_name: restart under a new PID
// ---------------------------------------------------------------------------

/// `process_name` mode: the target is killed and a new instance starts
/// under a new PID: a `process.restart` event with the new PID, the
/// previous PID and a count of 1 arrives, then metrics of the new process:
/// its uptime starts again from zero and its memory is the new instance's
/// (it holds 64 MiB, the first held next to nothing).
#[test]
fn process_name_follows_a_restart_under_a_new_pid() {
    let _serial = serial();
    let s = Scratch::new();
    let receiver = Receiver::start();
    let name = marker("restart-target");
    let first_code = "import time\ntime.sleep(300)\n";
    let second_code = "import time\n\
                       b = b'x' * (64 * 1024 * 1024)\n\
                       time.sleep(300)\n";
    let mut first = Proc::spawn(&mut python(first_code, &[&name]));
    let first_pid = first.pid();
    let target = [format!("process_name: {}", yq(&name))];
    let cfg = write_config(
        &s,
        &receiver,
        &Setup {
            target: &target,
            interval: "500ms",
            log: None,
        },
    );
    let mut agent = start_agent(&s, &cfg, &[]);
    wait_for_event(&receiver, "process.start", Duration::from_secs(15), |r| {
        attr_i64(r, "process.pid") == Some(i64::from(first_pid))
    });
    // The first instance runs ≥ 1.5 s, so its uptime and the new one's
    // cannot be mistaken for each other.
    wait_until(
        Duration::from_secs(15),
        "process.uptime ≥ 1.5 s of the first instance",
        || {
            receiver
                .metric_points()
                .iter()
                .any(|p| p_name(p) == "process.uptime" && p_f64(p) >= 1.5)
        },
        || metric_names(&receiver),
    );

    first.kill9();
    let second = Proc::spawn(&mut python(second_code, &[&name]));
    let second_pid = second.pid();
    let second_started = unix_nanos();
    eprintln!("first instance {first_pid} killed, second started as {second_pid}");
    let restart = wait_for_event(
        &receiver,
        "process.restart",
        Duration::from_secs(10),
        |_| true,
    );
    eprintln!("restart event: {}", restart.body);
    assert_eq!(
        attr_i64(&restart, "process.pid"),
        Some(i64::from(second_pid)),
        "{restart:?}"
    );
    assert_eq!(
        attr_i64(&restart, "process.restart.count"),
        Some(1),
        "{restart:?}"
    );
    assert_eq!(
        attr_i64(&restart, "process.restart.previous_pid"),
        Some(i64::from(first_pid)),
        "{restart:?}"
    );
    wait_for_event(&receiver, "process.exit", Duration::from_secs(2), |r| {
        attr_i64(r, "process.pid") == Some(i64::from(first_pid))
    });

    // Metrics sampled after the restart are the new process's.
    let after = restart.time_unix_nano.max(second_started);
    let mut seen: Option<(f64, f64, Map<String, Value>)> = None;
    wait_until(
        Duration::from_secs(10),
        "process.uptime and process.memory.usage ≥ 60 MiB of the new instance",
        || {
            let points = receiver.metric_points();
            let newer = |name: &str| {
                points
                    .iter()
                    .filter(|p| p_name(p) == name && p_time(p) > after)
                    .collect::<Vec<_>>()
            };
            let uptimes = newer("process.uptime");
            let mem = newer("process.memory.usage")
                .into_iter()
                .find(|p| p_f64(p) >= (60 * MIB) as f64);
            match (uptimes.first(), mem) {
                (Some(u), Some(m)) => {
                    let age = (p_time(u).saturating_sub(second_started)) as f64 / 1e9;
                    seen = Some((p_f64(u), age, m.clone()));
                    true
                }
                _ => false,
            }
        },
        || metric_names(&receiver),
    );
    let (uptime, age, mem) = seen.expect("found");
    eprintln!("first uptime after the restart: {uptime:.3} s (new instance {age:.3} s old)");
    // Its uptime is the new process's age (0.5 s of slack for process
    // start-up and tick rounding), not the first instance's ≥ 1.5 s.
    assert!(
        uptime <= age + 0.5,
        "process.uptime {uptime} s after the restart, the new instance is {age} s old"
    );
    if let Some(p) = p_resource(&mem, "process.pid") {
        assert_eq!(
            p.as_i64(),
            Some(i64::from(second_pid)),
            "the resource of the new instance's metrics names the old PID: {mem:?}"
        );
    }
    drop(second);
    let _ = agent.term(Duration::from_secs(15));
}

// ---------------------------------------------------------------------------
// cgroup OOM kill
// ---------------------------------------------------------------------------

/// A memory cgroup created for one test, removed when dropped.
struct TestCgroup {
    dir: PathBuf,
    /// `cgroup.procs` (v1 and v2).
    procs: PathBuf,
}

impl TestCgroup {
    /// Creates a cgroup limited to `limit` bytes (no swap), or says why it
    /// cannot.
    fn create(name: &str, limit: u64) -> Result<Self, String> {
        let root = Path::new("/sys/fs/cgroup");
        if root.join("cgroup.controllers").exists() {
            // cgroup v2: a child of the root, the memory controller enabled
            // for the root's children.
            let controllers = std::fs::read_to_string(root.join("cgroup.subtree_control"))
                .map_err(|e| format!("cannot read /sys/fs/cgroup/cgroup.subtree_control: {e}"))?;
            if !controllers.split_whitespace().any(|c| c == "memory") {
                std::fs::write(root.join("cgroup.subtree_control"), "+memory").map_err(|e| {
                    format!("cannot enable the memory controller in /sys/fs/cgroup: {e}")
                })?;
            }
            let dir = root.join(name);
            std::fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
            let cg = Self {
                procs: dir.join("cgroup.procs"),
                dir,
            };
            std::fs::write(cg.dir.join("memory.max"), limit.to_string())
                .map_err(|e| format!("write memory.max: {e}"))?;
            if cg.dir.join("memory.swap.max").exists() {
                std::fs::write(cg.dir.join("memory.swap.max"), "0")
                    .map_err(|e| format!("write memory.swap.max: {e}"))?;
            }
            return Ok(cg);
        }
        // cgroup v1: under this process's own memory cgroup where it is
        // visible, else under the hierarchy's root.
        let mount = root.join("memory");
        if !mount.join("memory.limit_in_bytes").exists() {
            return Err("neither cgroup v2 nor a v1 memory hierarchy under /sys/fs/cgroup".into());
        }
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, ctrl, path) = (f.next()?, f.next()?, f.next()?);
                ctrl.split(',')
                    .any(|c| c == "memory")
                    .then(|| path.trim_start_matches('/').to_owned())
            })
            .unwrap_or_default();
        let mut errors = Vec::new();
        for parent in [mount.join(&own), mount.clone()] {
            if !parent.is_dir() {
                continue;
            }
            let dir = parent.join(name);
            match std::fs::create_dir(&dir) {
                Ok(()) => {
                    let cg = Self {
                        procs: dir.join("cgroup.procs"),
                        dir,
                    };
                    std::fs::write(cg.dir.join("memory.limit_in_bytes"), limit.to_string())
                        .map_err(|e| format!("write memory.limit_in_bytes: {e}"))?;
                    // memsw (memory + swap) no higher than memory: no swapping.
                    if cg.dir.join("memory.memsw.limit_in_bytes").exists() {
                        std::fs::write(
                            cg.dir.join("memory.memsw.limit_in_bytes"),
                            limit.to_string(),
                        )
                        .map_err(|e| format!("write memory.memsw.limit_in_bytes: {e}"))?;
                    }
                    return Ok(cg);
                }
                Err(e) => errors.push(format!("mkdir {}: {e}", dir.display())),
            }
        }
        Err(errors.join("; "))
    }

    fn path(&self) -> &Path {
        &self.dir
    }

    /// Whether process `pid` is in this cgroup.
    fn holds(&self, pid: u32) -> bool {
        std::fs::read_to_string(&self.procs)
            .unwrap_or_default()
            .lines()
            .any(|l| l.trim() == pid.to_string())
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // The killed processes may take a moment to leave it.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(e) if Instant::now() >= deadline => {
                    eprintln!("cannot remove the cgroup {}: {e}", self.dir.display());
                    return;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

/// A target in a cgroup with a 50 MiB memory limit allocates 200 MiB: it is
/// OOM-killed and a `process.oom_kill` event (or a `process.exit` with
/// `process.oom_killed: true`) arrives. Where the test may not create a
/// cgroup it says `SKIPPED` and why.
#[test]
fn cgroup_oom_kill_is_reported() {
    let _serial = serial();
    let name = marker("oom");
    let cg =
        match TestCgroup::create(&name, 50 * MIB) {
            Ok(cg) => cg,
            Err(reason) => {
                let ci = std::env::var_os("CI").is_some();
                eprintln!(
                "SKIPPED: cgroup_oom_kill_is_reported: cannot create a memory cgroup: {reason}{}",
                if ci { " (CI is set: this runner cannot test OOM kills)" } else { "" }
            );
                return;
            }
        };
    eprintln!("cgroup {}", cg.path().display());
    let s = Scratch::new();
    let receiver = Receiver::start();
    let go = s.path().join("go");
    // Joins the cgroup, waits for the go file (sidekick is attached by
    // then), then becomes a process that allocates 200 MiB.
    let script = format!(
        "echo $$ > {procs} || exit 90\n\
         i=0; while [ ! -e {go} ]; do i=$((i+1)); [ $i -gt 600 ] && exit 91; sleep 0.05; done\n\
         exec {python} -c \"import time; b = b'x' * (200 * 1024 * 1024); time.sleep(30)\"\n",
        python = python3().display(),
        procs = cg.procs.display(),
        go = go.display()
    );
    let mut child = Proc::spawn(Command::new("sh").arg("-c").arg(&script));
    let pid = child.pid();
    wait_until(
        Duration::from_secs(10),
        "the target to join its cgroup",
        || cg.holds(pid),
        || proc_state(pid),
    );
    let cfg = write_config(&s, &receiver, &Setup::default());
    let pid_arg = pid.to_string();
    let mut agent = start_agent(&s, &cfg, &["--pid", &pid_arg]);
    wait_for_event(&receiver, "process.start", Duration::from_secs(15), |r| {
        attr_i64(r, "process.pid") == Some(i64::from(pid))
    });
    std::fs::write(&go, "go").expect("write the go file");
    let status = child
        .wait(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("the target was not OOM-killed within 30 s"));
    eprintln!("the target ended: {status:?}");
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(
        status.signal(),
        Some(9),
        "the target should have been killed by the OOM killer (SIGKILL): {status:?}"
    );

    let mut found = None;
    wait_until(
        Duration::from_secs(10),
        "a process.oom_kill event, or a process.exit with process.oom_killed: true",
        || {
            found = receiver.logs().into_iter().find(|r| {
                event_name(r) == Some("process.oom_kill")
                    || (event_name(r) == Some("process.exit")
                        && r.attributes.get("process.oom_killed") == Some(&Value::Bool(true)))
            });
            found.is_some()
        },
        || format!("events so far:\n{}", events_summary(&receiver)),
    );
    let event = found.expect("found");
    eprintln!("{}: {}", event_name(&event).unwrap_or_default(), event.body);
    let status = wait_exit(
        &mut agent,
        Duration::from_secs(15),
        "after its target was OOM-killed",
    );
    assert_eq!(
        status.code(),
        Some(0),
        "exit status of an attached sidekick"
    );
}

/// Another process in the target's cgroup is OOM-killed while the target
/// lives: a `process.oom_kill` event is emitted within 2 s of the kill.
/// The watcher sleeps on the cgroup's OOM notifier; a watcher reading the
/// counter on its 5 s timer instead would miss that bound most of the time.
#[test]
fn a_sibling_oom_kill_is_reported_while_the_target_lives() {
    let _serial = serial();
    let name = marker("oomsib");
    let cg = match TestCgroup::create(&name, 50 * MIB) {
        Ok(cg) => cg,
        Err(reason) => {
            eprintln!("SKIPPED: a_sibling_oom_kill_is_reported_while_the_target_lives: cannot create a memory cgroup: {reason}");
            return;
        }
    };
    let s = Scratch::new();
    let receiver = Receiver::start();
    let join = |then: &str| {
        format!(
            "echo $$ > {procs} || exit 90\nexec {then}\n",
            procs = cg.procs.display()
        )
    };
    let mut target = Proc::spawn(Command::new("sh").arg("-c").arg(join("sleep 60")));
    let pid = target.pid();
    wait_until(
        Duration::from_secs(10),
        "the target to join its cgroup",
        || cg.holds(pid),
        || proc_state(pid),
    );
    let cfg = write_config(&s, &receiver, &Setup::default());
    let pid_arg = pid.to_string();
    let mut agent = start_agent(&s, &cfg, &["--pid", &pid_arg]);
    wait_for_event(&receiver, "process.start", Duration::from_secs(15), |r| {
        attr_i64(r, "process.pid") == Some(i64::from(pid))
    });
    // The watcher arms its notifier right after the start event.
    std::thread::sleep(Duration::from_millis(300));
    let hog = format!(
        "{} -c \"import time; b = b'x' * (200 * 1024 * 1024); time.sleep(30)\"",
        python3().display()
    );
    let mut sibling = Proc::spawn(Command::new("sh").arg("-c").arg(join(&hog)));
    let status = sibling
        .wait(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("the sibling was not OOM-killed within 30 s"));
    let killed_at = unix_nanos();
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(
        status.signal(),
        Some(9),
        "the sibling should have been OOM-killed: {status:?}"
    );
    let event = wait_for_event(
        &receiver,
        "process.oom_kill",
        Duration::from_secs(15),
        |_| true,
    );
    eprintln!("{}", event.body);
    let late_ms = (event.time_unix_nano as i64 - killed_at as i64) / 1_000_000;
    eprintln!("reported {late_ms} ms after the test saw the kill");
    assert!(
        late_ms < 2_000,
        "the OOM kill was reported {late_ms} ms after the test saw it (the bound is 2,000 ms)"
    );
    assert!(
        target.wait(Duration::ZERO).is_none(),
        "the target should live on: only its sibling was over the limit"
    );
    target.kill9();
    let status = wait_exit(
        &mut agent,
        Duration::from_secs(15),
        "after its target was killed",
    );
    assert_eq!(
        status.code(),
        Some(0),
        "exit status of an attached sidekick"
    );
}

// ---------------------------------------------------------------------------
// Heartbeat file
// ---------------------------------------------------------------------------

/// Appends `line` and a newline to `path`.
fn append_line(path: &Path, line: &str) {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    writeln!(f, "{line}").unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Runs sidekick with only a heartbeat file as its target while the test
/// touches it every 200 ms and writes lines; then `end` ends the heartbeat.
/// sidekick must ship every line and exit 0 by itself within the 1 s
/// heartbeat timeout plus a few seconds.
fn heartbeat_case(end: impl FnOnce(&Path), what: &str) {
    let s = Scratch::new();
    let receiver = Receiver::start();
    let log = s.log("app.log");
    let hb = s.path().join("app.alive");
    std::fs::write(&hb, "alive").expect("create the heartbeat file");
    let target = [
        format!("heartbeat_file: {}", yq(hb.to_str().expect("UTF-8 path"))),
        "heartbeat_timeout: 1s".to_owned(),
    ];
    let cfg = write_config(
        &s,
        &receiver,
        &Setup {
            target: &target,
            interval: "1s",
            log: Some(&log),
        },
    );
    let mut agent = start_agent(&s, &cfg, &[]);
    const LINES: u64 = 15;
    for seq in 0..LINES {
        std::fs::write(&hb, "alive").expect("touch the heartbeat file");
        append_line(&log, &format!("seq={seq:010} heartbeat"));
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            agent.is_running(),
            "sidekick exited while the heartbeat was fresh; its stderr:\n{}",
            agent.stderr()
        );
    }
    append_line(&log, "the last line");
    let ended = Instant::now();
    end(&hb);
    let status = wait_exit(&mut agent, Duration::from_secs(10), what);
    let took = ended.elapsed();
    eprintln!("sidekick exited {status:?} {took:?} after the heartbeat {what}");
    assert_eq!(status.code(), Some(0), "sidekick's exit status");
    // heartbeat_timeout 1 s (a stale file) + a check every 250 ms + the
    // drain (1 s batch timeout) + slack.
    assert!(
        took < Duration::from_secs(5),
        "sidekick took {took:?} to exit after the heartbeat {what}"
    );
    let records = receiver.logs();
    let got: BTreeSet<u64> = records.iter().filter_map(|r| seq_of(&r.body)).collect();
    let missing: Vec<u64> = (0..LINES).filter(|n| !got.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "lines missing at the receiver: {missing:?}"
    );
    assert!(
        records.iter().any(|r| r.body == "the last line"),
        "the last line is not at the receiver"
    );
}

/// The heartbeat file is deleted: sidekick ships the last lines and exits.
#[test]
fn heartbeat_file_deleted_ends_sidekick() {
    let _serial = serial();
    heartbeat_case(
        |hb| {
            // It stops being touched, then disappears.
            std::thread::sleep(Duration::from_millis(300));
            std::fs::remove_file(hb).expect("delete the heartbeat file");
        },
        "file was deleted",
    );
}

/// The heartbeat file stays but is no longer touched: after
/// `heartbeat_timeout` sidekick ships the last lines and exits.
#[test]
fn heartbeat_file_gone_stale_ends_sidekick() {
    let _serial = serial();
    heartbeat_case(|_| {}, "went stale");
}
