//! The log tailer end to end: real files changed by real writers (rotation
//! by rename, copytruncate, deletion, inode reuse, a thousand files, odd
//! content), tailed by a real `sidekick run`, shipped over real HTTP to a real
//! `sidekick receive`; every line is accounted for by its sequence number.
//!
//! Some races are made deterministic by stopping the agent (SIGSTOP) while
//! the files change, then letting it go on (SIGCONT): what the tailer then
//! finds is exactly what a slow or busy tailer finds in production.

use sidekick_e2e::{
    line_for, seq_of, serial, wait_until, Agent, AgentConfig, FaultProxy, Receiver, Record,
    Scratch, SeqReport,
};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Bytes per line (without the newline) unless a test says otherwise.
const LINE_LEN: usize = 100;

// ---------------------------------------------------------------------------
// Helpers (small additions to the harness, kept here)
// ---------------------------------------------------------------------------

/// The config every test starts from: fast scans, short batches, files read
/// from their start.
fn config(s: &Scratch, include: &[&Path], receiver: &Receiver) -> AgentConfig {
    let mut cfg = AgentConfig::new(&s.data, include, receiver.endpoint());
    cfg.scan_interval = "200ms";
    cfg.start_at = "beginning";
    cfg.batch_timeout = "100ms";
    cfg.max_records = 2000;
    cfg.max_in_flight = 2;
    cfg
}

/// Appends the lines `seqs` (tagged `tag`) to `file` in one write.
fn append(file: &mut File, seqs: Range<u64>, tag: &str, len: usize) {
    let mut buf = String::with_capacity((seqs.end - seqs.start) as usize * (len + 1));
    for seq in seqs {
        buf.push_str(&line_for(seq, tag, len));
        buf.push('\n');
    }
    file.write_all(buf.as_bytes())
        .expect("append to a log file");
}

fn open_append(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// Waits (at most `timeout`, without panicking) until at least `want`
/// records arrived, then until none has arrived for a while, so that late
/// duplicates are counted too. The caller's assertions then say precisely
/// what is missing.
fn collect(receiver: &Receiver, want: usize, timeout: Duration) -> Vec<Record> {
    let deadline = Instant::now() + timeout;
    while receiver.count() < want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    receiver.settle(Duration::from_millis(800), Duration::from_secs(10))
}

fn bodies(records: &[Record]) -> impl Iterator<Item = &str> {
    records.iter().map(|r| r.body.as_str())
}

/// Records whose `log.file.path` is `path`.
fn of_file<'a>(records: &'a [Record], path: &Path) -> Vec<&'a Record> {
    let p = path.to_str().expect("UTF-8 path");
    records
        .iter()
        .filter(|r| r.file_path.as_deref() == Some(p))
        .collect()
}

fn is_truncated(r: &Record) -> bool {
    matches!(
        r.attributes.get("log.record.truncated"),
        Some(serde_json::Value::Bool(true))
    ) || r
        .attributes
        .get("log.record.truncated")
        .and_then(serde_json::Value::as_str)
        == Some("true")
}

/// `/proc/PID/fd/*` with their link targets.
fn fd_targets(pid: u32) -> Vec<(PathBuf, String)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| {
            let target = std::fs::read_link(e.path()).ok()?;
            Some((e.path(), target.to_string_lossy().into_owned()))
        })
        .collect()
}

fn fd_count(pid: u32) -> usize {
    fd_targets(pid).len()
}

/// The agent's descriptors on files under `dir` (link targets, with
/// " (deleted)" for deleted files).
fn fds_under(pid: u32, dir: &Path) -> Vec<String> {
    let d = dir.to_string_lossy().into_owned();
    fd_targets(pid)
        .into_iter()
        .map(|(_, t)| t)
        .filter(|t| t.starts_with(&d))
        .collect()
}

/// Whether the agent holds a descriptor on inode `(dev, ino)`.
fn holds_inode(pid: u32, dev: u64, ino: u64) -> bool {
    fd_targets(pid)
        .iter()
        .any(|(link, _)| std::fs::metadata(link).is_ok_and(|m| m.dev() == dev && m.ino() == ino))
}

fn dev_ino(path: &Path) -> (u64, u64) {
    let md = std::fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    (md.dev(), md.ino())
}

/// utime + stime of a process, in seconds.
#[allow(unsafe_code)]
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf takes an integer and touches no memory of ours.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    ticks as f64 / hz as f64
}

/// Sends `sig` to the agent (SIGSTOP / SIGCONT: freeze it while the files
/// change, to make a race deterministic).
#[allow(unsafe_code)]
fn signal(agent: &Agent, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(agent.pid()).expect("pid fits");
    // SAFETY: kill(2) takes plain integers; the agent is our unreaped child.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

/// A frozen agent (SIGSTOP) that is let go again (SIGCONT) when dropped,
/// even if the test panics meanwhile.
struct Frozen<'a>(&'a Agent);

impl<'a> Frozen<'a> {
    fn new(agent: &'a Agent) -> Self {
        signal(agent, libc::SIGSTOP);
        // Wait until it is really stopped (state T in /proc/PID/stat).
        let pid = agent.pid();
        wait_until(
            Duration::from_secs(5),
            "the agent to stop (SIGSTOP)",
            || {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| s[s.rfind(')').unwrap_or(0)..].starts_with(") T"))
                    .unwrap_or(false)
            },
            String::new,
        );
        Self(agent)
    }
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        signal(self.0, libc::SIGCONT);
    }
}

#[allow(unsafe_code)]
fn is_root() -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

// ---------------------------------------------------------------------------
// A writer at a steady rate that rotates its file
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rotate {
    /// `app.log.N` → `app.log.N+1`, ..., `app.log` → `app.log.1`, new `app.log`.
    Rename,
    /// `app.log` → `app.log.1`, which is deleted at once; new `app.log`.
    RenameDelete,
    /// Copy `app.log` to `app.log.N`, then truncate `app.log`, between two
    /// writes of the writer itself.
    CopyTruncate,
}

#[derive(Debug, Clone, Copy)]
struct Load {
    /// Lines per second.
    rate: u64,
    rotations: u32,
    period: Duration,
}

/// What the writer tells its caller.
enum Event {
    /// About to rotate; `written` lines so far.
    BeforeRotate { written: u64 },
    /// Rotation number `n` (1-based) done.
    AfterRotate { n: u32 },
}

