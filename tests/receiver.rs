//! `sidekick receive` as a child process: the OTLP/HTTP endpoint the tests
//! ship to, and the NDJSON file they read what arrived from.

use crate::process::ChildGuard;
use crate::records::{Record, RecordParser};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A running `sidekick receive --listen 127.0.0.1:0 --out DIR`.
#[derive(Debug)]
pub struct Receiver {
    child: ChildGuard,
    endpoint: String,
    out: tempfile::TempDir,
    stderr: Arc<Mutex<String>>,
    reader: Mutex<LogsReader>,
}

/// Reads `logs.ndjson` incrementally: each poll parses only the bytes
/// appended since the last one.
#[derive(Debug, Default)]
struct LogsReader {
    offset: u64,
    partial: Vec<u8>,
    parser: RecordParser,
    records: Vec<Record>,
}

impl Receiver {
    /// Starts the receiver on a free port and waits (10 s at most) for its
    /// `listening on` line.
    pub fn start() -> Self {
        let out = tempfile::Builder::new()
            .prefix("sidekick-receive-")
            .tempdir()
            .expect("a temp dir for the receiver");
        let child = Command::new(crate::sidekick_bin())
            .args(["receive", "--listen", "127.0.0.1:0", "--out"])
            .arg(out.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn `sidekick receive`");
        let mut child = ChildGuard::new(child);
        let stderr_pipe = child_stderr(&mut child);
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        {
            let stderr = stderr.clone();
            std::thread::spawn(move || {
                // Drains stderr for the receiver's whole life so it never
                // blocks on a full pipe.
                let mut tx = Some(tx);
                for line in BufReader::new(stderr_pipe).lines() {
                    let Ok(line) = line else { break };
                    if let Some(port) = parse_listening(&line) {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(port);
                        }
                    }
                    let mut s = stderr.lock().unwrap_or_else(PoisonError::into_inner);
                    s.push_str(&line);
                    s.push('\n');
                }
            });
        }
        let port = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(port) => port,
            Err(_) => {
                let status = child.wait_timeout(Duration::from_millis(100));
                panic!(
                    "`sidekick receive` printed no `listening on http://127.0.0.1:PORT` line \
                     within 10 s (exit status {status:?}); its stderr:\n{}",
                    stderr.lock().unwrap_or_else(PoisonError::into_inner)
                );
            }
        };
        Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            out,
            stderr,
            reader: Mutex::new(LogsReader::default()),
        }
    }

    /// `http://127.0.0.1:PORT`, without `/v1/logs`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn out_dir(&self) -> &Path {
        self.out.path()
    }

    pub fn logs_path(&self) -> PathBuf {
        self.out.path().join("logs.ndjson")
    }

    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The number of log records received so far.
    pub fn count(&self) -> usize {
        let mut r = self.lock_reader();
        r.poll(&self.logs_path());
        r.records.len()
    }

    /// Every log record received so far, in the order the receiver wrote
    /// them.
    pub fn logs(&self) -> Vec<Record> {
        let mut r = self.lock_reader();
        r.poll(&self.logs_path());
        r.records.clone()
    }

    /// Waits until at least `n` records have arrived; returns them.
    pub fn wait_for_logs(&self, n: usize, timeout: Duration) -> Vec<Record> {
        crate::wait_until(
            timeout,
            &format!("{n} log records at the receiver"),
            || self.count() >= n,
            || format!("{} arrived", self.count()),
        );
        self.logs()
    }

    /// Waits until no record has arrived for `quiet` (at most `timeout`), so
    /// that late duplicates are counted too; returns every record.
    pub fn settle(&self, quiet: Duration, timeout: Duration) -> Vec<Record> {
        let deadline = Instant::now() + timeout;
        let mut last = self.count();
        let mut since = Instant::now();
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            let n = self.count();
            if n != last {
                last = n;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                break;
            }
        }
        self.logs()
    }

    /// Every metric point of `metrics.ndjson` so far, one JSON object each
    /// (a last line still being written is left out).
    pub fn metric_points(&self) -> Vec<serde_json::Map<String, serde_json::Value>> {
        let Ok(raw) = std::fs::read(self.out.path().join("metrics.ndjson")) else {
            return Vec::new();
        };
        let end = raw.iter().rposition(|&b| b == b'\n').map_or(0, |e| e + 1);
        raw[..end]
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| match serde_json::from_slice(l) {
                Ok(serde_json::Value::Object(m)) => m,
                other => panic!(
                    "metrics.ndjson line is not a JSON object ({other:?}): {}",
                    String::from_utf8_lossy(l)
                ),
            })
            .collect()
    }

    fn lock_reader(&self) -> std::sync::MutexGuard<'_, LogsReader> {
        self.reader.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the receiver process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_status().is_none()
    }
}

impl LogsReader {
    fn poll(&mut self, path: &Path) {
        let Ok(mut f) = File::open(path) else { return };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_err() {
            return;
        }
        self.offset += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        let complete: Vec<u8> = self.partial.drain(..=end).collect();
        for line in complete.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let rec = self.parser.parse(line).unwrap_or_else(|e| panic!("{e}"));
            self.records.push(rec);
        }
    }
}

fn child_stderr(child: &mut ChildGuard) -> std::process::ChildStderr {
    child.inner_mut().stderr.take().expect("stderr was piped")
}

/// The port of `sidekick receive: listening on http://127.0.0.1:PORT`.
fn parse_listening(line: &str) -> Option<u16> {
    let rest = &line[line.find("listening on http://")? + "listening on http://".len()..];
    let port = rest.rsplit(':').next()?;
    port.trim().trim_end_matches('/').parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_the_listening_line() {
        assert_eq!(
            super::parse_listening("sidekick receive: listening on http://127.0.0.1:40123"),
            Some(40123)
        );
        assert_eq!(super::parse_listening("something else"), None);
    }
}
