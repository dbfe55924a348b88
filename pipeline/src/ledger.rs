//! The acknowledgement ledger.
//!
//! Every batch is registered here, in the order the batcher made it, with the
//! position each source reached in it. Each output acknowledges each batch
//! once (delivered, or dropped for good). A batch is complete when all outputs
//! have acknowledged it; the committed positions advance only over the
//! completed batches at the front of the ledger, so a checkpoint never moves
//! past a record that is still in flight somewhere.

use crate::checkpoints::{Checkpoint, CheckpointError, Checkpoints};
use crate::queue::Position;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A re-readable source registered with the ledger (a log file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceId(pub u32);

/// A batch's number, in the order batches were made.
pub type BatchId = u64;

/// How long an acknowledged move of a source waits, at most, for its full
/// save (a write, a rename and two `fsync`s), unless
/// [`Ledger::set_save_delay`] says otherwise. Each move is written at once to
/// `checkpoints.fast` meanwhile, so a killed process loses none; a power cut
/// may send again what was acknowledged in the last second.
pub const SAVE_DELAY: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Source {
    key: String,
    committed: Checkpoint,
    live: bool,
    /// How long an acknowledged move of this source may wait for its full
    /// save.
    delay: Duration,
    /// The offset the last full save took.
    saved: u64,
}

#[derive(Debug)]
struct Pending {
    id: BatchId,
    remaining: usize,
    positions: Vec<Position>,
}

#[derive(Debug, Default)]
struct State {
    next_id: BatchId,
    sources: Vec<Source>,
    by_key: HashMap<String, SourceId>,
    /// Checkpoints of sources not (yet) seen in this run, kept as they were.
    dormant: BTreeMap<String, Checkpoint>,
    pending: VecDeque<Pending>,
    /// A full save is due at once: a source came, went or changed its facts
    /// (or the last full save failed).
    dirty: bool,
    /// When the oldest move not yet in a full save must be saved in full.
    move_due: Option<Instant>,
    /// A source moved since the last save of any kind: its position is due
    /// in `checkpoints.fast` ([`Ledger::persist_due`]).
    fast: bool,
    /// Set by [`Ledger::stop_waiting`]: waits return at once.
    no_waiting: bool,
    /// [`SaveHold`]s alive: saves wait until they are gone.
    holds: u32,
}

impl State {
    /// A new live source under `key` (which names it from now on), starting
    /// from `committed`, as last saved.
    fn register(&mut self, key: String, committed: Checkpoint, delay: Duration) -> SourceId {
        let id = SourceId(self.sources.len() as u32);
        self.by_key.insert(key.clone(), id);
        self.sources.push(Source {
            key,
            saved: committed.offset,
            committed,
            live: true,
            delay,
        });
        id
    }

    /// Whether a full save is due at `now`: a source came, went or changed,
    /// or a move's delay is over.
    fn full_due(&self, now: Instant) -> bool {
        self.dirty || self.move_due.is_some_and(|due| due <= now)
    }
}

/// Keeps the committed positions from being saved while it lives
/// ([`Ledger::hold_saves`]).
#[derive(Debug)]
pub struct SaveHold(std::sync::Arc<Ledger>);

impl Drop for SaveHold {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.holds = st.holds.saturating_sub(1);
        if st.holds == 0 && (st.dirty || st.move_due.is_some() || st.fast) {
            self.0.changed.notify_all();
        }
    }
}

/// The acknowledgement ledger and the committed positions it guards.
#[derive(Debug)]
pub struct Ledger {
    outputs: usize,
    store: Option<Checkpoints>,
    state: Mutex<State>,
    idle: Condvar,
    changed: Condvar,
    /// Held across a whole save, so that saves from two threads (the
    /// persister, the tailer) cannot land in the opposite order of their
    /// snapshots (an older checkpoint over a newer one) or share the
    /// temporary file.
    saving: Mutex<()>,
    /// The checkpoint file's mtime when it was loaded.
    saved_at: Option<std::time::SystemTime>,
}

