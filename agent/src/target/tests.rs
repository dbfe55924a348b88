//! The watcher against real processes.

use super::process::Target;
use super::*;
use sidekick_pipeline::{AttrValue, LogRecord, Record};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;

struct Harness {
    events: crossbeam_channel::Receiver<Chunk>,
    exits: crossbeam_channel::Receiver<ExitInfo>,
    crash: Arc<CrashContext>,
    _stop: crossbeam_channel::Sender<()>,
    handle: WatchHandle,
}

fn watch(spec: TargetSpec) -> Harness {
    let (tx, events) = crossbeam_channel::bounded(64);
    let (exits_tx, exits) = crossbeam_channel::unbounded();
    let (stop_tx, stop) = crossbeam_channel::bounded(0);
    let crash = Arc::new(CrashContext::new(50));
    let opts = WatchOptions {
        rescan_interval: Duration::from_millis(100),
        restart_grace: Duration::from_millis(500),
    };
    let handle = spawn_watch(spec, opts, tx, exits_tx, crash.clone(), stop).unwrap();
    Harness {
        events,
        exits,
        crash,
        _stop: stop_tx,
        handle,
    }
}

fn attr<'a>(r: &'a LogRecord, key: &str) -> Option<&'a AttrValue> {
    r.attributes.iter().find(|a| a.key == key).map(|a| &a.value)
}

/// The next event named `name`, within `within`.
fn next_event(h: &Harness, name: &str, within: Duration) -> LogRecord {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = h
            .events
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no {name} event within {within:?}"));
        for r in chunk.records {
            if let Record::Log(l) = r {
                if attr(&l, "event.name") == Some(&AttrValue::from(name.to_string())) {
                    return l;
                }
            }
        }
    }
}

fn int(v: Option<&AttrValue>) -> Option<i64> {
    match v {
        Some(AttrValue::Int(i)) => Some(*i),
        _ => None,
    }
}

fn cmd(args: &[&str]) -> TargetSpec {
    TargetSpec::Command(args.iter().map(|s| s.to_string()).collect())
}

#[test]
fn wrapper_reports_the_exit_code_and_the_crash_context() {
    let h = watch(cmd(&["sh", "-c", "sleep 0.2; exit 3"]));
    h.crash
        .push_lines([bytes::Bytes::from_static(b"last words")].iter());
    let start = next_event(&h, "process.start", Duration::from_secs(2));
    assert!(int(attr(&start, "process.pid")).is_some());
    let exit = h.exits.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        (exit.code, exit.signal, exit.oom_killed),
        (Some(3), None, false)
    );
    assert_eq!(exit.exit_code_for_sidekick(), 3);
    assert!(exit.run_time >= Duration::from_millis(200));
    let ev = next_event(&h, "process.exit", Duration::from_secs(1));
    assert_eq!(int(attr(&ev, "process.exit.code")), Some(3));
    assert_eq!(ev.severity_number, 17);
    assert_eq!(
        attr(&ev, "process.crash.last_lines"),
        Some(&AttrValue::from("last words".to_string()))
    );
    assert!(
        std::str::from_utf8(&ev.body)
            .unwrap()
            .contains("exited with code 3"),
        "{:?}",
        ev.body
    );
    assert_eq!(h.handle.pid().load(Ordering::Acquire), 0);
    h.handle.join();
}

#[test]
fn wrapper_child_killed_by_sigkill_exits_137() {
    let h = watch(cmd(&["sh", "-c", "kill -9 $$"]));
    let exit = h.exits.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!((exit.code, exit.signal), (None, Some(9)));
    assert_eq!(exit.exit_code_for_sidekick(), 137);
    let ev = next_event(&h, "process.exit", Duration::from_secs(1));
    assert_eq!(int(attr(&ev, "process.exit.signal")), Some(9));
    assert!(std::str::from_utf8(&ev.body).unwrap().contains("SIGKILL"));
}

