//! `clpe get KIND [NAME] [-n NS] [-o table|yaml|json]`: documents from the daemon.

use anyhow::{Result, bail};
use clpe_core::Kind;
use serde_json::Value;

use crate::Exit;
use crate::client::{Client, ServerArgs, segment};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Output {
    Table,
    Yaml,
    Json,
}

#[derive(clap::Args)]
pub struct Args {
    /// The kind, as documents spell it (any case).
    kind: String,
    /// One document's name (default: list them all).
    name: Option<String>,
    /// The namespace of a namespaced kind (one document: default `default`; a list: all).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    output: Output,
    #[command(flatten)]
    server: ServerArgs,
}

pub fn run(args: Args) -> Result<Exit> {
    let kind = Kind::parse(&args.kind);
    let namespaced = kind.is_none_or(Kind::is_namespaced);
    if args.namespace.is_some() && !namespaced {
        bail!("a {} is cluster-wide: drop -n", args.kind);
    }
    let k = segment(&args.kind);
    let path = match (&args.name, &args.namespace) {
        (Some(name), Some(ns)) => format!("/v1/{k}/{}/{}", segment(ns), segment(name)),
        (Some(name), None) => format!("/v1/{k}/{}", segment(name)),
        (None, Some(ns)) => format!("/v1/{k}?namespace={}", segment(ns)),
        (None, None) => format!("/v1/{k}"),
    };
    let reply = Client::new(&args.server).get(&path)?;
    if !reply.is_success() {
        eprintln!("{}", reply.error_line());
        return Ok(Exit::Failed);
    }
    let body = reply.json()?;
    let docs: Vec<Value> = match body {
        Value::Array(items) => items,
        one => vec![one],
    };
    match args.output {
        Output::Json => {
            let shown = if args.name.is_some() {
                docs.into_iter().next().unwrap_or(Value::Null)
            } else {
                Value::Array(docs)
            };
            println!("{}", serde_json::to_string_pretty(&shown)?);
        }
        Output::Yaml => print!("{}", serde_saphyr::to_string_multiple(&docs)?),
        Output::Table if docs.is_empty() => eprintln!("no {} found", args.kind),
        Output::Table => print!("{}", table(&docs, namespaced)),
    }
    Ok(Exit::Ok)
}

/// One line a document: namespace (for namespaced kinds), name, and a summary of the spec.
fn table(docs: &[Value], namespaced: bool) -> String {
    let mut rows: Vec<Vec<String>> = Vec::with_capacity(docs.len() + 1);
    let mut header = vec!["NAME".to_owned(), "SUMMARY".to_owned()];
    if namespaced {
        header.insert(0, "NAMESPACE".to_owned());
    }
    rows.push(header);
    for doc in docs {
        let meta = |k: &str| {
            doc.get("metadata")
                .and_then(|m| m.get(k))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let mut row = vec![meta("name"), summary(doc)];
        if namespaced {
            row.insert(0, meta("namespace"));
        }
        rows.push(row);
    }
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(String::len)
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// The spec fields that tell documents of a kind apart, `key=value` separated by spaces.
fn summary(doc: &Value) -> String {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
    let spec = doc.get("spec").cloned().unwrap_or(Value::Null);
    let fields: &[&str] = match kind {
        "AccessPolicy" | "PrivilegedAccessPolicy" => &["action", "dryRun"],
        "Subscription" => &["event", "agent", "priority", "failureMode"],
        "Peer" => &["reachable"],
        "Import" => &["lbScheme"],
        "LoadBalancingPolicy" => &["import", "scheme"],
        "ConnectionLimitPolicy" => &["maxConnections", "leaseSeconds", "dryRun"],
        "RateLimitPolicy" => &["connectionsPerSecond", "burst", "bandwidth", "dryRun"],
        _ => &[],
    };
    let mut parts: Vec<String> = fields
        .iter()
        .filter_map(|f| {
            spec.get(*f).map(|v| {
                format!(
                    "{f}={}",
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                )
            })
        })
        .collect();
    if kind == "Import" {
        let peers: Vec<&str> = spec
            .get("sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|s| s.get("peer").and_then(Value::as_str))
            .collect();
        parts.push(format!("sources={}", peers.join(",")));
    }
    parts.join(" ")
}
