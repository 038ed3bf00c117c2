//! The loader: one wasmtime engine (cranelift, fuel, epoch interruption) and its ticker,
//! compiling `WasmAgent` documents into agents at apply time.

use std::sync::Arc;
use std::time::Duration;

use clpe_core::document::WasmAgentSpec;
use clpe_core::{Agent, AgentLoader, AgentName};
use parking_lot::{Condvar, Mutex};
use wasmtime::{Config, Engine, Linker, Module, OptLevel};

use crate::agent::WasmAgent;
use crate::error::LoadError;
use crate::instance::{Compiled, Guard, Prepared};

/// How the host runs guests.
#[derive(Clone, Debug)]
pub struct Options {
    /// The epoch tick: how finely `timeoutMs` is enforced. A call is stopped between its
    /// `timeoutMs` and one tick later.
    pub tick: Duration,
    /// The largest reply (or config error) a guest may return, bytes.
    pub max_output_bytes: usize,
    /// Idle instances kept per agent for reuse.
    pub pool_size: usize,
}

impl Default for Options {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Options {
            tick: Duration::from_millis(1),
            max_output_bytes: 64 << 10,
            pool_size: cores.clamp(2, 16),
        }
    }
}

/// Compiles `WasmAgent` modules into [`WasmAgent`]s; register it as the engine's
/// `EngineConfig::loader`.
pub struct WasmLoader {
    engine: Engine,
    options: Options,
    /// The modules in use, shared with the ticker, which runs only while there are some.
    shared: Arc<Shared>,
}

/// A module's bytes and its compiled form.
type ModuleEntry = (Arc<[u8]>, Arc<Prepared>);

/// What the loader and its ticker share.
#[derive(Default)]
struct Shared {
    /// Modules in use, by their bytes: applying a new config or new limits for the same
    /// module (or a second agent from it) does not compile it again. An entry goes once
    /// no agent holds it any more.
    modules: Mutex<Modules>,
    /// Wakes the ticker when a module comes into use, or the loader goes.
    wake: Condvar,
}

#[derive(Default)]
struct Modules {
    entries: Vec<ModuleEntry>,
    /// The loader is gone: no module will come into use any more.
    closed: bool,
    /// The ticker is waiting for a module to come into use (no guest can be running).
    idle: bool,
}

impl Modules {
    /// Drops the entries no agent holds any more; `true` if some remain.
    fn in_use(&mut self) -> bool {
        self.entries.retain(|(_, p)| Arc::strong_count(p) > 1);
        !self.entries.is_empty()
    }
}

impl std::fmt::Debug for WasmLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmLoader")
            .field("options", &self.options)
            .finish()
    }
}

impl Drop for WasmLoader {
    fn drop(&mut self) {
        self.shared.modules.lock().closed = true;
        self.shared.wake.notify_all();
    }
}

/// Ticks the engine's epoch while some agent of the loader exists (a guest can only run
/// in one), and until the engine is gone: one thread per loader, however many agents. With
/// no agent it waits, so an engine without WASM agents is not woken every tick.
fn start_ticker(engine: &Engine, shared: &Arc<Shared>, tick: Duration) -> Result<(), LoadError> {
    let weak = engine.weak();
    let shared = shared.clone();
    std::thread::Builder::new()
        .name("clpe-wasm-epoch".into())
        .spawn(move || {
            loop {
                {
                    let mut modules = shared.modules.lock();
                    while !modules.in_use() {
                        if modules.closed {
                            return;
                        }
                        modules.idle = true;
                        shared.wake.wait(&mut modules);
                    }
                    modules.idle = false;
                }
                std::thread::sleep(tick);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => return,
                }
            }
        })
        .map(|_| ())
        .map_err(|e| LoadError::Engine(format!("cannot start the epoch ticker: {e}")))
}

impl WasmLoader {
    pub fn new() -> Result<WasmLoader, LoadError> {
        WasmLoader::with_options(Options::default())
    }

    pub fn with_options(options: Options) -> Result<WasmLoader, LoadError> {
        let mut config = Config::new();
        // A guest's call stack is capped well below a deciding thread's stack (2 MiB for
        // std and tokio threads), so stack exhaustion is a trap, never a crash.
        config
            .consume_fuel(true)
            .epoch_interruption(true)
            .max_wasm_stack(256 << 10)
            .cranelift_opt_level(OptLevel::Speed);
        let engine = Engine::new(&config).map_err(|e| LoadError::Engine(e.to_string()))?;
        let shared = Arc::new(Shared::default());
        start_ticker(&engine, &shared, options.tick)?;
        Ok(WasmLoader {
            engine,
            options,
            shared,
        })
    }

    /// Whether the epoch ticker is waiting: no agent of this loader exists, so no guest
    /// can be running. It starts again when a module comes into use.
    pub fn ticker_idle(&self) -> bool {
        self.shared.modules.lock().idle
    }

    /// Validates, compiles and checks a module, or finds it compiled already.
    fn prepare(&self, bytes: &Arc<[u8]>) -> Result<Arc<Prepared>, LoadError> {
        {
            let mut modules = self.shared.modules.lock();
            modules.in_use();
            if let Some((_, p)) = modules.entries.iter().find(|(b, _)| **b == **bytes) {
                return Ok(p.clone());
            }
        }
        if !bytes.starts_with(b"\0asm") {
            return Err(LoadError::Invalid(
                "it does not start with `\\0asm` (is it a .wasm file? WAT text is not accepted)"
                    .into(),
            ));
        }
        let module = Module::from_binary(&self.engine, bytes).map_err(|e| {
            let text = format!("{e:#}");
            LoadError::Invalid(text.split_whitespace().collect::<Vec<_>>().join(" "))
        })?;
        let has_init = crate::module::check(&module)?;
        let pre = Linker::<Guard>::new(&self.engine)
            .instantiate_pre(&module)
            .map_err(|e| LoadError::Instantiate(e.to_string()))?;
        let prepared = Arc::new(Prepared { pre, has_init });
        self.shared
            .modules
            .lock()
            .entries
            .push((bytes.clone(), prepared.clone()));
        self.shared.wake.notify_all();
        Ok(prepared)
    }

    /// Validates, compiles and starts a module: the typed form of [`AgentLoader::load`].
    pub fn load_agent(
        &self,
        name: &AgentName,
        spec: &WasmAgentSpec,
    ) -> Result<WasmAgent, LoadError> {
        let module = self.prepare(&spec.module)?;
        let config = if spec.config.is_null() {
            Vec::new()
        } else {
            spec.config.to_string().into_bytes()
        };
        let tick = self.options.tick.as_nanos().max(1);
        let timeout = u128::from(spec.limits.timeout_ms) * 1_000_000;
        let ticks = u64::try_from(timeout.div_ceil(tick))
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let compiled = Compiled {
            engine: self.engine.clone(),
            module,
            limits: spec.limits.clone(),
            ticks,
            config,
            max_output: self.options.max_output_bytes,
        };
        let first = compiled.instantiate()?;
        Ok(WasmAgent::new(
            name.as_str(),
            compiled,
            first,
            self.options.pool_size,
        ))
    }
}

impl AgentLoader for WasmLoader {
    fn load(&self, name: &AgentName, spec: &WasmAgentSpec) -> Result<Arc<dyn Agent>, String> {
        match self.load_agent(name, spec) {
            Ok(agent) => Ok(Arc::new(agent)),
            Err(e) => Err(e.to_string()),
        }
    }
}
