//! Hostile modules (WAT, compiled at test time) are contained within their limits: the
//! event is decided by the subscription's `failureMode` (SPEC §3.5), the monitor counts
//! the failure, and other decisions keep flowing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use clpe_core::Decision;
use support::*;

const LIMITS: &str = "{fuel: 1000000, memoryBytes: 1048576, timeoutMs: 50}";

/// Loads `bytes` as agent `name` after `lb` (priority 10) with `mode`, decides an egress
/// connection, and checks the failure was contained: returns the response's reason.
fn contained(name: &str, bytes: &[u8], limits: &str, mode: &str, expect_in_reason: &str) {
    let engine = engine();
    apply(
        &engine,
        &(agent_doc(name, bytes, limits, "null")
            + "---\n"
            + &subscription(name, "NewConnection", 10, mode)),
    )
    .unwrap_or_else(|e| panic!("{name}: load refused: {e}"));
    for round in 1..=3u64 {
        let r = decide(&engine, &egress());
        match mode {
            "closed" => {
                assert_eq!(r.decision, Decision::Deny, "{name}: {r:?}");
                assert_eq!(r.decided_by.as_deref(), Some(name));
                assert!(
                    r.reason.contains(&format!("agent {name} failed")),
                    "{name}: {}",
                    r.reason
                );
                assert!(
                    r.reason.contains(expect_in_reason),
                    "{name}: `{}` lacks `{expect_in_reason}`",
                    r.reason
                );
                assert!(r.reason.contains("failure mode closed"));
            }
            _ => {
                assert_eq!(r.decision, Decision::Allow, "{name}: {r:?}");
                assert_eq!(r.target_peer.as_ref().map(|p| p.as_str()), Some("A"));
            }
        }
        assert_eq!(
            failures(&engine, name),
            round,
            "{name}: the monitor counts every failure"
        );
        // Events the agent is not subscribed to are untouched.
        assert_eq!(decide(&engine, &expose()).decision, Decision::Allow);
    }
}

fn both_modes(name: &str, bytes: &[u8], limits: &str, expect_in_reason: &str) {
    contained(name, bytes, limits, "closed", expect_in_reason);
    contained(name, bytes, limits, "open", expect_in_reason);
}

#[test]
fn a_well_behaved_wat_agent_denies() {
    let engine = engine();
    let bytes = wat_agent(&packed(64, DENY_LEN), "");
    apply(
        &engine,
        &(agent_doc("nay", &bytes, LIMITS, "null")
            + "---\n"
            + &subscription("nay", "NewConnection", 10, "closed")),
    )
    .unwrap();
    let r = decide(&engine, &egress());
    assert_eq!(r.decision, Decision::Deny);
    assert_eq!(&*r.reason, "wat says no");
    assert_eq!(r.decided_by.as_deref(), Some("nay"));
    assert_eq!(failures(&engine, "nay"), 0);
}

#[test]
fn an_infinite_loop_runs_out_of_fuel() {
    both_modes(
        "spin",
        &wat_agent("(loop $l (br $l)) i64.const 0", ""),
        LIMITS,
        "ran out of fuel (spec.limits.fuel: 1000000)",
    );
}

#[test]
fn an_infinite_loop_with_ample_fuel_runs_out_of_time() {
    let limits = "{fuel: 1000000000000000, memoryBytes: 1048576, timeoutMs: 5}";
    both_modes(
        "slow",
        &wat_agent("(loop $l (br $l)) i64.const 0", ""),
        limits,
        "ran out of time (spec.limits.timeoutMs: 5)",
    );
}

#[test]
fn a_memory_bomb_hits_its_memory_limit() {
    let body = "(loop $l (drop (memory.grow (i32.const 1))) (br $l)) i64.const 0";
    both_modes(
        "bomb",
        &wat_agent(body, ""),
        LIMITS,
        "grew its memory past its limit",
    );
}

#[test]
fn a_trap_is_named() {
    both_modes(
        "trap",
        &wat_agent("unreachable", ""),
        LIMITS,
        "trapped: wasm `unreachable` instruction executed",
    );
    let deep = "(func $f (param i32) (result i32) (call $f (i32.add (local.get 0) (i32.const 1))))";
    both_modes(
        "deep",
        &wat_agent("(drop (call $f (i32.const 0))) i64.const 0", deep),
        LIMITS,
        "trapped: call stack exhausted",
    );
}

#[test]
fn huge_output_is_over_the_cap() {
    both_modes(
        "huge",
        &wat_agent(&packed(0, 10 << 20), ""),
        LIMITS,
        "returned 10485760 bytes, over the cap of 65536",
    );
}

#[test]
fn output_outside_memory_is_refused() {
    both_modes(
        "wild",
        &wat_agent(&packed(0xffff_0000, 16), ""),
        LIMITS,
        "outside its memory",
    );
}

#[test]
fn garbage_output_is_refused() {
    let extra = r#"(data (i32.const 200) "\09\09\09")"#;
    both_modes(
        "junk",
        &wat_agent(&packed(200, 3), extra),
        LIMITS,
        "clpe_decide returned garbage: unknown verdict",
    );
    // A continue reply with one byte too many.
    both_modes(
        "tail",
        &wat_agent(&packed(0, CONTINUE_LEN + 1), ""),
        LIMITS,
        "trailing bytes",
    );
}

