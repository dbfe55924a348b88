//! The configuration file: its shape, its defaults, and its checks.
//!
//! A config file goes through three steps: `${...}` expansion on the text
//! ([`expand`]), YAML parsing into [`Config`] (`serde-saphyr`, with
//! `serde_path_to_error` to name the key of a bad value), and semantic
//! checks ([`Config::validate`]), which the supervisor runs again after
//! command-line flags have overridden the file.
//!
//! Invariants: every struct refuses unknown keys; every error is one line
//! naming the file, the position when known, and the key path; values that
//! came from the environment or a secret file never appear in an error. The
//! doc comment of each field is the documentation of that option, and
//! `config.example.yaml` at the repository root shows every one with its
//! default (a test loads it).

mod error;
mod expand;
mod locate;
pub(crate) mod memory;
mod units;

pub use error::ConfigError;
pub use sidekick_outputs::Secret;
pub use units::ByteSize;

use serde::de::{self, Deserialize, Deserializer};
use serde::Deserialize as DeriveDeserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;
use units::{de_duration, value_error};

/// Everything `sidekick run` can be told in a config file.
#[derive(Debug, Clone, PartialEq, DeriveDeserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Directory for checkpoints (how far each log file was shipped) and the
    /// spool of metrics and events; created when missing.
    pub data_dir: PathBuf,
    /// Deadline for draining (reading what is left, sending, acknowledging)
    /// after SIGTERM or the target's exit.
    #[serde(deserialize_with = "de_duration")]
    pub shutdown_timeout: Duration,
    /// Extra resource attributes added to every record, e.g.
    /// `service.name: checkout` (dotted names are plain keys).
    pub resource: BTreeMap<String, String>,
    /// The application sidekick attaches to; none means no process watch and
    /// no process metrics.
    pub target: Option<TargetConfig>,
    /// Log files to tail.
    pub logs: Vec<LogSource>,
    /// Process, cgroup and host metrics.
    pub metrics: MetricsConfig,
    /// When a batch is complete and handed to the outputs.
    pub batch: BatchSection,
    /// The on-disk spool for metrics and events while outputs are down.
    pub spool: SpoolConfig,
    /// sidekick's own health and throughput endpoint.
    pub telemetry: TelemetryConfig,
    /// Where batches go; with none, records are written to stdout as NDJSON.
    pub outputs: Vec<OutputSection>,
    /// Resource limits of sidekick itself.
    pub limits: LimitsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./sidekick-data"),
            shutdown_timeout: Duration::from_secs(10),
            resource: BTreeMap::new(),
            target: None,
            logs: Vec::new(),
            metrics: MetricsConfig::default(),
            batch: BatchSection::default(),
            spool: SpoolConfig::default(),
            telemetry: TelemetryConfig::default(),
            outputs: Vec::new(),
            limits: LimitsConfig::default(),
        }
    }
}

/// The process sidekick watches. At most one of `pid`, `pid_file`,
/// `process_name` and `command` may be given.
#[derive(Debug, Clone, PartialEq, DeriveDeserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TargetConfig {
    /// Attach to this running process.
    pub pid: Option<u32>,
    /// Read the PID to attach to from this file (re-read when the process
    /// is gone, to follow restarts).
    pub pid_file: Option<PathBuf>,
    /// Attach to the process whose command line matches this regular
    /// expression.
    #[serde(deserialize_with = "de_regex")]
    pub process_name: Option<String>,
    /// Launch this command as a child (program and arguments), forward
    /// signals to it, and exit with its exit code.
    pub command: Option<Vec<String>>,
    /// A file the application touches periodically; when its modification
    /// time is older than `heartbeat_timeout`, the target counts as gone
    /// (containers without a shared PID namespace).
    pub heartbeat_file: Option<PathBuf>,
    /// How stale `heartbeat_file` may get before the target counts as gone.
    #[serde(deserialize_with = "de_duration")]
    pub heartbeat_timeout: Duration,
    /// Drain and exit when the target exits. Unset: yes for `command`,
    /// `pid`, `pid_file` and `heartbeat_file`; no for `process_name`, which
    /// waits for the next matching process.
    pub exit_with_target: Option<bool>,
    /// How many of the target's last log lines are attached to its crash
    /// event.
    pub crash_context_lines: usize,
}

