//! SIGHUP: the config is read again and what can change while running does.
//!
//! - Log sources added start (their files at `start_at`, or at their
//!   checkpoint); removed ones stop after their files are read to their
//!   current end. A changed source is an added one and a removed one: a file
//!   both include goes on where it was, decoded the new way.
//! - Changed outputs are swapped between two batches: every batch goes to
//!   exactly one set of outputs, the one running when the batcher handed it
//!   over. The old set keeps retrying its batches until they are
//!   acknowledged (or the agent stops), then ends. An output keeps its
//!   counters across the swap when its name (`otlp_http[0]`...) stays.
//! - `shutdown_timeout` applies to the next stop.
//! - Other sections (data_dir, target, metrics, batch, spool, telemetry,
//!   resource, limits) are read at start only: a change is reported as
//!   needing a restart, and the running values stay.
//!
//! A new config that does not load, or whose sources or outputs cannot
//! start, is refused with the reason, and the running one stays whole.

use crate::config::{Config, LogSource};
use crate::run::{load, output_configs, tail_spec};
use crate::tail::Wake;
use crate::telemetry::{OutputView, OutputViews};
use crate::RunArgs;
use sidekick_outputs::{Outputs, Resource};
use sidekick_pipeline::Ledger;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The outputs the batcher hands batches to, swapped by a reload.
pub type CurrentOutputs = Arc<Mutex<Arc<Outputs>>>;

/// The part of the running agent a reload may change.
pub struct Reloader {
    /// The config as running (sections applied at start only stay as they
    /// were loaded first).
    pub running: Config,
    /// The configured log sources and the tailer's id of each.
    pub sources: Vec<(LogSource, u64)>,
    pub next_id: u64,
    pub tail_wake: crossbeam_channel::Sender<Wake>,
    pub outputs: CurrentOutputs,
    /// Replaced outputs with batches still in flight.
    pub retiring: Vec<Arc<Outputs>>,
    pub views: Option<OutputViews>,
    pub resource: Arc<Resource>,
    pub ledger: Arc<Ledger>,
    pub rt: tokio::runtime::Handle,
}

impl Reloader {
    /// Reads the config again and applies it, or refuses it (logged).
    pub fn reload(&mut self, args: &RunArgs) {
        tracing::info!("SIGHUP: reading the config again");
        match self.try_reload(args) {
            Ok(summary) => tracing::info!("config reloaded: {summary}"),
            Err(e) => tracing::error!("config reload refused, the running config stays: {e:#}"),
        }
    }

    fn try_reload(&mut self, args: &RunArgs) -> anyhow::Result<String> {
        let new = load(args)?;
        for warning in new.warnings() {
            tracing::warn!("{warning}");
        }
        // Everything that can fail is done before anything is applied.
        let mut next_id = self.next_id;
        let mut added = Vec::new();
        for s in &new.logs {
            if !self.sources.iter().any(|(old, _)| old == s) {
                added.push((s.clone(), tail_spec(s, next_id)?));
                next_id += 1;
            }
        }
        let removed: Vec<u64> = self
            .sources
            .iter()
            .filter(|(old, _)| !new.logs.contains(old))
            .map(|(_, id)| *id)
            .collect();
        let swapped = if new.outputs != self.running.outputs {
            let configs = output_configs(&new)?;
            let current = self.current();
            let started = Outputs::start_after(
                configs,
                self.resource.clone(),
                self.ledger.clone(),
                self.rt.clone(),
                &current.stats(),
            )?;
            Some(Arc::new(started))
        } else {
            None
        };

        // Apply. Sources are added before others are removed, so that a
        // file both include is handed over, not let go and found again.
        let (n_added, n_removed) = (added.len(), removed.len());
        for (source, spec) in added {
            tracing::info!(include = ?source.include, "log source added");
            self.sources.push((source, spec.id));
            let _ = self.tail_wake.send(Wake::AddSource(spec));
        }
        self.next_id = next_id;
        for (source, id) in self.sources.iter().filter(|(_, id)| removed.contains(id)) {
            tracing::info!(include = ?source.include, "log source removed");
            let _ = self.tail_wake.send(Wake::RemoveSource(*id));
        }
        self.sources.retain(|(_, id)| !removed.contains(id));
        let outputs = match swapped {
            Some(new_outputs) => {
                let old = std::mem::replace(&mut *self.lock(), new_outputs.clone());
                if let Some(views) = &self.views {
                    let budgets = crate::telemetry::budgets(&new.outputs);
                    views.set(
                        new_outputs
                            .stats()
                            .into_iter()
                            .zip(budgets)
                            .map(|(stats, budget)| OutputView { stats, budget })
                            .collect(),
                    );
                }
                self.retiring.push(old);
                self.running.outputs = new.outputs.clone();
                format!(
                    "outputs swapped ({} in flight on the old ones are delivered by them)",
                    self.retiring.iter().map(|o| o.in_flight()).sum::<usize>()
                )
            }
            None => "outputs unchanged".to_string(),
        };
        self.running.logs = new.logs.clone();
        self.running.shutdown_timeout = new.shutdown_timeout;

        let r = &self.running;
        let restart: Vec<&str> = [
            ("data_dir", r.data_dir != new.data_dir),
            ("target", r.target != new.target),
            ("metrics", r.metrics != new.metrics),
            ("batch", r.batch != new.batch),
            ("spool", r.spool != new.spool),
            ("telemetry", r.telemetry != new.telemetry),
            ("resource", r.resource != new.resource),
            ("limits", r.limits != new.limits),
        ]
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect();
        if !restart.is_empty() {
            tracing::warn!(
                "config reload: {} changed; read at start only, the running values stay until a restart",
                restart.join(", ")
            );
        }
        Ok(format!(
            "{n_added} log source(s) added, {n_removed} removed, {outputs}"
        ))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Arc<Outputs>> {
        self.outputs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The outputs batches go to now.
    pub fn current(&self) -> Arc<Outputs> {
        self.lock().clone()
    }

    /// Whether replaced outputs still have batches in flight.
    pub fn retiring(&self) -> bool {
        !self.retiring.is_empty()
    }

    /// Ends the replaced outputs that are done with their batches.
    pub fn retire_idle(&mut self) {
        let mut keep = Vec::new();
        for old in self.retiring.drain(..) {
            if old.in_flight() > 0 {
                keep.push(old);
                continue;
            }
            match Arc::try_unwrap(old) {
                Ok(done) => {
                    done.shutdown(Instant::now());
                    tracing::info!("replaced outputs: every batch they had is acknowledged");
                }
                // The batcher is still handing it its last batch.
                Err(old) => keep.push(old),
            }
        }
        self.retiring = keep;
    }

    /// Every output set still running, the current one first (for the
    /// shutdown, once the batcher is gone).
    pub fn into_outputs(self) -> Vec<Arc<Outputs>> {
        let Reloader {
            outputs, retiring, ..
        } = self;
        let current = match Arc::try_unwrap(outputs) {
            Ok(m) => m.into_inner().unwrap_or_else(|p| p.into_inner()),
            Err(shared) => shared.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        };
        std::iter::once(current).chain(retiring).collect()
    }
}
