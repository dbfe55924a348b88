//! The watcher thread: resolve the target, wait for it to exit, tell the
//! pipeline, look for its successor.
//!
//! Waiting is one `poll` on a pidfd (readable when the process exits), on
//! the read end of a stop pipe (closed when a stop is requested) and, where
//! the kernel lets it be armed, on an OOM notifier of the target's memory
//! cgroup (`oom.rs`), after which the OOM-kill counter is read at once and
//! twice more within 2 s. The timer wakes only for the slower checks: a
//! changed PID file every `rescan_interval`; the OOM-kill counter every
//! [`OOM_EVERY`] without a notifier, every [`OOM_SAFETY`] with one.
//! Without pidfd support it is a `/proc` check every [`TICK`].

use super::crash::CrashContext;
use super::launch::launch;
use super::oom::OomNotifier;
use super::process::{find_by_name, read_stat, Target, TargetInfo};
use super::{deliver, Stopping};
use crate::metrics::CgroupFiles;
use anyhow::Context as _;
use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::fd::{BorrowedFd, OwnedFd};
use rustix::process::{pidfd_open, Pid, PidfdFlags};
use sidekick_pipeline::{Attr, Chunk, LogRecord, Record};
use std::borrow::Cow;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the target is looked at in `/proc` without pidfd support.
const TICK: Duration = Duration::from_millis(200);

/// How often a watched target's cgroup OOM-kill counter is read when no
/// PID file needs checking (a kill of the target itself is seen at its
/// exit, at once).
const OOM_EVERY: Duration = Duration::from_secs(5);

/// How often the counter is read anyway when an OOM notifier is armed: a
/// safety net, since a v1 notifier is for the cgroup hitting a memory
/// limit, and a kill by the host-wide OOM killer raises the counter
/// without one (the target's own kill is seen at its exit at once).
const OOM_SAFETY: Duration = Duration::from_secs(60);

/// After an OOM notification, the counter is read again after these delays:
/// v1 notifies when the cgroup runs out of memory, before the kill.
const OOM_RECHECKS: [Duration; 2] = [Duration::from_millis(250), Duration::from_secs(2)];

/// OTLP severity numbers of events.
const INFO: i32 = 9;
const ERROR: i32 = 17;

/// How the target is found.
#[derive(Debug, Clone)]
pub enum TargetSpec {
    /// This process (`--pid`).
    Pid(u32),
    /// The process whose PID this file holds, re-read when it changes (`pid_file:`).
    PidFile(PathBuf),
    /// The process whose command line (arguments joined by spaces) matches
    /// (`process_name:`), looked for again when it is gone.
    ProcessName(regex::Regex),
    /// A command sidekick launches as its child (`command:` / `-- CMD ARGS`).
    Command(Vec<String>),
}

impl TargetSpec {
    /// Whether a gone target may come back under a new PID.
    fn restartable(&self) -> bool {
        matches!(self, TargetSpec::PidFile(_) | TargetSpec::ProcessName(_))
    }
}

/// Timings of the watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchOptions {
    /// How often a missing target is looked for (process_name scan, PID
    /// file re-read) and a PID file checked for a change. The cgroup's
    /// OOM-kill counter is read every [`OOM_EVERY`], or this if longer.
    pub rescan_interval: Duration,
    /// For `pid_file` and `process_name`: how long a gone target has to come
    /// back before it is reported gone for good on the `exits` channel.
    pub restart_grace: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            rescan_interval: Duration::from_secs(1),
            restart_grace: Duration::from_secs(10),
        }
    }
}

/// How the target ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitInfo {
    /// Its PID.
    pub pid: u32,
    /// Its exit code, if it exited normally and the code is known (always
    /// for sidekick's child; for another process only if the kernel still
    /// showed it as a zombie).
    pub code: Option<i32>,
    /// The signal that killed it, if known.
    pub signal: Option<i32>,
    /// Killed by the OOM killer (the cgroup's OOM-kill counter rose as it
    /// died by SIGKILL, or as it died of an unknown cause).
    pub oom_killed: bool,
    /// How long it ran.
    pub run_time: Duration,
}

