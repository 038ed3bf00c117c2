//! No decision sees half a batch: while batches swap an allow policy for a deny policy
//! in one step, decisions from several clients see one state or the other, never
//! neither and never both.
//!
//! The Import has sources P0 and P1, and a constant policy allows P1. State A: `x`
//! allows P0 and `y` (deny P1) matches nothing: allowed {P0, P1}. State B: `x` matches
//! nothing and `y` denies P1: a deny. Neither (x off, y off) would allow {P1} alone;
//! both (x on, y on) would allow {P0} alone. Both show as an allow with one candidate.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Daemon, agent, try_send};
use serde_json::{Value, json};

const SWAPS: usize = 40;
const CLIENTS: usize = 4;

const SETUP: &str = r#"
kind: Peer
metadata: {name: P0}
---
kind: Peer
metadata: {name: P1}
---
kind: Import
metadata: {name: echo, namespace: default}
spec:
  sources:
    - {peer: P0, exportName: echo, exportNamespace: default}
    - {peer: P1, exportName: echo, exportNamespace: default}
---
kind: AccessPolicy
metadata: {name: allow-p1, namespace: default}
spec:
  action: allow
  from: [{workloadSelector: {}}]
  to: [{workloadSelector: {matchLabels: {peer.clusterlink.net/name: P1}}}]
"#;

fn policy(name: &str, action: &str, peer: &str) -> Value {
    json!({
        "kind": "AccessPolicy",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "action": action,
            "from": [{"workloadSelector": {}}],
            "to": [{"workloadSelector": {"matchLabels": {"peer.clusterlink.net/name": peer}}}],
        },
    })
}

/// State A (`allow` true) or B, as one batch.
fn batch(allow: bool) -> String {
    let (x, y) = if allow {
        ("P0", "nowhere")
    } else {
        ("nowhere", "P1")
    };
    json!([policy("x", "allow", x), policy("y", "deny", y)]).to_string()
}

#[derive(Default, Debug)]
struct Seen {
    a: usize,
    b: usize,
    partial: Vec<Value>,
}

#[test]
fn decisions_never_see_half_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    assert_eq!(d.apply(SETUP).0, 200);
    assert_eq!(d.apply(&batch(true)).0, 200);

    let done = Arc::new(AtomicBool::new(false));
    let decided = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (url, done, decided) = (d.url("/v1/decide"), done.clone(), decided.clone());
            std::thread::spawn(move || {
                let agent = agent();
                let event = json!({"type": "NewConnection", "direction": "egress", "src_service": format!("c{i}"), "dst_service": "echo"}).to_string();
                let mut seen = Seen::default();
                let stop_by = Instant::now() + Duration::from_secs(120);
                while !done.load(Ordering::Relaxed) && Instant::now() < stop_by {
                    let (status, r) = try_send(&agent, &url, "POST", Some(&event), None).unwrap();
                    assert_eq!(status, 200, "{r}");
                    let mut peers: BTreeSet<&str> = r["fallback_peers"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
                    if let Some(t) = r["target_peer"].as_str() {
                        peers.insert(t);
                    }
                    match (r["decision"].as_str().unwrap(), peers.len()) {
                        ("allow", 2) => seen.a += 1,
                        ("deny", 0) => seen.b += 1,
                        _ => seen.partial.push(r.clone()),
                    }
                    decided.fetch_add(1, Ordering::Relaxed);
                }
                seen
            })
        })
        .collect();

    // Each client has one decision in flight at most: after 2 x CLIENTS more decisions,
    // at least CLIENTS of them started after the last swap was acknowledged, so every
    // state is decided against while the swaps go on.
    let deadline = Instant::now() + Duration::from_secs(60);
    let wait_for_decisions = || {
        let target = decided.load(Ordering::Relaxed) + 2 * CLIENTS;
        while decided.load(Ordering::Relaxed) < target {
            assert!(Instant::now() < deadline, "the clients stopped deciding");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    wait_for_decisions();
    for i in 0..SWAPS {
        let (status, body) = d.apply(&batch(i % 2 == 1));
        assert_eq!(status, 200, "{body}");
        if i % 4 == 0 {
            wait_for_decisions();
        }
    }
    done.store(true, Ordering::Relaxed);
    let mut total = Seen::default();
    for c in clients {
        let s = c.join().unwrap();
        total.a += s.a;
        total.b += s.b;
        total.partial.extend(s.partial);
    }
    assert!(
        total.partial.is_empty(),
        "decisions saw half a batch: {:?}",
        total.partial
    );
    assert!(
        total.a > 0 && total.b > 0,
        "both states should have been seen: {total:?}"
    );
}
