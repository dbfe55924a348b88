//! The pipeline between sidekick's collectors and its outputs.
//!
//! Collectors (log tailers, the metric sampler, the target watcher) turn what
//! they read into [`Record`]s and push them, grouped in [`Chunk`]s, into a
//! bounded queue ([`queue`]). One [`Batcher`] thread drains the queue into
//! [`Batch`]es flushed on size, count or linger time, registers every batch in
//! the acknowledgement [`Ledger`] and hands it to the outputs. Outputs
//! acknowledge batches in any order; the ledger advances a source's committed
//! position only over a contiguous run of acknowledged batches and persists it
//! atomically ([`Checkpoints`]).
//!
//! Invariants:
//! - a committed position never moves past a record that some output has not
//!   acknowledged (or dropped for good, which is counted);
//! - the queue is bounded: a full queue blocks the producer, it never drops;
//! - this crate knows nothing of files, processes or HTTP.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod batcher;
mod checkpoints;
mod ledger;
pub mod queue;
mod record;

pub use batcher::{Batch, BatchConfig, Batcher};
pub use checkpoints::{Checkpoint, CheckpointError, Checkpoints};
pub use ledger::{BatchId, Ledger, SaveHold, SourceId, SAVE_DELAY};
pub use queue::{Chunk, Position};
pub use record::{
    Attr, AttrValue, LogRecord, MetricKind, MetricPoint, MetricValue, Record, SourceMeta,
};

/// Nanoseconds since the Unix epoch, now (0 if the clock is before 1970).
pub fn now_unix_nano() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
