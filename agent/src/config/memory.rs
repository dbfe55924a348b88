//! The most memory a config lets sidekick use, estimated from its bounds,
//! for `limits.max_memory`.
//!
//! Every buffer sidekick holds is bounded by configuration, so the bound of
//! the whole is a sum of products of settings. The estimate is a worst case
//! (every open file holding its longest partial line, every output full),
//! not a forecast: a config whose worst case exceeds `limits.max_memory` is
//! refused, with the parts shown so the user sees which knob to turn.
//!
//! The factors mirror the code that allocates: keep [`QUEUE_CHUNKS`] equal
//! to the queue capacity in `run.rs`, [`READ_CHUNK`] to the tailer's read
//! size, and [`WRITER_SLOTS`] to the in-flight slots of `file`/`stdout`
//! outputs in the outputs crate.

use super::{ByteSize, Config, LogSource, OutputType};

/// Chunks the queue between collectors and batcher holds (`run.rs`).
pub(crate) const QUEUE_CHUNKS: u64 = 8;
/// Bytes the tailer reads from a file at once (`tail.rs`).
pub(crate) const READ_CHUNK: u64 = 256 * 1024;
/// Batches a `file` or `stdout` output holds at once.
pub(crate) const WRITER_SLOTS: u64 = 4;
/// The binary, the async runtime, thread stacks, inotify, the telemetry
/// endpoint: what an idle sidekick holds whatever the config.
pub(crate) const BASELINE: u64 = 16 << 20;

/// One part of the estimate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// What holds the memory (`log files`, `queue`, ...).
    pub what: &'static str,
    /// Bytes, at most.
    pub bytes: u64,
    /// How it was computed, with the settings that bound it.
    pub how: String,
}

/// The worst-case memory of a config, part by part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// The parts, in pipeline order.
    pub parts: Vec<Part>,
}

impl MemoryEstimate {
    /// The sum of the parts.
    pub fn total(&self) -> u64 {
        self.parts
            .iter()
            .fold(0u64, |sum, p| sum.saturating_add(p.bytes))
    }

