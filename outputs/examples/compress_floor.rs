//! The compression floor of the benchmark (`scripts/bench.sh`): what the
//! compressors sidekick uses cost alone, on the same bytes, in batch-sized
//! chunks, on one thread. sidekick's own CPU per GiB is judged against it.
//!
//! usage: compress_floor FILE [--chunk BYTES] [--records N] [--only gzip|zstd]
//!
//! Prints one line per measurement, `key=value` pairs:
//! - `floor gzip` / `floor zstd`: flate2 (zlib-rs) level 1 and the zstd crate
//!   level 1 over FILE cut into chunks of `--chunk` bytes (default 4 MiB, cut
//!   after a newline), a fresh encoder per chunk, as sidekick does per batch;
//! - `encode+gzip` / `encode+zstd`: sidekick's own encoder path without any
//!   I/O: FILE's lines as records of `--records` (default 8192, the default
//!   `batch.max_records`), OTLP-encoded and compressed by
//!   `Compression::compress_pieces` as the HTTP outputs do, on one thread;
//! - `encode`: the same without compression (the encoder's own cost).
//!
//! CPU time is the thread's own (`/proc/thread-self/schedstat`), so other
//! work on a shared machine does not count; only the compression (or encode
//! plus compression) is timed, not reading the file.

use bytes::Bytes;
use sidekick_outputs::compress::Compressor;
use sidekick_outputs::{otlp, Compression, Resource};
use sidekick_pipeline::{Attr, LogRecord, SourceMeta};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Instant;

/// CPU nanoseconds this thread has run (falls back to a wall clock where
/// schedstat is missing).
fn thread_cpu_ns(start: Instant) -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| start.elapsed().as_nanos() as u64)
}

struct Meter {
    label: String,
    input: u64,
    output: u64,
    cpu_ns: u64,
    wall_ns: u64,
}

impl Meter {
    fn new(label: &str) -> Self {
        Meter {
            label: label.to_string(),
            input: 0,
            output: 0,
            cpu_ns: 0,
            wall_ns: 0,
        }
    }

    /// Times `f` (which returns the compressed size) for `input` bytes.
    fn time(&mut self, epoch: Instant, input: usize, f: impl FnOnce() -> usize) {
        let (c0, w0) = (thread_cpu_ns(epoch), Instant::now());
        let out = f();
        self.wall_ns += w0.elapsed().as_nanos() as u64;
        self.cpu_ns += thread_cpu_ns(epoch) - c0;
        self.input += input as u64;
        self.output += out as u64;
    }

    fn print(&self) {
        let cpu_s = self.cpu_ns as f64 / 1e9;
        let gib = self.input as f64 / (1u64 << 30) as f64;
        let mib = self.input as f64 / (1u64 << 20) as f64;
        println!(
            "{} bytes_in={} bytes_out={} cpu_s={:.3} wall_s={:.3} cpu_s_per_gib={:.2} mib_per_cpu_s={:.1}",
            self.label,
            self.input,
            self.output,
            cpu_s,
            self.wall_ns as f64 / 1e9,
            cpu_s / gib.max(1e-12),
            mib / cpu_s.max(1e-12),
        );
    }
}

fn gzip1(input: &[u8], out: &mut Vec<u8>) -> usize {
    out.clear();
    let mut enc = flate2::write::GzEncoder::new(&mut *out, flate2::Compression::fast());
    enc.write_all(input).expect("in-memory write");
    enc.finish().expect("in-memory write");
    out.len()
}

