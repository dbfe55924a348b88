//! The batcher: drains the queue into batches.
//!
//! A batch is flushed when it holds `max_records` records or `max_bytes`
//! bytes, or when its oldest record has waited `timeout`. A chunk that does
//! not fit is split, so both limits hold exactly. An idle batcher sleeps in
//! `recv` with no timer. Each batch is registered with the [`Ledger`] before
//! it is handed on, carrying the latest position each source reached in it.

use crate::ledger::{BatchId, Ledger};
use crate::queue::{Chunk, Position, Receiver, RecvTimeoutError};
use crate::record::{LogRecord, MetricPoint, Record};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// When a batch is flushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Most records in one batch.
    pub max_records: usize,
    /// Most bytes (record sizes summed) in one batch.
    pub max_bytes: usize,
    /// Longest time the oldest record of a batch waits for more.
    pub timeout: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_records: 8192,
            max_bytes: 4 << 20,
            timeout: Duration::from_secs(1),
        }
    }
}

/// Records on their way to the outputs, as one unit of acknowledgement.
#[derive(Debug, Default)]
pub struct Batch {
    /// Its ledger id; every output acknowledges it once.
    pub id: BatchId,
    /// Log records and events, in arrival order.
    pub logs: Vec<LogRecord>,
    /// Metric points, in arrival order.
    pub metrics: Vec<MetricPoint>,
    /// Record sizes summed.
    pub bytes: usize,
}

