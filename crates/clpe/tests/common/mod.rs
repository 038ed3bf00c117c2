//! The real `clpe serve` on loopback with ephemeral ports and a temporary data
//! directory, and a small HTTP client for the tests that drive it.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

pub const CLPE: &str = env!("CARGO_BIN_EXE_clpe");

/// A running daemon; killed on drop.
pub struct Daemon {
    child: Option<Child>,
    pub http: String,
    pub grpc: String,
    pub token: String,
    pub data_dir: PathBuf,
}

impl Daemon {
    /// Starts `clpe serve` on `dir/data` (logs appended to `dir/daemon.log`).
    pub fn start(dir: &Path) -> Daemon {
        Daemon::start_with(dir, &[])
    }

    pub fn start_with(dir: &Path, extra: &[&str]) -> Daemon {
        let data_dir = dir.join("data");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("daemon.log"))
            .unwrap();
        let mut child = Command::new(CLPE)
            .arg("serve")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"])
            .args(extra)
            .env("CLPE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("starting clpe serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Some(Ok(line))) => line,
            other => {
                let _ = child.kill();
                let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
                panic!("clpe serve did not start ({other:?}); log:\n{log}");
            }
        };
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {line}"))
                .to_owned()
        };
        let token = std::fs::read_to_string(data_dir.join("token"))
            .unwrap()
            .trim()
            .to_owned();
        Daemon {
            child: Some(child),
            http: format!("http://{}", field("http=")),
            grpc: format!("http://{}", field("grpc=")),
            token,
            data_dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.http)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        child.wait().unwrap()
    }

    pub fn apply(&self, body: &str) -> (u16, Value) {
        send(
            &self.url("/v1/apply"),
            "POST",
            Some(body),
            Some(&self.token),
        )
    }

    pub fn decide(&self, event: &Value) -> (u16, Value) {
        send(
            &self.url("/v1/decide"),
            "POST",
            Some(&event.to_string()),
            None,
        )
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        send(&self.url(path), "GET", None, None)
    }

    pub fn delete(&self, path: &str) -> (u16, Value) {
        send(&self.url(path), "DELETE", None, Some(&self.token))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn agent() -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build();
    ureq::Agent::new_with_config(config)
}

/// One request; the status and the JSON body (`Null` when the body is not JSON).
pub fn send(url: &str, method: &str, body: Option<&str>, token: Option<&str>) -> (u16, Value) {
    try_send(&agent(), url, method, body, token).unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

pub fn try_send(
    agent: &ureq::Agent,
    url: &str,
    method: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> Result<(u16, Value), ureq::Error> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut response = match method {
        "GET" => agent.get(url).call()?,
        "DELETE" => {
            let mut r = agent.delete(url);
            if let Some(a) = &auth {
                r = r.header("authorization", a);
            }
            r.call()?
        }
        _ => {
            let mut r = agent.post(url).header("content-type", "application/json");
            if let Some(a) = &auth {
                r = r.header("authorization", a);
            }
            r.send(body.unwrap_or(""))?
        }
    };
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string()?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// The error body has exactly the four fields of SPEC §4.
pub fn assert_error_body(body: &Value, error: &str) {
    let map = body
        .as_object()
        .unwrap_or_else(|| panic!("not an error body: {body}"));
    let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["document", "error", "field", "message"], "{body}");
    assert_eq!(body["error"], error, "{body}");
    assert!(!body["message"].as_str().unwrap().is_empty(), "{body}");
}

/// A small xorshift generator: enough randomness for kill moments, no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn seeded() -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        Rng(nanos | 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}
