//! Child processes that cannot outlive their test, and the few `/proc` and
//! signal calls the tests need.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A process a test starts (a target, an app, a wrapper), killed with
/// SIGKILL and reaped when dropped, so a failing test leaks nothing.
#[derive(Debug)]
pub struct Proc(ChildGuard);

impl Proc {
    /// Spawns `cmd` with stdin, stdout and stderr on `/dev/null`: never the
    /// test runner's own output, which CI may send to a file (zero-config
    /// attach would tail it).
    pub fn spawn(cmd: &mut Command) -> Self {
        Self::spawn_stderr(cmd, Stdio::null())
    }

    /// As [`Proc::spawn`], with stderr going to the file `path`.
    pub fn spawn_stderr_to(cmd: &mut Command, path: &Path) -> Self {
        let file = std::fs::File::create(path)
            .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        Self::spawn_stderr(cmd, file.into())
    }

    fn spawn_stderr(cmd: &mut Command, stderr: Stdio) -> Self {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Self(ChildGuard::new(child))
    }

    pub fn pid(&self) -> u32 {
        self.0.pid()
    }

    /// The exit status if the process has exited (it is reaped then).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.0.try_status()
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.0.wait_timeout(timeout)
    }

    /// SIGKILL and reap at once (as a parent would in production), like
    /// `kill -9`.
    pub fn kill9(&mut self) -> ExitStatus {
        self.0.kill9()
    }
}

/// The real interpreter behind `python3` (which may be a wrapper script, as
/// pyenv's shims are: a target's PID would run bash first, then exec the
/// interpreter, and sidekick could see either).
pub fn python3() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 runs");
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        assert!(path.is_file(), "python3's sys.executable: {path:?}");
        path
    })
}

/// `python3 -c CODE ARGS...`, with the real interpreter.
pub fn python(code: &str, args: &[&str]) -> Command {
    let mut c = Command::new(python3());
    c.arg("-c").arg(code).args(args);
    c
}

/// A child process killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub(crate) struct ChildGuard {
    child: Child,
    status: Option<ExitStatus>,
}

impl ChildGuard {
    pub(crate) fn new(child: Child) -> Self {
        Self {
            child,
            status: None,
        }
    }

    pub(crate) fn inner_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has exited (it is reaped then).
    pub(crate) fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("waitpid on a child");
        }
        self.status
    }

    /// Waits up to `timeout` for the process to exit.
    pub(crate) fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub(crate) fn signal(&mut self, sig: libc::c_int) {
        if self.try_status().is_none() {
            send_signal(self.pid(), sig);
        }
    }

    /// SIGKILL, then reap.
    pub(crate) fn kill9(&mut self) -> ExitStatus {
        if let Some(s) = self.try_status() {
            return s;
        }
        let _ = self.child.kill();
        let s = self.child.wait().expect("waitpid after SIGKILL");
        self.status = Some(s);
        s
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Sends `sig` to `pid`. Only ever called on a child this process has not
/// reaped yet, so the PID cannot have been reused by another process.
#[allow(unsafe_code)]
fn send_signal(pid: u32, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("a PID fits in pid_t");
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

/// Peak resident set size (`VmHWM`, KiB) of a live process, or `None` once
/// it has exited.
pub(crate) fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