impl Default for TargetConfig {
    fn default() -> Self {
        TargetConfig {
            pid: None,
            pid_file: None,
            process_name: None,
            command: None,
            heartbeat_file: None,
            heartbeat_timeout: Duration::from_secs(30),
            exit_with_target: None,
            crash_context_lines: 50,
        }
    }
}

/// Where to start reading a file seen for the first time (no checkpoint).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, DeriveDeserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    /// At its current end: only new lines.
    #[default]
    End,
    /// At its first byte.
    Beginning,
}

/// How the lines of a log file are framed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, DeriveDeserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Each line is a record body as is.
    #[default]
    Raw,
    /// Each line is a JSON object; its timestamp and level are used.
    Json,
    /// Kubernetes CRI lines (`TIME STREAM P|F TEXT`); partial lines joined.
    Cri,
    /// Docker `json-file` lines (`{"log":..,"stream":..,"time":..}`).
    Docker,
    /// Detect cri, docker or json from the first line; raw otherwise.
    Auto,
}

/// A set of log files to tail and how to read them.
#[derive(Debug, Clone, PartialEq, DeriveDeserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSource {
    /// Paths or glob patterns (`*`, `?`, `[..]`, `**`) of the files to tail.
    /// Required, not empty.
    pub include: Vec<String>,
    /// Glob patterns of files to skip among those included (matched against
    /// the full path and against the file name).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Where to start in a file seen for the first time: `end` or
    /// `beginning`. Files with a checkpoint resume from it.
    #[serde(default)]
    pub start_at: StartAt,
    /// Line format: `raw`, `json`, `cri`, `docker` or `auto`.
    #[serde(default)]
    pub format: LogFormat,
    /// Join several lines into one record (stack traces).
    #[serde(default)]
    pub multiline: Option<Multiline>,
    /// Longer lines are truncated to this size, with a marker attribute.
    #[serde(default = "defaults::max_line_bytes")]
    pub max_line_bytes: ByteSize,
    /// How often the globs are re-evaluated and files polled, as a fallback
    /// beside inotify.
    #[serde(default = "defaults::scan_interval", deserialize_with = "de_duration")]
    pub scan_interval: Duration,
    /// At most this many files are open at once; the least recently active
    /// are closed (and reopened by their checkpoint) past it.
    #[serde(default = "defaults::max_open_files")]
    pub max_open_files: usize,
    /// How many first bytes of a file identify it across renames and inode
    /// reuse; shorter files are read too.
    #[serde(default = "defaults::fingerprint_bytes")]
    pub fingerprint_bytes: ByteSize,
    /// At most this much is read from one file per pass, so that a backlog
    /// in one file cannot stall the others.
    #[serde(default = "defaults::read_budget")]
    pub read_budget: ByteSize,
}

impl LogSource {
    /// A source for `include` with every other option at its default (what
    /// `--log GLOB` adds).
    pub fn new(include: Vec<String>) -> Self {
        LogSource {
            include,
            exclude: Vec::new(),
            start_at: StartAt::default(),
            format: LogFormat::default(),
            multiline: None,
            max_line_bytes: defaults::max_line_bytes(),
            scan_interval: defaults::scan_interval(),
            max_open_files: defaults::max_open_files(),
            fingerprint_bytes: defaults::fingerprint_bytes(),
            read_budget: defaults::read_budget(),
        }
    }

    /// A source for one path or glob (what `--log GLOB` adds).
    pub fn for_glob(glob: impl Into<String>) -> Self {
        LogSource::new(vec![glob.into()])
    }
}

