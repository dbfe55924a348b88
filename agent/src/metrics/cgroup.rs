//! The target's cgroup: where its files are, and what they say.
//!
//! A process's cgroups come from `/proc/N/cgroup`; where each hierarchy is
//! mounted comes from `/proc/self/mountinfo`. A controller is bound to
//! exactly one hierarchy, so each controller is read from the v1 hierarchy
//! that mounts it when there is one (hybrid hosts) and from the unified (v2)
//! hierarchy otherwise; PSI files only exist on v2.
//!
//! Every file format has a parser here that is a pure function over a
//! string: they never panic, whatever the content, and an unparsable or
//! missing figure is simply not reported.
//!
//! Invariant: a cgroup outside sidekick's cgroup namespace (a path with
//! `..`) is not guessed at: it has no files rather than someone else's.

use super::kept::{Buf, Kept};
use super::{point, Clock};
use sidekick_pipeline::{Attr, MetricKind, MetricPoint, MetricValue};
use std::path::{Path, PathBuf};

/// One line of `/proc/N/cgroup`: `hierarchy-ID:controller-list:cgroup-path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupEntry {
    /// Hierarchy id (0 for the unified v2 hierarchy).
    pub hierarchy: u32,
    /// Controllers bound to the hierarchy (`cpu`, `cpuacct`, `name=systemd`); empty for v2.
    pub controllers: Vec<String>,
    /// The cgroup's path, relative to the reader's cgroup namespace root.
    pub path: String,
}

/// Parses `/proc/N/cgroup`; malformed lines are skipped.
pub fn parse_proc_cgroup(s: &str) -> Vec<CgroupEntry> {
    s.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let hierarchy = it.next()?.trim().parse().ok()?;
            let ctrl = it.next()?;
            let path = it.next()?;
            let controllers = ctrl
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
            Some(CgroupEntry {
                hierarchy,
                controllers,
                path: path.to_string(),
            })
        })
        .collect()
}

/// A mounted cgroup hierarchy, from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// The cgroup this mount shows at its mount point (field 4 of mountinfo).
    pub root: String,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// A cgroup2 (unified) mount.
    pub v2: bool,
    /// v1: the super options (controllers among them, `name=systemd`, `rw`...).
    pub options: Vec<String>,
}

