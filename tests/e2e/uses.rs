//! The three ways in (issue 7), each tried end to end the way the README
//! tells an operator to set it up: real processes, real files, real HTTP to
//! a real `sidekick receive` on 127.0.0.1.
//!
//! - attach: a process that was running before sidekick, attached with only
//!   `--pid` and `--endpoint`;
//! - container sidecar: the app in a PID and mount namespace of its own,
//!   sharing only a directory with sidekick, which runs the Job config of
//!   `deploy/kubernetes/configmap.yaml` and ends with the app's heartbeat;
//! - edge host: wrapper mode with the config of
//!   `deploy/systemd/myapp-wrapped.yaml`, the central service down for a
//!   while in the middle of the run.

use serde_json::{Map, Value};
use sidekick_e2e::{
    python, python3, seq_of, serial, sidekick_bin, wait_until, Agent, FaultProxy, Proc, Receiver,
    Record, Scratch, SeqReport,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn utf8(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// The repository root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The sidekick config held by key `sidekick.yaml` of ConfigMap `name` in
/// `deploy/kubernetes/configmap.yaml`.
fn configmap_config(name: &str) -> String {
    let text = std::fs::read_to_string(repo().join("deploy/kubernetes/configmap.yaml"))
        .expect("read configmap.yaml");
    text.split("\n---\n")
        .map(|doc| serde_saphyr::from_str::<Value>(doc).expect("a YAML document"))
        .find(|d| d.pointer("/metadata/name").and_then(Value::as_str) == Some(name))
        .and_then(|d| {
            d.pointer("/data/sidekick.yaml")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("no ConfigMap {name} with a sidekick.yaml key"))
}

/// `text` with each `(from, to)` replaced; panics if `from` is not there, so
/// a change to the shipped config cannot silently leave the test testing
/// something else.
fn rewrite(text: &str, edits: &[(&str, &str)]) -> String {
    let mut out = text.to_owned();
    for (from, to) in edits {
        assert!(
            out.contains(from),
            "the shipped config no longer holds {from:?}:\n{text}"
        );
        out = out.replace(from, to);
    }
    out
}

/// The sequence numbers of `records` read from `path`, with how often each
/// arrived.
fn seq_counts(records: &[Record], path: &Path) -> BTreeMap<u64, u32> {
    let mut counts = BTreeMap::new();
    for r in records
        .iter()
        .filter(|r| r.file_path.as_deref() == path.to_str())
    {
        if let Some(s) = seq_of(&r.body) {
            *counts.entry(s).or_insert(0) += 1;
        }
    }
    counts
}

/// The sequence number of the last line of `path`.
fn last_seq_in(path: &Path) -> u64 {
    let text = std::fs::read_to_string(path).expect("read the app's log");
    text.lines()
        .last()
        .and_then(seq_of)
        .unwrap_or_else(|| panic!("{} ends with no numbered line", path.display()))
}

// ---------------------------------------------------------------------------
// Attach to a PID
// ---------------------------------------------------------------------------

/// A process that was running before sidekick: it burns 1 s of CPU, then
/// writes a numbered line every 20 ms (burning 5 ms of CPU for each) until
/// told to stop, writes 200 last lines and exits 0. sidekick is given only
/// `--pid` and `--endpoint`: it finds the log file the process has open,
/// ships the lines written from then on exactly once, ships the process's
/// CPU and memory, and exits 0 by itself once the process is gone.
#[test]
fn attach_with_only_pid_and_endpoint_ships_new_lines_and_metrics_then_exits() {
    let _serial = serial();
    let s = Scratch::new();
    let receiver = Receiver::start();
    let log = s.log("app.log");
    let stop = s.path().join("stop");
    let code = "import os, sys, time\n\
                log, stop = sys.argv[1], sys.argv[2]\n\
                f = open(log, 'a', buffering=1)\n\
                def burn(secs):\n    end = time.process_time() + secs\n    \
                    while time.process_time() < end:\n        pass\n\
                burn(1.0)\n\
                i = 0\n\
                deadline = time.time() + 60\n\
                while not os.path.exists(stop) and time.time() < deadline:\n    \
                    f.write('seq=%010d attached app\\n' % i)\n    i += 1\n    \
                    burn(0.005)\n    time.sleep(0.015)\n\
                for _ in range(200):\n    f.write('seq=%010d last words\\n' % i)\n    i += 1\n\
                f.close()\n";
    let mut app = Proc::spawn(&mut python(code, &[utf8(&log), utf8(&stop)]));
    let pid = app.pid();
    wait_until(
        Duration::from_secs(20),
        "the app to burn its first second of CPU and start writing",
        || std::fs::metadata(&log).is_ok_and(|m| m.len() > 0),
        || format!("app alive: {}", Path::new(&format!("/proc/{pid}")).exists()),
    );
    let before = last_seq_in(&log) + 1;

    // What the README says: `sidekick run --pid N --endpoint URL`.
    let started = Instant::now();
    let pid_arg = pid.to_string();
    let mut agent = Agent::start_args(
        &["run", "--pid", &pid_arg, "--endpoint", receiver.endpoint()],
        s.path(),
    );
    let found = agent.wait_for_stderr_line(
        "sidekick to find the log file the app has open",
        Duration::from_secs(20),
        |l| l.contains("tailing") && l.contains(utf8(&log)),
    );
    eprintln!("after {:?}: {found}", started.elapsed());
    wait_until(
        Duration::from_secs(20),
        "the app's lines at the receiver",
        || !seq_counts(&receiver.logs(), &log).is_empty(),
        || agent.stderr(),
    );
    std::thread::sleep(Duration::from_secs(1));
    std::fs::write(&stop, "stop").expect("write the stop file");
    let app_status = app
        .wait(Duration::from_secs(20))
        .expect("the app exits once told to stop");
    let app_exited = Instant::now();
    assert!(app_status.success(), "the app's exit: {app_status:?}");
    let status = agent
        .wait(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("sidekick still runs 20 s after its target exited"));
    let took = app_exited.elapsed();
    eprintln!(
        "sidekick exited {status:?} {took:?} after the app; peak RSS {} KiB",
        agent.peak_rss_kib()
    );
    assert_eq!(status.code(), Some(0), "an attached sidekick exits 0");
    assert!(
        took < Duration::from_secs(5),
        "sidekick took {took:?} to exit after its target"
    );

    // Lines: every one from the first shipped to the last written, once;
    // the lines that were in the file before sidekick came are not resent.
    let records = receiver.settle(Duration::from_millis(500), Duration::from_secs(5));
    let counts = seq_counts(&records, &log);
    let first = *counts.keys().next().expect("lines arrived");
    let last = last_seq_in(&log);
    let missing: Vec<u64> = (first..=last).filter(|n| !counts.contains_key(n)).collect();
    let dups: Vec<u64> = counts
        .iter()
        .filter(|(_, &c)| c > 1)
        .map(|(&s, _)| s)
        .collect();
    eprintln!(
        "{} lines in the file before sidekick; shipped seq {first}..={last} ({} lines), missing \
         {}, duplicated {}",
        before,
        counts.len(),
        missing.len(),
        dups.len()
    );
    assert!(
        missing.is_empty() && dups.is_empty(),
        "not exactly once from seq {first} to {last}: missing {missing:?}, duplicated {dups:?}"
    );
    assert!(
        first >= before,
        "seq {first} was in the file before sidekick started ({before} lines): a file found \
         open is tailed from its end"
    );
    assert!(
        last - first >= 200,
        "only seq {first}..={last} shipped: the 200 last lines are not all there"
    );

    // Metrics of the process: its CPU time (it burned more than 1 s) and
    // memory, on a resource naming its PID.
    let points: Vec<Map<String, Value>> = receiver
        .metric_points()
        .into_iter()
        .filter(|p| {
            p.get("resource")
                .and_then(|r| r.get("process.pid"))
                .and_then(Value::as_i64)
                == Some(i64::from(pid))
        })
        .collect();
    let name = |p: &Map<String, Value>| {
        p.get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let value = |p: &Map<String, Value>| p.get("value").and_then(Value::as_f64).unwrap_or(0.0);
    let mut cpu_by_time: BTreeMap<u64, f64> = BTreeMap::new();
    for p in points.iter().filter(|p| name(p) == "process.cpu.time") {
        let t = p.get("time_unix_nano").and_then(Value::as_u64).unwrap_or(0);
        *cpu_by_time.entry(t).or_insert(0.0) += value(p);
    }
    let cpu = cpu_by_time.values().copied().fold(0.0, f64::max);
    let rss = points
        .iter()
        .filter(|p| name(p) == "process.memory.usage")
        .map(value)
        .fold(0.0, f64::max);
    eprintln!(
        "{} metric points for pid {pid}; process.cpu.time (all modes) up to {cpu:.2} s; \
         process.memory.usage up to {rss} bytes",
        points.len()
    );
    assert!(
        cpu >= 1.0,
        "process.cpu.time of the app is {cpu} s, but it burned over 1 s of CPU"
    );
    assert!(rss > 1_000_000.0, "process.memory.usage of the app: {rss}");
}

// ---------------------------------------------------------------------------
// Container sidecar, simulated
// ---------------------------------------------------------------------------

/// Whether this machine lets us make PID namespaces (root, or unprivileged
/// user namespaces where `unshare` may use them).
fn can_unshare_pid() -> Result<(), String> {
    match Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "`unshare --pid --fork --mount-proc true` failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run unshare: {e}")),
    }
}

/// The app runs in a PID and mount namespace of its own (as in a pod
/// without `shareProcessNamespace`), sharing only a directory with sidekick.
/// sidekick runs the Job config of `deploy/kubernetes/configmap.yaml`
/// (paths moved to the test's directory) with the downward-API variables of
/// `deploy/kubernetes/job.yaml`: it tails the shared directory, ships every
/// line exactly once with the pod's name and namespace, and exits 0 on its
/// own within a few seconds of the app removing its heartbeat file.
#[test]
fn sidecar_in_another_pid_namespace_ends_with_the_app_s_heartbeat() {
    let _serial = serial();
    if let Err(why) = can_unshare_pid() {
        eprintln!(
            "SKIPPED: sidecar_in_another_pid_namespace_ends_with_the_app_s_heartbeat: {why} \
             (needs root or user namespaces)"
        );
        return;
    }
    let s = Scratch::new();
    let receiver = Receiver::start();
    // The emptyDir both containers mount.
    let shared = s.path().join("shared");
    std::fs::create_dir(&shared).expect("create the shared directory");
    let log = shared.join("report.log");
    let config = rewrite(
        &configmap_config("sidekick-report-job"),
        &[
            ("/var/log/app", utf8(&shared)),
            ("/var/lib/sidekick", utf8(&s.data)),
            // No fixed port in tests.
            ("listen: 127.0.0.1:9464", "listen: \"off\""),
        ],
    );
    let config_path = s.path().join("sidekick.yaml");
    std::fs::write(&config_path, &config).expect("write the config");
    let stderr_path = s.path().join("sidekick.stderr");

    // The native sidecar starts first.
    let mut sidekick = Proc::spawn_stderr_to(
        Command::new(sidekick_bin())
            .args(["run", "-c", utf8(&config_path)])
            .current_dir(s.path())
            .env("OTLP_ENDPOINT", receiver.endpoint())
            .env("K8S_POD_NAME", "nightly-report-x7k2p")
            .env("K8S_NAMESPACE_NAME", "reports")
            .env("SIDEKICK_LOG", "info"),
        &stderr_path,
    );
    let stderr = || std::fs::read_to_string(&stderr_path).unwrap_or_default();

    // The app: PID 1 of its own namespace; it writes 1,500 lines over about
    // 3 s touching its heartbeat, then 500 last lines at once, removes the
    // heartbeat file and exits 0 (the Job's wrapper script does the same).
    const LINES: u64 = 2000;
    let code = "import os, sys, time\n\
                d = sys.argv[1]\n\
                open(os.path.join(d, 'app.pid'), 'w').write(str(os.getpid()))\n\
                hb = os.path.join(d, 'app.alive')\n\
                open(hb, 'w').close()\n\
                f = open(os.path.join(d, 'report.log'), 'a')\n\
                i = 0\n\
                while i < 1500:\n    \
                    f.write(''.join('seq=%010d report line\\n' % (i + k) for k in range(50)))\n    \
                    f.flush(); i += 50\n    os.utime(hb)\n    time.sleep(0.1)\n\
                f.write(''.join('seq=%010d last words\\n' % k for k in range(1500, 2000)))\n\
                f.close()\n\
                os.remove(hb)\n";
    let mut app = Proc::spawn(
        Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc"])
            .arg(python3())
            .args(["-c", code, utf8(&shared)]),
    );
    let app_status = app
        .wait(Duration::from_secs(30))
        .expect("the app finishes within 30 s");
    let app_exited = Instant::now();
    assert!(app_status.success(), "the app's exit: {app_status:?}");
    let ns_pid = std::fs::read_to_string(shared.join("app.pid")).unwrap_or_default();
    assert_eq!(
        ns_pid.trim(),
        "1",
        "the app was PID 1 of its own PID namespace, so sidekick could not see its PID"
    );

    let status = sidekick.wait(Duration::from_secs(15)).unwrap_or_else(|| {
        panic!(
            "sidekick still runs 15 s after the app exited and removed its heartbeat; stderr:\n{}",
            stderr()
        )
    });
    let took = app_exited.elapsed();
    eprintln!("sidekick exited {status:?} {took:?} after the app");
    assert_eq!(
        status.code(),
        Some(0),
        "sidekick's exit; stderr:\n{}",
        stderr()
    );
    // The heartbeat is checked every second at most, then the drain.
    assert!(
        took < Duration::from_secs(5),
        "sidekick took {took:?} to exit after the app"
    );

    let records = receiver.settle(Duration::from_millis(500), Duration::from_secs(5));
    let report = SeqReport::for_file(&records, &log, LINES);
    eprintln!("{report}");
    if report.missing() > 0 || report.duplicates() > 0 {
        eprintln!("sidekick's stderr:\n{}", stderr());
    }
    report.assert_exactly_once();
    report.assert_in_order();
    let last = records
        .iter()
        .rfind(|r| r.file_path.as_deref() == log.to_str())
        .expect("records");
    assert_eq!(
        (
            last.resource_str("k8s.pod.name"),
            last.resource_str("k8s.namespace.name"),
            last.resource_str("service.name"),
        ),
        (
            Some("nightly-report-x7k2p"),
            Some("reports"),
            Some("nightly-report")
        ),
        "the resource of the app's lines: {:?}",
        last.resource
    );
}

// ---------------------------------------------------------------------------
// Edge host, simulated
// ---------------------------------------------------------------------------

/// How long the central service is down, as the issue asks.
const OUTAGE: Duration = Duration::from_secs(60);

/// Bytes of each line the edge app writes, newline included.
const EDGE_LINE: u64 = 1000;

/// Lines the edge app writes every 10 ms: 1.5 MB/s, about 90 MB waiting in
/// the file by the end of the outage, well above the memory bound.
const EDGE_LINES_PER_TICK: u64 = 15;

/// sidekick's peak RSS bound while the backlog waits: the file is the
/// buffer.
const EDGE_RSS_BOUND_KIB: u64 = 64 * 1024;

/// Wrapper mode with the config of `deploy/systemd/myapp-wrapped.yaml`: the
/// app (1.5 MB/s of 1,000-byte lines) runs under `sidekick run -c CFG --
/// APP` while the central service goes down for [`OUTAGE`] and comes back.
/// Every line arrives exactly once, sidekick's memory stays bounded while
/// tens of MB wait in the file, and sidekick exits with the app's exit code
/// (7).
#[test]
fn edge_wrapper_rides_out_an_outage_and_exits_with_the_app_s_code() {
    let _serial = serial();
    let test_started = Instant::now();
    let s = Scratch::new();
    let receiver = Receiver::start();
    let (proxy, outage) = FaultProxy::with_outage(receiver.endpoint());
    let shipped = std::fs::read_to_string(repo().join("deploy/systemd/myapp-wrapped.yaml"))
        .expect("read the wrapper's config");
    let config = rewrite(
        &shipped,
        &[
            ("/var/log/myapp", utf8(&s.logs)),
            ("listen: 127.0.0.1:9464", "listen: \"off\""),
        ],
    );
    let config_path = s.path().join("myapp.yaml");
    std::fs::write(&config_path, config).expect("write the config");
    let log = s.log("myapp.log");
    let stop = s.path().join("stop");

    // The app: starts up for 1 s, then writes EDGE_LINES_PER_TICK lines of
    // 1,000 bytes every 10 ms until told to stop (140 s at most), then 100
    // last lines, and exits 7.
    let code = "import os, sys, time\n\
                log, stop, n = sys.argv[1], sys.argv[2], int(sys.argv[3])\n\
                time.sleep(1.0)\n\
                f = open(log, 'a')\n\
                pad = 'x' * (1000 - len('seq=0000000000 edge \\n'))\n\
                i = 0\n\
                deadline = time.time() + 140\n\
                t = time.time()\n\
                while not os.path.exists(stop) and time.time() < deadline:\n    \
                    f.write(''.join('seq=%010d edge %s\\n' % (i + k, pad) for k in range(n)))\n    \
                    f.flush(); i += n\n    t += 0.01\n    time.sleep(max(0.0, t - time.time()))\n\
                f.write(''.join('seq=%010d edge %s\\n' % (i + k, pad) for k in range(100)))\n\
                f.close()\n\
                sys.exit(7)\n";
    let per_tick = EDGE_LINES_PER_TICK.to_string();
    let mut agent = Agent::start_args(
        &[
            "run",
            "-c",
            utf8(&config_path),
            "--data-dir",
            utf8(&s.data),
            "--endpoint",
            &proxy.endpoint(),
            "--",
            utf8(python3()),
            "-c",
            code,
            utf8(&log),
            utf8(&stop),
            &per_tick,
        ],
        s.path(),
    );
    let lines_written = || std::fs::metadata(&log).map_or(0, |m| m.len() / EDGE_LINE);

    receiver.wait_for_logs(1, Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(2));
    let rss_before_kib = agent.peak_rss_kib();

    // The central service goes down: connections close without an answer.
    outage.begin();
    let at_outage = lines_written();
    eprintln!(
        "central service down at {:?} ({} lines received, {at_outage} written)",
        test_started.elapsed(),
        receiver.count()
    );
    std::thread::sleep(OUTAGE);
    let at_recovery = lines_written();
    let backlog_mb = (at_recovery - at_outage) * EDGE_LINE / 1_000_000;
    let peak_in_outage_kib = agent.peak_rss_kib();
    assert!(
        agent.is_running(),
        "sidekick exited during the outage:\n{}",
        agent.stderr()
    );
    outage.end();
    let recovered = Instant::now();
    eprintln!(
        "central service back after {OUTAGE:?}: {backlog_mb} MB written meanwhile; {} lines \
         received; sidekick's peak RSS {rss_before_kib} KiB before the outage, \
         {peak_in_outage_kib} KiB through it",
        receiver.count()
    );

    // Caught up: every line written up to the recovery has arrived (a
    // batch of the outage may still wait out its last backoff, up to 30 s,
    // while later lines already arrive).
    let caught_up = || SeqReport::for_file(&receiver.logs(), &log, at_recovery).missing() == 0;
    wait_until(
        Duration::from_secs(50),
        "the backlog of the outage at the receiver",
        caught_up,
        || SeqReport::for_file(&receiver.logs(), &log, at_recovery).to_string(),
    );
    eprintln!(
        "backlog delivered {:?} after the service came back",
        recovered.elapsed()
    );

    std::fs::write(&stop, "stop").expect("write the stop file");
    let status = agent
        .wait(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("sidekick still runs 20 s after the app was told to stop"));
    let total = lines_written();
    let records = receiver.settle(Duration::from_millis(500), Duration::from_secs(5));
    let counts = proxy.counts();
    eprintln!(
        "sidekick exited {status:?}; {total} lines written, {} received; proxy {counts:?}; test \
         took {:?}",
        records.len(),
        test_started.elapsed()
    );
    assert_eq!(status.code(), Some(7), "sidekick's exit code is the app's");
    let report = SeqReport::for_file(&records, &log, total);
    eprintln!("{report}");
    report.assert_exactly_once();
    assert!(
        counts.dropped > 0,
        "the outage was never seen by sidekick: {counts:?}"
    );
    // Bounded: the file is the buffer. The bound is well below what waited
    // in the file during the outage, so holding the backlog would break it.
    assert!(
        (at_recovery - at_outage) * EDGE_LINE > EDGE_RSS_BOUND_KIB * 1024,
        "the backlog ({backlog_mb} MB) must exceed the memory bound for the bound to mean \
         anything"
    );
    agent.assert_peak_rss_below(
        EDGE_RSS_BOUND_KIB,
        &format!("edge, {backlog_mb} MB waiting in the file"),
    );
}