/// Multi-line records. Exactly one of `start_pattern` and
/// `continue_pattern` must be given.
#[derive(Debug, Clone, PartialEq, DeriveDeserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Multiline {
    /// A line matching this regular expression starts a new record; other
    /// lines are appended to the current one.
    #[serde(deserialize_with = "de_regex")]
    pub start_pattern: Option<String>,
    /// A line matching this regular expression is appended to the current
    /// record; other lines start a new one.
    #[serde(deserialize_with = "de_regex")]
    pub continue_pattern: Option<String>,
    /// A pending record is emitted after this long without a new line.
    #[serde(deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// A record is emitted once it has this many lines.
    pub max_lines: usize,
    /// A record is emitted once it has this many bytes.
    pub max_bytes: ByteSize,
}

impl Default for Multiline {
    fn default() -> Self {
        Multiline {
            start_pattern: None,
            continue_pattern: None,
            timeout: Duration::from_secs(1),
            max_lines: 500,
            max_bytes: ByteSize::mib(1),
        }
    }
}

/// What is sampled, and how often.
#[derive(Debug, Clone, PartialEq, DeriveDeserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Sampling interval.
    #[serde(deserialize_with = "de_duration")]
    pub interval: Duration,
    /// The target's process metrics (`process.*`).
    pub process: bool,
    /// Sum the process metrics over the target's child processes too.
    pub include_children: bool,
    /// The target's cgroup metrics (`cgroup.*`, v2 first, v1 otherwise).
    pub cgroup: bool,
    /// Host metrics (`system.*`).
    pub host: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            interval: Duration::from_secs(10),
            process: true,
            include_children: false,
            cgroup: true,
            host: false,
        }
    }
}

/// A batch is sent when the first of these limits is reached.
#[derive(Debug, Clone, PartialEq, DeriveDeserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchSection {
    /// Records per batch.
    pub max_records: usize,
    /// Uncompressed bytes per batch.
    pub max_bytes: ByteSize,
    /// Longest time a record waits for its batch to fill.
    #[serde(deserialize_with = "de_duration")]
    pub timeout: Duration,
}

impl Default for BatchSection {
    fn default() -> Self {
        BatchSection {
            max_records: 8192,
            max_bytes: ByteSize::mib(4),
            timeout: Duration::from_secs(1),
        }
    }
}

/// The on-disk spool of metrics and events (which cannot be re-read like a
/// log file) while outputs are down.
#[derive(Debug, Clone, PartialEq, DeriveDeserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpoolConfig {
    /// Size bound of the spool; the oldest entries are dropped (and counted)
    /// past it. `0` disables the spool.
    pub max_bytes: ByteSize,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            max_bytes: ByteSize::mib(64),
        }
    }
}

/// sidekick's own `/metrics` (Prometheus text), `/healthz` and `/readyz`.
#[derive(Debug, Clone, PartialEq, DeriveDeserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Address to listen on (`HOST:PORT`), or `off` to disable.
    #[serde(deserialize_with = "de_listen")]
    pub listen: Option<SocketAddr>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            listen: Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9464))),
        }
    }
}

/// Resource limits of sidekick itself.
#[derive(Debug, Clone, Default, PartialEq, DeriveDeserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Refuse to start when the most memory this config lets sidekick use
    /// (open files × (max_line_bytes + read buffer), the queue, batches in
    /// flight and their encoded copies, a fixed base) exceeds this; the
    /// error shows each part. Unset: no check.
    pub max_memory: Option<ByteSize>,
}

/// The kind of an output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, DeriveDeserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputType {
    /// OTLP/HTTP protobuf; `/v1/logs` and `/v1/metrics` are appended to the
    /// endpoint.
    OtlpHttp,
    /// One JSON object per line, POSTed to the endpoint.
    HttpNdjson,
    /// One JSON object per line, appended to `path`.
    File,
    /// One JSON object per line on standard output.
    Stdout,
}

