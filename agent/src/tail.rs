//! The log tailer: finds the files a source's globs match, reads them in
//! large chunks, splits lines without copying them, and pushes them into the
//! pipeline's queue with the position each chunk reaches.
//!
//! One thread tails every file. It wakes on inotify events (through
//! `notify`), on its scan timer (`scan_interval`, for volumes where inotify is
//! silent) and when told to stop — never on a short poll. A pass reads only
//! the files an event named or that still had data left after their per-pass
//! byte budget, so one busy file cannot stall the others.
//!
//! Invariants:
//! - a position sent with a chunk is the offset just past the last byte the
//!   chunk accounts for (lines emitted or bytes skipped); a partial last line
//!   is held in memory and never counted;
//! - a file is known by device and inode, and its checkpoint also carries a
//!   fingerprint of its first bytes, so a reused inode is read from its start;
//! - memory per file is bounded by `max_line_bytes` plus one read chunk.

use crate::target::CrashContext;
use anyhow::Context as _;
use bytes::{Bytes, BytesMut};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use sidekick_pipeline::{
    now_unix_nano, Attr, Chunk, Ledger, LogRecord, Position, Record, SourceId, SourceMeta,
};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How much one `read` asks for.
const READ_CHUNK: usize = 256 * 1024;
/// How long a rotated or deleted file stays open after reaching its end, for
/// writers that have not reopened their log yet.
const ROTATE_GRACE: Duration = Duration::from_secs(2);

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
    /// Stop reading and return.
    Stop,
    /// The target is gone: read every file to its current end, ship held
    /// partial last lines too (no newline will ever come), then return.
    Drain,
    /// Read every file to its current end and note held partial lines in
    /// the crash context, then answer (the target's exit event waits).
    CatchUp(Sender<()>),
    /// A new source (a file an attached target opened for writing).
    AddSource(TailSpec),
}

type FileId = (u64, u64);

struct Compiled {
    spec: TailSpec,
    exclude: Vec<glob::Pattern>,
    /// Whether this source's first scan is done: files found by it (and
    /// not known to a checkpoint) start at `start_at`; later ones at 0.
    scanned: bool,
}

