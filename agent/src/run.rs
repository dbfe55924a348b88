//! `sidekick run`: the supervisor.
//!
//! It merges flags into the config, builds the pipeline (ledger, queue,
//! batcher, outputs) and the collectors, and owns the shutdown sequence:
//! stop reading → the batcher flushes what is queued → outputs get until
//! `shutdown_timeout` to have it acknowledged → checkpoints are persisted.
//! A second signal persists the checkpoints (which only ever hold
//! acknowledged positions) and exits at once.

use crate::config::{
    CompressionName, Config, LogSource, OutputSection, OutputType, StartAt as CfgStartAt,
};
use crate::tail::{StartAt, TailSpec, TailStats, Tailer, Wake};
use crate::RunArgs;
use anyhow::Context as _;
use sidekick_outputs::{
    Compression, HttpConfig, OutputConfig, OutputKind, Outputs, RetryConfig, TlsConfig,
};
use sidekick_pipeline::{queue, BatchConfig, Batcher, Checkpoints, Ledger};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest wait of the checkpoint writer between two looks at its stop flag.
const PERSIST_EVERY: Duration = Duration::from_secs(1);

/// Runs the agent until a signal; returns the process exit code.
pub fn run(args: RunArgs) -> anyhow::Result<u8> {
    let cfg = load(&args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sidekick-io")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;

    let output_cfgs = output_configs(&cfg)?;
    let store = Checkpoints::open(&cfg.data_dir)
        .with_context(|| format!("data_dir {}", cfg.data_dir.display()))?;
    let ledger = Arc::new(Ledger::new(output_cfgs.len(), Some(store))?);
    let resource = Arc::new(crate::resource::build(&cfg.resource));
    let outputs = Arc::new(Outputs::start(
        output_cfgs,
        resource,
        ledger.clone(),
        rt.handle().clone(),
    )?);

    // Queue: each chunk is at most one 256 KiB read; 16 of them bound what
    // waits between the tailers and the batcher.
    let (tx, rx) = queue::bounded(16);
    let batch_cfg = BatchConfig {
        max_records: cfg.batch.max_records,
        max_bytes: cfg.batch.max_bytes.0 as usize,
        timeout: cfg.batch.timeout,
    };
    let (batcher_done_tx, batcher_done) = crossbeam_channel::bounded::<()>(1);
    let batcher = {
        let ledger = ledger.clone();
        let outputs = outputs.clone();
        std::thread::Builder::new()
            .name("sidekick-batch".into())
            .spawn(move || {
                Batcher::new(batch_cfg, ledger).run(rx, |b| outputs.send(b));
                drop(outputs);
                let _ = batcher_done_tx.send(());
            })?
    };

    let specs: Vec<TailSpec> = cfg.logs.iter().map(tail_spec).collect();
    let tail_stats = Arc::new(TailStats::default());
    let (tailer, tail_wake) = Tailer::new(specs, tx, ledger.clone(), tail_stats)?;
    let tailer = std::thread::Builder::new()
        .name("sidekick-tail".into())
        .spawn(move || tailer.run())?;

    // Signals: the first starts the drain, the second exits at once.
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<i32>(1);
    {
        let ledger = ledger.clone();
        crate::signal::watch(
            rt.handle(),
            move |sig| {
                tracing::info!(signal = sig, "stopping: draining what was read");
                let _ = stop_tx.send(sig);
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

    // Save committed positions as soon as they advance, so that after a
    // crash only unacknowledged batches (and at most one save in progress)
    // are read again.
    let persisting = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let persister = {
        let ledger = ledger.clone();
        let persisting = persisting.clone();
        std::thread::Builder::new()
            .name("sidekick-ckpt".into())
            .spawn(move || {
                while persisting.load(std::sync::atomic::Ordering::Relaxed) {
                    if ledger.wait_changed(PERSIST_EVERY) {
                        persist(&ledger);
                    }
                }
            })?
    };

    // Wait for a stop request.
    let _ = stop_rx.recv();
    let deadline = Instant::now() + cfg.shutdown_timeout;

    let _ = tail_wake.send(Wake::Stop);
    if tailer.join().is_err() {
        tracing::error!("the tailer panicked");
    }
    // The tailer dropped its sender: the batcher flushes and returns.
    let drained = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match batcher_done.recv_timeout(left.min(PERSIST_EVERY)) {
            Ok(()) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break true,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                persist(&ledger);
                if left.is_zero() {
                    break false;
                }
            }
        }
    };
    let mut complete = false;
    if drained {
        let _ = batcher.join();
        match Arc::try_unwrap(outputs) {
            Ok(outputs) => complete = outputs.shutdown(deadline),
            Err(_) => tracing::error!("outputs still shared at shutdown"),
        }
    }
    persisting.store(false, std::sync::atomic::Ordering::Relaxed);
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
    Ok(0)
}

fn persist(ledger: &Ledger) {
    if let Err(e) = ledger.persist() {
        tracing::error!(error = %e, "cannot save checkpoints");
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
    cfg.validate()?;
    Ok(cfg)
}

fn tail_spec(s: &LogSource) -> TailSpec {
    TailSpec {
        include: s.include.clone(),
        exclude: s.exclude.clone(),
        start_at: match s.start_at {
            CfgStartAt::Beginning => StartAt::Beginning,
            CfgStartAt::End => StartAt::End,
        },
        max_line_bytes: s.max_line_bytes.0 as usize,
        scan_interval: s.scan_interval,
        read_budget: s.read_budget.0 as usize,
        fingerprint_bytes: s.fingerprint_bytes.0 as usize,
    }
}

/// The outputs crate's configs for the config's `outputs:` (stdout when
/// none is configured).
fn output_configs(cfg: &Config) -> anyhow::Result<Vec<OutputConfig>> {
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
