//! Files kept open between samples and re-read in place.
//!
//! Opening a `/proc` or cgroup file walks its path, allocates a `struct
//! file` and a seq_file buffer, and closing frees them again: for the
//! one-line files the sampler reads, that is most of the cost of a read
//! (issue 5). A [`Kept`] file is opened once and re-read with `pread` at
//! offset 0, which makes the kernel generate the content afresh (seq_file
//! rewinds its iterator on a read at offset 0): one system call per file
//! per sample, the same bytes a fresh open would give.
//!
//! A file whose read fails is reopened once and read again, so a file
//! recreated under the same path (a cgroup rebuilt by its manager, a PID
//! given to a new process) is followed, as when every sample opened its
//! files afresh. A file that cannot be opened (a root cgroup has no
//! `pids.max`; `/proc/N/io` of another user's process; a gone target) is
//! tried again at most once every [`RETRY_OPEN`]: a figure whose file
//! appears later (a controller enabled afterwards) shows up within that
//! time, and a missing file costs no system call in between (a failed open
//! walks the whole path: it cost 10 % of a sample on a v1 host whose root
//! pids cgroup has no files).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long a file that could not be opened is left alone.
pub(crate) const RETRY_OPEN: Duration = Duration::from_secs(1);

/// An open handle, or when the last open failed.
#[derive(Debug, Default)]
struct Handle {
    file: Option<File>,
    failed: Option<Instant>,
}

impl Handle {
    /// Opens with `open` unless the last attempt failed less than
    /// [`RETRY_OPEN`] ago.
    fn open(&mut self, open: impl FnOnce() -> io::Result<File>) -> io::Result<&File> {
        if self.failed.is_some_and(|at| at.elapsed() < RETRY_OPEN) {
            return Err(io::ErrorKind::NotFound.into());
        }
        match open() {
            Ok(f) => {
                self.failed = None;
                Ok(self.file.insert(f))
            }
            Err(e) => {
                self.failed = Some(Instant::now());
                Err(e)
            }
        }
    }
}

/// The buffer all reads of one sampler share.
#[derive(Debug)]
pub(crate) struct Buf(Vec<u8>);

/// What one read gets on first try; bigger files grow the buffer (kept).
const INITIAL: usize = 8192;
/// No file the sampler reads is anywhere near this: a bigger one is cut
/// here rather than growing the buffer without bound.
const MAX: usize = 1 << 20;
/// seq_file copies records into the caller's buffer until one does not fit
/// its own one-page buffer, so a short read under this size is the whole
/// file (every file read here is one record anyway); from this size on the
/// file is read on to its end.
const WHOLE_BELOW: usize = 3072;

impl Buf {
    pub fn new() -> Self {
        Buf(vec![0; INITIAL])
    }
}

/// Reads `f` from offset 0 to its end into `buf`.
pub(crate) fn read_whole<'b>(f: &File, buf: &'b mut Buf) -> io::Result<&'b [u8]> {
    let b = &mut buf.0;
    let mut n = 0;
    loop {
        let r = match f.read_at(&mut b[n..], n as u64) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        n += r;
        if r == 0 || (n < WHOLE_BELOW && n < b.len()) {
            break;
        }
        if n == b.len() {
            if b.len() >= MAX {
                break;
            }
            b.resize(b.len() * 2, 0);
        }
    }
    Ok(&b[..n])
}

/// One file, kept open.
#[derive(Debug)]
pub(crate) struct Kept {
    path: PathBuf,
    file: Handle,
}

impl Kept {
    /// `path`, opened on its first read.
    pub fn new(path: PathBuf) -> Self {
        Kept {
            path,
            file: Handle::default(),
        }
    }

    /// The whole file as it is now. An unopened file is opened first; a
    /// failed read is retried once on a fresh open.
    pub fn read<'b>(&mut self, buf: &'b mut Buf) -> io::Result<&'b [u8]> {
        if let Some(f) = &self.file.file {
            // Two borrows of `buf` cannot be returned from two branches
            // (the borrow checker keeps the first one alive): read, then
            // hand out the slice once.
            match read_whole(f, buf) {
                Ok(b) => {
                    let n = b.len();
                    return Ok(&buf.0[..n]);
                }
                Err(_) => self.file.file = None,
            }
        }
        let path = &self.path;
        let f = self.file.open(|| File::open(path))?;
        read_whole(f, buf)
    }

    /// [`Kept::read`] as text; `None` if unreadable or not UTF-8.
    pub fn read_str<'b>(&mut self, buf: &'b mut Buf) -> Option<&'b str> {
        std::str::from_utf8(self.read(buf).ok()?).ok()
    }
}

/// A directory kept open (`O_PATH`) to be `fstat`ed: `/proc/N/fd`, whose
/// size is the number of open descriptors (Linux 6.2+).
#[derive(Debug)]
pub(crate) struct KeptDir {
    path: PathBuf,
    file: Handle,
}

impl KeptDir {
    /// `path`, opened when first counted.
    pub fn new(path: PathBuf) -> Self {
        KeptDir {
            path,
            file: Handle::default(),
        }
    }

    fn open(path: &std::path::Path) -> io::Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(path)
    }

    /// The number of entries: the directory's size where the kernel gives
    /// it, else a listing (kernels before 6.2 report 0). Reopened once on a
    /// failure, as [`Kept::read`].
    pub fn count(&mut self) -> io::Result<u64> {
        use std::os::unix::fs::MetadataExt;
        let size = match self.file.file.as_ref().map(File::metadata) {
            Some(Ok(m)) => m.size(),
            _ => {
                self.file.file = None;
                let path = &self.path;
                self.file.open(|| Self::open(path))?.metadata()?.size()
            }
        };
        if size > 0 {
            return Ok(size);
        }
        Ok(std::fs::read_dir(&self.path)?.count() as u64)
    }
}