fn compile(spec: TailSpec) -> anyhow::Result<Compiled> {
    let mut exclude = Vec::new();
    for p in &spec.exclude {
        exclude.push(glob::Pattern::new(p).with_context(|| format!("invalid exclude glob {p:?}"))?);
    }
    for p in &spec.include {
        glob::Pattern::new(p).with_context(|| format!("invalid include glob {p:?}"))?;
    }
    Ok(Compiled {
        spec,
        exclude,
        scanned: false,
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
    /// Offset of `buf[0]` in the file: everything before it is accounted for.
    consumed: u64,
    buf: BytesMut,
    /// Dropping the rest of an over-long line up to its newline.
    skipping: bool,
    /// When the path stopped pointing at this file (rotated or deleted).
    rotated_at: Option<Instant>,
    /// Bytes the saved fingerprint covers; grows with a short file up to
    /// `fingerprint_bytes`, so a file shorter than that is still read.
    fp_len: usize,
}

/// The tailer of every log source.
pub struct Tailer {
    specs: Vec<Compiled>,
    files: HashMap<FileId, Tailed>,
    by_path: HashMap<PathBuf, FileId>,
    dirty: HashSet<FileId>,
    tx: Sender<Chunk>,
    ledger: Arc<Ledger>,
    stats: Arc<TailStats>,
    wake: Receiver<Wake>,
    _watcher: Option<notify::RecommendedWatcher>,
    watched: HashSet<PathBuf>,
    ctl: Control,
    /// Files with a descriptor open, and the most allowed.
    open_count: usize,
    max_open: usize,
    warned: HashSet<String>,
    crash: Option<Arc<CrashContext>>,
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
        let watcher = notify::recommended_watcher(move |ev| {
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
                tx,
                ledger,
                stats,
                wake,
                _watcher: watcher,
                watched: HashSet::new(),
                ctl: Control::default(),
                open_count: 0,
                max_open,
                warned: HashSet::new(),
                crash: None,
            },
            wake_tx,
        ))
    }

    /// Keeps the last lines read in `crash`, for the target's exit event.
    pub fn with_crash_context(mut self, crash: Arc<CrashContext>) -> Self {
        self.crash = Some(crash);
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
            if rescan || Instant::now() >= next_scan {
                self.scan();
                rescan = false;
                next_scan = Instant::now() + scan_every;
            }
            let more = self.read_pass();
            for spec in std::mem::take(&mut self.ctl.added) {
                rescan |= self.on_wake(Wake::AddSource(spec));
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
                self.next_deadline(next_scan)
            };
            match self.wake.recv_timeout(timeout) {
                Ok(w) => {
                    rescan |= self.on_wake(w);
                    while let Ok(w) = self.wake.try_recv() {
                        rescan |= self.on_wake(w);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        // Positions are committed through the ledger only; nothing to flush
        // here. A held partial line will be read again after a restart.
        self.stats.open_files.store(0, Ordering::Relaxed);
    }

    fn next_deadline(&self, next_scan: Instant) -> Duration {
        let mut deadline = next_scan;
        // A rotated file must be closed once its grace is over.
        for f in self.files.values() {
            if let Some(t) = f.rotated_at {
                deadline = deadline.min(t + ROTATE_GRACE);
            }
        }
        deadline.saturating_duration_since(Instant::now())
    }

    /// Reads every file to its current end, then ships held partial lines.
    fn drain(&mut self) {
        self.scan();
        while self.read_pass() && !self.ctl.stop {}
        let observed = now_unix_nano();
        let ids: Vec<FileId> = self.files.keys().copied().collect();
        for id in ids {
            let Some(f) = self.files.get_mut(&id) else {
                continue;
            };
            if f.buf.is_empty() || f.skipping {
                continue;
            }
            let rest = f.buf.split().freeze();
            f.consumed += rest.len() as u64;
            let rec = line_record(rest, observed, &f.meta);
            let chunk = Chunk {
                records: vec![Record::Log(rec)],
                position: Some(Position {
                    source: f.source,
                    offset: f.consumed,
                }),
            };
            if !send(&self.tx, chunk, &self.wake, &mut self.ctl) {
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
                self.scan();
                while self.read_pass() && !self.ctl.stop {}
                if let Some(crash) = &self.crash {
                    let partial: Vec<Bytes> = self
                        .files
                        .values()
                        .filter(|f| !f.buf.is_empty() && !f.skipping)
                        .map(|f| Bytes::copy_from_slice(&f.buf))
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
                use notify::EventKind;
                let mut rescan = !matches!(
                    ev.kind,
                    EventKind::Modify(notify::event::ModifyKind::Data(_))
                );
                for p in &ev.paths {
                    match self.by_path.get(p) {
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

    /// Expands every glob, opens new files, notices rotated and deleted ones.
    fn scan(&mut self) {
        let mut seen: HashSet<PathBuf> = HashSet::new();
        for si in 0..self.specs.len() {
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
                    if self.excluded(si, &path) || !seen.insert(path.clone()) {
                        continue;
                    }
                    self.consider(si, path);
                }
            }
        }
        // Paths that no longer point at the file we hold: rotated or deleted.
        let gone: Vec<(PathBuf, FileId)> = self
            .by_path
            .iter()
            .filter(|(p, id)| !seen.contains(*p) || file_id(p).ok() != Some(**id))
            .map(|(p, id)| (p.clone(), *id))
            .collect();
        for (p, id) in gone {
            self.by_path.remove(&p);
            if let Some(f) = self.files.get_mut(&id) {
                if f.rotated_at.is_none() {
                    tracing::debug!(path = %p.display(), "file rotated or deleted; reading it to its end");
                    f.rotated_at = Some(Instant::now());
                }
            }
        }
        for c in &mut self.specs {
            c.scanned = true;
        }
        // A scan reads every open file once (covers writes inotify did not
        // report) and every parked file that grew.
        for (id, f) in &self.files {
            let grew = f.file.is_some()
                || std::fs::metadata(&f.path)
                    .is_ok_and(|m| (m.dev(), m.ino()) == *id && m.len() > f.consumed);
            if grew {
                self.dirty.insert(*id);
            }
        }
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

    /// A path the globs matched: open it if it is a file we do not hold yet.
    fn consider(&mut self, si: usize, path: PathBuf) {
        let md = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(_) => return, // vanished between glob and stat
        };
        if !md.is_file() {
            return;
        }
        let id = (md.dev(), md.ino());
        if self.by_path.get(&path) == Some(&id) {
            return;
        }
        if self.files.contains_key(&id) {
            // The same file under a new name (renamed into the glob).
            self.by_path.insert(path, id);
            return;
        }
        if !self.make_room(id) {
            let key = "max_open_files".to_string();
            let e = format!(
                "{} files open and none idle; {} waits for its turn",
                self.open_count,
                path.display()
            );
            self.warn_once(key, &e);
            return;
        }
        match self.open(si, &path, id, md.len()) {
            Ok(t) => {
                self.by_path.insert(path, id);
                self.files.insert(id, t);
                self.dirty.insert(id);
                self.open_count += 1;
            }
            Err(e) => {
                let key = format!("open {}", path.display());
                self.warn_once(key, &e);
            }
        }
    }

    fn open(&mut self, si: usize, path: &Path, id: FileId, size: u64) -> io::Result<Tailed> {
        let spec = &self.specs[si].spec;
        let mut file = File::open(path)?;
        let fp_len = (spec.fingerprint_bytes as u64).min(size) as usize;
        let fp = fingerprint(&mut file, fp_len)?;
        let key = format!("{}:{}", id.0, id.1);
        let (source, saved) = self.ledger.source(&key);
        let resume = saved.and_then(|cp| {
            let len = cp.meta.get("fp_len")?.as_u64()? as usize;
            let want = cp.meta.get("fp")?.as_u64()?;
            let same = len <= size as usize
                && fingerprint(&mut file, len).ok() == Some(want)
                && cp.offset <= size;
            same.then_some(cp.offset)
        });
        let start = match resume {
            Some(off) => off,
            None if !self.specs[si].scanned && spec.start_at == StartAt::End => size,
            None => 0,
        };
        if resume.is_none() {
            self.ledger.set_committed(source, start);
        }
        let path_str = path.to_string_lossy().into_owned();
        self.ledger.set_meta(
            source,
            serde_json::json!({"path": path_str, "fp": fp, "fp_len": fp_len}),
        );
        file.seek(SeekFrom::Start(start))?;
        tracing::info!(path = %path.display(), offset = start, resumed = resume.is_some(), "tailing");
        Ok(Tailed {
            spec: si,
            path: path.to_path_buf(),
            file: Some(file),
            last_read: Instant::now(),
            source,
            meta: Arc::new(SourceMeta::for_path(&path_str)),
            consumed: start,
            buf: BytesMut::new(),
            skipping: false,
            rotated_at: None,
            fp_len,
        })
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
            f.last_read = Instant::now();
            let spec = &self.specs[f.spec].spec;
            let io = Io {
                tx: &self.tx,
                stats: &self.stats,
                wake: &self.wake,
                ledger: &self.ledger,
                crash: self.crash.as_deref(),
            };
            match read_file(f, spec, &io, &mut self.ctl) {
                Ok(Outcome::More) => {
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
            if let Some(f) = self.files.remove(&id) {
                tracing::debug!(path = %f.path.display(), "released");
                if f.file.is_some() {
                    self.open_count -= 1;
                }
                self.by_path.retain(|_, v| *v != id);
                if f.rotated_at.is_some() {
                    self.ledger.retire(f.source);
                }
            }
        }
        self.stats
            .open_files
            .store(self.open_count as u64, Ordering::Relaxed);
        more
    }

    /// Closes least recently read idle files until one more may be opened
    /// (never `keep`). Returns whether there is room.
    fn make_room(&mut self, keep: FileId) -> bool {
        while self.open_count >= self.max_open {
            let victim = self
                .files
                .iter()
                .filter(|(id, f)| {
                    **id != keep
                        && f.file.is_some()
                        && f.buf.is_empty()
                        && !f.skipping
                        && f.rotated_at.is_none()
                        && !self.dirty.contains(*id)
                })
                .min_by_key(|(_, f)| f.last_read)
                .map(|(id, _)| *id);
            let Some(victim) = victim else {
                return false;
            };
            if let Some(f) = self.files.get_mut(&victim) {
                tracing::debug!(path = %f.path.display(), "parked: idle, closed for max_open_files");
                f.file = None;
                self.open_count -= 1;
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
            if (md.dev(), md.ino()) != id {
                return Err(io::Error::other("replaced while parked"));
            }
            file.seek(SeekFrom::Start(f.consumed))?;
            Ok(file)
        });
        match reopened {
            Ok(file) => {
                f.file = Some(file);
                self.open_count += 1;
                true
            }
            Err(e) => {
                tracing::debug!(path = %f.path.display(), error = %e, "cannot reopen a parked file");
                false
            }
        }
    }
}

/// Requests that arrive while the tailer is busy.
#[derive(Debug, Default)]
struct Control {
    /// Stop now.
    stop: bool,
    /// Read everything to the end, then stop.
    drain: bool,
    /// Sources added while the tailer was blocked on a full queue.
    added: Vec<TailSpec>,
}

enum Outcome {
    /// Budget used up; more data may be waiting.
    More,
    /// Read to the current end.
    Eof,
    /// The pipeline is gone or we were told to stop.
    QueueClosed,
}

/// What a file read talks to.
struct Io<'a> {
    tx: &'a Sender<Chunk>,
    stats: &'a TailStats,
    wake: &'a Receiver<Wake>,
    ledger: &'a Ledger,
    crash: Option<&'a CrashContext>,
}

/// Reads one file up to its budget, sending a chunk per read.
fn read_file(f: &mut Tailed, spec: &TailSpec, io: &Io, ctl: &mut Control) -> io::Result<Outcome> {
    let Io {
        tx,
        stats,
        wake,
        ledger,
        crash,
    } = *io;
    let Some(file) = f.file.as_mut() else {
        return Ok(Outcome::Eof);
    };
    // copytruncate: the file is now shorter than what we consumed.
    let size = file.metadata()?.len();
    if size < f.consumed + f.buf.len() as u64 {
        tracing::info!(path = %f.path.display(), size, offset = f.consumed, "file truncated; reading it again from the start");
        stats.truncations.fetch_add(1, Ordering::Relaxed);
        file.seek(SeekFrom::Start(0))?;
        f.consumed = 0;
        f.buf.clear();
        f.skipping = false;
    }
    let mut budget = spec.read_budget.max(READ_CHUNK);
    loop {
        if budget == 0 {
            return Ok(Outcome::More);
        }
        let start = f.buf.len();
        f.buf.resize(start + READ_CHUNK, 0);
        let Some(file) = f.file.as_mut() else {
            return Ok(Outcome::Eof);
        };
        let n = match file.read(&mut f.buf[start..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => {
                f.buf.truncate(start);
                return Err(e);
            }
        };
        f.buf.truncate(start + n);
        if n == 0 {
            return Ok(Outcome::Eof);
        }
        budget = budget.saturating_sub(n);
        stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
        if f.fp_len < spec.fingerprint_bytes {
            grow_fingerprint(f, spec, ledger)?;
        }
        let chunk = split(f, spec, stats);
        if chunk.records.is_empty() && chunk.position.is_none() {
            continue;
        }
        if let Some(crash) = crash {
            crash.push_lines(chunk.records.iter().filter_map(|r| match r {
                Record::Log(l) => Some(&l.body),
                Record::Metric(_) => None,
            }));
        }
        if !send(tx, chunk, wake, ctl) {
            return Ok(Outcome::QueueClosed);
        }
    }
}

/// A file shorter than `fingerprint_bytes` when first seen: as it grows, its
/// saved fingerprint covers more of it (only until it reaches the full size).
fn grow_fingerprint(f: &mut Tailed, spec: &TailSpec, ledger: &Ledger) -> io::Result<()> {
    let seen = f.consumed as usize + f.buf.len();
    let len = seen.min(spec.fingerprint_bytes);
    if len > f.fp_len {
        let Some(file) = f.file.as_mut() else {
            return Ok(());
        };
        let fp = fingerprint(file, len)?;
        f.fp_len = len;
        ledger.set_meta(
            f.source,
            serde_json::json!({"path": f.meta.path, "fp": fp, "fp_len": len}),
        );
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

/// Turns the complete lines in `f.buf` into records; keeps a partial last
/// line; cuts lines longer than `max_line_bytes`.
fn split(f: &mut Tailed, spec: &TailSpec, stats: &TailStats) -> Chunk {
    let max = spec.max_line_bytes.max(1);
    let mut records = Vec::new();
    let mut moved = false;
    if f.skipping {
        match memchr::memchr(b'\n', &f.buf) {
            Some(nl) => {
                let _ = f.buf.split_to(nl + 1);
                f.consumed += nl as u64 + 1;
                f.skipping = false;
            }
            None => {
                f.consumed += f.buf.len() as u64;
                f.buf.clear();
            }
        }
        moved = true;
    }
    let observed = now_unix_nano();
    if let Some(last) = memchr::memrchr(b'\n', &f.buf) {
        let complete: Bytes = f.buf.split_to(last + 1).freeze();
        f.consumed += complete.len() as u64;
        records.reserve(complete.len() / 128 + 1);
        let mut from = 0;
        for nl in memchr::memchr_iter(b'\n', &complete) {
            let mut end = nl;
            if end > from && complete[end - 1] == b'\r' {
                end -= 1;
            }
            let mut rec = line_record(complete.slice(from..end), observed, &f.meta);
            if end - from > max {
                rec.body.truncate(max);
                rec.attributes.push(Attr::new("log.record.truncated", true));
                stats.truncated_lines.fetch_add(1, Ordering::Relaxed);
            }
            records.push(Record::Log(rec));
            from = nl + 1;
        }
        moved = true;
    }
    if f.buf.len() > max {
        // A line longer than allowed and still growing: ship its head, skip the rest.
        let head = f.buf.split_to(max).freeze();
        f.consumed += head.len() as u64 + f.buf.len() as u64;
        f.buf.clear();
        f.skipping = true;
        let mut rec = line_record(head, observed, &f.meta);
        rec.attributes.push(Attr::new("log.record.truncated", true));
        stats.truncated_lines.fetch_add(1, Ordering::Relaxed);
        records.push(Record::Log(rec));
        moved = true;
    }
    stats
        .lines
        .fetch_add(records.len() as u64, Ordering::Relaxed);
    Chunk {
        records,
        position: moved.then_some(Position {
            source: f.source,
            offset: f.consumed,
        }),
    }
}

fn line_record(body: Bytes, observed: u64, meta: &Arc<SourceMeta>) -> LogRecord {
    LogRecord {
        body,
        observed_time_unix_nano: observed,
        source: Some(meta.clone()),
        ..LogRecord::default()
    }
}

fn file_id(path: &Path) -> io::Result<FileId> {
    let md = std::fs::metadata(path)?;
    Ok((md.dev(), md.ino()))
}

/// FNV-1a over the first `len` bytes of the file (the file's offset is left
/// wherever it was: reads use `read_at`).
fn fingerprint(file: &mut File, len: usize) -> io::Result<u64> {
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
            include: vec![format!("{}/*.log", dir.display())],
            exclude: vec!["*.gz".into()],
            start_at,
            max_line_bytes: 16,
            scan_interval: Duration::from_millis(100),
            max_open_files: 1024,
            read_budget: 1 << 20,
            fingerprint_bytes: 1024,
        }
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
                t.scan();
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
            let (tx, rx) = sidekick_pipeline::queue::bounded(64);
            let (mut t, _w) = Tailer::new(
                vec![spec(dir.path(), StartAt::Beginning)],
                tx,
                ledger.clone(),
                Arc::default(),
            )
            .unwrap();
            t.scan();
            t.read_pass();
            let c = rx.try_recv().unwrap();
            assert_eq!(c.records.len(), 3);
            // Acknowledge only up to "1\n2\n".
            let (id, _) = ledger.source(&key);
            let b = ledger.begin_batch(vec![Position {
                source: id,
                offset: 4,
            }]);
            ledger.ack(b);
            ledger.persist().unwrap();
        }
        let ledger = Arc::new(Ledger::new(1, Some(store)).unwrap());
        let (tx, rx) = sidekick_pipeline::queue::bounded(64);
        let (mut t, _w) = Tailer::new(
            vec![spec(dir.path(), StartAt::Beginning)],
            tx,
            ledger,
            Arc::default(),
        )
        .unwrap();
        t.scan();
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
}