#[test]
fn a_clean_exit_is_info_without_crash_context() {
    let h = watch(cmd(&["true"]));
    let exit = h.exits.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(exit.exit_code_for_sidekick(), 0);
    let ev = next_event(&h, "process.exit", Duration::from_secs(1));
    assert_eq!(ev.severity_number, 9);
    assert!(attr(&ev, "process.crash.last_lines").is_none());
}

#[test]
fn a_command_that_cannot_start_is_an_error() {
    let (tx, _rx) = crossbeam_channel::bounded(1);
    let (etx, _erx) = crossbeam_channel::unbounded();
    let (_s, stop) = crossbeam_channel::bounded(0);
    let r = spawn_watch(
        cmd(&["/nonexistent/sidekick-test-binary"]),
        WatchOptions::default(),
        tx,
        etx,
        Arc::new(CrashContext::new(1)),
        stop,
    );
    assert!(r.is_err());
}

#[test]
fn attached_pid_killed_with_sigkill_is_seen_within_a_second() {
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id();
    let h = watch(TargetSpec::Pid(pid));
    next_event(&h, "process.start", Duration::from_secs(2));
    let t = Instant::now();
    child.kill().unwrap();
    let exit = h
        .exits
        .recv_timeout(Duration::from_secs(1))
        .expect("exit within 1 s");
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(exit.pid, pid);
    // Not sidekick's child: known only because the test had not reaped it
    // yet (a zombie's status is in /proc/N/stat).
    assert!(exit.signal == Some(9) || exit.signal.is_none(), "{exit:?}");
    let ev = next_event(&h, "process.exit", Duration::from_secs(1));
    assert_eq!(int(attr(&ev, "process.pid")), Some(i64::from(pid)));
    let _ = child.wait();
    h.handle.join();
}

#[test]
fn attaching_to_a_missing_pid_fails() {
    let mut c = Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    let (tx, _rx) = crossbeam_channel::bounded(1);
    let (etx, _erx) = crossbeam_channel::unbounded();
    let (_s, stop) = crossbeam_channel::bounded(0);
    let r = spawn_watch(
        TargetSpec::Pid(pid),
        WatchOptions::default(),
        tx,
        etx,
        Arc::new(CrashContext::new(1)),
        stop,
    );
    assert!(r.is_err());
}

/// A process whose command line holds `marker`, blocked on its stdin.
fn named(marker: &str) -> std::process::Child {
    Command::new("sh")
        .args(["-c", "read x", marker])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn process_name_target_restarting_gives_a_restart_event() {
    let marker = format!(
        "sidekick-restart-test-{}-{}",
        std::process::id(),
        sidekick_pipeline::now_unix_nano()
    );
    let mut first = named(&marker);
    let re = regex::Regex::new(&regex::escape(&marker)).unwrap();
    let h = watch(TargetSpec::ProcessName(re));
    let start = next_event(&h, "process.start", Duration::from_secs(3));
    assert_eq!(
        int(attr(&start, "process.pid")),
        Some(i64::from(first.id()))
    );
    first.kill().unwrap();
    first.wait().unwrap();
    let exit = next_event(&h, "process.exit", Duration::from_secs(2));
    assert_eq!(int(attr(&exit, "process.pid")), Some(i64::from(first.id())));
    let mut second = named(&marker);
    let restart = next_event(&h, "process.restart", Duration::from_secs(3));
    assert_eq!(
        int(attr(&restart, "process.pid")),
        Some(i64::from(second.id()))
    );
    assert_eq!(int(attr(&restart, "process.restart.count")), Some(1));
    assert_eq!(h.handle.pid().load(Ordering::Acquire), second.id());
    // Came back within the grace: not gone for good.
    assert!(h.exits.try_recv().is_err());
    second.kill().unwrap();
    second.wait().unwrap();
    // Gone and not back within restart_grace (500 ms): reported.
    let gone = h.exits.recv_timeout(Duration::from_secs(3)).unwrap();
    assert_eq!(gone.pid, second.id());
}

#[test]
fn pid_file_target_follows_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.pid");
    let mut a = Command::new("sleep").arg("30").spawn().unwrap();
    std::fs::write(&file, format!("{}\n", a.id())).unwrap();
    let h = watch(TargetSpec::PidFile(file.clone()));
    next_event(&h, "process.start", Duration::from_secs(3));
    let mut b = Command::new("sleep").arg("30").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(20)); // a different mtime or length
    std::fs::write(&file, format!("{}\n", b.id())).unwrap();
    let restart = next_event(&h, "process.restart", Duration::from_secs(3));
    assert_eq!(int(attr(&restart, "process.pid")), Some(i64::from(b.id())));
    for c in [&mut a, &mut b] {
        let _ = c.kill();
        let _ = c.wait();
    }
}

