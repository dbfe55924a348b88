//! The `sidekick` binary: CLI, configuration, supervisor, collectors and the
//! `receive` command. It wires the `pipeline` and `outputs` crates and holds
//! no logic of theirs.
// `deny`, not `forbid`: two calls in `trim` (a `madvise` and a
// `malloc_trim`, each behind a safe wrapper) are allowed below.
#![deny(unsafe_code)]

mod config;
mod formats;
mod metrics;
mod receive;
mod reload;
mod resource;
mod run;
mod signal;
mod spool;
mod tail;
mod target;
mod telemetry;

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// A sidecar that tails one application's logs, samples its process and
/// cgroup, and ships both as compressed OTLP/HTTP batches.
#[derive(Debug, Parser)]
#[command(name = "sidekick", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent (with no output configured, records go to stdout as NDJSON).
    Run(RunArgs),
    /// Validate a config file: exit 0 when valid, 2 with FILE:LINE:COL on error.
    Check {
        /// The config file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// An OTLP/HTTP receiver writing DIR/logs.ndjson and DIR/metrics.ndjson.
    Receive {
        /// Address to listen on (port 0 picks a free port and prints it).
        #[arg(long, default_value = "127.0.0.1:4318")]
        listen: SocketAddr,
        /// Directory the NDJSON files are written to.
        #[arg(long, default_value = "./sidekick-received")]
        out: PathBuf,
    },
    /// A running agent's health in a short table (from its telemetry
    /// endpoint): exit 0 ready, 3 not ready, 1 not reachable.
    Status {
        /// The agent's `telemetry.listen` address.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464")]
        telemetry: String,
    },
}

/// Flags of `sidekick run`; they extend or override the config file.
#[derive(Debug, Args, Default)]
pub struct RunArgs {
    /// The config file (YAML).
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// Attach to this process.
    #[arg(long, conflicts_with_all = ["pid_file", "process_name"])]
    pub pid: Option<u32>,
    /// Attach to the process whose PID this file holds.
    #[arg(long, conflicts_with = "process_name")]
    pub pid_file: Option<PathBuf>,
    /// Attach to the process whose command line matches this regex.
    #[arg(long)]
    pub process_name: Option<String>,
    /// Tail files matching this glob (repeatable).
    #[arg(long = "log", value_name = "GLOB")]
    pub logs: Vec<String>,
    /// Ship to this OTLP/HTTP endpoint (`/v1/logs` and `/v1/metrics` are appended).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Where checkpoints are kept (overrides `data_dir`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Launch this command as the target and exit with its exit code.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let code = match cli.command {
        Command::Check { config } => check(&config),
        Command::Run(args) => {
            trim::start_later();
            match run::run(args) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("sidekick: {e:#}");
                    if e.downcast_ref::<config::ConfigError>().is_some() {
                        2
                    } else {
                        1
                    }
                }
            }
        }
        Command::Receive { listen, out } => match receive_main(listen, out) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("sidekick receive: {e:#}");
                1
            }
        },
        Command::Status { telemetry } => telemetry::status::run(&telemetry),
    };
    ExitCode::from(code)
}

fn check(path: &std::path::Path) -> u8 {
    match config::Config::load(path) {
        Ok(cfg) => {
            for w in cfg.warnings() {
                eprintln!("{}: warning: {w}", path.display());
            }
            println!("{}: ok", path.display());
            0
        }
        Err(e) => {
            eprintln!("{e}");
            2
        }
    }
}

fn receive_main(listen: SocketAddr, out: PathBuf) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let opts = receive::ReceiveOptions::new(listen, out);
        receive::run(opts, signal::terminated()).await
    })
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SIDEKICK_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .compact()
        .init();
}

/// Lets go of the executable's pages that only startup used.
///
/// An idle sidekick's anonymous memory is about 2 MiB, but starting it
/// (argument and YAML parsing, regex compilation, the HTTP client, the
/// runtime) touches several MiB of the binary's code and read-only data,
/// which stay mapped, and counted in its RSS and its cgroup's memory, for
/// as long as it runs. Some seconds after start this thread asks the
/// kernel to page them out (`MADV_PAGEOUT`): clean file pages, dropped and
/// read back from the binary on their next use, so what a running agent
/// keeps is the code it runs. Pages shared with other processes stay. The
/// contents never change; on a kernel without `MADV_PAGEOUT` (before 5.4)
/// nothing happens.
mod trim {
    use std::time::Duration;

