//! `sidekick status [--telemetry ADDR]`: reads a running agent's `/readyz`
//! and `/metrics` and prints a short table. Exit codes: 0 ready, 3 reachable
//! but not ready, 1 not reachable (one line on stderr says why).
//!
//! It speaks just enough HTTP/1.1 over `std::net` (one `GET` per
//! connection, `Connection: close`) to need no HTTP client in the binary.

use super::text::{parse, Sample};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, SystemTime};

/// Connect and read deadline of each request.
const TIMEOUT: Duration = Duration::from_secs(3);
/// Largest reply read.
const MAX_REPLY: u64 = 16 << 20;

/// Runs the command; returns the process exit code.
pub fn run(addr: &str) -> u8 {
    let target = addr
        .trim()
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let fetched = resolve(target).and_then(|a| Ok((get(a, "/readyz")?, get(a, "/metrics")?)));
    let ((ready_status, ready_body), (metrics_status, metrics)) = match fetched {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "sidekick status: cannot reach the agent's telemetry at {target}: {e} \
                 (is `sidekick run` running with telemetry.listen: {target}?)"
            );
            return 1;
        }
    };
    if metrics_status != 200 {
        eprintln!(
            "sidekick status: {target}/metrics answered HTTP {metrics_status}: {}",
            metrics.lines().next().unwrap_or("")
        );
        return 1;
    }
    let ready = ready_status == 200;
    let state = if ready {
        "ready".to_string()
    } else {
        let why = ready_body.trim();
        let why = why.strip_prefix("not ready: ").unwrap_or(why);
        format!("NOT READY (HTTP {ready_status}): {why}")
    };
    print!(
        "{}",
        table(target, &state, &parse(&metrics), SystemTime::now())
    );
    if ready {
        0
    } else {
        3
    }
}

fn resolve(target: &str) -> Result<SocketAddr, String> {
    target
        .to_socket_addrs()
        .map_err(|e| format!("bad address ({e})"))?
        .next()
        .ok_or_else(|| "the address resolves to nothing".into())
}

/// `GET path`: the status code and the body.
fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(TIMEOUT))
        .and_then(|()| s.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: text/plain\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.take(MAX_REPLY)
        .read_to_end(&mut raw)
        .map_err(|e| format!("reading the reply to GET {path}: {e}"))?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not an HTTP reply to GET {path}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP reply to GET {path}"))?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Err(format!("unexpected chunked reply to GET {path}"));
    }
    Ok((status, body.to_string()))
}

/// Sum of the samples named `name`, if any.
fn sum(samples: &[Sample], name: &str) -> Option<f64> {
    let mut it = samples.iter().filter(|s| s.name == name).peekable();
    it.peek()?;
    Some(it.map(|s| s.value).sum())
}

fn bytes(v: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = v;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

fn age(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..60 => format!("{:.1}s", secs.max(0.0)),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m{:02}s", s / 3600, s / 60 % 60, s % 60),
    }
}

/// The human table for a parsed exposition.
pub fn table(target: &str, state: &str, samples: &[Sample], now: SystemTime) -> String {
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let n = |name: &str| sum(samples, name).unwrap_or(0.0);
    let mut rows: Vec<(&str, String)> = Vec::new();
    rows.push(("agent", format!("http://{target}")));
    rows.push(("state", state.to_string()));
    if let Some(start) = sum(samples, "sidekick_start_time_seconds") {
        rows.push(("uptime", age(now - start)));
    }
    rows.push((
        "records read",
        format!(
            "{:.0} ({} from {:.0} open files)",
            n("sidekick_log_records_read_total"),
            bytes(n("sidekick_log_bytes_read_total")),
            n("sidekick_log_files_open")
        ),
    ));
    let outputs: Vec<&str> = samples
        .iter()
        .filter(|s| s.name == "sidekick_output_records_sent_total")
        .filter_map(|s| s.label("output"))
        .collect();
    let per_output = |name: &str, output: &str| {
        samples
            .iter()
            .find(|s| s.name == name && s.label("output") == Some(output))
            .map_or(0.0, |s| s.value)
    };
    rows.push((
        "records sent",
        format!(
            "{:.0} ({:.0} log records, {})",
            n("sidekick_output_records_sent_total"),
            n("sidekick_output_log_records_sent_total"),
            bytes(n("sidekick_output_bytes_sent_total"))
        ),
    ));
    rows.push((
        "records dropped",
        format!("{:.0}", n("sidekick_output_records_dropped_total")),
    ));
    rows.push((
        "retries",
        format!("{:.0}", n("sidekick_output_retries_total")),
    ));
    rows.push((
        "queue depth",
        format!(
            "{:.0}/{:.0} chunks, {:.0} batches in flight",
            n("sidekick_queue_chunks"),
            n("sidekick_queue_capacity_chunks"),
            n("sidekick_batches_in_flight")
        ),
    ));
    let files = samples
        .iter()
        .filter(|s| s.name == "sidekick_log_file_lag_bytes")
        .count();
    rows.push((
        "lag",
        format!(
            "{} over {files} files",
            bytes(n("sidekick_log_file_lag_bytes"))
        ),
    ));
    for o in &outputs {
        let last = per_output("sidekick_output_last_success_timestamp_seconds", o);
        let text = if last > 0.0 {
            format!("{} ago", age(now - last))
        } else {
            "never".to_string()
        };
        let failing = per_output("sidekick_output_failing_seconds", o);
        let failing = if failing > 0.0 {
            format!(", failing for {}", age(failing))
        } else {
            String::new()
        };
        rows.push((
            "last send",
            format!(
                "{text} ({o}: {:.0} sent{failing})",
                per_output("sidekick_output_records_sent_total", o)
            ),
        ));
    }
    if let Some(spooled) = sum(samples, "sidekick_spool_bytes") {
        rows.push((
            "spool",
            format!(
                "{} on disk, {:.0} records dropped",
                bytes(spooled),
                n("sidekick_spool_records_dropped_total")
            ),
        ));
    }
    if let Some(age_s) = sum(samples, "sidekick_checkpoint_age_seconds") {
        rows.push(("checkpoint saved", format!("{} ago", age(age_s))));
    }
    match sum(samples, "sidekick_target_pid") {
        Some(pid) => {
            let mut t = format!("pid {pid:.0}");
            if let Some(rss) = sum(samples, "process_memory_usage_bytes") {
                let _ = write!(t, ", RSS {}", bytes(rss));
            }
            if let Some(cpu) = sum(samples, "process_cpu_time_seconds_total") {
                let _ = write!(t, ", CPU {cpu:.2}s");
            }
            if let Some(u) = sum(samples, "process_cpu_utilization_ratio") {
                let _ = write!(t, " ({:.1}%)", u * 100.0);
            }
            if let Some(th) = sum(samples, "process_thread_count") {
                let _ = write!(t, ", {th:.0} threads");
            }
            rows.push(("target", t));
        }
        None => rows.push(("target", "none".into())),
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in rows {
        let _ = writeln!(out, "{k:<width$}  {v}");
    }
    out
}
