//! Durable checkpoints: one JSON file under `data_dir`, replaced atomically
//! (write a temporary file, fsync it, rename it over the old one, fsync the
//! directory), so a crash at any moment leaves either the old or the new
//! checkpoints, never a torn file.
//!
//! Beside it, `checkpoints.fast` holds newer positions of sources whose
//! positions only grow (the spool), written in place without `fsync`
//! ([`Checkpoints::save_fast`]): it survives the process being killed (the
//! page cache keeps it), and after a power cut it may be torn or lost, when
//! the positions of the last full save apply. Loading takes the larger of
//! the two positions.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
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
    sources: BTreeMap<String, Checkpoint>,
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
        Ok(Checkpoints {
            dir: data_dir.to_path_buf(),
            path: data_dir.join("checkpoints.json"),
            dir_handle: fs::File::open(data_dir).ok().map(Arc::new),
            // An earlier run's fast file, so that the next full save
            // empties it even if this run makes no fast save.
            fast: Arc::new(Mutex::new(
                fs::OpenOptions::new()
                    .write(true)
                    .open(data_dir.join("checkpoints.fast"))
                    .ok(),
            )),
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

    /// Every source's checkpoint, empty when the file does not exist yet;
    /// a position in `checkpoints.fast` larger than the saved one wins.
    pub fn load(&self) -> Result<BTreeMap<String, Checkpoint>, CheckpointError> {
        let mut sources = match fs::read(&self.path) {
            Ok(bytes) => {
                let f: File =
                    serde_json::from_slice(&bytes).map_err(|source| CheckpointError::Corrupt {
                        path: self.path.clone(),
                        source,
                    })?;
                f.sources
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => {
                return Err(CheckpointError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        for (key, offset) in self.load_fast() {
            let cp = sources.entry(key).or_insert(Checkpoint {
                offset: 0,
                meta: serde_json::Value::Null,
            });
            cp.offset = cp.offset.max(offset);
        }
        Ok(sources)
    }

    /// The positions of `checkpoints.fast`: its first line, a JSON object
    /// of offsets. Anything else (no file, a torn or empty one) is none.
    fn load_fast(&self) -> BTreeMap<String, u64> {
        let Ok(bytes) = fs::read(self.fast_path()) else {
            return BTreeMap::new();
        };
        let Some(end) = bytes.iter().position(|&b| b == b'\n') else {
            return BTreeMap::new();
        };
        serde_json::from_slice(&bytes[..end]).unwrap_or_default()
    }

    /// Writes `positions` (of sources whose positions only grow) to
    /// `checkpoints.fast`, in place and without `fsync`: a few microseconds
    /// where a [`Checkpoints::save`] costs two `fsync`s.
    pub fn save_fast(&self, positions: &BTreeMap<String, u64>) -> Result<(), CheckpointError> {
        let path = self.fast_path();
        let io = |source| CheckpointError::Io {
            path: path.clone(),
            source,
        };
        let mut line = serde_json::to_vec(positions).map_err(|e| io(std::io::Error::other(e)))?;
        line.push(b'\n');
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
        let body = serde_json::to_vec_pretty(&FileRef {
            version: 1,
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
        // The fast positions are in the file now: an old fast file must not
        // outlive a reset of the checkpoints.
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

#[derive(Serialize)]
struct FileRef<'a> {
    version: u32,
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
    fn fast_positions_win_when_larger_and_a_torn_fast_file_is_ignored() {
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
        c.save_fast(&fast(&[("spool", 250), ("other", 7)])).unwrap();
        let got = Checkpoints::open(dir.path()).unwrap().load().unwrap();
        assert_eq!(got["spool"].offset, 250);
        assert_eq!(got["spool"].meta["x"], 1, "meta kept");
        assert_eq!(got["other"].offset, 7);
        // A shorter line over a longer one: the first line is read.
        c.save_fast(&fast(&[("spool", 260)])).unwrap();
        let got = c.load().unwrap();
        assert_eq!(
            (got["spool"].offset, got.contains_key("other")),
            (260, false)
        );
        // Smaller than the saved position: the saved one stays.
        c.save_fast(&fast(&[("spool", 50)])).unwrap();
        assert_eq!(c.load().unwrap()["spool"].offset, 100);
        // Torn (no newline) or garbage: ignored.
        std::fs::write(dir.path().join("checkpoints.fast"), b"{\"spool\": 99").unwrap();
        assert_eq!(c.load().unwrap()["spool"].offset, 100);
        // A full save empties the fast file.
        c.save_fast(&fast(&[("spool", 300)])).unwrap();
        m.get_mut("spool").unwrap().offset = 120;
        c.save(&m).unwrap();
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
