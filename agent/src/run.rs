//! `sidekick run`: the supervisor.
//!
//! It merges flags into the config, builds the pipeline (ledger, queue,
//! batcher, outputs) and the collectors, and owns the shutdown sequence:
//! stop reading → the batcher flushes what is queued → outputs get until
//! `shutdown_timeout` to have it acknowledged → checkpoints are persisted.
//! A second signal persists the checkpoints (which only ever hold
//! acknowledged positions) and exits at once.
//!
//! With a target, its exit (or its heartbeat file going stale) also starts
//! the drain, after the tailer read every file to its end; in wrapper mode
//! signals go to the child and sidekick exits with the child's exit code.

use crate::config::{
    CompressionName, Config, LogSource, OutputSection, OutputType, StartAt as CfgStartAt,
    TargetConfig,
};
use crate::formats::MultilineRules;
use crate::metrics::{spawn_sampler, SamplerConfig};
use crate::reload::{CurrentOutputs, Reloader};
use crate::tail::{StartAt, TailSpec, TailStats, Tailer, Wake};
use crate::target::{
    forward_signals, open_for_writing, spawn_watch, CrashContext, ExitInfo, TargetSpec,
    WatchOptions,
};
use crate::RunArgs;
use anyhow::Context as _;
use sidekick_outputs::{
    Compression, HttpConfig, OutputConfig, OutputKind, Outputs, RetryConfig, TlsConfig,
};
use sidekick_pipeline::{queue, BatchConfig, Batcher, Checkpoints, Ledger};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest wait of the checkpoint writer between two looks at its stop flag.
const PERSIST_EVERY: Duration = Duration::from_secs(1);
/// How often an attached target's open files are looked at again.
const FD_RECHECK: Duration = Duration::from_secs(2);

/// Why the supervisor stops.
enum Stop {
    /// SIGTERM or SIGINT (not in wrapper mode: there they go to the child).
    Signal,
    /// The target is gone for good and `exit_with_target` holds.
    TargetExit(ExitInfo),
}

