//! The log tailer: finds the files a source's globs match, reads them in
//! large chunks, splits lines without copying them, decodes them (formats,
//! partial lines, multiline records: [`crate::formats`]) and pushes them into
//! the pipeline's queue with the position each chunk reaches.
//!
//! One thread tails every file. It wakes on inotify events (through
//! `notify`), on its scan timer (`scan_interval`, for volumes where inotify is
//! silent), on a pending multiline record's timeout and when told to stop —
//! never on a short poll. A pass reads only the files an event named, that a
//! scan found grown, or that still had data left after their per-pass byte
//! budget, so one busy file cannot stall the others and idle files cost one
//! `fstat` per scan.
//!
//! Invariants:
//! - a position sent with a chunk is the offset just past the last byte the
//!   chunk accounts for (lines emitted or bytes skipped); a partial last line
//!   or a pending multiline record is held in memory and never counted;
//! - a file is known by device and inode, and also by a fingerprint of its
//!   first bytes, so a reused inode is read from its start and a file
//!   truncated and refilled (copytruncate) is noticed even when it has grown
//!   past the old offset;
//! - a file that leaves its path (rotated, deleted) is read to its end before
//!   it is let go, and so is a file rotated away while the agent was down
//!   (found again by its checkpoint's device, inode and fingerprint);
//! - memory per file is bounded by `max_line_bytes` plus one read chunk.

use crate::formats::{LineDecoder, LogFormat, MultilineRules};
use crate::target::CrashContext;
use anyhow::Context as _;
use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use sidekick_pipeline::{
    now_unix_nano, Attr, Checkpoint, Chunk, Ledger, LogRecord, Position, Record, SourceId,
    SourceMeta,
};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How much one `read` asks for.
const READ_CHUNK: usize = crate::config::memory::READ_CHUNK as usize;
/// How long a rotated or deleted file stays open after reaching its end, for
/// writers that have not reopened their log yet.
const ROTATE_GRACE: Duration = Duration::from_secs(2);
/// How often the sources of files let go are looked at, while some wait
/// for their last acknowledgement.
const RETIRE_CHECK: Duration = Duration::from_millis(500);
/// How old an unchanged mtime must be to prove that an unchanged file was
/// not written since it was last found whole (timestamps have a tick: a
/// coarse kernel clock, a second on some filesystems).
const RACY_MTIME: Duration = Duration::from_secs(2);
/// How many of the last bytes read before a file's offset must be the same
/// in a rotation, besides its first bytes, for it to be taken for the copy
/// a `copytruncate` made of the file.
const TAIL_BYTES: usize = 64;
/// Least time between two scans asked for by filesystem events (a burst of
/// creations costs one scan, not one per file).
const RESCAN_GAP: Duration = Duration::from_millis(200);
/// A timer scan lists the globs again only when a directory they went
/// through changed, and at least every this many scans (a directory change
/// a filesystem does not stamp, a wildcard directory with no file yet).
const FULL_SCAN_EVERY: u32 = 12;
/// Where inotify covers every directory on a local filesystem, the timer
/// scan comes every this many `scan_interval`s: it is then only a safety net
/// (a lost event without an overflow notice), for growth (one `fstat` per
/// open file) and, through the directories' mtimes, for new and renamed
/// files; the globs are listed at every `FULL_SCAN_EVERY`th of these.
const TIMER_EVERY_COVERED: u32 = 60;
/// A directory modified this recently counts as changed: its mtime has the
/// kernel's coarse clock, and an entry made in the same tick as our last
/// look would not move it.
const DIR_SETTLE: Duration = Duration::from_secs(2);

/// Where a newly found file is read from when no checkpoint knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// From its first byte.
    Beginning,
    /// From its current end (only for files present at the first scan; files
    /// that appear later are always read from their start).
    End,
}

/// One log source, as the tailer needs it.
#[derive(Debug, Clone)]
pub struct TailSpec {
    /// Names the source for [`Wake::RemoveSource`] (a reload); 0 for
    /// sources that are never removed one by one.
    pub id: u64,
    /// Glob patterns of files to tail (`*`, `?`, `[..]`, `**`).
    pub include: Vec<String>,
    /// Glob patterns of paths or file names to leave out.
    pub exclude: Vec<String>,
    /// Where a file with no checkpoint is read from.
    pub start_at: StartAt,
    /// Longest line kept; the rest of a longer line is skipped.
    pub max_line_bytes: usize,
    /// Period of the full rescan beside inotify.
    pub scan_interval: Duration,
    /// Most files held open at once (the smallest over all sources is the
    /// tailer's budget); idle files beyond it are closed and reopened when
    /// they grow.
    pub max_open_files: usize,
    /// Bytes read from one file before the others get their turn.
    pub read_budget: usize,
    /// Bytes of a file's start that identify it beside device and inode.
    pub fingerprint_bytes: usize,
    /// How lines are decoded.
    pub format: LogFormat,
    /// How lines are joined into records, if they are.
    pub multiline: Option<MultilineRules>,
}

/// What the tailer counts, for self-telemetry.
#[derive(Debug, Default)]
pub struct TailStats {
    /// Lines (records) read.
    pub lines: AtomicU64,
    /// Bytes consumed from files.
    pub bytes: AtomicU64,
    /// Lines cut at `max_line_bytes`.
    pub truncated_lines: AtomicU64,
    /// Files found truncated (copytruncate) and read again from the start.
    pub truncations: AtomicU64,
    /// Files currently open.
    pub open_files: AtomicU64,
}

/// Why the tailer woke up.
#[derive(Debug)]
pub enum Wake {
    /// A filesystem event.
    Fs(notify::Result<notify::Event>),
    /// Stop reading and return (pending multiline records are shipped;
    /// partial last lines are read again after a restart).
    Stop,
    /// The target is gone: read every file to its current end, ship held
    /// partial last lines too (no newline will ever come), then return.
    Drain,
    /// Read every file to its current end and note held partial lines in
    /// the crash context, then answer (the target's exit event waits).
    CatchUp(Sender<()>),
    /// A new source (a file an attached target opened for writing, or a
    /// source a reload added).
    AddSource(TailSpec),
    /// A reload removed the sources with this [`TailSpec::id`]: their files
    /// are read to their current end and let go (a file another source
    /// still includes stays, under that source). Held partial last lines
    /// are not shipped: their checkpoint stays before them.
    RemoveSource(u64),
}

type FileId = (u64, u64);

struct Compiled {
    spec: TailSpec,
    exclude: Vec<glob::Pattern>,
    include: Vec<glob::Pattern>,
    /// Whether this source's first scan is done: files found by it (and
    /// not known to a checkpoint) start at `start_at`; later ones at 0.
    scanned: bool,
    /// Removed by a reload: no longer scanned (kept so that the other
    /// sources' indices stay valid).
    removed: bool,
}

fn compile(spec: TailSpec) -> anyhow::Result<Compiled> {
    let mut exclude = Vec::new();
    for p in &spec.exclude {
        exclude.push(glob::Pattern::new(p).with_context(|| format!("invalid exclude glob {p:?}"))?);
    }
    let mut include = Vec::new();
    for p in &spec.include {
        include.push(glob::Pattern::new(p).with_context(|| format!("invalid include glob {p:?}"))?);
    }
    Ok(Compiled {
        spec,
        exclude,
        include,
        scanned: false,
        removed: false,
    })
}

struct Tailed {
    spec: usize,
    path: PathBuf,
    /// `None` while parked: idle and closed to stay within `max_open_files`.
    file: Option<File>,
    /// When it was last read from (for choosing which idle file to park).
    last_read: Instant,
    source: SourceId,
    meta: Arc<SourceMeta>,
    /// Offset of `partial[0]` in the file: everything before it has been
    /// split into lines (and handed to the decoder) or skipped.
    consumed: u64,
    /// The bytes of a last line whose newline has not come yet.
    partial: Vec<u8>,
    /// Dropping the rest of an over-long line up to its newline.
    skipping: bool,
    /// When the path stopped pointing at this file (rotated or deleted).
    rotated_at: Option<Instant>,
    /// Bytes the saved fingerprint covers; grows with a short file up to
    /// `fingerprint_bytes`, so a file shorter than that is still read.
    fp_len: usize,
    /// The fingerprint of the first `fp_len` bytes.
    fp: u64,
    decoder: LineDecoder,
    /// Raw lines, no multiline: the decoder is bypassed.
    passthrough: bool,
    /// The last position sent for this file.
    sent: u64,
    /// The last bytes before `read_end` (up to [`TAIL_BYTES`]): with the
    /// fingerprint, they tell a copy of what was read (`copytruncate`) from
    /// an older rotation that starts alike.
    tail: Vec<u8>,
    /// The file's mtime when it was last found not truncated (its own
    /// filesystem's clock): a rotation written later than that, when it is
    /// found truncated, holds a generation the tailer never saw (two
    /// `copytruncate`s while it looked away). An unchanged mtime at an
    /// unchanged size spares the fingerprint check.
    checked: Option<SystemTime>,
}

impl Tailed {
    /// Where the next read starts.
    fn read_end(&self) -> u64 {
        self.consumed + self.partial.len() as u64
    }

    /// How far the file is accounted for in records already produced.
    fn position(&self) -> u64 {
        if self.passthrough {
            self.consumed
        } else {
            self.decoder.committed_offset()
        }
    }

    /// Whether the file, now `size` bytes long, was truncated since it was
    /// read (`copytruncate`): it is shorter than what was read, or its
    /// first bytes changed (truncated and refilled up to or past the
    /// offset). False while it is parked.
    fn truncated(&self, size: u64) -> io::Result<bool> {
        let Some(file) = &self.file else {
            return Ok(false);
        };
        Ok(size < self.read_end()
            || (self.fp_len > 0 && fingerprint(file, self.fp_len)? != self.fp))
    }

    fn save_meta(&self, ledger: &Ledger) {
        ledger.set_meta(self.source, self.meta_json());
    }

    /// The facts saved with the file's checkpoint.
    fn meta_json(&self) -> serde_json::Value {
        serde_json::json!({"path": self.meta.path, "fp": self.fp, "fp_len": self.fp_len})
    }
}

/// The tailer of every log source.
pub struct Tailer {
    specs: Vec<Compiled>,
    files: HashMap<FileId, Tailed>,
    /// The files at the paths the globs matched (keyed by the path's bytes:
    /// hashing a `Path` walks its components, which a scan of thousands of
    /// files feels).
    by_path: HashMap<OsString, FileId>,
    dirty: HashSet<FileId>,
    /// Files whose decoder holds a pending record (it has a deadline).
    pending: HashSet<FileId>,
    /// What reading a file needs besides the file: a field of its own, so
    /// that it can be lent beside a file borrowed from `files`.
    io: Io,
    _watcher: Option<notify::RecommendedWatcher>,
    watched: HashSet<PathBuf>,
    ctl: Control,
    /// Files with a descriptor open, and the most allowed.
    open_count: usize,
    /// The open files by when they were last read (parking picks the
    /// oldest idle one).
    lru: BTreeSet<(Instant, FileId)>,
    max_open: usize,
    warned: HashSet<String>,
    /// Whether saved checkpoints no glob matched were looked for.
    restored: bool,
    /// Files found at start-up that a checkpoint knew with other content
    /// (path, source spec, checkpoint), until `restore_rotated`.
    truncated_while_down: Vec<(PathBuf, usize, Checkpoint)>,
    last_scan: Option<Instant>,
    /// The directories the last full scan listed (glob bases and the
    /// matched files' parents), with their mtimes then (`None`: missing).
    dirs: HashMap<PathBuf, Option<std::time::SystemTime>>,
    /// Timer scans since the last full one.
    light_scans: u32,
    /// Whether inotify watches every directory of the last listing, on a
    /// local filesystem, where it reports every write: a timer scan then
    /// leaves growth to inotify instead of looking at each file.
    inotify_covers: bool,
    /// Sources of files let go whose last records are not acknowledged yet,
    /// with the position they must reach: their checkpoints are kept until
    /// then, so that a crash meanwhile reads the rest again after a restart.
    retiring: HashMap<SourceId, u64>,
    /// When `retiring` is looked at next.
    next_retire: Instant,
}

