//! `clpe decide --policies FILE EVENT.json [--explain]`: one decision, offline.

use anyhow::{Context as _, Result};
use clpe_core::{DecideOptions, Engine, EngineConfig, Event, PeerName, Time};

use crate::Exit;

#[derive(clap::Args)]
pub struct Args {
    /// Documents to decide against (file, directory or -).
    #[arg(long)]
    policies: String,
    /// The event, as a JSON file (or - for standard input).
    event: String,
    /// The engine's own peer.
    #[arg(long, default_value = "local")]
    local_peer: String,
    /// Attach the trace: every agent run, what it saw and did.
    #[arg(long)]
    explain: bool,
}

pub fn run(args: Args) -> Result<Exit> {
    let docs = match crate::files::load_documents(&args.policies)? {
        Ok(d) => d,
        Err(e) => {
            eprintln!("invalid: {e}");
            return Ok(Exit::Failed);
        }
    };
    let config = EngineConfig { local_peer: PeerName::from(args.local_peer.as_str()), loader: crate::loader(), ..EngineConfig::default() };
    let engine = Engine::new(config);
    if let Err(e) = engine.apply(docs) {
        eprintln!("invalid: {e}");
        return Ok(Exit::Failed);
    }
    let text = match args.event.as_str() {
        "-" => std::io::read_to_string(std::io::stdin()).context("reading standard input")?,
        path => std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?,
    };
    let event = match Event::from_json(&text) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("{e}");
            return Ok(Exit::Failed);
        }
    };
    let response = match engine.decide(&event, Time::ZERO, DecideOptions { explain: args.explain, dry_run: false }) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return Ok(Exit::Failed);
        }
    };
    println!("{}", serde_json::to_string_pretty(&response)?);
    Ok(Exit::Ok)
}