impl ExitInfo {
    /// The exit code sidekick should exit with in wrapper mode: the child's
    /// code, or 128 + the signal that killed it (a shell's convention); 0
    /// when neither is known (an attached process: sidekick did its job).
    pub fn exit_code_for_sidekick(&self) -> u8 {
        match (self.code, self.signal) {
            (Some(c), _) => (c & 0xff) as u8,
            (None, Some(s)) => 128u8.wrapping_add((s & 0x7f) as u8),
            (None, None) => 0,
        }
    }

    /// Whether it ended badly (non-zero code, a signal, the OOM killer).
    pub fn abnormal(&self) -> bool {
        self.oom_killed || self.signal.is_some() || self.code.is_some_and(|c| c != 0)
    }
}

/// The running watcher.
#[derive(Debug)]
pub struct WatchHandle {
    pid: Arc<AtomicU32>,
    info: Arc<Mutex<Option<TargetInfo>>>,
    thread: JoinHandle<()>,
}

impl WatchHandle {
    /// The target's current PID, 0 while there is none: give it to the
    /// sampler and to [`forward_signals`](super::forward_signals).
    pub fn pid(&self) -> Arc<AtomicU32> {
        self.pid.clone()
    }

    /// What is known about the current target (for resource attributes).
    pub fn target_info(&self) -> Option<TargetInfo> {
        self.info.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits for the watcher to end (after the target is gone for good, or a stop).
    pub fn join(self) {
        if self.thread.join().is_err() {
            tracing::error!("the target watcher panicked");
        }
    }
}

/// Starts watching the target on a thread of its own.
///
/// A `Pid` must exist and a `Command` must start, or this fails; a
/// `PidFile` or `ProcessName` target may appear later. Events go to `tx`;
/// an [`ExitInfo`] goes to `exits` once the target is gone for good (at
/// once for `Pid` and `Command`, after `opts.restart_grace` without a
/// successor for the others), and the watcher of a `Pid` or `Command` then
/// ends. `stop` (a message, or every sender dropped) ends it at any time;
/// a launched child is left running then (the supervisor decides its fate).
pub fn spawn_watch(
    spec: TargetSpec,
    opts: WatchOptions,
    tx: Sender<Chunk>,
    exits: Sender<ExitInfo>,
    crash: Arc<CrashContext>,
    stop: Receiver<()>,
) -> anyhow::Result<WatchHandle> {
    let first = match &spec {
        TargetSpec::Pid(pid) => {
            let t = Target::from_pid(*pid).with_context(|| format!("target process {pid}"))?;
            Some(Watched::Attached(t))
        }
        TargetSpec::Command(argv) => {
            let child =
                launch(argv).with_context(|| format!("cannot launch {:?}", argv.join(" ")))?;
            let pid = child.id();
            // Read even if it already exited (a zombie until reaped here).
            let start_ticks = read_stat(pid).map(|s| s.start_ticks).unwrap_or(0);
            let target = Target { pid, start_ticks };
            Some(Watched::Child {
                child,
                target,
                spawned: Instant::now(),
            })
        }
        TargetSpec::PidFile(_) | TargetSpec::ProcessName(_) => None,
    };
    let pid = Arc::new(AtomicU32::new(first.as_ref().map_or(0, |w| w.target().pid)));
    let info = Arc::new(Mutex::new(None));
    let mut w = Watcher {
        restartable: spec.restartable(),
        spec,
        opts,
        tx,
        exits,
        crash,
        stop: StopPipe::new(stop).context("cannot make the target watcher's stop pipe")?,
        pid: pid.clone(),
        info: info.clone(),
        pid_file_stamp: None,
    };
    let thread = std::thread::Builder::new()
        .name("target-watch".into())
        .spawn(move || w.run(first))
        .context("cannot start the target watcher thread")?;
    Ok(WatchHandle { pid, info, thread })
}

/// The process being watched.
enum Watched {
    /// sidekick's own child: reaped here, real exit status.
    Child {
        child: Child,
        target: Target,
        spawned: Instant,
    },
    /// Any other process.
    Attached(Target),
}

impl Watched {
    fn target(&self) -> Target {
        match self {
            Watched::Child { target, .. } | Watched::Attached(target) => *target,
        }
    }
}

/// Why watching one process ended.
enum Outcome {
    Exited(ExitInfo),
    /// The PID file now names another live process.
    Replaced(Target),
    Stopped,
}

/// (modified time, length, inode) of the PID file: a change means re-read it.
type Stamp = (Option<std::time::SystemTime>, u64, u64);

struct Watcher {
    spec: TargetSpec,
    restartable: bool,
    opts: WatchOptions,
    tx: Sender<Chunk>,
    exits: Sender<ExitInfo>,
    crash: Arc<CrashContext>,
    stop: StopPipe,
    pid: Arc<AtomicU32>,
    info: Arc<Mutex<Option<TargetInfo>>>,
    pid_file_stamp: Option<Stamp>,
}

impl Watcher {
    fn run(&mut self, first: Option<Watched>) {
        let mut next = first;
        let mut restarts: i64 = 0;
        let mut previous: Option<u32> = None;
        // A gone restartable target, not yet reported on `exits`.
        let mut gone: Option<(Instant, ExitInfo)> = None;
        loop {
            let watched = match next.take() {
                Some(w) => w,
                None => match self.resolve() {
                    Some(t) => Watched::Attached(t),
                    None => {
                        if let Some((since, exit)) = &gone {
                            if since.elapsed() >= self.opts.restart_grace {
                                self.report_gone(exit.clone());
                                gone = None;
                            }
                        }
                        if self.stop.wait(self.opts.rescan_interval) {
                            return;
                        }
                        continue;
                    }
                },
            };
            let target = watched.target();
            let info = target.info();
            self.pid.store(target.pid, Ordering::Release);
            *self.info.lock().unwrap_or_else(|e| e.into_inner()) = Some(info.clone());
            match previous {
                None => self.emit(start_event(&watched, &info)),
                Some(prev) => {
                    restarts += 1;
                    self.emit(restart_event(&info, prev, restarts));
                }
            }
            previous = Some(target.pid);
            gone = None;
            match self.watch(watched, &info) {
                Outcome::Stopped => return,
                Outcome::Replaced(t) => next = Some(Watched::Attached(t)),
                Outcome::Exited(exit) => {
                    self.pid.store(0, Ordering::Release);
                    // The target's last lines belong in its exit event.
                    self.crash.catch_up();
                    self.emit(exit_event(&exit, &info, &self.crash));
                    if !self.restartable {
                        self.report_gone(exit);
                        return;
                    }
                    gone = Some((Instant::now(), exit));
                }
            }
        }
    }

