//! The on-disk spool of records that cannot be read again: metric samples
//! and process events.
//!
//! Log lines wait in their files while the outputs are down (the tailer just
//! stops reading); samples and events have no file, so they get one here.
//! The sampler and the target watcher send their chunks to the spool thread,
//! which appends each chunk as one line (`COUNT JSON\n`) to the active
//! segment file `data_dir/spool/OFFSET.seg`, then reads the lines back and
//! sends them into the pipeline queue as chunks whose position is
//! `("spool", offset just past the line)`. Segment names are the global byte
//! offset of their first line, so one offset names a place in the whole
//! spool, and the [`Ledger`] commits the spool exactly as it commits a log
//! file: only past what every output acknowledged. A segment is deleted
//! once the committed offset is past its end; after `kill -9` a restart
//! reads again from the committed offset (at-least-once; the position is
//! saved through `checkpoints.fast` at once and in full at most
//! [`SAVE_DELAY`] after it moves).
//!
//! One thread does both sides: it waits on "a chunk came in" and "the queue
//! has room for the chunk read last" at once (`crossbeam_channel::Select`),
//! so a full queue never stops the appending, and the sampler keeps its
//! pace while the outputs are down.
//!
//! Invariants: the spool's size on disk stays within `spool.max_bytes`
//! (past it, the oldest segment is deleted and its unread records counted
//! in [`SpoolStats::records_dropped`] with a warning); a failed append (a
//! full disk) is reported once and the chunk goes on in memory, in a
//! bounded buffer, never an error for the rest of the agent; the segment
//! being appended to is never deleted.

use crossbeam_channel::{Receiver, Select, Sender};
use serde::{Deserialize, Serialize};
use sidekick_pipeline::{
    Attr, AttrValue, Chunk, Ledger, LogRecord, MetricKind, MetricPoint, MetricValue, Position,
    Record, SourceId, SourceMeta,
};
use std::borrow::Cow;
use std::collections::VecDeque;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// The ledger key of the spool (log files are `DEV:INODE`).
const LEDGER_KEY: &str = "spool";
/// Most bytes read back from disk into one chunk.
const READ_MAX: usize = 256 << 10;
/// A fully acknowledged active segment at least this big is closed (and
/// deleted) rather than appended to, so the disk holds little once the
/// outputs keep up.
const ROLL_ACKED: u64 = 256 << 10;
/// Most bytes of records kept in memory when appending fails.
const MEMORY_MAX: usize = 4 << 20;
/// Chunks waiting for the spool thread.
const INPUT_CAPACITY: usize = 16;
/// Longest an acknowledged move of the spool waits for its full checkpoint
/// save (a log file's move waits one second, `ledger::SAVE_DELAY`). A full
/// save is a write, a rename and two `fsync`s, and with metrics every 10 s
/// the spool moves six times a minute; each move goes to `checkpoints.fast`
/// at once instead, which survives a crash of the process (not necessarily
/// a power cut).
const SAVE_DELAY: std::time::Duration = std::time::Duration::from_secs(30);

/// The spool's counters, shared with whatever reports them.
#[derive(Debug, Default)]
pub struct SpoolStats {
    /// Records appended to the spool on disk.
    pub records_spooled: AtomicU64,
    /// Records dropped: past `spool.max_bytes` before they were sent, past
    /// the memory bound while the disk could not be written, or unreadable.
    pub records_dropped: AtomicU64,
    /// Records sent from memory because appending failed (full disk).
    pub records_in_memory: AtomicU64,
    /// Appends that failed.
    pub append_errors: AtomicU64,
    /// Bytes of the spool on disk now.
    pub bytes: AtomicU64,
}

/// Starts the spool in `data_dir/spool` bounded by `max_bytes`, feeding
/// `queue`. Returns the sender the sampler and the watcher send to (with
/// `max_bytes` 0: `queue` itself, no spool) and the spool's counters. The
/// spool thread ends once every clone of the sender is gone and what was
/// spooled has been queued.
pub fn start(
    data_dir: &Path,
    max_bytes: u64,
    ledger: Arc<Ledger>,
    queue: Sender<Chunk>,
) -> io::Result<(Sender<Chunk>, Arc<SpoolStats>)> {
    let stats = Arc::new(SpoolStats::default());
    if max_bytes == 0 {
        return Ok((queue, stats));
    }
    let (input_tx, input) = crossbeam_channel::bounded(INPUT_CAPACITY);
    let spool = SpoolThread::open(data_dir.join("spool"), max_bytes, ledger, stats.clone());
    std::thread::Builder::new()
        .name("sidekick-spool".into())
        .spawn(move || spool.run(input, queue))?;
    Ok((input_tx, stats))
}