impl OutputType {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputType::OtlpHttp => "otlp_http",
            OutputType::HttpNdjson => "http_ndjson",
            OutputType::File => "file",
            OutputType::Stdout => "stdout",
        }
    }

    /// Whether the output sends over HTTP (and takes `endpoint`, `headers`
    /// and `tls`).
    pub fn is_http(self) -> bool {
        matches!(self, OutputType::OtlpHttp | OutputType::HttpNdjson)
    }
}

/// Compression of HTTP request bodies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, DeriveDeserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompressionName {
    /// `Content-Encoding: gzip`.
    #[default]
    Gzip,
    /// `Content-Encoding: zstd`.
    Zstd,
    /// No compression.
    None,
}

/// One destination for batches. Header values are [`Secret`]s: `Debug`
/// shows their names only.
#[derive(Debug, Clone, PartialEq, DeriveDeserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    /// `otlp_http`, `http_ndjson`, `file` or `stdout`.
    #[serde(rename = "type")]
    pub kind: OutputType,
    /// Base URL (`http://` or `https://`) for `otlp_http` and `http_ndjson`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Body compression for HTTP outputs: `gzip`, `zstd` or `none`.
    #[serde(default)]
    pub compression: CompressionName,
    /// Extra HTTP request headers (e.g. `authorization`); values are never
    /// logged.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Deadline of one HTTP request, response included.
    #[serde(default = "defaults::output_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// TLS settings for an `https://` endpoint.
    #[serde(default)]
    pub tls: Option<TlsSection>,
    /// File to append to, for `file`.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Batches sent concurrently by an HTTP output.
    #[serde(default = "defaults::max_in_flight")]
    pub max_in_flight: usize,
}

impl OutputSection {
    /// An output of `kind` with every option at its default.
    pub fn new(kind: OutputType) -> Self {
        OutputSection {
            kind,
            endpoint: None,
            compression: CompressionName::default(),
            headers: BTreeMap::new(),
            timeout: defaults::output_timeout(),
            tls: None,
            path: None,
            max_in_flight: defaults::max_in_flight(),
        }
    }

    /// An `otlp_http` output to `endpoint` (what `--endpoint URL` adds).
    pub fn otlp_http(endpoint: impl Into<String>) -> Self {
        OutputSection {
            endpoint: Some(endpoint.into()),
            ..OutputSection::new(OutputType::OtlpHttp)
        }
    }
}

/// TLS client settings.
#[derive(Debug, Clone, Default, PartialEq, DeriveDeserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSection {
    /// PEM file of CA certificates to trust in addition to the built-in
    /// (Mozilla) roots and the system's store (`/etc/ssl/certs`).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (mutual TLS); needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
}

/// Defaults of fields in structs that have a required field (and so no
/// `Default`).
mod defaults {
    use super::ByteSize;
    use std::time::Duration;

    pub(super) fn max_line_bytes() -> ByteSize {
        ByteSize::mib(1)
    }
    pub(super) fn scan_interval() -> Duration {
        Duration::from_secs(5)
    }
    pub(super) fn max_open_files() -> usize {
        1024
    }
    pub(super) fn fingerprint_bytes() -> ByteSize {
        ByteSize::kib(1)
    }
    pub(super) fn read_budget() -> ByteSize {
        ByteSize::mib(1)
    }
    pub(super) fn output_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub(super) fn max_in_flight() -> usize {
        4
    }
}

/// Checks a regular expression; the error is the one-line reason.
fn check_regex(pattern: &str) -> Result<(), String> {
    match regex::Regex::new(pattern) {
        Ok(_) => Ok(()),
        // The syntax error is a multi-line drawing; its last line says why.
        Err(regex::Error::Syntax(text)) => Err(text
            .lines()
            .rev()
            .map(str::trim)
            .find(|line| !line.is_empty())
            .map(|line| line.trim_start_matches("error: ").to_owned())
            .unwrap_or_else(|| "syntax error".to_owned())),
        Err(regex::Error::CompiledTooBig(limit)) => {
            Err(format!("the compiled pattern is larger than {limit} bytes"))
        }
        Err(other) => Err(other.to_string()),
    }
}

