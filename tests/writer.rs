//! Writers of numbered log lines: `seq=0000000042 <tag> <padding>`, so that
//! what arrives can be checked line by line.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The line for `seq`, `len` bytes long without its newline (longer if the
/// tag does not fit).
pub fn line_for(seq: u64, tag: &str, len: usize) -> String {
    let mut s = format!("seq={seq:010} {tag} ");
    const PAD: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut i = 0;
    while s.len() < len {
        s.push(char::from(PAD[(seq as usize + i) % PAD.len()]));
        i += 1;
    }
    s
}

/// The sequence number of a line written by [`line_for`].
pub fn seq_of(body: &str) -> Option<u64> {
    body.strip_prefix("seq=")?.get(..10)?.parse().ok()
}

/// A log file lines are appended to.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: File,
}

impl LogFile {
    /// Creates (or opens for appending) `path`.
    pub fn create(path: &Path) -> Self {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        Self {
            path: path.to_owned(),
            file,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the lines `seqs`, tagged with the file's name, in one
    /// `write` call.
    pub fn append(&mut self, seqs: Range<u64>, line_len: usize) {
        let tag = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.append_tagged(seqs, &tag, line_len);
    }

    /// Appends the lines `seqs`, tagged with `tag`, in one `write` call.
    pub fn append_tagged(&mut self, seqs: Range<u64>, tag: &str, line_len: usize) {
        let mut buf = String::with_capacity((seqs.end - seqs.start) as usize * (line_len + 1));
        for seq in seqs {
            buf.push_str(&line_for(seq, tag, line_len));
            buf.push('\n');
        }
        self.file
            .write_all(buf.as_bytes())
            .unwrap_or_else(|e| panic!("write {}: {e}", self.path.display()));
    }
}

/// What a background writer writes: `lines_per_file` lines to each file,
/// `lines_per_write` at a time per file, round-robin over the files, with
/// `pause` after each round.
#[derive(Debug, Clone)]
pub struct WriterPlan {
    pub files: Vec<PathBuf>,
    /// The first sequence number (lines before it were written otherwise).
    pub start_seq: u64,
    /// One past the last sequence number of each file.
    pub end_seq: u64,
    pub line_len: usize,
    pub lines_per_write: u64,
    pub pause: Duration,
}

/// A running background writer.
#[derive(Debug)]
pub struct WriterHandle {
    join: Option<JoinHandle<()>>,
    written: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl WriterHandle {
    /// Lines written so far, over all files.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }

    /// Waits for the writer to finish its plan.
    pub fn join(mut self) {
        if let Some(j) = self.join.take() {
            j.join().expect("the log writer panicked");
        }
    }
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

/// Starts writing `plan` in a thread.
pub fn spawn_writer(plan: WriterPlan) -> WriterHandle {
    let written = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (w, s) = (written.clone(), stop.clone());
    let join = std::thread::spawn(move || {
        let mut files: Vec<LogFile> = plan.files.iter().map(|p| LogFile::create(p)).collect();
        let mut seq = plan.start_seq;
        while seq < plan.end_seq && !s.load(Ordering::SeqCst) {
            let end = (seq + plan.lines_per_write).min(plan.end_seq);
            for f in &mut files {
                f.append(seq..end, plan.line_len);
                w.fetch_add(end - seq, Ordering::SeqCst);
            }
            seq = end;
            if !plan.pause.is_zero() {
                std::thread::sleep(plan.pause);
            }
        }
    });
    WriterHandle {
        join: Some(join),
        written,
        stop,
    }
}