/// A segment file: `start` is the global offset of its first byte.
#[derive(Debug, Clone, Copy)]
struct Segment {
    start: u64,
    /// Bytes of whole lines written (a file from an earlier run counts its
    /// whole length; a partial last line in it is skipped when read).
    len: u64,
}

impl Segment {
    fn end(&self) -> u64 {
        self.start + self.len
    }

    /// Whether this active segment is closed for a fresh one, with
    /// `committed` acknowledged: it is acknowledged whole and big enough,
    /// so that it can be deleted.
    fn rolls_once_acked(&self, committed: u64) -> bool {
        self.len >= ROLL_ACKED && self.end() <= committed
    }
}

struct SpoolThread {
    dir: PathBuf,
    max_bytes: u64,
    /// Size at which the active segment is closed.
    segment_max: u64,
    ledger: Arc<Ledger>,
    source: SourceId,
    stats: Arc<SpoolStats>,
    /// Oldest first; the last one is the active segment when `active` is set.
    segments: VecDeque<Segment>,
    active: Option<File>,
    /// Global offset of the next unread byte.
    read_at: u64,
    /// The segment file being read (its start) and its handle.
    reader: Option<(u64, File)>,
    /// Where the next segment starts.
    next_offset: u64,
    /// Chunks appending failed for, sent from memory.
    memory: VecDeque<Chunk>,
    memory_bytes: usize,
    /// An append failed and was reported; reset by the next good one.
    failing: bool,
    /// The records of the line appended last, while the reader is just
    /// before it ((global start, end, records)): sent without reading the
    /// line back and parsing it.
    fresh: Option<(u64, u64, Vec<Record>)>,
}

impl SpoolThread {
    /// Loads what an earlier run left in `dir`. Never fails: a spool that
    /// cannot be read is reported, and appending tries again later.
    fn open(dir: PathBuf, max_bytes: u64, ledger: Arc<Ledger>, stats: Arc<SpoolStats>) -> Self {
        let (source, saved) = ledger.source(LEDGER_KEY);
        ledger.set_save_delay(source, SAVE_DELAY);
        let committed = saved.map_or(0, |c| c.offset);
        let mut segments = Vec::new();
        match fs::read_dir(&dir) {
            Ok(entries) => {
                for e in entries.flatten() {
                    let name = e.file_name();
                    let Some(start) = name
                        .to_str()
                        .and_then(|n| n.strip_suffix(".seg"))
                        .and_then(|n| n.parse::<u64>().ok())
                    else {
                        continue;
                    };
                    let len = e.metadata().map_or(0, |m| m.len());
                    segments.push(Segment { start, len });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e,
                    "cannot read the spool; samples spooled before this start are not sent");
            }
        }
        segments.sort_by_key(|s| s.start);
        let mut spool = SpoolThread {
            segment_max: (max_bytes / 8).clamp(4 << 10, 8 << 20),
            next_offset: segments.last().map_or(0, Segment::end).max(committed),
            segments: segments.into(),
            dir,
            max_bytes,
            ledger,
            source,
            stats,
            active: None,
            read_at: committed,
            reader: None,
            memory: VecDeque::new(),
            memory_bytes: 0,
            failing: false,
            fresh: None,
        };
        spool.collect(committed);
        let unsent = spool.unread_bytes();
        if unsent > 0 {
            tracing::info!(bytes = unsent, "spool: sending what an earlier run spooled");
        }
        spool.update_bytes();
        spool
    }

    fn run(mut self, input: Receiver<Chunk>, queue: Sender<Chunk>) {
        let mut pending: Option<Chunk> = None;
        let mut open = true;
        loop {
            self.collect(self.ledger.committed(self.source));
            if pending.is_none() {
                pending = self.next_chunk();
            }
            match (pending.take(), open) {
                (Some(chunk), true) => {
                    let mut sel = Select::new();
                    let recv = sel.recv(&input);
                    let send = sel.send(&queue);
                    let oper = sel.select();
                    if oper.index() == recv {
                        pending = Some(chunk);
                        match oper.recv(&input) {
                            Ok(c) => self.append(c),
                            Err(_) => open = false,
                        }
                    } else {
                        debug_assert_eq!(oper.index(), send);
                        if oper.send(&queue, chunk).is_err() {
                            break;
                        }
                    }
                }
                (Some(chunk), false) => {
                    if queue.send(chunk).is_err() {
                        break;
                    }
                }
                (None, true) => match input.recv() {
                    Ok(c) => self.append(c),
                    Err(_) => open = false,
                },
                (None, false) => break,
            }
        }
        self.collect(self.ledger.committed(self.source));
        let s = &self.stats;
        tracing::debug!(
            spooled = s.records_spooled.load(Relaxed),
            dropped = s.records_dropped.load(Relaxed),
            in_memory = s.records_in_memory.load(Relaxed),
            append_errors = s.append_errors.load(Relaxed),
            bytes = s.bytes.load(Relaxed),
            "spool stopped"
        );
    }

