//! Process figures from `/proc/N`: `stat` (CPU time, faults, threads,
//! memory, start time), `status` (context switches), `io` (disk bytes) and
//! the `fd` directory.
//!
//! With `include_children`, figures are summed over the target and its live
//! descendants; CPU time and faults also count reaped children (`cutime`,
//! `cminflt`...), so they stay monotonic as short-lived children come and go.
//! `/proc/N/io` is owner- or ptrace-readable only: when it cannot be read the
//! disk figures are left out and one warning says why.
//!
//! The target's files are opened once per PID and re-read in place (see
//! `kept.rs`): four system calls a sample (`pread` of `stat`, `status` and
//! `io`, `fstat` of `fd`, whose size is the descriptor count), parsed as
//! bytes without allocating. A handle stays bound to its process: once it is
//! reaped its reads fail (ESRCH) and the path is opened again, which finds
//! a later process given the same PID or nothing (the target is gone). A
//! new target PID gets its own files.

use super::kept::{Buf, Kept, KeptDir};
use super::{point, Clock};
use sidekick_pipeline::{Attr, MetricKind, MetricPoint, MetricValue};
use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), for `/proc/N/stat` times.
pub(crate) fn ticks_per_second() -> f64 {
    procfs::ticks_per_second().max(1) as f64
}

/// The boot time in ns since the epoch (from `/proc/uptime`, which is finer
/// than `/proc/stat`'s whole-second `btime`).
pub(crate) fn boot_time_unix_nano() -> u64 {
    let now = sidekick_pipeline::now_unix_nano();
    let up = uptime_secs().unwrap_or(0.0);
    now.saturating_sub((up * 1e9) as u64)
}

/// Seconds since boot.
pub(crate) fn uptime_secs() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/uptime").ok()?;
    s.split_ascii_whitespace().next()?.parse().ok()
}

/// The figures of one process (or a sum over a process tree).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct Figures {
    pub user_s: f64,
    pub system_s: f64,
    pub rss: u64,
    pub vsize: u64,
    pub threads: u64,
    pub minflt: u64,
    pub majflt: u64,
    pub voluntary: Option<u64>,
    pub involuntary: Option<u64>,
    pub read_bytes: Option<u64>,
    pub write_bytes: Option<u64>,
    pub fds: Option<u64>,
}

fn add_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.saturating_add(b)),
        (a, b) => a.or(b),
    }
}

impl Figures {
    fn add(&mut self, o: &Figures) {
        self.user_s += o.user_s;
        self.system_s += o.system_s;
        self.rss = self.rss.saturating_add(o.rss);
        self.vsize = self.vsize.saturating_add(o.vsize);
        self.threads = self.threads.saturating_add(o.threads);
        self.minflt = self.minflt.saturating_add(o.minflt);
        self.majflt = self.majflt.saturating_add(o.majflt);
        self.voluntary = add_opt(self.voluntary, o.voluntary);
        self.involuntary = add_opt(self.involuntary, o.involuntary);
        self.read_bytes = add_opt(self.read_bytes, o.read_bytes);
        self.write_bytes = add_opt(self.write_bytes, o.write_bytes);
        self.fds = add_opt(self.fds, o.fds);
    }
}

/// The files of one process, kept open between samples (see [`Kept`]).
struct ProcFiles {
    pid: u32,
    stat: Kept,
    status: Kept,
    io: Kept,
    fd: KeptDir,
}

impl ProcFiles {
    fn new(pid: u32) -> Self {
        let dir = PathBuf::from(format!("/proc/{pid}"));
        ProcFiles {
            pid,
            stat: Kept::new(dir.join("stat")),
            status: Kept::new(dir.join("status")),
            io: Kept::new(dir.join("io")),
            fd: KeptDir::new(dir.join("fd")),
        }
    }
}

/// Samples one process (and its descendants, if asked).
pub(crate) struct ProcessSampler {
    include_children: bool,
    tck: f64,
    page_size: u64,
    boot_ns: u64,
    /// (pid, start ticks, when, cpu seconds) of the previous sample.
    prev: Option<(u32, u64, Instant, f64)>,
    /// The target's files; reopened when the PID changes.
    files: Option<ProcFiles>,
    io_warned: bool,
    fd_warned: bool,
    buf: Buf,
}

impl ProcessSampler {
    pub fn new(include_children: bool) -> Self {
        ProcessSampler {
            include_children,
            tck: ticks_per_second(),
            page_size: procfs::page_size().max(1),
            boot_ns: boot_time_unix_nano(),
            prev: None,
            files: None,
            io_warned: false,
            fd_warned: false,
            buf: Buf::new(),
        }
    }

