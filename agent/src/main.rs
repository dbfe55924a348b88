//! The `sidekick` binary: CLI, configuration, supervisor, collectors and the
//! `receive` command. It wires the `pipeline` and `outputs` crates and holds
//! no logic of theirs.
#![forbid(unsafe_code)]

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
        Command::Run(args) => match run::run(args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("sidekick: {e:#}");
                if e.downcast_ref::<config::ConfigError>().is_some() {
                    2
                } else {
                    1
                }
            }
        },
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