impl Tailer {
    /// A tailer for `specs`, sending into `tx`. Returns it with the sender to
    /// wake it (and to stop it with [`Wake::Stop`]).
    pub fn new(
        specs: Vec<TailSpec>,
        tx: Sender<Chunk>,
        ledger: Arc<Ledger>,
        stats: Arc<TailStats>,
    ) -> anyhow::Result<(Tailer, Sender<Wake>)> {
        let (wake_tx, wake) = crossbeam_channel::unbounded();
        let compiled = specs
            .into_iter()
            .map(compile)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let max_open = compiled
            .iter()
            .map(|c| c.spec.max_open_files.max(1))
            .min()
            .unwrap_or(usize::MAX);
        let fs_tx = wake_tx.clone();
        let watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            // Opens and reads (ours, or anyone's `tail` or `grep` of a log)
            // and metadata changes say nothing a scan needs: the tailer is
            // not woken for them. A close after writing is growth.
            use notify::event::{AccessKind, AccessMode, ModifyKind};
            use notify::EventKind;
            if let Ok(e) = &ev {
                match e.kind {
                    EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
                    EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_)) => return,
                    _ => {}
                }
            }
            let _ = fs_tx.send(Wake::Fs(ev));
        });
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "inotify unavailable, relying on the scan interval");
                None
            }
        };
        Ok((
            Tailer {
                specs: compiled,
                files: HashMap::new(),
                by_path: HashMap::new(),
                dirty: HashSet::new(),
                pending: HashSet::new(),
                io: Io {
                    tx,
                    ledger,
                    stats,
                    wake,
                    crash: None,
                },
                _watcher: watcher,
                watched: HashSet::new(),
                ctl: Control::default(),
                open_count: 0,
                lru: BTreeSet::new(),
                max_open,
                warned: HashSet::new(),
                restored: false,
                truncated_while_down: Vec::new(),
                last_scan: None,
                dirs: HashMap::new(),
                light_scans: 0,
                inotify_covers: false,
                retiring: HashMap::new(),
                next_retire: Instant::now(),
            },
            wake_tx,
        ))
    }

    /// Keeps the last lines read in `crash`, for the target's exit event.
    pub fn with_crash_context(mut self, crash: Arc<CrashContext>) -> Self {
        self.io.crash = Some(crash);
        self
    }

    /// Tails until told to stop (or the queue is gone).
    pub fn run(mut self) {
        let scan_every = self
            .specs
            .iter()
            .map(|c| c.spec.scan_interval)
            .min()
            .unwrap_or(Duration::from_secs(5))
            .max(Duration::from_millis(50));
        let mut next_scan = Instant::now();
        let mut rescan = false;
        while !self.ctl.stop {
            let now = Instant::now();
            let event_scan_due = rescan
                && self
                    .last_scan
                    .is_none_or(|t| now.duration_since(t) >= RESCAN_GAP);
            if event_scan_due || now >= next_scan {
                // A filesystem event lists the globs again; the timer does
                // only if a directory changed (or every `FULL_SCAN_EVERY`th
                // time). Where inotify covers every directory, the timer
                // scan is the safety net, every `TIMER_EVERY_COVERED`
                // intervals.
                self.scan(event_scan_due);
                rescan = false;
                next_scan = Instant::now()
                    + match self.inotify_covers {
                        true => scan_every * TIMER_EVERY_COVERED,
                        false => scan_every,
                    };
            }
            let more = self.read_pass();
            self.flush_expired();
            if !self.retiring.is_empty() && Instant::now() >= self.next_retire {
                self.retire_acknowledged();
            }
            for spec in std::mem::take(&mut self.ctl.added) {
                rescan |= self.on_wake(Wake::AddSource(spec));
            }
            for id in std::mem::take(&mut self.ctl.removed) {
                rescan |= self.on_wake(Wake::RemoveSource(id));
            }
            if self.ctl.drain && !self.ctl.stop {
                self.drain();
            }
            if self.ctl.stop {
                break;
            }
            let timeout = if more {
                Duration::ZERO
            } else {
                let mut t = self.next_deadline(next_scan);
                if rescan {
                    let due = self.last_scan.map_or(Duration::ZERO, |s| {
                        (s + RESCAN_GAP).saturating_duration_since(Instant::now())
                    });
                    t = t.min(due);
                }
                t
            };
            match self.io.wake.recv_timeout(timeout) {
                Ok(w) => {
                    rescan |= self.on_wake(w);
                    while let Ok(w) = self.io.wake.try_recv() {
                        rescan |= self.on_wake(w);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        // Complete records held by the decoders (a multiline record waiting
        // for its timeout) are shipped; partial lines are read again after a
        // restart. Positions are committed through the ledger only.
        if !self.ctl.closed {
            self.flush_pending();
        }
        self.hand_over_unseen_truncations();
        self.io.stats.open_files.store(0, Ordering::Relaxed);
    }

    /// At a stop: a file truncated (`copytruncate`) since the tailer last
    /// looked at it (held back by a full queue, or the stop came first)
    /// hands its checkpoint over to its copy, unread. A restart then reads
    /// on in the copy from what was acknowledged; the file's own
    /// checkpoint, saved after the copy was made, would not lead there.
    fn hand_over_unseen_truncations(&mut self) {
        let ids: Vec<FileId> = self
            .files
            .iter()
            .filter(|(_, f)| f.rotated_at.is_none() && f.read_end() > 0)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            // A parked file is opened again to be looked at, if its path
            // still leads to it (never let go here: a restart looks for a
            // file rotated away by its checkpoint).
            if let Some(f) = self.files.get_mut(&id).filter(|f| f.file.is_none()) {
                let same = File::open(&f.path)
                    .ok()
                    .filter(|file| file.metadata().is_ok_and(|md| (md.dev(), md.ino()) == id));
                let Some(file) = same else { continue };
                f.file = Some(file);
                self.open_count += 1;
                self.lru.insert((f.last_read, id));
            }
            let truncated = self.files.get(&id).is_some_and(|f| {
                let size = f.file.as_ref().and_then(|file| file.metadata().ok());
                size.is_some_and(|m| f.truncated(m.len()).unwrap_or(false))
            });
            let found = self
                .files
                .get(&id)
                .filter(|_| truncated)
                .and_then(|f| self.find_copy(&Seen::of(id, f)));
            if found.is_some() {
                if let Err(e) = self.on_truncated(id) {
                    tracing::warn!(error = %e, "a truncated file's copy could not take over its checkpoint");
                }
            }
        }
    }

    fn next_deadline(&self, next_scan: Instant) -> Duration {
        let mut deadline = next_scan;
        // Files let go are retired once acknowledged.
        if !self.retiring.is_empty() {
            deadline = deadline.min(self.next_retire);
        }
        // A rotated file must be closed once its grace is over.
        for f in self.files.values() {
            if let Some(t) = f.rotated_at {
                deadline = deadline.min(t + ROTATE_GRACE);
            }
        }
        for id in &self.pending {
            if let Some(t) = self
                .files
                .get(id)
                .and_then(|f| f.decoder.pending_deadline())
            {
                deadline = deadline.min(t);
            }
        }
        deadline.saturating_duration_since(Instant::now())
    }

    /// Ships the pending records whose timeout has passed.
    fn flush_expired(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let now = Instant::now();
        let ids: Vec<FileId> = self.pending.iter().copied().collect();
        for id in ids {
            let Some(f) = self.files.get_mut(&id) else {
                self.pending.remove(&id);
                continue;
            };
            if f.decoder.pending_deadline().is_some_and(|t| t <= now) {
                let mut out = Vec::new();
                f.decoder.flush_expired(now, &mut out);
                if !self.ship(id, out) {
                    return;
                }
            }
        }
    }

    /// Ships every pending record (shutdown).
    fn flush_pending(&mut self) {
        let ids: Vec<FileId> = self.pending.iter().copied().collect();
        for id in ids {
            let Some(f) = self.files.get_mut(&id) else {
                continue;
            };
            let mut out = Vec::new();
            f.decoder.flush(&mut out);
            if !self.ship(id, out) {
                return;
            }
        }
    }

    /// Sends `out` (records the decoder of `id` produced) with the file's
    /// position; keeps `pending` true. Returns false when the queue is gone.
    fn ship(&mut self, id: FileId, out: Vec<LogRecord>) -> bool {
        let Some(f) = self.files.get_mut(&id) else {
            return true;
        };
        if f.decoder.pending_deadline().is_some() {
            self.pending.insert(id);
        } else {
            self.pending.remove(&id);
        }
        if send_records(f, out, &self.io, &mut self.ctl) {
            true
        } else {
            self.ctl.closed = true;
            false
        }
    }

    /// Ships a file's held partial last line (no newline will come: the
    /// target is gone or the file was rotated away) and whatever its
    /// decoder holds.
    fn finish(&mut self, id: FileId) -> bool {
        let Some(f) = self.files.get_mut(&id) else {
            return true;
        };
        let mut out = Vec::new();
        let observed = now_unix_nano();
        if !f.partial.is_empty() && !f.skipping {
            let line = Bytes::from(std::mem::take(&mut f.partial));
            f.consumed += line.len() as u64;
            emit(f, line, false, f.consumed, observed, &mut out);
        } else if f.skipping {
            f.consumed += f.partial.len() as u64;
            f.partial.clear();
            f.decoder.skip_to(f.consumed);
        }
        f.decoder.flush(&mut out);
        self.ship(id, out)
    }

    /// Reads every file to its current end, then ships held partial lines.
    fn drain(&mut self) {
        self.scan(true);
        while self.read_pass() && !self.ctl.stop {}
        let ids: Vec<FileId> = self.files.keys().copied().collect();
        for id in ids {
            if !self.finish(id) {
                break;
            }
        }
        self.ctl.stop = true;
    }

    /// Handles one wake-up; returns whether a rescan is needed.
    fn on_wake(&mut self, w: Wake) -> bool {
        match w {
            Wake::Stop => {
                self.ctl.stop = true;
                false
            }
            Wake::Drain => {
                self.drain();
                false
            }
            Wake::RemoveSource(id) => {
                self.remove_source(id);
                true
            }
            Wake::AddSource(spec) => match compile(spec) {
                Ok(c) => {
                    self.specs.push(c);
                    true
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot add a log source");
                    false
                }
            },
            Wake::CatchUp(done) => {
                self.scan(true);
                while self.read_pass() && !self.ctl.stop {}
                if let Some(crash) = &self.io.crash {
                    let partial: Vec<Bytes> = self
                        .files
                        .values()
                        .filter(|f| !f.partial.is_empty() && !f.skipping)
                        .map(|f| Bytes::copy_from_slice(&f.partial))
                        .collect();
                    crash.push_lines(&partial);
                }
                let _ = done.send(());
                false
            }
            Wake::Fs(Err(e)) => {
                tracing::debug!(error = %e, "inotify error; rescanning");
                true
            }
            Wake::Fs(Ok(ev)) => {
                use notify::event::{AccessKind, AccessMode, ModifyKind};
                use notify::EventKind;
                // Opens, reads and metadata changes were left out where
                // the watcher sent them (`Tailer::new`): our own scans and
                // reads must not cause a scan, or the tailer would wake
                // itself forever.
                let mut rescan = !matches!(
                    ev.kind,
                    EventKind::Modify(ModifyKind::Data(_))
                        | EventKind::Access(AccessKind::Close(AccessMode::Write))
                );
                for p in &ev.paths {
                    match self.by_path.get(p.as_os_str()) {
                        Some(id) => {
                            self.dirty.insert(*id);
                        }
                        None => rescan = true,
                    }
                }
                rescan
            }
        }
    }

    /// Expands every glob, opens new files, notices rotated and deleted ones,
    /// and marks the files that grew.
    fn scan(&mut self, full: bool) {
        self.last_scan = Some(Instant::now());
        let full = full
            || self.light_scans + 1 >= FULL_SCAN_EVERY
            || self.specs.iter().any(|c| !c.scanned && !c.removed)
            || self.dirs_changed();
        // The size each file at its path had when `consider` looked at it:
        // a file still at its path needs no second look (`fstat`).
        let mut sizes: HashMap<FileId, u64> = HashMap::new();
        let tailed_before = self.files.len();
        // At start-up, a file found truncated is saved with its new content
        // only together with the copy that holds its unread lines
        // (`restore_rotated`): a crash in between must not leave a
        // checkpoint that matches the truncated file and no record of the
        // copy.
        let hold = (!self.restored).then(|| self.io.ledger.hold_saves());
        if full {
            self.light_scans = 0;
            self.list(&mut sizes);
        } else {
            // Nothing was added, removed or renamed in the directories:
            // only growth is looked for, one `fstat` per open file.
            self.light_scans += 1;
        }
        if !self.restored {
            self.restored = true;
            self.restore_rotated();
        }
        drop(hold);
        if self.files.len() > tailed_before {
            // Files just opened are saved before they are read: a crash
            // right after, then a rotation before the restart, must not
            // leave the restarted agent without the rotated file's
            // checkpoint (it could not find the file again).
            if let Err(e) = self.io.ledger.persist() {
                self.warn_once("checkpoint save".to_string(), &e);
            }
        }
        for c in &mut self.specs {
            c.scanned = true;
        }
        // Files no longer at their path: renamed within the globs (follow
        // the new name), or rotated away or deleted (read to the end, then
        // let go). Files that grew are marked for reading.
        let mut release = Vec::new();
        let mut at: Option<HashMap<FileId, &OsString>> = None;
        for (id, f) in self.files.iter_mut() {
            if self.by_path.get(f.path.as_os_str()) != Some(id) {
                // Rare (a rotation): only then is the reverse map built.
                let at = at.get_or_insert_with(|| {
                    let mut m = HashMap::new();
                    for (p, id) in &self.by_path {
                        m.entry(*id).or_insert(p);
                    }
                    m
                });
                if let Some(p) = at.get(id) {
                    f.path = PathBuf::from(*p);
                } else if f.file.is_none() {
                    // Parked and gone: nothing left to read it through.
                    release.push(*id);
                    continue;
                } else if f.rotated_at.is_none() {
                    tracing::debug!(path = %f.path.display(), "file rotated or deleted; reading it to its end");
                    f.rotated_at = Some(Instant::now());
                }
            }
            let size = match (sizes.get(id), &f.file) {
                (Some(size), _) if f.rotated_at.is_none() => Ok(*size),
                (_, Some(file)) => file.metadata().map(|m| m.len()),
                (_, None) => std::fs::metadata(&f.path).map(|m| m.len()),
            };
            if size.is_ok_and(|s| s != f.read_end()) || f.rotated_at.is_some() {
                self.dirty.insert(*id);
            }
        }
        for id in release {
            self.release(id);
        }
    }

    /// Lists the globs: opens new files and finds where known ones are now
    /// (`by_path`); `sizes` gets the size `stat` saw of each. Remembers the
    /// directories listed, with their mtimes from before the listing (a
    /// change made while listing shows at the next scan).
    fn list(&mut self, sizes: &mut HashMap<FileId, u64>) {
        let mut dirs: HashMap<PathBuf, Option<std::time::SystemTime>> = HashMap::new();
        for c in self.specs.iter().filter(|c| !c.removed) {
            for pattern in &c.spec.include {
                dirs.insert(glob_base(pattern).0, None);
            }
        }
        for p in self.by_path.keys() {
            match Path::new(p).parent() {
                Some(parent) if !dirs.contains_key(parent) => {
                    dirs.insert(parent.to_path_buf(), None);
                }
                _ => {}
            }
        }
        for (d, m) in dirs.iter_mut() {
            *m = dir_mtime(d);
        }
        let mut current: HashMap<OsString, FileId> = HashMap::new();
        for si in 0..self.specs.len() {
            if self.specs[si].removed {
                continue;
            }
            for pattern in self.specs[si].spec.include.clone() {
                self.watch_base(&pattern);
                let paths = match glob::glob(&pattern) {
                    Ok(p) => p,
                    Err(e) => {
                        self.warn_once(format!("glob {pattern}"), &e);
                        continue;
                    }
                };
                for entry in paths {
                    let path = match entry {
                        Ok(p) => p,
                        Err(e) => {
                            self.warn_once(format!("glob {}", e.path().display()), e.error());
                            continue;
                        }
                    };
                    if current.contains_key(path.as_os_str()) || self.excluded(si, &path) {
                        continue;
                    }
                    if let Some((id, size)) = self.consider(si, &path) {
                        sizes.insert(id, size);
                        current.insert(path.into_os_string(), id);
                    }
                }
            }
        }
        // A directory first seen in this listing: listed again next time
        // (its mtime was not taken before the listing).
        for p in current.keys() {
            if let Some(parent) = Path::new(p).parent() {
                if !dirs.contains_key(parent) {
                    self.light_scans = FULL_SCAN_EVERY;
                }
            }
        }
        self.inotify_covers = self._watcher.is_some()
            && self.specs.iter().filter(|c| !c.removed).all(|c| {
                c.spec
                    .include
                    .iter()
                    .all(|p| self.watched.contains(&glob_base(p).0))
            })
            && dirs.keys().all(|d| local_filesystem(d));
        self.dirs = dirs;
        self.by_path = current;
    }

    /// Whether a directory the last listing went through changed since (or
    /// changed too recently to tell).
    fn dirs_changed(&self) -> bool {
        if self.dirs.is_empty() {
            return true;
        }
        self.dirs.iter().any(|(d, then)| {
            let now = dir_mtime(d);
            now != *then || now.is_some_and(|m| m.elapsed().map_or(true, |age| age < DIR_SETTLE))
        })
    }

    /// After a restart: the saved checkpoints no glob matched name files
    /// rotated away while the agent was down (or gone). Each is looked for in
    /// its old directory by device and inode, read from its checkpoint to
    /// its end if its fingerprint matches (from its start if not, under a
    /// rotated name: truncated and refilled), and let go.
    fn restore_rotated(&mut self) {
        let mut rotated: HashMap<PathBuf, Rotated> = HashMap::new();
        // Files at their path truncated while the agent was down: their
        // copies are looked for among the rotations.
        let saved_at = self.io.ledger.saved_at();
        for (path, si, cp) in std::mem::take(&mut self.truncated_while_down) {
            if !has_content(&cp) {
                continue;
            }
            rotated
                .entry(path)
                .or_insert_with(|| Rotated::new(si))
                .copied
                .push((cp, saved_at));
        }
        for (key, cp) in self.io.ledger.dormant() {
            let Some((dev, ino)) = key
                .split_once(':')
                .and_then(|(d, i)| Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?)))
            else {
                continue;
            };
            let Some(old) = cp
                .meta
                .get("path")
                .and_then(|p| p.as_str())
                .map(PathBuf::from)
            else {
                self.io.ledger.forget(&key);
                continue;
            };
            let found = old.parent().and_then(|dir| {
                std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
                    let md = e.metadata().ok()?;
                    (md.is_file() && md.dev() == dev && md.ino() == ino).then(|| e.path())
                })
            });
            let Some(path) = found else {
                tracing::debug!(path = %old.display(), "a checkpointed file is gone");
                self.io.ledger.forget(&key);
                continue;
            };
            let si = self
                .specs
                .iter()
                .position(|c| c.include.iter().any(|p| p.matches_path(&old)))
                .unwrap_or(0);
            if self.specs.is_empty() || !self.make_room((dev, ino)) {
                continue;
            }
            let same = File::open(&path)
                .and_then(|file| {
                    let size = file.metadata()?.len();
                    Ok(matches_checkpoint(&file, &cp, size))
                })
                .unwrap_or(false);
            if !same && (!is_rotation_of(&path, &old) || is_compressed(&path)) {
                // Not the file the checkpoint knew (inode reused): a file
                // outside the globs, or a compressed rotation, is not ours
                // to read.
                self.io.ledger.forget(&key);
                continue;
            }
            // Not the content the checkpoint knew, under a rotated name:
            // truncated and refilled (copytruncate), then rotated, while
            // nobody looked. All of it is new: `open` reads a known inode
            // whose checkpoint does not match from its start, and the copy
            // is read from the checkpoint (`restore_unseen_rotations`).
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            match self.open(si, &path, (dev, ino), size, Start::Saved, Some(&old)) {
                Ok(mut t) => {
                    // To the nanosecond: a copy made a few milliseconds
                    // before this file was truncated is older than it.
                    let mtime = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .unwrap_or(UNIX_EPOCH);
                    let e = rotated
                        .entry(old.clone())
                        .or_insert_with(|| Rotated::new(si));
                    e.newest = Some(e.newest.unwrap_or(UNIX_EPOCH).max(mtime));
                    if !same && has_content(&cp) {
                        e.copied.push((cp.clone(), None));
                    }
                    tracing::info!(path = %path.display(), was = %old.display(), offset = t.consumed, "resuming a file rotated while sidekick was down");
                    t.rotated_at = Some(Instant::now());
                    self.adopt((dev, ino), t);
                }
                Err(e) => {
                    let key = format!("open {}", path.display());
                    self.warn_once(key, &e);
                }
            }
        }
        self.restore_unseen_rotations(rotated);
    }

    /// Rotations of `old` newer than the newest one a checkpoint knew were
    /// created and rotated away while the agent was down (a writer that
    /// rotates faster than the agent restarts): read them from the start.
    /// A rotation holding what a copied-and-truncated file's checkpoint knew
    /// (its fingerprint) is that file's copy: the newest such one (by
    /// ctime) is read from the checkpoint, the others are left alone.
    fn restore_unseen_rotations(&mut self, rotated: HashMap<PathBuf, Rotated>) {
        // Tailed paths: a file named like a rotation of a longer one
        // (`app.log.error.1` when `app.log.error` is tailed too) is that
        // one's, not `app.log`'s.
        let owners: Vec<PathBuf> = self.by_path.keys().map(PathBuf::from).collect();
        for (old, r) in rotated {
            let Some(dir) = old.parent() else {
                continue;
            };
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            // Per copied checkpoint: its newest copy (ctime, mtime, path, id,
            // size).
            type Copy = (SystemTime, Option<SystemTime>, PathBuf, FileId, u64);
            let mut copies: Vec<Option<Copy>> = vec![None; r.copied.len()];
            // Rotations that are no copy: (mtime, path, id, size).
            let mut others: Vec<(Option<SystemTime>, PathBuf, FileId, u64)> = Vec::new();
            for e in entries.flatten() {
                let path = e.path();
                let Ok(md) = e.metadata() else { continue };
                let id = (md.dev(), md.ino());
                if !md.is_file()
                    || !is_rotation_of(&path, &old)
                    || self.files.contains_key(&id)
                    || self.by_path.values().any(|v| *v == id)
                    || self.excluded(r.si, &path)
                    || owners.iter().any(|o| {
                        o.as_os_str().len() > old.as_os_str().len()
                            && (*o == path || is_rotation_of(&path, o))
                    })
                    || is_compressed(&path)
                {
                    continue;
                }
                // A copy made while the agent was down was created (its
                // ctime) after the last save of the run before. A rename
                // moves a ctime too, so the fingerprint decides.
                let ctime = UNIX_EPOCH
                    + Duration::new(md.ctime().max(0) as u64, md.ctime_nsec().max(0) as u32);
                let copy_of = if r.copied.is_empty() {
                    None
                } else {
                    File::open(&path).ok().and_then(|f| {
                        r.copied.iter().position(|(cp, after)| {
                            after.is_none_or(|t| ctime >= t) && matches_checkpoint(&f, cp, md.len())
                        })
                    })
                };
                match copy_of {
                    // The newest copy of each checkpoint (by ctime).
                    Some(i) if copies[i].as_ref().is_none_or(|c| c.0 < ctime) => {
                        copies[i] = Some((ctime, md.modified().ok(), path, id, md.len()));
                    }
                    Some(_) => {}
                    // Read from their start only under a rotation's name
                    // (`app.log.1`, `app.log-20261127`), not any file that
                    // starts like the log (`app.log.bak`, `app.log.error`).
                    None if numbered_rotation(&path, &old) => {
                        others.push((md.modified().ok(), path, id, md.len()));
                    }
                    None => {}
                }
            }
            // Rotations written after the newest one a checkpoint found, or
            // after a copy of the checkpointed content (a second copytruncate
            // while the agent was down: its copy holds the lines written
            // after the first truncation), or, with no copy left, after the
            // run before's last save, were made while the agent was down:
            // read from their start.
            let newest = r
                .newest
                .or_else(|| copies.iter().flatten().filter_map(|c| c.1).max())
                .or_else(|| {
                    // A copied checkpoint whose copy is gone: compressed by
                    // a second logrotate run (`delaycompress`) or deleted.
                    // The rotations written after the run before's last
                    // save were made while the agent was down.
                    r.copied
                        .iter()
                        .zip(&copies)
                        .filter(|(_, c)| c.is_none())
                        .filter_map(|((_, after), _)| *after)
                        .min()
                });
            // The copies first: they must not miss a place among
            // `max_open_files` (the truncated file's new checkpoint is saved
            // with them).
            for (i, c) in copies.into_iter().enumerate() {
                if let Some((_, _, path, id, len)) = c {
                    let start = Start::At(r.copied[i].0.offset);
                    self.open_rotation(r.si, &path, id, len, start, &old);
                }
            }
            for (mtime, path, id, len) in others {
                if newest.is_some_and(|n| mtime.is_some_and(|m| m > n)) {
                    self.open_rotation(r.si, &path, id, len, Start::Beginning, &old);
                }
            }
        }
    }

    /// Opens a rotation found after a restart, to be read to its end and
    /// let go.
    fn open_rotation(
        &mut self,
        si: usize,
        path: &Path,
        id: FileId,
        len: u64,
        start: Start,
        old: &Path,
    ) {
        if !self.make_room(id) {
            return;
        }
        match self.open(si, path, id, len, start, Some(old)) {
            Ok(mut t) => {
                tracing::info!(path = %path.display(), offset = t.consumed, "reading a rotation made while sidekick was down");
                t.rotated_at = Some(Instant::now());
                self.adopt(id, t);
            }
            Err(e) => {
                let key = format!("open {}", path.display());
                self.warn_once(key, &e);
            }
        }
    }

    /// [`Wake::RemoveSource`]: reads the removed sources' files to their
    /// current end, ships what their decoders hold and lets them go, unless
    /// another source includes them too.
    fn remove_source(&mut self, id: u64) {
        let mut gone = HashSet::new();
        for (si, c) in self.specs.iter_mut().enumerate() {
            if c.spec.id == id && id != 0 && !c.removed {
                c.removed = true;
                gone.insert(si);
            }
        }
        if gone.is_empty() {
            return;
        }
        let ids: Vec<FileId> = self
            .files
            .iter()
            .filter(|(_, f)| gone.contains(&f.spec))
            .map(|(id, _)| *id)
            .collect();
        for fid in ids {
            let Some(path) = self.files.get(&fid).map(|f| f.path.clone()) else {
                continue;
            };
            let other = (0..self.specs.len()).find(|&si| {
                let c = &self.specs[si];
                !c.removed
                    && c.include.iter().any(|p| p.matches_path(&path))
                    && !self.excluded(si, &path)
            });
            if let Some(si) = other {
                // Still included: it goes on under that source, decoded its
                // way from here (what the old decoder holds is shipped).
                let mut out = Vec::new();
                if let Some(f) = self.files.get_mut(&fid) {
                    f.decoder.flush(&mut out);
                }
                if !self.ship(fid, out) {
                    return;
                }
                let spec = &self.specs[si].spec;
                if let Some(f) = self.files.get_mut(&fid) {
                    let decoder =
                        LineDecoder::new(spec.format, spec.multiline.clone(), spec.max_line_bytes)
                            .starting_at(f.consumed)
                            .with_source(f.meta.clone());
                    f.passthrough = decoder.is_passthrough();
                    f.decoder = decoder;
                    f.spec = si;
                }
                continue;
            }
            // Read it to its current end, then ship what the decoder holds.
            while !self.ctl.stop && self.ensure_open(fid) {
                match self.read(fid) {
                    Ok(Outcome::More | Outcome::Truncated) => continue,
                    Ok(Outcome::Eof) => break,
                    Ok(Outcome::QueueClosed) => {
                        self.ctl.closed = true;
                        self.ctl.stop = true;
                    }
                    Err(e) => {
                        if let Some(f) = self.files.get(&fid) {
                            let key = format!("read {}", f.path.display());
                            self.warn_once(key, &e);
                        }
                        break;
                    }
                }
            }
            if self.ctl.stop {
                return;
            }
            let mut out = Vec::new();
            if let Some(f) = self.files.get_mut(&fid) {
                f.decoder.flush(&mut out);
            }
            if !self.ship(fid, out) {
                return;
            }
            // Let go without retiring: its checkpoint is kept, so the file
            // resumes where it was if a later reload includes it again.
            if let Some(f) = self.untrack(fid) {
                tracing::info!(path = %f.path.display(), "log source removed: file read to its end and let go");
            }
        }
        self.io
            .stats
            .open_files
            .store(self.open_count as u64, Ordering::Relaxed);
    }

    fn excluded(&self, si: usize, path: &Path) -> bool {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        self.specs[si]
            .exclude
            .iter()
            .any(|p| p.matches_path(path) || p.matches(name))
    }

    fn watch_base(&mut self, pattern: &str) {
        let Some(w) = self._watcher.as_mut() else {
            return;
        };
        let (base, recursive) = glob_base(pattern);
        if self.watched.contains(&base) || !base.is_dir() {
            return;
        }
        use notify::Watcher;
        let mode = if recursive {
            notify::RecursiveMode::Recursive
        } else {
            notify::RecursiveMode::NonRecursive
        };
        match w.watch(&base, mode) {
            Ok(()) => {
                self.watched.insert(base);
            }
            Err(e) => {
                let key = format!("watch {}", base.display());
                self.warn_once(key, &e);
            }
        }
    }

    fn warn_once(&mut self, key: String, e: &dyn std::fmt::Display) {
        if self.warned.insert(key.clone()) {
            tracing::warn!(what = %key, error = %e, "cannot read; going on with the rest");
        }
    }

    /// A path the globs matched: opens it if it is a file we do not hold
    /// yet. Returns the file's id and size (as `stat` saw them) when it is (now) tailed.
    fn consider(&mut self, si: usize, path: &Path) -> Option<(FileId, u64)> {
        let md = std::fs::metadata(path).ok()?; // vanished between glob and stat
        if !md.is_file() {
            return None;
        }
        let id = (md.dev(), md.ino());
        if self.by_path.get(path.as_os_str()) == Some(&id) || self.files.contains_key(&id) {
            // Known (a rename within the globs keeps its file).
            return Some((id, md.len()));
        }
        if !self.make_room(id) {
            let key = "max_open_files".to_string();
            let e = format!(
                "{} files open and none idle; {} waits for its turn",
                self.open_count,
                path.display()
            );
            self.warn_once(key, &e);
            return None;
        }
        match self.open(si, path, id, md.len(), Start::Saved, None) {
            Ok(t) => {
                self.adopt(id, t);
                Some((id, md.len()))
            }
            Err(e) => {
                let key = format!("open {}", path.display());
                self.warn_once(key, &e);
                None
            }
        }
    }

    /// Opens a file to tail: from its checkpoint if one matches it, else
    /// as `from` says.
    fn open(
        &mut self,
        si: usize,
        path: &Path,
        id: FileId,
        size: u64,
        from: Start,
        name: Option<&Path>,
    ) -> io::Result<Tailed> {
        let spec = &self.specs[si].spec;
        let mut file = File::open(path)?;
        let fp_len = (spec.fingerprint_bytes as u64).min(size) as usize;
        let fp = fingerprint(&file, fp_len)?;
        let key = format!("{}:{}", id.0, id.1);
        let (mut source, saved) = self.io.ledger.source(&key);
        let known = saved.is_some();
        let resume = saved
            .as_ref()
            .filter(|cp| matches_checkpoint(&file, cp, size))
            .map(|cp| cp.offset);
        if let (Some(cp), None, Start::Saved, false) = (saved, resume, from, self.restored) {
            // Found at start-up with other content than its checkpoint knew:
            // truncated (and maybe refilled) while the agent was down. If it
            // was copied first (copytruncate), the copy holds what was
            // written after the checkpoint (`restore_rotated`).
            self.truncated_while_down.push((path.to_path_buf(), si, cp));
        }
        let start = match (resume, from) {
            (Some(off), _) => off,
            (None, Start::At(off)) => off.min(size),
            // A checkpoint knew this inode but not this content: a new file
            // (inode reused, or truncated while we were down).
            (None, Start::Beginning) => 0,
            (None, _) if known => 0,
            (None, _) if !self.specs[si].scanned && spec.start_at == StartAt::End => size,
            (None, _) => 0,
        };
        let path_str = name.unwrap_or(path).to_string_lossy().into_owned();
        if resume.is_none() {
            if known {
                // Batches of the content the checkpoint knew may still be
                // in flight (a source removed by a reload and added back):
                // they must not move the new content's checkpoint.
                let meta = serde_json::json!({"path": path_str, "fp": fp, "fp_len": fp_len});
                source = self.io.ledger.start_over(source, start, meta);
            } else {
                self.io.ledger.set_committed(source, start);
            }
        }
        file.seek(SeekFrom::Start(start))?;
        let mut tail = vec![0u8; (start as usize).min(TAIL_BYTES)];
        {
            use std::os::unix::fs::FileExt;
            let at = start - tail.len() as u64;
            if file.read_exact_at(&mut tail, at).is_err() {
                tail.clear();
            }
        }
        // Found whole now (its checkpoint matched, or it is new to us).
        let checked = file.metadata().ok().and_then(|m| m.modified().ok());
        tracing::info!(path = %path.display(), offset = start, resumed = resume.is_some(), "tailing");
        let meta = Arc::new(SourceMeta::for_path(&path_str));
        let decoder = LineDecoder::new(spec.format, spec.multiline.clone(), spec.max_line_bytes)
            .starting_at(start)
            .with_source(meta.clone());
        let t = Tailed {
            spec: si,
            path: path.to_path_buf(),
            file: Some(file),
            last_read: Instant::now(),
            source,
            meta,
            consumed: start,
            partial: Vec::new(),
            skipping: false,
            rotated_at: None,
            fp_len,
            fp,
            passthrough: decoder.is_passthrough(),
            decoder,
            sent: start,
            tail,
            checked,
        };
        t.save_meta(&self.io.ledger);
        Ok(t)
    }

    /// Reads every dirty file up to its budget. Returns whether some file
    /// still has data waiting (so the caller should not sleep).
    fn read_pass(&mut self) -> bool {
        let ids: Vec<FileId> = self.dirty.drain().collect();
        let mut more = false;
        let mut close = Vec::new();
        for id in ids {
            if self.ctl.stop {
                break;
            }
            if !self.ensure_open(id) {
                continue;
            }
            let Some(f) = self.files.get_mut(&id) else {
                continue;
            };
            self.lru.remove(&(f.last_read, id));
            f.last_read = Instant::now();
            self.lru.insert((f.last_read, id));
            let outcome = self.read(id);
            let Some(f) = self.files.get_mut(&id) else {
                continue;
            };
            if f.decoder.pending_deadline().is_some() {
                self.pending.insert(id);
            } else {
                self.pending.remove(&id);
            }
            match outcome {
                Ok(Outcome::More | Outcome::Truncated) => {
                    more = true;
                    self.dirty.insert(id);
                }
                Ok(Outcome::Eof) => {
                    if f.rotated_at.is_some_and(|t| t.elapsed() >= ROTATE_GRACE) {
                        close.push(id);
                    } else if f.rotated_at.is_some() {
                        // Look again when the grace is over.
                        self.dirty.insert(id);
                    }
                }
                Ok(Outcome::QueueClosed) => {
                    self.ctl.closed = true;
                    self.ctl.stop = true;
                }
                Err(e) => {
                    let key = format!("read {}", f.path.display());
                    self.warn_once(key, &e);
                    close.push(id);
                }
            }
        }
        for id in close {
            // A rotated file's last line will not get its newline now.
            if self.files.get(&id).is_some_and(|f| f.rotated_at.is_some()) && !self.finish(id) {
                break;
            }
            self.release(id);
        }
        self.io
            .stats
            .open_files
            .store(self.open_count as u64, Ordering::Relaxed);
        more
    }

    /// Starts tailing a file just opened.
    fn adopt(&mut self, id: FileId, t: Tailed) {
        self.lru.insert((t.last_read, id));
        self.files.insert(id, t);
        self.dirty.insert(id);
        self.open_count += 1;
    }

    /// Lets a file go: closes it and, if it left its path, forgets its
    /// checkpoint once what was read of it is acknowledged.
    fn release(&mut self, id: FileId) {
        if let Some(f) = self.untrack(id) {
            tracing::debug!(path = %f.path.display(), "released");
            if f.rotated_at.is_some() || f.file.is_none() {
                // The same source let go twice (found again at its key in
                // between): the furthest position counts.
                let sent = self.retiring.entry(f.source).or_insert(0);
                *sent = (*sent).max(f.sent);
                self.retire_acknowledged();
            }
        }
    }

    /// Retires the sources of files let go whose records are all
    /// acknowledged (unless a file tailed again uses them: the same file
    /// found again at a path the globs match).
    fn retire_acknowledged(&mut self) {
        self.next_retire = Instant::now() + RETIRE_CHECK;
        let ledger = &self.io.ledger;
        let files = &self.files;
        self.retiring.retain(|&source, &mut sent| {
            if ledger.committed(source) < sent {
                return true;
            }
            if !files.values().any(|f| f.source == source) {
                ledger.retire(source);
            }
            false
        });
    }

    /// Stops tracking a file (closing it); its checkpoint is left as it is.
    fn untrack(&mut self, id: FileId) -> Option<Tailed> {
        let f = self.files.remove(&id)?;
        if f.file.is_some() {
            self.open_count -= 1;
            self.lru.remove(&(f.last_read, id));
        }
        if self.by_path.get(f.path.as_os_str()) == Some(&id) {
            self.by_path.remove(f.path.as_os_str());
        }
        self.dirty.remove(&id);
        self.pending.remove(&id);
        Some(f)
    }

    /// Closes least recently read idle files until one more may be opened
    /// (never `keep`). Returns whether there is room.
    fn make_room(&mut self, keep: FileId) -> bool {
        while self.open_count >= self.max_open {
            // Least recently read first; files with work left are skipped
            // (few: the busy ones), so this does not walk every file.
            let victim = self.lru.iter().map(|(_, id)| *id).find(|id| {
                *id != keep
                    && !self.dirty.contains(id)
                    && !self.pending.contains(id)
                    && self.files.get(id).is_some_and(|f| {
                        f.file.is_some()
                            && f.partial.is_empty()
                            && !f.skipping
                            && f.rotated_at.is_none()
                    })
            });
            let Some(victim) = victim else {
                return false;
            };
            if let Some(f) = self.files.get_mut(&victim) {
                tracing::debug!(path = %f.path.display(), "parked: idle, closed for max_open_files");
                f.file = None;
                self.open_count -= 1;
                self.lru.remove(&(f.last_read, victim));
            }
        }
        true
    }

    /// Reopens a parked file (if it still is the same file at its path).
    fn ensure_open(&mut self, id: FileId) -> bool {
        match self.files.get(&id) {
            None => return false,
            Some(f) if f.file.is_some() => return true,
            Some(_) => {}
        }
        if !self.make_room(id) {
            return false;
        }
        let Some(f) = self.files.get_mut(&id) else {
            return false;
        };
        let reopened = File::open(&f.path).and_then(|mut file| {
            let md = file.metadata()?;
            // Other first bytes at the same inode: truncated (or the inode
            // reused) while parked; the next read finds out, and looks for
            // a copy.
            if (md.dev(), md.ino()) != id {
                return Err(io::Error::other("replaced while parked"));
            }
            file.seek(SeekFrom::Start(f.read_end()))?;
            Ok(file)
        });
        match reopened {
            Ok(file) => {
                f.file = Some(file);
                self.open_count += 1;
                self.lru.insert((f.last_read, id));
                true
            }
            Err(e) => {
                tracing::debug!(path = %f.path.display(), error = %e, "cannot reopen a parked file; letting it go");
                self.release(id);
                false
            }
        }
    }
}