    /// Startup is over by then (a config that watches many files included).
    const AFTER: Duration = Duration::from_secs(5);

    /// Starts the thread that pages out the startup code after [`AFTER`].
    pub(crate) fn start_later() {
        let spawned = std::thread::Builder::new()
            .name("sidekick-trim".into())
            .spawn(|| {
                std::thread::sleep(AFTER);
                let bytes = page_out_executable();
                tracing::debug!(bytes, "executable pages handed back to the kernel");
                release_free_heap();
            });
        if let Err(e) = spawned {
            tracing::debug!(error = %e, "no trim thread");
        }
    }

    /// Pages out every read-only mapping of our own executable; returns the
    /// bytes of the mappings the kernel accepted.
    fn page_out_executable() -> usize {
        let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
            return 0;
        };
        let Some(exe) = exe.to_str() else {
            return 0;
        };
        let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
            return 0;
        };
        maps.lines()
            .filter_map(|line| readonly_range(line, exe))
            .filter(|&(start, len)| page_out(start, len))
            .map(|(_, len)| len)
            .sum()
    }

    /// `(start, len)` of a `/proc/self/maps` line mapping `path` without
    /// write permission.
    pub(super) fn readonly_range(line: &str, path: &str) -> Option<(usize, usize)> {
        let rest = line.strip_suffix(path)?;
        if !rest.ends_with(' ') {
            return None;
        }
        let mut fields = rest.split_ascii_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        let perms = fields.next()?;
        if perms.as_bytes().get(1) != Some(&b'-') {
            return None;
        }
        let start = usize::from_str_radix(start, 16).ok()?;
        let end = usize::from_str_radix(end, 16).ok()?;
        (end > start).then_some((start, end - start))
    }

    /// Hands the free pages of every malloc arena back to the kernel: what
    /// startup allocated and freed (opening a thousand files, their first
    /// reads) otherwise stays resident, a few MiB the agent never uses
    /// again.
    #[cfg(target_env = "gnu")]
    #[allow(unsafe_code)]
    fn release_free_heap() {
        // SAFETY: malloc_trim only gives back pages that hold no allocation
        // (glibc takes its arena locks); every live allocation keeps its
        // address and contents.
        unsafe {
            libc::malloc_trim(0);
        }
    }

    #[cfg(not(target_env = "gnu"))]
    fn release_free_heap() {}

    /// `madvise(MADV_PAGEOUT)` on one mapping; whether the kernel took it.
    #[allow(unsafe_code)]
    fn page_out(start: usize, len: usize) -> bool {
        // SAFETY: MADV_PAGEOUT only reclaims the pages of the range; it
        // never changes what they hold. The range is a whole read-only,
        // file-backed mapping of our executable, taken from
        // /proc/self/maps (page-aligned): its pages are clean and read back
        // from the file on their next access. No memory is unmapped or
        // freed, so no pointer or reference into it is invalidated.
        unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_PAGEOUT) == 0 }
    }

    #[cfg(test)]
    mod tests {
        use super::readonly_range;

        #[test]
        fn only_read_only_mappings_of_the_executable_are_taken() {
            let exe = "/usr/bin/side kick";
            let line = |perms: &str, path: &str| {
                format!("5568412e0000-556841529000 {perms} 00000000 00:2b 1234          {path}")
            };
            let want = Some((0x5568412e0000, 0x556841529000 - 0x5568412e0000));
            assert_eq!(readonly_range(&line("r-xp", exe), exe), want);
            assert_eq!(readonly_range(&line("r--p", exe), exe), want);
            assert_eq!(readonly_range(&line("rw-p", exe), exe), None);
            assert_eq!(
                readonly_range(&line("r--p", "/usr/lib/libc.so.6"), exe),
                None
            );
            assert_eq!(
                readonly_range(&line("r--p", "/usr/bin/xside kick"), exe),
                None
            );
            assert_eq!(readonly_range(&line("r--p", ""), exe), None);
        }
    }
}
