//! `clpe delete -f FILE` (every document the file names, all or nothing) or
//! `clpe delete KIND NAME [-n NS]`.

use anyhow::{Result, bail};
use clpe_core::Kind;
use serde_json::{Value, json};

use crate::Exit;
use crate::client::{Client, ServerArgs, print_results, segment};

#[derive(clap::Args)]
pub struct Args {
    /// Delete the documents this file (directory, -) holds.
    #[arg(short = 'f', long = "filename", conflicts_with_all = ["kind", "name"])]
    file: Option<String>,
    /// The kind, as documents spell it (any case).
    #[arg(required_unless_present = "file")]
    kind: Option<String>,
    /// The document's name.
    #[arg(required_unless_present = "file")]
    name: Option<String>,
    /// The namespace of a namespaced kind (default `default`).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    #[command(flatten)]
    server: ServerArgs,
}

/// `{kind, name, namespace}` of every document of the input.
fn references(path: &str) -> Result<Vec<Value>> {
    let mut refs = Vec::new();
    for (file, text) in crate::files::read_inputs(path)? {
        let values = match clpe_core::document::parse_values(&text) {
            Ok(v) => v,
            Err(e) => bail!("{}: {e}", file.display()),
        };
        for (i, v) in values.iter().enumerate() {
            let kind = v.get("kind").and_then(Value::as_str);
            let meta = v.get("metadata");
            let name = meta.and_then(|m| m.get("name")).and_then(Value::as_str);
            let (Some(kind), Some(name)) = (kind, name) else {
                bail!(
                    "{}: document #{}: needs `kind` and `metadata.name`",
                    file.display(),
                    i + 1
                );
            };
            let namespace = meta
                .and_then(|m| m.get("namespace"))
                .and_then(Value::as_str);
            let r = match namespace {
                Some(ns) => json!({"kind": kind, "name": name, "namespace": ns}),
                None => json!({"kind": kind, "name": name}),
            };
            refs.push(r);
        }
    }
    Ok(refs)
}

pub fn run(args: Args) -> Result<Exit> {
    let client = Client::new(&args.server);
    let reply = match (&args.file, &args.kind, &args.name) {
        (Some(file), _, _) => {
            let refs = references(file)?;
            if refs.is_empty() {
                eprintln!("{file}: no documents");
                return Ok(Exit::Failed);
            }
            client.post(
                "/v1/delete",
                "application/json",
                &serde_json::to_vec(&refs)?,
                true,
            )?
        }
        (None, Some(kind), Some(name)) => {
            let namespaced = Kind::parse(kind).is_none_or(Kind::is_namespaced);
            let path = match (&args.namespace, namespaced) {
                (Some(ns), true) => {
                    format!("/v1/{}/{}/{}", segment(kind), segment(ns), segment(name))
                }
                (Some(_), false) => bail!("a {kind} is cluster-wide: drop -n"),
                (None, _) => format!("/v1/{}/{}", segment(kind), segment(name)),
            };
            client.delete(&path)?
        }
        _ => bail!("name the documents: -f FILE, or KIND NAME"),
    };
    if !reply.is_success() {
        eprintln!("refused: {}", reply.error_line());
        return Ok(Exit::Failed);
    }
    print_results(&reply)?;
    Ok(Exit::Ok)
}
