//! The outputs: fan-out, HTTP transport with retries, file and stdout.
//!
//! [`Outputs::send`] hands each batch to every output. An output holds at most
//! `max_in_flight` batches; a full output makes `send` wait, which is how a
//! slow or unreachable collector slows the batcher and, through the bounded
//! queue, the tailers, instead of growing memory.
//!
//! - HTTP outputs (`otlp_http`, `http_ndjson`) run one tokio task per batch:
//!   encoding and compression happen on the encoder threads
//!   ([`EncodePool`]: a few, shared by every HTTP output, each keeping its
//!   compressor state) so the async workers only move bytes; a batch's
//!   records are released as soon as it is encoded, then each request is retried with jittered exponential
//!   backoff until it succeeds, is refused for good (a 4xx other than
//!   408/429: logged, counted, dropped), or shutdown's deadline passes.
//! - `file` and `stdout` outputs each own one writer thread fed in batch order,
//!   so lines never interleave; a failed write (a full disk) is retried with
//!   backoff from where it stopped.
//!
//! Invariants:
//! - each output acknowledges each batch to the ledger exactly once, after
//!   delivery or after dropping it for good; a batch abandoned at shutdown is
//!   not acknowledged, so it is read again after a restart;
//! - an output's in-flight slot is released only after its acknowledgement,
//!   so "no batch in flight" means "everything acknowledged".

use crate::backoff::Backoff;
use crate::compress::Compression;
use crate::encode_pool::{EncodePool, EncoderState, Permit};
use crate::{ndjson, otlp, redact_url, Resource, Secret};
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE};
use reqwest::{StatusCode, Url};
use sidekick_pipeline::{now_unix_nano, Batch, BatchId, Ledger, LogRecord};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// TLS settings of an HTTP output. By default the server is verified against
/// the built-in web PKI roots and no client certificate is sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// A PEM file of extra CA certificates to trust (beside the built-in
    /// roots).
    pub ca_file: Option<PathBuf>,
    /// A PEM client certificate chain for mutual TLS (needs `key_file`).
    pub cert_file: Option<PathBuf>,
    /// The PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
}

/// Backoff between retries of a failed request or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryConfig {
    /// Upper bound of the first delay (doubling after each failure).
    pub initial: Duration,
    /// Largest delay, also the cap on a server's `Retry-After`.
    pub max: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
        }
    }
}

/// Settings of an HTTP output (`otlp_http` or `http_ndjson`).
#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    /// For `otlp_http`, the base URL (`/v1/logs` and `/v1/metrics` are
    /// appended); for `http_ndjson`, the URL posted to.
    pub endpoint: String,
    /// Body compression.
    pub compression: Compression,
    /// Extra request headers (`authorization`, ...). Values are secrets:
    /// their `Debug` is `<redacted>`, and they are never logged.
    pub headers: Vec<(String, Secret)>,
    /// Time limit of one request, from connecting to the end of the reply.
    pub timeout: Duration,
    /// TLS roots and client identity.
    pub tls: TlsConfig,
    /// Batches in flight at once; more makes [`Outputs::send`] wait.
    pub max_in_flight: usize,
    /// Backoff between retries.
    pub retry: RetryConfig,
}

impl HttpConfig {
    /// Defaults for everything but the endpoint.
    pub fn new(endpoint: impl Into<String>) -> Self {
        HttpConfig {
            endpoint: endpoint.into(),
            compression: Compression::Gzip,
            headers: Vec::new(),
            timeout: Duration::from_secs(10),
            tls: TlsConfig::default(),
            max_in_flight: 4,
            retry: RetryConfig::default(),
        }
    }
}

impl Default for HttpConfig {
    /// A local OpenTelemetry Collector: `http://127.0.0.1:4318`.
    fn default() -> Self {
        HttpConfig::new("http://127.0.0.1:4318")
    }
}

/// What an output is and where it sends.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputKind {
    /// OTLP/HTTP protobuf to `{endpoint}/v1/logs` and `{endpoint}/v1/metrics`.
    OtlpHttp(HttpConfig),
    /// NDJSON posted to the endpoint.
    HttpNdjson(HttpConfig),
    /// NDJSON appended to a file (created if missing; its directory must
    /// exist).
    File {
        /// The file.
        path: PathBuf,
    },
    /// NDJSON on standard output.
    Stdout,
}

/// One configured output.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputConfig {
    /// Its name in logs and statistics (`otlp_http[0]`).
    pub name: String,
    /// What it is.
    pub kind: OutputKind,
}