impl Tailer {
    /// Reads file `id` up to its budget ([`read_file`]); a truncation it
    /// finds is handled by [`Tailer::on_truncated`].
    fn read(&mut self, id: FileId) -> io::Result<Outcome> {
        let Some(f) = self.files.get_mut(&id) else {
            return Ok(Outcome::Eof);
        };
        match read_file(f, &self.specs[f.spec].spec, &self.io, &mut self.ctl)? {
            Outcome::Truncated => self.on_truncated(id),
            outcome => Ok(outcome),
        }
    }

    /// File `id` was found truncated (`copytruncate`). What it held past
    /// the tailer's offset, written before the copy was made, is in the copy
    /// only: under backpressure (an output down) that is the whole backlog.
    /// So if a copy of what was read is found beside it ([`find_copy`]), the
    /// file's source moves to the copy (its checkpoint, its batches in
    /// flight: [`Ledger::hand_over`]), which is read on from the offset and
    /// let go like a rotated file, and the file is read again from its start
    /// under a new source. Otherwise the file alone is read again from its
    /// start.
    fn on_truncated(&mut self, id: FileId) -> io::Result<Outcome> {
        let Some(seen) = self.files.get(&id).map(|f| Seen::of(id, f)) else {
            return Ok(Outcome::Eof);
        };
        let copy = self.find_copy(&seen);
        let Some(f) = self.files.get_mut(&id) else {
            return Ok(Outcome::Eof);
        };
        self.io.stats.truncations.fetch_add(1, Ordering::Relaxed);
        let offset = seen.offset;
        let si = f.spec;
        let Some((copy_path, cid, mut copy)) = copy else {
            tracing::info!(path = %f.path.display(), offset, "file truncated; reading it again from the start");
            let outcome = read_again_from_start(f, &self.io, &mut self.ctl);
            self.read_unseen_generations(si, &seen);
            return outcome;
        };
        copy.seek(SeekFrom::Start(offset))?;
        let Some(file) = f.file.as_mut() else {
            return Ok(Outcome::Eof);
        };
        file.seek(SeekFrom::Start(0))?;
        let fp = fingerprint(file, 0)?;
        let file = f.file.take();
        let spec = &self.specs[f.spec].spec;
        let decoder = LineDecoder::new(spec.format, spec.multiline.clone(), spec.max_line_bytes)
            .starting_at(0)
            .with_source(f.meta.clone());
        let meta = serde_json::json!({"path": f.meta.path, "fp": fp, "fp_len": 0});
        let key = format!("{}:{}", cid.0, cid.1);
        let source = self.io.ledger.hand_over(f.source, &key, 0, meta);
        let fresh = Tailed {
            spec: f.spec,
            path: f.path.clone(),
            file,
            last_read: f.last_read,
            source,
            meta: f.meta.clone(),
            consumed: 0,
            partial: Vec::new(),
            skipping: false,
            rotated_at: f.rotated_at,
            fp_len: 0,
            fp,
            passthrough: decoder.is_passthrough(),
            decoder,
            sent: 0,
            tail: Vec::new(),
            checked: None,
        };
        // The rest of the old content, its held partial line and what its
        // decoder holds go on in the copy, under the old source.
        let mut old = std::mem::replace(f, fresh);
        tracing::info!(path = %old.path.display(), copy = %copy_path.display(), offset, "file truncated; reading the rest of what it held from its copy, and the file again from the start");
        self.pending.remove(&id);
        // A copy the globs match stays tailed at its path (its checkpoint
        // goes with it, so a later scan does not read it again); any other
        // is read to its end and let go.
        let owned = self.specs.iter().enumerate().any(|(si, c)| {
            !c.removed
                && c.include.iter().any(|p| p.matches_path(&copy_path))
                && !self.excluded(si, &copy_path)
        });
        if owned {
            self.by_path.insert(copy_path.clone().into_os_string(), cid);
            old.rotated_at = None;
        } else {
            old.rotated_at = Some(Instant::now());
        }
        old.path = copy_path;
        old.file = Some(copy);
        old.last_read = Instant::now();
        self.make_room(cid);
        self.adopt(cid, old);
        self.read_unseen_generations(si, &seen);
        Ok(Outcome::More)
    }