    fn report_gone(&self, exit: ExitInfo) {
        if self
            .exits
            .send_timeout(exit, Duration::from_secs(1))
            .is_err()
        {
            tracing::debug!("nobody waits for the target's exit");
        }
    }

    fn emit(&mut self, record: LogRecord) {
        let chunk = Chunk {
            records: vec![Record::Log(record)],
            position: None,
        };
        // Events cannot be read again: give them a moment at shutdown.
        let _ = deliver(&self.tx, chunk, &mut self.stop, Duration::from_secs(2));
    }

    /// Looks for the target once.
    fn resolve(&mut self) -> Option<Target> {
        match &self.spec {
            TargetSpec::Pid(_) | TargetSpec::Command(_) => None,
            TargetSpec::ProcessName(re) => find_by_name(re),
            TargetSpec::PidFile(path) => {
                self.pid_file_stamp = stamp(path);
                read_pid_file(path).and_then(|p| Target::from_pid(p).ok())
            }
        }
    }

    /// Waits for `watched` to exit, a stop, or (pid_file) a new PID.
    fn watch(&mut self, mut watched: Watched, info: &TargetInfo) -> Outcome {
        let target = watched.target();
        let pidfd =
            Pid::from_raw(target.pid as i32).and_then(|p| pidfd_open(p, PidfdFlags::empty()).ok());
        // The PID could have been reused between resolving and opening.
        if pidfd.is_some() && matches!(watched, Watched::Attached(_)) && !target.is_alive() {
            return Outcome::Exited(attached_exit(&target, None));
        }
        let cgroup = CgroupFiles::for_pid(target.pid);
        let notifier = match (&pidfd, &cgroup) {
            (Some(_), Some(cg)) => OomNotifier::arm(cg)
                .map_err(|why| {
                    tracing::debug!(pid = target.pid, %why, "no OOM notifier: the OOM-kill counter is read every {OOM_EVERY:?}");
                })
                .ok(),
            _ => None,
        };
        let mut oom_seen = cgroup.as_ref().and_then(CgroupFiles::oom_kill_count);
        let mut last_oom: Option<Instant> = None;
        let mut last_slow = Instant::now();
        // When the counter is to be read again after a notification.
        let mut rechecks: Vec<Instant> = Vec::new();
        let slow_every = match self.spec {
            TargetSpec::PidFile(_) => self.opts.rescan_interval,
            _ if notifier.is_some() => OOM_SAFETY,
            _ => self.opts.rescan_interval.max(OOM_EVERY),
        };
        loop {
            let (exited, notified) = match &pidfd {
                Some(fd) => {
                    let now = Instant::now();
                    let until = rechecks
                        .iter()
                        .fold(slow_every.saturating_sub(last_slow.elapsed()), |d, r| {
                            d.min(r.saturating_duration_since(now))
                        });
                    // While rechecks are due the notifier is left out: a v2
                    // cgroup under pressure (`high`, `max` events) could
                    // otherwise wake the watcher up to 100 times a second.
                    let listen = notifier.as_ref().filter(|_| rechecks.is_empty());
                    let woke = self.stop.wait_with(fd, listen.map(OomNotifier::fd), until);
                    if woke.stopped {
                        return Outcome::Stopped;
                    }
                    (woke.exited, woke.notified)
                }
                None => {
                    if self.stop.wait(TICK) {
                        return Outcome::Stopped;
                    }
                    (!target.is_alive(), false)
                }
            };
            let now = Instant::now();
            if let (true, Some(n)) = (notified, &notifier) {
                n.drain();
                rechecks.extend(OOM_RECHECKS.iter().map(|d| now + *d));
            }
            let due = rechecks.iter().any(|r| *r <= now);
            rechecks.retain(|r| *r > now);
            let slow = last_slow.elapsed() >= slow_every;
            if slow || exited || notified || due {
                if slow {
                    last_slow = now;
                }
                let now_count = cgroup.as_ref().and_then(CgroupFiles::oom_kill_count);
                if let (Some(before), Some(now)) = (oom_seen, now_count) {
                    if now > before {
                        last_oom = Some(Instant::now());
                        self.emit(oom_event(info, now, now - before));
                    }
                }
                if now_count.is_some() {
                    oom_seen = now_count;
                }
            }
            if exited {
                break;
            }
            if slow {
                if let Some(t) = self.pid_file_changed(&target) {
                    return Outcome::Replaced(t);
                }
            }
        }
        let oom_recent = last_oom.is_some_and(|t| t.elapsed() < Duration::from_secs(5));
        let exit = match &mut watched {
            Watched::Child { child, spawned, .. } => {
                // No signal may be forwarded to this PID once it is reaped.
                self.pid.store(0, Ordering::Release);
                let status = match child.wait() {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(pid = target.pid, error = %e, "cannot reap the target");
                        return Outcome::Exited(attached_exit(&target, None));
                    }
                };
                ExitInfo {
                    pid: target.pid,
                    code: status.code(),
                    signal: status.signal(),
                    oom_killed: oom_recent && status.signal() == Some(9),
                    run_time: spawned.elapsed(),
                }
            }
            Watched::Attached(t) => attached_exit(t, Some(oom_recent)),
        };
        Outcome::Exited(exit)
    }

