//! `sidekick run` as a child process, with its stderr kept in a file.

use crate::process::{vm_hwm_kib, ChildGuard};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The config file of a test, with the settings the tests vary. Options the
/// tests rely on are always spelled out rather than left to defaults, except
/// where a default is what is tested.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub data_dir: PathBuf,
    pub include: Vec<String>,
    /// `end` or `beginning`.
    pub start_at: &'static str,
    pub scan_interval: &'static str,
    /// OTLP/HTTP endpoint (`http://127.0.0.1:PORT`); none: stdout NDJSON.
    pub endpoint: Option<String>,
    pub compression: &'static str,
    pub max_in_flight: u32,
    pub output_timeout: &'static str,
    pub max_records: u32,
    pub max_bytes: &'static str,
    pub batch_timeout: &'static str,
    pub shutdown_timeout: &'static str,
    pub service_name: String,
    /// More keys of the log source (`format`, `multiline`,
    /// `max_line_bytes`, ...), written as given; see
    /// [`AgentConfig::with_log_options`].
    pub log_options: Vec<(String, String)>,
}

impl AgentConfig {
    /// Tails `include` in `data_dir` and ships to `endpoint`.
    pub fn new(data_dir: &Path, include: &[&Path], endpoint: &str) -> Self {
        Self {
            data_dir: data_dir.to_owned(),
            include: include
                .iter()
                .map(|p| p.to_str().expect("test paths are UTF-8").to_owned())
                .collect(),
            start_at: "end",
            scan_interval: "500ms",
            endpoint: Some(endpoint.to_owned()),
            compression: "gzip",
            max_in_flight: 4,
            output_timeout: "10s",
            max_records: 8192,
            max_bytes: "4MiB",
            batch_timeout: "200ms",
            shutdown_timeout: "10s",
            service_name: "sidekick-e2e".to_owned(),
            log_options: Vec::new(),
        }
    }

    /// This config with `key: value` added to its log source for each pair
    /// (values are YAML as written: `cri`, `1MiB`, `{timeout: 1s}`).
    pub fn with_log_options(mut self, options: &[(&str, &str)]) -> Self {
        self.log_options
            .extend(options.iter().map(|&(k, v)| (k.to_owned(), v.to_owned())));
        self
    }

    pub fn to_yaml(&self) -> String {
        let mut y = String::new();
        let q = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
        let _ = writeln!(
            y,
            "data_dir: {}",
            q(self.data_dir.to_str().expect("UTF-8 path"))
        );
        let _ = writeln!(y, "shutdown_timeout: {}", self.shutdown_timeout);
        let _ = writeln!(y, "resource:\n  service.name: {}", q(&self.service_name));
        let _ = writeln!(y, "telemetry:\n  listen: \"off\"");
        let _ = writeln!(y, "logs:\n  - include:");
        for glob in &self.include {
            let _ = writeln!(y, "      - {}", q(glob));
        }
        let _ = writeln!(y, "    start_at: {}", self.start_at);
        let _ = writeln!(y, "    scan_interval: {}", self.scan_interval);
        for (key, value) in &self.log_options {
            let _ = writeln!(y, "    {key}: {value}");
        }
        let _ = writeln!(
            y,
            "batch:\n  max_records: {}\n  max_bytes: {}\n  timeout: {}",
            self.max_records, self.max_bytes, self.batch_timeout
        );
        if let Some(endpoint) = &self.endpoint {
            let _ = writeln!(
                y,
                "outputs:\n  - type: otlp_http\n    endpoint: {}\n    compression: {}\n    \
                 timeout: {}\n    max_in_flight: {}",
                q(endpoint),
                self.compression,
                self.output_timeout,
                self.max_in_flight
            );
        }
        y
    }
}

/// A running `sidekick run`. Killed with SIGKILL when dropped if still
/// running; a test that panics prints the agent's stderr.
#[derive(Debug)]
pub struct Agent {
    child: ChildGuard,
    stderr_path: PathBuf,
    stdout_path: PathBuf,
    peak_rss_kib: Arc<AtomicU64>,
    sampling: Arc<AtomicBool>,
}

impl Agent {
    /// Writes `config` to `dir/sidekick-N.yaml` and runs
    /// `sidekick run -c dir/sidekick-N.yaml`.
    pub fn start(config: &AgentConfig, dir: &Path) -> Self {
        Self::start_yaml(&config.to_yaml(), dir)
    }

    /// Writes the config `yaml` to `dir/sidekick-N.yaml` and runs
    /// `sidekick run -c dir/sidekick-N.yaml`.
    pub fn start_yaml(yaml: &str, dir: &Path) -> Self {
        let path = next_free(dir, "sidekick", "yaml");
        std::fs::write(&path, yaml).expect("write the config file");
        Self::start_args(&["run", "-c", path.to_str().expect("UTF-8 path")], dir)
    }