/// `deserialize_with` for optional regular expressions: refused at parse
/// time, so that the error has a position.
fn de_regex<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let pattern = Option::<String>::deserialize(deserializer)?;
    if let Some(pattern) = &pattern {
        check_regex(pattern)
            .map_err(|why| de::Error::custom(value_error("regex", pattern, &why)))?;
    }
    Ok(pattern)
}

const LISTEN_HINT: &str = "expected HOST:PORT such as 127.0.0.1:9464, or off";

/// `deserialize_with` for `telemetry.listen`: an address, or
/// `off`/`false`/`none`/null for no listener.
fn de_listen<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<SocketAddr>, D::Error> {
    struct Listen;

    impl<'de> de::Visitor<'de> for Listen {
        type Value = Option<SocketAddr>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(LISTEN_HINT)
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
            let trimmed = text.trim();
            if ["off", "false", "none", "no", "disabled"]
                .iter()
                .any(|word| trimmed.eq_ignore_ascii_case(word))
            {
                return Ok(None);
            }
            trimmed
                .parse()
                .map(Some)
                .map_err(|_| E::custom(value_error("address", text, LISTEN_HINT)))
        }

        fn visit_bool<E: de::Error>(self, on: bool) -> Result<Self::Value, E> {
            if on {
                Err(E::custom(value_error("address", "true", LISTEN_HINT)))
            } else {
                Ok(None)
            }
        }

        fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
            Err(E::custom(value_error(
                "address",
                &n.to_string(),
                LISTEN_HINT,
            )))
        }

        fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
            Err(E::custom(value_error(
                "address",
                &n.to_string(),
                LISTEN_HINT,
            )))
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }

    deserializer.deserialize_any(Listen)
}