/// Parses the cgroup mounts out of a mountinfo file; other lines are skipped.
pub fn parse_mountinfo(s: &str) -> Vec<CgroupMount> {
    s.lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            if sep < 5 {
                return None;
            }
            let fstype = *fields.get(sep + 1)?;
            let v2 = match fstype {
                "cgroup2" => true,
                "cgroup" => false,
                _ => return None,
            };
            let options = fields
                .get(sep + 3)
                .map(|o| o.split(',').map(str::to_string).collect())
                .unwrap_or_default();
            Some(CgroupMount {
                root: unescape_mount(fields[3]),
                mount_point: PathBuf::from(unescape_mount(fields[4])),
                v2,
                options,
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = oct.iter().fold(0u32, |a, c| a * 8 + u32::from(c - b'0'));
                if let Ok(byte) = u8::try_from(v) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where a cgroup path of a hierarchy is on disk, or `None` when it is
/// outside what this mount shows.
fn locate(mount: &CgroupMount, path: &str, exists: &dyn Fn(&Path) -> bool) -> Option<PathBuf> {
    if path.split('/').any(|c| c == "..") {
        return None; // outside our cgroup namespace: not ours to guess
    }
    // A mount of a sub-tree (docker without a cgroup namespace mounts
    // /docker/<id> at /sys/fs/cgroup/...) shows paths below its root.
    let rel = match path.strip_prefix(mount.root.trim_end_matches('/')) {
        Some(r) if r.is_empty() || r.starts_with('/') => r,
        _ => path,
    };
    let dir = mount.mount_point.join(rel.trim_start_matches('/'));
    exists(&dir).then_some(dir)
}

/// Which hierarchy a controller's files are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Dir {
    V1(PathBuf),
    V2(PathBuf),
}

/// The directories holding one process's cgroup files, resolved once per
/// target (see [`CgroupFiles::for_pid`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupFiles {
    /// The cgroup path (unified hierarchy first, else the memory or cpu
    /// one): where `container.id` is found.
    pub path: String,
    cpu: Option<Dir>,
    cpuacct: Option<Dir>,
    memory: Option<Dir>,
    pids: Option<Dir>,
    io: Option<Dir>,
    psi: Option<PathBuf>,
}

impl CgroupFiles {
    /// Resolves the cgroup of `pid` as sidekick sees it. `None` if the
    /// process is gone or nothing is mounted.
    pub fn for_pid(pid: u32) -> Option<CgroupFiles> {
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let mi = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let f = Self::resolve(&cg, &mi, &|p: &Path| p.is_dir());
        f.any().then_some(f)
    }

    /// Resolution as a pure function of the two files (and which directories
    /// exist), so it is testable on captured samples.
    pub fn resolve(proc_cgroup: &str, mountinfo: &str, exists: &dyn Fn(&Path) -> bool) -> Self {
        let entries = parse_proc_cgroup(proc_cgroup);
        let mounts = parse_mountinfo(mountinfo);
        let v2_entry = entries
            .iter()
            .find(|e| e.hierarchy == 0 && e.controllers.is_empty());
        let v2_dir = v2_entry.and_then(|e| {
            mounts
                .iter()
                .filter(|m| m.v2)
                .find_map(|m| locate(m, &e.path, exists))
        });
        let v1_dir = |controller: &str| -> Option<PathBuf> {
            let entry = entries
                .iter()
                .find(|e| e.hierarchy != 0 && e.controllers.iter().any(|c| c == controller))?;
            mounts
                .iter()
                .filter(|m| !m.v2 && m.options.iter().any(|o| o == controller))
                .find_map(|m| locate(m, &entry.path, exists))
        };
        // A controller mounted on a v1 hierarchy is not on v2 (the kernel
        // binds each controller to one hierarchy).
        let v1_mounted = |controller: &str| {
            mounts
                .iter()
                .any(|m| !m.v2 && m.options.iter().any(|o| o == controller))
        };
        let pick = |v1: &str| -> Option<Dir> {
            if v1_mounted(v1) {
                v1_dir(v1).map(Dir::V1)
            } else {
                v2_dir.clone().map(Dir::V2)
            }
        };
        let path = v2_entry
            .or_else(|| {
                entries
                    .iter()
                    .find(|e| e.controllers.iter().any(|c| c == "memory" || c == "cpu"))
            })
            .map(|e| e.path.clone())
            .unwrap_or_default();
        CgroupFiles {
            path,
            cpu: pick("cpu"),
            cpuacct: if v1_mounted("cpuacct") {
                v1_dir("cpuacct").map(Dir::V1)
            } else {
                // v2 core stats (cpu.stat usage_usec...) exist without the
                // cpu controller.
                v2_dir.clone().map(Dir::V2)
            },
            memory: pick("memory"),
            pids: pick("pids"),
            io: pick("blkio"),
            psi: v2_dir.clone(),
        }
    }

    fn any(&self) -> bool {
        self.cpu.is_some()
            || self.cpuacct.is_some()
            || self.memory.is_some()
            || self.pids.is_some()
            || self.io.is_some()
            || self.psi.is_some()
    }

    /// The memory controller's directory, and whether it is on the unified
    /// (v2) hierarchy.
    pub fn memory_dir(&self) -> Option<(&Path, bool)> {
        match self.memory.as_ref()? {
            Dir::V1(d) => Some((d.as_path(), false)),
            Dir::V2(d) => Some((d.as_path(), true)),
        }
    }

    /// The cgroup's OOM-kill counter (v2 `memory.events` `oom_kill`, v1
    /// `memory.oom_control` `oom_kill`), if the kernel keeps one.
    pub fn oom_kill_count(&self) -> Option<u64> {
        let mut buf = String::new();
        match self.memory.as_ref()? {
            Dir::V2(d) => read(&d.join("memory.events"), &mut buf)
                .then(|| keyed(&buf, "oom_kill"))
                .flatten(),
            Dir::V1(d) => read(&d.join("memory.oom_control"), &mut buf)
                .then(|| keyed(&buf, "oom_kill"))
                .flatten(),
        }
    }
}

/// v2 `cpu.stat`, `cpu.max`.
enum CpuV2 {
    /// `cpu.stat` is the one [`CpuAcct::V2`] reads (same directory): its
    /// figures are taken from that read.
    SharedStat {
        max: Kept,
    },
    Own {
        stat: Kept,
        max: Kept,
    },
}

/// Where the CPU time comes from.
enum CpuAcct {
    V2 { stat: Kept },
    V1 { usage: Kept, user: Kept, sys: Kept },
}

/// Throttling and the CPU limit.
enum Cpu {
    V2(CpuV2),
    V1 {
        stat: Kept,
        quota: Kept,
        period: Kept,
    },
}

enum Memory {
    V2 {
        current: Kept,
        max: Kept,
        high: Kept,
        stat: Kept,
        events: Kept,
    },
    V1 {
        usage: Kept,
        limit: Kept,
        stat: Kept,
        oom: Kept,
    },
}

enum Io {
    V2(Kept),
    /// (bytes, operations) of the throttle policy, then of CFQ/BFQ's.
    V1 {
        throttle: [Kept; 2],
        legacy: [Kept; 2],
    },
}

/// The cgroup figures of one target, its files kept open between samples
/// (one `pread` per file per sample; see [`Kept`]).
pub struct CgroupReader {
    cpuacct: Option<CpuAcct>,
    cpu: Option<Cpu>,
    memory: Option<Memory>,
    pids: Option<[Kept; 2]>,
    io: Option<Io>,
    psi: Option<[Kept; 3]>,
    buf: Buf,
}

fn dir_path(d: &Dir) -> &Path {
    match d {
        Dir::V1(p) | Dir::V2(p) => p,
    }
}

impl CgroupReader {
    /// A reader of the files of `files`; each is opened on its first read.
    pub fn new(files: &CgroupFiles) -> Self {
        let kept = |d: &Path, name: &str| Kept::new(d.join(name));
        let cpuacct = files.cpuacct.as_ref().map(|d| match d {
            Dir::V2(d) => CpuAcct::V2 {
                stat: kept(d, "cpu.stat"),
            },
            Dir::V1(d) => CpuAcct::V1 {
                usage: kept(d, "cpuacct.usage"),
                user: kept(d, "cpuacct.usage_user"),
                sys: kept(d, "cpuacct.usage_sys"),
            },
        });
        let cpu = files.cpu.as_ref().map(|d| match d {
            Dir::V2(d) => {
                let shared = matches!(&files.cpuacct, Some(Dir::V2(a)) if a == d);
                Cpu::V2(if shared {
                    CpuV2::SharedStat {
                        max: kept(d, "cpu.max"),
                    }
                } else {
                    CpuV2::Own {
                        stat: kept(d, "cpu.stat"),
                        max: kept(d, "cpu.max"),
                    }
                })
            }
            Dir::V1(d) => Cpu::V1 {
                stat: kept(d, "cpu.stat"),
                quota: kept(d, "cpu.cfs_quota_us"),
                period: kept(d, "cpu.cfs_period_us"),
            },
        });
        let memory = files.memory.as_ref().map(|d| match d {
            Dir::V2(d) => Memory::V2 {
                current: kept(d, "memory.current"),
                max: kept(d, "memory.max"),
                high: kept(d, "memory.high"),
                stat: kept(d, "memory.stat"),
                events: kept(d, "memory.events"),
            },
            Dir::V1(d) => Memory::V1 {
                usage: kept(d, "memory.usage_in_bytes"),
                limit: kept(d, "memory.limit_in_bytes"),
                stat: kept(d, "memory.stat"),
                oom: kept(d, "memory.oom_control"),
            },
        });
        let pids = files
            .pids
            .as_ref()
            .map(dir_path)
            .map(|d| [kept(d, "pids.current"), kept(d, "pids.max")]);
        let io = files.io.as_ref().map(|d| match d {
            Dir::V2(d) => Io::V2(kept(d, "io.stat")),
            Dir::V1(d) => Io::V1 {
                throttle: [
                    kept(d, "blkio.throttle.io_service_bytes_recursive"),
                    kept(d, "blkio.throttle.io_serviced_recursive"),
                ],
                legacy: [
                    kept(d, "blkio.io_service_bytes_recursive"),
                    kept(d, "blkio.io_serviced_recursive"),
                ],
            },
        });
        let psi = files
            .psi
            .as_ref()
            .map(|d| PSI_FILES.map(|(file, _)| kept(d, file)));
        CgroupReader {
            cpuacct,
            cpu,
            memory,
            pids,
            io,
            psi,
            buf: Buf::new(),
        }
    }

    /// Appends every figure the files give to `out`.
    pub fn sample(&mut self, clock: &Clock, start: u64, out: &mut Vec<MetricPoint>) {
        let now = clock.now;
        let sum = |name: &'static str, unit: &'static str, v: MetricValue| {
            point(
                name,
                unit,
                MetricKind::Sum { monotonic: true },
                v,
                now,
                start,
                Vec::new(),
            )
        };
        let gauge = |name: &'static str, unit: &'static str, v: MetricValue| {
            point(name, unit, MetricKind::Gauge, v, now, 0, Vec::new())
        };
        let secs = |v: u64, per_sec: f64| MetricValue::Double(v as f64 / per_sec);
        let buf = &mut self.buf;

        // CPU time.
        let mut cpu_stat_v2 = None;
        match &mut self.cpuacct {
            Some(CpuAcct::V2 { stat }) => {
                let s = stat.read_str(buf).map(CpuStatV2::parse);
                cpu_stat_v2 = s;
                let s = s.unwrap_or_default();
                for (name, v) in [
                    ("cgroup.cpu.usage", s.usage_usec),
                    ("cgroup.cpu.user", s.user_usec),
                    ("cgroup.cpu.system", s.system_usec),
                ] {
                    if let Some(v) = v {
                        out.push(sum(name, "s", secs(v, 1e6)));
                    }
                }
            }
            Some(CpuAcct::V1 { usage, user, sys }) => {
                for (file, name) in [
                    (usage, "cgroup.cpu.usage"),
                    (user, "cgroup.cpu.user"),
                    (sys, "cgroup.cpu.system"),
                ] {
                    if let Some(v) = file.read_str(buf).and_then(parse_u64) {
                        out.push(sum(name, "s", secs(v, 1e9)));
                    }
                }
            }
            None => {}
        }
        // Throttling and the CPU limit.
        match &mut self.cpu {
            Some(Cpu::V2(v2)) => {
                let (stat, max) = match v2 {
                    CpuV2::SharedStat { max } => (cpu_stat_v2, max),
                    CpuV2::Own { stat, max } => (stat.read_str(buf).map(CpuStatV2::parse), max),
                };
                if let Some(s) = stat {
                    if let Some(v) = s.nr_throttled {
                        out.push(sum("cgroup.cpu.throttled.periods", "{period}", int(v)));
                    }
                    if let Some(v) = s.throttled_usec {
                        out.push(sum("cgroup.cpu.throttled.time", "s", secs(v, 1e6)));
                    }
                }
                if let Some(c) = max.read_str(buf).and_then(parse_cpu_max) {
                    out.push(gauge("cgroup.cpu.limit", "{cpu}", MetricValue::Double(c)));
                }
            }
            Some(Cpu::V1 {
                stat,
                quota,
                period,
            }) => {
                if let Some(s) = stat.read_str(buf) {
                    if let Some(v) = keyed(s, "nr_throttled") {
                        out.push(sum("cgroup.cpu.throttled.periods", "{period}", int(v)));
                    }
                    if let Some(v) = keyed(s, "throttled_time") {
                        out.push(sum("cgroup.cpu.throttled.time", "s", secs(v, 1e9)));
                    }
                }
                let q = quota.read_str(buf).map(parse_i64);
                let p = period.read_str(buf).map(parse_i64);
                if let (Some(q), Some(p)) = (q, p) {
                    if let Some(c) = cfs_limit(q, p) {
                        out.push(gauge("cgroup.cpu.limit", "{cpu}", MetricValue::Double(c)));
                    }
                }
            }
            None => {}
        }
        // Memory.
        match &mut self.memory {
            Some(Memory::V2 {
                current,
                max,
                high,
                stat,
                events,
            }) => {
                if let Some(v) = current.read_str(buf).and_then(parse_u64) {
                    out.push(gauge("cgroup.memory.usage", "By", int(v)));
                }
                if let Some(v) = max.read_str(buf).and_then(parse_limit) {
                    out.push(gauge("cgroup.memory.limit", "By", int(v)));
                }
                if let Some(v) = high.read_str(buf).and_then(parse_limit) {
                    out.push(gauge("cgroup.memory.high", "By", int(v)));
                }
                if let Some(s) = stat.read_str(buf) {
                    if let Some(v) = keyed(s, "anon") {
                        out.push(gauge("cgroup.memory.anon", "By", int(v)));
                    }
                    if let Some(v) = keyed(s, "file") {
                        out.push(gauge("cgroup.memory.file", "By", int(v)));
                    }
                }
                if let Some(s) = events.read_str(buf) {
                    if let Some(v) = keyed(s, "oom") {
                        out.push(sum("cgroup.memory.oom.count", "{event}", int(v)));
                    }
                    if let Some(v) = keyed(s, "oom_kill") {
                        out.push(sum("cgroup.memory.oom_kill.count", "{event}", int(v)));
                    }
                }
            }
            Some(Memory::V1 {
                usage,
                limit,
                stat,
                oom,
            }) => {
                if let Some(v) = usage.read_str(buf).and_then(parse_u64) {
                    out.push(gauge("cgroup.memory.usage", "By", int(v)));
                }
                if let Some(v) = limit.read_str(buf).and_then(parse_limit) {
                    out.push(gauge("cgroup.memory.limit", "By", int(v)));
                }
                if let Some(s) = stat.read_str(buf) {
                    // Hierarchical figures (total_*) include sub-cgroups, as v2's do.
                    if let Some(v) = keyed(s, "total_rss").or_else(|| keyed(s, "rss")) {
                        out.push(gauge("cgroup.memory.anon", "By", int(v)));
                    }
                    if let Some(v) = keyed(s, "total_cache").or_else(|| keyed(s, "cache")) {
                        out.push(gauge("cgroup.memory.file", "By", int(v)));
                    }
                }
                if let Some(v) = oom.read_str(buf).and_then(|s| keyed(s, "oom_kill")) {
                    out.push(sum("cgroup.memory.oom_kill.count", "{event}", int(v)));
                }
            }
            None => {}
        }
        // Pids (same files on v1 and v2).
        if let Some([current, max]) = &mut self.pids {
            if let Some(v) = current.read_str(buf).and_then(parse_u64) {
                out.push(gauge("cgroup.pids.current", "{process}", int(v)));
            }
            if let Some(v) = max.read_str(buf).and_then(parse_limit) {
                out.push(gauge("cgroup.pids.limit", "{process}", int(v)));
            }
        }
        // Block I/O.
        let io = match &mut self.io {
            Some(Io::V2(stat)) => stat.read_str(buf).map(parse_io_stat),
            Some(Io::V1 { throttle, legacy }) => {
                let pair = |[bytes, ops]: &mut [Kept; 2], buf: &mut Buf| {
                    let b = bytes.read_str(buf).map(parse_blkio)?;
                    let o = ops.read_str(buf).map(parse_blkio)?;
                    Some(IoTotals {
                        rbytes: b.0,
                        wbytes: b.1,
                        rios: o.0,
                        wios: o.1,
                    })
                };
                pair(throttle, buf).or_else(|| pair(legacy, buf))
            }
            None => None,
        };
        if let Some(io) = io {
            for (name, unit, r, w) in [
                ("cgroup.io.bytes", "By", io.rbytes, io.wbytes),
                ("cgroup.io.operations", "{operation}", io.rios, io.wios),
            ] {
                for (dir, v) in [("read", r), ("write", w)] {
                    out.push(point(
                        name,
                        unit,
                        MetricKind::Sum { monotonic: true },
                        int(v),
                        now,
                        start,
                        vec![Attr::new("disk.io.direction", dir)],
                    ));
                }
            }
        }
        // Pressure stall information.
        if let Some(files) = &mut self.psi {
            for (file, (_, names)) in files.iter_mut().zip(PSI_FILES) {
                let Some(s) = file.read_str(buf) else {
                    continue;
                };
                let p = parse_pressure(s);
                for (line, [total, avg10]) in [(p.some, names[0]), (p.full, names[1])] {
                    let Some(line) = line else { continue };
                    out.push(sum(total, "s", secs(line.total_us, 1e6)));
                    out.push(gauge(avg10, "%", MetricValue::Double(line.avg10)));
                }
            }
        }
    }
}

/// PSI files and the names of their (some, full) × (total, avg10) metrics.
const PSI_FILES: [(&str, [[&str; 2]; 2]); 3] = [
    (
        "cpu.pressure",
        [
            [
                "cgroup.pressure.cpu.some.total",
                "cgroup.pressure.cpu.some.avg10",
            ],
            [
                "cgroup.pressure.cpu.full.total",
                "cgroup.pressure.cpu.full.avg10",
            ],
        ],
    ),
    (
        "memory.pressure",
        [
            [
                "cgroup.pressure.memory.some.total",
                "cgroup.pressure.memory.some.avg10",
            ],
            [
                "cgroup.pressure.memory.full.total",
                "cgroup.pressure.memory.full.avg10",
            ],
        ],
    ),
    (
        "io.pressure",
        [
            [
                "cgroup.pressure.io.some.total",
                "cgroup.pressure.io.some.avg10",
            ],
            [
                "cgroup.pressure.io.full.total",
                "cgroup.pressure.io.full.avg10",
            ],
        ],
    ),
];

fn int(v: u64) -> MetricValue {
    MetricValue::Int(i64::try_from(v).unwrap_or(i64::MAX))
}

/// Reads a small file into `buf` (cleared first); false if it cannot be read.
fn read(path: &Path, buf: &mut String) -> bool {
    use std::io::Read;
    buf.clear();
    match std::fs::File::open(path) {
        Ok(mut f) => f.read_to_string(buf).is_ok(),
        Err(_) => false,
    }
}

/// A single unsigned number (`memory.current`, `cpuacct.usage`).
pub fn parse_u64(s: &str) -> Option<u64> {
    s.trim().parse().ok()
}

/// A limit: a number, or `max` (v2) / a huge number (v1's "unlimited",
/// PAGE_COUNTER_MAX pages) meaning none, which is reported as absent.
pub fn parse_limit(s: &str) -> Option<u64> {
    let v: u64 = s.trim().parse().ok()?;
    (v < 1 << 62).then_some(v)
}

/// `key value` lines (`cpu.stat`, `memory.stat`, `memory.events`,
/// `memory.oom_control`): the value of `key`.
pub fn keyed(s: &str, key: &str) -> Option<u64> {
    s.lines().find_map(|l| {
        let mut it = l.split_ascii_whitespace();
        (it.next()? == key)
            .then(|| it.next()?.parse().ok())
            .flatten()
    })
}

/// The fields of a v2 `cpu.stat` sidekick reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CpuStatV2 {
    /// Total CPU time, µs.
    pub usage_usec: Option<u64>,
    /// User CPU time, µs.
    pub user_usec: Option<u64>,
    /// System CPU time, µs.
    pub system_usec: Option<u64>,
    /// Periods in which the cgroup was throttled.
    pub nr_throttled: Option<u64>,
    /// Time throttled, µs.
    pub throttled_usec: Option<u64>,
}

