//! Durable checkpoints: one JSON file under `data_dir`, replaced atomically
//! (write a temporary file, fsync it, rename it over the old one, fsync the
//! directory), so a crash at any moment leaves either the old or the new
//! checkpoints, never a torn file.
//!
//! Beside it, `checkpoints.fast` holds the positions sources reached since
//! the last full save, written in place without `fsync`
//! ([`Checkpoints::save_fast`]): it survives the process being killed (the
//! page cache keeps it), and after a power cut it may be torn, lost or
//! stale, when the positions of the last full save apply. Its line ends in
//! a checksum of the rest, so a torn line (a write cut short by a kill
//! between two pages, or half of it on disk after a power cut) is never
//! read. Each full save is numbered (`seq`), and the fast file names the
//! save it follows (`base`): its positions apply only over that save, so a
//! fast file older than the full one is never read over it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The committed state of one source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Byte offset up to which every record was acknowledged.
    pub offset: u64,
    /// Collector-specific identity facts (path, fingerprint), opaque here.
    #[serde(default)]
    pub meta: serde_json::Value,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    version: u32,
    /// The save's number: one more than the save it replaced.
    #[serde(default)]
    seq: u64,
    sources: BTreeMap<String, Checkpoint>,
}

/// `checkpoints.fast`'s one line: positions newer than those of full save
/// number `base`.
#[derive(Debug, Serialize, Deserialize)]
struct Fast<O> {
    base: u64,
    offsets: O,
}

/// Why checkpoints could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Reading, writing or renaming failed.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file exists but is not valid checkpoint JSON.
    #[error("{path}: not a sidekick checkpoint file: {source}")]
    Corrupt {
        /// The file concerned.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
}

/// The checkpoint file of one `data_dir`.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    dir: PathBuf,
    path: PathBuf,
    /// `dir`, kept open for the `fsync` that makes a rename durable:
    /// opening it for each save would cost two system calls and raise an
    /// inotify event for whoever watches its parent.
    dir_handle: Option<Arc<fs::File>>,
    /// `data_dir/checkpoints.fast`, opened at its first fast save.
    fast: Arc<Mutex<Option<fs::File>>>,
    /// The number of the last full save (read from the file at open).
    seq: Arc<AtomicU64>,
}

