//! The harness on a small workload written for it: every engine must decide each event as
//! SPEC §2 and §3.1 say, and a malformed expected file is refused.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// Policies in `ns1` (and Exports in three namespaces): `from: {}` and `to: {}`, a deny
/// naming no export (`p3`), and `p5` applied twice, the second (an allow) winning.
const POLICIES: &str = r#"{"kind": "Peer", "metadata": {"name": "P"}}
---
{"kind": "Export", "metadata": {"name": "e1", "namespace": "ns1"}}
---
{"kind": "Export", "metadata": {"name": "e2", "namespace": "ns1"}}
---
{"kind": "Export", "metadata": {"name": "e3", "namespace": "default"}}
---
{"kind": "Export", "metadata": {"name": "e1", "namespace": "ns2"}}
---
{"kind": "AccessPolicy", "metadata": {"name": "p1", "namespace": "ns1"}, "spec": {"action": "allow", "from": [{"workloadSelector": {}}], "to": [{"workloadSelector": {"matchLabels": {"export.clusterlink.net/name": "e1"}}}]}}
---
{"kind": "AccessPolicy", "metadata": {"name": "p2", "namespace": "ns1"}, "spec": {"action": "allow", "from": [{"workloadSelector": {"matchLabels": {"client.clusterlink.net/service": "s1"}}}], "to": [{"workloadSelector": {}}]}}
---
{"kind": "AccessPolicy", "metadata": {"name": "p3", "namespace": "ns1"}, "spec": {"action": "deny", "from": [{"workloadSelector": {"matchLabels": {"peer.clusterlink.net/name": "bad"}}}], "to": [{"workloadSelector": {}}]}}
---
{"kind": "AccessPolicy", "metadata": {"name": "p4", "namespace": "ns1"}, "spec": {"action": "allow", "from": [{"workloadSelector": {"matchLabels": {"client.clusterlink.net/service": "s2", "peer.clusterlink.net/name": "P"}}}], "to": [{"workloadSelector": {"matchLabels": {"export.clusterlink.net/name": "e2"}}}]}}
---
{"kind": "AccessPolicy", "metadata": {"name": "p5", "namespace": "ns1"}, "spec": {"action": "deny", "from": [{"workloadSelector": {}}], "to": [{"workloadSelector": {"matchLabels": {"export.clusterlink.net/name": "e2"}}}]}}
---
{"kind": "AccessPolicy", "metadata": {"name": "p5", "namespace": "ns1"}, "spec": {"action": "allow", "from": [{"workloadSelector": {"matchLabels": {"client.clusterlink.net/service": "s3"}}}], "to": [{"workloadSelector": {"matchLabels": {"export.clusterlink.net/name": "e2"}}}]}}
"#;

/// Events without a client service, in a namespace without policies, to an export that
/// does not exist, from the denied peer.
const EVENTS: &str = r#"{"type": "NewConnection", "direction": "ingress", "src_peer": "P", "dst_service": "e1", "dst_namespace": "ns1"}
{"type": "NewConnection", "direction": "ingress", "src_peer": "P", "dst_service": "e1"}
{"type": "NewConnection", "direction": "ingress", "src_peer": "P", "src_service": "s1", "dst_service": "e3"}
{"type": "NewConnection", "direction": "ingress", "src_peer": "P", "src_service": "s1", "dst_service": "e1", "dst_namespace": "ns2"}
{"type": "NewConnection", "direction": "ingress", "src_peer": "bad", "src_service": "s1", "dst_service": "e1", "dst_namespace": "ns1"}
{"type": "NewConnection", "direction": "ingress", "src_peer": "P", "src_service": "s1", "dst_service": "e2", "dst_namespace": "ns1"}
{"type": "NewConnection", "direction": "ingress", "src_peer": "P", "dst_service": "e2", "dst_namespace": "ns1"}
{"type": "NewConnection", "direction": "ingress", "src_peer": "Q", "src_service": "s3", "dst_service": "e2", "dst_namespace": "ns1"}
{"type": "NewConnection", "direction": "ingress", "src_peer": "P", "src_service": "s2", "dst_service": "e2", "dst_namespace": "ns1"}
{"type": "NewConnection", "direction": "ingress", "src_peer": "P", "src_service": "s1", "dst_service": "e9", "dst_namespace": "ns1"}
{"type": "NewConnection", "direction": "ingress", "src_peer": "bad", "dst_service": "e1", "dst_namespace": "ns1"}
"#;

/// By the SPEC: `p1` lets anyone reach `ns1/e1`; `p2` lets `s1` reach any export of `ns1`;
/// `p3` denies the peer `bad` (deny overrides allow); `p4` lets `s2` from `P` reach `e2`;
/// `p5`, as applied last, lets `s3` reach `e2`; a service with no Export in its namespace,
/// or a namespace with no policy, is denied.
const EXPECTED: &str = "allow\ndeny\ndeny\ndeny\ndeny\nallow\ndeny\nallow\nallow\ndeny\ndeny\n";

fn workload(name: &str, expected: &str) -> [PathBuf; 3] {
    let dir = std::env::temp_dir().join(format!("clpe-anchors-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let files = [
        dir.join("policies.yaml"),
        dir.join("events.jsonl"),
        dir.join("expected.txt"),
    ];
    for (path, text) in files.iter().zip([POLICIES, EVENTS, expected]) {
        std::fs::write(path, text).unwrap();
    }
    files
}

fn run(files: &[PathBuf; 3]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clpe-anchors"))
        .args(["--budget-ms", "5", "--check", "11", "--policies"])
        .arg(&files[0])
        .arg("--events")
        .arg(&files[1])
        .arg("--expected")
        .arg(&files[2])
        .output()
        .unwrap()
}

#[test]
fn every_engine_decides_as_the_spec_says() {
    let out = run(&workload("agree", EXPECTED));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Vec<&str>> = (stdout.lines())
        .filter(|l| !l.starts_with('#') && !l.starts_with("rules"))
        .map(|l| l.split('\t').collect())
        .collect();
    let engines: Vec<&str> = rows.iter().map(|r| r[1]).collect();
    assert_eq!(
        engines,
        [
            "floor",
            "clpe",
            "cedar",
            "rego-indexed",
            "rego",
            "floor",
            "clpe"
        ]
    );
    for row in &rows {
        // 5 rules (p5 once), 4 allows, every decision checked and none otherwise.
        assert_eq!(row[0], "5", "{row:?}");
        assert_eq!(row[5], "4", "{row:?}");
        assert!(row[6].parse::<usize>().unwrap() >= 11, "{row:?}");
        assert_eq!(row[7], "0", "{row:?}");
    }
}

#[test]
fn a_wrong_expectation_fails_the_run() {
    // Event 6 (`s1` to `ns1/e2`) is allowed by `p2`: expecting a deny must fail.
    let mut lines: Vec<&str> = EXPECTED.lines().collect();
    lines[5] = "deny";
    let out = run(&workload("wrong", &(lines.join("\n") + "\n")));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("otherwise than expected"), "{stderr}");
}

#[test]
fn a_short_or_misspelt_expected_file_is_refused() {
    let out = run(&workload("short", "allow\ndeny\n"));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("2 decisions for 11 events"), "{stderr}");
    let out = run(&workload("typo", &EXPECTED.replacen("allow", "Allow", 1)));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("neither allow nor deny"), "{stderr}");
}