    /// After a file was found truncated: numbered rotations of it
    /// (`app.log.1`, `app.log-20261127`; not compressed, not tailed, not
    /// excluded) written after it was last found whole hold generations the
    /// tailer never saw (a second `copytruncate` while it was held back,
    /// whose copy holds what was written after the first): they are read
    /// from their start (from their checkpoint, if they have one) and let
    /// go. A rotation that starts like the generation the tailer was
    /// reading is a copy of it, read already or read on from the tailer's
    /// offset ([`Tailer::find_copy`]): never from its start.
    fn read_unseen_generations(&mut self, si: usize, seen: &Seen) {
        let Some(since) = seen.since else {
            return;
        };
        let path = &seen.path;
        let Some(entries) = path.parent().and_then(|d| std::fs::read_dir(d).ok()) else {
            return;
        };
        let mut unseen = Vec::new();
        for e in entries.flatten() {
            let rotation = e.path();
            if !numbered_rotation(&rotation, path) || self.excluded(si, &rotation) {
                continue;
            }
            let Ok(md) = e.metadata() else { continue };
            let rid = (md.dev(), md.ino());
            if !md.is_file()
                || rid == seen.id
                || self.files.contains_key(&rid)
                || !md.modified().is_ok_and(|m| m > since)
                || is_compressed(&rotation)
            {
                continue;
            }
            let Ok(file) = File::open(&rotation) else {
                continue;
            };
            // A copy of what was read: it starts alike and ends before the
            // offset, or holds the same bytes before it (another generation
            // may start alike: a common header).
            let copy_of_seen = seen.fp.1 > 0
                && if md.len() < seen.offset {
                    seen.starts(&file)
                } else {
                    seen.holds(&file)
                };
            if copy_of_seen {
                continue;
            }
            unseen.push((rotation, rid, md.len()));
        }
        for (rotation, rid, len) in unseen {
            tracing::info!(path = %rotation.display(), was = %path.display(), "a rotation written since the file was last looked at: reading it");
            self.open_rotation(si, &rotation, rid, len, Start::Beginning, path);
        }
    }

