//! `clpe serve --config FILE`: the TOML file's keys, flags over the file, and a file
//! with an unknown key refused with its path.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::Daemon;
use serde_json::{Value, json};

fn ingress() -> Value {
    json!({"type": "NewConnection", "direction": "ingress", "src_peer": "P0", "dst_service": "echo", "dst_namespace": "ns1"})
}

#[test]
fn a_config_file_sets_what_flags_leave_out() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("clpe.toml");
    // The file's addresses are overridden by the helper's `--listen 127.0.0.1:0` flags.
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:1\"\nlocal_peer = \"P1\"\nlog_format = \"json\"\ndecision_log = 2\n",
    )
    .unwrap();
    let d = Daemon::start_with(dir.path(), &["--config", config.to_str().unwrap()]);
    let policy = r#"
kind: Peer
metadata: {name: P0}
---
kind: Export
metadata: {name: echo, namespace: ns1}
---
kind: AccessPolicy
metadata: {name: only-to-p1, namespace: ns1}
spec:
  action: allow
  from: [{workloadSelector: {}}]
  to: [{workloadSelector: {matchLabels: {peer.clusterlink.net/name: P1}}}]
"#;
    assert_eq!(d.apply(policy).0, 200);
    for _ in 0..3 {
        assert_eq!(
            d.decide(&ingress()).1["matched_by"],
            "ns1/only-to-p1",
            "the local peer is P1"
        );
    }
    assert_eq!(d.get("/v1/decisions").1.as_array().unwrap().len(), 2);
    let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap();
    let first = log.lines().next().unwrap();
    let line: Value = serde_json::from_str(first)
        .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {first}"));
    assert!(line["fields"].is_object(), "{line}");
}

#[test]
fn a_bad_config_file_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("clpe.toml");
    std::fs::write(&config, "lissen = \"127.0.0.1:1\"\n").unwrap();
    let out = std::process::Command::new(common::CLPE)
        .args(["serve", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("clpe.toml") && stderr.contains("lissen"),
        "{stderr}"
    );
}
