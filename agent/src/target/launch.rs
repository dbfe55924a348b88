//! Wrapper mode: launching the target as sidekick's child and forwarding
//! signals to it.
//!
//! The child inherits stdin, stdout and stderr untouched and stays in
//! sidekick's process group, so it keeps its terminal and a Ctrl-C typed at
//! the terminal reaches it directly as well as forwarded (an application
//! that treats a second SIGINT as "quit now" may see both; under a service
//! manager or a container runtime, signals go to sidekick alone).

use std::io;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};

/// The signals forwarded to the child in wrapper mode.
pub const FORWARDED: [(SignalKind, rustix::process::Signal); 6] = [
    (SignalKind::terminate(), rustix::process::Signal::TERM),
    (SignalKind::interrupt(), rustix::process::Signal::INT),
    (SignalKind::hangup(), rustix::process::Signal::HUP),
    (SignalKind::quit(), rustix::process::Signal::QUIT),
    (SignalKind::user_defined1(), rustix::process::Signal::USR1),
    (SignalKind::user_defined2(), rustix::process::Signal::USR2),
];

/// Starts `argv` as a child with sidekick's stdin, stdout and stderr.
pub fn launch(argv: &[String]) -> io::Result<Child> {
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    Command::new(prog)
        .args(args)
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
}

/// Forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 received by
/// sidekick to the process whose PID `pid` holds, for as long as the
/// returned task runs (abort it to stop). The watcher sets `pid` to 0 before
/// it reaps the child, so a signal arriving after that is not sent to a
/// process that reused the PID.
///
/// The handlers are installed before this returns, so no signal is lost
/// between launch and forwarding. Installing them replaces the default
/// action (termination) for the whole process: in wrapper mode sidekick
/// must not also drain on its own first SIGTERM; it drains when the child
/// exits. Other tokio listeners of the same signals (`signal::watch`) still
/// see them too: every listener is woken.
pub fn forward_signals(
    rt: &tokio::runtime::Handle,
    pid: Arc<AtomicU32>,
) -> io::Result<tokio::task::JoinHandle<()>> {
    let _in_rt = rt.enter();
    let mut streams = Vec::with_capacity(FORWARDED.len());
    for (kind, sig) in FORWARDED {
        streams.push((signal(kind)?, sig));
    }
    Ok(rt.spawn(async move {
        let mut set = tokio::task::JoinSet::new();
        for (mut stream, sig) in streams {
            let pid = pid.clone();
            set.spawn(async move {
                while stream.recv().await.is_some() {
                    let raw = pid.load(Ordering::Acquire);
                    let Some(p) = rustix::process::Pid::from_raw(raw as i32) else {
                        continue;
                    };
                    match rustix::process::kill_process(p, sig) {
                        Ok(()) => tracing::debug!(pid = raw, signal = sig.as_raw(), "signal forwarded to the target"),
                        Err(e) => tracing::warn!(pid = raw, signal = sig.as_raw(), error = %e, "cannot forward signal"),
                    }
                }
            });
        }
        while set.join_next().await.is_some() {}
    }))
}
