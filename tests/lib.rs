//! The end-to-end harness of sidekick: real processes, real files, real HTTP
//! on loopback.
//!
//! The tests treat `sidekick` as a black box and talk to it only through its
//! contracts (CLI, config file, OTLP/HTTP, stderr, exit codes):
//!
//! ```text
//!  LogWriter ──► files ──► sidekick run (Agent) ──► FaultProxy ──► sidekick receive (Receiver)
//!                              │ stderr → file           │ plan: forward / status / drop     │
//!                              ▼                         ▼ saved requests, counts            ▼
//!                         assertions ◄──────────────────────────────────────────── DIR/logs.ndjson
//! ```
//!
//! Invariants of the harness: every wait has a timeout and says what it was
//! waiting for when it gives up; every child process is killed and reaped on
//! `Drop`, so a panicking test leaks nothing; a failing test prints the
//! agent's stderr.
#![deny(unsafe_code)]

mod agent;
mod binary;
mod process;
mod proxy;
mod receiver;
mod records;
mod writer;

pub use agent::{Agent, AgentConfig};
pub use binary::sidekick_bin;
pub use process::{python, python3, Proc};
pub use proxy::{Action, Counts, FaultProxy, Outage, Request};
pub use receiver::Receiver;
pub use records::{Record, SeqReport};
pub use writer::{line_for, seq_of, spawn_writer, LogFile, WriterHandle, WriterPlan};

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Polls `done` every 25 ms until it returns true; panics after `timeout`
/// with `what` and the result of `detail` (the state that was waited for).
pub fn wait_until(
    timeout: Duration,
    what: &str,
    mut done: impl FnMut() -> bool,
    detail: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}: {}",
                detail()
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Serialises the heavy tests of one test binary: two of them at once on a
/// two-core machine would measure the machine, not sidekick.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Nanoseconds since the Unix epoch, for time windows compared with
/// `observed_time_unix_nano`.
pub fn unix_nanos() -> u64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970");
    u64::try_from(d.as_nanos()).expect("time fits in u64 nanoseconds")
}

/// A test's scratch space: `logs/` for the files sidekick tails, `data/` for
/// its `data_dir`, and the directory itself for configs and agent output.
#[derive(Debug)]
pub struct Scratch {
    dir: tempfile::TempDir,
    pub logs: std::path::PathBuf,
    pub data: std::path::PathBuf,
}

impl Scratch {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("sidekick-e2e-")
            .tempdir()
            .expect("a temp dir");
        // Canonical, so paths compare equal to what sidekick reports.
        let root = dir.path().canonicalize().expect("canonical temp dir");
        let logs = root.join("logs");
        let data = root.join("data");
        std::fs::create_dir_all(&logs).expect("create logs/");
        Self { dir, logs, data }
    }

    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// `logs/NAME`.
    pub fn log(&self, name: &str) -> std::path::PathBuf {
        self.logs.join(name)
    }

    /// The glob `logs/*.log`.
    pub fn log_glob(&self) -> std::path::PathBuf {
        self.logs.join("*.log")
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}
