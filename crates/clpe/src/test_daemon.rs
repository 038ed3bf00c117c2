//! `clpe test --daemon`: a fresh `clpe serve` per suite (this executable, a temporary
//! data directory, ephemeral ports), and the scenario runner's [`Target`] over its HTTP
//! API, so the corpus holds the daemon to the same answers as the library.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use clpe_core::scenario::{DocRef, Target};
use serde_json::{Value, json};

use crate::client::{Client, Reply, segment};

/// A daemon started for one suite; killed and its data directory removed on drop.
pub struct DaemonProcess {
    child: Child,
    pub http: String,
    /// The gRPC listener, `host:port`.
    pub grpc: String,
    _dir: tempfile::TempDir,
}

impl DaemonProcess {
    pub fn start(local_peer: Option<&str>) -> Result<(DaemonProcess, String)> {
        let dir = tempfile::Builder::new()
            .prefix("clpe-test-")
            .tempdir()
            .context("making a data directory")?;
        let exe = std::env::current_exe().context("finding the clpe executable")?;
        let mut command = Command::new(exe);
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"])
            .env("CLPE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(peer) = local_peer {
            command.args(["--local-peer", peer]);
        }
        let mut child = command.spawn().context("starting `clpe serve`")?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no standard output"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            // Keep reading so the daemon never writes into a closed pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Some(Ok(line))) => line,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("`clpe serve` did not report its addresses ({other:?})");
            }
        };
        let http = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("http="))
            .ok_or_else(|| anyhow!("unexpected first line from `clpe serve`: {line}"))?
            .to_owned();
        let grpc = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("grpc="))
            .unwrap_or_default()
            .to_owned();
        let token = std::fs::read_to_string(dir.path().join("data").join("token"))
            .context("reading the token")?;
        Ok((
            DaemonProcess {
                child,
                http: format!("http://{http}"),
                grpc,
                _dir: dir,
            },
            token.trim().to_owned(),
        ))
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The scenario runner's target over a daemon's HTTP API.
pub struct HttpTarget {
    client: Client,
    _daemon: DaemonProcess,
}

impl HttpTarget {
    pub fn start(local_peer: Option<&str>) -> Result<HttpTarget> {
        let (daemon, token) = DaemonProcess::start(local_peer)?;
        let client = Client::with_token(&daemon.http, Some(token));
        Ok(HttpTarget {
            client,
            _daemon: daemon,
        })
    }
}

fn outcome(reply: Result<Reply>) -> Result<Value, String> {
    let reply = reply.map_err(|e| format!("{e:#}"))?;
    if !reply.is_success() {
        return Err(reply.error_line());
    }
    reply.json().map_err(|e| format!("{e:#}"))
}

impl Target for HttpTarget {
    fn apply(&mut self, docs: &[Value]) -> Result<(), String> {
        let body = serde_json::to_vec(docs).map_err(|e| e.to_string())?;
        outcome(
            self.client
                .post("/v1/apply", "application/json", &body, true),
        )
        .map(|_| ())
    }

    fn delete(&mut self, refs: &[DocRef]) -> Result<(), String> {
        let reply = match refs {
            [one] => {
                let path = match &one.namespace {
                    Some(ns) => format!(
                        "/v1/{}/{}/{}",
                        segment(&one.kind),
                        segment(ns),
                        segment(&one.name)
                    ),
                    None => format!("/v1/{}/{}", segment(&one.kind), segment(&one.name)),
                };
                self.client.delete(&path)
            }
            many => {
                let list: Vec<Value> = many
                    .iter()
                    .map(|r| json!({"kind": r.kind, "name": r.name, "namespace": r.namespace}))
                    .collect();
                let body = serde_json::to_vec(&list).map_err(|e| e.to_string())?;
                self.client
                    .post("/v1/delete", "application/json", &body, true)
            }
        };
        outcome(reply).map(|_| ())
    }

    fn advance(&mut self, _nanos: u64) -> Result<(), String> {
        Err("`advance` needs the virtual clock: this suite runs in-process".to_owned())
    }

    fn decide(&mut self, event: &Value) -> Result<Value, String> {
        let body = serde_json::to_vec(event).map_err(|e| e.to_string())?;
        outcome(
            self.client
                .post("/v1/decide", "application/json", &body, false),
        )
    }
}