    /// The next chunk to queue: what only memory holds first (it would be
    /// lost in a crash), then the next lines on disk.
    fn next_chunk(&mut self) -> Option<Chunk> {
        if let Some(c) = self.memory.pop_front() {
            self.memory_bytes = self.memory_bytes.saturating_sub(c.size());
            return Some(c);
        }
        self.read_chunk()
    }

    fn append(&mut self, chunk: Chunk) {
        let records = chunk.records.len() as u64;
        if records == 0 {
            return;
        }
        let line = encode_line(&chunk.records);
        match self.write_line(&line) {
            Ok(()) => {
                self.stats.records_spooled.fetch_add(records, Relaxed);
                let end = self.segments.back().map_or(0, Segment::end);
                let start = end - line.len() as u64;
                if self.fresh.is_none() && self.read_at == start {
                    self.fresh = Some((start, end, chunk.records));
                }
                if self.failing {
                    self.failing = false;
                    tracing::info!(dir = %self.dir.display(), "spool: appending works again");
                }
                self.enforce_bound();
                self.update_bytes();
            }
            Err(e) => {
                self.stats.append_errors.fetch_add(1, Relaxed);
                if !self.failing {
                    self.failing = true;
                    tracing::error!(dir = %self.dir.display(), error = %e,
                        "cannot append to the spool; metrics and events go on in memory \
                         (lost if sidekick is killed, dropped past 4 MiB while outputs are down)");
                }
                self.stats.records_in_memory.fetch_add(records, Relaxed);
                self.memory_bytes += chunk.size();
                self.memory.push_back(chunk);
                while self.memory_bytes > MEMORY_MAX && self.memory.len() > 1 {
                    if let Some(old) = self.memory.pop_front() {
                        self.memory_bytes = self.memory_bytes.saturating_sub(old.size());
                        self.dropped(old.records.len() as u64, "spool memory full");
                    }
                }
            }
        }
    }