    /// Reads the target `pid`; `with_children` adds its reaped children's
    /// CPU time and faults. Returns the figures and the process start (ticks).
    fn read_target(&mut self, pid: u32, with_children: bool) -> Option<(Figures, u64)> {
        if self.files.as_ref().map(|f| f.pid) != Some(pid) {
            self.files = Some(ProcFiles::new(pid));
        }
        let mut files = self.files.take()?;
        let read = self.read_files_of(&mut files, with_children);
        self.files = Some(files);
        read
    }

    /// Reads one process through its files.
    fn read_files_of(
        &mut self,
        files: &mut ProcFiles,
        with_children: bool,
    ) -> Option<(Figures, u64)> {
        let pid = files.pid;
        let st = parse_stat_fields(files.stat.read(&mut self.buf).ok()?)?;
        let tck = self.tck;
        let mut f = Figures {
            user_s: st.utime as f64 / tck,
            system_s: st.stime as f64 / tck,
            rss: st.rss.saturating_mul(self.page_size),
            vsize: st.vsize,
            threads: st.num_threads,
            minflt: st.minflt,
            majflt: st.majflt,
            ..Figures::default()
        };
        if with_children {
            f.user_s += st.cutime.max(0) as f64 / tck;
            f.system_s += st.cstime.max(0) as f64 / tck;
            f.minflt = f.minflt.saturating_add(st.cminflt);
            f.majflt = f.majflt.saturating_add(st.cmajflt);
        }
        // status: only the two context-switch lines are wanted.
        if let Ok(b) = files.status.read(&mut self.buf) {
            let (v, i) = parse_ctxt_switches(b);
            f.voluntary = v;
            f.involuntary = i;
        }
        match files.io.read(&mut self.buf).map(parse_io) {
            Ok((Some(r), Some(w))) => {
                f.read_bytes = Some(r);
                f.write_bytes = Some(w);
            }
            Ok(_) => {}
            Err(e) if !self.io_warned => {
                self.io_warned = true;
                tracing::warn!(pid, error = %e, "cannot read /proc/{pid}/io: process.disk.io left out (another user's process needs CAP_SYS_PTRACE); warned once");
            }
            Err(_) => {}
        }
        match files.fd.count() {
            Ok(n) => f.fds = Some(n),
            Err(e) if !self.fd_warned => {
                self.fd_warned = true;
                tracing::warn!(pid, error = %e, "cannot list /proc/{pid}/fd: process.unix.file_descriptor.count left out (another user's process needs CAP_DAC_READ_SEARCH or CAP_SYS_PTRACE); warned once");
            }
            Err(_) => {}
        }
        Some((f, st.starttime))
    }

    /// Appends the process figures of `pid` to `out` (nothing if it is gone).
    pub fn sample(&mut self, pid: u32, clock: &Clock, out: &mut Vec<MetricPoint>) {
        let Some((mut f, start_ticks)) = self.read_target(pid, self.include_children) else {
            self.prev = None;
            return;
        };
        if self.include_children {
            for child in descendants(pid) {
                // Children come and go: their files are opened for one read.
                if let Some((cf, _)) = self.read_files_of(&mut ProcFiles::new(child), true) {
                    f.add(&cf);
                }
            }
        }
        let start = self.boot_ns + (start_ticks as f64 / self.tck * 1e9) as u64;
        let now = clock.now;
        let at = Instant::now();
        let cpu = f.user_s + f.system_s;
        let sum = |name, unit, v, attrs| {
            point(
                name,
                unit,
                MetricKind::Sum { monotonic: true },
                v,
                now,
                start,
                attrs,
            )
        };
        let gauge = |name, unit, v| point(name, unit, MetricKind::Gauge, v, now, 0, Vec::new());
        let int = |v: u64| MetricValue::Int(i64::try_from(v).unwrap_or(i64::MAX));

        out.push(sum(
            "process.cpu.time",
            "s",
            MetricValue::Double(f.user_s),
            vec![Attr::new("cpu.mode", "user")],
        ));
        out.push(sum(
            "process.cpu.time",
            "s",
            MetricValue::Double(f.system_s),
            vec![Attr::new("cpu.mode", "system")],
        ));
        if let Some((ppid, pstart, pat, pcpu)) = self.prev {
            let dt = at.duration_since(pat).as_secs_f64();
            if ppid == pid && pstart == start_ticks && dt > 0.0 {
                let u = ((cpu - pcpu) / dt).max(0.0);
                out.push(gauge(
                    "process.cpu.utilization",
                    "1",
                    MetricValue::Double(u),
                ));
            }
        }
        self.prev = Some((pid, start_ticks, at, cpu));
        out.push(gauge("process.memory.usage", "By", int(f.rss)));
        out.push(gauge("process.memory.virtual", "By", int(f.vsize)));
        if let (Some(r), Some(w)) = (f.read_bytes, f.write_bytes) {
            out.push(sum(
                "process.disk.io",
                "By",
                int(r),
                vec![Attr::new("disk.io.direction", "read")],
            ));
            out.push(sum(
                "process.disk.io",
                "By",
                int(w),
                vec![Attr::new("disk.io.direction", "write")],
            ));
        }
        out.push(gauge("process.thread.count", "{thread}", int(f.threads)));
        if let Some(n) = f.fds {
            out.push(gauge(
                "process.unix.file_descriptor.count",
                "{file_descriptor}",
                int(n),
            ));
        }
        if let (Some(v), Some(i)) = (f.voluntary, f.involuntary) {
            out.push(sum(
                "process.context_switches",
                "{context_switch}",
                int(v),
                vec![Attr::new("process.context_switch_type", "voluntary")],
            ));
            out.push(sum(
                "process.context_switches",
                "{context_switch}",
                int(i),
                vec![Attr::new("process.context_switch_type", "involuntary")],
            ));
        }
        out.push(sum(
            "process.paging.faults",
            "{fault}",
            int(f.majflt),
            vec![Attr::new("process.paging.fault_type", "major")],
        ));
        out.push(sum(
            "process.paging.faults",
            "{fault}",
            int(f.minflt),
            vec![Attr::new("process.paging.fault_type", "minor")],
        ));
        let uptime = now.saturating_sub(start) as f64 / 1e9;
        out.push(gauge("process.uptime", "s", MetricValue::Double(uptime)));
    }
}