/// Writes seq 0.. to `path` at `load.rate` lines/s, in one write every 5 ms,
/// rotating every `load.period`, for `(rotations + 1) × period` of writing
/// (time spent in `hook` does not count). Returns the number of lines.
fn write_rotating(path: &Path, load: Load, rotate: Rotate, mut hook: impl FnMut(Event)) -> u64 {
    let tag = "app";
    let mut file = open_append(path);
    let mut seq = 0u64;
    let mut rotated = 0u32;
    let mut paused = Duration::ZERO;
    let start = Instant::now();
    let total = load.period * (load.rotations + 1);
    loop {
        let t = start.elapsed().saturating_sub(paused);
        if t >= total {
            break;
        }
        if rotated < load.rotations && t >= load.period * (rotated + 1) {
            let hook_start = Instant::now();
            hook(Event::BeforeRotate { written: seq });
            paused += hook_start.elapsed();
            let name = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
            match rotate {
                Rotate::Rename => {
                    for n in (1..=rotated).rev() {
                        std::fs::rename(name(n), name(n + 1)).expect("shift a rotated file");
                    }
                    std::fs::rename(path, name(1)).expect("rotate by rename");
                    file = open_append(path);
                }
                Rotate::RenameDelete => {
                    std::fs::rename(path, name(1)).expect("rotate by rename");
                    std::fs::remove_file(name(1)).expect("delete the rotated file");
                    file = open_append(path);
                }
                Rotate::CopyTruncate => {
                    let copy = PathBuf::from(format!("{}.{}", path.display(), rotated + 1));
                    std::fs::copy(path, copy).expect("copy");
                    file.set_len(0).expect("truncate");
                }
            }
            rotated += 1;
            let hook_start = Instant::now();
            hook(Event::AfterRotate { n: rotated });
            paused += hook_start.elapsed();
        }
        let t = start.elapsed().saturating_sub(paused);
        let due = (t.as_secs_f64() * load.rate as f64) as u64;
        if due > seq {
            append(&mut file, seq..due, tag, LINE_LEN);
            seq = due;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    seq
}

// ---------------------------------------------------------------------------
// 1. Rotation by rename under load
// ---------------------------------------------------------------------------

const ROTATION_LOAD: Load = Load {
    rate: 20_000,
    rotations: 10,
    period: Duration::from_secs(1),
};

fn rename_rotation_under_load(rotate: Rotate) {
    let _serial = serial();
    let s = Scratch::new();
    let receiver = Receiver::start();
    let app = s.log("app.log");
    File::create(&app).expect("create app.log");
    // `app.log` only: the rotated names match no glob, so only following
    // the renamed file can save its last lines.
    let cfg = config(&s, &[&app], &receiver);
    let mut agent = Agent::start(&cfg, s.path());
    agent.wait_tailing(&app);

    let started = Instant::now();
    let total = write_rotating(&app, ROTATION_LOAD, rotate, |_| {});
    let wrote = started.elapsed();
    let records = collect(&receiver, total as usize, Duration::from_secs(60));
    let report = SeqReport::new(format!("{rotate:?} rotation"), total, bodies(&records));
    eprintln!(
        "{report}; {total} lines in {wrote:?} ({:.0} lines/s), {} rotations; peak RSS {} KiB",
        total as f64 / wrote.as_secs_f64(),
        ROTATION_LOAD.rotations,
        agent.peak_rss_kib()
    );
    report.assert_exactly_once();
    assert_eq!(
        records.len() as u64,
        total,
        "records beyond the lines written"
    );
    let status = agent.term(Duration::from_secs(15));
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
}

/// A writer at 20,000 lines/s rotates by rename every second, 10 times:
/// every line arrives exactly once.
#[test]
fn rename_rotation_under_load_delivers_every_line_exactly_once() {
    rename_rotation_under_load(Rotate::Rename);
}

/// The same, with the rotated file deleted right after the rename: the
/// tailer still reads it to its end through the descriptor it holds.
#[test]
fn rename_rotation_with_immediate_delete_delivers_every_line_exactly_once() {
    rename_rotation_under_load(Rotate::RenameDelete);
}

/// A file rotated away (renamed, or renamed and deleted) while a new file
/// already took its name is read to its end and then released: no
/// descriptor on it is left after the rotation grace (2 s). The agent is
/// frozen while the files change, so it finds the new `app.log` already in
/// place, as a busy tailer does.
#[test]
fn rotated_and_deleted_files_are_read_to_their_end_and_released() {
    let _serial = serial();
    let s = Scratch::new();
    let receiver = Receiver::start();
    let app = s.log("app.log");
    let mut f = open_append(&app);
    append(&mut f, 0..100, "first", LINE_LEN);
    let cfg = config(&s, &[&app], &receiver);
    let agent = Agent::start(&cfg, s.path());
    receiver.wait_for_logs(100, Duration::from_secs(15));

    {
        let _frozen = Frozen::new(&agent);
        append(&mut f, 100..200, "first", LINE_LEN);
        std::fs::rename(&app, s.log("app.log.1")).expect("rename");
        f = open_append(&app);
        append(&mut f, 200..300, "second", LINE_LEN);
    }
    receiver.wait_for_logs(300, Duration::from_secs(15));
    {
        let _frozen = Frozen::new(&agent);
        append(&mut f, 300..400, "second", LINE_LEN);
        std::fs::rename(&app, s.log("app.log.2")).expect("rename");
        std::fs::remove_file(s.log("app.log.2")).expect("delete");
        f = open_append(&app);
        append(&mut f, 400..500, "third", LINE_LEN);
    }
    drop(f);
    let records = collect(&receiver, 500, Duration::from_secs(15));
    let report = SeqReport::new("app.log and its rotations", 500, bodies(&records));
    eprintln!("{report}");
    report.assert_exactly_once();

    // Grace (2 s) after the end is reached, plus scans: 6 s is plenty.
    let pid = agent.pid();
    let mut left = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(6);
    while Instant::now() < deadline {
        left = fds_under(pid, &s.logs);
        left.retain(|t| Path::new(t) != app);
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        left.is_empty(),
        "6 s after the rotations the agent still holds descriptors on rotated or deleted \
         files: {left:?} (all its descriptors under logs/: {:?})",
        fds_under(pid, &s.logs)
    );
}

// ---------------------------------------------------------------------------
// 2. copytruncate
// ---------------------------------------------------------------------------

/// The writer itself copies and truncates between two of its writes, at
/// 20,000 lines/s, 10 times, without waiting for the tailer: the lines it
/// had not read yet at a truncation are only in the copy (`app.log.N`,
/// which no glob matches), and are read from there. Right after the
/// truncation the writer writes on at full rate. Every line arrives exactly
/// once.
#[test]
fn copytruncate_by_the_writer_under_load_delivers_every_line_exactly_once() {
    let _serial = serial();
    let s = Scratch::new();
    let receiver = Receiver::start();
    let app = s.log("app.log");
    File::create(&app).expect("create app.log");
    let cfg = config(&s, &[&app], &receiver);
    let mut agent = Agent::start(&cfg, s.path());
    agent.wait_tailing(&app);

    let mut behind = 0;
    let total = write_rotating(&app, ROTATION_LOAD, Rotate::CopyTruncate, |ev| {
        if let Event::BeforeRotate { written } = ev {
            behind = behind.max(written.saturating_sub(receiver.count() as u64));
        }
    });
    let records = collect(&receiver, total as usize, Duration::from_secs(60));
    let report = SeqReport::new("copytruncate (by the writer)", total, bodies(&records));
    eprintln!("{report}; most lines not at the receiver yet at a copytruncate: {behind}");
    report.assert_exactly_once();
    let status = agent.term(Duration::from_secs(15));
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
}

/// Waits for lines `0..n` (15 s at most), asserts each arrived exactly
/// once (`name` in the report), then stops the agent, which must exit 0.
fn exactly_once_then_stop(receiver: &Receiver, agent: &mut Agent, name: &str, n: u64) {
    let records = collect(receiver, n as usize, Duration::from_secs(15));
    let report = SeqReport::new(name, n, bodies(&records));
    eprintln!("{report}");
    report.assert_exactly_once();
    let status = agent.term(Duration::from_secs(15));
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
}

/// The lines of a file, by sequence number, as they are on disk now (a torn
/// last line is not counted).
fn seqs_on_disk(path: &Path) -> Vec<u64> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let end = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    data[..end]
        .split(|&b| b == b'\n')
        .filter_map(|l| seq_of(std::str::from_utf8(l).ok()?))
        .collect()
}

/// copytruncate by another process, racing the writer (20,000 lines/s, 10
/// times): no line arrives twice; the lines written between the copy and
/// the truncation (in no file any more) are lost to any tailer. The last
/// lines of a generation the tailer had not read yet when it was truncated
/// are only in the copy (`app.log.N`): they are read from it, so every
/// line of every copy arrives, and the last generation arrives whole. The
/// test prints how many were lost which way.
#[test]
fn copytruncate_racing_the_writer_loses_only_what_copytruncate_loses() {
    let _serial = serial();
    let s = Scratch::new();
    let receiver = Receiver::start();
    let app = s.log("app.log");
    File::create(&app).expect("create app.log");
    let cfg = config(&s, &[&app], &receiver);
    let mut agent = Agent::start(&cfg, s.path());
    agent.wait_tailing(&app);

    let load = ROTATION_LOAD;
    let copies: Vec<PathBuf> = (1..=load.rotations)
        .map(|n| s.log(&format!("app.log.{n}")))
        .collect();
    // The writer never rotates by itself; this thread copies and truncates.
    let steady = Load {
        rotations: 0,
        period: load.period * (load.rotations + 1),
        ..load
    };
    let total = std::thread::scope(|scope| {
        let writer = scope.spawn(|| write_rotating(&app, steady, Rotate::CopyTruncate, |_| {}));
        for copy in &copies {
            std::thread::sleep(load.period);
            std::fs::copy(&app, copy).expect("copy");
            OpenOptions::new()
                .write(true)
                .open(&app)
                .expect("open app.log to truncate it")
                .set_len(0)
                .expect("truncate");
        }
        writer.join().expect("the writer panicked")
    });
    // How many arrive is not known in advance: wait until nothing more comes.
    let records = receiver.settle(Duration::from_millis(2000), Duration::from_secs(60));
    let report = SeqReport::new("copytruncate (racing)", total, bodies(&records));
    let mut delivered = vec![0u32; total as usize];
    for r in &records {
        if let Some(q) = seq_of(&r.body).filter(|&q| q < total) {
            delivered[q as usize] += 1;
        }
    }
    let mut on_disk = vec![false; total as usize];
    let mut unread_at_truncation = 0usize;
    let mut holes = Vec::new();
    for copy in &copies {
        let seqs = seqs_on_disk(copy);
        for &q in &seqs {
            on_disk[q as usize] = true;
        }
        if let Some(i) = seqs.iter().position(|&q| delivered[q as usize] == 0) {
            let rest = &seqs[i..];
            let lost = rest.iter().filter(|&&q| delivered[q as usize] == 0).count();
            unread_at_truncation += lost;
            if lost != rest.len() {
                let after = rest.iter().find(|&&q| delivered[q as usize] > 0);
                holes.push(format!(
                    "{}: seq {} missing but later seq {:?} arrived ({} of its last {} lines \
                     missing)",
                    copy.display(),
                    rest[0],
                    after,
                    lost,
                    rest.len()
                ));
            }
        }
    }
    let last_generation = seqs_on_disk(&app);
    for &q in &last_generation {
        on_disk[q as usize] = true;
    }
    let lost_last: Vec<u64> = last_generation
        .iter()
        .copied()
        .filter(|&q| delivered[q as usize] == 0)
        .collect();
    let in_window = (0..total as usize)
        .filter(|&q| !on_disk[q] && delivered[q] == 0)
        .count();
    eprintln!(
        "{report}\ncopytruncate racing the writer: {total} lines written; lost in the \
         copy→truncate window: {in_window}; lost because still unread at truncation (only in \
         the copies): {unread_at_truncation}; last generation: {} lines, {} lost",
        last_generation.len(),
        lost_last.len()
    );
    assert_eq!(report.duplicates(), 0, "a line arrived twice: {report}");
    assert_eq!(report.foreign, 0, "mangled lines arrived: {report}");
    assert!(
        holes.is_empty(),
        "lines missing at the start of a generation while later ones arrived (a truncation \
         noticed late, read from a stale offset): {holes:#?}"
    );
    assert!(
        lost_last.is_empty(),
        "lines of the last generation (still in app.log) never arrived: {} of them, first \
         {:?}",
        lost_last.len(),
        lost_last.first()
    );
    assert_eq!(
        unread_at_truncation, 0,
        "lines unread when their file was truncated were not read from its copy"
    );
    let status = agent.term(Duration::from_secs(15));
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
}

/// Lines 0..1000 ("first") written to `app`, an agent started with `cfg`,
/// and those lines at the receiver: the file (open to append) and the agent.
fn shipped_first_lines(
    s: &Scratch,
    app: &Path,
    cfg: &AgentConfig,
    receiver: &Receiver,
) -> (File, Agent) {
    let mut f = open_append(app);
    append(&mut f, 0..1000, "first", LINE_LEN);
    let agent = Agent::start(cfg, s.path());
    receiver.wait_for_logs(1000, Duration::from_secs(15));
    (f, agent)
}

/// copytruncate of lines the tailer has not read yet (it is frozen
/// meanwhile, as a tailer held back by backpressure is): they are in the
/// copy only, and are read from it, from where the tailer was; then the
/// file's new content from its start. More is written after the truncation
/// than the tailer had read: the size alone does not show the truncation,
/// the changed first bytes do. Every line arrives exactly once (before the
/// copy was looked for, the 3,000 unread lines were lost).
#[test]
fn copytruncate_of_unread_lines_reads_them_from_the_copy() {
    let _serial = serial();
    let s = Scratch::new();
    let receiver = Receiver::start();
    let app = s.log("app.log");
    let cfg = config(&s, &[&app], &receiver);
    let (mut f, mut agent) = shipped_first_lines(&s, &app, &cfg, &receiver);
    {
        let _frozen = Frozen::new(&agent);
        append(&mut f, 1000..4000, "unread", LINE_LEN);
        std::fs::copy(&app, s.log("app.log.1")).expect("copy");
        f.set_len(0).expect("truncate");
        append(&mut f, 4000..6000, "second", LINE_LEN);
    }
    let records = collect(&receiver, 6000, Duration::from_secs(15));
    let report = SeqReport::new("app.log", 6000, bodies(&records));
    eprintln!("{report}");
    report.assert_exactly_once();
    let copy = s.log("app.log.1");
    let copy = copy.to_str().expect("test paths are UTF-8");
    assert!(
        !records.iter().any(|r| r.file_path.as_deref() == Some(copy)),
        "the copy's lines are the log's: log.file.path is app.log"
    );
    let status = agent.term(Duration::from_secs(15));
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
}

/// Two copytruncates (logrotate shifting `app.log.1` to `app.log.2` in
/// between) while the tailer looks away (it is frozen, as one held back by
/// backpressure through two rotations is): the first copy (`app.log.2`)
/// is read on from where the tailer was, the second (`app.log.1`, a
/// generation it never saw) from its start, then the file, which by then
/// holds as many bytes as the tailer had read (the size shows nothing, the
/// first bytes do). Every line arrives exactly once (before, the second
/// copy's 2,000 lines were lost).
#[test]
fn two_copytruncates_while_held_back_read_both_copies() {
    let _serial = serial();
    let s = Scratch::new();
    let receiver = Receiver::start();
    let app = s.log("app.log");
    let cfg = config(&s, &[&app], &receiver);
    let (mut f, mut agent) = shipped_first_lines(&s, &app, &cfg, &receiver);
    {
        let _frozen = Frozen::new(&agent);
        append(&mut f, 1000..3000, "gen1", LINE_LEN);
        std::fs::copy(&app, s.log("app.log.1")).expect("copy");
        f.set_len(0).expect("truncate");
        append(&mut f, 3000..5000, "gen2", LINE_LEN);
        std::fs::rename(s.log("app.log.1"), s.log("app.log.2")).expect("shift");
        std::fs::copy(&app, s.log("app.log.1")).expect("copy");
        f.set_len(0).expect("truncate");
        append(&mut f, 5000..6000, "gen3", LINE_LEN);
    }
    exactly_once_then_stop(&receiver, &mut agent, "app.log", 6000);
}

/// An output is down; lines read and sent but not acknowledged are in
/// flight when the file is copied and truncated; the tailer finds the copy
/// and lets it go once read; then `kill -9`, the output comes back, and a
/// restart. The copy kept the old content's checkpoint (handed over to it,
/// and kept past the copy's release until acknowledged), so its
/// unacknowledged lines are read from it again: none is lost. Before, the
/// truncated file's checkpoint started over and 3,000 lines were lost.
#[test]
fn kill_9_after_copytruncate_during_an_outage_loses_nothing() {
    let _serial = serial();
    let s = Scratch::new();
    let receiver = Receiver::start();
    let (proxy, outage) = FaultProxy::with_outage(receiver.endpoint());
    let app = s.log("app.log");
    let mut cfg = config(&s, &[&app], &receiver);
    cfg.endpoint = Some(proxy.endpoint());
    let (mut f, mut agent) = shipped_first_lines(&s, &app, &cfg, &receiver);
    outage.begin();
    append(&mut f, 1000..4000, "unacked", LINE_LEN);
    // Read and sent (300 KB: nothing holds the tailer back yet).
    std::thread::sleep(Duration::from_secs(1));
    std::fs::copy(&app, s.log("app.log.1")).expect("copy");
    f.set_len(0).expect("truncate");
    append(&mut f, 4000..6000, "second", LINE_LEN);
    agent.wait_for_stderr_line(
        "the truncation noticed and the copy found",
        Duration::from_secs(15),
        |l| l.contains("from its copy"),
    );
    // Past the copy's release (2 s after its end): its checkpoint is kept
    // because its lines are not acknowledged.
    let (dev, ino) = dev_ino(&s.log("app.log.1"));
    wait_until(
        Duration::from_secs(15),
        "the agent to let the copy go",
        || !holds_inode(agent.pid(), dev, ino),
        || agent.stderr(),
    );
    agent.kill9();
    outage.end();
    drop(agent);

    let mut agent = Agent::start(&cfg, s.path());
    let records = collect(&receiver, 6000, Duration::from_secs(30));
    let report = SeqReport::new("app.log", 6000, bodies(&records));
    eprintln!("{report}");
    report.assert_none_missing();
    let status = agent.term(Duration::from_secs(15));
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
}

/// While the agent runs, `app.log` is copied and truncated after every line
/// was shipped, then rotated by rename while still empty, and the new file
/// is written; then a restart. The copy (made while the agent ran, holding
/// only shipped lines, a few milliseconds older than the truncated file)
/// is not read again: every line arrives exactly once (`tail_model` found
/// 271 duplicates here).
#[test]
fn a_copy_made_while_running_is_not_read_again_after_a_restart() {
    let _serial = serial();
    let s = Scratch::new();
    let receiver = Receiver::start();
    let app = s.log("app.log");
    let mut f = open_append(&app);
    let cfg = config(&s, &[&app], &receiver);
    let mut agent = Agent::start(&cfg, s.path());
    append(&mut f, 0..271, "first", LINE_LEN);
    receiver.wait_for_logs(271, Duration::from_secs(15));
    std::fs::copy(&app, s.log("app.log.c1")).expect("copy");
    f.set_len(0).expect("truncate");
    // Let the agent see the truncation (its checkpoint goes back to 0).
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::rename(&app, s.log("app.log.2")).expect("rename");
    let mut f = open_append(&app);
    append(&mut f, 271..566, "second", LINE_LEN);
    let status = agent.term(Duration::from_secs(15));
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    let mut agent = Agent::start(&cfg, s.path());
    exactly_once_then_stop(&receiver, &mut agent, "app.log and its rotations", 566);
}

/// While the agent is stopped, `app.log` is rotated to `app.log.1`, which
/// is then compressed (deleted, and `app.log.1.gz` written): the `.gz` file
/// may get the checkpointed inode back. Its content is not the checkpoint's,
/// and a compressed rotation is never read: no gzip bytes arrive as lines.
#[test]
fn a_compressed_rotation_with_a_reused_inode_is_not_read() {
    let _serial = serial();
    let s = Scratch::new();
    let receiver = Receiver::start();
    let app = s.log("app.log");
    let mut f = open_append(&app);
    append(&mut f, 0..12, "first", LINE_LEN);
    drop(f);
    let cfg = config(&s, &[&app], &receiver);
    let mut agent = Agent::start(&cfg, s.path());
    receiver.wait_for_logs(12, Duration::from_secs(15));
    let status = agent.term(Duration::from_secs(15));
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    let (dev, ino) = dev_ino(&app);
    std::fs::rename(&app, s.log("app.log.1")).expect("rename");
    append(&mut open_append(&app), 12..20, "new", LINE_LEN);
    std::fs::remove_file(s.log("app.log.1")).expect("delete");
    let gz = s.log("app.log.1.gz");
    let mut reused = false;
    for i in 0..64 {
        let probe = s.log(&format!("probe-{i}.tmp"));
        // gzip's magic, then bytes that would pass for lines.
        std::fs::write(&probe, b"\x1f\x8b\x08\x00 not a log line\nnor this\n").expect("write");
        if dev_ino(&probe) == (dev, ino) {
            std::fs::rename(&probe, &gz).expect("rename the probe into place");
            reused = true;
            break;
        }
    }
    if !reused {
        eprintln!("SKIPPED: the filesystem did not reuse inode {ino} in 64 tries");
        return;
    }
    let mut agent = Agent::start(&cfg, s.path());
    exactly_once_then_stop(&receiver, &mut agent, "app.log after the restart", 20);
}

/// While the agent is stopped, lines are written, then `app.log` is copied
/// and truncated (logrotate's `copytruncate`) and written again. The lines
/// written before the copy exist only in the copy: the restarted agent
/// reads the copy from the checkpoint, and `app.log` from its start. An
/// older rotation that starts like the copy (same first kilobyte) but was
/// made before the agent stopped is left alone. Every line arrives exactly
/// once.
#[test]
fn copytruncate_while_stopped_reads_the_copy_from_the_checkpoint() {
    let _serial = serial();
    let s = Scratch::new();
    let receiver = Receiver::start();
    let app = s.log("app.log");
    let mut f = open_append(&app);
    append(&mut f, 0..12, "first", LINE_LEN);
    // An old rotation holding the same first lines, then others.
    std::fs::copy(&app, s.log("app.log.2")).expect("copy");
    append(
        &mut open_append(&s.log("app.log.2")),
        100..103,
        "stale",
        LINE_LEN,
    );
    let cfg = config(&s, &[&app], &receiver);
    let mut agent = Agent::start(&cfg, s.path());
    receiver.wait_for_logs(12, Duration::from_secs(15));
    let status = agent.term(Duration::from_secs(15));
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    append(&mut f, 12..20, "down", LINE_LEN);
    std::fs::copy(&app, s.log("app.log.1")).expect("copy");
    f.set_len(0).expect("truncate");
    append(&mut f, 20..50, "after", LINE_LEN);
    let mut agent = Agent::start(&cfg, s.path());
    let records = collect(&receiver, 50, Duration::from_secs(15));
    let report = SeqReport::new(
        "app.log and its copy after the restart",
        50,
        bodies(&records),
    );
    eprintln!("{report}");
    report.assert_exactly_once();
    let status = agent.term(Duration::from_secs(15));
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
}

/// Two `copytruncate`s while the agent is stopped (logrotate's order: the
/// first copy moves to `app.log.2`, the second copy becomes `app.log.1`).
/// The first copy holds the checkpointed content and is read from the
/// checkpoint; the second holds only lines written while the agent was down,
/// after the first truncation, and is read from its start; an older
/// rotation made before the stop is left alone.
#[test]
fn two_copytruncates_while_stopped_lose_nothing() {
    let _serial = serial();
    let s = Scratch::new();
    let receiver = Receiver::start();
    let app = s.log("app.log");
    // An old rotation, made long before this run.
    let old = s.log("app.log.3");
    append(&mut open_append(&old), 1000..1010, "old", LINE_LEN);
    let mut f = open_append(&app);
    append(&mut f, 0..12, "first", LINE_LEN);
    let cfg = config(&s, &[&app], &receiver);
    let mut agent = Agent::start(&cfg, s.path());
    receiver.wait_for_logs(12, Duration::from_secs(15));
    let status = agent.term(Duration::from_secs(15));
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    append(&mut f, 12..20, "down", LINE_LEN);
    std::fs::copy(&app, s.log("app.log.1")).expect("copy");
    f.set_len(0).expect("truncate");
    append(&mut f, 20..35, "between", LINE_LEN);
    // A day apart in real life: mtimes a kernel with coarse timestamps
    // (a tick of several ms) can tell apart.
    std::thread::sleep(Duration::from_millis(50));
    std::fs::rename(s.log("app.log.1"), s.log("app.log.2")).expect("rename");
    std::fs::copy(&app, s.log("app.log.1")).expect("copy");
    f.set_len(0).expect("truncate");
    append(&mut f, 35..50, "after", LINE_LEN);
    let mut agent = Agent::start(&cfg, s.path());
    let records = collect(&receiver, 50, Duration::from_secs(15));
    let report = SeqReport::new(
        "app.log and its two copies after the restart",
        50,
        bodies(&records),
    );
    eprintln!("{report}");
    report.assert_exactly_once();
    // Once the copies are read and let go (2 s after their last growth), a
    // further restart reads none of them again.
    std::thread::sleep(Duration::from_secs(3));
    let status = agent.term(Duration::from_secs(15));
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    let mut agent = Agent::start(&cfg, s.path());
    append(&mut f, 50..55, "last", LINE_LEN);
    exactly_once_then_stop(&receiver, &mut agent, "the same after a second restart", 55);
}

/// logrotate's `copytruncate` with `compress` and `delaycompress`, run twice
/// while the agent is stopped: the second run compresses the first copy
/// (`app.log.2.gz`, never read: the lines only it holds are lost, as the
/// README says) and makes a second copy, `app.log.1`, holding only lines
/// written after the first truncation. No copy of the checkpointed content
/// is left, so the rotations written after the run before's last save are
/// read from their start: the second copy's lines arrive, once, and an old
/// rotation stays unread.
#[test]
fn copytruncate_with_delaycompress_twice_while_stopped_reads_the_plain_copy() {
    let _serial = serial();
    let s = Scratch::new();
    let receiver = Receiver::start();
    let app = s.log("app.log");
    // An old rotation, made long before this run.
    let old = s.log("app.log.3");
    append(&mut open_append(&old), 1000..1010, "old", LINE_LEN);
    let mut f = open_append(&app);
    append(&mut f, 0..12, "first", LINE_LEN);
    let cfg = config(&s, &[&app], &receiver);
    let mut agent = Agent::start(&cfg, s.path());
    receiver.wait_for_logs(12, Duration::from_secs(15));
    let status = agent.term(Duration::from_secs(15));
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    // Far from the last save for a kernel with coarse timestamps.
    std::thread::sleep(Duration::from_millis(50));
    // Lines only the first copy holds (numbered beyond the expected range:
    // compressed, they must not arrive).
    append(&mut f, 5000..5008, "gz-only", LINE_LEN);
    std::fs::copy(&app, s.log("app.log.1")).expect("copy");
    f.set_len(0).expect("truncate");
    append(&mut f, 12..27, "between", LINE_LEN);
    std::thread::sleep(Duration::from_millis(50));
    // The second run: the first copy becomes app.log.2 and is compressed
    // one run late, and the log is copied and truncated again.
    std::fs::rename(s.log("app.log.1"), s.log("app.log.2")).expect("rename");
    gzip(&s.log("app.log.2"));
    std::fs::copy(&app, s.log("app.log.1")).expect("copy");
    f.set_len(0).expect("truncate");
    append(&mut f, 27..42, "after", LINE_LEN);
    let mut agent = Agent::start(&cfg, s.path());
    let records = collect(&receiver, 42, Duration::from_secs(15));
    let report = SeqReport::new(
        "app.log and its plain copy after the restart",
        42,
        bodies(&records),
    );
    eprintln!("{report}");
    report.assert_exactly_once();
    let status = agent.term(Duration::from_secs(15));
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
}

/// Compresses `path` to `path.gz` and removes it, as logrotate's `compress`.
fn gzip(path: &Path) {
    let data = std::fs::read(path).expect("read the rotation");
    let mut gz = path.as_os_str().to_owned();
    gz.push(".gz");
    let out = File::create(&gz).expect("create the .gz");
    let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
    enc.write_all(&data).expect("compress");
    enc.finish().expect("compress");
    std::fs::remove_file(path).expect("remove the rotation");
}

/// While the agent is stopped, lines are written, then `app.log` is copied
/// and truncated, refilled, then rotated by rename: the rotated file has the
/// checkpointed inode but not its content (its fingerprint changed). It was
/// truncated and refilled unseen, so the restarted agent reads it from its
/// start, and the copy (the checkpointed content) from the checkpoint: every
/// line arrives exactly once, the ones written before the copy included.
#[test]
fn copytruncate_refill_and_rotation_while_stopped_lose_nothing() {
    let _serial = serial();
    let s = Scratch::new();
    let receiver = Receiver::start();
    let app = s.log("app.log");
    let mut f = open_append(&app);
    append(&mut f, 0..12, "first", LINE_LEN);
    let cfg = config(&s, &[&app], &receiver);
    let mut agent = Agent::start(&cfg, s.path());
    receiver.wait_for_logs(12, Duration::from_secs(15));
    let status = agent.term(Duration::from_secs(15));
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    append(&mut f, 12..20, "down", LINE_LEN);
    std::fs::copy(&app, s.log("app.log.c1")).expect("copy");
    f.set_len(0).expect("truncate");
    append(&mut f, 20..267, "refill", LINE_LEN);
    std::fs::rename(&app, s.log("app.log.1")).expect("rename");
    let mut f = open_append(&app);
    append(&mut f, 267..300, "new", LINE_LEN);
    let agent = Agent::start(&cfg, s.path());
    let records = collect(&receiver, 300, Duration::from_secs(15));
    let report = SeqReport::new(
        "app.log and app.log.1 after the restart",
        300,
        bodies(&records),
    );
    eprintln!("{report}");
    report.assert_exactly_once();
    let mut agent = agent;
    let status = agent.term(Duration::from_secs(15));
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
}

// ---------------------------------------------------------------------------
// 3. kill -9 during rotation
// ---------------------------------------------------------------------------

/// A writer at 20,000 lines/s rotates by rename every second (glob
/// `app.log` only); the agent is killed with SIGKILL right after a rename
/// twice: once it stays down for 1.3 s (another rotation happens while it is
/// down), once it is restarted at once. Nothing is missing, and what is sent
/// twice is bounded by what could have been unacknowledged.
#[test]
fn kill_9_during_rotation_then_restart_loses_nothing() {
    let _serial = serial();
    let s = Scratch::new();
    let receiver = Receiver::start();
    let app = s.log("app.log");
    File::create(&app).expect("create app.log");
    let mut cfg = config(&s, &[&app], &receiver);
    cfg.max_records = 500;
    cfg.max_in_flight = 2;
    let mut agent = Agent::start(&cfg, s.path());
    agent.wait_tailing(&app);
    let load = Load {
        rotations: 8,
        ..ROTATION_LOAD
    };
    let mut stderrs = Vec::new();
    let (tx, rx) = std::sync::mpsc::channel::<u32>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let total = std::thread::scope(|scope| {
        let writer = scope.spawn(move || {
            write_rotating(&app, load, Rotate::Rename, move |ev| {
                if let Event::AfterRotate { n } = ev {
                    // The agent is killed before the writer goes on.
                    let _ = tx.send(n);
                    let _ = go_rx.recv_timeout(Duration::from_secs(30));
                }
            })
        });
        for n in rx.iter() {
            match n {
                2 => {
                    agent.kill9();
                    stderrs.push(agent.stderr());
                    let _ = go_tx.send(());
                    std::thread::sleep(Duration::from_millis(1300));
                    agent = Agent::start(&cfg, s.path());
                }
                5 => {
                    agent.kill9();
                    stderrs.push(agent.stderr());
                    agent = Agent::start(&cfg, s.path());
                    let _ = go_tx.send(());
                }
                _ => {
                    let _ = go_tx.send(());
                }
            }
        }
        writer.join().expect("the writer panicked")
    });
    let records = collect(&receiver, total as usize, Duration::from_secs(30));
    let report = SeqReport::new("app.log and its rotations", total, bodies(&records));
    eprintln!("{report}; {total} lines written");
    let missing: Vec<u64> = {
        let mut seen = vec![false; total as usize];
        for r in &records {
            if let Some(q) = seq_of(&r.body).filter(|&q| q < total) {
                seen[q as usize] = true;
            }
        }
        (0..total).filter(|&q| !seen[q as usize]).collect()
    };
    if !missing.is_empty() {
        // Which generation (file) each missing range was in.
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for &q in &missing {
            match ranges.last_mut() {
                Some((_, end)) if *end + 1 == q => *end = q,
                _ => ranges.push((q, q)),
            }
        }
        eprintln!(
            "missing seq ranges (rotation every {} lines): {ranges:?}",
            load.rate * load.period.as_secs()
        );
    }
    assert!(
        report.missing() == 0 && report.foreign == 0,
        "lines lost across kill -9 during rotation: {report}; stderr of the killed agents:\n{}",
        stderrs.join("\n----\n")
    );
    // Per kill: the requests in flight, the batches waiting for a slot and
    // being filled (max_in_flight + 2 batches), plus one read chunk whose
    // position rides with its last record's batch.
    let per_kill = (u64::from(cfg.max_in_flight) + 2) * u64::from(cfg.max_records)
        + 256 * 1024 / (LINE_LEN as u64 + 1);
    let bound = 2 * per_kill;
    eprintln!(
        "duplicates after 2 kills: {} (bound {bound})",
        report.duplicates()
    );
    assert!(
        report.duplicates() <= bound,
        "{} lines sent twice after 2 kills, more than the {bound} that could have been \
         unacknowledged: {report}",
        report.duplicates()
    );
    let status = agent.term(Duration::from_secs(15));
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
}

// ---------------------------------------------------------------------------
// 4. Inode reuse
// ---------------------------------------------------------------------------

/// Writes `seqs` to a new file in `dir` that gets inode `(dev, ino)` (files
/// that get another inode are kept until the end, so the allocator moves on
/// to ours), and renames it to `dest`. `None` if the filesystem does not
/// hand that inode out again within 64 tries.
fn recreate_with_inode(
    dest: &Path,
    dev: u64,
    ino: u64,
    seqs: Range<u64>,
    tag: &str,
) -> Option<u64> {
    let dir = dest.parent().expect("a parent dir");
    let mut misses = Vec::new();
    let mut found = None;
    for i in 0..64 {
        let probe = dir.join(format!("probe-{i}.tmp"));
        let mut f = open_append(&probe);
        append(&mut f, seqs.clone(), tag, 200);
        drop(f);
        let (d, n) = dev_ino(&probe);
        if d == dev && n == ino {
            std::fs::rename(&probe, dest).expect("rename the probe into place");
            found = Some(n);
            break;
        }
        misses.push(probe);
    }
    for p in misses {
        let _ = std::fs::remove_file(p);
    }
    if found.is_none() {
        eprintln!(
            "SKIPPED: the filesystem of {} did not reuse inode {ino} in 64 tries",
            dir.display()
        );
    }
    found
}

/// A file read and acknowledged is deleted and released; a new file at the
/// same path gets the same inode, with other first bytes, once shorter than
/// the old offset and once longer: it is read from its start both times.
#[test]
fn inode_reused_while_running_is_read_from_its_start() {
    let _serial = serial();
    let s = Scratch::new();
    let receiver = Receiver::start();
    let app = s.log("app.log");
    let mut f = open_append(&app);
    append(&mut f, 0..50, "old", 200);
    drop(f);
    let cfg = config(&s, &[&app], &receiver);
    let mut agent = Agent::start(&cfg, s.path());
    receiver.wait_for_logs(50, Duration::from_secs(15));
    let pid = agent.pid();
    // 50 long lines, then 5 (shorter than the old offset), then 200 (longer).
    let mut next = 50;
    for (n, what) in [(5u64, "shorter"), (200, "longer")] {
        let (dev, ino) = dev_ino(&app);
        std::fs::remove_file(&app).expect("delete app.log");
        wait_until(
            Duration::from_secs(8),
            "the agent to release the deleted app.log (2 s grace)",
            || !holds_inode(pid, dev, ino),
            || format!("its descriptors under logs/: {:?}", fds_under(pid, &s.logs)),
        );
        if recreate_with_inode(&app, dev, ino, next..next + n, what).is_none() {
            return;
        }
        eprintln!("app.log recreated with inode {ino}, {what} than before");
        next += n;
        receiver.wait_for_logs(next as usize, Duration::from_secs(15));
    }
    let records = collect(&receiver, next as usize, Duration::from_secs(5));
    let report = SeqReport::new("app.log (3 files, 1 inode)", next, bodies(&records));
    eprintln!("{report}");
    report.assert_exactly_once();
    let status = agent.term(Duration::from_secs(15));
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
}

/// While the agent is stopped, its file is deleted and a new one with other
/// first bytes gets the same inode (so the checkpoint's `dev:ino` key
/// matches): after the restart the new file is read whole, once shorter
/// than the checkpointed offset, once longer.
fn inode_reused_while_stopped(start_at: &'static str) {
    let _serial = serial();
    let s = Scratch::new();
    let receiver = Receiver::start();
    let app = s.log("app.log");
    File::create(&app).expect("create app.log");
    let mut cfg = config(&s, &[&app], &receiver);
    cfg.start_at = start_at;
    let mut agent = Agent::start(&cfg, s.path());
    agent.wait_tailing(&app);
    let mut f = open_append(&app);
    append(&mut f, 0..50, "old", 200);
    drop(f);
    receiver.wait_for_logs(50, Duration::from_secs(15));
    let mut next = 50;
    for (n, what) in [(5u64, "shorter"), (200, "longer")] {
        let status = agent.term(Duration::from_secs(15));
        assert!(status.success(), "exit status after SIGTERM: {status:?}");
        let (dev, ino) = dev_ino(&app);
        std::fs::remove_file(&app).expect("delete app.log");
        if recreate_with_inode(&app, dev, ino, next..next + n, what).is_none() {
            return;
        }
        eprintln!("app.log recreated with inode {ino} while stopped, {what} than before");
        next += n;
        agent = Agent::start(&cfg, s.path());
        let records = collect(&receiver, next as usize, Duration::from_secs(10));
        let report = SeqReport::new(
            format!("app.log after the restart ({what} file, start_at: {start_at})"),
            next,
            bodies(&records),
        );
        eprintln!("{report}");
        report.assert_exactly_once();
    }
    let status = agent.term(Duration::from_secs(15));
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
}

#[test]
fn inode_reused_while_stopped_is_read_from_its_start() {
    inode_reused_while_stopped("beginning");
}

/// `start_at: end` is for files never seen before; a file that replaced a
/// checkpointed one while the agent was down was written while nobody read
/// it, and must be read whole too.
#[test]
fn inode_reused_while_stopped_is_read_from_its_start_with_start_at_end() {
    inode_reused_while_stopped("end");
}

// ---------------------------------------------------------------------------
// 5. A thousand files
// ---------------------------------------------------------------------------

/// 1,000 files written round-robin (see the two tests below).
fn thousand_files(measure_idle_cpu: bool) {
    let _serial = serial();
    let s = Scratch::new();
    let receiver = Receiver::start();
    let mut cfg = config(&s, &[&s.log_glob()], &receiver);
    // The poll fallback beside inotify stats every file once per scan: idle
    // cost is measured at the low end of realistic intervals (the default
    // is 5s), not at the 200ms the other tests use to go fast.
    cfg.scan_interval = "1s";
    const FILES: usize = 1000;
    const MAX_OPEN: usize = 2000;
    let max_open = MAX_OPEN.to_string();
    let cfg = cfg.with_log_options(&[("max_open_files", &max_open)]);
    let mut agent = Agent::start(&cfg, s.path());
    let pid = agent.pid();
    // The first scan (of an empty directory) is done within a scan interval.
    std::thread::sleep(Duration::from_millis(600));
    let baseline = fd_count(pid);
    let files: Vec<PathBuf> = (0..FILES).map(|i| s.log(&format!("f{i:04}.log"))).collect();
    let mut peak_fds = baseline;
    let started = Instant::now();
    for (rounds, want) in [(0..10u64, 10 * FILES), (10..20, 20 * FILES)] {
        for round in rounds {
            for f in &files {
                let tag = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
                append(&mut open_append(f), round..round + 1, tag, LINE_LEN);
            }
            peak_fds = peak_fds.max(fd_count(pid));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while receiver.count() < want && Instant::now() < deadline {
            peak_fds = peak_fds.max(fd_count(pid));
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let records = receiver.settle(Duration::from_secs(1), Duration::from_secs(10));
    eprintln!(
        "{} records from {FILES} files in {:?}; descriptors: baseline {baseline}, peak \
         {peak_fds}; peak RSS {} KiB",
        records.len(),
        started.elapsed(),
        agent.peak_rss_kib()
    );
    let mut by_file: HashMap<&str, Vec<&str>> = HashMap::new();
    for r in &records {
        by_file
            .entry(r.file_path.as_deref().unwrap_or("(none)"))
            .or_default()
            .push(&r.body);
    }
    let mut bad = Vec::new();
    for f in &files {
        let p = f.to_str().expect("UTF-8 path");
        let got = by_file.remove(p).unwrap_or_default();
        let report = SeqReport::new(p, 20, got);
        if report.missing() + report.duplicates() + report.foreign > 0 {
            bad.push(report.to_string());
        }
    }
    assert!(
        bad.is_empty() && by_file.is_empty(),
        "{} of {FILES} files not delivered exactly once, e.g. {:#?}; records of other \
         paths: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)],
        by_file.keys().take(5).collect::<Vec<_>>()
    );
    assert!(
        peak_fds <= MAX_OPEN + baseline,
        "the agent held {peak_fds} descriptors, over max_open_files {MAX_OPEN} + its \
         baseline {baseline}"
    );

    // Idle: 5 s of nothing to read.
    let idle = if measure_idle_cpu {
        let c0 = cpu_seconds(pid);
        std::thread::sleep(Duration::from_secs(5));
        let idle = (cpu_seconds(pid) - c0) / 5.0;
        eprintln!(
            "idle CPU with {FILES} quiet files: {:.2}% of a core (scan_interval {})",
            idle * 100.0,
            cfg.scan_interval
        );
        idle
    } else {
        0.0
    };

    // Deleted files are read to their end and released.
    for f in &files {
        std::fs::remove_file(f).expect("delete a log file");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut fds = fd_count(pid);
    while fds > baseline + 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        fds = fd_count(pid);
    }
    eprintln!("descriptors after deleting every file: {fds} (baseline {baseline})");
    assert!(
        fds <= baseline + 3,
        "10 s after all {FILES} files were deleted the agent still holds {fds} descriptors \
         (baseline {baseline}); e.g. {:?}",
        fds_under(pid, &s.logs).iter().take(5).collect::<Vec<_>>()
    );
    assert!(
        idle < 0.02,
        "the agent used {:.2}% of a core while {FILES} files were quiet (at most 2%)",
        idle * 100.0
    );
    let status = agent.term(Duration::from_secs(15));
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
}

/// 1,000 files written round-robin, 10 lines each, then 10 more: every line
/// arrives once; the agent's descriptors stay under `max_open_files`; once
/// the files are deleted its descriptors go back to where they were.
/// Once the 1,000 files are quiet the agent uses next to no CPU (under 2% of
/// a core over 5 s, with a 1 s scan interval).
#[test]
fn a_thousand_files_round_robin_then_quiet() {
    thousand_files(true);
}

// ---------------------------------------------------------------------------
// 6. Odd files
// ---------------------------------------------------------------------------

const MIB: usize = 1 << 20;

/// A 50 MiB line with `max_line_bytes: 1MiB`: one record of exactly 1 MiB,
/// flagged `log.record.truncated`, then the next line as usual; the agent's
/// memory does not grow with the line.
#[test]
fn a_50_mib_line_is_cut_to_max_line_bytes() {
    let _serial = serial();
    let s = Scratch::new();
    let receiver = Receiver::start();
    let huge = s.log("huge.log");
    File::create(&huge).expect("create huge.log");
    let cfg =
        config(&s, &[&s.log_glob()], &receiver).with_log_options(&[("max_line_bytes", "1MiB")]);
    let agent = Agent::start(&cfg, s.path());
    agent.wait_tailing(&huge);
    let mut f = open_append(&huge);
    append(&mut f, 0..1, "before", LINE_LEN);
    f.write_all(line_for(1, "huge", 0).as_bytes())
        .expect("write");
    let block = vec![b'x'; MIB];
    for _ in 0..50 {
        f.write_all(&block).expect("write 1 MiB");
    }
    f.write_all(b"\n").expect("write");
    append(&mut f, 2..3, "after", LINE_LEN);
    drop(f);
    let records = collect(&receiver, 3, Duration::from_secs(60));
    let got = of_file(&records, &huge);
    let summary: Vec<(Option<u64>, usize, bool)> = got
        .iter()
        .map(|r| (seq_of(&r.body), r.body.len(), is_truncated(r)))
        .collect();
    let peak = agent.peak_rss_kib();
    eprintln!(
        "records of huge.log (seq, body length, truncated): {summary:?}; peak RSS {peak} KiB"
    );
    assert_eq!(
        summary,
        vec![
            (Some(0), LINE_LEN, false),
            (Some(1), MIB, true),
            (Some(2), LINE_LEN, false)
        ],
        "expected the line before, the 50 MiB line cut to exactly 1 MiB and flagged, the line \
         after"
    );
    assert!(
        peak < 100 * 1024,
        "the agent's peak RSS was {peak} KiB reading a 50 MiB line (at most 100 MiB)"
    );
}

/// 1 MiB + 1 of NUL bytes without a newline, then a newline: one record of
/// 1 MiB flagged truncated, the agent goes on. And the boundary: a line of
/// exactly `max_line_bytes` is whole and not flagged; one byte more is cut
/// and flagged.
#[test]
fn nul_bytes_and_lines_at_max_line_bytes() {
    let _serial = serial();
    let s = Scratch::new();
    let receiver = Receiver::start();
    let nul = s.log("nul.log");
    let exact = s.log("exact.log");
    File::create(&nul).expect("create");
    File::create(&exact).expect("create");
    let cfg =
        config(&s, &[&s.log_glob()], &receiver).with_log_options(&[("max_line_bytes", "1MiB")]);
    let mut agent = Agent::start(&cfg, s.path());
    agent.wait_tailing(&nul);
    let mut f = open_append(&nul);
    f.write_all(&vec![0u8; MIB + 1]).expect("write NULs");
    // Let the agent read the NULs while no newline has come yet.
    std::thread::sleep(Duration::from_millis(600));
    f.write_all(b"\n").expect("write");
    append(&mut f, 1..2, "after", LINE_LEN);
    let mut e = open_append(&exact);
    append(&mut e, 0..1, "exact", MIB);
    append(&mut e, 1..2, "normal", LINE_LEN);
    append(&mut e, 2..3, "one-more", MIB + 1);
    append(&mut e, 3..4, "normal", LINE_LEN);
    let records = collect(&receiver, 6, Duration::from_secs(30));
    assert!(agent.is_running(), "the agent died:\n{}", agent.stderr());
    let nul_recs: Vec<(usize, bool, bool)> = of_file(&records, &nul)
        .iter()
        .map(|r| {
            (
                r.body.len(),
                r.body.bytes().all(|b| b == 0),
                is_truncated(r),
            )
        })
        .collect();
    eprintln!("nul.log (body length, all NUL, truncated): {nul_recs:?}");
    assert_eq!(
        nul_recs,
        vec![(MIB, true, true), (LINE_LEN, false, false)],
        "expected 1 MiB of NULs flagged truncated, then the next line"
    );
    let exact_recs: Vec<(Option<u64>, usize, bool)> = of_file(&records, &exact)
        .iter()
        .map(|r| (seq_of(&r.body), r.body.len(), is_truncated(r)))
        .collect();
    eprintln!("exact.log (seq, body length, truncated): {exact_recs:?}");
    assert_eq!(
        exact_recs,
        vec![
            (Some(0), MIB, false),
            (Some(1), LINE_LEN, false),
            (Some(2), MIB, true),
            (Some(3), LINE_LEN, false)
        ],
        "a line of exactly max_line_bytes is whole; one byte more is cut and flagged"
    );
}

/// Lines that are not UTF-8 arrive, every one, as bytes bodies (the receiver
/// writes them lossily with `"body_bytes":true`); the UTF-8 lines around
/// them are plain strings.
#[test]
fn invalid_utf8_lines_arrive_as_bytes() {
    let _serial = serial();
    let s = Scratch::new();
    let receiver = Receiver::start();
    let bad = s.log("bad.log");
    File::create(&bad).expect("create");
    let cfg = config(&s, &[&s.log_glob()], &receiver);
    let agent = Agent::start(&cfg, s.path());
    agent.wait_tailing(&bad);
    const N: u64 = 200;
    let mut buf = Vec::new();
    for seq in 0..N {
        buf.extend_from_slice(format!("seq={seq:010} ").as_bytes());
        if seq % 2 == 1 {
            buf.extend_from_slice(b"bad \xff\xfe\xc3( \x80 end");
        } else {
            buf.extend_from_slice("good é ✓".as_bytes());
        }
        buf.push(b'\n');
    }
    open_append(&bad).write_all(&buf).expect("write");
    let records = collect(&receiver, N as usize, Duration::from_secs(15));
    let report = SeqReport::for_file(&records, &bad, N);
    eprintln!("{report}");
    report.assert_exactly_once();
    // The flag is not in the harness's Record: read logs.ndjson directly.
    let raw = std::fs::read_to_string(receiver.logs_path()).expect("read logs.ndjson");
    let mut wrong = Vec::new();
    for line in raw.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let body = v["body"].as_str().unwrap_or("");
        let Some(seq) = seq_of(body) else { continue };
        let flagged = v["body_bytes"] == serde_json::Value::Bool(true);
        if flagged != (seq % 2 == 1) {
            wrong.push(format!("seq {seq}: body_bytes {flagged}, body {body:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "body_bytes must be set exactly on the lines that are not UTF-8: {wrong:#?}"
    );
}

/// A 10 MB file deleted while the agent is reading it: no crash, the file is
/// still read to its end through the open descriptor, and other files are
/// tailed as before.
#[test]
fn a_file_deleted_mid_read() {
    let _serial = serial();
    let s = Scratch::new();
    let receiver = Receiver::start();
    let big = s.log("big.log");
    let other = s.log("other.log");
    const BIG: u64 = 100_000;
    let mut f = open_append(&big);
    for start in (0..BIG).step_by(10_000) {
        append(&mut f, start..start + 10_000, "big", LINE_LEN);
    }
    drop(f);
    File::create(&other).expect("create");
    let cfg = config(&s, &[&s.log_glob()], &receiver);
    let mut agent = Agent::start(&cfg, s.path());
    receiver.wait_for_logs(1, Duration::from_secs(15));
    std::fs::remove_file(&big).expect("delete big.log");
    let at_delete = receiver.count();
    eprintln!("big.log deleted with {at_delete} of its {BIG} lines at the receiver");
    append(&mut open_append(&other), 0..100, "other", LINE_LEN);
    let records = collect(&receiver, BIG as usize + 100, Duration::from_secs(60));
    assert!(agent.is_running(), "the agent died:\n{}", agent.stderr());
    let other_report = SeqReport::for_file(&records, &other, 100);
    let big_report = SeqReport::for_file(&records, &big, BIG);
    eprintln!("{other_report}\n{big_report}");
    other_report.assert_exactly_once();
    big_report.assert_exactly_once();
    let status = agent.term(Duration::from_secs(15));
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
}

/// A file the agent may not read: one clear warning naming it, and the
/// other files are tailed. (Root reads it anyway: skipped as root.)
#[test]
fn an_unreadable_file_is_reported_once_and_the_rest_goes_on() {
    if is_root() {
        eprintln!(
            "SKIPPED: running as root, which reads a chmod 000 file anyway; run as another \
             user to test unreadable files"
        );
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let _serial = serial();
    let s = Scratch::new();
    let receiver = Receiver::start();
    let secret = s.log("secret.log");
    let ok = s.log("ok.log");
    append(&mut open_append(&secret), 0..10, "secret", LINE_LEN);
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).expect("chmod 000");
    File::create(&ok).expect("create");
    let cfg = config(&s, &[&s.log_glob()], &receiver);
    let mut agent = Agent::start(&cfg, s.path());
    agent.wait_tailing(&ok);
    append(&mut open_append(&ok), 0..100, "ok", LINE_LEN);
    let records = collect(&receiver, 100, Duration::from_secs(15));
    // A few more scans, to see that the warning is not repeated.
    std::thread::sleep(Duration::from_secs(1));
    let report = SeqReport::for_file(&records, &ok, 100);
    eprintln!("{report}");
    report.assert_exactly_once();
    assert!(
        of_file(&records, &secret).is_empty(),
        "records of an unreadable file"
    );
    let name = secret.to_str().expect("UTF-8 path");
    let stderr = agent.stderr();
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains(name)).collect();
    assert_eq!(
        warnings.len(),
        1,
        "expected exactly one line of stderr naming {name}, got {warnings:#?}"
    );
    let w = warnings[0].to_lowercase();
    assert!(
        w.contains("warn") && (w.contains("permission") || w.contains("denied")),
        "the warning should say it is a permission problem: {}",
        warnings[0]
    );
    assert!(agent.is_running(), "the agent died:\n{stderr}");
    let status = agent.term(Duration::from_secs(15));
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
}
