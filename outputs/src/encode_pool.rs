//! The encoder threads of the HTTP outputs.
//!
//! Encoding a batch and compressing it is the agent's main CPU work. It runs
//! here, on a few plain threads shared by every HTTP output, never on the
//! async runtime's workers (which only move bytes and wait for replies), and
//! with several batches in flight the threads encode and compress them in
//! parallel, beside the tailer and the batcher. Unlike `spawn_blocking`,
//! whose pool starts a fresh thread whenever all are busy, the threads are a
//! fixed few, and each keeps its compressor state ([`Compressor`]) and
//! scratch buffer from one batch to the next: nothing batch-sized is
//! allocated per batch but the compressed body.
//!
//! A batch is handed to the pool only once an encoder is free for it
//! ([`EncodePool::reserve`], which the batcher thread waits on): a batch
//! that waited in the pool's queue would hold its records and the read
//! buffers they point into (about 2.6 MiB for a full batch of 217-byte
//! lines) while encoded batches need only their compressed bodies.
//!
//! Invariant: a job's result is delivered exactly once, or its receiver sees
//! the sender dropped (the job panicked, or the pool is gone); a panicking
//! job does not take its thread down. A [`Permit`] is given back when its
//! job ends, however it ends.

use crate::compress::Compressor;
use std::panic::AssertUnwindSafe;
use tokio::sync::oneshot;

/// What an encoder thread keeps between jobs.
#[derive(Debug, Default)]
pub(crate) struct EncoderState {
    /// Codec state, reused by every body the thread compresses.
    pub compressor: Compressor,
    /// Where pieces of a body are encoded before the compressor reads them.
    pub scratch: Vec<u8>,
}

/// A scratch buffer larger than this (an NDJSON batch or a metric batch is
/// encoded whole) is freed after its job rather than kept.
const MAX_KEPT_SCRATCH: usize = 1 << 20;

type Job = Box<dyn FnOnce(&mut EncoderState) + Send>;

/// A handle on the encoder threads; they end when every handle is dropped.
#[derive(Debug, Clone)]
pub(crate) struct EncodePool {
    jobs: crossbeam_channel::Sender<Job>,
    /// One message per job reserved and not yet finished: a bounded
    /// channel with a place per encoder thread, used as a semaphore.
    taken: crossbeam_channel::Sender<()>,
    given_back: crossbeam_channel::Receiver<()>,
}

/// An encoder thread reserved for one job ([`EncodePool::reserve`]); given
/// back when dropped.
#[derive(Debug)]
pub(crate) struct Permit(crossbeam_channel::Receiver<()>);

impl Drop for Permit {
    fn drop(&mut self) {
        let _ = self.0.try_recv();
    }
}

impl EncodePool {
    /// Starts `threads` encoder threads.
    pub(crate) fn start(threads: usize) -> std::io::Result<EncodePool> {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let (taken, given_back) = crossbeam_channel::bounded(threads.max(1));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("sidekick-enc-{i}"))
                .spawn(move || {
                    let mut state = EncoderState::default();
                    for job in rx {
                        if std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut state))).is_err() {
                            // The job's result sender was dropped while
                            // unwinding: its caller sees the failure.
                            state = EncoderState::default();
                        }
                        if state.scratch.capacity() > MAX_KEPT_SCRATCH {
                            state.scratch = Vec::new();
                        }
                    }
                })?;
        }
        Ok(EncodePool {
            jobs: tx,
            taken,
            given_back,
        })
    }

    /// Waits until an encoder thread is free for one more job, and reserves
    /// it. From plain threads only (it blocks).
    pub(crate) fn reserve(&self) -> Permit {
        // Cannot fail: the pool holds the receiving side.
        let _ = self.taken.send(());
        Permit(self.given_back.clone())
    }

    /// How many encoder threads suit `in_flight` batches in flight at once
    /// (summed over the HTTP outputs): no more than there are cores, nor
    /// than batches that can be encoded at once, and at most 4 — a sidecar
    /// should not take a large host's every core.
    pub(crate) fn threads_for(in_flight: usize) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        cores.min(in_flight).clamp(1, 4)
    }

    /// Runs `f` on an encoder thread reserved by `permit`, which is given
    /// back as soon as `f` returns (or panics); `None` if it panicked or the
    /// pool is gone.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        permit: Permit,
        f: impl FnOnce(&mut EncoderState) -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |state| {
            let out = f(state);
            drop(permit);
            let _ = tx.send(out);
        });
        self.jobs.send(job).ok()?;
        rx.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_off_the_runtime_and_survives_a_panic() {
        let pool = EncodePool::start(2).unwrap();
        let name = pool
            .run(pool.reserve(), |_| {
                std::thread::current().name().map(str::to_string)
            })
            .await
            .unwrap();
        assert!(name.unwrap().starts_with("sidekick-enc-"));
        let panicked: Option<()> = pool.run(pool.reserve(), |_| panic!("encoder bug")).await;
        assert!(panicked.is_none());
        // Both threads still work after the panic, and its permit came back
        // (with one lost, the 2-thread pool could reserve only one).
        for i in 0..8 {
            assert_eq!(
                pool.run(pool.reserve(), move |s| {
                    s.scratch.push(1);
                    i * 2
                })
                .await,
                Some(i * 2)
            );
        }
        let (a, b) = (pool.reserve(), pool.reserve());
        assert!(
            pool.taken.try_send(()).is_err(),
            "a third reservation waits"
        );
        drop(a);
        assert!(
            pool.taken.try_send(()).is_ok(),
            "a permit given back frees a place"
        );
        drop(b);
        assert!((1..=4).contains(&EncodePool::threads_for(16)));
        assert_eq!(EncodePool::threads_for(1), 1);
    }
}