    /// For a `pid_file` target: the new process the file names, if it changed.
    fn pid_file_changed(&mut self, current: &Target) -> Option<Target> {
        let TargetSpec::PidFile(path) = &self.spec else {
            return None;
        };
        let now = stamp(path);
        if now == self.pid_file_stamp {
            return None;
        }
        self.pid_file_stamp = now;
        let pid = read_pid_file(path)?;
        if pid == current.pid {
            return None;
        }
        Target::from_pid(pid).ok()
    }
}

/// The exit of a process that is not sidekick's child: its status only if
/// it is still a zombie (its parent has not reaped it yet).
fn attached_exit(t: &Target, oom_recent: Option<bool>) -> ExitInfo {
    let status = t
        .stat()
        .filter(|s| s.state == 'Z')
        .and_then(|s| s.exit_code);
    let (code, signal) = match status {
        Some(st) if st & 0x7f == 0 => (Some((st >> 8) & 0xff), None),
        Some(st) => (None, Some(st & 0x7f)),
        None => (None, None),
    };
    let oom =
        oom_recent.unwrap_or(false) && (signal == Some(9) || (code.is_none() && signal.is_none()));
    ExitInfo {
        pid: t.pid,
        code,
        signal,
        oom_killed: oom,
        run_time: Duration::from_secs_f64(t.run_time_secs().unwrap_or(0.0)),
    }
}