fn zstd1(cx: &mut zstd::bulk::Compressor<'static>, input: &[u8], out: &mut Vec<u8>) -> usize {
    out.clear();
    out.reserve(zstd::zstd_safe::compress_bound(input.len()));
    cx.compress_to_buffer(input, out)
        .expect("bound-sized buffer")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut file = None;
    let mut chunk = 4usize << 20;
    let mut records = 8192usize;
    let mut only: Option<String> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--chunk" => chunk = args.next().and_then(|v| v.parse().ok()).unwrap_or(chunk),
            "--records" => records = args.next().and_then(|v| v.parse().ok()).unwrap_or(records),
            "--only" => only = args.next(),
            _ => file = Some(a),
        }
    }
    let Some(path) = file else {
        eprintln!("usage: compress_floor FILE [--chunk BYTES] [--records N] [--only gzip|zstd]");
        std::process::exit(2);
    };
    let want = |c: &str| only.as_deref().is_none_or(|o| o == c);
    let epoch = Instant::now();
    let meta = Arc::new(SourceMeta::for_path(&path));
    let resource = Resource {
        attributes: vec![
            Attr::new("service.name", "bench"),
            Attr::new("host.name", "bench-host"),
        ],
    };

    let mut floor_gz = Meter::new("floor gzip");
    let mut floor_zs = Meter::new("floor zstd");
    let mut enc_gz = Meter::new("encode+gzip");
    let mut enc_zs = Meter::new("encode+zstd");
    let mut enc_only = Meter::new("encode");
    let mut state = Compressor::new();
    let mut zcx = zstd::bulk::Compressor::new(1).expect("zstd context");
    let mut out = Vec::new();
    let mut encoded = Vec::new();
    let mut logs: Vec<LogRecord> = Vec::with_capacity(records);

    let mut f = std::fs::File::open(&path).unwrap_or_else(|e| {
        eprintln!("cannot open {path}: {e}");
        std::process::exit(2);
    });
    // `pending` holds bytes read but not yet compressed (a partial chunk).
    let mut pending: Vec<u8> = Vec::with_capacity(chunk + (1 << 20));
    let mut eof = false;
    while !eof || !pending.is_empty() {
        while !eof && pending.len() < chunk {
            let at = pending.len();
            pending.resize(at + (1 << 20), 0);
            let n = f.read(&mut pending[at..]).unwrap_or(0);
            pending.truncate(at + n);
            eof = n == 0;
        }
        let cut = if pending.len() > chunk {
            pending[..chunk]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(chunk, |i| i + 1)
        } else {
            pending.len()
        };
        let piece = &pending[..cut];
        if want("gzip") {
            floor_gz.time(epoch, piece.len(), || gzip1(piece, &mut out));
        }
        if want("zstd") {
            floor_zs.time(epoch, piece.len(), || zstd1(&mut zcx, piece, &mut out));
        }
        // sidekick's path: lines as records (as the tailer makes them, not
        // timed), `records` per batch, encoded and compressed (timed).
        let shared = Bytes::copy_from_slice(piece);
        let mut from = 0;
        let newlines = shared.iter().enumerate().filter(|(_, &b)| b == b'\n');
        for (nl, _) in newlines {
            logs.push(LogRecord {
                body: shared.slice(from..nl),
                observed_time_unix_nano: 1_764_000_000_000_000_000,
                source: Some(meta.clone()),
                ..LogRecord::default()
            });
            from = nl + 1;
            if logs.len() == records {
                encode_batch(
                    &logs,
                    &resource,
                    &mut state,
                    &mut encoded,
                    &mut out,
                    epoch,
                    [&mut enc_gz, &mut enc_zs, &mut enc_only],
                    &want,
                );
                logs.clear();
            }
        }
        pending.drain(..cut);
    }
    if !logs.is_empty() {
        encode_batch(
            &logs,
            &resource,
            &mut state,
            &mut encoded,
            &mut out,
            epoch,
            [&mut enc_gz, &mut enc_zs, &mut enc_only],
            &want,
        );
    }
    for m in [&floor_gz, &floor_zs, &enc_gz, &enc_zs, &enc_only] {
        if m.input > 0 {
            m.print();
        }
    }
}

// Every buffer and meter is the caller's, reused from batch to batch.
#[allow(clippy::too_many_arguments)]
fn encode_batch(
    logs: &[LogRecord],
    resource: &Resource,
    state: &mut Compressor,
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
    epoch: Instant,
    meters: [&mut Meter; 3],
    want: &dyn Fn(&str) -> bool,
) {
    // Input counts the lines' bytes with their newlines, as in the file, so
    // CPU per GiB compares with the floor's.
    let raw: usize = logs.iter().map(|l| l.body.len() + 1).sum();
    let [gz, zs, enc] = meters;
    for (m, c) in [
        (gz, Compression::Gzip),
        (zs, Compression::Zstd),
        (enc, Compression::None),
    ] {
        if c != Compression::None && !want(c.as_str()) {
            continue;
        }
        // The path sidekick's HTTP outputs take (`transport::encode_logs`).
        m.time(epoch, raw, || {
            if c == Compression::Zstd && std::env::var_os("FLOOR_ZSTD_WHOLE").is_some() {
                // The alternative: the whole request in one pass.
                scratch.clear();
                otlp::encode_logs(logs, resource, scratch);
                out.clear();
                c.compress_whole(state, scratch, out)
                    .expect("in-memory write");
                return out.len();
            }
            let plan = otlp::plan_logs(logs, resource);
            out.clear();
            c.compress_pieces(state, Some(plan.total() as u64), out, |sink| {
                otlp::encode_logs_pieces(logs, resource, &plan, scratch, 128 << 10, sink)
            })
            .expect("in-memory write");
            out.len()
        });
    }
}
