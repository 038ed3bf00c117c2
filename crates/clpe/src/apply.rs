//! `clpe apply -f FILE|DIR|-`: applies documents to the daemon as one batch (all or
//! nothing), WasmAgent `moduleFile`s inlined from the client's disk.

use anyhow::Result;

use crate::Exit;
use crate::client::{Client, ServerArgs, print_results};

#[derive(clap::Args)]
pub struct Args {
    /// A file, a directory of .yaml/.yml/.json files, or - for standard input.
    #[arg(short = 'f', long = "filename")]
    file: String,
    #[command(flatten)]
    server: ServerArgs,
}

pub fn run(args: Args) -> Result<Exit> {
    let mut batch = Vec::new();
    for (file, text) in crate::files::read_inputs(&args.file)? {
        match crate::files::values(&file, &text) {
            Ok(values) => batch.extend(values),
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                return Ok(Exit::Failed);
            }
        }
    }
    if batch.is_empty() {
        eprintln!("{}: no documents", args.file);
        return Ok(Exit::Failed);
    }
    let body = serde_json::to_vec(&batch)?;
    let client = Client::new(&args.server);
    let reply = client.post("/v1/apply", "application/json", &body, true)?;
    if !reply.is_success() {
        eprintln!("refused: {}", reply.error_line());
        return Ok(Exit::Failed);
    }
    print_results(&reply)?;
    Ok(Exit::Ok)
}