impl CpuStatV2 {
    /// Parses a v2 `cpu.stat` in one pass.
    pub fn parse(s: &str) -> Self {
        let mut c = CpuStatV2::default();
        for l in s.lines() {
            let mut it = l.split_ascii_whitespace();
            let (Some(k), Some(v)) = (it.next(), it.next()) else {
                continue;
            };
            let v = v.parse().ok();
            match k {
                "usage_usec" => c.usage_usec = v,
                "user_usec" => c.user_usec = v,
                "system_usec" => c.system_usec = v,
                "nr_throttled" => c.nr_throttled = v,
                "throttled_usec" => c.throttled_usec = v,
                _ => {}
            }
        }
        c
    }
}

/// v2 `cpu.max` (`$MAX $PERIOD`): the limit in cores, `None` for `max`.
pub fn parse_cpu_max(s: &str) -> Option<f64> {
    let mut it = s.split_ascii_whitespace();
    let quota = it.next()?;
    let period: f64 = it.next().map_or(Some(100_000.0), |p| p.parse().ok())?;
    let quota: f64 = quota.parse().ok()?;
    (period > 0.0 && quota.is_finite() && quota >= 0.0).then(|| quota / period)
}

/// v1 `cpu.cfs_quota_us` and `cpu.cfs_period_us`: the limit in cores, `None` for -1.
/// (The sampler reads the two files one after the other into one buffer,
/// so it parses each with `parse_i64` and combines them with `cfs_limit`.)
#[cfg(test)]
pub fn parse_cfs_limit(quota: &str, period: &str) -> Option<f64> {
    cfs_limit(parse_i64(quota), parse_i64(period))
}

