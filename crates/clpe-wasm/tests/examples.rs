//! The example agents, built with the SDK, through the engine: what reaches the guest
//! (time, candidates and their labels) and what comes back (verdicts, targets,
//! annotations), from many threads at once.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::sync::Arc;

use clpe_core::{Decision, Time};
use support::*;

const HOUR: u64 = 3_600_000_000_000;

fn load(engine: &clpe_core::Engine, name: &str, file: &str, config: &str) {
    let bytes = std::fs::read(example(file)).unwrap();
    let limits = "{fuel: 1000000, memoryBytes: 16777216, timeoutMs: 50}";
    apply(
        engine,
        &(agent_doc(name, &bytes, limits, config)
            + "---\n"
            + &subscription(name, "NewConnection", 10, "closed")),
    )
    .unwrap();
}

#[test]
fn business_hours_reads_the_hosts_clock() {
    let engine = engine();
    load(
        &engine,
        "hours",
        "business-hours",
        "{start_hour: 9, end_hour: 17}",
    );
    for (hour, open) in [
        (0, false),
        (8, false),
        (9, true),
        (16, true),
        (17, false),
        (23, false),
        (24 + 10, true),
    ] {
        let r = decide_at(&engine, &egress(), Time(hour * HOUR + 59 * 60_000_000_000));
        let want = if open {
            Decision::Allow
        } else {
            Decision::Deny
        };
        assert_eq!(r.decision, want, "at {hour}:59: {}", r.reason);
        if !open {
            assert_eq!(r.matched_by.as_deref(), Some("/hours"));
            assert!(
                r.reason.contains(&format!("now {:02}:59 UTC", hour % 24)),
                "{}",
                r.reason
            );
        }
    }
    // Only NewConnection is subscribed; the agent would let others through anyway.
    assert_eq!(decide(&engine, &expose()).decision, Decision::Allow);
}

#[test]
fn prefer_label_sets_the_target_and_annotates() {
    let engine = engine();
    // The static lb picks A (region eu); prefer B (region us).
    assert_eq!(
        decide(&engine, &egress()).target_peer.unwrap().as_str(),
        "A"
    );
    load(
        &engine,
        "prefer-us",
        "prefer-label",
        "{key: region, value: us}",
    );
    let r = decide(&engine, &egress());
    assert_eq!(r.decision, Decision::Allow);
    assert_eq!(r.target_peer.unwrap().as_str(), "B");
    assert_eq!(
        r.fallback_peers
            .unwrap()
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>(),
        ["A"]
    );
    assert_eq!(
        r.annotations.get("prefer-label").map(String::as_str),
        Some("B")
    );
    // Ingress has no candidates: nothing to prefer, the agent says so.
    let r = decide(&engine, &ingress());
    assert_eq!(r.decision, Decision::Allow);
    assert_eq!(
        r.annotations.get("prefer-label").map(String::as_str),
        Some("no candidate matches")
    );
}

#[test]
fn a_config_the_agent_refuses_is_a_load_error() {
    let engine = engine();
    let bytes = std::fs::read(example("business-hours")).unwrap();
    let err = apply(
        &engine,
        &agent_doc("hours", &bytes, "{}", "{start_hour: 9}"),
    )
    .unwrap_err();
    assert!(
        err.contains(
            "the agent refused its config: config `end_hour` must be an hour of the day, 0 to 24"
        ),
        "{err}"
    );
}

#[test]
fn many_threads_decide_through_the_pool() {
    let engine = Arc::new(engine());
    load(
        &engine,
        "prefer-us",
        "prefer-label",
        "{key: region, value: us}",
    );
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                for _ in 0..200 {
                    let r = decide(&engine, &egress());
                    assert_eq!(r.target_peer.unwrap().as_str(), "B");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(failures(&engine, "prefer-us"), 0);
}
