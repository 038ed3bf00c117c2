//! `clpe validate -f FILE|DIR|-`: checks documents offline, including the checks across
//! documents (references, subscriptions) that applying them to a new engine makes.

use anyhow::Result;
use clpe_core::{Engine, EngineConfig};

use crate::Exit;

#[derive(clap::Args)]
pub struct Args {
    /// A file, a directory of .yaml/.yml/.json files, or - for standard input.
    #[arg(short = 'f', long = "filename")]
    file: String,
}

pub fn run(args: Args) -> Result<Exit> {
    let docs = match crate::files::load_documents(&args.file)? {
        Ok(d) => d,
        Err(e) => {
            eprintln!("invalid: {e}");
            return Ok(Exit::Failed);
        }
    };
    let n = docs.len();
    let engine = Engine::new(EngineConfig {
        loader: crate::loader(),
        ..EngineConfig::default()
    });
    match engine.apply(docs) {
        Ok(_) => {
            println!("{n} documents valid");
            Ok(Exit::Ok)
        }
        Err(e) => {
            eprintln!("invalid: {e}");
            Ok(Exit::Failed)
        }
    }
}