fn parse_i64(s: &str) -> Option<i64> {
    s.trim().parse().ok()
}

fn cfs_limit(quota: Option<i64>, period: Option<i64>) -> Option<f64> {
    let (q, p) = (quota?, period?);
    (q > 0 && p > 0).then(|| q as f64 / p as f64)
}

/// Block I/O totals over all devices.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IoTotals {
    /// Bytes read.
    pub rbytes: u64,
    /// Bytes written.
    pub wbytes: u64,
    /// Read operations.
    pub rios: u64,
    /// Write operations.
    pub wios: u64,
}

/// v2 `io.stat`: `MAJ:MIN rbytes=.. wbytes=.. rios=.. wios=.. dbytes=.. dios=..` per device.
pub fn parse_io_stat(s: &str) -> IoTotals {
    let mut t = IoTotals::default();
    for l in s.lines() {
        for kv in l.split_ascii_whitespace().skip(1) {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let Ok(v) = v.parse::<u64>() else { continue };
            let slot = match k {
                "rbytes" => &mut t.rbytes,
                "wbytes" => &mut t.wbytes,
                "rios" => &mut t.rios,
                "wios" => &mut t.wios,
                _ => continue,
            };
            *slot = slot.saturating_add(v);
        }
    }
    t
}

/// v1 `blkio.*_recursive` (`MAJ:MIN Read N` lines, a `Total N` line):
/// (read, write) summed over devices.
pub fn parse_blkio(s: &str) -> (u64, u64) {
    let (mut r, mut w) = (0u64, 0u64);
    for l in s.lines() {
        let mut it = l.split_ascii_whitespace();
        let (Some(_dev), Some(op), Some(v)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let Ok(v) = v.parse::<u64>() else { continue };
        match op {
            "Read" => r = r.saturating_add(v),
            "Write" => w = w.saturating_add(v),
            _ => {}
        }
    }
    (r, w)
}

/// One line of a PSI file.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct PsiLine {
    /// Share of the last 10 s stalled, in percent.
    pub avg10: f64,
    /// Total stall time, µs.
    pub total_us: u64,
}