#[test]
fn a_wrong_start_time_is_another_process() {
    let mut c = Command::new("sleep").arg("30").spawn().unwrap();
    let t = Target::from_pid(c.id()).unwrap();
    assert!(t.is_alive());
    let reused = Target {
        pid: t.pid,
        start_ticks: t.start_ticks + 1,
    };
    assert!(
        !reused.is_alive(),
        "same PID, another start time: not the target"
    );
    assert!(reused.stat().is_none());
    let info = t.info();
    assert_eq!(info.executable_name, "sleep");
    assert_eq!(info.command_line, "sleep 30");
    assert_eq!(info.parent_pid, Some(std::process::id()));
    c.kill().unwrap();
    c.wait().unwrap();
    assert!(!t.is_alive());
}

#[test]
fn stat_parsing_survives_odd_command_names() {
    let s = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 12345 1000 200 \
             18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 2304";
    let st = parse_stat(s).unwrap();
    assert_eq!(
        (st.comm.as_str(), st.state, st.ppid, st.start_ticks),
        ("a) b (c)", 'S', 1, 12345)
    );
    assert_eq!(st.exit_code, Some(2304));
    assert!(parse_stat("").is_none());
    assert!(parse_stat("1 (x").is_none());
}

#[test]
fn exit_codes_for_sidekick() {
    let e = |code, signal| ExitInfo {
        pid: 1,
        code,
        signal,
        oom_killed: false,
        run_time: Duration::ZERO,
    };
    assert_eq!(e(Some(0), None).exit_code_for_sidekick(), 0);
    assert_eq!(e(Some(255), None).exit_code_for_sidekick(), 255);
    assert_eq!(e(None, Some(15)).exit_code_for_sidekick(), 143);
    assert_eq!(e(None, None).exit_code_for_sidekick(), 0);
    assert!(!e(None, None).abnormal());
}

#[test]
fn stop_ends_the_watcher_promptly() {
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let (tx, _rx) = crossbeam_channel::bounded(8);
    let (etx, _erx) = crossbeam_channel::unbounded();
    let (stop_tx, stop) = crossbeam_channel::bounded(0);
    let h = spawn_watch(
        TargetSpec::Pid(child.id()),
        WatchOptions::default(),
        tx,
        etx,
        Arc::new(CrashContext::new(1)),
        stop,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    drop(stop_tx);
    h.join();
    // The watcher sleeps until the next slow check (1 s) unless the stop
    // pipe wakes it.
    assert!(
        t.elapsed() < Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn forwarded_signals_reach_the_child() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // The child reports SIGUSR1 and exits 7.
    let h = watch(cmd(&[
        "sh",
        "-c",
        "trap 'exit 7' USR1; while :; do sleep 0.05; done",
    ]));
    let pid = h.handle.pid();
    let task = forward_signals(rt.handle(), pid).unwrap();
    std::thread::sleep(Duration::from_millis(200)); // let sh install its trap
    rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::USR1)
        .unwrap();
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(50)).await });
    let exit = h.exits.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(exit.code, Some(7));
    task.abort();
}
