//! The target: finding the parent application, launching it (wrapper mode),
//! watching it, and telling the pipeline about its life.
//!
//! A [`TargetSpec`] says how the target is found: a PID, a PID file, a regex
//! on the command line, or a command sidekick launches as its child.
//! [`spawn_watch`] runs one watcher thread that resolves it, waits for its
//! exit (a `pidfd` where the kernel has one, a `/proc` poll otherwise),
//! emits `process.start` / `process.exit` / `process.restart` /
//! `process.oom_kill` events as log records, and reports on a channel when
//! the target is gone for good, so the supervisor can drain and exit.
//!
//! Invariants: a target is a PID *and* its start time ([`Target`]), so a
//! reused PID is never taken for it; sidekick's own child is always reaped
//! by the watcher (never left a zombie) and its exit code is the real one;
//! for a process that is not sidekick's child the exit code is reported as
//! unknown unless the kernel still shows it (a zombie's `/proc/N/stat`).

mod crash;
mod launch;
mod logs;
mod oom;
mod process;
mod watch;

pub use crash::CrashContext;
pub use launch::forward_signals;
pub use logs::open_for_writing;
pub use process::parse_stat;
#[cfg(test)]
pub use watch::WatchHandle;
pub use watch::{spawn_watch, ExitInfo, TargetSpec, WatchOptions};

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender, TryRecvError};
use sidekick_pipeline::Chunk;
use std::time::{Duration, Instant};

/// A stop request as seen by one collector thread: fires when a `()` is
/// received or every sender is dropped (dropping the sender stops every
/// clone of the receiver at once: the way to stop several collectors).
#[derive(Debug)]
pub struct StopSignal {
    rx: Receiver<()>,
    fired: bool,
}

impl StopSignal {
    /// Wraps the receiving end of a stop channel.
    pub fn new(rx: Receiver<()>) -> Self {
        StopSignal { rx, fired: false }
    }

    /// Whether stop was requested (does not block).
    pub fn fired(&mut self) -> bool {
        if !self.fired {
            self.fired = !matches!(self.rx.try_recv(), Err(TryRecvError::Empty));
        }
        self.fired
    }

    /// Sleeps up to `d`, waking early on a stop request; true if stopping.
    pub fn wait(&mut self, d: Duration) -> bool {
        if !self.fired {
            self.fired = !matches!(self.rx.recv_timeout(d), Err(RecvTimeoutError::Timeout));
        }
        self.fired
    }
}

/// Something that says whether a stop was requested, without blocking.
pub(crate) trait Stopping {
    /// Whether stop was requested.
    fn fired(&mut self) -> bool;
}

impl Stopping for StopSignal {
    fn fired(&mut self) -> bool {
        StopSignal::fired(self)
    }
}

/// Sends `chunk` into the bounded queue, blocking while it is full. A stop
/// request interrupts the wait: the chunk then gets `grace` more to get
/// through (0 drops it). False when the queue is gone (the chunk is
/// dropped).
pub(crate) fn deliver(
    tx: &Sender<Chunk>,
    mut chunk: Chunk,
    stop: &mut impl Stopping,
    grace: Duration,
) -> bool {
    const SLICE: Duration = Duration::from_millis(100);
    let mut deadline: Option<Instant> = None;
    loop {
        match tx.send_timeout(chunk, SLICE) {
            Ok(()) => return true,
            Err(SendTimeoutError::Disconnected(_)) => return false,
            Err(SendTimeoutError::Timeout(c)) => chunk = c,
        }
        if stop.fired() {
            let d = *deadline.get_or_insert_with(|| Instant::now() + grace);
            if Instant::now() >= d {
                tracing::warn!(
                    records = chunk.records.len(),
                    "stopping with the queue full: records dropped"
                );
                return true;
            }
        }
    }
}

#[cfg(test)]
mod tests;