impl Checkpoints {
    /// Checkpoints kept in `data_dir/checkpoints.json`; creates `data_dir`
    /// (mode 0700) if needed.
    pub fn open(data_dir: &Path) -> Result<Self, CheckpointError> {
        let io = |source| CheckpointError::Io {
            path: data_dir.to_path_buf(),
            source,
        };
        if !data_dir.exists() {
            let mut b = fs::DirBuilder::new();
            b.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
            b.create(data_dir).map_err(io)?;
        }
        let path = data_dir.join("checkpoints.json");
        // An unreadable file is reported by `load`; its number is not needed
        // then.
        let seq = fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<File>(&b).ok())
            .map_or(0, |f| f.seq);
        Ok(Checkpoints {
            dir: data_dir.to_path_buf(),
            path,
            dir_handle: fs::File::open(data_dir).ok().map(Arc::new),
            // An earlier run's fast file, so that the next full save
            // empties it even if this run makes no fast save.
            fast: Arc::new(Mutex::new(
                fs::OpenOptions::new()
                    .write(true)
                    .open(data_dir.join("checkpoints.fast"))
                    .ok(),
            )),
            seq: Arc::new(AtomicU64::new(seq)),
        })
    }

    /// The checkpoint file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// When the file was last written, if it exists.
    pub fn modified(&self) -> Option<std::time::SystemTime> {
        fs::metadata(&self.path).and_then(|m| m.modified()).ok()
    }

    fn fast_path(&self) -> PathBuf {
        self.dir.join("checkpoints.fast")
    }

    /// Every source's checkpoint, empty when the file does not exist yet,
    /// with the positions of `checkpoints.fast` over it when that file
    /// follows this very save.
    pub fn load(&self) -> Result<BTreeMap<String, Checkpoint>, CheckpointError> {
        let (seq, mut sources) = match fs::read(&self.path) {
            Ok(bytes) => {
                let f: File =
                    serde_json::from_slice(&bytes).map_err(|source| CheckpointError::Corrupt {
                        path: self.path.clone(),
                        source,
                    })?;
                (f.seq, f.sources)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (0, BTreeMap::new()),
            Err(source) => {
                return Err(CheckpointError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let Some(line) = self.fast_line() else {
            return Ok(sources);
        };
        if let Some(json) = checked(&line) {
            let Ok(fast) = serde_json::from_slice::<Fast<BTreeMap<String, u64>>>(json) else {
                return Ok(sources);
            };
            if fast.base == seq {
                for (key, offset) in fast.offsets {
                    entry(&mut sources, key).offset = offset;
                }
            }
        } else if let Ok(old) = serde_json::from_slice::<BTreeMap<String, u64>>(&line) {
            // An earlier version's fast file: only positions that only grow
            // (the spool's) were in it, so the larger one wins.
            for (key, offset) in old {
                let cp = entry(&mut sources, key);
                cp.offset = cp.offset.max(offset);
            }
        }
        Ok(sources)
    }

    /// The first line of `checkpoints.fast`, without its newline; none
    /// without a file or a whole line (emptied).
    fn fast_line(&self) -> Option<Vec<u8>> {
        let mut bytes = fs::read(self.fast_path()).ok()?;
        let end = bytes.iter().position(|&b| b == b'\n')?;
        bytes.truncate(end);
        Some(bytes)
    }

    /// Writes `positions`, each source's position since the last full
    /// [`Checkpoints::save`], to `checkpoints.fast`, in place and without
    /// `fsync`: a few microseconds where a full save costs two `fsync`s.
    /// Only positions whose source's other facts (`meta`) are as last saved
    /// in full belong here.
    pub fn save_fast(&self, positions: &BTreeMap<String, u64>) -> Result<(), CheckpointError> {
        let path = self.fast_path();
        let io = |source| CheckpointError::Io {
            path: path.clone(),
            source,
        };
        let fast = Fast {
            base: self.seq.load(Ordering::Acquire),
            offsets: positions,
        };
        let mut line = serde_json::to_vec(&fast).map_err(|e| io(std::io::Error::other(e)))?;
        let sum = fnv1a(&line);
        line.extend_from_slice(format!("\t{sum:016x}\n").as_bytes());
        let mut fast = self.fast.lock().unwrap_or_else(|p| p.into_inner());
        if fast.is_none() {
            *fast = Some(
                fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(false)
                    .open(&path)
                    .map_err(io)?,
            );
        }
        let Some(f) = fast.as_ref() else {
            return Ok(());
        };
        // One write: a reader takes the first line, so bytes left past it
        // by a longer earlier line do not matter until `set_len` drops them.
        f.write_all_at(&line, 0).map_err(io)?;
        f.set_len(line.len() as u64).map_err(io)?;
        Ok(())
    }

    /// Replaces the file with `sources`, atomically.
    pub fn save(&self, sources: &BTreeMap<String, Checkpoint>) -> Result<(), CheckpointError> {
        let tmp = self.dir.join("checkpoints.json.tmp");
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CheckpointError::Io { path, source }
        };
        let seq = self.seq.load(Ordering::Acquire) + 1;
        let body = serde_json::to_vec_pretty(&FileRef {
            version: 1,
            seq,
            sources,
        })
        .map_err(|e| CheckpointError::Io {
            path: tmp.clone(),
            source: std::io::Error::other(e),
        })?;
        let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&body).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        drop(f);
        fs::rename(&tmp, &self.path).map_err(io(&self.path))?;
        self.seq.store(seq, Ordering::Release);
        // The fast positions are in the file now (a fast file left behind by
        // a crash right here names the save before, and is not read).
        if let Some(f) = self.fast.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = f.set_len(0);
        }
        // Make the rename itself durable.
        match &self.dir_handle {
            Some(d) => {
                let _ = d.sync_all();
            }
            None => {
                if let Ok(d) = fs::File::open(&self.dir) {
                    let _ = d.sync_all();
                }
            }
        }
        Ok(())
    }
}

/// The JSON of a fast line (`JSON \t checksum`) if its checksum is right;
/// none for a torn line, or one without a checksum (an earlier version's).
fn checked(line: &[u8]) -> Option<&[u8]> {
    let tab = line.iter().rposition(|&b| b == b'\t')?;
    let (json, sum) = (&line[..tab], &line[tab + 1..]);
    let sum = u64::from_str_radix(std::str::from_utf8(sum).ok()?, 16).ok()?;
    (sum == fnv1a(json)).then_some(json)
}

