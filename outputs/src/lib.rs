//! sidekick's outputs: encoders, compression and transports.
//!
//! An [`Outputs`] fan-out takes every [`Batch`] the batcher makes and gives it
//! to each configured output. Each output encodes and compresses the batch
//! off the async runtime (on a few encoder threads), sends it, retries what may be
//! retried, and finally acknowledges the batch to the [`Ledger`] exactly once
//! — delivered, or dropped for good and counted. Bounded in-flight requests
//! per output make a slow output block `Outputs::send`, which blocks the
//! batcher, which fills the queue, which stops the tailers.
//!
//! Invariants:
//! - every batch handed to [`Outputs::send`] is acknowledged by every output
//!   exactly once, or not at all if shutdown's deadline passes first;
//! - encoding writes straight from records into one buffer per batch: no
//!   per-record allocation;
//! - this crate reads no configuration file and knows nothing of log files.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backoff;
pub mod compress;
mod encode_pool;
pub mod ndjson;
pub mod otlp;
mod secret;
mod transport;

pub use compress::Compression;
pub use secret::{redact_url, Secret};
pub use transport::{
    HttpConfig, OutputConfig, OutputError, OutputKind, OutputStats, Outputs, RetryConfig, TlsConfig,
};

use sidekick_pipeline::Attr;

/// Resource attributes shared by every record sidekick sends
/// (`service.name`, `host.name`, `process.pid`, ...).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resource {
    /// The attributes, in the order they are encoded.
    pub attributes: Vec<Attr>,
}

// Re-exported so the binary can name them without depending on the pipeline
// crate's layout.
pub use sidekick_pipeline::{Batch, Ledger};