/// Live counters of one output, for the telemetry endpoint and `status`.
#[derive(Debug, Default)]
pub struct OutputStats {
    /// The output's name.
    pub name: String,
    /// Batches delivered.
    pub batches_sent: AtomicU64,
    /// Records (logs and metric points) delivered.
    pub records_sent: AtomicU64,
    /// Log records (events included) among `records_sent`.
    pub log_records_sent: AtomicU64,
    /// Bytes delivered, as on the wire (after compression).
    pub bytes_sent: AtomicU64,
    /// Batches (or, for `otlp_http`, the logs or metrics part of one) refused
    /// for good and dropped.
    pub batches_dropped: AtomicU64,
    /// Records in the dropped batches.
    pub records_dropped: AtomicU64,
    /// Retries of requests or writes.
    pub retries: AtomicU64,
    /// Batches accepted and not yet acknowledged.
    pub in_flight: AtomicU64,
    /// When a batch was last delivered (0: never).
    pub last_success_unix_nano: AtomicU64,
    /// When the current run of failed attempts began (0: the last attempt
    /// reached the server, or none failed): how `/readyz` tells an output
    /// that is down for longer than its retry budget.
    pub failing_since_unix_nano: AtomicU64,
    /// Why the last failed attempt failed (a status or a connection error).
    pub last_error: Mutex<String>,
}

impl OutputStats {
    /// Zeroed counters for the output `name`.
    pub fn new(name: impl Into<String>) -> Self {
        OutputStats {
            name: name.into(),
            ..OutputStats::default()
        }
    }

    /// An attempt reached the server (accepted, or refused for good).
    fn reached(&self) {
        self.failing_since_unix_nano.store(0, Relaxed);
    }