/// Runs the agent until a signal or the target's exit; returns the process
/// exit code (the child's, in wrapper mode).
pub fn run(args: RunArgs) -> anyhow::Result<u8> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sidekick-io")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Hooked first: a SIGTERM during start-up is a graceful stop, not death
    // (and a SIGHUP a reload once running).
    let mut signals = crate::signal::hook(rt.handle());
    let mut reload_rx = crate::signal::reloads(rt.handle(), &mut signals);
    let mut cfg = load(&args)?;
    // The sources a reload compares with (not those found by attaching).
    let configured = cfg.clone();
    for warning in cfg.warnings() {
        tracing::warn!("{warning}");
    }

    // Queue: each chunk is at most one 256 KiB read; QUEUE_CHUNKS (8) of
    // them bound what waits between the collectors and the batcher.
    let (tx, rx) = queue::bounded(crate::config::memory::QUEUE_CHUNKS as usize);
    // Dropping this stops every collector thread at once.
    let (collectors_stop, collectors_stop_rx) = crossbeam_channel::bounded::<()>(0);

    // The target first: its facts go into the resource, its open files may
    // be the log sources.
    let tcfg = cfg.target.clone().unwrap_or_default();
    let crash = Arc::new(CrashContext::new(tcfg.crash_context_lines));
    let (exits_tx, mut exits) = crossbeam_channel::bounded::<ExitInfo>(4);
    // Attached by PID with no log source: tail what the target writes.
    let auto_logs = cfg.logs.is_empty() && tcfg.pid.is_some();
    if let (true, Some(pid)) = (auto_logs, tcfg.pid) {
        let found = match open_for_writing(pid) {
            Ok(found) if found.is_empty() => {
                tracing::warn!(
                    pid,
                    "no log source given and the target has no file open for writing"
                );
                found
            }
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(pid, error = %e, "no log source given and the target's open files cannot be read");
                Vec::new()
            }
        };
        for path in found {
            tracing::info!(pid, path = %path.display(), "tailing a file the target writes");
            cfg.logs.push(LogSource::for_glob(path.to_string_lossy()));
        }
    }
    let output_cfgs = output_configs(&cfg)?;
    let store = Checkpoints::open(&cfg.data_dir)
        .with_context(|| format!("data_dir {}", cfg.data_dir.display()))?;
    let checkpoint_file = store.path().to_path_buf();
    let ledger = Arc::new(Ledger::new(output_cfgs.len(), Some(store))?);
    // Samples and events cannot be read again: they go through the on-disk
    // spool (registered with the ledger before any collector looks at it).
    // Its counters (`SpoolStats`) are for the telemetry server to expose.
    let (records_tx, spool_stats) = crate::spool::start(
        &cfg.data_dir,
        cfg.spool.max_bytes.0,
        ledger.clone(),
        tx.clone(),
    )
    .context("cannot start the spool")?;

    // The tailer starts before the target is launched, so that even a
    // target that exits at once has its last lines in its exit event.
    // Configured sources get ids (from 1) a reload can remove them by;
    // sources found by attaching have 0.
    let mut sources = Vec::new();
    let mut specs = Vec::new();
    for s in &cfg.logs {
        let id = match configured.logs.contains(s) {
            true => sources.len() as u64 + 1,
            false => 0,
        };
        specs.push(tail_spec(s, id)?);
        if id != 0 {
            sources.push((s.clone(), id));
        }
    }
    let tail_stats = Arc::new(TailStats::default());
    let (tailer, tail_wake) = Tailer::new(specs, tx.clone(), ledger.clone(), tail_stats.clone())?;
    {
        let wake = tail_wake.clone();
        crash.set_catch_up(move || {
            let (done, wait) = crossbeam_channel::bounded(1);
            if wake.send(Wake::CatchUp(done)).is_ok() {
                let _ = wait.recv_timeout(Duration::from_secs(1));
            }
        });
    }
    let tailer = tailer.with_crash_context(crash.clone());
    let tailer_thread = std::thread::Builder::new()
        .name("sidekick-tail".into())
        .spawn(move || tailer.run())?;

    let spec = target_spec(&tcfg)?;
    let wrapper = matches!(spec, Some(TargetSpec::Command(_)));
    // Unset: exit with the target, except for process_name, which waits for
    // the next matching process.
    let exit_with_target = tcfg.exit_with_target.unwrap_or(tcfg.process_name.is_none());
    let watch = match spec {
        Some(spec) => Some(spawn_watch(
            spec,
            WatchOptions::default(),
            records_tx.clone(),
            exits_tx.clone(),
            crash.clone(),
            collectors_stop_rx.clone(),
        )?),
        None => None,
    };
    let target_pid = watch
        .as_ref()
        .map(|w| w.pid())
        .unwrap_or_else(|| Arc::new(AtomicU32::new(0)));
    if wrapper {
        forward_signals(rt.handle(), target_pid.clone())
            .context("cannot forward signals to the target")?;
    }
    let mut resource = crate::resource::build(&cfg.resource);
    // The watcher resolves the target on its thread: give it a moment. The
    // resource is fixed for the run, so a target that may restart under a new
    // PID (pid_file, process_name) is named by what survives a restart only.
    if let Some(w) = &watch {
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut info = w.target_info();
        while info.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
            info = w.target_info();
        }
        let restartable = tcfg.pid_file.is_some() || tcfg.process_name.is_some();
        for a in info.map(|i| i.attributes()).unwrap_or_default() {
            let per_pid = matches!(&*a.key, "process.pid" | "process.parent_pid");
            if (restartable && per_pid) || resource.attributes.iter().any(|r| r.key == a.key) {
                continue;
            }
            resource.attributes.push(a);
        }
    }

    let resource = Arc::new(resource);
    let outputs: CurrentOutputs = Arc::new(Mutex::new(Arc::new(Outputs::start(
        output_cfgs,
        resource.clone(),
        ledger.clone(),
        rt.handle().clone(),
    )?)));
    let current = |o: &CurrentOutputs| o.lock().unwrap_or_else(|p| p.into_inner()).clone();

    let batch_cfg = BatchConfig {
        max_records: cfg.batch.max_records,
        max_bytes: cfg.batch.max_bytes.0 as usize,
        timeout: cfg.batch.timeout,
    };
    // Self-telemetry (`telemetry.listen`): reads the live counters; a port
    // that cannot be bound is a warning, never a reason not to ship.
    let mut views = None;
    if let Some(listen) = cfg.telemetry.listen {
        let budgets = crate::telemetry::budgets(&cfg.outputs);
        let list = current(&outputs).stats().into_iter().zip(budgets);
        let list = crate::telemetry::OutputViews::new(
            list.map(|(stats, budget)| crate::telemetry::OutputView { stats, budget })
                .collect(),
        );
        views = Some(list.clone());
        crate::telemetry::start(
            listen,
            crate::telemetry::Telemetry {
                started: std::time::SystemTime::now(),
                tail: tail_stats.clone(),
                outputs: list,
                ledger: ledger.clone(),
                queue: rx.clone(),
                checkpoint_file,
                spool: Some(spool_stats.clone()),
                crash: crash.clone(),
                target_pid: target_pid.clone(),
            },
            rt.handle(),
        );
    }
    let (batcher_done_tx, batcher_done) = crossbeam_channel::bounded::<()>(1);
    let batcher = {
        let ledger = ledger.clone();
        let outputs = outputs.clone();
        std::thread::Builder::new()
            .name("sidekick-batch".into())
            .spawn(move || {
                // Looked up per batch: a reload may have swapped them.
                Batcher::new(batch_cfg, ledger).run(rx, |b| current(&outputs).send(b));
                drop(outputs);
                let _ = batcher_done_tx.send(());
            })?
    };

    let m = &cfg.metrics;
    let sampler = if (watch.is_some() && (m.process || m.cgroup)) || m.host {
        Some(spawn_sampler(
            SamplerConfig {
                interval: m.interval,
                process: m.process,
                include_children: m.include_children,
                cgroup: m.cgroup,
                host: m.host,
            },
            target_pid.clone(),
            records_tx.clone(),
            crash.clone(),
            collectors_stop_rx.clone(),
        )?)
    } else {
        None
    };
    if let Some(hb) = tcfg.heartbeat_file.clone() {
        spawn_heartbeat(
            hb,
            tcfg.heartbeat_timeout,
            exits_tx.clone(),
            collectors_stop_rx.clone(),
        )?;
    }
    if auto_logs {
        let known = cfg.logs.iter().flat_map(|l| l.include.clone()).collect();
        spawn_fd_watch(
            target_pid.clone(),
            known,
            tail_spec(&LogSource::for_glob(""), 0)?,
            tail_wake.clone(),
            collectors_stop_rx.clone(),
        )?;
    }
    drop(exits_tx);
    drop(tx);
    drop(records_tx);
    drop(collectors_stop_rx);

    // Signals: the first starts the drain (in wrapper mode it only goes to
    // the child, whose exit then starts it), the second exits at once.
    let (signal_tx, signal_rx) = crossbeam_channel::bounded::<i32>(1);
    {
        let ledger = ledger.clone();
        crate::signal::watch(
            rt.handle(),
            signals,
            move |sig| {
                if wrapper {
                    tracing::info!(
                        signal = sig,
                        "signal forwarded to the target; draining when it exits"
                    );
                } else {
                    tracing::info!(signal = sig, "stopping: draining what was read");
                    let _ = signal_tx.send(sig);
                }
            },
            move |sig| {
                tracing::warn!(signal = sig, "second signal: exiting now");
                if let Err(e) = ledger.persist() {
                    tracing::error!(error = %e, "cannot save checkpoints");
                }
                std::process::exit(128 + sig);
            },
        );
    }

    // Write each advance of the committed positions at once to
    // `checkpoints.fast`, and all of them to `checkpoints.json` within
    // `SAVE_DELAY` (`Ledger::persist_due`), so that after a crash only
    // unacknowledged batches (and at most one save in progress) are read
    // again.
    let persisting = Arc::new(AtomicBool::new(true));
    let persister = {
        let ledger = ledger.clone();
        let persisting = persisting.clone();
        std::thread::Builder::new()
            .name("sidekick-ckpt".into())
            .spawn(move || {
                while persisting.load(Ordering::Relaxed) {
                    // Woken by an advance, a full save falling due, or
                    // `stop_waiting`; no timer while nothing moves.
                    if ledger.wait_changed(Duration::from_secs(3600))
                        && !reported(ledger.persist_due())
                    {
                        // A full or read-only disk: try again later, not
                        // in a loop (a failed save leaves the ledger dirty).
                        std::thread::sleep(PERSIST_EVERY);
                    }
                }
            })?
    };

    let mut reloader = Reloader {
        running: configured,
        next_id: sources.len() as u64 + 1,
        sources,
        tail_wake: tail_wake.clone(),
        outputs,
        retiring: Vec::new(),
        views,
        resource,
        ledger: ledger.clone(),
        rt: rt.handle().clone(),
    };

    // Wait for a reason to stop; reload on SIGHUP meanwhile.
    let stop = loop {
        let retire_tick = match reloader.retiring() {
            true => crossbeam_channel::after(PERSIST_EVERY),
            false => crossbeam_channel::never(),
        };
        crossbeam_channel::select! {
            recv(reload_rx) -> r => {
                match r {
                    Ok(()) => reloader.reload(&args),
                    // SIGHUP could not be hooked (warned at start).
                    Err(_) => reload_rx = crossbeam_channel::never(),
                }
                continue;
            }
            recv(retire_tick) -> _ => {
                reloader.retire_idle();
                continue;
            }
            recv(signal_rx) -> _ => break Stop::Signal,
            recv(exits) -> e => match e {
                Ok(info) if exit_with_target || wrapper => break Stop::TargetExit(info),
                Ok(info) => tracing::info!(pid = info.pid, "target gone; going on (exit_with_target: false)"),
                // No watcher left (none configured): only a signal ends us.
                Err(_) => exits = crossbeam_channel::never(),
            },
        }
    };
    let deadline = Instant::now() + reloader.running.shutdown_timeout;
    let code = match &stop {
        Stop::Signal => 0,
        Stop::TargetExit(info) => {
            tracing::info!(
                pid = info.pid,
                code = info.code,
                signal = info.signal,
                "target exited: shipping what it wrote, then exiting"
            );
            if wrapper {
                info.exit_code_for_sidekick()
            } else {
                0
            }
        }
    };

    // Stop the collectors: on the target's exit the tailer first reads
    // every file to its end (the target's last words), the sampler takes a
    // last sample.
    let _ = tail_wake.send(match stop {
        Stop::Signal => Wake::Stop,
        Stop::TargetExit(_) => Wake::Drain,
    });
    if tailer_thread.join().is_err() {
        tracing::error!("the tailer panicked");
    }
    drop(collectors_stop);
    if let Some(s) = sampler {
        let _ = s.join();
    }
    if let Some(w) = watch {
        w.join();
    }
    // Every sender is gone now: the batcher flushes and returns.
    let drained = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match batcher_done.recv_timeout(left.min(PERSIST_EVERY)) {
            Ok(()) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break true,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                if left.is_zero() {
                    break false;
                }
            }
        }
    };
    let mut complete = false;
    if drained {
        let _ = batcher.join();
        complete = true;
        for outputs in reloader.into_outputs() {
            match Arc::try_unwrap(outputs) {
                Ok(outputs) => complete &= outputs.shutdown(deadline),
                Err(_) => {
                    tracing::error!("outputs still shared at shutdown");
                    complete = false;
                }
            }
        }
    }
    persisting.store(false, Ordering::Relaxed);
    ledger.stop_waiting();
    let _ = persister.join();
    persist(&ledger);
    if complete {
        tracing::info!("stopped: everything read was acknowledged");
    } else {
        tracing::warn!(
            batches = ledger.in_flight(),
            "shutdown_timeout reached with batches unacknowledged; they will be read again after a restart"
        );
    }
    // Dropping the runtime would wait for blocked requests; leave it.
    rt.shutdown_background();
    Ok(code)
}

