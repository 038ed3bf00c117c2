//! What a WASM agent adds to a decision, warm: the same egress decision with no WASM
//! agent, with a minimal WAT agent (the host's floor: encode, call, decode, apply), and
//! with each example agent built with the SDK. Target: ≤ 5 µs added per decision.
//!
//! Decisions are made with `dryRun` so that nothing accumulates across millions of
//! iterations (admitted connections, the decision log): every case does the same work
//! but for the agent. `cargo bench -p clpe-wasm` (builds the example agents first if they
//! are missing).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;

use clpe_core::{DecideOptions, Decision, Engine, Time};
use criterion::{Criterion, criterion_group, criterion_main};
use support::*;

const LIMITS: &str = "{fuel: 1000000, memoryBytes: 16777216, timeoutMs: 50}";

fn with_agent(name: &str, bytes: &[u8], config: &str) -> Engine {
    let engine = engine();
    apply(
        &engine,
        &(agent_doc(name, bytes, LIMITS, config)
            + "---\n"
            + &subscription(name, "NewConnection", 10, "closed")),
    )
    .unwrap();
    engine
}

fn bench(c: &mut Criterion) {
    let hours = std::fs::read(example("business-hours")).unwrap();
    let prefer = std::fs::read(example("prefer-label")).unwrap();
    let cases: Vec<(&str, Engine)> = vec![
        ("no-wasm-agent", engine()),
        (
            "wat-continue",
            with_agent("noop", &wat_agent(&packed(0, CONTINUE_LEN), ""), "null"),
        ),
        (
            "business-hours",
            with_agent("business-hours", &hours, "{start_hour: 0, end_hour: 0}"),
        ),
        (
            "prefer-label",
            with_agent("prefer-label", &prefer, "{key: region, value: us}"),
        ),
    ];
    let event = egress();
    let mut group = c.benchmark_group("egress-decision");
    for (name, engine) in &cases {
        let r = engine
            .decide(&event, Time::ZERO, DecideOptions::default())
            .unwrap();
        assert_eq!(r.decision, Decision::Allow, "{name}: {r:?}");
        group.bench_function(*name, |b| {
            b.iter(|| {
                engine
                    .decide(black_box(&event), Time::ZERO, DecideOptions::default())
                    .unwrap()
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