    /// An attempt failed and will be retried.
    fn failed(&self, why: impl FnOnce() -> String) {
        let _ = self
            .failing_since_unix_nano
            .compare_exchange(0, now_unix_nano(), Relaxed, Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = why();
    }
}

/// Why the outputs could not start. Every message names the output.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// No output was configured.
    #[error("no output configured")]
    NoOutputs,
    /// The endpoint is not an http(s) URL.
    #[error("output {output}: bad endpoint {url:?}: {reason}")]
    BadEndpoint {
        /// The output.
        output: String,
        /// The endpoint as configured.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A header name or value cannot be sent.
    #[error("output {output}: bad header {header:?}: {reason}")]
    BadHeader {
        /// The output.
        output: String,
        /// The header's name (its value is a secret, never shown).
        header: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A TLS file cannot be read.
    #[error("output {output}: cannot read TLS file {}: {error}", path.display())]
    TlsFile {
        /// The output.
        output: String,
        /// The file.
        path: PathBuf,
        /// Why (in the message, not a `source`: a chain would repeat it).
        error: io::Error,
    },
    /// A TLS file was read but holds no usable certificate or key, or the
    /// settings are incomplete.
    #[error("output {output}: bad TLS setting {}: {reason}", path.display())]
    BadTls {
        /// The output.
        output: String,
        /// The file (or setting) at fault.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("output {output}: cannot build HTTP client: {reason}")]
    Client {
        /// The output.
        output: String,
        /// Why.
        reason: String,
    },
    /// The output file cannot be opened for appending.
    #[error("output {output}: cannot open {}: {source}", path.display())]
    OpenFile {
        /// The output.
        output: String,
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The writer thread of a file or stdout output could not be started.
    #[error("output {output}: cannot start writer thread: {source}")]
    Thread {
        /// The output.
        output: String,
        /// Why.
        source: io::Error,
    },
}

/// Every configured output, running.
#[derive(Debug)]
pub struct Outputs {
    outputs: Vec<Output>,
    ledger: Arc<Ledger>,
    rt: tokio::runtime::Handle,
    abandon: Abandon,
}

impl Outputs {
    /// Starts every output. `ledger` was created with `configs.len()` outputs.
    /// Async work runs on `rt`.
    pub fn start(
        configs: Vec<OutputConfig>,
        resource: Arc<Resource>,
        ledger: Arc<Ledger>,
        rt: tokio::runtime::Handle,
    ) -> Result<Outputs, OutputError> {
        Outputs::start_after(configs, resource, ledger, rt, &[])
    }

    /// Starts every output, as a reload's replacement for running outputs:
    /// an output named as one of `previous` keeps counting into its
    /// counters (so `/metrics` goes on, not back to 0).
    pub fn start_after(
        configs: Vec<OutputConfig>,
        resource: Arc<Resource>,
        ledger: Arc<Ledger>,
        rt: tokio::runtime::Handle,
        previous: &[Arc<OutputStats>],
    ) -> Result<Outputs, OutputError> {
        if configs.is_empty() {
            return Err(OutputError::NoOutputs);
        }
        let (abandon, signal) = Abandon::new();
        let mut outputs = Vec::with_capacity(configs.len());
        let http_in_flight: usize = configs
            .iter()
            .map(|c| match &c.kind {
                OutputKind::OtlpHttp(h) | OutputKind::HttpNdjson(h) => h.max_in_flight.max(1),
                _ => 0,
            })
            .sum();
        let mut pool = None;
        for cfg in configs {
            let stats = previous
                .iter()
                .find(|p| p.name == cfg.name)
                .cloned()
                .unwrap_or_else(|| Arc::new(OutputStats::new(cfg.name.clone())));
            let ctx = Ctx {
                name: cfg.name.clone(),
                stats: stats.clone(),
                ledger: ledger.clone(),
                resource: resource.clone(),
                signal: signal.clone(),
            };
            let (route, max_in_flight) = match cfg.kind {
                OutputKind::OtlpHttp(http) => {
                    let n = http.max_in_flight;
                    let pool = shared_pool(&mut pool, http_in_flight, &cfg.name)?;
                    let h = HttpOutput::new(ctx, http, true, pool)?;
                    (Route::Http(Arc::new(h)), n)
                }
                OutputKind::HttpNdjson(http) => {
                    let n = http.max_in_flight;
                    let pool = shared_pool(&mut pool, http_in_flight, &cfg.name)?;
                    let h = HttpOutput::new(ctx, http, false, pool)?;
                    (Route::Http(Arc::new(h)), n)
                }
                OutputKind::File { path } => {
                    let file = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)
                        .map_err(|source| OutputError::OpenFile {
                            output: cfg.name.clone(),
                            path: path.clone(),
                            source,
                        })?;
                    (Route::Writer(spawn_writer(ctx, Sink::File(file, path))?), 4)
                }
                OutputKind::Stdout => (Route::Writer(spawn_writer(ctx, Sink::Stdout)?), 4),
            };
            outputs.push(Output {
                slots: Arc::new(Slots::new(max_in_flight, stats.clone())),
                stats,
                route,
            });
        }
        Ok(Outputs {
            outputs,
            ledger,
            rt,
            abandon,
        })
    }

    /// How many outputs there are.
    pub fn len(&self) -> usize {
        self.outputs.len()
    }

    /// Whether there is no output (never, once started).
    pub fn is_empty(&self) -> bool {
        self.outputs.is_empty()
    }

    /// The counters of each output, in configuration order.
    pub fn stats(&self) -> Vec<Arc<OutputStats>> {
        self.outputs.iter().map(|o| o.stats.clone()).collect()
    }

    /// Hands a batch to every output; called from the (non-async) batcher
    /// thread, never from inside the runtime. Blocks while an output has
    /// `max_in_flight` batches in flight: that is the backpressure.
    pub fn send(&self, batch: Arc<Batch>) {
        // The batch is complete when these outputs are done with it (a
        // reload may have changed how many there are since it was made).
        self.ledger.expect(batch.id, self.outputs.len());
        if batch.is_empty() {
            // It only carries checkpoint positions: nothing to send.
            for _ in &self.outputs {
                self.ledger.ack(batch.id);
            }
            return;
        }
        for o in &self.outputs {
            let slot = o.slots.acquire();
            match &o.route {
                Route::Http(h) => {
                    // Handed on only once an encoder is free for it.
                    let permit = h.pool.reserve();
                    self.rt
                        .spawn(h.clone().deliver(batch.clone(), slot, permit));
                }
                Route::Writer(tx) => {
                    if tx
                        .send(Job {
                            batch: batch.clone(),
                            slot,
                        })
                        .is_err()
                    {
                        // Only if the writer thread panicked. The batch stays
                        // unacknowledged: it is read again after a restart.
                        tracing::error!(output = %o.stats.name, batch = batch.id,
                            "writer thread is gone; batch not written");
                    }
                }
            }
        }
    }

    /// Batches handed to these outputs and not yet acknowledged by them.
    pub fn in_flight(&self) -> usize {
        self.outputs.iter().map(|o| *o.slots.lock()).sum()
    }

    /// Stops taking batches, waits for in-flight ones (retries go on) until
    /// `deadline`, then abandons what is left (unacknowledged: it will be
    /// re-read after restart). Returns whether everything was acknowledged.
    pub fn shutdown(self, deadline: Instant) -> bool {
        let Outputs {
            outputs, abandon, ..
        } = self;
        abandon.hurry();
        // Closing a writer's queue ends its thread after its last batch.
        let slots: Vec<(String, Arc<Slots>)> = outputs
            .into_iter()
            .map(|o| (o.stats.name.clone(), o.slots))
            .collect();
        let mut all = true;
        for (name, s) in &slots {
            let left = s.wait_empty(deadline);
            if left > 0 {
                tracing::warn!(output = %name, batches = left,
                    "shutdown deadline passed; abandoning unacknowledged batches");
                all = false;
            }
        }
        abandon.fire();
        all
    }
}

/// The encoder threads every HTTP output shares, started with the first.
fn shared_pool(
    pool: &mut Option<EncodePool>,
    in_flight: usize,
    output: &str,
) -> Result<EncodePool, OutputError> {
    if let Some(p) = pool {
        return Ok(p.clone());
    }
    let p = EncodePool::start(EncodePool::threads_for(in_flight)).map_err(|source| {
        OutputError::Thread {
            output: output.to_string(),
            source,
        }
    })?;
    Ok(pool.insert(p).clone())
}

// ---------------------------------------------------------------------------
// Shared pieces.

#[derive(Debug)]
struct Output {
    stats: Arc<OutputStats>,
    slots: Arc<Slots>,
    route: Route,
}

#[derive(Debug)]
enum Route {
    Http(Arc<HttpOutput>),
    Writer(crossbeam_channel::Sender<Job>),
}

/// What every output's workers share.
#[derive(Debug)]
struct Ctx {
    name: String,
    stats: Arc<OutputStats>,
    ledger: Arc<Ledger>,
    resource: Arc<Resource>,
    signal: AbandonSignal,
}

impl Ctx {
    fn delivered(&self, records: usize, logs: usize) {
        self.stats.batches_sent.fetch_add(1, Relaxed);
        self.stats.records_sent.fetch_add(records as u64, Relaxed);
        self.stats.log_records_sent.fetch_add(logs as u64, Relaxed);
        self.stats
            .last_success_unix_nano
            .store(now_unix_nano(), Relaxed);
    }

    fn dropped(&self, records: usize) {
        self.stats.batches_dropped.fetch_add(1, Relaxed);
        self.stats
            .records_dropped
            .fetch_add(records as u64, Relaxed);
    }
}

/// The bounded in-flight count of one output, waited on from plain threads
/// (`send`, `shutdown`).
#[derive(Debug)]
struct Slots {
    max: usize,
    used: Mutex<usize>,
    changed: Condvar,
    stats: Arc<OutputStats>,
}

impl Slots {
    fn new(max: usize, stats: Arc<OutputStats>) -> Self {
        Slots {
            max: max.max(1),
            used: Mutex::new(0),
            changed: Condvar::new(),
            stats,
        }
    }

    fn lock(&self) -> MutexGuard<'_, usize> {
        // The count is updated in single steps: a poisoned lock is consistent.
        self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a free slot and takes it.
    fn acquire(self: &Arc<Self>) -> Slot {
        let mut used = self.lock();
        while *used >= self.max {
            used = self.changed.wait(used).unwrap_or_else(|p| p.into_inner());
        }
        *used += 1;
        self.stats.in_flight.fetch_add(1, Relaxed);
        Slot(self.clone(), false)
    }

    /// Waits until no slot is taken or `deadline` passes; returns how many
    /// are still taken.
    fn wait_empty(&self, deadline: Instant) -> usize {
        let mut used = self.lock();
        while *used > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            used = self
                .changed
                .wait_timeout(used, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        *used
    }
}

/// One taken in-flight slot, given back when dropped (also on panic or when
/// the runtime drops the task).
#[derive(Debug)]
struct Slot(Arc<Slots>, bool);

impl Slot {
    /// Takes the batch off the `in_flight` gauge just before it is
    /// acknowledged, so that a reader who sees the ledger idle also sees the
    /// gauge at 0; the slot itself is still released only after the ack.
    fn settle(&mut self) {
        if !std::mem::replace(&mut self.1, true) {
            self.0.stats.in_flight.fetch_sub(1, Relaxed);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.settle();
        let mut used = self.0.lock();
        *used = used.saturating_sub(1);
        drop(used);
        self.0.changed.notify_all();
    }
}

/// Longest wait between two attempts once the shutdown has begun: the
/// retries go on until the deadline, so a server that came back during a
/// long backoff is tried again before the batch would be abandoned.
const SHUTDOWN_RETRY_MAX: Duration = Duration::from_secs(1);

/// Fired at shutdown's deadline (or when `Outputs` is dropped): workers stop
/// retrying and leave their batches unacknowledged. `hurry` is sent when the
/// shutdown begins: waiting retries are made at once, later ones within
/// [`SHUTDOWN_RETRY_MAX`].
#[derive(Debug)]
struct Abandon {
    watch: watch::Sender<bool>,
    hurry: watch::Sender<bool>,
    // Never sent on: dropping it wakes the writer threads' waits.
    _sync: crossbeam_channel::Sender<()>,
}

#[derive(Debug, Clone)]
struct AbandonSignal {
    watch: watch::Receiver<bool>,
    hurry: watch::Receiver<bool>,
    sync: crossbeam_channel::Receiver<()>,
}

impl Abandon {
    fn new() -> (Abandon, AbandonSignal) {
        let (wtx, wrx) = watch::channel(false);
        let (htx, hrx) = watch::channel(false);
        let (stx, srx) = crossbeam_channel::bounded(0);
        (
            Abandon {
                watch: wtx,
                hurry: htx,
                _sync: stx,
            },
            AbandonSignal {
                watch: wrx,
                hurry: hrx,
                sync: srx,
            },
        )
    }

    fn hurry(&self) {
        self.hurry.send_replace(true);
    }

    fn fire(self) {
        self.watch.send_replace(true);
        // Dropping `self` disconnects the sync channel.
    }
}

impl AbandonSignal {
    /// Resolves once abandoned.
    async fn abandoned(&self) {
        let mut rx = self.watch.clone();
        // An error means the sender is gone: `Outputs` was dropped.
        let _ = rx.wait_for(|a| *a).await;
    }

    /// Waits `d` between two attempts (at most [`SHUTDOWN_RETRY_MAX`] once
    /// the shutdown has begun, and no longer when it begins meanwhile);
    /// returns false if abandoned meanwhile.
    async fn backoff(&self, d: Duration) -> bool {
        let mut hurry = self.hurry.clone();
        let d = match *hurry.borrow() {
            true => d.min(SHUTDOWN_RETRY_MAX),
            false => d,
        };
        let hurried = async {
            // The sender lives as long as `watch`'s: an error comes with
            // `abandoned` anyway.
            if hurry.wait_for(|h| *h).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            biased;
            _ = self.abandoned() => false,
            _ = tokio::time::sleep(d) => true,
            _ = hurried, if d > SHUTDOWN_RETRY_MAX => true,
        }
    }

    /// Sleeps for `d` in a plain thread; returns false if abandoned meanwhile.
    fn sleep(&self, d: Duration) -> bool {
        matches!(
            self.sync.recv_timeout(d),
            Err(crossbeam_channel::RecvTimeoutError::Timeout)
        )
    }

    fn is_abandoned(&self) -> bool {
        *self.watch.borrow() || self.watch.has_changed().is_err()
    }
}

/// An error with its causes, as one line (reqwest hides the useful part,
/// such as "connection refused", in the source chain).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let msg = c.to_string();
        if !s.contains(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        cur = c.source();
    }
    s
}

// ---------------------------------------------------------------------------
// HTTP outputs.

#[derive(Debug)]
struct HttpOutput {
    ctx: Ctx,
    client: reqwest::Client,
    /// `otlp_http`: logs and metrics URLs; `http_ndjson`: one URL for both.
    otlp: bool,
    logs_url: Url,
    metrics_url: Url,
    headers: HeaderMap,
    /// Whether a client certificate is configured (for error hints).
    client_cert: bool,
    compression: Compression,
    retry: RetryConfig,
    /// Where batches are encoded and compressed.
    pool: EncodePool,
}

/// Largest encode buffer kept for reuse; a bigger one is freed after use.
const MAX_POOLED_BUFFER: usize = 16 << 20;

/// How much of a request is encoded before the compressor reads it: small
/// enough to stay in a core's cache, large enough that the compressor's call
/// overhead does not count (zstd compresses 128 KiB blocks).
const ENCODE_PIECE: usize = 128 << 10;

/// One request body of a batch.
#[derive(Debug)]
struct Part {
    url: Url,
    body: Bytes,
    records: usize,
}

enum Outcome {
    Sent,
    Dropped,
    Abandoned,
}

impl HttpOutput {
    fn new(ctx: Ctx, cfg: HttpConfig, otlp: bool, pool: EncodePool) -> Result<Self, OutputError> {
        let name = ctx.name.clone();
        let bad_url = |reason: String| OutputError::BadEndpoint {
            output: name.clone(),
            // Credentials in the URL (`user:pass@`, `?api_key=`) stay out.
            url: redact_url(&cfg.endpoint),
            reason,
        };
        let parse = |s: &str| -> Result<Url, OutputError> {
            let url = Url::parse(s).map_err(|e| bad_url(e.to_string()))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(bad_url(format!(
                    "scheme {:?} is not http or https",
                    url.scheme()
                )));
            }
            if url.host_str().is_none_or(str::is_empty) {
                return Err(bad_url("no host".into()));
            }
            Ok(url)
        };
        let (logs_url, metrics_url) = if otlp {
            let base = cfg.endpoint.trim_end_matches('/');
            (
                parse(&format!("{base}/v1/logs"))?,
                parse(&format!("{base}/v1/metrics"))?,
            )
        } else {
            let url = parse(&cfg.endpoint)?;
            (url.clone(), url)
        };

        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(if otlp {
                "application/x-protobuf"
            } else {
                "application/x-ndjson"
            }),
        );
        if let Some(enc) = cfg.compression.content_encoding() {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static(enc));
        }
        for (k, v) in &cfg.headers {
            let bad = |reason: String| OutputError::BadHeader {
                output: name.clone(),
                header: k.clone(),
                reason,
            };
            let key = HeaderName::from_bytes(k.as_bytes()).map_err(|e| bad(e.to_string()))?;
            let mut value = HeaderValue::from_str(v.expose())
                .map_err(|_| bad("value holds characters not allowed in a header".into()))?;
            value.set_sensitive(true);
            headers.insert(key, value);
        }

        let client = build_client(&name, &cfg)?;
        Ok(HttpOutput {
            ctx,
            client,
            otlp,
            logs_url,
            metrics_url,
            headers,
            client_cert: cfg.tls.cert_file.is_some(),
            compression: cfg.compression,
            retry: cfg.retry,
            pool,
        })
    }

    /// Delivers one batch and acknowledges it; releases `slot` when done.
    async fn deliver(self: Arc<Self>, batch: Arc<Batch>, mut slot: Slot, permit: Permit) {
        let (id, records, logs_in_batch) = (batch.id, batch.len(), batch.logs.len());
        let this = self.clone();
        // The batch moves to the encoder: once encoded, its records (and the
        // read buffers they point into) are released, while the request and
        // its retries need only the compressed bodies.
        let parts = match self
            .pool
            .run(permit, move |st| this.encode(&batch, st))
            .await
        {
            Some(Ok(parts)) => parts,
            Some(Err(e)) => return self.fail_encode(id, records, &e.to_string()),
            None => return self.fail_encode(id, records, "the encoder panicked"),
        };
        let outcomes = match parts.as_slice() {
            [one] => vec![self.post(one).await],
            [logs, metrics] => {
                let (a, b) = tokio::join!(self.post(logs), self.post(metrics));
                vec![a, b]
            }
            _ => Vec::new(),
        };
        if outcomes.iter().any(|o| matches!(o, Outcome::Abandoned)) {
            // Left unacknowledged on purpose: read again after a restart.
            drop(slot);
            return;
        }
        let mut dropped = false;
        for (part, outcome) in parts.iter().zip(&outcomes) {
            match outcome {
                Outcome::Sent => {
                    let st = &self.ctx.stats;
                    st.records_sent.fetch_add(part.records as u64, Relaxed);
                    if part.url == self.logs_url {
                        let logs = if self.otlp {
                            part.records
                        } else {
                            logs_in_batch
                        };
                        st.log_records_sent.fetch_add(logs as u64, Relaxed);
                    }
                    st.bytes_sent.fetch_add(part.body.len() as u64, Relaxed);
                }
                _ => {
                    self.ctx
                        .stats
                        .records_dropped
                        .fetch_add(part.records as u64, Relaxed);
                    dropped = true;
                }
            }
        }
        let st = &self.ctx.stats;
        if dropped {
            st.batches_dropped.fetch_add(1, Relaxed);
        } else {
            st.batches_sent.fetch_add(1, Relaxed);
            st.last_success_unix_nano.store(now_unix_nano(), Relaxed);
        }
        slot.settle();
        self.ctx.ledger.ack(id);
        drop(slot);
    }

    /// An encoding failure cannot get better by retrying: the batch is
    /// dropped and acknowledged like a refused one.
    fn fail_encode(&self, id: BatchId, records: usize, error: &str) {
        tracing::error!(output = %self.ctx.name, batch = id, %error,
            "cannot encode batch; dropping it");
        self.ctx.dropped(records);
        self.ctx.ledger.ack(id);
    }

    /// Encodes and compresses a batch into its request bodies. CPU work: runs
    /// on an encoder thread.
    fn encode(&self, batch: &Batch, st: &mut EncoderState) -> io::Result<Vec<Part>> {
        let mut parts = Vec::with_capacity(2);
        let resource = &self.ctx.resource;
        if !self.otlp {
            let body = self.encode_whole(st, |buf| ndjson::encode(batch, resource, buf))?;
            parts.push(Part {
                url: self.logs_url.clone(),
                body,
                records: batch.len(),
            });
            return Ok(parts);
        }
        if !batch.logs.is_empty() {
            let body = self.encode_logs(&batch.logs, st)?;
            parts.push(Part {
                url: self.logs_url.clone(),
                body,
                records: batch.logs.len(),
            });
        }
        if !batch.metrics.is_empty() {
            let body = self.encode_whole(st, |buf| {
                otlp::encode_metrics(&batch.metrics, resource, buf)
            })?;
            parts.push(Part {
                url: self.metrics_url.clone(),
                body,
                records: batch.metrics.len(),
            });
        }
        Ok(parts)
    }

    /// Log records, the bulk of the data: encoded in cache-sized pieces
    /// that the compressor reads as they are written, so no buffer of the
    /// whole uncompressed request exists.
    fn encode_logs(&self, logs: &[LogRecord], st: &mut EncoderState) -> io::Result<Bytes> {
        let resource = &self.ctx.resource;
        // zstd would take about 6 % less CPU on the whole request in one
        // pass (`Compression::compress_whole`), but holding each encoder's
        // whole request raised peak RSS by 10-16 MiB in the benchmark.
        let plan = otlp::plan_logs(logs, resource);
        let size = plan.total();
        if self.compression == Compression::None {
            let mut body = Vec::with_capacity(size);
            otlp::encode_logs_planned(logs, resource, &plan, &mut body);
            return Ok(Bytes::from(body));
        }
        let EncoderState {
            compressor,
            scratch,
        } = st;
        // Level 1 takes an encoded batch of log text to about a quarter
        // (gzip) or a seventh (zstd); the body grows if not. Pages of the
        // capacity never written are never touched.
        let mut body = Vec::with_capacity(size / 3 + 4096);
        self.compression
            .compress_pieces(compressor, Some(size as u64), &mut body, |sink| {
                otlp::encode_logs_pieces(logs, resource, &plan, scratch, ENCODE_PIECE, sink)
            })?;
        Ok(Bytes::from(body))
    }

    /// A body encoded whole into the thread's scratch buffer, then
    /// compressed (NDJSON, metrics).
    fn encode_whole(
        &self,
        st: &mut EncoderState,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> io::Result<Bytes> {
        let EncoderState {
            compressor,
            scratch,
        } = st;
        scratch.clear();
        encode(scratch);
        if self.compression == Compression::None {
            return Ok(Bytes::copy_from_slice(scratch));
        }
        let mut body = Vec::new();
        self.compression
            .compress_whole(compressor, scratch, &mut body)?;
        // zstd reserved its worst case (the input's size): keep only what a
        // request waiting for its reply needs.
        body.shrink_to_fit();
        Ok(Bytes::from(body))
    }

    /// Posts one body until it is accepted, refused for good, or abandoned.
    async fn post(&self, part: &Part) -> Outcome {
        let mut backoff = Backoff::new(self.retry.initial, self.retry.max);
        loop {
            let request = self
                .client
                .post(part.url.clone())
                .headers(self.headers.clone())
                .body(part.body.clone())
                .send();
            let result = tokio::select! {
                biased;
                _ = self.ctx.signal.abandoned() => return Outcome::Abandoned,
                r = request => r,
            };
            let attempt = backoff.attempt() + 1;
            let delay = match result {
                Ok(resp) if resp.status().is_success() => {
                    self.ctx.stats.reached();
                    drain(resp).await;
                    return Outcome::Sent;
                }
                Ok(resp) if retryable(resp.status()) => {
                    let status = resp.status();
                    self.ctx.stats.failed(|| format!("HTTP {status}"));
                    let delay = match retry_after(resp.headers()) {
                        Some(asked) => backoff.next_delay_after(asked),
                        None => backoff.next_delay(),
                    };
                    drain(resp).await;
                    tracing::warn!(output = %self.ctx.name, url = %redact_url(part.url.as_str()),
                        status = status.as_u16(), attempt, delay_ms = delay.as_millis() as u64,
                        "request failed; retrying");
                    delay
                }
                Ok(resp) => {
                    let status = resp.status();
                    self.ctx.stats.reached();
                    let body = reply_prefix(resp, 200).await;
                    tracing::error!(output = %self.ctx.name, url = %redact_url(part.url.as_str()),
                        status = status.as_u16(), %body, records = part.records,
                        "request refused; dropping the batch");
                    return Outcome::Dropped;
                }
                Err(e) => {
                    // reqwest's message names the URL, which may carry
                    // credentials; the log line has it, redacted.
                    let e = e.without_url();
                    let error = format!(
                        "{}{}",
                        error_chain(&e),
                        tls_hint(&error_chain(&e), self.client_cert)
                    );
                    let delay = backoff.next_delay();
                    self.ctx.stats.failed(|| error.clone());
                    tracing::warn!(output = %self.ctx.name, url = %redact_url(part.url.as_str()),
                        %error, attempt, delay_ms = delay.as_millis() as u64,
                        "request failed; retrying");
                    delay
                }
            };
            self.ctx.stats.retries.fetch_add(1, Relaxed);
            if !self.ctx.signal.backoff(delay).await {
                return Outcome::Abandoned;
            }
        }
    }
}

fn build_client(name: &str, cfg: &HttpConfig) -> Result<reqwest::Client, OutputError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|error| OutputError::TlsFile {
            output: name.to_string(),
            path: path.to_path_buf(),
            error,
        })
    };
    let bad_tls = |path: &Path, reason: String| OutputError::BadTls {
        output: name.to_string(),
        path: path.to_path_buf(),
        reason,
    };
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(cfg.timeout)
        // A redirected POST may turn into a GET whose 200 would pass for a
        // delivery; a collector has no business redirecting anyway.
        .redirect(reqwest::redirect::Policy::none());
    if let Some(ca) = &cfg.tls.ca_file {
        let certs = reqwest::Certificate::from_pem_bundle(&read(ca)?)
            .map_err(|e| bad_tls(ca, error_chain(&e)))?;
        if certs.is_empty() {
            return Err(bad_tls(ca, "no PEM certificate in it".into()));
        }
        for c in certs {
            builder = builder.add_root_certificate(c);
        }
    }
    let mut identity = None;
    match (&cfg.tls.cert_file, &cfg.tls.key_file) {
        (Some(cert), Some(key)) => {
            let mut pem = read(cert)?;
            pem.push(b'\n');
            pem.extend_from_slice(&read(key)?);
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
                bad_tls(
                    cert,
                    format!("with key {}: {}", key.display(), error_chain(&e)),
                )
            })?;
            builder = builder.identity(id);
            identity = Some((cert, key));
        }
        (Some(cert), None) => return Err(bad_tls(cert, "cert_file needs key_file".into())),
        (None, Some(key)) => return Err(bad_tls(key, "key_file needs cert_file".into())),
        (None, None) => {}
    }
    builder.build().map_err(|e| match identity {
        // rustls checks the pair here (`KeyMismatch`): name both files.
        Some((cert, key)) => bad_tls(
            cert,
            format!(
                "does not go with key_file {}: {}",
                key.display(),
                error_chain(&e)
            ),
        ),
        None => OutputError::Client {
            output: name.to_string(),
            reason: error_chain(&e),
        },
    })
}