    /// The copy `copytruncate` made of file `id` before truncating it: a
    /// rotation of it (`app.log.1`, `app.log-20261127`, not compressed, not
    /// tailed) with the file's fingerprinted first bytes, at least as long
    /// as what was read, with the same last [`TAIL_BYTES`] before the
    /// tailer's offset. The longest such one (a later copy of the same
    /// content holds more of it), the newest if they are as long.
    fn find_copy(&self, seen: &Seen) -> Option<(PathBuf, FileId, File)> {
        if seen.offset == 0 || seen.tail.is_empty() {
            return None;
        }
        let mut best: Option<(u64, SystemTime, PathBuf, FileId, File)> = None;
        for e in std::fs::read_dir(seen.path.parent()?).ok()?.flatten() {
            let path = e.path();
            if !is_rotation_of(&path, &seen.path) {
                continue;
            }
            let Ok(md) = e.metadata() else { continue };
            let cid = (md.dev(), md.ino());
            if !md.is_file()
                || cid == seen.id
                || md.len() < seen.offset
                || self.files.contains_key(&cid)
                || is_compressed(&path)
            {
                continue;
            }
            let Ok(file) = File::open(&path) else {
                continue;
            };
            if !seen.holds(&file) {
                continue;
            }
            let ctime =
                UNIX_EPOCH + Duration::new(md.ctime().max(0) as u64, md.ctime_nsec().max(0) as u32);
            if best.as_ref().is_none_or(|b| (b.0, b.1) < (md.len(), ctime)) {
                best = Some((md.len(), ctime, path, cid, file));
            }
        }
        best.map(|(_, _, path, cid, file)| (path, cid, file))
    }
}

