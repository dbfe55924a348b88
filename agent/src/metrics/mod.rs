//! The metric sampler: the target's process figures (from `/proc`), its
//! cgroup's (v2 first, v1 where that is what the host has) and, optionally,
//! the host's (through `sysinfo`), every `metrics.interval`.
//!
//! One [`Sampler`] holds what successive samples share (the previous CPU
//! time for utilization, the target's `/proc` and cgroup files, kept open
//! and re-read in place, sysinfo's state);
//! [`spawn_sampler`] runs it on its own thread, which sleeps on the stop
//! channel between samples (no busy loop) and takes one last sample when
//! told to stop.
//!
//! Invariants: counters are cumulative monotonic sums whose start time is
//! the process's start (process figures) or the first time this sampler saw
//! the cgroup (cgroup figures); a figure that cannot be read is left out of
//! the sample, never reported as zero.

mod cgroup;
mod host;
mod kept;
mod process;

pub use cgroup::{container_id, CgroupFiles, CgroupReader};
pub(crate) use process::{ticks_per_second, uptime_secs};

use crate::target::{deliver, CrashContext, StopSignal};
use crossbeam_channel::{Receiver, Sender};
use sidekick_pipeline::{Attr, Chunk, MetricKind, MetricPoint, MetricValue, Record};
use std::borrow::Cow;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What to sample (the `metrics:` section of the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamplerConfig {
    /// Time between samples.
    pub interval: Duration,
    /// Sample the target process.
    pub process: bool,
    /// Sum the process figures over the target's descendants too.
    pub include_children: bool,
    /// Sample the target's cgroup.
    pub cgroup: bool,
    /// Sample the host (CPU, memory, load, filesystems, network).
    pub host: bool,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            interval: Duration::from_secs(10),
            process: true,
            include_children: false,
            cgroup: true,
            host: false,
        }
    }
}

/// The time of one sample, shared by all its points.
pub(crate) struct Clock {
    /// Now, ns since the epoch.
    pub now: u64,
}

/// Builds one metric point.
pub(crate) fn point(
    name: impl Into<Cow<'static, str>>,
    unit: &'static str,
    kind: MetricKind,
    value: MetricValue,
    now: u64,
    start: u64,
    attributes: Vec<Attr>,
) -> MetricPoint {
    MetricPoint {
        name: name.into(),
        unit: Cow::Borrowed(unit),
        kind,
        value,
        time_unix_nano: now,
        start_time_unix_nano: if matches!(kind, MetricKind::Gauge) {
            0
        } else {
            start
        },
        attributes,
    }
}

/// Takes samples; keeps what consecutive samples share.
pub struct Sampler {
    cfg: SamplerConfig,
    process: process::ProcessSampler,
    /// The cgroup of the current target, resolved (and its files opened)
    /// when the target changes.
    cgroup: Option<(u32, Option<CgroupReader>)>,
    /// Start time of the cgroup sums: when this sampler first read them.
    cgroup_start: u64,
    host: Option<host::HostSampler>,
}

impl Sampler {
    /// A sampler for `cfg`.
    pub fn new(cfg: SamplerConfig) -> Self {
        Sampler {
            process: process::ProcessSampler::new(cfg.include_children),
            host: cfg.host.then(host::HostSampler::new),
            cfg,
            cgroup: None,
            cgroup_start: sidekick_pipeline::now_unix_nano(),
        }
    }

    /// One sample of the process `pid` (if any), its cgroup and the host.
    /// Nothing of what cannot be read (a gone process, a missing file) is
    /// in it.
    pub fn sample(&mut self, pid: Option<u32>) -> Vec<MetricPoint> {
        let clock = Clock {
            now: sidekick_pipeline::now_unix_nano(),
        };
        let mut out = Vec::with_capacity(64);
        if let Some(pid) = pid.filter(|p| *p != 0) {
            if self.cfg.process {
                self.process.sample(pid, &clock, &mut out);
            }
            if self.cfg.cgroup {
                if self.cgroup.as_ref().map(|c| c.0) != Some(pid) {
                    let files = CgroupFiles::for_pid(pid);
                    self.cgroup = Some((pid, files.as_ref().map(CgroupReader::new)));
                }
                if let Some((_, Some(reader))) = &mut self.cgroup {
                    reader.sample(&clock, self.cgroup_start, &mut out);
                }
            }
        }
        if let Some(h) = &mut self.host {
            h.sample(&clock, &mut out);
        }
        out
    }
}

/// Samples every `cfg.interval` on a thread of its own until `stop` fires
/// (a message, or every sender dropped), then takes one final sample.
/// Each sample goes to `tx` as one chunk and is kept in `crash` as the
/// target's last sample. `target_pid` is read before every sample (0 = no
/// target: only host figures).
pub fn spawn_sampler(
    cfg: SamplerConfig,
    target_pid: Arc<AtomicU32>,
    tx: Sender<Chunk>,
    crash: Arc<CrashContext>,
    stop: Receiver<()>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("sampler".into())
        .spawn(move || {
            let interval = cfg.interval.max(Duration::from_millis(10));
            let mut sampler = Sampler::new(cfg);
            let mut stop = StopSignal::new(stop);
            let mut next = Instant::now();
            loop {
                let stopping = stop.wait(next.saturating_duration_since(Instant::now()));
                let pid = target_pid.load(Ordering::Acquire);
                let points = sampler.sample(Some(pid));
                if pid != 0 {
                    crash.set_sample(&points);
                }
                if !points.is_empty() {
                    let chunk = Chunk {
                        records: points.into_iter().map(Record::Metric).collect(),
                        position: None,
                    };
                    // The final sample gets a moment to get through a full queue.
                    let grace = if stopping {
                        Duration::from_secs(2)
                    } else {
                        Duration::ZERO
                    };
                    if !deliver(&tx, chunk, &mut stop, grace) {
                        return;
                    }
                }
                if stopping {
                    return;
                }
                // Fixed-rate ticks; after a long stall, start afresh rather than burst.
                next += interval;
                if next < Instant::now() {
                    next = Instant::now() + interval;
                }
            }
        })
}

#[cfg(test)]
mod tests;