/// 64-bit FNV-1a: a checksum that tells a torn line from a whole one.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `key`'s checkpoint in `sources`, made (offset 0, no facts) if missing.
fn entry(sources: &mut BTreeMap<String, Checkpoint>, key: String) -> &mut Checkpoint {
    sources.entry(key).or_insert(Checkpoint {
        offset: 0,
        meta: serde_json::Value::Null,
    })
}

#[derive(Serialize)]
struct FileRef<'a> {
    version: u32,
    seq: u64,
    sources: &'a BTreeMap<String, Checkpoint>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_then_load_round_trips_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let cp = Checkpoints::open(&dir.path().join("data")).unwrap();
        assert!(cp.load().unwrap().is_empty());
        let mut m = BTreeMap::new();
        m.insert(
            "1:2".to_string(),
            Checkpoint {
                offset: 42,
                meta: serde_json::json!({"path": "/x.log"}),
            },
        );
        cp.save(&m).unwrap();
        assert_eq!(cp.load().unwrap(), m);
        assert!(!dir.path().join("data/checkpoints.json.tmp").exists());
    }

    #[test]
    fn fast_positions_apply_only_over_the_save_they_follow() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoints::open(dir.path()).unwrap();
        let mut m = BTreeMap::new();
        m.insert(
            "spool".to_string(),
            Checkpoint {
                offset: 100,
                meta: serde_json::json!({"x": 1}),
            },
        );
        c.save(&m).unwrap();
        let fast = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
            pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        let fast_file = dir.path().join("checkpoints.fast");
        c.save_fast(&fast(&[("spool", 250), ("other", 7)])).unwrap();
        let got = Checkpoints::open(dir.path()).unwrap().load().unwrap();
        assert_eq!(got["spool"].offset, 250);
        assert_eq!(got["spool"].meta["x"], 1, "meta kept");
        assert_eq!(got["other"].offset, 7);
        // The latest fast position wins, smaller or not; a shorter line
        // over a longer one is read as itself.
        c.save_fast(&fast(&[("spool", 50)])).unwrap();
        let got = c.load().unwrap();
        assert_eq!(
            (got["spool"].offset, got.contains_key("other")),
            (50, false)
        );
        // Torn (no newline) or garbage: ignored.
        fs::write(&fast_file, b"{\"base\":1,\"offsets\":{\"spool\": 99").unwrap();
        assert_eq!(c.load().unwrap()["spool"].offset, 100);
        // Torn yet still JSON (a new first page over an old second one):
        // the checksum tells.
        c.save_fast(&fast(&[("spool", 1770)])).unwrap();
        let line = String::from_utf8(fs::read(&fast_file).unwrap()).unwrap();
        fs::write(&fast_file, line.replace("1770", "1779")).unwrap();
        assert_eq!(c.load().unwrap()["spool"].offset, 100);
        let json = line.split('\t').next().unwrap();
        fs::write(&fast_file, format!("{json}\n")).unwrap();
        assert_eq!(c.load().unwrap()["spool"].offset, 100, "no checksum");
        // A fast file that follows an older full save (a crash between a
        // full save and the emptying of the fast file, or a power cut) is
        // not read over the newer one.
        c.save_fast(&fast(&[("spool", 300)])).unwrap();
        let left = fs::read(&fast_file).unwrap();
        m.get_mut("spool").unwrap().offset = 120;
        c.save(&m).unwrap();
        assert_eq!(fs::metadata(&fast_file).unwrap().len(), 0, "emptied");
        fs::write(&fast_file, &left).unwrap();
        assert_eq!(c.load().unwrap()["spool"].offset, 120);
        // A later run goes on from the number the file holds.
        let again = Checkpoints::open(dir.path()).unwrap();
        again.save_fast(&fast(&[("spool", 130)])).unwrap();
        assert_eq!(again.load().unwrap()["spool"].offset, 130);
        // An earlier version's fast file (offsets only, of a source whose
        // positions only grow): the larger position wins.
        fs::write(&fast_file, b"{\"spool\":400}\n").unwrap();
        assert_eq!(c.load().unwrap()["spool"].offset, 400);
        fs::write(&fast_file, b"{\"spool\":5}\n").unwrap();
        assert_eq!(c.load().unwrap()["spool"].offset, 120);
    }

    #[test]
    fn corrupt_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cp = Checkpoints::open(dir.path()).unwrap();
        fs::write(cp.path(), b"{not json").unwrap();
        let e = cp.load().unwrap_err().to_string();
        assert!(e.contains("checkpoints.json"), "{e}");
    }
}