    /// Runs `sidekick ARGS...`, stdout and stderr going to files in `dir`.
    pub fn start_args(args: &[&str], dir: &Path) -> Self {
        let stderr_path = next_free(dir, "agent", "stderr");
        let stdout_path = stderr_path.with_extension("stdout");
        let file =
            |p: &Path| std::fs::File::create(p).expect("create an output file for the agent");
        let mut cmd = Command::new(crate::sidekick_bin());
        cmd.args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(file(&stdout_path))
            .stderr(file(&stderr_path))
            .env("RUST_BACKTRACE", "1");
        if std::env::var_os("SIDEKICK_LOG").is_none() {
            cmd.env("SIDEKICK_LOG", "info");
        }
        let child = ChildGuard::new(cmd.spawn().expect("spawn `sidekick run`"));
        let peak_rss_kib = Arc::new(AtomicU64::new(0));
        let sampling = Arc::new(AtomicBool::new(true));
        {
            let (pid, peak, sampling) = (child.pid(), peak_rss_kib.clone(), sampling.clone());
            std::thread::spawn(move || {
                while sampling.load(Ordering::SeqCst) {
                    match vm_hwm_kib(pid) {
                        Some(kib) => {
                            peak.fetch_max(kib, Ordering::SeqCst);
                        }
                        None => break,
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
        Self {
            child,
            stderr_path,
            stdout_path,
            peak_rss_kib,
            sampling,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Everything the agent has logged so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    pub fn stderr_path(&self) -> &Path {
        &self.stderr_path
    }

    /// Waits until a line of stderr satisfies `pred`; returns that line.
    pub fn wait_for_stderr_line(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let mut found = None;
        crate::wait_until(
            timeout,
            what,
            || {
                found = self.stderr().lines().find(|l| pred(l)).map(str::to_owned);
                found.is_some()
            },
            || format!("the agent's stderr:\n{}", self.stderr()),
        );
        found.unwrap_or_default()
    }

    /// Waits (15 s at most) until the agent logs that it tails `path`.
    pub fn wait_tailing(&self, path: &Path) {
        let p = path.to_str().expect("UTF-8 path");
        self.wait_for_stderr_line(&format!("`tailing` {p}"), Duration::from_secs(15), |l| {
            l.contains("tailing") && l.contains(p)
        });
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_status().is_none()
    }

    /// The exit status if the agent has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_status()
    }

    /// Peak resident set size (`VmHWM`) seen so far, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        if let Some(kib) = vm_hwm_kib(self.child.pid()) {
            self.peak_rss_kib.fetch_max(kib, Ordering::SeqCst);
        }
        self.peak_rss_kib.load(Ordering::SeqCst)
    }

    /// Prints the peak RSS seen so far with `what`, and panics unless it is
    /// below `bound_kib`; returns it.
    pub fn assert_peak_rss_below(&self, bound_kib: u64, what: &str) -> u64 {
        let peak = self.peak_rss_kib();
        println!("{what}: sidekick's peak RSS {peak} KiB (bound {bound_kib} KiB)");
        assert!(
            peak > 0 && peak < bound_kib,
            "{what}: sidekick's peak RSS {peak} KiB is not below the bound {bound_kib} KiB"
        );
        peak
    }

    /// SIGKILL, as a crash or the OOM killer would.
    pub fn kill9(&mut self) -> ExitStatus {
        self.peak_rss_kib();
        self.sampling.store(false, Ordering::SeqCst);
        self.child.kill9()
    }

    /// SIGTERM, then waits up to `timeout` for the agent to exit. Panics
    /// (after SIGKILL) if it does not.
    pub fn term(&mut self, timeout: Duration) -> ExitStatus {
        self.peak_rss_kib();
        self.child.signal(libc::SIGTERM);
        match self.child.wait_timeout(timeout) {
            Some(status) => {
                self.sampling.store(false, Ordering::SeqCst);
                status
            }
            None => {
                self.child.kill9();
                panic!(
                    "sidekick did not exit within {timeout:?} of SIGTERM; its stderr:\n{}",
                    tail(&self.stderr(), 60)
                );
            }
        }
    }

    /// Waits up to `timeout` for the agent to exit by itself.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.child.wait_timeout(timeout)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.sampling.store(false, Ordering::SeqCst);
        self.child.kill9();
        if std::thread::panicking() {
            eprintln!(
                "---- stderr of sidekick (pid {}, {}) ----\n{}\n---- end of stderr ----",
                self.child.pid(),
                self.stderr_path.display(),
                tail(&self.stderr(), 80)
            );
        }
    }
}

/// The last `n` lines of `s`.
pub(crate) fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    let skip = lines.len().saturating_sub(n);
    let mut out = String::new();
    if skip > 0 {
        let _ = writeln!(out, "[... {skip} earlier lines ...]");
    }
    out.push_str(&lines[skip..].join("\n"));
    out
}

/// `dir/STEM-N.EXT` for the first N not yet taken.
fn next_free(dir: &Path, stem: &str, ext: &str) -> PathBuf {
    (0..)
        .map(|n| dir.join(format!("{stem}-{n}.{ext}")))
        .find(|p| !p.exists())
        .expect("some name is free")
}