#[test]
fn a_bad_alloc_pointer_is_refused() {
    let module = r#"(module
  (memory (export "memory") 1)
  (func (export "clpe_abi_version") (result i32) i32.const 1)
  (func (export "clpe_alloc") (param i32) (result i32) i32.const -16)
  (func (export "clpe_decide") (param i32 i32) (result i64) i64.const 0))"#;
    both_modes(
        "alloc",
        &wat::parse_str(module).unwrap(),
        LIMITS,
        "which is outside its memory",
    );
}

#[test]
fn a_reply_naming_a_peer_that_is_not_a_candidate_changes_nothing() {
    // target `Z`: verdict continue, remove none, target Z.
    let extra =
        r#"(data (i32.const 300) "\00\00\00\00\00\00\00\01\01\00\00\00Z\00\00\00\00\00\00\00\00")"#;
    both_modes(
        "ghost",
        &wat_agent(&packed(300, 21), extra),
        LIMITS,
        "not a candidate (candidates: A, B)",
    );
}

/// Modules refused at apply time (422): nothing changes, the old agent stays.
#[test]
fn broken_modules_are_refused_at_load_with_a_clear_message() {
    let engine = engine();
    let good = wat_agent(&packed(64, DENY_LEN), "");
    apply(
        &engine,
        &(agent_doc("x", &good, LIMITS, "null")
            + "---\n"
            + &subscription("x", "NewConnection", 10, "closed")),
    )
    .unwrap();
    let abi = |body: &str| format!(r#"(module (memory (export "memory") 1) {body})"#);
    let version = r#"(func (export "clpe_alloc") (param i32) (result i32) i32.const 0)
        (func (export "clpe_decide") (param i32 i32) (result i64) i64.const 0)"#;
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (b"not wasm at all".to_vec(), LIMITS, "not a valid WebAssembly module"),
        (
            wat::parse_str(format!(
                r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
                   (memory (export "memory") 1)
                   (func (export "clpe_abi_version") (result i32) i32.const 1) {version})"#
            ))
            .unwrap(),
            LIMITS,
            "imports `wasi_snapshot_preview1`.`fd_write` (a function)",
        ),
        (
            wat::parse_str(r#"(module (func (export "clpe_decide") (param i32 i32) (result i64) i64.const 0))"#).unwrap(),
            LIMITS,
            "does not export `memory`",
        ),
        (
            wat::parse_str(abi(r#"(func (export "clpe_abi_version") (result i32) i32.const 1)
                (func (export "clpe_alloc") (param i32) (result i32) i32.const 0)"#))
            .unwrap(),
            LIMITS,
            "does not export `clpe_decide`",
        ),
        (
            wat::parse_str(abi(r#"(func (export "clpe_abi_version") (result i32) i32.const 1)
                (func (export "clpe_alloc") (param i32) (result i32) i32.const 0)
                (func (export "clpe_decide") (param i32) (result i32) i32.const 0)"#))
            .unwrap(),
            LIMITS,
            "exports `clpe_decide` as func(i32) -> (i32), ABI v1 needs func(i32, i32) -> (i64)",
        ),
        (
            wat::parse_str(abi(&format!(r#"(func (export "clpe_abi_version") (result i32) i32.const 2) {version}"#))).unwrap(),
            LIMITS,
            "speaks ABI version 2",
        ),
        (
            wat_agent("i64.const 0", "(func $s (loop $l (br $l))) (start $s)"),
            LIMITS,
            "failed while starting: ran out of fuel",
        ),
    ];
    for (bytes, limits, message) in cases {
        let err = apply(&engine, &agent_doc("x", &bytes, limits, "null")).expect_err(message);
        assert!(err.contains("WasmAgent x: spec.module:"), "{err}");
        assert!(err.contains(message), "`{err}` lacks `{message}`");
        // Nothing changed: the old agent still decides.
        assert_eq!(&*decide(&engine, &egress()).reason, "wat says no");
    }
    // A module whose initial memory is over the limit cannot even start.
    let fat = wat::parse_str(format!(
        r#"(module (memory (export "memory") 32)
            (func (export "clpe_abi_version") (result i32) i32.const 1) {version})"#
    ))
    .unwrap();
    let err = apply(
        &engine,
        &agent_doc(
            "x",
            &fat,
            "{fuel: 1000, memoryBytes: 65536, timeoutMs: 5}",
            "null",
        ),
    )
    .unwrap_err();
    assert!(
        err.contains("grew its memory past its limit (asked for 2097152 bytes"),
        "{err}"
    );
}

#[test]
fn a_failing_agent_does_not_hold_up_other_decisions() {
    let engine = std::sync::Arc::new(engine());
    let limits = "{fuel: 1000000000000000, memoryBytes: 1048576, timeoutMs: 300}";
    let bytes = wat_agent("(loop $l (br $l)) i64.const 0", "");
    apply(
        &engine,
        &(agent_doc("slow", &bytes, limits, "null")
            + "---\n"
            + &subscription("slow", "NewConnection", 10, "open")),
    )
    .unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let slow = {
        let (engine, done) = (engine.clone(), done.clone());
        std::thread::spawn(move || {
            let r = decide(&engine, &egress());
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            r
        })
    };
    // While the slow agent spins, other events are decided (the pool is not locked
    // during a call, and the engine never waits on an agent).
    let mut decided = 0u64;
    while !done.load(std::sync::atomic::Ordering::SeqCst) {
        assert_eq!(decide(&engine, &expose()).decision, Decision::Allow);
        decided += 1;
    }
    let r = slow.join().unwrap();
    assert_eq!(r.decision, Decision::Allow, "failure mode open: skipped");
    assert!(decided > 0, "no decision made while the agent was running");
    assert_eq!(failures(&engine, "slow"), 1);
}
