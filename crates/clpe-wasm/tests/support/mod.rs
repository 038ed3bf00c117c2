//! Shared by the integration tests and the bench: an engine with the WASM loader, the
//! inventory the tests decide against, WAT agents, and the built example agents.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use clpe_core::{
    DecideOptions, Engine, EngineConfig, Event, PeerName, Response, Time, parse_documents,
};
use clpe_wasm::WasmLoader;

/// One loader for the whole test binary (one wasmtime engine, one ticker thread).
pub fn loader() -> Arc<WasmLoader> {
    static LOADER: OnceLock<Arc<WasmLoader>> = OnceLock::new();
    LOADER
        .get_or_init(|| Arc::new(WasmLoader::new().expect("the WASM engine starts")))
        .clone()
}

/// The inventory: local peer P1; peers A (region eu) and B (region us), both exporting
/// `svc` to us; a local export `echo`; everything allowed.
pub const INVENTORY: &str = r#"
kind: Peer
metadata: {name: A, labels: {region: eu}}
---
kind: Peer
metadata: {name: B, labels: {region: us}}
---
kind: Import
metadata: {name: svc, namespace: default}
spec:
  lbScheme: static
  sources:
    - {peer: A, exportName: svc, exportNamespace: default}
    - {peer: B, exportName: svc, exportNamespace: default}
---
kind: Export
metadata: {name: echo, namespace: default}
---
kind: AccessPolicy
metadata: {name: allow-all, namespace: default}
spec: {action: allow, from: [{workloadSelector: {}}], to: [{workloadSelector: {}}]}
"#;

pub fn engine() -> Engine {
    let config = EngineConfig {
        local_peer: PeerName::from("P1"),
        loader: Some(loader()),
        ..EngineConfig::default()
    };
    let engine = Engine::new(config);
    engine.apply(parse_documents(INVENTORY).unwrap()).unwrap();
    engine
}

/// A WasmAgent document for `bytes`, with `limits` and `config` as YAML flow maps.
pub fn agent_doc(name: &str, bytes: &[u8], limits: &str, config: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    format!(
        "kind: WasmAgent\nmetadata: {{name: {name}}}\nspec:\n  module: {b64}\n  limits: {limits}\n  config: {config}\n"
    )
}

pub fn subscription(agent: &str, event: &str, priority: u32, failure_mode: &str) -> String {
    format!(
        "kind: Subscription\nmetadata: {{name: {agent}-{priority}}}\nspec: {{event: {event}, agent: {agent}, priority: {priority}, failureMode: {failure_mode}}}\n"
    )
}

/// Applies YAML documents (`---`-separated).
pub fn apply(engine: &Engine, yaml: &str) -> Result<(), String> {
    let docs = parse_documents(yaml).map_err(|e| e.to_string())?;
    engine.apply(docs).map(|_| ()).map_err(|e| e.to_string())
}

pub fn egress() -> Event {
    Event::from_json(r#"{"type": "NewConnection", "direction": "egress", "src_service": "fe", "dst_service": "svc"}"#).unwrap()
}

pub fn ingress() -> Event {
    Event::from_json(r#"{"type": "NewConnection", "direction": "ingress", "src_peer": "A", "dst_service": "echo"}"#).unwrap()
}

pub fn expose() -> Event {
    Event::from_json(r#"{"type": "ExposeService", "service": "echo"}"#).unwrap()
}

pub fn decide_at(engine: &Engine, event: &Event, now: Time) -> Response {
    engine.decide(event, now, DecideOptions::default()).unwrap()
}

pub fn decide(engine: &Engine, event: &Event) -> Response {
    decide_at(engine, event, Time::ZERO)
}

/// `clpe_agent_failures_total` of an agent, from the monitor's metrics.
pub fn failures(engine: &Engine, agent: &str) -> u64 {
    let needle = format!("clpe_agent_failures_total{{agent=\"{agent}\"}} ");
    engine
        .metrics()
        .lines()
        .find_map(|l| l.strip_prefix(&needle).map(|n| n.trim().parse().unwrap()))
        .unwrap_or(0)
}

/// The encoded ABI v1 replies the WAT agents return, as WAT data strings.
pub const CONTINUE: &str = r#"\00\00\00\00\00\00\00\00\00\00\00\00\00\00\00\00"#;
/// A deny with reason `wat says no`.
pub const DENY: &str = r#"\02\01\0b\00\00\00wat says no\00\00\00\00\00\00\00\00\00\00\00\00\00\00"#;
pub const CONTINUE_LEN: u64 = 16;
pub const DENY_LEN: u64 = 31;

/// A WAT agent whose `clpe_decide` runs `body` (leaving an i64, the packed reply). The
/// continue reply is at 0, the deny reply at 64; `extra` adds fields to the module.
pub fn wat_agent(body: &str, extra: &str) -> Vec<u8> {
    let text = format!(
        r#"(module
  (memory (export "memory") 1)
  (data (i32.const 0) "{CONTINUE}")
  (data (i32.const 64) "{DENY}")
  (func (export "clpe_abi_version") (result i32) i32.const 1)
  (func (export "clpe_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "clpe_decide") (param i32 i32) (result i64) {body})
  {extra})"#
    );
    wat::parse_str(&text).unwrap_or_else(|e| panic!("bad WAT: {e}\n{text}"))
}

/// `(ptr << 32) | len` as a WAT i64 constant.
pub fn packed(ptr: u64, len: u64) -> String {
    format!("i64.const {}", (ptr << 32) | len)
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The path of a built example agent, building the examples first when one is missing
/// (`scripts/build-wasm-examples.sh`, which adds the rustup target if needed).
pub fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let path = repo()
        .join("target/wasm-agents")
        .join(format!("{name}.wasm"));
    if !path.exists() {
        BUILT.get_or_init(|| {
            let status = std::process::Command::new("bash")
                .arg(repo().join("scripts/build-wasm-examples.sh"))
                .env_remove("CARGO_TARGET_DIR")
                .status()
                .expect("bash runs");
            assert!(
                status.success(),
                "scripts/build-wasm-examples.sh failed: build the example agents first"
            );
        });
    }
    assert!(
        path.exists(),
        "{} is missing after building the examples",
        path.display()
    );
    path
}