    /// Appends one whole line to the active segment, opening one if needed.
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        if let (Some(seg), Some(_)) = (self.segments.back(), &self.active) {
            // Full, or acknowledged and big enough to roll: a fresh segment,
            // so that the acknowledged one can be deleted.
            if seg.len >= self.segment_max
                || seg.rolls_once_acked(self.ledger.committed(self.source))
            {
                self.active = None;
            }
        }
        if self.active.is_none() {
            self.open_segment()?;
        }
        let (Some(seg), Some(file)) = (self.segments.back_mut(), &self.active) else {
            return Err(io::Error::other("no active segment"));
        };
        // At the known end, not O_APPEND: what a failed write left behind
        // is written over by the next line.
        match file.write_all_at(line, seg.len) {
            Ok(()) => {
                seg.len += line.len() as u64;
                Ok(())
            }
            Err(e) => {
                if file.set_len(seg.len).is_err() {
                    // Leave the partial line where it is (a reader skips a
                    // last line without its newline); go on in a new file.
                    self.active = None;
                }
                Err(e)
            }
        }
    }

    fn open_segment(&mut self) -> io::Result<()> {
        let mut b = fs::DirBuilder::new();
        b.recursive(true);
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(&self.dir)?;
        let start = self
            .segments
            .back()
            .map_or(0, Segment::end)
            .max(self.next_offset);
        let file = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(self.segment_path(start))?;
        // An empty segment left by a failed append is replaced.
        if self.segments.back().is_some_and(|s| s.start == start) {
            self.segments.pop_back();
        }
        self.segments.push_back(Segment { start, len: 0 });
        self.next_offset = start;
        self.active = Some(file);
        Ok(())
    }

    fn segment_path(&self, start: u64) -> PathBuf {
        self.dir.join(format!("{start:020}.seg"))
    }

    fn is_active(&self, idx: usize) -> bool {
        self.active.is_some() && idx + 1 == self.segments.len()
    }

    /// Deletes the segments every output acknowledged (`committed` is past
    /// their end); closes an active one that is acknowledged and big enough.
    fn collect(&mut self, committed: u64) {
        if let Some(seg) = self.segments.back() {
            if self.active.is_some() && seg.rolls_once_acked(committed) {
                self.active = None;
            }
        }
        let mut removed = false;
        while let Some(seg) = self.segments.front().copied() {
            if seg.end() > committed || self.is_active(0) {
                break;
            }
            self.remove(seg);
            removed = true;
        }
        if removed {
            self.update_bytes();
        }
    }

    fn remove(&mut self, seg: Segment) {
        self.segments.pop_front();
        if self.reader.as_ref().is_some_and(|(s, _)| *s == seg.start) {
            self.reader = None;
        }
        self.read_at = self.read_at.max(seg.end());
        // Offsets are never reused: a segment opened after this one went
        // (the last one, rolled once acknowledged) starts past its end, not
        // at an offset the reader and the ledger have already passed.
        self.next_offset = self.next_offset.max(seg.end());
        if let Err(e) = fs::remove_file(self.segment_path(seg.start)) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(segment = %self.segment_path(seg.start).display(), error = %e,
                    "cannot delete a spool segment");
            }
        }
    }

    /// Past `max_bytes`: deletes the oldest segments, counting the records
    /// in them that were not sent yet.
    fn enforce_bound(&mut self) {
        while self.total_bytes() > self.max_bytes {
            if self.is_active(0) {
                // One segment over the bound on its own: close it first.
                self.active = None;
            }
            let Some(seg) = self.segments.front().copied() else {
                return;
            };
            let unread = self.count_unread(seg);
            self.remove(seg);
            if unread > 0 {
                self.dropped(unread, "spool.max_bytes reached: oldest segment deleted");
            }
        }
    }

    fn dropped(&self, records: u64, why: &'static str) {
        self.stats.records_dropped.fetch_add(records, Relaxed);
        tracing::warn!(
            records,
            total_dropped = self.stats.records_dropped.load(Relaxed),
            "{why}; records dropped"
        );
    }

    /// Records of `seg` at or past the read offset (its line prefixes).
    fn count_unread(&self, seg: Segment) -> u64 {
        if self.read_at >= seg.end() {
            return 0;
        }
        let from = self.read_at.saturating_sub(seg.start);
        let Ok(bytes) = read_range(&self.segment_path(seg.start), from, seg.len - from) else {
            return 0;
        };
        bytes
            .split(|&b| b == b'\n')
            .filter_map(|l| {
                let n = l.split(|&b| b == b' ').next()?;
                std::str::from_utf8(n).ok()?.parse::<u64>().ok()
            })
            .sum()
    }

    fn total_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    fn unread_bytes(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| s.end().saturating_sub(self.read_at.max(s.start)))
            .sum()
    }

    fn update_bytes(&self) {
        self.stats.bytes.store(self.total_bytes(), Relaxed);
    }

    /// Reads the next whole lines (up to [`READ_MAX`] bytes, at least one
    /// line) from disk as a chunk positioned just past them.
    fn read_chunk(&mut self) -> Option<Chunk> {
        match self.fresh.take() {
            Some((start, end, records)) if start == self.read_at => {
                self.read_at = end;
                return Some(Chunk {
                    records,
                    position: Some(Position {
                        source: self.source,
                        offset: end,
                    }),
                });
            }
            // Not reached yet (lines before it are unread): kept.
            Some(f) if f.0 > self.read_at => self.fresh = Some(f),
            // Passed (its segment was dropped): read no more.
            _ => {}
        }
        loop {
            let idx = self.segments.iter().position(|s| s.end() > self.read_at)?;
            let seg = self.segments[idx];
            self.read_at = self.read_at.max(seg.start);
            let from = self.read_at - seg.start;
            let left = seg.len - from;
            let mut want = left.min(READ_MAX as u64);
            let buf = loop {
                let buf = match self.read_segment(seg.start, from, want) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::error!(segment = %self.segment_path(seg.start).display(),
                            error = %e, "cannot read a spool segment; skipping it");
                        self.read_at = seg.end();
                        break None;
                    }
                };
                if let Some(end) = buf.iter().rposition(|&b| b == b'\n') {
                    let mut buf = buf;
                    buf.truncate(end + 1);
                    break Some(buf);
                }
                if want >= left {
                    // A last line without its newline: cut short by a crash
                    // or a full disk in an earlier run.
                    if !self.is_active(idx) {
                        self.read_at = seg.end();
                    }
                    break None;
                }
                want = (want * 2).min(left);
            };
            let Some(buf) = buf else {
                if self.is_active(idx) {
                    return None;
                }
                continue;
            };
            self.read_at += buf.len() as u64;
            let mut records = Vec::new();
            for line in buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                match decode_line(line) {
                    Ok(mut r) => records.append(&mut r),
                    Err(e) => {
                        tracing::warn!(segment = %self.segment_path(seg.start).display(),
                            error = %e, "unreadable spool line skipped");
                        self.dropped(line_count(line), "unreadable spool line");
                    }
                }
            }
            return Some(Chunk {
                records,
                position: Some(Position {
                    source: self.source,
                    offset: self.read_at,
                }),
            });
        }
    }

    fn read_segment(&mut self, start: u64, from: u64, len: u64) -> io::Result<Vec<u8>> {
        if self.reader.as_ref().is_none_or(|(s, _)| *s != start) {
            self.reader = Some((start, File::open(self.segment_path(start))?));
        }
        let Some((_, f)) = &self.reader else {
            return Err(io::Error::other("no reader"));
        };
        let mut buf = vec![0; len as usize];
        f.read_exact_at(&mut buf, from)?;
        Ok(buf)
    }
}