/// With `--pid` and no log source: every few seconds, look for files the
/// target has newly opened for writing and tail them from their end.
fn spawn_fd_watch(
    pid: Arc<AtomicU32>,
    mut known: std::collections::HashSet<String>,
    template: TailSpec,
    wake: crossbeam_channel::Sender<Wake>,
    stop: crossbeam_channel::Receiver<()>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("sidekick-fdwatch".into())
        .spawn(move || loop {
            match stop.recv_timeout(FD_RECHECK) {
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                _ => return,
            }
            let p = pid.load(Ordering::Acquire);
            if p == 0 {
                continue;
            }
            for path in open_for_writing(p).unwrap_or_default() {
                let path = path.to_string_lossy().into_owned();
                if known.insert(path.clone()) {
                    tracing::info!(
                        pid = p,
                        path,
                        "the target opened a new file for writing; tailing it"
                    );
                    let spec = TailSpec {
                        include: vec![path],
                        start_at: StartAt::End,
                        ..template.clone()
                    };
                    if wake.send(Wake::AddSource(spec)).is_err() {
                        return;
                    }
                }
            }
        })?;
    Ok(())
}

/// How the config says the target is found.
fn target_spec(t: &TargetConfig) -> anyhow::Result<Option<TargetSpec>> {
    Ok(if let Some(pid) = t.pid {
        Some(TargetSpec::Pid(pid))
    } else if let Some(f) = &t.pid_file {
        Some(TargetSpec::PidFile(f.clone()))
    } else if let Some(re) = &t.process_name {
        let re = regex::Regex::new(re).with_context(|| format!("target.process_name {re:?}"))?;
        Some(TargetSpec::ProcessName(re))
    } else {
        t.command.clone().map(TargetSpec::Command)
    })
}

