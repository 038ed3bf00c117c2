//! `clpe`: the ClusterLink policy engine's command line and daemon.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOC: clpe_alloc::MiMalloc = clpe_alloc::MiMalloc;

/// Gives memory the allocator holds free back to the system (after a large batch).
pub fn release_free_memory() {
    #[cfg(feature = "mimalloc")]
    clpe_alloc::release_free_memory();
}

mod apply;
mod bench;
mod client;
mod decide;
mod delete;
mod files;
mod floor;
mod get;
mod loadgen;
mod serve;
mod test;
mod test_daemon;
mod validate;

#[derive(Parser)]
#[command(name = "clpe", version, about = "The ClusterLink policy engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: the decision and operator APIs over the embedded store.
    Serve(serve::Args),
    /// Apply documents to the daemon, as one batch.
    Apply(apply::Args),
    /// Delete documents from the daemon.
    Delete(delete::Args),
    /// Show documents the daemon holds.
    Get(get::Args),
    /// Run policy test files (offline, or through a daemon with --daemon; SPEC §6).
    Test(test::Args),
    /// Validate documents offline.
    Validate(validate::Args),
    /// Decide one event: by the daemon, or offline against documents with --policies.
    Decide(decide::Args),
    /// Measure decisions on a workload, in-process.
    Bench(bench::Args),
    /// Measure decisions over gRPC: a real daemon against a do-nothing server, back to back.
    Loadgen(loadgen::Args),
    /// Print the version.
    Version,
}

/// How a command ended: 0 ok, 1 failures or invalid input, 2 usage or I/O error.
pub enum Exit {
    Ok,
    Failed,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let result = match cli.command {
        Command::Serve(a) => serve::run(a),
        Command::Apply(a) => apply::run(a),
        Command::Delete(a) => delete::run(a),
        Command::Get(a) => get::run(a),
        Command::Test(a) => test::run(a),
        Command::Validate(a) => validate::run(a),
        Command::Decide(a) => decide::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Loadgen(a) => loadgen::run(a),
        Command::Version => {
            println!("clpe {}", env!("CARGO_PKG_VERSION"));
            Ok(Exit::Ok)
        }
    };
    match result {
        Ok(Exit::Ok) => ExitCode::SUCCESS,
        Ok(Exit::Failed) => ExitCode::from(1),
        Err(e) => {
            eprintln!("clpe: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The WASM agent loader: one per process (one wasmtime engine, one epoch ticker
/// thread), made on first use and shared by every engine the process builds, so a
/// module compiled for one `clpe test` suite is not compiled again for the next.
pub fn loader() -> Option<std::sync::Arc<dyn clpe_core::AgentLoader>> {
    static LOADER: std::sync::OnceLock<Option<std::sync::Arc<clpe_wasm::WasmLoader>>> =
        std::sync::OnceLock::new();
    let loader = LOADER.get_or_init(|| match clpe_wasm::WasmLoader::new() {
        Ok(loader) => Some(std::sync::Arc::new(loader)),
        Err(e) => {
            eprintln!("clpe: WASM agents are unavailable: {e}");
            None
        }
    });
    loader
        .clone()
        .map(|l| l as std::sync::Arc<dyn clpe_core::AgentLoader>)
}