impl Batch {
    /// Records in the batch.
    pub fn len(&self) -> usize {
        self.logs.len() + self.metrics.len()
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Turns a stream of chunks into acknowledged-ledger batches.
#[derive(Debug)]
pub struct Batcher {
    cfg: BatchConfig,
    ledger: Arc<Ledger>,
    open: Batch,
    positions: Vec<Position>,
    opened_at: Option<Instant>,
    /// Log records in the last batch flushed: the next batch reserves as
    /// many at once instead of growing (and copying) its vector step by step.
    last_logs: usize,
}

impl Batcher {
    /// A batcher registering its batches with `ledger`.
    pub fn new(cfg: BatchConfig, ledger: Arc<Ledger>) -> Self {
        Batcher {
            cfg: BatchConfig {
                max_records: cfg.max_records.max(1),
                max_bytes: cfg.max_bytes.max(1),
                timeout: cfg.timeout,
            },
            ledger,
            open: Batch::default(),
            positions: Vec::new(),
            opened_at: None,
            last_logs: 0,
        }
    }

    /// Drains `rx` until every sender is gone, calling `emit` with each batch
    /// (`emit` may block: that is the backpressure). Flushes what is left at
    /// the end.
    pub fn run(mut self, rx: Receiver<Chunk>, mut emit: impl FnMut(Arc<Batch>)) {
        loop {
            let next = match self.opened_at {
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(t) => {
                    let deadline = t + self.cfg.timeout;
                    match deadline.checked_duration_since(Instant::now()) {
                        Some(left) if !left.is_zero() => rx.recv_timeout(left),
                        _ => Err(RecvTimeoutError::Timeout),
                    }
                }
            };
            match next {
                Ok(chunk) => self.push(chunk, &mut emit),
                Err(RecvTimeoutError::Timeout) => self.flush(&mut emit),
                Err(RecvTimeoutError::Disconnected) => {
                    self.flush(&mut emit);
                    return;
                }
            }
        }
    }

    fn push(&mut self, chunk: Chunk, emit: &mut impl FnMut(Arc<Batch>)) {
        let Chunk { records, position } = chunk;
        for r in records {
            let size = r.size();
            if !self.open.is_empty()
                && (self.open.len() >= self.cfg.max_records
                    || self.open.bytes + size > self.cfg.max_bytes)
            {
                self.flush(emit);
            }
            if self.opened_at.is_none() {
                self.opened_at = Some(Instant::now());
                if self.open.logs.capacity() == 0 {
                    self.open.logs.reserve(self.last_logs);
                }
            }
            self.open.bytes += size;
            match r {
                Record::Log(l) => self.open.logs.push(l),
                Record::Metric(m) => self.open.metrics.push(m),
            }
        }
        if let Some(p) = position {
            match self.positions.iter_mut().find(|q| q.source == p.source) {
                Some(q) => q.offset = p.offset,
                None => self.positions.push(p),
            }
            if self.open.is_empty() {
                // A chunk with no records (a skipped stretch) still moves its
                // source on, through an empty batch.
                self.opened_at.get_or_insert_with(Instant::now);
            }
        }
        if self.open.len() >= self.cfg.max_records || self.open.bytes >= self.cfg.max_bytes {
            self.flush(emit);
        }
    }

    fn flush(&mut self, emit: &mut impl FnMut(Arc<Batch>)) {
        self.opened_at = None;
        if self.open.is_empty() && self.positions.is_empty() {
            return;
        }
        let mut batch = std::mem::take(&mut self.open);
        self.last_logs = batch.logs.len();
        batch.id = self.ledger.begin_batch(std::mem::take(&mut self.positions));
        emit(Arc::new(batch));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue;
    use crate::record::LogRecord;
    use crate::SourceId;
    use bytes::Bytes;

    fn line(s: &'static str) -> Record {
        Record::Log(LogRecord {
            body: Bytes::from_static(s.as_bytes()),
            ..LogRecord::default()
        })
    }

    fn run(cfg: BatchConfig, chunks: Vec<Chunk>) -> (Vec<Arc<Batch>>, Arc<Ledger>) {
        let ledger = Arc::new(Ledger::new(1, None).unwrap());
        let (tx, rx) = queue::bounded(chunks.len() + 1);
        for c in chunks {
            tx.send(c).unwrap();
        }
        drop(tx);
        let mut out = Vec::new();
        Batcher::new(cfg, ledger.clone()).run(rx, |b| out.push(b));
        (out, ledger)
    }

    #[test]
    fn splits_on_max_records_and_keeps_order() {
        let cfg = BatchConfig {
            max_records: 2,
            ..BatchConfig::default()
        };
        let chunk = Chunk {
            records: vec![line("a"), line("b"), line("c"), line("d"), line("e")],
            position: None,
        };
        let (out, _) = run(cfg, vec![chunk]);
        let sizes: Vec<usize> = out.iter().map(|b| b.len()).collect();
        assert_eq!(sizes, vec![2, 2, 1]);
        let bodies: Vec<&[u8]> = out
            .iter()
            .flat_map(|b| b.logs.iter().map(|l| &l.body[..]))
            .collect();
        assert_eq!(bodies, vec![b"a", b"b", b"c", b"d", b"e"]);
        let ids: Vec<u64> = out.iter().map(|b| b.id).collect();
        assert_eq!(ids, vec![0, 1, 2]);
    }

    #[test]
    fn position_rides_on_the_batch_holding_the_chunks_last_record() {
        let cfg = BatchConfig {
            max_records: 2,
            ..BatchConfig::default()
        };
        let chunk = Chunk {
            records: vec![line("a"), line("b"), line("c")],
            position: Some(Position {
                source: SourceId(0),
                offset: 6,
            }),
        };
        let (out, ledger) = run(cfg, vec![chunk]);
        let (s, _) = ledger.source("f");
        assert_eq!(s, SourceId(0));
        ledger.ack(out[1].id);
        assert_eq!(ledger.committed(s), 0, "first batch unacknowledged");
        ledger.ack(out[0].id);
        assert_eq!(ledger.committed(s), 6);
    }

    #[test]
    fn flushes_on_linger_timeout_while_senders_stay() {
        let ledger = Arc::new(Ledger::new(1, None).unwrap());
        let (tx, rx) = queue::bounded(4);
        let (btx, brx) = std::sync::mpsc::channel();
        let cfg = BatchConfig {
            timeout: Duration::from_millis(50),
            ..BatchConfig::default()
        };
        let h =
            std::thread::spawn(move || Batcher::new(cfg, ledger).run(rx, |b| btx.send(b).unwrap()));
        tx.send(Chunk {
            records: vec![line("x")],
            position: None,
        })
        .unwrap();
        let b = brx
            .recv_timeout(Duration::from_secs(5))
            .expect("linger flush");
        assert_eq!(b.len(), 1);
        drop(tx);
        h.join().unwrap();
    }

    #[test]
    fn flushes_on_max_bytes() {
        let cfg = BatchConfig {
            max_bytes: 150,
            ..BatchConfig::default()
        };
        // each line counts 64 + len bytes
        let chunk = Chunk {
            records: vec![line("aaaa"), line("bbbb"), line("cccc")],
            position: None,
        };
        let (out, _) = run(cfg, vec![chunk]);
        assert!(out.iter().all(|b| b.bytes <= 150));
        assert_eq!(out.iter().map(|b| b.len()).sum::<usize>(), 3);
    }
}