impl Config {
    /// Reads, expands, parses and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::whole(format!("cannot read: {e}")).with_origin(origin.as_str())
        })?;
        Config::from_yaml(&text, &origin)
    }

    /// Expands, parses and validates config `text`; `origin` (a file name)
    /// starts every error message.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let expanded = expand::expand(text).map_err(|e| {
            ConfigError::whole(e.message)
                .with_location(e.line, e.column)
                .with_origin(origin)
        })?;
        let subs = &expanded.substitutions;
        // Positions come from the expanded text: same lines, columns mapped
        // back to the file's.
        let place = |error: ConfigError, position: Option<(usize, usize)>| {
            let error = match position {
                Some((line, column)) => {
                    error.with_location(line, expand::original_column(subs, line, column))
                }
                None => error,
            };
            error.scrub(subs).with_origin(origin)
        };

        let mut path = None;
        let parsed = serde_saphyr::with_deserializer_from_str(&expanded.text, |deserializer| {
            serde_path_to_error::deserialize(deserializer).map_err(|e| {
                path = Some(e.path().to_string());
                e.into_inner()
            })
        });
        let config: Config = parsed.map_err(|e| {
            let error = error::from_yaml_error(&e, path.as_deref());
            let position = error.line().zip(error.column());
            place(error, position)
        })?;

        config.validate().map_err(|error| {
            let position = error
                .key()
                .and_then(|key| locate::locate(&expanded.text, key));
            place(error, position)
        })?;
        Ok(config)
    }

    /// Semantic checks the types cannot express: mutually exclusive keys,
    /// keys an output type needs or refuses, non-zero limits, valid regular
    /// expressions, globs and URLs. Run it again after applying command-line
    /// overrides. The error names the key path (`outputs[0].endpoint`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::at_key(
                "data_dir",
                "`data_dir` must not be empty",
            ));
        }
        if let Some(target) = &self.target {
            validate_target(target)?;
        }
        for (i, source) in self.logs.iter().enumerate() {
            validate_logs(source, &format!("logs[{i}]"))?;
        }
        positive_duration(self.metrics.interval, "metrics.interval")?;
        positive(self.batch.max_records as u64, "batch.max_records")?;
        positive(self.batch.max_bytes.0, "batch.max_bytes")?;
        positive_duration(self.batch.timeout, "batch.timeout")?;
        for (i, output) in self.outputs.iter().enumerate() {
            validate_output(output, &format!("outputs[{i}]"))?;
        }
        if let Some(max_memory) = self.limits.max_memory {
            positive(max_memory.0, "limits.max_memory")?;
            let estimate = memory::estimate(self);
            if estimate.total() > max_memory.0 {
                return Err(ConfigError::at_key(
                    "limits.max_memory",
                    format!(
                        "`limits.max_memory` is {} but this config may use up to {}: {}; lower \
                         `logs[].max_open_files`, `logs[].max_line_bytes`, `batch.max_bytes` or \
                         `outputs[].max_in_flight`, or raise `limits.max_memory`",
                        max_memory.approx(),
                        ByteSize(estimate.total()).approx(),
                        estimate.describe()
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl Config {
    /// Settings that are valid but probably not what was meant, one line
    /// each (`sidekick check` prints them; `run` logs them).
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if let Some(listen) = self.telemetry.listen {
            if !listen.ip().is_loopback() {
                warnings.push(format!(
                    "`telemetry.listen` is {listen}, reachable beyond this host; health and throughput figures are served without authentication"
                ));
            }
        }
        if let Some(target) = &self.target {
            if target.process_name.is_some() && target.exit_with_target == Some(true) {
                warnings.push(
                    "`target.exit_with_target: true` with `target.process_name`: sidekick exits when the first matching process does".to_owned(),
                );
            }
        }
        if self.target.is_none() && self.logs.is_empty() && !self.metrics.host {
            warnings.push(
                "no `target`, no `logs` and `metrics.host: false`: there is nothing to collect"
                    .to_owned(),
            );
        }
        for (i, output) in self.outputs.iter().enumerate() {
            let plain_http = output
                .endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with("http://"));
            let has_credentials = output.headers.keys().any(|name| {
                let name = name.to_ascii_lowercase();
                name == "authorization" || name.contains("key") || name.contains("token")
            });
            if let Some(host) = output.endpoint.as_deref().and_then(plain_http_host) {
                if !is_loopback_host(host) {
                    warnings.push(format!(
                        "`outputs[{i}].endpoint` is plain http:// to {host}, beyond this host: records{} travel unencrypted; use https://",
                        if output.headers.is_empty() { "" } else { " and headers" }
                    ));
                }
            }
            if plain_http && has_credentials {
                warnings.push(format!(
                    "`outputs[{i}].headers` carry credentials over plain http://; they can be read on the network"
                ));
            }
            if !output.kind.is_http() && output.compression != CompressionName::default() {
                warnings.push(format!(
                    "`outputs[{i}].compression` is ignored by a `{}` output",
                    output.kind.as_str()
                ));
            }
        }
        warnings
    }
}

fn positive(value: u64, key: &str) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::at_key(
            key,
            format!("`{key}` must be greater than 0"),
        ));
    }
    Ok(())
}

fn positive_duration(value: Duration, key: &str) -> Result<(), ConfigError> {
    if value.is_zero() {
        return Err(ConfigError::at_key(
            key,
            format!("`{key}` must be longer than 0s"),
        ));
    }
    Ok(())
}

fn non_empty_path(path: &Option<PathBuf>, key: &str) -> Result<(), ConfigError> {
    match path {
        Some(p) if p.as_os_str().is_empty() => Err(ConfigError::at_key(
            key,
            format!("`{key}` must not be empty"),
        )),
        _ => Ok(()),
    }
}

