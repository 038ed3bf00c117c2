//! clpe-wasm: the WASM policy agent host of the ClusterLink policy engine (SPEC §3.6).
//!
//! [`WasmLoader`] implements the core's [`AgentLoader`](clpe_core::AgentLoader): at apply
//! time it validates and compiles a `WasmAgent` module once (wasmtime, cranelift), checks
//! that it imports nothing and exports the ABI v1 entry points, instantiates it once to
//! check its version and hand it its config, and returns a [`WasmAgent`], one more
//! implementation of the same [`Agent`](clpe_core::Agent) trait as the built-in agents.
//!
//! Per decision the agent takes a ready instance from its small pool (making a new one
//! from the pre-instantiated module when the pool is empty), encodes the event and the
//! shared state with the SDK's codec, calls the guest with fresh fuel and an epoch
//! deadline, decodes and validates the reply, applies it to the shared state and gives
//! the instance back. A guest that traps, runs out of fuel or time, grows its memory past
//! its limit or answers garbage yields an `Err(AgentError)` naming what happened: its
//! subscription's `failureMode` decides the event, and the instance is thrown away.
//!
//! The interface is documented in `docs/wasm-agents.md`; the guest side is the
//! `clpe-agent-sdk` crate.

mod agent;
mod apply;
mod error;
mod instance;
mod loader;
mod module;
mod source;

pub use agent::WasmAgent;
pub use error::{CallError, LoadError};
pub use loader::{Options, WasmLoader};
