//! sidekick's own telemetry on a loopback port (`telemetry.listen`, default
//! `127.0.0.1:9464`; `off` disables it): `/metrics` in the Prometheus text
//! format 0.0.4, `/healthz` (the agent is alive) and `/readyz` (every output
//! reached its server within its retry budget), and the `sidekick status`
//! command that reads them.
//!
//! The supervisor hands [`Telemetry`] the live counters it already keeps
//! (`TailStats`, each output's `OutputStats`, the `Ledger`, the queue's
//! receiver, the target's last sample); nothing is counted twice and nothing
//! runs between scrapes: a scrape reads atomics, takes the ledger's lock
//! once and stats each tailed file once (on a blocking thread).
//!
//! Invariants: the server never stops log shipping — a port that cannot be
//! bound is one warning naming the address, and the agent goes on without
//! it; the figures of the target are those of the last metrics sample, never
//! zeros for what could not be read (a figure missing from the sample is
//! missing from `/metrics`).

mod server;
pub mod status;
#[cfg(test)]
mod tests;
pub mod text;

use crate::config::OutputSection;
use crate::tail::TailStats;
use crate::target::CrashContext;
use sidekick_outputs::OutputStats;
use sidekick_pipeline::{now_unix_nano, Chunk, Ledger};
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use text::{Exposition, Kind};

/// Floor of an output's retry budget.
const MIN_BUDGET: Duration = Duration::from_secs(1);
/// An output's retry budget, in request timeouts: a request and two retries.
const BUDGET_TIMEOUTS: u32 = 3;
/// Retry budget of outputs without a request timeout (file, stdout).
const WRITER_BUDGET: Duration = Duration::from_secs(30);

/// One output as telemetry sees it.
#[derive(Debug, Clone)]
pub struct OutputView {
    /// Its live counters.
    pub stats: Arc<OutputStats>,
    /// How long its attempts may keep failing before `/readyz` says 503.
    pub budget: Duration,
}

/// The outputs as telemetry sees them, replaced as a whole when a reload
/// swaps the outputs.
#[derive(Debug, Clone, Default)]
pub struct OutputViews(Arc<std::sync::RwLock<Vec<OutputView>>>);

impl OutputViews {
    /// Views of `outputs`, in configuration order.
    pub fn new(outputs: Vec<OutputView>) -> Self {
        OutputViews(Arc::new(std::sync::RwLock::new(outputs)))
    }

    /// The current outputs.
    pub fn get(&self) -> Vec<OutputView> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the outputs (a reload).
    pub fn set(&self, outputs: Vec<OutputView>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = outputs;
    }
}

/// The retry budget of each configured output, in configuration order (one
/// for the stdout output used when none is configured): three request
/// timeouts, at least one second.
pub fn budgets(outputs: &[OutputSection]) -> Vec<Duration> {
    if outputs.is_empty() {
        return vec![WRITER_BUDGET];
    }
    outputs
        .iter()
        .map(|o| match o.kind {
            crate::config::OutputType::OtlpHttp | crate::config::OutputType::HttpNdjson => {
                (o.timeout * BUDGET_TIMEOUTS).max(MIN_BUDGET)
            }
            _ => WRITER_BUDGET,
        })
        .collect()
}

/// Handles on the agent's live state, read at each scrape.
#[derive(Debug)]
pub struct Telemetry {
    /// When the agent started.
    pub started: SystemTime,
    /// The tailer's counters.
    pub tail: Arc<TailStats>,
    /// The outputs, in configuration order.
    pub outputs: OutputViews,
    /// Committed positions and batches in flight.
    pub ledger: Arc<Ledger>,
    /// A receiver of the collectors' queue, only to read its length.
    pub queue: crossbeam_channel::Receiver<Chunk>,
    /// `data_dir/checkpoints.json`.
    pub checkpoint_file: PathBuf,
    /// The on-disk spool of metrics and events, if any.
    pub spool: Option<Arc<crate::spool::SpoolStats>>,
    /// Holds the target's last metrics sample.
    pub crash: Arc<CrashContext>,
    /// The target's PID (0: none).
    pub target_pid: Arc<AtomicU32>,
}

/// Starts the server on `listen` on the runtime `rt`; returns the address
/// bound. A failure to bind is logged as one warning and gives `None`: the
/// agent ships logs without its telemetry rather than not at all.
pub fn start(
    listen: SocketAddr,
    telemetry: Telemetry,
    rt: &tokio::runtime::Handle,
) -> Option<SocketAddr> {
    match server::spawn(listen, Arc::new(telemetry), rt) {
        Ok(addr) => {
            tracing::info!("telemetry: listening on http://{addr} (/metrics, /healthz, /readyz)");
            Some(addr)
        }
        Err(e) => {
            tracing::warn!(
                address = %listen,
                error = %e,
                "telemetry: cannot listen on {listen}; /metrics, /healthz and /readyz are off for this run, logs are shipped as usual"
            );
            None
        }
    }
}