fn validate_target(target: &TargetConfig) -> Result<(), ConfigError> {
    let given: Vec<&str> = [
        ("pid", target.pid.is_some()),
        ("pid_file", target.pid_file.is_some()),
        ("process_name", target.process_name.is_some()),
        ("command", target.command.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    if given.len() > 1 {
        return Err(ConfigError::at_key(
            format!("target.{}", given[1]),
            format!(
                "`target.{}` and `target.{}` cannot both be set: give at most one of pid, pid_file, process_name, command",
                given[0], given[1]
            ),
        ));
    }
    if target.pid == Some(0) {
        return Err(ConfigError::at_key(
            "target.pid",
            "`target.pid` must be greater than 0",
        ));
    }
    non_empty_path(&target.pid_file, "target.pid_file")?;
    non_empty_path(&target.heartbeat_file, "target.heartbeat_file")?;
    if let Some(pattern) = &target.process_name {
        check_regex(pattern).map_err(|why| {
            ConfigError::at_key(
                "target.process_name",
                format!("invalid regex for `target.process_name`: {why}"),
            )
        })?;
    }
    if let Some(command) = &target.command {
        if command.first().is_none_or(|program| program.is_empty()) {
            return Err(ConfigError::at_key(
                "target.command",
                "`target.command` must start with the program to run",
            ));
        }
    }
    positive_duration(target.heartbeat_timeout, "target.heartbeat_timeout")
}

fn validate_logs(source: &LogSource, key: &str) -> Result<(), ConfigError> {
    if source.include.is_empty() {
        return Err(ConfigError::at_key(
            format!("{key}.include"),
            format!("`{key}.include` must list at least one path or glob"),
        ));
    }
    for (list, patterns) in [("include", &source.include), ("exclude", &source.exclude)] {
        for (i, pattern) in patterns.iter().enumerate() {
            let item = format!("{key}.{list}[{i}]");
            if pattern.is_empty() {
                return Err(ConfigError::at_key(
                    &item,
                    format!("`{item}` must not be empty"),
                ));
            }
            if let Err(e) = glob::Pattern::new(pattern) {
                return Err(ConfigError::at_key(
                    &item,
                    format!("invalid glob for `{item}`: {}", e.msg),
                ));
            }
        }
    }
    if let Some(multiline) = &source.multiline {
        let key = format!("{key}.multiline");
        match (&multiline.start_pattern, &multiline.continue_pattern) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::at_key(
                    format!("{key}.continue_pattern"),
                    format!(
                        "`{key}.start_pattern` and `{key}.continue_pattern` cannot both be set"
                    ),
                ))
            }
            (None, None) => {
                return Err(ConfigError::at_key(
                    &key,
                    format!("`{key}` needs `start_pattern` or `continue_pattern`"),
                ))
            }
            (Some(pattern), None) | (None, Some(pattern)) => {
                let which = if multiline.start_pattern.is_some() {
                    "start_pattern"
                } else {
                    "continue_pattern"
                };
                check_regex(pattern).map_err(|why| {
                    ConfigError::at_key(
                        format!("{key}.{which}"),
                        format!("invalid regex for `{key}.{which}`: {why}"),
                    )
                })?;
            }
        }
        positive_duration(multiline.timeout, &format!("{key}.timeout"))?;
        positive(multiline.max_lines as u64, &format!("{key}.max_lines"))?;
        positive(multiline.max_bytes.0, &format!("{key}.max_bytes"))?;
    }
    positive(source.max_line_bytes.0, &format!("{key}.max_line_bytes"))?;
    positive_duration(source.scan_interval, &format!("{key}.scan_interval"))?;
    positive(
        source.max_open_files as u64,
        &format!("{key}.max_open_files"),
    )?;
    positive(
        source.fingerprint_bytes.0,
        &format!("{key}.fingerprint_bytes"),
    )?;
    positive(source.read_budget.0, &format!("{key}.read_budget"))
}