/// For a container that cannot see the target's process: the target is gone
/// when `path` is missing (after it existed, or `timeout` after start) or
/// has not been touched for `timeout`.
fn spawn_heartbeat(
    path: std::path::PathBuf,
    timeout: Duration,
    exits: crossbeam_channel::Sender<ExitInfo>,
    stop: crossbeam_channel::Receiver<()>,
) -> std::io::Result<()> {
    let started = Instant::now();
    std::thread::Builder::new()
        .name("sidekick-heartbeat".into())
        .spawn(move || {
            let mut seen = false;
            let check = (timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
            loop {
                match stop.recv_timeout(check) {
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                let age = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .map(|t| t.elapsed().unwrap_or_default());
                let gone = match age {
                    Ok(age) => {
                        seen = true;
                        age > timeout
                    }
                    Err(_) => seen || started.elapsed() > timeout,
                };
                if gone {
                    tracing::info!(path = %path.display(), "heartbeat file gone or stale: the target is gone");
                    let _ = exits.send(ExitInfo {
                        pid: 0,
                        code: None,
                        signal: None,
                        oom_killed: false,
                        run_time: started.elapsed(),
                    });
                    return;
                }
            }
        })?;
    Ok(())
}

/// Saves the committed positions; false if that failed. A failure is
/// logged once until a save works again.
fn persist(ledger: &Ledger) -> bool {
    reported(ledger.persist())
}

/// Logs a failed save once until a save works again; false if it failed.
fn reported(save: Result<(), sidekick_pipeline::CheckpointError>) -> bool {
    static FAILING: AtomicBool = AtomicBool::new(false);
    match save {
        Ok(()) => {
            if FAILING.swap(false, Ordering::Relaxed) {
                tracing::info!("checkpoints saved again");
            }
            true
        }
        Err(e) => {
            if !FAILING.swap(true, Ordering::Relaxed) {
                tracing::error!(error = %e, "cannot save checkpoints; trying again every second");
            }
            false
        }
    }
}

/// The config file (or the defaults) with the flags merged in.
pub fn load(args: &RunArgs) -> anyhow::Result<Config> {
    let mut cfg = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    for glob in &args.logs {
        cfg.logs.push(LogSource::for_glob(glob));
    }
    if let Some(endpoint) = &args.endpoint {
        let mut found = false;
        for o in cfg
            .outputs
            .iter_mut()
            .filter(|o| o.kind == OutputType::OtlpHttp)
        {
            o.endpoint = Some(endpoint.clone());
            found = true;
        }
        if !found {
            cfg.outputs.push(OutputSection::otlp_http(endpoint));
        }
    }
    if let Some(d) = &args.data_dir {
        cfg.data_dir = d.clone();
    }
    let flag_target = args.pid.is_some()
        || args.pid_file.is_some()
        || args.process_name.is_some()
        || !args.command.is_empty();
    if flag_target {
        // A target flag replaces the file's way of finding the target.
        let t = cfg.target.get_or_insert_with(TargetConfig::default);
        t.pid = args.pid;
        t.pid_file = args.pid_file.clone();
        t.process_name = args.process_name.clone();
        t.command = (!args.command.is_empty()).then(|| args.command.clone());
    }
    cfg.validate()?;
    Ok(cfg)
}

/// The tailer's spec of a log source; `id` names it for a reload.
pub(crate) fn tail_spec(s: &LogSource, id: u64) -> anyhow::Result<TailSpec> {
    let multiline = s
        .multiline
        .as_ref()
        .map(MultilineRules::from_config)
        .transpose()?;
    Ok(TailSpec {
        id,
        include: s.include.clone(),
        exclude: s.exclude.clone(),
        start_at: match s.start_at {
            CfgStartAt::Beginning => StartAt::Beginning,
            CfgStartAt::End => StartAt::End,
        },
        max_line_bytes: s.max_line_bytes.0 as usize,
        scan_interval: s.scan_interval,
        max_open_files: s.max_open_files,
        read_budget: s.read_budget.0 as usize,
        fingerprint_bytes: s.fingerprint_bytes.0 as usize,
        format: s.format.into(),
        multiline,
    })
}

/// The outputs crate's configs for the config's `outputs:` (stdout when
/// none is configured).
pub(crate) fn output_configs(cfg: &Config) -> anyhow::Result<Vec<OutputConfig>> {
    if cfg.outputs.is_empty() {
        return Ok(vec![OutputConfig {
            name: "stdout".into(),
            kind: OutputKind::Stdout,
        }]);
    }
    let mut out = Vec::new();
    for (i, o) in cfg.outputs.iter().enumerate() {
        let http = || -> anyhow::Result<HttpConfig> {
            let endpoint = o
                .endpoint
                .clone()
                .with_context(|| format!("outputs[{i}].endpoint is required"))?;
            let tls = o.tls.clone().unwrap_or_default();
            Ok(HttpConfig {
                endpoint,
                compression: match o.compression {
                    CompressionName::Gzip => Compression::Gzip,
                    CompressionName::Zstd => Compression::Zstd,
                    CompressionName::None => Compression::None,
                },
                headers: o
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                timeout: o.timeout,
                tls: TlsConfig {
                    ca_file: tls.ca_file,
                    cert_file: tls.cert_file,
                    key_file: tls.key_file,
                },
                max_in_flight: o.max_in_flight.max(1),
                retry: RetryConfig::default(),
            })
        };
        let (name, kind) = match o.kind {
            OutputType::OtlpHttp => ("otlp_http", OutputKind::OtlpHttp(http()?)),
            OutputType::HttpNdjson => ("http_ndjson", OutputKind::HttpNdjson(http()?)),
            OutputType::File => (
                "file",
                OutputKind::File {
                    path: o
                        .path
                        .clone()
                        .with_context(|| format!("outputs[{i}].path is required"))?,
                },
            ),
            OutputType::Stdout => ("stdout", OutputKind::Stdout),
        };
        out.push(OutputConfig {
            name: format!("{name}[{i}]"),
            kind,
        });
    }
    Ok(out)
}