impl Telemetry {
    /// `Ok` when every output is ready, else why not (one line).
    pub fn readiness(&self) -> Result<(), String> {
        let now = now_unix_nano();
        let mut why = Vec::new();
        for o in &self.outputs.get() {
            if let Some(failing) = failing_for(&o.stats, now) {
                if failing > o.budget {
                    let last = o
                        .stats
                        .last_error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone();
                    why.push(format!(
                        "output {} failing for {:.1}s (retry budget {:.1}s): {}",
                        o.stats.name,
                        failing.as_secs_f64(),
                        o.budget.as_secs_f64(),
                        one_line(&last)
                    ));
                }
            }
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why.join("; "))
        }
    }

    /// The whole `/metrics` exposition.
    pub fn render(&self) -> String {
        let mut e = Exposition::default();
        let now = now_unix_nano();
        let secs = |ns: u64| ns as f64 / 1e9;
        let started = self
            .started
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        e.family("sidekick_build_info", Kind::Gauge, "The agent's version.");
        e.sample(
            "sidekick_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1.0,
        );
        e.single(
            "sidekick_start_time_seconds",
            Kind::Gauge,
            "When the agent started, in seconds since the Unix epoch.",
            started,
        );
        e.single(
            "sidekick_ready",
            Kind::Gauge,
            "1 when every output reached its server within its retry budget (as /readyz), else 0.",
            f64::from(u8::from(self.readiness().is_ok())),
        );
        self.render_own_process(&mut e);

        // Collectors. The tailer counts over all log sources together.
        let t = &self.tail;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed) as f64;
        e.single(
            "sidekick_log_records_read_total",
            Kind::Counter,
            "Log lines read from files (all log sources together).",
            load(&t.lines),
        );
        e.single(
            "sidekick_log_bytes_read_total",
            Kind::Counter,
            "Bytes read from log files (all log sources together).",
            load(&t.bytes),
        );
        e.single(
            "sidekick_log_lines_truncated_total",
            Kind::Counter,
            "Lines cut at max_line_bytes.",
            load(&t.truncated_lines),
        );
        e.single(
            "sidekick_log_file_truncations_total",
            Kind::Counter,
            "Files found truncated (copytruncate) and read again from the start.",
            load(&t.truncations),
        );
        e.single(
            "sidekick_log_files_open",
            Kind::Gauge,
            "Log files with a descriptor open.",
            load(&t.open_files),
        );
        self.render_lag(&mut e);

        // Pipeline.
        e.single(
            "sidekick_queue_chunks",
            Kind::Gauge,
            "Chunks waiting in the queue between the collectors and the batcher.",
            self.queue.len() as f64,
        );
        if let Some(cap) = self.queue.capacity() {
            e.single(
                "sidekick_queue_capacity_chunks",
                Kind::Gauge,
                "Capacity of the queue; a full queue stops the tailer (backpressure).",
                cap as f64,
            );
        }
        e.single(
            "sidekick_batches_in_flight",
            Kind::Gauge,
            "Batches not yet acknowledged by every output.",
            self.ledger.in_flight() as f64,
        );
        if let Ok(age) = std::fs::metadata(&self.checkpoint_file)
            .and_then(|m| m.modified())
            .map(|t| t.elapsed().unwrap_or_default())
        {
            e.single(
                "sidekick_checkpoint_age_seconds",
                Kind::Gauge,
                "Seconds since the checkpoint file was last written (it is written within 1 s of a move of a log file's committed position, and within 30 s of a move of the spool's).",
                age.as_secs_f64(),
            );
        }

        if let Some(sp) = &self.spool {
            let spool: [(&str, Kind, &str, &std::sync::atomic::AtomicU64); 5] = [
                (
                    "sidekick_spool_records_spooled_total",
                    Kind::Counter,
                    "Metric points and events appended to the on-disk spool.",
                    &sp.records_spooled,
                ),
                (
                    "sidekick_spool_records_dropped_total",
                    Kind::Counter,
                    "Metric points and events dropped by the spool (past spool.max_bytes, or unreadable).",
                    &sp.records_dropped,
                ),
                (
                    "sidekick_spool_records_in_memory_total",
                    Kind::Counter,
                    "Records sent from memory because the spool could not be written (full disk).",
                    &sp.records_in_memory,
                ),
                (
                    "sidekick_spool_append_errors_total",
                    Kind::Counter,
                    "Spool appends that failed.",
                    &sp.append_errors,
                ),
                (
                    "sidekick_spool_bytes",
                    Kind::Gauge,
                    "Bytes of the spool on disk.",
                    &sp.bytes,
                ),
            ];
            for (name, kind, help, v) in spool {
                e.single(name, kind, help, load(v));
            }
        }

        // Outputs.
        // Each field reads an output's view at `now` (Unix ns).
        type Field = fn(&OutputView, u64) -> f64;
        let per_output: [(&str, Kind, &str, Field); 11] = [
            (
                "sidekick_output_records_sent_total",
                Kind::Counter,
                "Records (log records and metric points) delivered.",
                |o, _| o.stats.records_sent.load(Relaxed) as f64,
            ),
            (
                "sidekick_output_log_records_sent_total",
                Kind::Counter,
                "Log records (events included) delivered; the rest of records_sent are metric points.",
                |o, _| o.stats.log_records_sent.load(Relaxed) as f64,
            ),
            (
                "sidekick_output_bytes_sent_total",
                Kind::Counter,
                "Bytes delivered, as on the wire (after compression).",
                |o, _| o.stats.bytes_sent.load(Relaxed) as f64,
            ),
            (
                "sidekick_output_batches_sent_total",
                Kind::Counter,
                "Batches delivered.",
                |o, _| o.stats.batches_sent.load(Relaxed) as f64,
            ),
            (
                "sidekick_output_records_dropped_total",
                Kind::Counter,
                "Records refused for good (a 4xx other than 408/429) and dropped.",
                |o, _| o.stats.records_dropped.load(Relaxed) as f64,
            ),
            (
                "sidekick_output_batches_dropped_total",
                Kind::Counter,
                "Batches refused for good and dropped.",
                |o, _| o.stats.batches_dropped.load(Relaxed) as f64,
            ),
            (
                "sidekick_output_retries_total",
                Kind::Counter,
                "Requests or writes retried.",
                |o, _| o.stats.retries.load(Relaxed) as f64,
            ),
            (
                "sidekick_output_batches_in_flight",
                Kind::Gauge,
                "Batches accepted by the output and not yet acknowledged.",
                |o, _| o.stats.in_flight.load(Relaxed) as f64,
            ),
            (
                "sidekick_output_last_success_timestamp_seconds",
                Kind::Gauge,
                "When a batch was last delivered, in seconds since the Unix epoch (0: never).",
                |o, _| o.stats.last_success_unix_nano.load(Relaxed) as f64 / 1e9,
            ),
            (
                "sidekick_output_failing_seconds",
                Kind::Gauge,
                "How long the output's attempts have been failing (0: the last attempt reached the server).",
                |o, now| failing_for(&o.stats, now).unwrap_or_default().as_secs_f64(),
            ),
            (
                "sidekick_output_retry_budget_seconds",
                Kind::Gauge,
                "How long the output's attempts may fail before /readyz answers 503.",
                |o, _| o.budget.as_secs_f64(),
            ),
        ];
        let outputs = self.outputs.get();
        for (name, kind, help, field) in per_output {
            e.family(name, kind, help);
            for o in &outputs {
                e.sample(name, &[("output", &o.stats.name)], field(o, now));
            }
        }

        // The target.
        let pid = self.target_pid.load(Relaxed);
        if pid != 0 {
            e.single(
                "sidekick_target_pid",
                Kind::Gauge,
                "The PID of the target process.",
                f64::from(pid),
            );
        }
        let points = self.crash.last_points();
        if let Some(t) = points.iter().map(|p| p.time_unix_nano).max() {
            e.single(
                "sidekick_target_sample_timestamp_seconds",
                Kind::Gauge,
                "When the target's figures below were sampled, in seconds since the Unix epoch.",
                secs(t),
            );
        }
        text::write_points(&mut e, &points);
        e.finish()
    }

    /// Lag in bytes of each tailed file whose path still names the file
    /// being read (a file rotated away is not looked for).
    fn render_lag(&self, e: &mut Exposition) {
        let name = "sidekick_log_file_lag_bytes";
        e.family(
            name,
            Kind::Gauge,
            "Bytes of a tailed file not yet acknowledged by every output (file size minus committed offset).",
        );
        let mut sources = self.ledger.live_sources();
        sources.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, cp) in sources {
            let Some(path) = cp.meta.get("path").and_then(|p| p.as_str()) else {
                continue;
            };
            let Ok(m) = std::fs::metadata(path) else {
                continue;
            };
            if format!("{}:{}", m.dev(), m.ino()) != key {
                continue;
            }
            e.sample(
                name,
                &[("path", path)],
                m.len().saturating_sub(cp.offset) as f64,
            );
        }
    }

    /// The agent's own footprint, from `/proc/self`.
    fn render_own_process(&self, e: &mut Exposition) {
        let Ok(me) = procfs::process::Process::myself() else {
            return;
        };
        let Ok(st) = me.stat() else {
            return;
        };
        let tck = crate::metrics::ticks_per_second();
        e.single(
            "sidekick_cpu_seconds_total",
            Kind::Counter,
            "CPU time used by the agent itself (user and system).",
            (st.utime + st.stime) as f64 / tck,
        );
        e.single(
            "sidekick_resident_memory_bytes",
            Kind::Gauge,
            "Resident memory of the agent itself.",
            st.rss.saturating_mul(procfs::page_size()) as f64,
        );
        e.single(
            "sidekick_threads",
            Kind::Gauge,
            "Threads of the agent itself.",
            st.num_threads as f64,
        );
    }
}

/// How long `stats`' attempts have been failing, if they are.
fn failing_for(stats: &OutputStats, now: u64) -> Option<Duration> {
    match stats.failing_since_unix_nano.load(Relaxed) {
        0 => None,
        since => Some(Duration::from_nanos(now.saturating_sub(since))),
    }
}

/// `s` on one line, at most 200 characters.
fn one_line(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    if s.is_empty() {
        "no reason recorded".into()
    } else {
        s
    }
}
