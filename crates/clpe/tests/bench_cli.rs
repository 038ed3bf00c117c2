//! `clpe bench` through the binary: the report's fields, `--expected`, and the floor
//! timed beside the engine (`--floor`), on small workloads written for each test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// A fresh directory for one test's files.
fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("clpe-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// An access workload of the anchors' shape: two peers, three exports, rules of every
/// side the floor knows (client, peer, both, neither), a deny overriding an allow.
const POLICIES: &str = r#"
{kind: Peer, metadata: {name: p1}}
---
{kind: Peer, metadata: {name: p2}}
---
{kind: Export, metadata: {name: db, namespace: default}}
---
{kind: Export, metadata: {name: web, namespace: default}}
---
{kind: Export, metadata: {name: cache, namespace: default}}
---
kind: AccessPolicy
metadata: {name: client-to-db, namespace: default}
spec:
  action: allow
  from: [{workloadSelector: {matchLabels: {client.clusterlink.net/service: app}}}]
  to: [{workloadSelector: {matchLabels: {export.clusterlink.net/name: db}}}]
---
kind: AccessPolicy
metadata: {name: p2-to-web, namespace: default}
spec:
  action: allow
  from: [{workloadSelector: {matchLabels: {peer.clusterlink.net/name: p2}}}]
  to: [{workloadSelector: {matchLabels: {export.clusterlink.net/name: web}}}]
---
kind: AccessPolicy
metadata: {name: anyone-to-cache, namespace: default}
spec:
  action: allow
  from: [{workloadSelector: {}}]
  to: [{workloadSelector: {matchLabels: {export.clusterlink.net/name: cache}}}]
---
kind: AccessPolicy
metadata: {name: no-batch-from-p1, namespace: default}
spec:
  action: deny
  from: [{workloadSelector: {matchLabels: {client.clusterlink.net/service: batch, peer.clusterlink.net/name: p1}}}]
  to: [{workloadSelector: {matchLabels: {export.clusterlink.net/name: cache}}}]
"#;

/// (event, the right decision).
const EVENTS: [(&str, &str, &str, &str); 7] = [
    ("p1", "app", "db", "allow"),
    ("p1", "other", "db", "deny"),
    ("p2", "x", "web", "allow"),
    ("p1", "x", "web", "deny"),
    ("p1", "batch", "cache", "deny"),
    ("p2", "batch", "cache", "allow"),
    ("p1", "app", "nowhere", "deny"),
];

fn workload(d: &std::path::Path, wrong_line: Option<usize>) -> [String; 3] {
    let (policies, events, expected) = (d.join("p.yaml"), d.join("e.jsonl"), d.join("x.txt"));
    std::fs::write(&policies, POLICIES).unwrap();
    let mut ev = String::new();
    let mut ex = String::new();
    for (i, (peer, svc, dst, want)) in EVENTS.iter().enumerate() {
        ev.push_str(&format!(
            "{{\"type\":\"NewConnection\",\"direction\":\"ingress\",\"src_peer\":\"{peer}\",\"src_service\":\"{svc}\",\"dst_service\":\"{dst}\"}}\n"
        ));
        let want = match (Some(i) == wrong_line, *want) {
            (true, "allow") => "deny",
            (true, _) => "allow",
            (false, w) => w,
        };
        ex.push_str(want);
        ex.push('\n');
    }
    std::fs::write(&events, ev).unwrap();
    std::fs::write(&expected, ex).unwrap();
    [policies, events, expected].map(|p| p.display().to_string())
}

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clpe"))
        .arg("bench")
        .args(args)
        .output()
        .unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not one JSON object ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn the_report_has_the_spec_fields_and_the_floor_agrees_with_the_engine() {
    let d = dir("floor");
    let [p, e, x] = workload(&d, None);
    let out = bench(&[
        "--policies",
        &p,
        "--events",
        &e,
        "--expected",
        &x,
        "--repeat",
        "3",
        "--floor",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json(&out);
    for field in [
        "events",
        "decisions_per_second",
        "apply_ms",
        "memory_bytes",
        "digest",
        "mismatches",
    ] {
        assert!(r.get(field).is_some(), "no {field} in {r}");
    }
    for p in ["p50", "p90", "p99", "max"] {
        assert!(r["latency_ns"][p].is_u64(), "no latency_ns.{p} in {r}");
    }
    assert_eq!(r["events"], 21);
    assert_eq!(r["mismatches"], 0);
    assert_eq!(r["floor_mismatches"], 0);
    let floor = r["floor_ns"].as_f64().unwrap();
    assert!(floor > 0.0, "{r}");
    let p50 = r["latency_ns"]["p50"].as_f64().unwrap();
    let ratio = r["floor_ratio"].as_f64().unwrap();
    assert!((ratio - p50 / floor).abs() < 1e-6 * ratio.max(1.0), "{r}");
}

#[test]
fn a_wrong_expected_line_is_counted_and_fails_the_run() {
    let d = dir("wrong");
    let [p, e, x] = workload(&d, Some(2));
    let out = bench(&["--policies", &p, "--events", &e, "--expected", &x, "--json"]);
    assert!(!out.status.success());
    assert_eq!(json(&out)["mismatches"], 1);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("event 3: expected deny, got allow"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_floor_refuses_what_it_cannot_express_and_says_what() {
    let d = dir("refuse");
    let [_, e, _] = workload(&d, None);
    let policies = d.join("import.yaml");
    std::fs::write(
        &policies,
        format!(
            "{POLICIES}---\n{{kind: Import, metadata: {{name: db, namespace: default}}, spec: {{sources: [{{peer: p1, exportName: db, exportNamespace: default}}]}}}}\n"
        ),
    )
    .unwrap();
    let out = bench(&[
        "--policies",
        &policies.display().to_string(),
        "--events",
        &e,
        "--floor",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--floor: Import documents are beyond the floor"),
        "{err}"
    );
    // Without `--floor` the same workload runs.
    let out = bench(&[
        "--policies",
        &policies.display().to_string(),
        "--events",
        &e,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