/// What the tailer knew of a file when it found it truncated.
struct Seen {
    path: PathBuf,
    id: FileId,
    /// Its mtime when it was last found whole.
    since: Option<SystemTime>,
    /// The fingerprint of the generation it was reading, and its length.
    fp: (u64, usize),
    /// How far it was read, and the last bytes before that.
    offset: u64,
    tail: Vec<u8>,
}

impl Seen {
    fn of(id: FileId, f: &Tailed) -> Self {
        Seen {
            path: f.path.clone(),
            id,
            since: f.checked,
            fp: (f.fp, f.fp_len),
            offset: f.read_end(),
            tail: f.tail.clone(),
        }
    }

    /// Whether `file` starts with the fingerprinted bytes.
    fn starts(&self, file: &File) -> bool {
        fingerprint(file, self.fp.1).ok() == Some(self.fp.0)
    }

    /// Whether `file` holds what was read: it starts alike and has the same
    /// last bytes before the offset.
    fn holds(&self, file: &File) -> bool {
        use std::os::unix::fs::FileExt;
        let mut tail = vec![0u8; self.tail.len()];
        let at = self.offset.saturating_sub(tail.len() as u64);
        self.starts(file) && file.read_exact_at(&mut tail, at).is_ok() && tail == self.tail
    }
}

/// Requests that arrive while the tailer is busy.
#[derive(Debug, Default)]
struct Control {
    /// Stop now.
    stop: bool,
    /// Read everything to the end, then stop.
    drain: bool,
    /// The queue is gone (or a send gave up on a stop request).
    closed: bool,
    /// Sources added while the tailer was blocked on a full queue.
    added: Vec<TailSpec>,
    /// Sources removed (by id) while it was blocked.
    removed: Vec<u64>,
}

enum Outcome {
    /// Budget used up; more data may be waiting.
    More,
    /// Read to the current end.
    Eof,
    /// The file was truncated (`copytruncate`): nothing was read or changed;
    /// [`Tailer::on_truncated`] takes it from here.
    Truncated,
    /// The pipeline is gone or we were told to stop.
    QueueClosed,
}

/// What a file read talks to.
struct Io {
    tx: Sender<Chunk>,
    stats: Arc<TailStats>,
    wake: Receiver<Wake>,
    ledger: Arc<Ledger>,
    crash: Option<Arc<CrashContext>>,
}

/// Reads one file up to its budget, sending a chunk per read.
fn read_file(f: &mut Tailed, spec: &TailSpec, io: &Io, ctl: &mut Control) -> io::Result<Outcome> {
    let Io { stats, ledger, .. } = io;
    let read_end = f.read_end();
    let Some(file) = &f.file else {
        return Ok(Outcome::Eof);
    };
    let md = file.metadata()?;
    let mut size = md.len();
    let mtime = md.modified().ok();
    if size == read_end
        && mtime == f.checked
        && mtime.is_some_and(|m| m + RACY_MTIME < SystemTime::now())
    {
        // Not written since it was last found whole (an mtime older than
        // the filesystem's timestamp tick: a truncation and a refill to the
        // same size within the same tick would not change it).
        return Ok(Outcome::Eof);
    }
    if f.truncated(size)? {
        return Ok(Outcome::Truncated);
    }
    f.checked = mtime;
    if size == read_end {
        return Ok(Outcome::Eof);
    }
    let mut budget = spec.read_budget.max(READ_CHUNK);
    loop {
        if budget == 0 {
            return Ok(Outcome::More);
        }
        let want = size.saturating_sub(f.read_end()).min(READ_CHUNK as u64) as usize;
        // Read straight into the buffer the lines will be slices of (no
        // zero-filling, no copy but the held partial line's bytes).
        let mut buf = Vec::with_capacity(f.partial.len() + want.max(1));
        buf.extend_from_slice(&f.partial);
        let Some(file) = f.file.as_mut() else {
            return Ok(Outcome::Eof);
        };
        let n = if want == 0 {
            0
        } else {
            file.by_ref().take(want as u64).read_to_end(&mut buf)?
        };
        if n == 0 {
            // At the end as of the last `fstat`: look once more (a writer
            // may be appending while we read).
            let now = file.metadata()?.len();
            if now > size {
                size = now;
                continue;
            }
            return Ok(Outcome::Eof);
        }
        budget = budget.saturating_sub(n);
        stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
        note_tail(&mut f.tail, &buf[buf.len() - n..]);
        let mut out = Vec::new();
        split(f, buf, spec, stats, &mut out);
        if f.fp_len < spec.fingerprint_bytes {
            grow_fingerprint(f, spec, ledger)?;
        }
        if !send_records(f, out, io, ctl) {
            return Ok(Outcome::QueueClosed);
        }
    }
}

/// Keeps the last [`TAIL_BYTES`] of what was read in `tail`, `read` being
/// the bytes just read after it.
fn note_tail(tail: &mut Vec<u8>, read: &[u8]) {
    if read.len() >= TAIL_BYTES {
        tail.clear();
        tail.extend_from_slice(&read[read.len() - TAIL_BYTES..]);
    } else {
        tail.extend_from_slice(read);
        let over = tail.len().saturating_sub(TAIL_BYTES);
        tail.drain(..over);
    }
}

/// Reads `f` again from its start after a truncation no copy was found
/// for: what its decoder held is shipped, and its source starts over at 0.
fn read_again_from_start(f: &mut Tailed, io: &Io, ctl: &mut Control) -> io::Result<Outcome> {
    let Io {
        tx, wake, ledger, ..
    } = io;
    let Some(file) = f.file.as_mut() else {
        return Ok(Outcome::Eof);
    };
    file.seek(SeekFrom::Start(0))?;
    let mut out = Vec::new();
    f.consumed = 0;
    f.partial.clear();
    f.tail.clear();
    f.skipping = false;
    f.decoder.rewind(0, &mut out);
    f.fp_len = 0;
    f.fp = fingerprint(file, 0)?;
    // Saved at once, with offset 0: a restart must not take the file
    // for truncated again (and look for a copy) if it stays empty until
    // then, nor resume its new content at an offset of the old one (the
    // old content's batches, in flight or queued, carry the old id).
    f.source = ledger.start_over(f.source, 0, f.meta_json());
    // What was pending was read before the truncation: ship it, and
    // move the position back to the start.
    let position = f.position();
    let chunk = Chunk {
        records: out.into_iter().map(Record::Log).collect(),
        position: Some(Position {
            source: f.source,
            offset: position,
        }),
    };
    f.sent = position;
    if !send(tx, chunk, wake, ctl) {
        return Ok(Outcome::QueueClosed);
    }
    Ok(Outcome::More)
}

/// Sends `out` (records of `f`) with the file's position, unless there is
/// nothing new: no record and the position did not move. Counts the lines
/// and keeps them in the crash context. Returns false when the queue is gone
/// (or a stop came while it was full).
fn send_records(f: &mut Tailed, out: Vec<LogRecord>, io: &Io, ctl: &mut Control) -> bool {
    let position = f.position();
    if out.is_empty() && position == f.sent {
        return true;
    }
    f.sent = position;
    io.stats
        .lines
        .fetch_add(out.len() as u64, Ordering::Relaxed);
    if let Some(crash) = &io.crash {
        crash.push_lines(out.iter().map(|l| &l.body));
    }
    let chunk = Chunk {
        records: out.into_iter().map(Record::Log).collect(),
        position: Some(Position {
            source: f.source,
            offset: position,
        }),
    };
    send(&io.tx, chunk, &io.wake, ctl)
}

/// A file shorter than `fingerprint_bytes` when first seen: as it grows, its
/// saved fingerprint covers more of it (only until it reaches the full size).
fn grow_fingerprint(f: &mut Tailed, spec: &TailSpec, ledger: &Ledger) -> io::Result<()> {
    let seen = f.read_end() as usize;
    let len = seen.min(spec.fingerprint_bytes);
    if len > f.fp_len {
        let Some(file) = f.file.as_mut() else {
            return Ok(());
        };
        f.fp = fingerprint(file, len)?;
        f.fp_len = len;
        f.save_meta(ledger);
    }
    Ok(())
}