fn read_range(path: &Path, from: u64, len: u64) -> io::Result<Vec<u8>> {
    let f = File::open(path)?;
    let mut buf = vec![0; len as usize];
    f.read_exact_at(&mut buf, from)?;
    Ok(buf)
}

fn line_count(line: &[u8]) -> u64 {
    line.split(|&b| b == b' ')
        .next()
        .and_then(|n| std::str::from_utf8(n).ok())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// The line format: `COUNT [RECORD,...]\n`, RECORD being the JSON below. The
// count lets a dropped segment's records be counted without parsing them.

#[derive(Serialize, Deserialize)]
enum SValue<'a> {
    #[serde(rename = "s")]
    Str(Cow<'a, str>),
    #[serde(rename = "i")]
    Int(i64),
    /// NaN and infinities are `null` in JSON; they come back as NaN.
    #[serde(rename = "d")]
    Double(Option<f64>),
    #[serde(rename = "b")]
    Bool(bool),
}

#[derive(Serialize, Deserialize)]
enum SKind {
    #[serde(rename = "gauge")]
    Gauge,
    #[serde(rename = "sum")]
    Sum,
    #[serde(rename = "monotonic_sum")]
    MonotonicSum,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "t")]
enum SRecord<'a> {
    #[serde(rename = "log")]
    Log {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<Cow<'a, str>>,
        /// A body that is not UTF-8.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body_bytes: Option<Vec<u8>>,
        time: u64,
        observed: u64,
        severity: i32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        severity_text: Option<Cow<'a, str>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<Cow<'a, str>>,
        #[serde(default)]
        attrs: Vec<(Cow<'a, str>, SValue<'a>)>,
    },
    #[serde(rename = "metric")]
    Metric {
        name: Cow<'a, str>,
        unit: Cow<'a, str>,
        kind: SKind,
        value: SValue<'a>,
        time: u64,
        start: u64,
        #[serde(default)]
        attrs: Vec<(Cow<'a, str>, SValue<'a>)>,
    },
}

fn s_value(v: &AttrValue) -> SValue<'_> {
    match v {
        AttrValue::Str(s) => SValue::Str(Cow::Borrowed(s)),
        AttrValue::Int(i) => SValue::Int(*i),
        AttrValue::Double(d) => SValue::Double(d.is_finite().then_some(*d)),
        AttrValue::Bool(b) => SValue::Bool(*b),
    }
}

fn attr_value(v: SValue<'_>) -> AttrValue {
    match v {
        SValue::Str(s) => AttrValue::Str(Cow::Owned(s.into_owned())),
        SValue::Int(i) => AttrValue::Int(i),
        SValue::Double(d) => AttrValue::Double(d.unwrap_or(f64::NAN)),
        SValue::Bool(b) => AttrValue::Bool(b),
    }
}

fn s_attrs(attrs: &[Attr]) -> Vec<(Cow<'_, str>, SValue<'_>)> {
    attrs
        .iter()
        .map(|a| (Cow::Borrowed(&*a.key), s_value(&a.value)))
        .collect()
}

fn attrs(v: Vec<(Cow<'_, str>, SValue<'_>)>) -> Vec<Attr> {
    v.into_iter()
        .map(|(k, v)| Attr {
            key: Cow::Owned(k.into_owned()),
            value: attr_value(v),
        })
        .collect()
}

fn s_record(r: &Record) -> SRecord<'_> {
    match r {
        Record::Log(l) => {
            let (body, body_bytes) = match std::str::from_utf8(&l.body) {
                Ok(s) => (Some(Cow::Borrowed(s)), None),
                Err(_) => (None, Some(l.body.to_vec())),
            };
            SRecord::Log {
                body,
                body_bytes,
                time: l.time_unix_nano,
                observed: l.observed_time_unix_nano,
                severity: l.severity_number,
                severity_text: l.severity_text.as_deref().map(Cow::Borrowed),
                path: l.source.as_ref().map(|s| Cow::Borrowed(s.path.as_str())),
                attrs: s_attrs(&l.attributes),
            }
        }
        Record::Metric(m) => SRecord::Metric {
            name: Cow::Borrowed(&m.name),
            unit: Cow::Borrowed(&m.unit),
            kind: match m.kind {
                MetricKind::Gauge => SKind::Gauge,
                MetricKind::Sum { monotonic: false } => SKind::Sum,
                MetricKind::Sum { monotonic: true } => SKind::MonotonicSum,
            },
            value: match m.value {
                MetricValue::Int(i) => SValue::Int(i),
                MetricValue::Double(d) => SValue::Double(d.is_finite().then_some(d)),
            },
            time: m.time_unix_nano,
            start: m.start_time_unix_nano,
            attrs: s_attrs(&m.attributes),
        },
    }
}