/// A stop request the watcher can `poll` beside the target's pidfd: a
/// helper thread (blocked, costing nothing) waits on the stop channel and
/// then closes the write end of a pipe, which makes the read end ready.
struct StopPipe {
    read: OwnedFd,
    fired: bool,
}

impl StopPipe {
    fn new(stop: Receiver<()>) -> std::io::Result<StopPipe> {
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        std::thread::Builder::new()
            .name("target-stop".into())
            .spawn(move || {
                // A message or every sender gone: either is a stop.
                let _ = stop.recv();
                drop(write);
            })?;
        Ok(StopPipe { read, fired: false })
    }

    /// Sleeps up to `d`, waking early on a stop request; true if stopping.
    fn wait(&mut self, d: Duration) -> bool {
        if !self.fired {
            let mut fds = [PollFd::new(&self.read, PollFlags::IN)];
            poll_for(&mut fds, d);
            self.fired = !fds[0].revents().is_empty();
        }
        self.fired
    }

    /// Waits up to `d` for the process behind `pidfd` to exit, `notifier`
    /// to be readable, or a stop.
    fn wait_with(
        &mut self,
        pidfd: &OwnedFd,
        notifier: Option<BorrowedFd<'_>>,
        d: Duration,
    ) -> Woke {
        if self.fired {
            return Woke {
                stopped: true,
                ..Woke::default()
            };
        }
        let mut fds = vec![
            PollFd::new(pidfd, PollFlags::IN),
            PollFd::new(&self.read, PollFlags::IN),
        ];
        if let Some(n) = notifier {
            fds.push(PollFd::from_borrowed_fd(n, PollFlags::IN));
        }
        poll_for(&mut fds, d);
        self.fired = !fds[1].revents().is_empty();
        Woke {
            exited: !fds[0].revents().is_empty(),
            stopped: self.fired,
            notified: fds.get(2).is_some_and(|f| !f.revents().is_empty()),
        }
    }
}

/// What ended one wait of the watcher.
#[derive(Debug, Default)]
struct Woke {
    exited: bool,
    stopped: bool,
    notified: bool,
}

impl Stopping for StopPipe {
    fn fired(&mut self) -> bool {
        self.wait(Duration::ZERO)
    }
}

/// `poll` for up to `d`; an interruption is a spurious wake-up, and any
/// other failure is logged and slept out (so a broken poll cannot spin).
fn poll_for(fds: &mut [PollFd<'_>], d: Duration) {
    let ts = Timespec {
        tv_sec: d.as_secs() as _,
        tv_nsec: d.subsec_nanos() as _,
    };
    match poll(fds, Some(&ts)) {
        Ok(_) | Err(rustix::io::Errno::INTR) => {}
        Err(e) => {
            tracing::warn!(error = %e, "poll in the target watcher failed");
            std::thread::sleep(d);
        }
    }
}

fn stamp(path: &std::path::Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok(), m.len(), m.ino()))
}

