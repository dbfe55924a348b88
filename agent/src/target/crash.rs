//! Crash context: the last log lines sidekick read and the target's last
//! metrics sample, attached to the `process.exit` event of an abnormal exit
//! so the reason arrives in one record.
//!
//! Cost on the tailer's path: one lock per chunk, and only the last
//! `capacity` lines of a chunk are looked at. Lines are copied (cut to
//! [`MAX_LINE`] bytes) rather than kept as slices, so the ring never pins the
//! tailer's read buffers: its memory is bounded by `capacity × MAX_LINE`.

use bytes::Bytes;
use sidekick_pipeline::{AttrValue, MetricPoint, MetricValue};
use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::{Mutex, MutexGuard};

/// Longest part of a line kept for the crash context.
pub const MAX_LINE: usize = 1024;

/// The last lines read and the last sample taken, shared by the tailers,
/// the sampler and the watcher.
pub struct CrashContext {
    capacity: usize,
    lines: Mutex<VecDeque<Bytes>>,
    sample: Mutex<Vec<MetricPoint>>,
    catch_up: Mutex<Option<CatchUp>>,
}

/// Brings the lines up to date (the tailer reads what the target wrote last).
type CatchUp = Box<dyn Fn() + Send + Sync>;

impl std::fmt::Debug for CrashContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrashContext")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding it leaves plain data: keep using it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl CrashContext {
    /// Keeps the last `capacity` lines (50 by default in the config).
    pub fn new(capacity: usize) -> Self {
        CrashContext {
            capacity,
            lines: Mutex::new(VecDeque::with_capacity(capacity)),
            sample: Mutex::new(Vec::new()),
            catch_up: Mutex::new(None),
        }
    }

    /// Sets what [`CrashContext::catch_up`] runs: the supervisor makes the
    /// tailer read every file to its end, so that an exit event carries the
    /// target's very last lines.
    pub fn set_catch_up(&self, f: impl Fn() + Send + Sync + 'static) {
        *lock(&self.catch_up) = Some(Box::new(f));
    }

    /// Reads what the target wrote last into the context (bounded in time by
    /// the function set; nothing happens if none was set).
    pub fn catch_up(&self) {
        if let Some(f) = lock(&self.catch_up).as_ref() {
            f();
        }
    }

    /// Records one line read from the target's logs.
    #[cfg(test)]
    pub fn push_line(&self, line: &[u8]) {
        self.push_lines(std::iter::once(&Bytes::copy_from_slice(line)));
    }

    /// Records the lines of one chunk, in order: one lock, and only the last
    /// `capacity` of them are touched.
    pub fn push_lines<'a, I>(&self, lines: I)
    where
        I: IntoIterator<Item = &'a Bytes>,
        I::IntoIter: DoubleEndedIterator,
    {
        if self.capacity == 0 {
            return;
        }
        let tail: Vec<&Bytes> = lines.into_iter().rev().take(self.capacity).collect();
        if tail.is_empty() {
            return;
        }
        let mut ring = lock(&self.lines);
        for line in tail.into_iter().rev() {
            if ring.len() == self.capacity {
                ring.pop_front();
            }
            ring.push_back(Bytes::copy_from_slice(&line[..line.len().min(MAX_LINE)]));
        }
    }

    /// The last lines, oldest first, joined by `\n` (invalid UTF-8 replaced).
    pub fn last_lines(&self) -> String {
        let ring = lock(&self.lines);
        let mut s = String::new();
        for (i, l) in ring.iter().enumerate() {
            if i > 0 {
                s.push('\n');
            }
            s.push_str(&String::from_utf8_lossy(l));
        }
        s
    }

    /// Keeps the target's figures (`process.*`, `cgroup.*`) of a sample.
    pub fn set_sample(&self, points: &[MetricPoint]) {
        let kept: Vec<MetricPoint> = points
            .iter()
            .filter(|p| p.name.starts_with("process.") || p.name.starts_with("cgroup."))
            .cloned()
            .collect();
        if !kept.is_empty() {
            *lock(&self.sample) = kept;
        }
    }

    /// The target's figures of the last sample (empty if none was taken).
    pub fn last_points(&self) -> Vec<MetricPoint> {
        lock(&self.sample).clone()
    }

    /// The last sample as `name{attr=value}=value` items separated by spaces
    /// (empty if none was taken).
    pub fn last_sample(&self) -> String {
        let points = lock(&self.sample);
        let mut s = String::new();
        for p in points.iter() {
            if !s.is_empty() {
                s.push(' ');
            }
            s.push_str(&p.name);
            if !p.attributes.is_empty() {
                s.push('{');
                for (i, a) in p.attributes.iter().enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    let _ = match &a.value {
                        AttrValue::Str(v) => write!(s, "{}={v}", a.key),
                        AttrValue::Int(v) => write!(s, "{}={v}", a.key),
                        AttrValue::Double(v) => write!(s, "{}={v}", a.key),
                        AttrValue::Bool(v) => write!(s, "{}={v}", a.key),
                    };
                }
                s.push('}');
            }
            let _ = match p.value {
                MetricValue::Int(v) => write!(s, "={v}"),
                MetricValue::Double(v) => write!(s, "={}", (v * 1000.0).round() / 1000.0),
            };
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sidekick_pipeline::{Attr, MetricKind};

    #[test]
    fn keeps_the_last_lines_of_many_chunks_in_order() {
        let c = CrashContext::new(3);
        let a: Vec<Bytes> = (0..5).map(|i| Bytes::from(format!("a{i}"))).collect();
        c.push_lines(a.iter());
        assert_eq!(c.last_lines(), "a2\na3\na4");
        c.push_line(b"b0");
        assert_eq!(c.last_lines(), "a3\na4\nb0");
        c.push_lines([].iter());
        assert_eq!(c.last_lines(), "a3\na4\nb0");
    }

    #[test]
    fn long_lines_are_cut_and_zero_capacity_keeps_nothing() {
        let c = CrashContext::new(2);
        c.push_line(&vec![b'x'; MAX_LINE * 3]);
        assert_eq!(c.last_lines().len(), MAX_LINE);
        let none = CrashContext::new(0);
        none.push_line(b"x");
        assert_eq!(none.last_lines(), "");
    }

    #[test]
    fn sample_is_a_compact_list_of_the_targets_figures() {
        let c = CrashContext::new(1);
        let p = |name: &'static str, v, attrs| MetricPoint {
            name: name.into(),
            unit: "s".into(),
            kind: MetricKind::Gauge,
            value: v,
            time_unix_nano: 1,
            start_time_unix_nano: 0,
            attributes: attrs,
        };
        c.set_sample(&[
            p(
                "process.cpu.time",
                MetricValue::Double(1.23456),
                vec![Attr::new("cpu.mode", "user")],
            ),
            p("process.memory.usage", MetricValue::Int(4096), vec![]),
            p("system.cpu.utilization", MetricValue::Double(0.5), vec![]),
        ]);
        assert_eq!(
            c.last_sample(),
            "process.cpu.time{cpu.mode=user}=1.235 process.memory.usage=4096"
        );
    }
}