fn record(s: SRecord<'_>) -> Record {
    match s {
        SRecord::Log {
            body,
            body_bytes,
            time,
            observed,
            severity,
            severity_text,
            path,
            attrs: a,
        } => Record::Log(LogRecord {
            body: match (body, body_bytes) {
                (Some(s), _) => bytes::Bytes::from(s.into_owned()),
                (None, Some(b)) => bytes::Bytes::from(b),
                (None, None) => bytes::Bytes::new(),
            },
            time_unix_nano: time,
            observed_time_unix_nano: observed,
            severity_number: severity,
            severity_text: severity_text.map(|s| Cow::Owned(s.into_owned())),
            source: path.map(|p| Arc::new(SourceMeta::for_path(&p))),
            attributes: attrs(a),
        }),
        SRecord::Metric {
            name,
            unit,
            kind,
            value,
            time,
            start,
            attrs: a,
        } => Record::Metric(MetricPoint {
            name: Cow::Owned(name.into_owned()),
            unit: Cow::Owned(unit.into_owned()),
            kind: match kind {
                SKind::Gauge => MetricKind::Gauge,
                SKind::Sum => MetricKind::Sum { monotonic: false },
                SKind::MonotonicSum => MetricKind::Sum { monotonic: true },
            },
            value: match value {
                SValue::Int(i) => MetricValue::Int(i),
                SValue::Double(d) => MetricValue::Double(d.unwrap_or(f64::NAN)),
                // Never written for a metric value; read as the value it says.
                SValue::Bool(b) => MetricValue::Int(i64::from(b)),
                SValue::Str(s) => MetricValue::Double(s.parse().unwrap_or(f64::NAN)),
            },
            time_unix_nano: time,
            start_time_unix_nano: start,
            attributes: attrs(a),
        }),
    }
}

/// One spool line for `records`, newline included.
fn encode_line(records: &[Record]) -> Vec<u8> {
    let mut line = format!("{} ", records.len()).into_bytes();
    let items: Vec<SRecord<'_>> = records.iter().map(s_record).collect();
    // Serializing plain data into a Vec cannot fail.
    if serde_json::to_writer(&mut line, &items).is_err() {
        line.truncate(0);
        line.extend_from_slice(b"0 []");
    }
    line.push(b'\n');
    line
}

/// The records of one spool line (without its newline).
fn decode_line(line: &[u8]) -> Result<Vec<Record>, String> {
    let space = line
        .iter()
        .position(|&b| b == b' ')
        .ok_or("no record count")?;
    let items: Vec<SRecord<'_>> =
        serde_json::from_slice(&line[space + 1..]).map_err(|e| e.to_string())?;
    Ok(items.into_iter().map(record).collect())
}

