//! Shutdown signals: SIGTERM and SIGINT ask for a graceful stop; a second one
//! asks to stop at once.

use tokio::signal::unix::{signal, Signal, SignalKind};

/// Resolves on the first SIGTERM or SIGINT (never, if neither can be hooked).
pub async fn terminated() {
    let _ = next().await;
}

/// Waits for the next SIGTERM or SIGINT and returns its number.
pub async fn next() -> Option<i32> {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot hook SIGTERM/SIGINT; stop sidekick with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => Some(libc::SIGTERM),
        _ = int.recv() => Some(libc::SIGINT),
    }
}

/// SIGTERM and SIGINT, hooked: from now on they are recorded for
/// [`watch`] instead of killing the process.
pub struct Hooked {
    term: Signal,
    int: Signal,
}

/// Hooks SIGTERM and SIGINT (on `rt`'s driver); `None` if they cannot be.
pub fn hook(rt: &tokio::runtime::Handle) -> Option<Hooked> {
    let _in = rt.enter();
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => Some(Hooked { term, int }),
        _ => {
            tracing::warn!("cannot hook SIGTERM/SIGINT; stop sidekick with SIGKILL");
            None
        }
    }
}

/// Calls `first` on the first signal (including one that came after
/// [`hook`] but before this call) and `second` on the next one, from a task
/// on `rt`.
pub fn watch(
    rt: &tokio::runtime::Handle,
    hooked: Option<Hooked>,
    first: impl FnOnce(i32) + Send + 'static,
    second: impl FnOnce(i32) + Send + 'static,
) {
    rt.spawn(async move {
        let Some(Hooked { mut term, mut int }) = hooked else {
            return;
        };
        let mut next = async || -> i32 {
            tokio::select! {
                _ = term.recv() => libc::SIGTERM,
                _ = int.recv() => libc::SIGINT,
            }
        };
        first(next().await);
        second(next().await);
    });
}