/// A PSI file (`cpu.pressure`, ...): its `some` and `full` lines.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Pressure {
    /// Some task stalled.
    pub some: Option<PsiLine>,
    /// All non-idle tasks stalled.
    pub full: Option<PsiLine>,
}

/// Parses `some avg10=0.00 avg60=0.00 avg300=0.00 total=0` / `full ...`.
pub fn parse_pressure(s: &str) -> Pressure {
    let mut p = Pressure::default();
    for l in s.lines() {
        let mut it = l.split_ascii_whitespace();
        let slot = match it.next() {
            Some("some") => &mut p.some,
            Some("full") => &mut p.full,
            _ => continue,
        };
        let (mut avg10, mut total) = (None, None);
        for kv in it {
            match kv.split_once('=') {
                Some(("avg10", v)) => avg10 = v.parse::<f64>().ok().filter(|f| f.is_finite()),
                Some(("total", v)) => total = v.parse::<u64>().ok(),
                _ => {}
            }
        }
        if let (Some(avg10), Some(total_us)) = (avg10, total) {
            *slot = Some(PsiLine { avg10, total_us });
        }
    }
    p
}

/// The container id in a cgroup path (docker, containerd, CRI-O and
/// podman all put the 64-hex-digit id in the last component that has one:
/// `/docker/<id>`, `cri-containerd-<id>.scope`, `crio-<id>.scope`).
pub fn container_id(cgroup_path: &str) -> Option<String> {
    cgroup_path.rsplit('/').find_map(|comp| {
        let b = comp.as_bytes();
        let mut run = 0;
        for (i, c) in b.iter().enumerate() {
            if c.is_ascii_hexdigit() && !c.is_ascii_uppercase() {
                run += 1;
                let next_hex = b.get(i + 1).is_some_and(|n| n.is_ascii_hexdigit());
                if run == 64 && !next_hex {
                    return Some(comp[i + 1 - 64..=i].to_string());
                }
            } else {
                run = 0;
            }
        }
        None
    })
}

#[cfg(test)]
#[path = "cgroup_tests.rs"]
mod tests;