/// For tests: the spool thread, stopped by dropping the returned sender.
#[cfg(test)]
fn start_joinable(
    data_dir: &Path,
    max_bytes: u64,
    ledger: Arc<Ledger>,
    queue: Sender<Chunk>,
) -> (Sender<Chunk>, Arc<SpoolStats>, std::thread::JoinHandle<()>) {
    let stats = Arc::new(SpoolStats::default());
    let (input_tx, input) = crossbeam_channel::bounded(INPUT_CAPACITY);
    let spool = SpoolThread::open(data_dir.join("spool"), max_bytes, ledger, stats.clone());
    let h = std::thread::spawn(move || spool.run(input, queue));
    (input_tx, stats, h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sidekick_pipeline::Checkpoints;
    use std::time::Duration;

    fn sample(t: u64, points: usize) -> Chunk {
        Chunk {
            records: (0..points)
                .map(|i| {
                    Record::Metric(MetricPoint {
                        name: Cow::Borrowed("process.memory.usage"),
                        unit: Cow::Borrowed("By"),
                        kind: MetricKind::Sum { monotonic: true },
                        value: MetricValue::Int(i as i64),
                        time_unix_nano: t,
                        start_time_unix_nano: 7,
                        attributes: vec![Attr::new("cpu.mode", "user")],
                    })
                })
                .collect(),
            position: None,
        }
    }

    fn times(chunks: &[Chunk]) -> Vec<u64> {
        let mut t: Vec<u64> = chunks
            .iter()
            .flat_map(|c| &c.records)
            .filter_map(|r| match r {
                Record::Metric(m) => Some(m.time_unix_nano),
                Record::Log(_) => None,
            })
            .collect();
        t.dedup();
        t
    }

    fn ledger(dir: &Path) -> Arc<Ledger> {
        Arc::new(Ledger::new(1, Some(Checkpoints::open(dir).unwrap())).unwrap())
    }

    /// Acknowledges `c` as an output would, through a one-chunk batch.
    fn ack(l: &Ledger, c: &Chunk) {
        let id = l.begin_batch(c.position.into_iter().collect());
        l.ack(id);
    }

    /// Spools sample `t`, takes it from the queue and acknowledges it.
    fn send_and_ack(tx: &Sender<Chunk>, rx: &Receiver<Chunk>, l: &Ledger, t: u64) -> Chunk {
        tx.send(sample(t, 10)).unwrap();
        let c = rx
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("sample {t} was spooled but never sent"));
        ack(l, &c);
        c
    }

    fn segments(dir: &Path) -> usize {
        fs::read_dir(dir.join("spool")).map_or(0, |d| d.count())
    }

    #[test]
    fn records_round_trip_through_a_line() {
        let mut log = LogRecord {
            body: bytes::Bytes::from_static(b"process exited \xff"),
            time_unix_nano: 1,
            observed_time_unix_nano: 2,
            severity_number: 17,
            severity_text: Some(Cow::Borrowed("ERROR")),
            source: Some(Arc::new(SourceMeta::for_path("/var/log/a.log"))),
            attributes: vec![
                Attr::new("event.name", "process.exit"),
                Attr::new("process.exit.code", 3i64),
                Attr::new("oom", true),
                Attr::new("ratio", 0.5),
                Attr::new("nan", f64::NAN),
            ],
        };
        let metric = sample(42, 1).records.pop().unwrap();
        let line = encode_line(&[Record::Log(log.clone()), metric]);
        assert!(
            line.starts_with(b"2 ["),
            "{}",
            String::from_utf8_lossy(&line)
        );
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let back = decode_line(&line[..line.len() - 1]).unwrap();
        let Record::Log(l) = &back[0] else { panic!() };
        assert_eq!(l.body, log.body);
        assert_eq!(l.severity_text.as_deref(), Some("ERROR"));
        assert_eq!(l.source.as_ref().unwrap().name, "a.log");
        assert!(matches!(l.attributes[4].value, AttrValue::Double(d) if d.is_nan()));
        log.attributes.pop();
        assert_eq!(&l.attributes[..4], &log.attributes[..]);
        let Record::Metric(m) = &back[1] else {
            panic!()
        };
        assert_eq!(m.time_unix_nano, 42);
        assert_eq!(m.kind, MetricKind::Sum { monotonic: true });
        assert_eq!(m.value, MetricValue::Int(0));
        assert_eq!(m.attributes, vec![Attr::new("cpu.mode", "user")]);
    }

    #[test]
    fn spools_while_nobody_acknowledges_and_resumes_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let l = ledger(dir.path());
        let (q, rx) = sidekick_pipeline::queue::bounded(1);
        let (tx, _stats, h) = start_joinable(dir.path(), 1 << 20, l.clone(), q);
        // The queue holds one chunk and nobody reads it: appending goes on.
        for t in 0..20 {
            tx.send(sample(t, 3)).unwrap();
        }
        let first = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        ack(&l, &first);
        l.persist().unwrap();
        // A crash: the thread is gone, nothing else was acknowledged.
        drop(rx);
        drop(tx);
        h.join().unwrap();
        assert_eq!(times(&[first]), vec![0]);

        let l = ledger(dir.path());
        let (q, rx) = sidekick_pipeline::queue::bounded(64);
        let (tx, stats, h) = start_joinable(dir.path(), 1 << 20, l.clone(), q);
        drop(tx);
        h.join().unwrap();
        let again: Vec<Chunk> = rx.try_iter().collect();
        assert_eq!(times(&again), (1..20).collect::<Vec<_>>());
        assert_eq!(stats.records_dropped.load(Relaxed), 0);
        for c in &again {
            ack(&l, c);
        }
        // Acknowledged segments are deleted at the next look.
        let l2 = l.clone();
        let (q, _rx) = sidekick_pipeline::queue::bounded(64);
        let (tx, _, h) = start_joinable(dir.path(), 1 << 20, l2, q);
        drop(tx);
        h.join().unwrap();
        assert_eq!(segments(dir.path()), 0, "acknowledged segments deleted");
    }

    #[test]
    fn samples_after_a_rolled_and_deleted_segment_are_sent() {
        let dir = tempfile::tempdir().unwrap();
        let l = ledger(dir.path());
        let (q, rx) = sidekick_pipeline::queue::bounded(64);
        let (tx, stats, h) = start_joinable(dir.path(), 64 << 20, l.clone(), q);
        let mut got = Vec::new();
        let mut take = |tx: &Sender<Chunk>, from: u64, to: u64| {
            for t in from..to {
                got.push(send_and_ack(tx, &rx, &l, t));
                // Wakes the spool thread after the acknowledgement (it
                // appends nothing): it looks at what was acknowledged.
                tx.send(sample(t, 0)).unwrap();
            }
        };
        // About 1.6 KiB a sample: past ROLL_ACKED, the acknowledged active
        // segment is closed and deleted when the thread looks (here at the
        // wake after an acknowledgement); later samples go to a new one.
        take(&tx, 0, 200);
        take(&tx, 200, 400);
        let first = dir.path().join("spool").join(format!("{:020}.seg", 0));
        assert!(
            !first.exists(),
            "the first segment was rolled and deleted: {:?}",
            fs::metadata(&first).map(|m| m.len())
        );
        drop(tx);
        h.join().unwrap();
        assert_eq!(times(&got), (0..400).collect::<Vec<_>>());
        assert_eq!(stats.records_dropped.load(Relaxed), 0);
    }

    #[test]
    fn an_acknowledged_spool_rolls_at_the_next_append_and_stays_small() {
        let dir = tempfile::tempdir().unwrap();
        let l = ledger(dir.path());
        let (q, rx) = sidekick_pipeline::queue::bounded(64);
        let (tx, stats, h) = start_joinable(dir.path(), 64 << 20, l.clone(), q);
        let mut got = Vec::new();
        let mut most = 0;
        for t in 0..600 {
            got.push(send_and_ack(&tx, &rx, &l, t));
            most = most.max(stats.bytes.load(Relaxed));
        }
        drop(tx);
        h.join().unwrap();
        assert_eq!(times(&got), (0..600).collect::<Vec<_>>());
        // About 960 KiB went through; once acknowledged, at most about
        // ROLL_ACKED and a sample were kept (an 8 MiB segment without the
        // roll).
        assert!(
            most <= ROLL_ACKED + (4 << 10),
            "spool held {most} bytes at most"
        );
    }

    #[test]
    fn past_max_bytes_the_oldest_segment_goes_and_its_records_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let l = ledger(dir.path());
        let (q, rx) = sidekick_pipeline::queue::bounded(1);
        // 32 KiB: segments of 4 KiB; one sample of 10 points is ~1.6 KiB.
        let (tx, stats, h) = start_joinable(dir.path(), 32 << 10, l, q);
        for t in 0..200 {
            tx.send(sample(t, 10)).unwrap();
        }
        drop(tx);
        // Reads everything that is left, as the batcher would.
        let mut got = Vec::new();
        while let Ok(c) = rx.recv_timeout(Duration::from_secs(5)) {
            got.push(c);
        }
        h.join().unwrap();
        let got_records: u64 = got.iter().map(|c| c.records.len() as u64).sum();
        let dropped = stats.records_dropped.load(Relaxed);
        assert!(dropped > 0, "something was dropped");
        assert_eq!(got_records + dropped, 2000, "every record sent or counted");
        assert!(stats.bytes.load(Relaxed) <= 32 << 10);
        let t = times(&got);
        assert_eq!(*t.last().unwrap(), 199, "the newest kept");
        assert!(t.windows(2).all(|w| w[0] < w[1]), "in order: {t:?}");
    }

    #[test]
    fn a_spool_that_cannot_be_written_sends_from_memory() {
        let dir = tempfile::tempdir().unwrap();
        let l = ledger(dir.path());
        // `spool` is a file: the directory cannot be created.
        fs::write(dir.path().join("spool"), b"").unwrap();
        let (q, rx) = sidekick_pipeline::queue::bounded(64);
        let (tx, stats, h) = start_joinable(dir.path(), 1 << 20, l, q);
        for t in 0..5 {
            tx.send(sample(t, 2)).unwrap();
        }
        drop(tx);
        h.join().unwrap();
        let got: Vec<Chunk> = rx.try_iter().collect();
        assert_eq!(times(&got), vec![0, 1, 2, 3, 4]);
        assert!(got.iter().all(|c| c.position.is_none()));
        assert_eq!(stats.append_errors.load(Relaxed), 5);
        assert_eq!(stats.records_in_memory.load(Relaxed), 10);
    }

    #[test]
    fn a_cut_last_line_of_an_earlier_run_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        fs::create_dir_all(&spool).unwrap();
        let mut bytes = encode_line(&sample(1, 2).records);
        let good = bytes.len();
        bytes.extend_from_slice(&encode_line(&sample(2, 2).records)[..20]);
        fs::write(spool.join(format!("{:020}.seg", 0)), &bytes).unwrap();
        let l = ledger(dir.path());
        let (q, rx) = sidekick_pipeline::queue::bounded(64);
        let (tx, _, h) = start_joinable(dir.path(), 1 << 20, l, q);
        tx.send(sample(3, 2)).unwrap();
        drop(tx);
        h.join().unwrap();
        let got: Vec<Chunk> = rx.try_iter().collect();
        assert_eq!(times(&got), vec![1, 3]);
        assert_eq!(got[0].position.unwrap().offset, good as u64);
        // The new segment starts past the old one's whole length.
        assert!(got[1].position.unwrap().offset > bytes.len() as u64);
    }
}
