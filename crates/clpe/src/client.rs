//! The online verbs' HTTP client: the daemon at `--server`, the operator token from
//! `--token`, `CLPE_TOKEN` or the default data directory, and errors that say what to do.

use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use serde_json::Value;

/// Where the daemon is and how to prove the right to write.
#[derive(clap::Args, Clone, Debug)]
pub struct ServerArgs {
    /// The daemon's HTTP address.
    #[arg(long, env = "CLPE_SERVER", default_value = "http://127.0.0.1:7080")]
    pub server: String,
    /// The operator token (default: the file `token` in the default data directory).
    #[arg(long, env = "CLPE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// The daemon's answer to one request.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<Value> {
        serde_json::from_str(&self.body)
            .with_context(|| format!("the daemon's answer is not JSON: {}", self.body))
    }

    /// The error body `{error, document, field, message}` as one line.
    pub fn error_line(&self) -> String {
        let Ok(Value::Object(body)) = serde_json::from_str::<Value>(&self.body) else {
            return format!("HTTP {}: {}", self.status, self.body.trim());
        };
        let text = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let mut line = format!("{} ({})", text("error"), self.status);
        for part in [text("document"), text("field"), text("message")] {
            if !part.is_empty() {
                line.push_str(": ");
                line.push_str(&part);
            }
        }
        line
    }
}

pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// The largest answer read (a `get` of a big policy set).
const MAX_REPLY_BYTES: u64 = 256 << 20;

impl Client {
    pub fn new(args: &ServerArgs) -> Client {
        Client::with_token(&args.server, args.token.clone())
    }

    pub fn with_token(server: &str, token: Option<String>) -> Client {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build();
        Client {
            base: server.trim_end_matches('/').to_owned(),
            token,
            agent: ureq::Agent::new_with_config(config),
        }
    }

    /// The operator token: given, or read from the default data directory.
    fn token(&self) -> Result<String> {
        if let Some(t) = &self.token {
            return Ok(t.clone());
        }
        let Some(dir) = clpe_server::default_data_dir() else {
            return Err(anyhow!("no operator token: pass --token or set CLPE_TOKEN"));
        };
        let path = dir.join(clpe_server::config::TOKEN_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "no operator token: pass --token, set CLPE_TOKEN, or run `clpe serve` with the default data directory (reading {})",
                path.display()
            )
        })?;
        Ok(text.trim().to_owned())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn finish(
        &self,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Reply> {
        let mut response = result.map_err(|e| self.unreachable(e))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_REPLY_BYTES)
            .read_to_string()
            .with_context(|| format!("reading the answer of {}", self.base))?;
        Ok(Reply { status, body })
    }

    fn unreachable(&self, e: ureq::Error) -> anyhow::Error {
        let refused = matches!(&e, ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused)
            || matches!(e, ureq::Error::ConnectionFailed);
        if refused {
            anyhow!(
                "cannot reach the daemon at {}: connection refused (is `clpe serve` running? start it, or point --server at it)",
                self.base
            )
        } else {
            anyhow!("cannot talk to the daemon at {}: {e}", self.base)
        }
    }

    pub fn get(&self, path: &str) -> Result<Reply> {
        self.finish(self.agent.get(self.url(path)).call())
    }

    /// A POST; `write` ones carry the operator token.
    pub fn post(&self, path: &str, content_type: &str, body: &[u8], write: bool) -> Result<Reply> {
        let mut request = self
            .agent
            .post(self.url(path))
            .header("content-type", content_type);
        if write {
            request = request.header("authorization", format!("Bearer {}", self.token()?));
        }
        self.finish(request.send(body))
    }

    pub fn delete(&self, path: &str) -> Result<Reply> {
        let request = self
            .agent
            .delete(self.url(path))
            .header("authorization", format!("Bearer {}", self.token()?));
        self.finish(request.call())
    }
}

/// Prints what a write did, one document a line, like `kubectl`.
pub fn print_results(reply: &Reply) -> Result<()> {
    let body = reply.json()?;
    for r in body
        .get("results")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let document = r.get("document").and_then(Value::as_str).unwrap_or("?");
        let result = r.get("result").and_then(Value::as_str).unwrap_or("?");
        println!("{document} {result}");
    }
    Ok(())
}

/// A path segment, percent-encoded where it must be.
pub fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
