//! `clpe bench` through the binary: the report's fields, `--expected`, and the floor
//! timed beside the engine (`--floor`), on small workloads written for each test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::process::{Command, Output};

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
    let d = tempfile::tempdir().unwrap();
    let [p, e, x] = workload(d.path(), None);
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
    // The floor timed as the engine is: its median, and the engine's over it.
    let floor_p50 = r["floor_p50_ns"].as_u64().unwrap();
    let ratio = r["floor_p50_ratio"].as_f64().unwrap();
    let want = p50 / floor_p50.max(1) as f64;
    assert!((ratio - want).abs() < 1e-6 * want.max(1.0), "{r}");
}

/// The workload's 7 events 300 times over (several turns of 256 for each thread), checked
/// against the expected file, with `extra`: the run must pass.
fn passes_300([p, e, x]: &[String; 3], extra: &[&str]) -> Output {
    let mut args = vec![
        "--policies",
        p,
        "--events",
        e,
        "--expected",
        x,
        "--repeat",
        "300",
    ];
    args.extend_from_slice(extra);
    let out = bench(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Threads take the events in turns: every event is decided once, each as one thread
/// decides it (these decisions depend on nothing but the event), whichever thread it was.
#[test]
fn threads_decide_every_event_once_and_as_one_thread_does() {
    let d = tempfile::tempdir().unwrap();
    let w = workload(d.path(), None);
    let run = |threads: &str| json(&passes_300(&w, &["--threads", threads, "--json"]));
    let (one, two) = (run("1"), run("2"));
    assert_eq!(one["events"], 2100);
    assert_eq!(two["events"], 2100);
    assert_eq!(two["mismatches"], 0);
    assert_eq!(one["digest"], two["digest"]);
}

#[test]
fn a_wrong_expected_line_is_counted_and_fails_the_run() {
    let d = tempfile::tempdir().unwrap();
    let [p, e, x] = workload(d.path(), Some(2));
    let out = bench(&["--policies", &p, "--events", &e, "--expected", &x, "--json"]);
    assert!(!out.status.success());
    assert_eq!(json(&out)["mismatches"], 1);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("event 3: expected deny, got allow"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Warm-up passes are decided but neither timed, counted nor checked: the report counts
/// and checks the timed passes only, and says how many passes came before.
#[test]
fn warmup_passes_are_neither_counted_nor_checked() {
    let d = tempfile::tempdir().unwrap();
    let [p, e, x] = workload(d.path(), Some(2));
    // With threads (each makes the warm-up passes itself) and with a churning thread
    // (which waits for them): the same counts.
    let runs = [
        ("0", "1", &[][..]),
        ("3", "2", &[][..]),
        ("2", "40", &["--threads", "2"][..]),
        ("1", "40", &["--threads", "2", "--churn"][..]),
        ("0", "40", &["--churn"][..]),
        ("0", "40", &["--threads", "2", "--churn"][..]),
        ("1", "40", &["--scrape", "0"][..]),
        (
            "1",
            "40",
            &["--threads", "2", "--churn", "--scrape", "1"][..],
        ),
    ];
    for (warmup, repeat, extra) in runs {
        let mut args = vec![
            "--policies",
            &p,
            "--events",
            &e,
            "--expected",
            &x,
            "--json",
            "--warmup",
            warmup,
            "--repeat",
            repeat,
        ];
        args.extend_from_slice(extra);
        let out = bench(&args);
        let r = json(&out);
        assert_eq!(r["warmup_passes"], warmup.parse::<u64>().unwrap());
        assert_eq!(r["events"], 7 * repeat.parse::<u64>().unwrap());
        assert_eq!(r["mismatches"], repeat.parse::<u64>().unwrap(), "{r}");
        // The rate's clock started when timing did, whichever thread was released first
        // (no run of 7 events decides a billion a second).
        let rate = r["decisions_per_second"].as_f64().unwrap();
        assert!(rate > 0.0 && rate < 1e9, "{r}");
    }
}

/// Runs the bench on the base workload's documents and `extra` after them, on `events`
/// (and `expected`, if given), with `args`.
fn bench_with(extra: &str, events: &[&str], expected: Option<&[&str]>, args: &[&str]) -> Output {
    let d = tempfile::tempdir().unwrap();
    let path = |name: &str| d.path().join(name).display().to_string();
    let (p, e, x) = (path("p.yaml"), path("e.jsonl"), path("x.txt"));
    std::fs::write(&p, format!("{POLICIES}---\n{extra}\n")).unwrap();
    std::fs::write(&e, events.join("\n") + "\n").unwrap();
    let mut all = vec!["--policies", &p, "--events", &e];
    if let Some(expected) = expected {
        std::fs::write(&x, expected.join("\n") + "\n").unwrap();
        all.extend(["--expected", &x]);
    }
    all.extend_from_slice(args);
    bench(&all)
}

/// The same with `--floor --json`.
fn floor_with(extra: &str, events: &[&str], args: &[&str]) -> Output {
    bench_with(
        extra,
        events,
        None,
        &[&["--floor", "--json"], args].concat(),
    )
}

#[test]
fn the_floor_refuses_what_it_cannot_express_and_says_what() {
    let import = "{kind: Import, metadata: {name: db, namespace: default}, spec: {sources: [{peer: p1, exportName: db, exportNamespace: default}]}}";
    let out = floor_with(import, &[INGRESS], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--floor: Import documents are beyond the floor"),
        "{err}"
    );
    // Without `--floor` the same workload runs.
    let out = bench_with(import, &[INGRESS], None, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const INGRESS: &str = r#"{"type":"NewConnection","direction":"ingress","src_peer":"p1","src_service":"app","dst_service":"db"}"#;

#[test]
fn the_floor_refuses_every_shape_it_cannot_decide_as_the_engine_does() {
    let cases = [
        (
            "from-export",
            "{kind: AccessPolicy, metadata: {name: x, namespace: default}, spec: {action: allow, from: [{workloadSelector: {matchLabels: {export.clusterlink.net/name: db}}}], to: [{workloadSelector: {}}]}}",
            "a source selector on the export",
        ),
        (
            "to-client",
            "{kind: AccessPolicy, metadata: {name: x, namespace: default}, spec: {action: allow, from: [{workloadSelector: {}}], to: [{workloadSelector: {matchLabels: {client.clusterlink.net/service: app}}}]}}",
            "a destination selector on the client or the peer",
        ),
        (
            "expressions",
            "{kind: AccessPolicy, metadata: {name: x, namespace: default}, spec: {action: allow, from: [{workloadSelector: {matchExpressions: [{key: client.clusterlink.net/service, operator: Exists}]}}], to: [{workloadSelector: {}}]}}",
            "a selector with matchExpressions",
        ),
        (
            "two-selectors",
            "{kind: AccessPolicy, metadata: {name: x, namespace: default}, spec: {action: allow, from: [{workloadSelector: {}}, {workloadSelector: {}}], to: [{workloadSelector: {}}]}}",
            "a side that is not one selector",
        ),
        (
            "dry-run",
            "{kind: AccessPolicy, metadata: {name: x, namespace: default}, spec: {action: deny, dryRun: true, from: [{workloadSelector: {}}], to: [{workloadSelector: {}}]}}",
            "a dry-run policy",
        ),
        (
            "other-namespace",
            "{kind: AccessPolicy, metadata: {name: x, namespace: other}, spec: {action: allow, from: [{workloadSelector: {}}], to: [{workloadSelector: {}}]}}",
            "more than one namespace",
        ),
        (
            "privileged",
            "{kind: PrivilegedAccessPolicy, metadata: {name: x}, spec: {action: deny, from: [{workloadSelector: {}}], to: [{workloadSelector: {}}]}}",
            "PrivilegedAccessPolicy documents are beyond the floor",
        ),
    ];
    for (name, doc, says) in cases {
        let out = floor_with(doc, &[INGRESS], &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: accepted");
        assert!(err.contains(says), "{name}: {err}");
    }
    let egress =
        r#"{"type":"NewConnection","direction":"egress","src_service":"app","dst_service":"db"}"#;
    let out = floor_with("{kind: Peer, metadata: {name: p3}}", &[egress], &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("an event other than an ingress"));
    let out = floor_with(
        "{kind: Peer, metadata: {name: p3}}",
        &[INGRESS],
        &["--threads", "2"],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not with --threads, --churn or --scrape")
    );
}

#[test]
fn the_floor_decides_as_the_engine_on_the_edges_it_accepts() {
    // The last of two policies of one name is the one in force; a rule on an empty
    // service matches no event without one; an unknown peer and a namespace with no such
    // export are decided too.
    let extra = "{kind: AccessPolicy, metadata: {name: twice, namespace: default}, spec: {action: deny, from: [{workloadSelector: {}}], to: [{workloadSelector: {matchLabels: {export.clusterlink.net/name: web}}}]}}
---
{kind: AccessPolicy, metadata: {name: twice, namespace: default}, spec: {action: allow, from: [{workloadSelector: {}}], to: [{workloadSelector: {matchLabels: {export.clusterlink.net/name: web}}}]}}
---
{kind: AccessPolicy, metadata: {name: empty-service, namespace: default}, spec: {action: allow, from: [{workloadSelector: {matchLabels: {client.clusterlink.net/service: \"\"}}}], to: [{workloadSelector: {matchLabels: {export.clusterlink.net/name: db}}}]}}";
    let events = [
        // Allowed by the second `twice` (the first, a deny, is replaced).
        r#"{"type":"NewConnection","direction":"ingress","src_peer":"p1","src_service":"x","dst_service":"web"}"#,
        // No service: `empty-service` does not match.
        r#"{"type":"NewConnection","direction":"ingress","src_peer":"p1","dst_service":"db"}"#,
        r#"{"type":"NewConnection","direction":"ingress","src_peer":"nobody","src_service":"x","dst_service":"cache"}"#,
        r#"{"type":"NewConnection","direction":"ingress","src_peer":"p1","src_service":"app","dst_service":"db","dst_namespace":"other"}"#,
        INGRESS,
    ];
    let expected = ["allow", "deny", "allow", "deny", "allow"];
    // The engine checked against `expected`, the floor against the engine: both as
    // written above.
    let out = bench_with(extra, &events, Some(&expected), &["--floor", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json(&out);
    assert_eq!(r["mismatches"], 0, "{r}");
    assert_eq!(r["floor_mismatches"], 0, "{r}");
    assert!(r["floor_before_ns"].as_f64().unwrap() > 0.0);
    assert!(r["floor_after_ns"].as_f64().unwrap() > 0.0);
}

/// Metrics rendered over and over while two threads decide: the decisions are those of
/// a run without, the renders are counted, and the metrics printed at the end count
/// every decision once (the warm-up's and the timed ones), however many renders took the
/// counts in between.
#[test]
fn scrapes_while_deciding_change_no_decision_and_lose_no_count() {
    let d = tempfile::tempdir().unwrap();
    let w = workload(d.path(), None);
    let run = |extra: &[&str]| passes_300(&w, &[&["--threads", "2"], extra].concat());
    let quiet = json(&run(&["--json"]));
    let scraped = json(&run(&["--json", "--scrape", "0"]));
    assert_eq!(scraped["mismatches"], 0);
    assert_eq!(scraped["digest"], quiet["digest"]);
    assert!(scraped["scrapes"].as_u64().unwrap() >= 1, "{scraped}");
    assert!(quiet.get("scrapes").is_none(), "{quiet}");
    // The text report, then the metrics: 7 events, 1 warm-up pass per thread, 300 timed.
    let out = run(&["--scrape", "0", "--metrics"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("scrape          "), "{text}");
    let count = |line: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {line} in {text}"))
    };
    let events = "clpe_events_total{event=\"NewConnection\"}";
    assert_eq!(count(events), 7 * (2 + 300));
    let allowed = (EVENTS.iter().filter(|e| e.3 == "allow").count() * (2 + 300)) as u64;
    let by_policy = |policy: &str| {
        count(&format!(
            "clpe_decisions_total{{event=\"NewConnection\",decision=\"allow\",agent=\"acl\",policy=\"{policy}\"}}"
        ))
    };
    let all_allowed = by_policy("default/client-to-db")
        + by_policy("default/p2-to-web")
        + by_policy("default/anyone-to-cache");
    assert_eq!(all_allowed, allowed);
}

/// `clpe loadgen` drives a real daemon (and the bare server) over gRPC, with the daemon's
/// metrics scraped all along: every request answered, the scrapes counted.
#[test]
fn loadgen_drives_both_servers_and_counts_the_scrapes() {
    let d = tempfile::tempdir().unwrap();
    let [p, e, _] = workload(d.path(), None);
    let out = Command::new(env!("CARGO_BIN_EXE_clpe"))
        .args(["loadgen", "--policies", &p, "--events", &e])
        .args([
            "--requests",
            "3000",
            "--concurrency",
            "8",
            "--connections",
            "2",
        ])
        .args(["--scrape", "1", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json(&out);
    for server in ["bare", "daemon"] {
        assert_eq!(r[server]["requests"], 3000, "{r}");
        assert_eq!(r[server]["errors"], 0, "{r}");
    }
    assert!(r["ratio"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["scrapes"].as_u64().unwrap() >= 1, "{r}");
}
