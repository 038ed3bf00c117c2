//! The online verbs against the real daemon: `clpe apply`, `get`, `delete`, `decide`,
//! the token found in the default data directory, and a clear error with no daemon.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use common::{CLPE, Daemon};
use serde_json::Value;

const POLICIES: &str = r#"
kind: Peer
metadata: {name: P0}
---
kind: Export
metadata: {name: echo, namespace: ns1}
---
kind: AccessPolicy
metadata: {name: allow-all, namespace: ns1}
spec: {action: allow, from: [{workloadSelector: {}}], to: [{workloadSelector: {}}]}
"#;

const EVENT: &str = r#"{"type": "NewConnection", "direction": "ingress", "src_peer": "P0", "dst_service": "echo", "dst_namespace": "ns1"}"#;

/// Runs `clpe ARGS` against `d`; the token comes from the default data directory.
fn clpe(d: &Daemon, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(CLPE)
        .args(args)
        .args(["--server", &d.http])
        .env("CLPE_DATA_DIR", &d.data_dir)
        .env_remove("CLPE_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn apply_get_decide_delete() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let file = dir.path().join("policies.yaml");
    std::fs::write(&file, POLICIES).unwrap();
    let event = dir.path().join("event.json");
    std::fs::write(&event, EVENT).unwrap();

    let out = clpe(&d, &["apply", "-f", file.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines: Vec<&str> = stdout.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        [
            "AccessPolicy ns1/allow-all created",
            "Export ns1/echo created",
            "Peer P0 created"
        ]
    );

    let out = clpe(&d, &["get", "accesspolicy"], None);
    assert!(out.status.success(), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(table.starts_with("NAMESPACE"), "{table}");
    assert!(
        table.contains("ns1") && table.contains("allow-all") && table.contains("action=allow"),
        "{table}"
    );

    let out = clpe(
        &d,
        &[
            "get",
            "AccessPolicy",
            "allow-all",
            "-n",
            "ns1",
            "-o",
            "json",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["spec"]["action"], "allow");
    let out = clpe(&d, &["get", "peer", "-o", "yaml"], None);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("name: P0"),
        "{}",
        text(&out)
    );

    let out = clpe(&d, &["decide", event.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", text(&out));
    let response: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(response["matched_by"], "ns1/allow-all");
    let out = clpe(&d, &["decide", "--explain", "-"], Some(EVENT));
    let response: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(response["trace"].is_array(), "{response}");

    let out = clpe(
        &d,
        &["delete", "AccessPolicy", "allow-all", "-n", "ns1"],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "AccessPolicy ns1/allow-all deleted\n"
    );
    let out = clpe(&d, &["decide", event.to_str().unwrap()], None);
    let response: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(response["decision"], "deny");

    let out = clpe(&d, &["delete", "-f", file.to_str().unwrap()], None);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the policy is already gone: all or nothing: {}",
        text(&out)
    );
    assert!(text(&out).contains("not_found"), "{}", text(&out));
    assert_eq!(d.get("/v1/peer/P0").0, 200);

    let out = clpe(&d, &["get", "peer", "P9"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("Peer P9"), "{}", text(&out));
}

#[test]
fn refusals_are_reported_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let out = clpe(
        &d,
        &["apply", "-f", "-"],
        Some("kind: AccessPolicy\nmetadata: {name: bad}\nspec: {action: maybe}\n"),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("AccessPolicy default/bad"),
        "{}",
        text(&out)
    );
    assert_eq!(d.get("/v1/accesspolicy").1, serde_json::json!([]));

    let out = Command::new(CLPE)
        .args(["apply", "-f", "-", "--server", &d.http, "--token", "wrong"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

#[test]
fn no_daemon_is_a_clear_error() {
    // A port nothing listens on: bind one, then let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(CLPE)
        .args([
            "get",
            "peer",
            "--server",
            &format!("http://127.0.0.1:{port}"),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let message = text(&out);
    assert!(
        message.contains("cannot reach the daemon") && message.contains("clpe serve"),
        "{message}"
    );
}