impl Ledger {
    /// A ledger for `outputs` outputs, loading committed positions from
    /// `store` (none: nothing is persisted, as for stdin-like sources).
    pub fn new(outputs: usize, store: Option<Checkpoints>) -> Result<Self, CheckpointError> {
        let saved_at = store.as_ref().and_then(Checkpoints::modified);
        let dormant = match &store {
            Some(s) => s.load()?,
            None => BTreeMap::new(),
        };
        Ok(Ledger {
            outputs: outputs.max(1),
            store,
            state: Mutex::new(State {
                dormant,
                ..State::default()
            }),
            idle: Condvar::new(),
            changed: Condvar::new(),
            saving: Mutex::new(()),
            saved_at,
        })
    }

    /// When the checkpoints loaded at start were saved (the file's mtime):
    /// the last save of the run before. `None` without a file.
    pub fn saved_at(&self) -> Option<std::time::SystemTime> {
        self.saved_at
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent state (every
        // mutation is a single step), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers (or finds) the source known by `key` and returns its id with
    /// its committed checkpoint, if one was saved before.
    pub fn source(&self, key: &str) -> (SourceId, Option<Checkpoint>) {
        let mut st = self.lock();
        if let Some(&id) = st.by_key.get(key) {
            let s = &mut st.sources[id.0 as usize];
            s.live = true;
            return (id, Some(s.committed.clone()));
        }
        let saved = st.dormant.remove(key);
        let committed = saved.clone().unwrap_or(Checkpoint {
            offset: 0,
            meta: serde_json::Value::Null,
        });
        let id = st.register(key.to_string(), committed, SAVE_DELAY);
        (id, saved)
    }

    /// The saved checkpoints no source of this run has claimed (yet), by
    /// key: a collector looks for what they name (a file rotated away while
    /// the agent was down) before it forgets them.
    pub fn dormant(&self) -> Vec<(String, Checkpoint)> {
        let st = self.lock();
        st.dormant
            .iter()
            .map(|(k, c)| (k.clone(), c.clone()))
            .collect()
    }

    /// Lets the acknowledged moves of source `id` wait up to `delay` (not
    /// [`SAVE_DELAY`]) for their full save; any other full save takes them
    /// along. Each move is written at once to `checkpoints.fast`
    /// ([`Ledger::persist_due`]), which survives a crash of the process,
    /// though not necessarily a power cut. For a source that moves often
    /// while the rest is idle (the spool: a move per metrics sample).
    pub fn set_save_delay(&self, id: SourceId, delay: Duration) {
        if let Some(s) = self.lock().sources.get_mut(id.0 as usize) {
            s.delay = delay;
        }
    }

    /// Holds every save until the returned guard is dropped: for a collector
    /// whose changes make sense on disk only together (a file found
    /// truncated at start-up, and the copy that holds its unread lines).
    /// [`Ledger::persist`] saves nothing meanwhile; the changes stay to save.
    pub fn hold_saves(self: &std::sync::Arc<Self>) -> SaveHold {
        self.lock().holds += 1;
        SaveHold(self.clone())
    }

    /// Drops a dormant checkpoint whose source is gone for good.
    pub fn forget(&self, key: &str) {
        let mut st = self.lock();
        if st.dormant.remove(key).is_some() {
            st.dirty = true;
            self.changed.notify_all();
        }
    }

    /// Sets the collector-specific facts saved with a source's checkpoint,
    /// and its starting offset if nothing was committed yet.
    pub fn set_meta(&self, id: SourceId, meta: serde_json::Value) {
        let mut st = self.lock();
        if let Some(s) = st.sources.get_mut(id.0 as usize) {
            s.committed.meta = meta;
            st.dirty = true;
            self.changed.notify_all();
        }
    }

    /// Source `id` starts over at `offset` with the facts `meta` (a file
    /// truncated in place, or found with other content than its checkpoint
    /// knew): returns the id its positions carry from now on. Both are saved
    /// in full at once, together, under the same key. Positions of the old
    /// id, in batches in flight or still queued, are offsets in content that
    /// is gone: they are committed to the old id, which is no longer saved,
    /// so a restart never resumes the new content there.
    pub fn start_over(&self, id: SourceId, offset: u64, meta: serde_json::Value) -> SourceId {
        let mut st = self.lock();
        let st = &mut *st;
        let Some(old) = st.sources.get_mut(id.0 as usize) else {
            return id;
        };
        old.live = false;
        let (key, delay) = (old.key.clone(), old.delay);
        let new = st.register(key, Checkpoint { offset, meta }, delay);
        st.dirty = true;
        self.changed.notify_all();
        new
    }

    /// Source `id`'s content moved, at the same offsets, to the file known by
    /// `to` (a copy made by `copytruncate` before it truncated the file
    /// `id` was reading): the checkpoint, its facts and the positions of the
    /// batches in flight go with it, so a restart reads the copy from what
    /// was acknowledged. A new source starts under `id`'s old key at
    /// `offset` with the facts `meta` (the truncated file's new content);
    /// returns its id. Both are saved in full at once, together. A
    /// checkpoint `to` named before is dropped.
    pub fn hand_over(
        &self,
        id: SourceId,
        to: &str,
        offset: u64,
        meta: serde_json::Value,
    ) -> SourceId {
        let mut st = self.lock();
        let st = &mut *st;
        st.dormant.remove(to);
        if let Some(prev) = st.by_key.get(to).copied().filter(|&p| p != id) {
            st.sources[prev.0 as usize].live = false;
        }
        let Some(old) = st.sources.get_mut(id.0 as usize) else {
            return id;
        };
        let from = std::mem::replace(&mut old.key, to.to_string());
        let delay = old.delay;
        if st.by_key.get(&from) == Some(&id) {
            st.by_key.remove(&from);
        }
        st.by_key.insert(to.to_string(), id);
        let new = st.register(from, Checkpoint { offset, meta }, delay);
        st.dirty = true;
        self.changed.notify_all();
        new
    }

    /// Moves a source's committed position to `offset` directly. For a source
    /// that starts at its end (`start_at: end`) or was skipped on purpose;
    /// never for records that are in flight.
    pub fn set_committed(&self, id: SourceId, offset: u64) {
        let mut st = self.lock();
        if let Some(s) = st.sources.get_mut(id.0 as usize) {
            s.committed.offset = offset;
            st.dirty = true;
            self.changed.notify_all();
        }
    }

    /// Drops a source that is gone for good (deleted and fully read): its
    /// checkpoint is no longer saved, and a source registered later under the
    /// same key (a reused inode) gets a new id.
    /// A file that later gets the same key (a reused inode) is a new source.
    pub fn retire(&self, id: SourceId) {
        let mut st = self.lock();
        let st = &mut *st;
        if let Some(s) = st.sources.get_mut(id.0 as usize) {
            s.live = false;
            if st.by_key.get(&s.key) == Some(&id) {
                st.by_key.remove(&s.key);
            }
            st.dirty = true;
            self.changed.notify_all();
        }
    }

    /// Registers a new batch reaching `positions`; returns its id.
    pub fn begin_batch(&self, positions: Vec<Position>) -> BatchId {
        let mut st = self.lock();
        let id = st.next_id;
        st.next_id += 1;
        st.pending.push_back(Pending {
            id,
            remaining: self.outputs,
            positions,
        });
        id
    }

    /// Sets how many acknowledgements batch `id` waits for: the number of
    /// outputs it is handed to (at least one), when that can differ from the
    /// count the ledger was made with (outputs swapped by a reload). Must
    /// come before the batch's first [`Ledger::ack`].
    pub fn expect(&self, id: BatchId, outputs: usize) {
        let mut st = self.lock();
        let Some(front) = st.pending.front().map(|p| p.id) else {
            return;
        };
        let idx = id.checked_sub(front);
        if let Some(p) = idx.and_then(|i| st.pending.get_mut(i as usize)) {
            p.remaining = outputs.max(1);
        }
    }

    /// One output is done with batch `id` (delivered or dropped for good).
    pub fn ack(&self, id: BatchId) {
        let mut st = self.lock();
        let Some(front) = st.pending.front().map(|p| p.id) else {
            return;
        };
        let Some(idx) = id.checked_sub(front) else {
            return;
        };
        let Some(p) = st.pending.get_mut(idx as usize) else {
            return;
        };
        p.remaining = p.remaining.saturating_sub(1);
        while st.pending.front().is_some_and(|p| p.remaining == 0) {
            if let Some(done) = st.pending.pop_front() {
                let mut due = st.move_due;
                let mut moved = false;
                for pos in done.positions {
                    // The latest position wins, not the largest: a source
                    // truncated and read again from 0 must commit small offsets.
                    if let Some(s) = st.sources.get_mut(pos.source.0 as usize) {
                        // A batch of metrics alone, or of records that did
                        // not move their source, leaves nothing to save; nor
                        // does a source no longer saved (retired, started
                        // over).
                        if s.committed.offset != pos.offset && s.live {
                            moved = true;
                            let by = Instant::now() + s.delay;
                            due = Some(due.map_or(by, |d| d.min(by)));
                        }
                        s.committed.offset = pos.offset;
                    }
                }
                st.move_due = due;
                if moved && !st.fast {
                    st.fast = true;
                    self.changed.notify_all();
                }
            }
        }
        if st.pending.is_empty() {
            self.idle.notify_all();
        }
    }

    /// Waits up to `timeout` for committed positions to change since the
    /// last save; returns whether they did. Lets a persister save each
    /// advance promptly (saves coalesce while one is being written) without
    /// a polling timer: [`Ledger::persist_due`] then saves what is due.
    /// Nothing counts while a [`SaveHold`] lives. Returns at once after
    /// [`Ledger::stop_waiting`].
    pub fn wait_changed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        loop {
            let now = Instant::now();
            let ready = st.holds == 0 && (st.full_due(now) || st.fast);
            if ready || st.no_waiting {
                return ready || (st.holds == 0 && st.move_due.is_some());
            }
            if now >= deadline {
                return false;
            }
            // While held, a due save waits for the hold's end (it wakes
            // this wait), not in a loop.
            let until = match st.move_due {
                Some(due) if st.holds == 0 => due.min(deadline),
                _ => deadline,
            };
            st = self
                .changed
                .wait_timeout(st, until - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Ends the present [`Ledger::wait_changed`] and every later one at
    /// once: the persister's way out at shutdown, with no wake-up timer
    /// while the agent runs.
    pub fn stop_waiting(&self) {
        self.lock().no_waiting = true;
        self.changed.notify_all();
    }

    /// Batches not yet acknowledged by every output.
    pub fn in_flight(&self) -> usize {
        self.lock().pending.len()
    }

    /// Every live source's key and committed checkpoint (for the agent's
    /// telemetry: per-file lag).
    pub fn live_sources(&self) -> Vec<(String, Checkpoint)> {
        let st = self.lock();
        st.sources
            .iter()
            .filter(|s| s.live)
            .map(|s| (s.key.clone(), s.committed.clone()))
            .collect()
    }

    /// A source's committed offset.
    pub fn committed(&self, id: SourceId) -> u64 {
        self.lock()
            .sources
            .get(id.0 as usize)
            .map_or(0, |s| s.committed.offset)
    }

    /// Waits until every registered batch is acknowledged, up to `timeout`;
    /// returns whether it got there.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        while !st.pending.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self
                .idle
                .wait_timeout(st, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        true
    }

    /// The persister's save after [`Ledger::wait_changed`]: a full
    /// [`Ledger::persist`] if a source came, went or changed, or a move's
    /// delay is over; else, if sources moved, their positions written to
    /// `checkpoints.fast`.
    pub fn persist_due(&self) -> Result<(), CheckpointError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let _saving = self.saving.lock().unwrap_or_else(|e| e.into_inner());
        let positions: BTreeMap<String, u64> = {
            let mut st = self.lock();
            if st.holds > 0 {
                return Ok(());
            }
            // Checked under the same lock as the snapshot: a source whose
            // facts changed since the last full save is never written fast
            // (its position would land on its old facts).
            if st.full_due(Instant::now()) {
                return self.save_full(store, st);
            }
            if !st.fast {
                return Ok(());
            }
            st.fast = false;
            st.sources
                .iter()
                .filter(|s| s.live && s.committed.offset != s.saved)
                .map(|s| (s.key.clone(), s.committed.offset))
                .collect()
        };
        let r = store.save_fast(&positions);
        if r.is_err() {
            self.lock().fast = true;
        }
        r
    }

    /// Writes the committed positions to the checkpoint file if they changed
    /// since the last write (moves not yet due included).
    pub fn persist(&self) -> Result<(), CheckpointError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let _saving = self.saving.lock().unwrap_or_else(|e| e.into_inner());
        self.save_full(store, self.lock())
    }

    /// A full save of what `st` holds, if anything changed; the caller
    /// holds `saving`.
    fn save_full(
        &self,
        store: &Checkpoints,
        mut st: MutexGuard<'_, State>,
    ) -> Result<(), CheckpointError> {
        if st.holds > 0 || (!st.dirty && st.move_due.is_none()) {
            return Ok(());
        }
        st.dirty = false;
        st.move_due = None;
        st.fast = false;
        let mut snapshot = st.dormant.clone();
        for s in st.sources.iter_mut().filter(|s| s.live) {
            s.saved = s.committed.offset;
            snapshot.insert(s.key.clone(), s.committed.clone());
        }
        drop(st);
        let r = store.save(&snapshot);
        if r.is_err() {
            self.lock().dirty = true;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-output ledger saving to a fresh directory's checkpoint file.
    fn stored_ledger() -> (tempfile::TempDir, Checkpoints, std::sync::Arc<Ledger>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Checkpoints::open(dir.path()).unwrap();
        let l = std::sync::Arc::new(Ledger::new(1, Some(store.clone())).unwrap());
        (dir, store, l)
    }

    fn pos(s: SourceId, offset: u64) -> Vec<Position> {
        vec![Position { source: s, offset }]
    }

    #[test]
    fn commits_only_contiguous_acknowledged_batches() {
        let l = Ledger::new(1, None).unwrap();
        let (s, saved) = l.source("a");
        assert!(saved.is_none());
        let b0 = l.begin_batch(pos(s, 10));
        let b1 = l.begin_batch(pos(s, 20));
        let b2 = l.begin_batch(pos(s, 30));
        l.ack(b1);
        assert_eq!(l.committed(s), 0, "b0 still in flight");
        l.ack(b0);
        assert_eq!(l.committed(s), 20);
        assert_eq!(l.in_flight(), 1);
        l.ack(b2);
        assert_eq!(l.committed(s), 30);
        assert!(l.wait_idle(Duration::from_millis(1)));
    }

    #[test]
    fn every_output_must_acknowledge() {
        let l = Ledger::new(2, None).unwrap();
        let (s, _) = l.source("a");
        let b = l.begin_batch(pos(s, 5));
        l.ack(b);
        assert_eq!(l.committed(s), 0);
        assert!(!l.wait_idle(Duration::from_millis(10)));
        l.ack(b);
        assert_eq!(l.committed(s), 5);
    }

    #[test]
    fn a_batch_waits_for_the_outputs_it_was_handed_to() {
        // Made for two outputs; a reload left one for the second batch and
        // three for the third.
        let l = Ledger::new(2, None).unwrap();
        let (s, _) = l.source("a");
        let b0 = l.begin_batch(pos(s, 5));
        let b1 = l.begin_batch(pos(s, 9));
        let b2 = l.begin_batch(pos(s, 12));
        l.expect(b1, 1);
        l.expect(b2, 3);
        l.ack(b1);
        l.ack(b0);
        assert_eq!(l.committed(s), 0, "b0 waits for its second output");
        l.ack(b0);
        assert_eq!(l.committed(s), 9, "b1 needed one ack only");
        l.ack(b2);
        l.ack(b2);
        assert_eq!(l.committed(s), 9, "b2 waits for its third output");
        l.ack(b2);
        assert_eq!(l.committed(s), 12);
    }

    #[test]
    fn persisted_positions_survive_a_new_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let store = Checkpoints::open(dir.path()).unwrap();
        let l = Ledger::new(1, Some(store.clone())).unwrap();
        let (s, _) = l.source("file-1");
        let (t, _) = l.source("file-2");
        l.set_meta(s, serde_json::json!({"path": "/a"}));
        let b = l.begin_batch(vec![
            Position {
                source: s,
                offset: 7,
            },
            Position {
                source: t,
                offset: 9,
            },
        ]);
        l.begin_batch(pos(s, 100)); // never acknowledged
        l.ack(b);
        l.persist().unwrap();
        let l2 = Ledger::new(1, Some(store)).unwrap();
        let (_, cp) = l2.source("file-1");
        let cp = cp.unwrap();
        assert_eq!(cp.offset, 7);
        assert_eq!(cp.meta["path"], "/a");
        assert_eq!(l2.source("file-2").1.unwrap().offset, 9);
    }

    #[test]
    fn only_a_moved_position_asks_for_a_save() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::new(1, Some(Checkpoints::open(dir.path()).unwrap())).unwrap();
        let (s, _) = l.source("file-1");
        l.persist().unwrap();
        assert!(!l.wait_changed(Duration::ZERO));
        // Metrics alone (no position), then a batch that did not move the
        // file: nothing new to save, so no disk write every metrics tick.
        let metrics = l.begin_batch(Vec::new());
        l.ack(metrics);
        assert!(!l.wait_changed(Duration::ZERO));
        let moved = l.begin_batch(pos(s, 40));
        l.ack(moved);
        assert!(l.wait_changed(Duration::ZERO));
        l.persist().unwrap();
        let same = l.begin_batch(pos(s, 40));
        l.ack(same);
        assert!(!l.wait_changed(Duration::ZERO));
        // A persister asleep for an hour is let go at once.
        let l = std::sync::Arc::new(l);
        let waiter = {
            let l = l.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                l.wait_changed(Duration::from_secs(3600));
                t.elapsed()
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        l.stop_waiting();
        assert!(waiter.join().unwrap() < Duration::from_secs(5));
        assert!(!l.wait_changed(Duration::from_secs(3600)));
    }

    #[test]
    fn moves_are_saved_fast_at_once_and_in_full_after_their_delay() {
        let (dir, store, l) = stored_ledger();
        let (spool, _) = l.source("spool");
        let (file, _) = l.source("file-1");
        let delay = Duration::from_secs(3);
        l.set_save_delay(spool, delay);
        l.set_committed(file, 1);
        l.persist().unwrap();
        // What a restart after a kill would load (both files), and what
        // the fsync'd file alone holds.
        let loaded = |key: &str| {
            Checkpoints::open(dir.path())
                .unwrap()
                .load()
                .unwrap()
                .get(key)
                .map(|c| c.offset)
        };
        let full = |key: &str| {
            let f: serde_json::Value =
                serde_json::from_slice(&std::fs::read(store.path()).unwrap()).unwrap();
            f["sources"][key]["offset"].as_u64()
        };

        // A move: written to the fast file at once, not to the full one.
        let t = Instant::now();
        let b = l.begin_batch(pos(spool, 10));
        l.ack(b);
        assert!(l.wait_changed(Duration::ZERO));
        l.persist_due().unwrap();
        assert_eq!(loaded("spool"), Some(10));
        if t.elapsed() < delay {
            assert_eq!(full("spool"), Some(0), "no full save before the delay");
        }
        if t.elapsed() < delay / 2 {
            assert!(!l.wait_changed(Duration::ZERO), "nothing more to save yet");
        }
        // A second move before the delay is over: fast again, and it does
        // not put the full save off...
        std::thread::sleep(delay / 2);
        let b = l.begin_batch(pos(spool, 15));
        l.ack(b);
        assert!(l.wait_changed(Duration::ZERO));
        l.persist_due().unwrap();
        assert_eq!(loaded("spool"), Some(15));
        if t.elapsed() < delay {
            assert_eq!(full("spool"), Some(0), "no full save before the delay");
        }
        // ...which comes when the first move's delay is over, for a
        // persister that would otherwise sleep longer.
        assert!(l.wait_changed(Duration::from_secs(20)));
        let waited = t.elapsed();
        // Put off by the second move, it would come at 1.5 × delay.
        assert!(
            (delay..delay * 29 / 20).contains(&waited),
            "saved {waited:?} after the first move, with a delay of {delay:?}"
        );
        l.persist_due().unwrap();
        assert_eq!(full("spool"), Some(15));
        assert!(!l.wait_changed(Duration::ZERO));

        // A file's move waits SAVE_DELAY, less than the spool's, and its
        // full save takes the spool's move along.
        let long = Duration::from_secs(20);
        l.set_save_delay(spool, long);
        let t = Instant::now();
        let b = l.begin_batch(pos(spool, 20));
        l.ack(b);
        let b = l.begin_batch(pos(file, 5));
        l.ack(b);
        assert!(l.wait_changed(Duration::ZERO));
        l.persist_due().unwrap();
        assert_eq!((loaded("spool"), loaded("file-1")), (Some(20), Some(5)));
        // (Unless this thread stalled past the delay: then that save was
        // the full one.)
        if full("file-1") == Some(1) {
            assert!(l.wait_changed(Duration::from_secs(60)));
            let waited = t.elapsed();
            assert!(
                (SAVE_DELAY..long).contains(&waited),
                "saved {waited:?} after the file's move"
            );
            l.persist_due().unwrap();
        }
        assert_eq!((full("spool"), full("file-1")), (Some(20), Some(5)));
        assert!(!l.wait_changed(delay), "nothing left to save");

        // A change of a source's facts is saved in full at once, with the
        // moves before it.
        let b = l.begin_batch(pos(file, 9));
        l.ack(b);
        l.set_meta(file, serde_json::json!({"path": "/b"}));
        assert!(l.wait_changed(Duration::ZERO));
        l.persist_due().unwrap();
        assert_eq!(full("file-1"), Some(9));
        assert!(!l.wait_changed(Duration::ZERO));

        // At shutdown: nothing to save is nothing; a move not yet due is
        // saved in full.
        l.stop_waiting();
        assert!(!l.wait_changed(Duration::from_secs(20)));
        let b = l.begin_batch(pos(spool, 30));
        l.ack(b);
        assert!(l.wait_changed(Duration::from_secs(20)));
        l.persist().unwrap();
        assert_eq!(full("spool"), Some(30));
    }

    #[test]
    fn a_source_started_over_ignores_the_positions_of_its_old_content() {
        let (_dir, store, l) = stored_ledger();
        let (s, _) = l.source("file-1");
        l.set_meta(s, serde_json::json!({"fp": 1}));
        let b = l.begin_batch(pos(s, 300));
        l.ack(b);
        let in_flight = l.begin_batch(pos(s, 500));
        // Truncated while that batch is in flight: offset 0 and the new
        // facts, saved together at once.
        let t = l.start_over(s, 0, serde_json::json!({"fp": 2}));
        assert!(l.wait_changed(Duration::ZERO));
        l.persist_due().unwrap();
        let saved = || {
            let c = store.load().unwrap()["file-1"].clone();
            (c.offset, c.meta["fp"].as_u64())
        };
        assert_eq!(saved(), (0, Some(2)));
        // The old content's batch in flight, and one still queued when the
        // file started over (registered after it), are acknowledged: their
        // offsets belong to the content that is gone.
        l.ack(in_flight);
        let queued = l.begin_batch(pos(s, 700));
        l.ack(queued);
        assert_eq!(l.committed(t), 0);
        assert!(!l.wait_changed(Duration::ZERO), "nothing to save");
        l.persist().unwrap();
        assert_eq!(saved(), (0, Some(2)));
        // The new content's batches move it on.
        let new = l.begin_batch(pos(t, 40));
        l.ack(new);
        assert_eq!(l.committed(t), 40);
        l.persist().unwrap();
        assert_eq!(saved(), (40, Some(2)));
        assert_eq!(l.source("file-1").0, t, "the key names the new id");
    }

    #[test]
    fn a_source_handed_over_to_its_copy_takes_its_batches_in_flight_along() {
        let (_dir, store, l) = stored_ledger();
        let (s, _) = l.source("file-1");
        l.set_meta(s, serde_json::json!({"fp": 1}));
        let b = l.begin_batch(pos(s, 300));
        l.ack(b);
        let in_flight = l.begin_batch(pos(s, 500));
        l.persist().unwrap();
        // Copied to "copy-1" and truncated while that batch is in flight.
        let t = l.hand_over(s, "copy-1", 0, serde_json::json!({"fp": 2}));
        assert_ne!(t, s);
        assert!(l.wait_changed(Duration::ZERO));
        l.persist_due().unwrap();
        let saved = |key: &str| {
            store
                .load()
                .unwrap()
                .get(key)
                .map(|c| (c.offset, c.meta["fp"].as_u64()))
        };
        // Both at once: the copy with the old content's checkpoint and
        // facts, the truncated file from 0 with its new facts.
        assert_eq!(saved("copy-1"), Some((300, Some(1))));
        assert_eq!(saved("file-1"), Some((0, Some(2))));
        // The batch in flight moves the copy's checkpoint, not the file's.
        l.ack(in_flight);
        assert_eq!(l.committed(s), 500);
        assert_eq!(l.committed(t), 0);
        l.persist().unwrap();
        assert_eq!(saved("copy-1"), Some((500, Some(1))));
        assert_eq!(saved("file-1"), Some((0, Some(2))));
        assert_eq!(l.source("file-1").0, t, "the file's key names the new id");
        assert_eq!(l.source("copy-1").0, s, "the copy's key names the old id");
        // Let go once read: the copy's checkpoint is dropped, the file's kept.
        l.retire(s);
        l.persist().unwrap();
        assert_eq!(saved("copy-1"), None);
        assert_eq!(saved("file-1"), Some((0, Some(2))));
    }

    #[test]
    fn a_save_hold_keeps_changes_off_disk_until_it_is_dropped() {
        let (_dir, store, l) = stored_ledger();
        let (a, _) = l.source("file-1");
        l.set_committed(a, 3);
        l.persist().unwrap();
        let saved = || store.load().unwrap().get("file-1").map(|c| c.offset);

        let hold = l.hold_saves();
        let (b, _) = l.source("file-2");
        l.set_committed(a, 0);
        assert!(
            !l.wait_changed(Duration::from_millis(50)),
            "no save asked for"
        );
        l.persist().unwrap();
        assert_eq!(saved(), Some(3), "nothing saved while held");
        l.set_committed(b, 9);
        // A persister asleep is woken when the hold goes.
        let waiter = {
            let l = l.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                (l.wait_changed(Duration::from_secs(20)), t.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        drop(hold);
        let (changed, waited) = waiter.join().unwrap();
        assert!(changed && waited < Duration::from_secs(10), "{waited:?}");
        l.persist().unwrap();
        let all = store.load().unwrap();
        assert_eq!(
            (all["file-1"].offset, all["file-2"].offset),
            (0, 9),
            "both changes saved together"
        );
    }

    #[test]
    fn unseen_sources_keep_their_checkpoints_across_saves() {
        let dir = tempfile::tempdir().unwrap();
        let store = Checkpoints::open(dir.path()).unwrap();
        let l = Ledger::new(1, Some(store.clone())).unwrap();
        let (s, _) = l.source("old");
        l.set_committed(s, 3);
        l.persist().unwrap();
        let l2 = Ledger::new(1, Some(store.clone())).unwrap();
        let (n, _) = l2.source("new");
        l2.set_committed(n, 1);
        l2.persist().unwrap();
        let l3 = Ledger::new(1, Some(store)).unwrap();
        assert_eq!(l3.source("old").1.unwrap().offset, 3);
    }

    #[test]
    fn a_retired_key_comes_back_as_a_new_source() {
        let l = Ledger::new(1, None).unwrap();
        let (s, _) = l.source("9:9");
        l.set_committed(s, 50);
        l.retire(s);
        let (t, saved) = l.source("9:9");
        assert_ne!(s, t);
        assert!(saved.is_none());
        assert_eq!(l.committed(t), 0);
    }
}
