//! A process's identity and what `/proc` says about it.
//!
//! A PID alone does not name a process: after it exits the kernel hands the
//! number to the next one. A [`Target`] is a PID plus its start time
//! (`/proc/N/stat` field 22, clock ticks since boot), which no later process
//! with that PID can share.

use sidekick_pipeline::Attr;
use std::io;

/// The `/proc/N/stat` fields sidekick uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatFields {
    /// The command name (field 2, without its parentheses).
    pub comm: String,
    /// State: R, S, D, Z (zombie), X (dead), T...
    pub state: char,
    /// Parent PID.
    pub ppid: u32,
    /// Start time, clock ticks after boot (field 22).
    pub start_ticks: u64,
    /// The wait status of a zombie (field 52, Linux 3.5+), if present.
    pub exit_code: Option<i32>,
}

/// Parses `/proc/N/stat`. The command name may hold spaces and parentheses,
/// so the fields are counted from its last `)`.
pub fn parse_stat(s: &str) -> Option<StatFields> {
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = s.get(close + 1..)?.split_ascii_whitespace().collect();
    Some(StatFields {
        comm,
        state: rest.first()?.chars().next()?,
        ppid: rest.get(1)?.parse().ok()?,
        start_ticks: rest.get(19)?.parse().ok()?,
        exit_code: rest.get(49).and_then(|c| c.parse().ok()),
    })
}

/// Reads and parses `/proc/PID/stat`.
pub fn read_stat(pid: u32) -> io::Result<StatFields> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&s).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unparsable /proc/{pid}/stat"),
        )
    })
}

/// One process: a PID and the start time that tells it from later
/// processes given the same PID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target {
    /// The process id.
    pub pid: u32,
    /// Its start time, clock ticks after boot.
    pub start_ticks: u64,
}

impl Target {
    /// The process now running as `pid`. Fails if there is none (or it has
    /// already exited: a zombie is not a target).
    pub fn from_pid(pid: u32) -> io::Result<Target> {
        let st = read_stat(pid)?;
        if matches!(st.state, 'Z' | 'X') {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("process {pid} has exited"),
            ));
        }
        Ok(Target {
            pid,
            start_ticks: st.start_ticks,
        })
    }

    /// Whether this very process still runs (not exited, PID not reused).
    pub fn is_alive(&self) -> bool {
        read_stat(self.pid)
            .is_ok_and(|st| st.start_ticks == self.start_ticks && !matches!(st.state, 'Z' | 'X'))
    }

    /// The stat of this very process, zombie included; `None` once it is
    /// reaped or its PID belongs to another process.
    pub fn stat(&self) -> Option<StatFields> {
        read_stat(self.pid)
            .ok()
            .filter(|st| st.start_ticks == self.start_ticks)
    }

    /// Seconds since it started (its run time once it has exited).
    pub fn run_time_secs(&self) -> Option<f64> {
        let up = crate::metrics::uptime_secs()?;
        Some((up - self.start_ticks as f64 / crate::metrics::ticks_per_second()).max(0.0))
    }

    /// What is known about it, for resource and event attributes.
    pub fn info(&self) -> TargetInfo {
        let stat = self.stat();
        let read_cmdline =
            || std::fs::read(format!("/proc/{}/cmdline", self.pid)).unwrap_or_default();
        let mut cmdline = read_cmdline();
        // Right after a vfork-style spawn returns, the new program's
        // arguments may not be set up yet (an empty cmdline): wait a little.
        for _ in 0..20 {
            if !cmdline.is_empty() || !self.is_alive() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
            cmdline = read_cmdline();
        }
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let exe = std::fs::read_link(format!("/proc/{}/exe", self.pid))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        let executable_name = exe
            .or_else(|| {
                args.first()
                    .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
            })
            .or_else(|| stat.as_ref().map(|s| s.comm.clone()))
            .unwrap_or_default();
        let container_id = std::fs::read_to_string(format!("/proc/{}/cgroup", self.pid))
            .ok()
            .and_then(|cg| {
                cg.lines()
                    .find_map(|l| crate::metrics::container_id(l.splitn(3, ':').nth(2)?))
            });
        TargetInfo {
            pid: self.pid,
            parent_pid: stat.map(|s| s.ppid),
            executable_name,
            command_line: args.join(" "),
            container_id,
        }
    }
}

/// What is known about the target, for resource and event attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetInfo {
    /// `process.pid`.
    pub pid: u32,
    /// `process.parent_pid`.
    pub parent_pid: Option<u32>,
    /// `process.executable.name` (of `/proc/N/exe`, else argv\[0\], else comm).
    pub executable_name: String,
    /// `process.command_line` (arguments joined by spaces).
    pub command_line: String,
    /// `container.id`, from the cgroup path.
    pub container_id: Option<String>,
}

impl TargetInfo {
    /// The resource attributes: `process.pid`, `process.parent_pid`,
    /// `process.executable.name`, `process.command_line`, `container.id`.
    pub fn attributes(&self) -> Vec<Attr> {
        let mut a = vec![Attr::new("process.pid", i64::from(self.pid))];
        if let Some(pp) = self.parent_pid {
            a.push(Attr::new("process.parent_pid", i64::from(pp)));
        }
        if !self.executable_name.is_empty() {
            a.push(Attr::new(
                "process.executable.name",
                self.executable_name.clone(),
            ));
        }
        if !self.command_line.is_empty() {
            a.push(Attr::new("process.command_line", self.command_line.clone()));
        }
        if let Some(c) = &self.container_id {
            a.push(Attr::new("container.id", c.clone()));
        }
        a
    }
}

/// The process whose command line (arguments joined by spaces) matches
/// `re`, from one scan of `/proc`. sidekick itself never matches (its own
/// command line holds the pattern). Among several, the root of the matching
/// tree wins (a match whose parent does not match: nginx's master, not a
/// worker), then the oldest.
pub fn find_by_name(re: &regex::Regex) -> Option<Target> {
    let me = std::process::id();
    let dir = std::fs::read_dir("/proc").ok()?;
    let mut matches: Vec<(u32, StatFields)> = Vec::new();
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if cmdline.is_empty() {
            continue; // kernel thread, or a zombie
        }
        let line = command_line(&cmdline);
        if !re.is_match(&line) {
            continue;
        }
        let Ok(st) = read_stat(pid) else { continue };
        if matches!(st.state, 'Z' | 'X') {
            continue;
        }
        matches.push((pid, st));
    }
    let is_match = |pid: u32| matches.iter().any(|(p, _)| *p == pid);
    matches
        .iter()
        .min_by_key(|(pid, st)| (is_match(st.ppid), st.start_ticks, *pid))
        .map(|(pid, st)| Target {
            pid: *pid,
            start_ticks: st.start_ticks,
        })
}

/// A `/proc/N/cmdline` as one string, arguments joined by spaces.
pub fn command_line(raw: &[u8]) -> String {
    let trimmed = raw.strip_suffix(&[0]).unwrap_or(raw);
    String::from_utf8_lossy(trimmed).replace('\0', " ")
}