fn validate_output(output: &OutputSection, key: &str) -> Result<(), ConfigError> {
    let kind = output.kind.as_str();
    let refuse = |field: &str| {
        ConfigError::at_key(
            format!("{key}.{field}"),
            format!("`{key}.{field}` does not apply to a `{kind}` output"),
        )
    };
    if output.kind.is_http() {
        let Some(endpoint) = &output.endpoint else {
            return Err(ConfigError::at_key(
                format!("{key}.endpoint"),
                format!(
                    "missing `{key}.endpoint`: a `{kind}` output needs an http:// or https:// URL"
                ),
            ));
        };
        let https = check_endpoint(endpoint).map_err(|why| {
            ConfigError::at_key(
                format!("{key}.endpoint"),
                format!("invalid `{key}.endpoint`: {why}"),
            )
        })?;
        if output.path.is_some() {
            return Err(refuse("path"));
        }
        for name in output.headers.keys() {
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !valid {
                let header_key = format!("{key}.headers");
                return Err(ConfigError::at_key(
                    &header_key,
                    format!("invalid header name {name:?} in `{header_key}`"),
                ));
            }
        }
        for (name, value) in &output.headers {
            // The value is likely a credential: the message names the header only.
            if value
                .expose()
                .bytes()
                .any(|b| b.is_ascii_control() && b != b'\t')
            {
                let header_key = format!("{key}.headers.{name}");
                return Err(ConfigError::at_key(
                    &header_key,
                    format!("the value of `{header_key}` contains control characters"),
                ));
            }
        }
        if let Some(tls) = &output.tls {
            let tls_key = format!("{key}.tls");
            if !https {
                return Err(ConfigError::at_key(
                    &tls_key,
                    format!("`{tls_key}` needs an https:// endpoint"),
                ));
            }
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                return Err(ConfigError::at_key(
                    &tls_key,
                    format!("`{tls_key}.cert_file` and `{tls_key}.key_file` go together"),
                ));
            }
            non_empty_path(&tls.ca_file, &format!("{tls_key}.ca_file"))?;
            non_empty_path(&tls.cert_file, &format!("{tls_key}.cert_file"))?;
            non_empty_path(&tls.key_file, &format!("{tls_key}.key_file"))?;
        }
        positive_duration(output.timeout, &format!("{key}.timeout"))?;
        positive(output.max_in_flight as u64, &format!("{key}.max_in_flight"))?;
    } else {
        if output.endpoint.is_some() {
            return Err(refuse("endpoint"));
        }
        if !output.headers.is_empty() {
            return Err(refuse("headers"));
        }
        if output.tls.is_some() {
            return Err(refuse("tls"));
        }
        match (output.kind, &output.path) {
            (OutputType::File, None) => {
                return Err(ConfigError::at_key(
                    format!("{key}.path"),
                    format!("missing `{key}.path`: a `file` output needs the file to write"),
                ))
            }
            (OutputType::File, path) => non_empty_path(path, &format!("{key}.path"))?,
            (_, Some(_)) => return Err(refuse("path")),
            (_, None) => {}
        }
    }
    Ok(())
}

/// The host of a plain `http://` URL (`None` for https or no URL), without
/// user info, port or brackets.
fn plain_http_host(endpoint: &str) -> Option<&str> {
    let rest = endpoint.strip_prefix("http://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit('@').next()?;
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => host_port.split(':').next()?,
    };
    (!host.is_empty()).then_some(host)
}

/// `localhost`, `*.localhost`, 127.0.0.0/8 and ::1: traffic that never
/// leaves the host.
fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Checks an output endpoint without echoing it (it may carry credentials);
/// `Ok(true)` for https.
fn check_endpoint(endpoint: &str) -> Result<bool, &'static str> {
    let (https, rest) = if let Some(rest) = endpoint.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = endpoint.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err("expected an http:// or https:// URL");
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        return Err("the URL has no host");
    }
    if endpoint
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err("the URL contains blanks or control characters");
    }
    Ok(https)
}

#[cfg(test)]
mod tests;
