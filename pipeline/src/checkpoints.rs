//! Durable checkpoints: one JSON file under `data_dir`, replaced atomically
//! (write a temporary file, fsync it, rename it over the old one, fsync the
//! directory), so a crash at any moment leaves either the old or the new
//! checkpoints, never a torn file.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

    /// Every source's checkpoint, empty when the file does not exist yet.
    pub fn load(&self) -> Result<BTreeMap<String, Checkpoint>, CheckpointError> {
        match fs::read(&self.path) {
            Ok(bytes) => {
                let f: File =
                    serde_json::from_slice(&bytes).map_err(|source| CheckpointError::Corrupt {
                        path: self.path.clone(),
                        source,
                    })?;
                Ok(f.sources)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(source) => Err(CheckpointError::Io {
                path: self.path.clone(),
                source,
            }),
        }
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
    fn corrupt_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cp = Checkpoints::open(dir.path()).unwrap();
        fs::write(cp.path(), b"{not json").unwrap();
        let e = cp.load().unwrap_err().to_string();
        assert!(e.contains("checkpoints.json"), "{e}");
    }
}