/// The PID a PID file holds (first word; a trailing newline or more is fine).
pub(crate) fn read_pid_file(path: &std::path::Path) -> Option<u32> {
    let s = std::fs::read_to_string(path).ok()?;
    s.split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
        .filter(|p| *p > 0)
}

fn event(name: &'static str, body: String, severity: i32, mut attrs: Vec<Attr>) -> LogRecord {
    let now = sidekick_pipeline::now_unix_nano();
    attrs.insert(0, Attr::new("event.name", name));
    LogRecord {
        body: Bytes::from(body),
        time_unix_nano: now,
        observed_time_unix_nano: now,
        severity_number: severity,
        severity_text: Some(Cow::Borrowed(if severity >= ERROR {
            "ERROR"
        } else {
            "INFO"
        })),
        source: None,
        attributes: attrs,
    }
}

fn who(info: &TargetInfo) -> String {
    if info.executable_name.is_empty() {
        format!("process {}", info.pid)
    } else {
        format!("process {} ({})", info.pid, info.executable_name)
    }
}

fn start_event(w: &Watched, info: &TargetInfo) -> LogRecord {
    let body = match w {
        Watched::Child { .. } => format!("{} started", who(info)),
        Watched::Attached(t) => format!(
            "watching {}, running for {:.1} s",
            who(info),
            t.run_time_secs().unwrap_or(0.0)
        ),
    };
    event("process.start", body, INFO, info.attributes())
}

fn restart_event(info: &TargetInfo, previous: u32, count: i64) -> LogRecord {
    let mut attrs = info.attributes();
    attrs.push(Attr::new("process.restart.count", count));
    attrs.push(Attr::new(
        "process.restart.previous_pid",
        i64::from(previous),
    ));
    let body = format!(
        "{} started, replacing process {previous} (restart {count})",
        who(info)
    );
    event("process.restart", body, INFO, attrs)
}

fn oom_event(info: &TargetInfo, total: u64, new: u64) -> LogRecord {
    let mut attrs = info.attributes();
    attrs.push(Attr::new(
        "cgroup.memory.oom_kill.count",
        i64::try_from(total).unwrap_or(i64::MAX),
    ));
    let body = format!(
        "the OOM killer killed {new} process{} in the cgroup of {}",
        if new == 1 { "" } else { "es" },
        who(info)
    );
    event("process.oom_kill", body, ERROR, attrs)
}

fn exit_event(exit: &ExitInfo, info: &TargetInfo, crash: &CrashContext) -> LogRecord {
    let mut attrs = info.attributes();
    let run = exit.run_time.as_secs_f64();
    let how = match (exit.code, exit.signal) {
        (Some(c), _) => {
            attrs.push(Attr::new("process.exit.code", i64::from(c)));
            format!("exited with code {c}")
        }
        (None, Some(s)) => {
            attrs.push(Attr::new("process.exit.signal", i64::from(s)));
            format!(
                "was killed by signal {s}{}",
                signal_name(s)
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            )
        }
        (None, None) => "exited (exit code unknown: not sidekick's child)".to_string(),
    };
    let oom = if exit.oom_killed {
        attrs.push(Attr::new("process.oom_killed", true));
        ", killed by the OOM killer"
    } else {
        ""
    };
    attrs.push(Attr::new("process.uptime", (run * 1000.0).round() / 1000.0));
    // Crash context whenever the exit was not known to be clean.
    let clean = exit.code == Some(0) && !exit.oom_killed;
    if !clean {
        let lines = crash.last_lines();
        if !lines.is_empty() {
            attrs.push(Attr::new("process.crash.last_lines", lines));
        }
        let sample = crash.last_sample();
        if !sample.is_empty() {
            attrs.push(Attr::new("process.crash.last_sample", sample));
        }
    }
    let body = format!("{} {how}{oom} after {run:.1} s", who(info));
    event(
        "process.exit",
        body,
        if exit.abnormal() { ERROR } else { INFO },
        attrs,
    )
}

fn signal_name(s: i32) -> Option<&'static str> {
    Some(match s {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => return None,
    })
}
