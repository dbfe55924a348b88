//! SIGHUP re-reads the config (issue 6): added log sources start, removed
//! ones stop after their files are read to their end, changed outputs are
//! swapped without losing or duplicating a line; a broken new config is
//! refused with a clear error and the running one stays.

use sidekick_e2e::{Agent, LogFile, Receiver, SeqReport};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const LINE: usize = 120;

fn sighup(agent: &Agent) {
    let ok = Command::new("kill")
        .args(["-HUP", &agent.pid().to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -HUP {}", agent.pid());
}

/// A config tailing each of `files` (a source each, from the beginning) to
/// the OTLP/HTTP `endpoint`. `max_line_bytes` differs per version of a
/// source, so that a changed source is a removed and an added one.
fn config(data_dir: &Path, files: &[(&Path, &str)], endpoint: &str) -> String {
    let q = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
    let mut y = format!(
        "data_dir: {}\nshutdown_timeout: 20s\ntelemetry:\n  listen: \"off\"\nlogs:\n",
        q(data_dir.to_str().unwrap())
    );
    for (f, max_line) in files {
        y += &format!(
            "  - include: [{}]\n    start_at: beginning\n    scan_interval: 200ms\n    max_line_bytes: {max_line}\n",
            q(f.to_str().unwrap())
        );
    }
    y += &format!(
        "batch:\n  max_records: 500\n  timeout: 100ms\noutputs:\n  - type: otlp_http\n    endpoint: {}\n    compression: gzip\n    timeout: 5s\n",
        q(endpoint)
    );
    y
}

/// Appends numbered lines to `path` (about 2,000 a second) until `stop`;
/// `written` says how many.
fn spawn_steady_writer(
    path: &Path,
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    let mut f = LogFile::create(path);
    std::thread::spawn(move || {
        let mut seq = 0;
        while !stop.load(Ordering::SeqCst) {
            f.append(seq..seq + 20, LINE);
            seq += 20;
            written.store(seq, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(10));
        }
    })
}

fn reloaded(agent: &Agent, nth: usize) {
    agent.wait_for_stderr_line("the reload's summary", Duration::from_secs(20), |_| {
        agent.stderr().matches("config reloaded").count() >= nth
    });
}

#[test]
fn sighup_adds_and_removes_sources_and_swaps_the_output_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (old_rx, new_rx) = (Receiver::start(), Receiver::start());
    let data = dir.path().join("data");
    let (a, b, c) = (
        dir.path().join("a.log"),
        dir.path().join("b.log"),
        dir.path().join("c.log"),
    );
    LogFile::create(&b).append(0..1000, LINE);
    let cfg_path = dir.path().join("sidekick.yaml");
    std::fs::write(
        &cfg_path,
        config(&data, &[(&a, "64KiB"), (&b, "64KiB")], old_rx.endpoint()),
    )
    .unwrap();
    let (stop, written) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let writer = spawn_steady_writer(&a, stop.clone(), written.clone());
    let mut agent = Agent::start_args(&["run", "-c", cfg_path.to_str().unwrap()], dir.path());
    old_rx.wait_for_logs(1500, Duration::from_secs(30));

    // Version 2: a.log's source changed (handed over, not re-read), b.log's
    // removed after its last 200 lines, c.log's added, the output moved to
    // the second receiver. a.log is written to all along.
    LogFile::create(&b).append(1000..1200, LINE);
    LogFile::create(&c).append(0..500, LINE);
    std::fs::write(
        &cfg_path,
        config(&data, &[(&a, "32KiB"), (&c, "64KiB")], new_rx.endpoint()),
    )
    .unwrap();
    sighup(&agent);
    reloaded(&agent, 1);
    let stderr = agent.stderr();
    assert!(
        stderr.contains("2 log source(s) added, 2 removed"),
        "{stderr}"
    );
    assert!(stderr.contains("outputs swapped"), "{stderr}");
    // b.log is no longer tailed: these never arrive.
    std::thread::sleep(Duration::from_millis(500));
    LogFile::create(&b).append(1200..1300, LINE);
    new_rx.wait_for_logs(1000, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let total_a = written.load(Ordering::SeqCst);

    let status = agent.term(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", agent.stderr());
    let old = old_rx.settle(Duration::from_millis(500), Duration::from_secs(10));
    let new = new_rx.settle(Duration::from_millis(500), Duration::from_secs(10));
    let both: Vec<_> = old.iter().chain(&new).cloned().collect();

    // a.log: every line exactly once over both receivers, and the output
    // really moved: both got some of it.
    let ra = SeqReport::for_file(&both, &a, total_a);
    ra.assert_exactly_once();
    let on_new = SeqReport::for_file(&new, &a, total_a);
    assert!(
        on_new.missing() < total_a && SeqReport::for_file(&old, &a, total_a).missing() < total_a,
        "a.log went to one receiver only: {ra}"
    );
    // b.log: its 1,200 lines written before the reload arrived, once; the
    // 100 written after it did not.
    let rb = SeqReport::for_file(&both, &b, 1300);
    assert_eq!(rb.missing(), 100, "b.log: {rb}");
    assert_eq!(rb.first_missing(), Some(1200), "b.log: {rb}");
    assert_eq!(rb.duplicates(), 0, "b.log: {rb}");
    // c.log: added by the reload, all of it, at the new output only.
    SeqReport::for_file(&new, &c, 500).assert_exactly_once();
    assert_eq!(SeqReport::for_file(&old, &c, 500).missing(), 500);
}

#[test]
fn sighup_with_a_broken_config_is_refused_and_the_running_one_stays() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start();
    let data = dir.path().join("data");
    let a = dir.path().join("a.log");
    let cfg_path = dir.path().join("sidekick.yaml");
    let good = config(&data, &[(&a, "64KiB")], rx.endpoint());
    std::fs::write(&cfg_path, &good).unwrap();
    let mut log = LogFile::create(&a);
    log.append(0..100, LINE);
    let mut agent = Agent::start_args(&["run", "-c", cfg_path.to_str().unwrap()], dir.path());
    rx.wait_for_logs(100, Duration::from_secs(30));

    // A typo in a key: refused, naming the key and where it is.
    std::fs::write(
        &cfg_path,
        good.replace("compression: gzip", "compresion: gzip"),
    )
    .unwrap();
    sighup(&agent);
    let refused = agent.wait_for_stderr_line("the refusal", Duration::from_secs(20), |l| {
        l.contains("config reload refused")
    });
    assert!(refused.contains("compresion"), "{refused}");
    // An output that cannot start (a CA file that is not there): refused too.
    std::fs::write(
        &cfg_path,
        good.replace(
            "compression: gzip",
            "compression: gzip\n    tls:\n      ca_file: /nonexistent/ca.pem",
        )
        .replace("http://", "https://"),
    )
    .unwrap();
    sighup(&agent);
    agent.wait_for_stderr_line("the second refusal", Duration::from_secs(20), |_| {
        agent.stderr().matches("config reload refused").count() >= 2
    });
    let second = agent
        .stderr()
        .lines()
        .filter(|l| l.contains("config reload refused"))
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    assert!(second.contains("/nonexistent/ca.pem"), "{second}");

    // Still running on the old config: new lines arrive, exactly once.
    log.append(100..300, LINE);
    rx.wait_for_logs(300, Duration::from_secs(30));
    assert!(agent.is_running(), "{}", agent.stderr());
    // Fixed again: applied, nothing changed.
    std::fs::write(&cfg_path, &good).unwrap();
    sighup(&agent);
    reloaded(&agent, 1);
    assert!(
        agent
            .stderr()
            .contains("0 log source(s) added, 0 removed, outputs unchanged"),
        "{}",
        agent.stderr()
    );
    log.append(300..400, LINE);
    rx.wait_for_logs(400, Duration::from_secs(30));
    let status = agent.term(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", agent.stderr());
    let all = rx.settle(Duration::from_millis(500), Duration::from_secs(10));
    SeqReport::for_file(&all, &a, 400).assert_exactly_once();
}