/// The fields of `/proc/N/stat` the sampler reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StatFields {
    pub minflt: u64,
    pub cminflt: u64,
    pub majflt: u64,
    pub cmajflt: u64,
    pub utime: u64,
    pub stime: u64,
    pub cutime: i64,
    pub cstime: i64,
    pub num_threads: u64,
    pub starttime: u64,
    pub vsize: u64,
    /// Resident set, pages.
    pub rss: u64,
}

/// Parses `/proc/N/stat` (bytes: the command name may be anything). The
/// name may hold spaces and parentheses, so fields are counted from the
/// last `)`; `None` if a field is missing or not a number.
pub(crate) fn parse_stat_fields(s: &[u8]) -> Option<StatFields> {
    let close = memchr::memrchr(b')', s)?;
    // Field 3 (state) is the first after the name.
    let mut it = s[close + 1..]
        .split(|c| c.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    let mut fields = [&b""[..]; 22];
    for slot in fields.iter_mut() {
        *slot = it.next()?;
    }
    // Field k (1-based, man 5 proc) is fields[k - 3].
    let u = |k: usize| parse_dec(fields[k - 3]);
    let i = |k: usize| -> Option<i64> {
        match fields[k - 3] {
            [b'-', rest @ ..] => parse_dec(rest)
                .and_then(|v| i64::try_from(v).ok())
                .map(|v| -v),
            d => parse_dec(d).and_then(|v| i64::try_from(v).ok()),
        }
    };
    Some(StatFields {
        minflt: u(10)?,
        cminflt: u(11)?,
        majflt: u(12)?,
        cmajflt: u(13)?,
        utime: u(14)?,
        stime: u(15)?,
        cutime: i(16)?,
        cstime: i(17)?,
        num_threads: u(20)?,
        starttime: u(22)?,
        vsize: u(23)?,
        rss: u(24)?,
    })
}

/// An unsigned decimal number, nothing else (no sign, no spaces).
fn parse_dec(b: &[u8]) -> Option<u64> {
    if b.is_empty() {
        return None;
    }
    b.iter().try_fold(0u64, |acc, c| {
        let d = c.wrapping_sub(b'0');
        (d < 10).then_some(())?;
        acc.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// The value of the first `key` line (`key` ends with its `:`) of a
/// `Key:  value` file, leading and trailing blanks trimmed.
fn colon_value(s: &[u8], key: &[u8]) -> Option<u64> {
    s.split(|c| *c == b'\n')
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| parse_dec(v.trim_ascii()))
}

/// `voluntary_ctxt_switches` and `nonvoluntary_ctxt_switches` from a
/// `/proc/N/status` text.
pub(crate) fn parse_ctxt_switches(status: &[u8]) -> (Option<u64>, Option<u64>) {
    (
        colon_value(status, b"voluntary_ctxt_switches:"),
        colon_value(status, b"nonvoluntary_ctxt_switches:"),
    )
}

/// `read_bytes` and `write_bytes` from a `/proc/N/io` text.
pub(crate) fn parse_io(io: &[u8]) -> (Option<u64>, Option<u64>) {
    (
        colon_value(io, b"read_bytes:"),
        colon_value(io, b"write_bytes:"),
    )
}

/// The live descendants of `root` (one scan of `/proc`).
pub(crate) fn descendants(root: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    let mut buf = String::new();
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        buf.clear();
        let Ok(mut f) = std::fs::File::open(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if f.read_to_string(&mut buf).is_err() {
            continue;
        }
        if let Some(s) = crate::target::parse_stat(&buf) {
            if s.state != 'Z' && s.state != 'X' {
                parent_of.push((pid, s.ppid));
            }
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found.remove(0);
    found
}
