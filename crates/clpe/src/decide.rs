//! `clpe decide EVENT.json [--explain]`: one decision by the daemon at `--server`, or
//! offline against documents with `--policies FILE`.

use anyhow::{Context as _, Result};
use clpe_core::{DecideOptions, Engine, EngineConfig, Event, PeerName, Time};

use crate::Exit;
use crate::client::{Client, ServerArgs};

#[derive(clap::Args)]
pub struct Args {
    /// Decide offline against these documents (file, directory or -) instead of asking the daemon.
    #[arg(long)]
    policies: Option<String>,
    /// The event, as a JSON file (or - for standard input).
    event: String,
    /// The engine's own peer (offline only; the daemon has its own).
    #[arg(long, default_value = "local")]
    local_peer: String,
    /// Attach the trace: every agent run, what it saw and did.
    #[arg(long)]
    explain: bool,
    /// Decide without consuming limits or counting.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    server: ServerArgs,
}

fn read_event(path: &str) -> Result<String> {
    match path {
        "-" => std::io::read_to_string(std::io::stdin()).context("reading standard input"),
        path => std::fs::read_to_string(path).with_context(|| format!("reading {path}")),
    }
}

pub fn run(args: Args) -> Result<Exit> {
    match &args.policies {
        Some(policies) => offline(&args, policies),
        None => online(&args),
    }
}

fn online(args: &Args) -> Result<Exit> {
    let text = read_event(&args.event)?;
    let path = format!(
        "/v1/decide?explain={}&dryRun={}",
        args.explain, args.dry_run
    );
    let reply =
        Client::new(&args.server).post(&path, "application/json", text.as_bytes(), false)?;
    if !reply.is_success() {
        eprintln!("{}", reply.error_line());
        return Ok(Exit::Failed);
    }
    println!("{}", serde_json::to_string_pretty(&reply.json()?)?);
    Ok(Exit::Ok)
}

fn offline(args: &Args, policies: &str) -> Result<Exit> {
    let docs = match crate::files::load_documents(policies)? {
        Ok(d) => d,
        Err(e) => {
            eprintln!("invalid: {e}");
            return Ok(Exit::Failed);
        }
    };
    let config = EngineConfig {
        local_peer: PeerName::from(args.local_peer.as_str()),
        loader: crate::loader(),
        ..EngineConfig::default()
    };
    let engine = Engine::new(config);
    if let Err(e) = engine.apply(docs) {
        eprintln!("invalid: {e}");
        return Ok(Exit::Failed);
    }
    let text = read_event(&args.event)?;
    let event = match Event::from_json(&text) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("{e}");
            return Ok(Exit::Failed);
        }
    };
    let opts = DecideOptions {
        explain: args.explain,
        dry_run: args.dry_run,
    };
    let response = match engine.decide(&event, Time::ZERO, opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return Ok(Exit::Failed);
        }
    };
    println!("{}", serde_json::to_string_pretty(&response)?);
    Ok(Exit::Ok)
}
