//! What can go wrong loading a module or calling it: values with context.

/// Why a `WasmAgent` module was refused at apply time (HTTP 422; nothing changes).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the WASM engine could not start: {0}")]
    Engine(String),
    #[error("not a valid WebAssembly module: {0}")]
    Invalid(String),
    #[error(
        "the module imports `{module}`.`{name}` ({kind}): a WASM agent may import nothing (ABI v1 offers no host functions, no WASI)"
    )]
    Import {
        module: String,
        name: String,
        kind: &'static str,
    },
    #[error(
        "the module does not export `{0}` (ABI v1 needs memory, clpe_abi_version, clpe_alloc, clpe_decide; see docs/wasm-agents.md)"
    )]
    MissingExport(&'static str),
    #[error("the module exports `{name}` as {found}, ABI v1 needs {want}")]
    WrongExport {
        name: &'static str,
        found: String,
        want: &'static str,
    },
    #[error("the module speaks ABI version {0}; this host speaks version 1")]
    Version(u32),
    #[error("the agent refused its config: {0}")]
    Config(String),
    #[error("the module could not be instantiated: {0}")]
    Instantiate(String),
    #[error("the module failed while starting: {0}")]
    Start(#[source] CallError),
}

/// Why a call into a guest produced no verdict; the subscription's `failureMode` applies.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("ran out of fuel (spec.limits.fuel: {0})")]
    OutOfFuel(u64),
    #[error("ran out of time (spec.limits.timeoutMs: {0})")]
    Timeout(u64),
    #[error(
        "grew its memory past its limit (asked for {asked} bytes, spec.limits.memoryBytes: {limit})"
    )]
    Memory { asked: usize, limit: u64 },
    #[error("trapped: {0}")]
    Trap(String),
    #[error("broke the ABI: {0}")]
    Abi(String),
    #[error("reported that it could not decide: {0}")]
    Failed(String),
}
