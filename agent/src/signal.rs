//! Signals: SIGTERM and SIGINT ask for a graceful stop, a second one to stop
//! at once; SIGHUP asks `run` to read its config again.

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

/// SIGTERM, SIGINT and SIGHUP, hooked: from now on they are recorded for
/// [`watch`] and [`reloads`] instead of killing the process.
pub struct Hooked {
    term: Signal,
    int: Signal,
    hup: Option<Signal>,
}

/// Hooks SIGTERM and SIGINT (on `rt`'s driver); `None` if they cannot be.
pub fn hook(rt: &tokio::runtime::Handle) -> Option<Hooked> {
    let _in = rt.enter();
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => {
            let hup = signal(SignalKind::hangup())
                .inspect_err(
                    |e| tracing::warn!(error = %e, "cannot hook SIGHUP; config reload is off"),
                )
                .ok();
            Some(Hooked { term, int, hup })
        }
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
        let Some(Hooked {
            mut term, mut int, ..
        }) = hooked
        else {
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

/// Each SIGHUP (including one that came after [`hook`] but before this
/// call) as a message on the returned channel; at most one waits unread
/// (several quick SIGHUPs ask for one reload).
pub fn reloads(
    rt: &tokio::runtime::Handle,
    hooked: &mut Option<Hooked>,
) -> crossbeam_channel::Receiver<()> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    if let Some(mut hup) = hooked.as_mut().and_then(|h| h.hup.take()) {
        rt.spawn(async move {
            while hup.recv().await.is_some() {
                if let Err(crossbeam_channel::TrySendError::Disconnected(())) = tx.try_send(()) {
                    return;
                }
            }
        });
    }
    rx
}