/// Words a user can act on after a TLS failure whose message names only a
/// TLS alert or a webpki error; empty for other errors.
fn tls_hint(error: &str, client_cert: bool) -> &'static str {
    // Alerts a server sends when it does not accept the client certificate.
    const REFUSED: &[&str] = &[
        "alert: UnknownCA",
        "alert: BadCertificate",
        "alert: CertificateRequired",
        "alert: CertificateUnknown",
        "alert: UnsupportedCertificate",
        "alert: CertificateExpired",
        "alert: CertificateRevoked",
        "alert: AccessDenied",
    ];
    if REFUSED.iter().any(|alert| error.contains(alert)) {
        if client_cert {
            " (the server refused sidekick's client certificate: is tls.cert_file issued by a CA the server trusts, and still valid?)"
        } else {
            " (the server asks for a client certificate: set tls.cert_file and tls.key_file)"
        }
    } else if error.contains("invalid peer certificate") {
        " (sidekick does not trust the server's certificate: give its CA in tls.ca_file, and check that the endpoint's host is in the certificate)"
    } else {
        ""
    }
}

/// 408, 429 and 5xx may succeed later; other failures will not.
fn retryable(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

/// `Retry-After` as delta-seconds. An HTTP-date (or anything else) gives
/// `None`: the backoff decides.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Reads (and discards) a short reply so the connection can be reused; a
/// long one is left unread and its connection closed.
async fn drain(mut resp: reqwest::Response) {
    let mut left = 64 * 1024usize;
    while let Ok(Some(chunk)) = resp.chunk().await {
        left = left.saturating_sub(chunk.len());
        if left == 0 {
            break;
        }
    }
}

/// The first `limit` bytes of a reply, as (lossy) text for a log line.
async fn reply_prefix(mut resp: reqwest::Response, limit: usize) -> String {
    let mut buf = Vec::new();
    while buf.len() < limit {
        match resp.chunk().await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk[..chunk.len().min(limit - buf.len())]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

// ---------------------------------------------------------------------------
// File and stdout outputs.

#[derive(Debug)]
struct Job {
    batch: Arc<Batch>,
    slot: Slot,
}

#[derive(Debug)]
enum Sink {
    File(std::fs::File, PathBuf),
    Stdout,
}

impl Sink {
    /// Writes `buf[*done..]`, advancing `done`, then flushes. After a failure
    /// `done` says where to resume, so a retry neither repeats nor skips.
    fn write(&mut self, buf: &[u8], done: &mut usize) -> io::Result<()> {
        match self {
            Sink::File(f, _) => write_from(f, buf, done),
            Sink::Stdout => write_from(&mut io::stdout().lock(), buf, done),
        }
    }

    fn describe(&self) -> String {
        match self {
            Sink::File(_, p) => p.display().to_string(),
            Sink::Stdout => "stdout".into(),
        }
    }
}

fn write_from(w: &mut impl Write, buf: &[u8], done: &mut usize) -> io::Result<()> {
    while *done < buf.len() {
        match w.write(&buf[*done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => *done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    w.flush()
}

fn spawn_writer(ctx: Ctx, sink: Sink) -> Result<crossbeam_channel::Sender<Job>, OutputError> {
    let (tx, rx) = crossbeam_channel::unbounded::<Job>();
    let name = ctx.name.clone();
    std::thread::Builder::new()
        .name(format!("sidekick-out-{name}"))
        .spawn(move || run_writer(ctx, sink, rx))
        .map_err(|source| OutputError::Thread {
            output: name,
            source,
        })?;
    Ok(tx)
}

/// The writer thread of a file or stdout output: batches in order, one
/// encode buffer reused for all of them.
fn run_writer(ctx: Ctx, mut sink: Sink, jobs: crossbeam_channel::Receiver<Job>) {
    let retry = RetryConfig::default();
    let mut buf = Vec::new();
    let target = sink.describe();
    for Job { batch, slot } in jobs {
        if ctx.signal.is_abandoned() {
            drop(slot);
            continue;
        }
        buf.clear();
        ndjson::encode(&batch, &ctx.resource, &mut buf);
        let mut done = 0;
        let mut backoff = Backoff::new(retry.initial, retry.max);
        let delivered = loop {
            match sink.write(&buf, &mut done) {
                Ok(()) => {
                    ctx.stats.reached();
                    break true;
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    ctx.stats.failed(|| e.to_string());
                    tracing::error!(output = %ctx.name, target = %target, error = %e,
                        attempt = backoff.attempt(), delay_ms = delay.as_millis() as u64,
                        "write failed; retrying");
                    ctx.stats.retries.fetch_add(1, Relaxed);
                    if !ctx.signal.sleep(delay) {
                        break false;
                    }
                }
            }
        };
        if delivered {
            ctx.stats.bytes_sent.fetch_add(buf.len() as u64, Relaxed);
            ctx.delivered(batch.len(), batch.logs.len());
            ctx.ledger.ack(batch.id);
        }
        drop(slot);
        if buf.capacity() > MAX_POOLED_BUFFER {
            buf = Vec::new();
        }
    }
}
