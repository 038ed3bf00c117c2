//! The epoch ticker runs only while some agent of its loader exists: an engine without
//! WASM agents is not woken every millisecond, and a guest is still stopped on time once
//! agents come (and come again).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use clpe_core::{Engine, EngineConfig, PeerName, parse_documents};
use clpe_wasm::WasmLoader;
use support::*;

/// Waits (up to a bound far beyond any scheduling delay) for `done`.
fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// On a thread of its own (whose snapshot cache goes with it): applies a looping agent
/// to an engine with `loader`, checks the ticker runs, and that the guest is stopped by
/// its time limit.
fn loop_until_stopped(loader: &Arc<WasmLoader>) {
    let loader = loader.clone();
    std::thread::spawn(move || {
        let config = EngineConfig {
            local_peer: PeerName::from("P1"),
            loader: Some(loader.clone()),
            ..EngineConfig::default()
        };
        let engine = Engine::new(config);
        engine.apply(parse_documents(INVENTORY).unwrap()).unwrap();
        let limits = "{fuel: 1000000000000000, memoryBytes: 1048576, timeoutMs: 5}";
        let bytes = wat_agent("(loop $l (br $l)) i64.const 0", "");
        let docs = agent_doc("slow", &bytes, limits, "null")
            + "---\n"
            + &subscription("slow", "NewConnection", 10, "closed");
        apply(&engine, &docs).unwrap();
        wait_for("the ticker runs once an agent exists", || {
            !loader.ticker_idle()
        });
        let r = decide(&engine, &egress());
        assert!(
            r.reason
                .contains("ran out of time (spec.limits.timeoutMs: 5)"),
            "{}",
            r.reason
        );
    })
    .join()
    .unwrap();
}

#[test]
fn the_ticker_waits_while_no_agent_exists() {
    let loader = Arc::new(WasmLoader::new().unwrap());
    wait_for("the ticker waits with no agent", || loader.ticker_idle());
    loop_until_stopped(&loader);
    // The engine, its snapshots and the agent are gone with the thread.
    wait_for("the ticker waits once the agent is gone", || {
        loader.ticker_idle()
    });
    loop_until_stopped(&loader);
    wait_for("the ticker waits again", || loader.ticker_idle());
}
