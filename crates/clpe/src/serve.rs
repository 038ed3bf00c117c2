//! `clpe serve`: the daemon. Flags over the TOML file over the defaults; logs to
//! standard error (`CLPE_LOG` filters them, e.g. `debug` or `clpe_server=debug,info`);
//! `listening http=ADDR grpc=ADDR` on standard output once ready.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clpe_server::{FileConfig, LogFormat, ServerConfig};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::Exit;

#[derive(clap::Args)]
pub struct Args {
    /// A TOML file with the same keys as these flags, in snake case (`data_dir`, `listen`, ...).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the store and the operator token live (default: $XDG_DATA_HOME/clpe or ~/.local/share/clpe).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The HTTP address (default 127.0.0.1:7080; port 0 picks a free one).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// The gRPC address (default 127.0.0.1:7081).
    #[arg(long)]
    grpc_listen: Option<SocketAddr>,
    /// The engine's own peer (default `local`).
    #[arg(long)]
    local_peer: Option<String>,
    /// Decision-log entries kept in memory (default 1024).
    #[arg(long)]
    decision_log: Option<usize>,
    /// Log lines as `text` (default) or `json`.
    #[arg(long)]
    log_format: Option<LogFormat>,
    /// Seeds `random` and `weighted` balancing (default 0).
    #[arg(long)]
    seed: Option<u64>,
    /// The longest a request may take, in seconds (default 30).
    #[arg(long)]
    request_timeout_secs: Option<u64>,
    /// Apply a small demo policy set when the store holds nothing else, and print a
    /// command to try it.
    #[arg(long)]
    demo: bool,
}

pub fn run(args: Args) -> Result<Exit> {
    let file = match &args.config {
        Some(path) => FileConfig::read(path)?,
        None => FileConfig::default(),
    };
    let flags = FileConfig {
        data_dir: args.data_dir,
        listen: args.listen,
        grpc_listen: args.grpc_listen,
        local_peer: args.local_peer,
        decision_log: args.decision_log,
        log_format: args.log_format,
        seed: args.seed,
        request_timeout_secs: args.request_timeout_secs,
        demo: args.demo.then_some(true),
    };
    let config = ServerConfig::settle(file.overridden_by(flags))?;
    init_tracing(config.log_format)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("clpe-serve")
        .build()
        .context("starting the async runtime")?;
    clpe_server::daemon::set_after_batch(crate::release_free_memory);
    runtime.block_on(clpe_server::run(config, crate::loader()))?;
    Ok(Exit::Ok)
}

fn init_tracing(format: LogFormat) -> Result<()> {
    let filter: tracing_subscriber::filter::Targets = std::env::var("CLPE_LOG")
        .unwrap_or_else(|_| "info".to_owned())
        .parse()
        .context("CLPE_LOG is not a log filter (try `info` or `clpe_server=debug,info`)")?;
    let registry = tracing_subscriber::registry().with(filter);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let result = match format {
        LogFormat::Text => registry.with(layer).try_init(),
        LogFormat::Json => registry.with(layer.json()).try_init(),
    };
    result.context("setting up logging")
}
