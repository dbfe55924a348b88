//! A descriptor that becomes readable when the target's memory cgroup may
//! have OOM-killed a process, so the watcher can sleep in `poll` instead of
//! reading the OOM-kill counter on a timer.
//!
//! - cgroup v2: an inotify watch on `memory.events`, which the kernel marks
//!   modified whenever one of its counters (`oom_kill` among them) changes.
//! - cgroup v1: an eventfd registered through `cgroup.event_control` for
//!   `memory.oom_control`, signalled when the cgroup goes out of memory,
//!   which is *before* the kill: the watcher reads the counter again a
//!   little later (see `watch.rs`).
//!
//! Neither works for a root cgroup (v2's root has no `memory.events`; v1's
//! root is never notified), and v1 needs write access to
//! `cgroup.event_control`: where arming fails the watcher keeps its timer.

use crate::metrics::CgroupFiles;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

/// What the descriptor is, so it is drained the right way.
enum Kind {
    Inotify,
    Eventfd,
}

pub(crate) struct OomNotifier {
    fd: OwnedFd,
    kind: Kind,
}

impl OomNotifier {
    /// Arms a notifier on the memory cgroup of `cg`; why not, if it cannot.
    pub fn arm(cg: &CgroupFiles) -> Result<OomNotifier, String> {
        let (dir, v2) = cg.memory_dir().ok_or("no memory cgroup")?;
        if v2 {
            arm_v2(dir)
        } else {
            arm_v1(dir)
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Consumes what made the descriptor readable (it is non-blocking).
    pub fn drain(&self) {
        let mut buf = [0u8; 512];
        match self.kind {
            // An inotify read returns whole events; one buffer drains a few.
            Kind::Inotify => {
                while matches!(rustix::io::read(&self.fd, &mut buf), Ok(n) if n > 0) {}
            }
            // An eventfd read returns (and zeroes) its 8-byte counter.
            Kind::Eventfd => {
                let _ = rustix::io::read(&self.fd, &mut buf[..8]);
            }
        }
    }
}

fn arm_v2(dir: &Path) -> Result<OomNotifier, String> {
    use rustix::fs::inotify;
    let events = dir.join("memory.events");
    let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)
        .map_err(|e| format!("inotify_init: {e}"))?;
    inotify::add_watch(&fd, &events, inotify::WatchFlags::MODIFY)
        .map_err(|e| format!("cannot watch {}: {e}", events.display()))?;
    Ok(OomNotifier {
        fd,
        kind: Kind::Inotify,
    })
}

fn arm_v1(dir: &Path) -> Result<OomNotifier, String> {
    use rustix::event::{eventfd, EventfdFlags};
    use std::io::Write as _;
    use std::os::fd::AsRawFd as _;
    // The hierarchy's root has a memory.oom_control too, but is never
    // notified; its parent (the mount's parent) has none.
    if !dir
        .parent()
        .is_some_and(|p| p.join("memory.oom_control").exists())
    {
        return Err(format!("{} is the hierarchy's root", dir.display()));
    }
    let control = dir.join("memory.oom_control");
    let oom = std::fs::File::open(&control)
        .map_err(|e| format!("cannot open {}: {e}", control.display()))?;
    let fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
        .map_err(|e| format!("eventfd: {e}"))?;
    let register = dir.join("cgroup.event_control");
    // One write (`write!` would send each piece on its own, and the kernel
    // rejects a part); the kernel keeps the registration while the eventfd
    // is open.
    let line = format!("{} {}", fd.as_raw_fd(), oom.as_raw_fd());
    std::fs::OpenOptions::new()
        .write(true)
        .open(&register)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .map_err(|e| format!("cannot register with {}: {e}", register.display()))?;
    Ok(OomNotifier {
        fd,
        kind: Kind::Eventfd,
    })
}