    /// `log files 1.3GiB (...), queue 20MiB (...), ...` on one line.
    pub fn describe(&self) -> String {
        self.parts
            .iter()
            .map(|p| format!("{} {} ({})", p.what, ByteSize(p.bytes).approx(), p.how))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The estimate for `cfg`. With `--pid` and no `logs:`, sidekick tails the
/// target's files with default settings: counted as one default source.
pub fn estimate(cfg: &Config) -> MemoryEstimate {
    let default_source;
    let sources: &[LogSource] =
        if cfg.logs.is_empty() && cfg.target.as_ref().is_some_and(|t| t.pid.is_some()) {
            default_source = [LogSource::for_glob("")];
            &default_source
        } else {
            &cfg.logs
        };
    let mut parts = Vec::new();

    // Per open file: the read buffer and a held partial line, plus a
    // pending multiline record.
    let mut files = 0u64;
    let mut hows = Vec::new();
    for s in sources {
        let n = s.max_open_files as u64;
        let multiline = s.multiline.as_ref().map_or(0, |m| m.max_bytes.0);
        let per_file = s
            .max_line_bytes
            .0
            .saturating_add(READ_CHUNK)
            .saturating_add(multiline);
        files = files.saturating_add(n.saturating_mul(per_file));
        let mut how = format!(
            "{n} open files × ({} max_line_bytes + {} read buffer",
            ByteSize(s.max_line_bytes.0).approx(),
            ByteSize(READ_CHUNK).approx()
        );
        if multiline > 0 {
            how.push_str(&format!(
                " + {} multiline.max_bytes",
                ByteSize(multiline).approx()
            ));
        }
        how.push(')');
        hows.push(how);
    }
    if !sources.is_empty() {
        parts.push(Part {
            what: "log files",
            bytes: files,
            how: hows.join(" + "),
        });
    }

    // A chunk is one read, plus the partial line it completed.
    let longest_line = sources
        .iter()
        .map(|s| s.max_line_bytes.0)
        .max()
        .unwrap_or(0);
    let chunk = READ_CHUNK.saturating_add(longest_line);
    parts.push(Part {
        what: "queue",
        bytes: QUEUE_CHUNKS.saturating_mul(chunk),
        how: format!("{QUEUE_CHUNKS} chunks × {}", ByteSize(chunk).approx()),
    });

    // A batch lives until every output acknowledged it, so the records of
    // as many batches as the most patient output holds, plus the one being
    // filled, are alive at once; each output also holds its own encoded
    // (and compressed) copy of each batch it has in flight.
    let batch = cfg.batch.max_bytes.0;
    let mut most_in_flight = 0u64;
    let mut requests = 0u64;
    let mut request_hows = Vec::new();
    if cfg.outputs.is_empty() {
        most_in_flight = WRITER_SLOTS;
        requests = WRITER_SLOTS.saturating_mul(batch);
        request_hows.push(format!(
            "stdout: {WRITER_SLOTS} × {}",
            ByteSize(batch).approx()
        ));
    }
    for o in &cfg.outputs {
        let (in_flight, copies, how) = match o.kind {
            OutputType::OtlpHttp | OutputType::HttpNdjson => (
                o.max_in_flight as u64,
                2,
                "in flight × 2 for encoding and compression",
            ),
            OutputType::File | OutputType::Stdout => (WRITER_SLOTS, 1, "queued"),
        };
        most_in_flight = most_in_flight.max(in_flight);
        requests = requests.saturating_add(in_flight.saturating_mul(copies).saturating_mul(batch));
        request_hows.push(format!(
            "{}: {in_flight} {how} × {}",
            o.kind.as_str(),
            ByteSize(batch).approx()
        ));
    }
    let live = most_in_flight.saturating_add(1);
    parts.push(Part {
        what: "batches",
        bytes: live.saturating_mul(batch),
        how: format!("{live} × {} batch.max_bytes", ByteSize(batch).approx()),
    });
    parts.push(Part {
        what: "requests",
        bytes: requests,
        how: request_hows.join(" + "),
    });
    parts.push(Part {
        what: "base",
        bytes: BASELINE,
        how: "binary, runtime, threads".to_owned(),
    });
    MemoryEstimate { parts }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OutputSection;

    #[test]
    fn defaults_add_up_part_by_part() {
        let mut cfg = Config::default();
        cfg.logs.push(LogSource::for_glob("/var/log/app/*.log"));
        cfg.outputs
            .push(OutputSection::otlp_http("http://127.0.0.1:4318"));
        let e = estimate(&cfg);
        let part = |what: &str| e.parts.iter().find(|p| p.what == what).unwrap().bytes;
        // 1024 files × (1 MiB + 256 KiB).
        assert_eq!(part("log files"), 1024 * ((1 << 20) + READ_CHUNK));
        assert_eq!(part("queue"), QUEUE_CHUNKS * ((1 << 20) + READ_CHUNK));
        // 4 in flight + 1 filling, 4 MiB each.
        assert_eq!(part("batches"), 5 * (4 << 20));
        assert_eq!(part("requests"), 4 * 2 * (4 << 20));
        assert_eq!(e.total(), e.parts.iter().map(|p| p.bytes).sum::<u64>());
        let text = e.describe();
        assert!(
            text.contains(
                "log files 1.3GiB (1024 open files × (1MiB max_line_bytes + 256KiB read buffer))"
            ),
            "{text}"
        );
        assert!(!text.contains('\n'));
    }

    #[test]
    fn smaller_settings_give_a_smaller_bound() {
        let mut cfg = Config::default();
        let mut s = LogSource::for_glob("/x/*.log");
        s.max_open_files = 16;
        s.max_line_bytes = ByteSize::kib(64);
        cfg.logs.push(s);
        cfg.batch.max_bytes = ByteSize::mib(1);
        let small = estimate(&cfg).total();
        assert!(small < 48 << 20, "{}", estimate(&cfg).describe());
        cfg.logs[0].max_open_files = 1024;
        assert!(estimate(&cfg).total() > small + (256 << 20));
    }
}
