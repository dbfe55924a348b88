//! The bounded queue between collectors and the batcher.
//!
//! Collectors send [`Chunk`]s (all the records from one read) rather than
//! single records, so the cost of the channel is paid per chunk, not per line.
//! The channel is `crossbeam_channel::bounded`: when it is full, `send`
//! blocks the collector, which stops reading; the log file is the buffer.

use crate::record::Record;
use crate::SourceId;

pub use crossbeam_channel::{Receiver, RecvTimeoutError, SendError, Sender, TrySendError};

/// Where a chunk ends in its source: after the chunk is acknowledged, the
/// source may be resumed from `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The source (registered with the ledger).
    pub source: SourceId,
    /// The byte offset just past the chunk's last record.
    pub offset: u64,
}

/// A group of records from one read of one collector.
#[derive(Debug, Default)]
pub struct Chunk {
    /// The records, in source order.
    pub records: Vec<Record>,
    /// Resume position after these records, for re-readable sources.
    pub position: Option<Position>,
}

impl Chunk {
    /// Bytes this chunk holds.
    pub fn size(&self) -> usize {
        self.records.iter().map(Record::size).sum()
    }
}

/// A bounded queue of chunks holding at most `capacity` chunks.
pub fn bounded(capacity: usize) -> (Sender<Chunk>, Receiver<Chunk>) {
    crossbeam_channel::bounded(capacity.max(1))
}