/// Sends a chunk, blocking while the queue is full, but still listening for
/// a stop request.
fn send(tx: &Sender<Chunk>, mut chunk: Chunk, wake: &Receiver<Wake>, ctl: &mut Control) -> bool {
    loop {
        match tx.send_timeout(chunk, Duration::from_millis(100)) {
            Ok(()) => return true,
            Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => return false,
            Err(crossbeam_channel::SendTimeoutError::Timeout(c)) => {
                chunk = c;
                // Backpressure: look for a stop request without losing other wakes.
                // (Filesystem events dropped here are covered by the next scan.)
                for w in wake.try_iter() {
                    match w {
                        Wake::Stop => ctl.stop = true,
                        Wake::Drain => ctl.drain = true,
                        // The exit event goes without the very last lines.
                        Wake::AddSource(spec) => ctl.added.push(spec),
                        Wake::RemoveSource(id) => ctl.removed.push(id),
                        Wake::Fs(_) | Wake::CatchUp(_) => {}
                    }
                }
                if ctl.stop {
                    // Not committed: read again after a restart.
                    return false;
                }
            }
        }
    }
}

/// Splits `buf` (the held partial line followed by newly read bytes, which
/// start at `f.read_end()` minus the partial's length) into lines and hands
/// them on; keeps a partial last line; cuts lines longer than
/// `max_line_bytes`.
fn split(
    f: &mut Tailed,
    buf: Vec<u8>,
    spec: &TailSpec,
    stats: &TailStats,
    out: &mut Vec<LogRecord>,
) {
    let max = spec.max_line_bytes.max(1);
    let observed = now_unix_nano();
    let Some(last) = memchr::memrchr(b'\n', &buf) else {
        // No line ends here.
        if f.skipping {
            f.consumed += buf.len() as u64;
            f.partial.clear();
            f.decoder.skip_to(f.consumed);
        } else if buf.len() > max {
            // A line longer than allowed and still growing: ship its head,
            // skip the rest.
            f.consumed += buf.len() as u64;
            let end = f.consumed;
            let head = Bytes::from(buf).slice(..max);
            cut(f, head, end, observed, out, stats);
            f.partial.clear();
            f.skipping = true;
        } else {
            f.partial = buf;
        }
        return;
    };
    let data = Bytes::from(buf);
    let base = f.consumed;
    let mut from = 0;
    if f.skipping {
        // `last` exists, so the skipped line ends in this buffer.
        let nl = memchr::memchr(b'\n', &data).unwrap_or(last);
        from = nl + 1;
        f.decoder.skip_to(base + from as u64);
        f.skipping = false;
    }
    let first = from;
    out.reserve((last + 1).saturating_sub(first) / 128 + 1);
    for nl in memchr::memchr_iter(b'\n', &data[first..last + 1]) {
        let nl = first + nl;
        let mut end = nl;
        if end > from && data[end - 1] == b'\r' {
            end -= 1;
        }
        let line_end = base + nl as u64 + 1;
        if end - from > max {
            cut(
                f,
                data.slice(from..from + max),
                line_end,
                observed,
                out,
                stats,
            );
        } else {
            emit(f, data.slice(from..end), false, line_end, observed, out);
        }
        from = nl + 1;
    }
    f.consumed = base + last as u64 + 1;
    let rest = &data[last + 1..];
    if rest.len() > max {
        f.consumed += rest.len() as u64;
        let end = f.consumed;
        cut(
            f,
            data.slice(last + 1..last + 1 + max),
            end,
            observed,
            out,
            stats,
        );
        f.partial.clear();
        f.skipping = true;
    } else {
        f.partial = rest.to_vec();
    }
}

/// Hands on the head of a line cut at `max_line_bytes`.
fn cut(
    f: &mut Tailed,
    head: Bytes,
    end: u64,
    observed: u64,
    out: &mut Vec<LogRecord>,
    stats: &TailStats,
) {
    stats.truncated_lines.fetch_add(1, Ordering::Relaxed);
    emit(f, head, true, end, observed, out);
}

/// Hands on one line ending at file offset `end`: straight to a record, or
/// through the file's decoder.
fn emit(f: &mut Tailed, line: Bytes, cut: bool, end: u64, observed: u64, out: &mut Vec<LogRecord>) {
    if f.passthrough {
        let mut rec = LogRecord {
            body: line,
            observed_time_unix_nano: observed,
            source: Some(f.meta.clone()),
            ..LogRecord::default()
        };
        if cut {
            rec.attributes.push(Attr::new("log.record.truncated", true));
        }
        out.push(rec);
    } else if cut {
        f.decoder.push_cut(line, end, observed, out);
    } else {
        f.decoder.push(line, end, observed, out);
    }
}

/// What `Tailer::restore_rotated` found of one old path, for
/// `Tailer::restore_unseen_rotations`.
struct Rotated {
    /// The source spec the old path belongs to.
    si: usize,
    /// The newest mtime of its rotations a checkpoint found: later ones
    /// were made while the agent was down. `None`: none was found, and
    /// only copies are looked for.
    newest: Option<SystemTime>,
    /// Checkpoints of files found with other content than they knew
    /// (copied, then truncated), each with the time a copy must be created
    /// after (`None`: any time): a rotation holding that content is a copy.
    copied: Vec<(Checkpoint, Option<SystemTime>)>,
}

impl Rotated {
    fn new(si: usize) -> Self {
        Rotated {
            si,
            newest: None,
            copied: Vec::new(),
        }
    }
}

/// Whether a checkpoint knew some content of its file (a fingerprint of at
/// least one byte): only then can another file be told for its copy. An
/// empty file's checkpoint (after a truncation) would match any file.
fn has_content(cp: &Checkpoint) -> bool {
    cp.meta
        .get("fp_len")
        .and_then(|v| v.as_u64())
        .is_some_and(|n| n > 0)
}

/// Where `Tailer::open` starts a file that has no matching checkpoint of
/// its own.
#[derive(Debug, Clone, Copy)]
enum Start {
    /// At 0, or at its end for `start_at: end` before the first scan.
    Saved,
    /// At 0.
    Beginning,
    /// At this offset: a copy of a checkpointed file.
    At(u64),
}

/// Whether `path` is named as a rotation of `old` in the same directory:
/// the old name, a dot, dash or underscore, a suffix (`app.log.1`,
/// logrotate's `dateext` `app.log-20261127`).
fn is_rotation_of(path: &Path, old: &Path) -> bool {
    let (Some(name), Some(old_name)) = (path.file_name(), old.file_name()) else {
        return false;
    };
    let name = name.as_encoded_bytes();
    let old_name = old_name.as_encoded_bytes();
    path.parent() == old.parent()
        && name.len() > old_name.len() + 1
        && name.starts_with(old_name)
        && match name[old_name.len()] {
            b'.' => true,
            // `app.log-20261127` (dateext), not another log's rotation
            // (`app.log-error.1`).
            b'-' | b'_' => name[old_name.len() + 1].is_ascii_digit(),
            _ => false,
        }
}

/// Whether `path` is a rotation of `old` with a number or date right after
/// the separator (`app.log.1`, `app.log-20261127`), as logrotate names them.
fn numbered_rotation(path: &Path, old: &Path) -> bool {
    let (Some(name), Some(old_name)) = (path.file_name(), old.file_name()) else {
        return false;
    };
    is_rotation_of(path, old) && name.as_encoded_bytes()[old_name.len() + 1].is_ascii_digit()
}

/// Whether a file starts like gzip, zstd, bzip2 or xz data (a compressed
/// rotation, not a log to read).
fn is_compressed(path: &Path) -> bool {
    let mut head = [0u8; 4];
    let n = File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    let head = &head[..n];
    head.starts_with(&[0x1f, 0x8b])
        || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || head.starts_with(b"BZh")
        || head.starts_with(&[0xfd, b'7', b'z', b'X'])
}

