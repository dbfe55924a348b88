//! An append-only NDJSON file shared by concurrent requests.
//!
//! Invariant: the file only ever grows by whole lines. Each request's lines
//! are written with one `write_all` under the file's lock, so requests never
//! interleave within a line; a file left with a torn last line (a crash, a
//! failed write) is ended with a newline before anything is appended.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

#[derive(Debug)]
pub(super) struct NdjsonFile {
    path: PathBuf,
    state: Mutex<FileState>,
}

#[derive(Debug)]
struct FileState {
    file: File,
    /// A write failed part-way: the tail may hold half a line.
    torn: bool,
}

impl NdjsonFile {
    /// Opens `path` for appending, creating it if needed; earlier lines are
    /// kept.
    pub(super) fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        end_torn_line(&file)?;
        Ok(Self {
            path: path.to_owned(),
            state: Mutex::new(FileState { file, torn: false }),
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `lines` (complete lines, each ending in `\n`) in one write.
    /// When this returns `Ok` the bytes are in the file (the kernel's page
    /// cache): any reader of the file sees them.
    pub(super) fn append(&self, lines: &[u8]) -> io::Result<()> {
        // A panic while holding the lock cannot leave `FileState` invalid:
        // `torn` is set before the write, so recover from poisoning.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.torn {
            end_torn_line(&state.file)?;
            state.torn = false;
        }
        state.torn = true;
        state.file.write_all(lines)?;
        state.file.flush()?;
        state.torn = false;
        Ok(())
    }

    /// Forces the file's contents to disk.
    pub(super) fn sync(&self) -> io::Result<()> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.file.sync_data()
    }
}

/// Ends a last line that lacks its newline, so the next append starts on a
/// line of its own.
fn end_torn_line(mut file: &File) -> io::Result<()> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, len - 1)?;
    if last[0] != b'\n' {
        file.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_to_earlier_lines_and_ends_a_torn_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs.ndjson");
        std::fs::write(&path, "{\"a\":1}\n{\"torn\":").unwrap();
        let sink = NdjsonFile::open(&path).unwrap();
        sink.append(b"{\"b\":2}\n").unwrap();
        sink.append(b"{\"c\":3}\n").unwrap();
        sink.sync().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"a\":1}\n{\"torn\":\n{\"b\":2}\n{\"c\":3}\n"
        );
        drop(sink);
        let sink = NdjsonFile::open(&path).unwrap();
        sink.append(b"{\"d\":4}\n").unwrap();
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .ends_with("{\"c\":3}\n{\"d\":4}\n"));
    }
}