/// Whether `file` (of `size` bytes) is the file `cp` was saved for: its
/// first bytes have the saved fingerprint and it still reaches the offset.
fn matches_checkpoint(file: &File, cp: &Checkpoint, size: u64) -> bool {
    let (Some(len), Some(want)) = (
        cp.meta.get("fp_len").and_then(|v| v.as_u64()),
        cp.meta.get("fp").and_then(|v| v.as_u64()),
    ) else {
        return false;
    };
    len <= size && cp.offset <= size && fingerprint(file, len as usize).ok() == Some(want)
}
/// FNV-1a over the first `len` bytes of the file (the file's offset is left
/// wherever it was: reads use `read_at`).
fn fingerprint(file: &File, len: usize) -> io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let n = file.read_at(&mut buf[got..], got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in &buf[..got] {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    Ok(h ^ got as u64)
}

/// The directory a glob starts in, and whether the glob reaches below it.
fn glob_base(pattern: &str) -> (PathBuf, bool) {
    let mut base = PathBuf::new();
    let comps: Vec<&str> = pattern.split('/').collect();
    let mut i = 0;
    while i < comps.len() {
        let c = comps[i];
        if c.contains(['*', '?', '[']) {
            break;
        }
        if i == 0 && c.is_empty() {
            base.push("/");
        } else {
            base.push(c);
        }
        i += 1;
    }
    if i == comps.len() {
        // No glob at all: watch the file's directory.
        base.pop();
        return (non_empty(base), false);
    }
    // Recursive when the glob continues below the first globbed component.
    (non_empty(base), i + 1 < comps.len())
}

/// Whether `dir` is on a local filesystem, where inotify sees every change
/// (on NFS, CIFS, FUSE, 9p or virtiofs, writes from elsewhere raise no
/// event): ext2/3/4, XFS, Btrfs, tmpfs, overlayfs, F2FS, ramfs, ZFS.
fn local_filesystem(dir: &Path) -> bool {
    const LOCAL: [u64; 8] = [
        0xEF53,      // ext2, ext3, ext4
        0x5846_5342, // XFS
        0x9123_683E, // Btrfs
        0x0102_1994, // tmpfs
        0x794C_7630, // overlayfs
        0xF2F5_2010, // F2FS
        0x8584_58F6, // ramfs
        0x2FC1_2FC1, // ZFS
    ];
    rustix::fs::statfs(dir).is_ok_and(|st| LOCAL.contains(&((st.f_type as u64) & 0xFFFF_FFFF)))
}

/// A directory's modification time (`None` if it cannot be read).
fn dir_mtime(d: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(d).and_then(|m| m.modified()).ok()
}

fn non_empty(p: PathBuf) -> PathBuf {
    if p.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn spec(dir: &Path, start_at: StartAt) -> TailSpec {
        TailSpec {
            id: 0,
            include: vec![format!("{}/*.log", dir.display())],
            exclude: vec!["*.gz".into()],
            start_at,
            max_line_bytes: 16,
            scan_interval: Duration::from_millis(100),
            max_open_files: 1024,
            read_budget: 1 << 20,
            fingerprint_bytes: 1024,
            format: LogFormat::Raw,
            multiline: None,
        }
    }

    /// A tailer of `dir`'s `*.log` from their start, with the sender that
    /// wakes it and the receiver of its chunks.
    fn tailer_from_start(
        dir: &Path,
        ledger: Arc<Ledger>,
    ) -> (Tailer, crossbeam_channel::Sender<Wake>, Receiver<Chunk>) {
        let (tx, rx) = sidekick_pipeline::queue::bounded(64);
        let (t, wake) = Tailer::new(
            vec![spec(dir, StartAt::Beginning)],
            tx,
            ledger,
            Arc::default(),
        )
        .unwrap();
        (t, wake, rx)
    }

    /// Acknowledges the file known by `key` up to `offset`.
    fn acknowledge(ledger: &Ledger, key: &str, offset: u64) {
        let (source, _) = ledger.source(key);
        ledger.ack(ledger.begin_batch(vec![Position { source, offset }]));
    }

    fn bodies(rx: &Receiver<Chunk>, want: usize) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while out.len() < want && Instant::now() < deadline {
            if let Ok(c) = rx.recv_timeout(Duration::from_millis(100)) {
                for r in c.records {
                    if let Record::Log(l) = r {
                        let trunc = !l.attributes.is_empty();
                        out.push((String::from_utf8_lossy(&l.body).into_owned(), trunc));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn rotation_names() {
        let old = Path::new("/l/app.log");
        let rot = |n: &str| is_rotation_of(&Path::new("/l").join(n), old);
        assert!(rot("app.log.1") && rot("app.log.c3") && rot("app.log.1.gz"));
        assert!(rot("app.log-20261127") && rot("app.log_2026-11-27"));
        // Another log's files, or not beside it.
        assert!(!rot("app.log-error.1") && !rot("app.log_access") && !rot("app.logx.1"));
        assert!(
            !rot("app.log") && !rot("app.log.") && !is_rotation_of(Path::new("/m/app.log.1"), old)
        );
        // Read from its start only under a numbered name; any rotation name
        // can hold a copy (checked by its fingerprint).
        let numbered = |n: &str| numbered_rotation(&Path::new("/l").join(n), old);
        assert!(numbered("app.log.1") && numbered("app.log-20261127"));
        assert!(!numbered("app.log.c3") && !numbered("app.log.bak") && !numbered("app.log.error"));
    }

    #[test]
    fn glob_base_finds_the_static_prefix() {
        assert_eq!(glob_base("/var/log/*.log"), ("/var/log".into(), false));
        assert_eq!(glob_base("/var/**/x.log"), ("/var".into(), true));
        assert_eq!(glob_base("/a/b.log"), ("/a".into(), false));
        assert_eq!(glob_base("*.log"), (".".into(), false));
    }

    #[test]
    fn reads_lines_holds_partial_lines_and_cuts_long_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, b"old\n").unwrap();
        std::fs::write(dir.path().join("b.log.gz"), b"ignored\n").unwrap();
        let ledger = Arc::new(Ledger::new(1, None).unwrap());
        let (tx, rx) = sidekick_pipeline::queue::bounded(64);
        let stats = Arc::new(TailStats::default());
        let (t, wake) = Tailer::new(
            vec![spec(dir.path(), StartAt::End)],
            tx,
            ledger,
            stats.clone(),
        )
        .unwrap();
        let h = std::thread::spawn(move || t.run());
        std::thread::sleep(Duration::from_millis(300));
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"one\r\ntw").unwrap();
        f.flush().unwrap();
        assert_eq!(bodies(&rx, 1), vec![("one".to_string(), false)]);
        f.write_all(b"o\nthis line is far too long for us\nend\n")
            .unwrap();
        let got = bodies(&rx, 3);
        assert_eq!(
            got,
            vec![
                ("two".to_string(), false),
                ("this line is far".to_string(), true),
                ("end".to_string(), false)
            ]
        );
        wake.send(Wake::Stop).unwrap();
        h.join().unwrap();
        assert_eq!(stats.truncated_lines.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn more_files_than_max_open_files_are_all_read_by_parking_idle_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut sp = spec(dir.path(), StartAt::Beginning);
        sp.max_open_files = 2;
        sp.max_line_bytes = 1024;
        for i in 0..5 {
            std::fs::write(dir.path().join(format!("{i}.log")), format!("a{i}\n")).unwrap();
        }
        let ledger = Arc::new(Ledger::new(1, None).unwrap());
        let (tx, rx) = sidekick_pipeline::queue::bounded(64);
        let stats = Arc::new(TailStats::default());
        let (mut t, _w) = Tailer::new(vec![sp], tx, ledger, stats.clone()).unwrap();
        let mut got = Vec::new();
        let mut drain = |t: &mut Tailer| {
            for _ in 0..10 {
                t.scan(true);
                while t.read_pass() {}
                assert!(t.open_count <= 2, "{} files open", t.open_count);
            }
            while let Ok(c) = rx.try_recv() {
                for r in c.records {
                    if let Record::Log(l) = r {
                        got.push(String::from_utf8_lossy(&l.body).into_owned());
                    }
                }
            }
        };
        drain(&mut t);
        for i in 0..5 {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(dir.path().join(format!("{i}.log")))
                .unwrap();
            writeln!(f, "b{i}").unwrap();
        }
        drain(&mut t);
        got.sort();
        let mut want: Vec<String> = (0..5)
            .flat_map(|i| [format!("a{i}"), format!("b{i}")])
            .collect();
        want.sort();
        assert_eq!(got, want);
        assert!(stats.open_files.load(Ordering::Relaxed) <= 2);
    }

    #[test]
    fn resumes_from_the_committed_offset_and_not_for_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let path = dir.path().join("a.log");
        std::fs::write(&path, b"1\n2\n3\n").unwrap();
        let store = sidekick_pipeline::Checkpoints::open(&data).unwrap();
        {
            let ledger = Arc::new(Ledger::new(1, Some(store.clone())).unwrap());
            let key = {
                let md = std::fs::metadata(&path).unwrap();
                format!("{}:{}", md.dev(), md.ino())
            };
            let (mut t, _w, rx) = tailer_from_start(dir.path(), ledger.clone());
            t.scan(true);
            t.read_pass();
            let c = rx.try_recv().unwrap();
            assert_eq!(c.records.len(), 3);
            // Acknowledge only up to "1\n2\n".
            acknowledge(&ledger, &key, 4);
            ledger.persist().unwrap();
        }
        let ledger = Arc::new(Ledger::new(1, Some(store)).unwrap());
        let (mut t, _w, rx) = tailer_from_start(dir.path(), ledger);
        t.scan(true);
        t.read_pass();
        let c = rx.try_recv().unwrap();
        let got: Vec<_> = c
            .records
            .iter()
            .map(|r| match r {
                Record::Log(l) => l.body.clone(),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(got, vec![Bytes::from_static(b"3")]);
    }

    /// A copytruncate the tailer has not seen when it stops, with a
    /// checkpoint saved after the copy was made (acknowledgements went on):
    /// at the stop, the copy takes the checkpoint over, so the restart reads
    /// on in the copy from what was acknowledged. Without the hand-over, the
    /// restart does not take a copy older than the last save for the
    /// truncated file's, and "4" and "5" were lost.
    #[test]
    fn a_truncation_unseen_at_a_stop_hands_the_checkpoint_to_the_copy() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let path = dir.path().join("a.log");
        let copy = dir.path().join("a.log.1");
        std::fs::write(&path, b"1\n2\n3\n").unwrap();
        let store = sidekick_pipeline::Checkpoints::open(&data).unwrap();
        let key_of = |p: &Path| {
            let md = std::fs::metadata(p).unwrap();
            format!("{}:{}", md.dev(), md.ino())
        };
        let key = key_of(&path);
        {
            let ledger = Arc::new(Ledger::new(1, Some(store.clone())).unwrap());
            let (mut t, _w, rx) = tailer_from_start(dir.path(), ledger.clone());
            t.scan(true);
            t.read_pass();
            assert_eq!(rx.try_recv().unwrap().records.len(), 3);
            // Written, copied and truncated while the tailer looks away.
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            f.write_all(b"4\n5\n").unwrap();
            std::fs::copy(&path, &copy).unwrap();
            f.set_len(0).unwrap();
            f.write_all(b"6\n").unwrap();
            // What was read is acknowledged and saved after the copy.
            std::thread::sleep(Duration::from_millis(20));
            acknowledge(&ledger, &key, 6);
            ledger.persist().unwrap();
            t.hand_over_unseen_truncations();
            ledger.persist().unwrap();
            let saved = store.load().unwrap();
            assert_eq!(saved[&key_of(&copy)].offset, 6, "{saved:?}");
            assert_eq!(saved[&key].offset, 0, "{saved:?}");
        }
        let ledger = Arc::new(Ledger::new(1, Some(store)).unwrap());
        let (mut t, _w, rx) = tailer_from_start(dir.path(), ledger);
        t.scan(true);
        while t.read_pass() {}
        let mut got = Vec::new();
        while let Ok(c) = rx.try_recv() {
            for r in c.records {
                if let Record::Log(l) = r {
                    got.push(String::from_utf8_lossy(&l.body).into_owned());
                }
            }
        }
        got.sort();
        assert_eq!(got, ["4", "5", "6"]);
    }

    /// Timer scans (as where inotify sends nothing) list the directory again
    /// only when it changed: growth is still seen through `fstat`, and new
    /// and rotated files through the directory's mtime. Where inotify
    /// covers the directory (the run loop then scans every
    /// `TIMER_EVERY_COVERED` intervals), a timer scan still sees growth
    /// inotify did not report: it is the safety net.
    #[test]
    fn timer_scans_see_growth_new_files_and_rotation_without_listing_a_quiet_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, b"1\n").unwrap();
        let (mut t, _w, rx) =
            tailer_from_start(dir.path(), Arc::new(Ledger::new(1, None).unwrap()));
        let covered = t._watcher.is_some();
        let watcher = t._watcher.take(); // as on a filesystem inotify cannot watch
        let read = |t: &mut Tailer| {
            t.scan(false);
            while t.read_pass() {}
            let mut got = Vec::new();
            while let Ok(c) = rx.try_recv() {
                for r in c.records {
                    if let Record::Log(l) = r {
                        got.push(String::from_utf8_lossy(&l.body).into_owned());
                    }
                }
            }
            got
        };
        assert_eq!(read(&mut t), ["1"]);
        // Let the directory's mtime settle, so that scans are light.
        let settle = || {
            let old = std::time::SystemTime::now() - 2 * DIR_SETTLE;
            std::fs::File::open(dir.path())
                .unwrap()
                .set_modified(old)
                .unwrap();
        };
        settle();
        t.scan(false); // sees the change, takes the new mtime
        assert_eq!(t.light_scans, 0);
        t.scan(false);
        assert_eq!(t.light_scans, 1, "a quiet directory is not listed again");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"2\n").unwrap();
        assert_eq!(read(&mut t), ["2"]);
        assert_eq!(t.light_scans, 2);
        // A new file and a rotation change the directory.
        std::fs::write(dir.path().join("b.log"), b"b1\n").unwrap();
        assert_eq!(read(&mut t), ["b1"]);
        assert_eq!(t.light_scans, 0, "a changed directory is listed again");
        f.write_all(b"3\n").unwrap();
        std::fs::rename(&path, dir.path().join("a.log.1")).unwrap();
        std::fs::write(&path, b"new1\n").unwrap();
        let mut got = read(&mut t);
        got.sort();
        assert_eq!(got, ["3", "new1"]);
        if !covered || !local_filesystem(dir.path()) {
            eprintln!("SKIPPED the inotify half: no inotify, or not a local filesystem");
            return;
        }
        // With inotify back (the tailer's loop would get the write as an
        // event), the listing finds every directory covered.
        t._watcher = watcher;
        t.watched.clear();
        std::fs::write(dir.path().join("c.log"), b"c1\n").unwrap();
        assert_eq!(read(&mut t), ["c1"]);
        assert!(t.inotify_covers);
        settle();
        t.scan(false);
        let light = t.light_scans;
        let mut b = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("b.log"))
            .unwrap();
        b.write_all(b"b2\n").unwrap();
        // A write whose event was lost: the next timer scan reads it,
        // without listing the quiet directory.
        assert_eq!(read(&mut t), ["b2"], "the timer scan is the safety net");
        assert_eq!(t.light_scans, light + 1);
        assert!(t.inotify_covers);
    }
}
