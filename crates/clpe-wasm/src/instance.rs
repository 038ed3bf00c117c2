//! One instance of a compiled agent: its store (with fuel, an epoch deadline and a memory
//! limiter), its memory and its entry points, and the calls made into it.

use clpe_agent_sdk::ReplyView;
use clpe_core::document::WasmLimits;
use wasmtime::{
    Engine, InstancePre, Memory, ResourceLimiter, Store, Trap, TypedFunc, WasmBacktrace,
};

use crate::error::{CallError, LoadError};

/// The store's limiter: caps linear memory at `spec.limits.memoryBytes` and remembers
/// what was asked, so the error can say so.
pub(crate) struct Guard {
    memory_limit: usize,
    asked: Option<usize>,
}

impl ResourceLimiter for Guard {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.asked = Some(desired);
            // An error (not `Ok(false)`) traps at once: a module looping on a failing
            // `memory.grow` would otherwise spin until its fuel runs out.
            return Err(wasmtime::Error::msg("memory limit reached"));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        1
    }

    fn memories(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        4
    }
}

/// A module compiled and checked once, shared by every agent loaded from the same bytes.
pub(crate) struct Prepared {
    pub pre: InstancePre<Guard>,
    /// Whether the module exports `clpe_init`.
    pub has_init: bool,
}

/// A loaded agent's module and settings: what every instance of it needs.
pub(crate) struct Compiled {
    pub engine: Engine,
    pub module: std::sync::Arc<Prepared>,
    pub limits: WasmLimits,
    /// The epoch deadline: `timeoutMs` in ticks of the loader's ticker.
    pub ticks: u64,
    /// `spec.config` as JSON, handed to `clpe_init`.
    pub config: Vec<u8>,
    pub max_output: usize,
}

pub(crate) struct Slot {
    store: Store<Guard>,
    memory: Memory,
    alloc: TypedFunc<u32, u32>,
    decide: TypedFunc<(u32, u32), u64>,
    inbox: Inbox,
    /// The encoded input, kept to reuse its allocation.
    buf: Vec<u8>,
}

fn unpack(packed: u64) -> (usize, usize) {
    ((packed >> 32) as usize, (packed & 0xffff_ffff) as usize)
}

/// Names what stopped a call.
fn classify(store: &mut Store<Guard>, e: &wasmtime::Error, limits: &WasmLimits) -> CallError {
    if let Some(asked) = store.data_mut().asked.take() {
        return CallError::Memory {
            asked,
            limit: limits.memory_bytes,
        };
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => CallError::OutOfFuel(limits.fuel),
        Some(Trap::Interrupt) => CallError::Timeout(limits.timeout_ms),
        Some(trap) => {
            let what = trap.to_string();
            let what = what.strip_prefix("wasm trap: ").unwrap_or(&what).to_owned();
            let func = e
                .downcast_ref::<WasmBacktrace>()
                .and_then(|bt| bt.frames().iter().find_map(|f| f.func_name()));
            CallError::Trap(match func {
                Some(f) => format!("{what} (in `{f}`)"),
                None => what,
            })
        }
        None => CallError::Trap(e.root_cause().to_string()),
    }
}

/// Fresh fuel and a fresh deadline: every call gets the whole of `spec.limits`.
fn arm(store: &mut Store<Guard>, c: &Compiled) -> Result<(), CallError> {
    store
        .set_fuel(c.limits.fuel)
        .map_err(|e| CallError::Trap(format!("cannot set fuel: {e}")))?;
    store.set_epoch_deadline(c.ticks);
    Ok(())
}

/// The guest's input buffer: where `clpe_alloc` last put it, and its size. ABI v1 lets
/// the host reuse it for any message that fits, so most calls need no `clpe_alloc`.
#[derive(Clone, Copy, Default)]
struct Inbox {
    ptr: u32,
    cap: u32,
}

/// Writes `bytes` into the guest's input buffer (asking for a larger one when it does
/// not fit); returns its address.
fn put(
    store: &mut Store<Guard>,
    memory: &Memory,
    alloc: &TypedFunc<u32, u32>,
    inbox: &mut Inbox,
    bytes: &[u8],
    c: &Compiled,
) -> Result<u32, CallError> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| CallError::Abi("the input does not fit in 4 GiB".into()))?;
    if len > inbox.cap || inbox.cap == 0 {
        let want = len.max(1024).checked_next_power_of_two().unwrap_or(len);
        let ptr = alloc
            .call(&mut *store, want)
            .map_err(|e| classify(store, &e, &c.limits))?;
        *inbox = Inbox { ptr, cap: want };
    }
    memory
        .write(&mut *store, inbox.ptr as usize, bytes)
        .map_err(|_| {
            CallError::Abi(format!(
                "clpe_alloc({}) returned {}, which is outside its memory",
                inbox.cap, inbox.ptr
            ))
        })?;
    Ok(inbox.ptr)
}

/// The guest's output at `packed`, checked against the cap and the memory's bounds.
fn output<'m>(data: &'m [u8], packed: u64, max: usize, what: &str) -> Result<&'m [u8], CallError> {
    let (ptr, len) = unpack(packed);
    if len > max {
        return Err(CallError::Abi(format!(
            "{what} returned {len} bytes, over the cap of {max}"
        )));
    }
    data.get(ptr..ptr.saturating_add(len)).ok_or_else(|| {
        CallError::Abi(format!(
            "{what} returned bytes {ptr}..{} outside its memory",
            ptr.saturating_add(len)
        ))
    })
}

impl Compiled {
    /// A new instance: instantiated, version checked, config handed over, each step
    /// under the agent's limits.
    pub fn instantiate(&self) -> Result<Slot, LoadError> {
        let guard = Guard {
            memory_limit: usize::try_from(self.limits.memory_bytes).unwrap_or(usize::MAX),
            asked: None,
        };
        let mut store =
            Store::try_new(&self.engine, guard).map_err(|e| LoadError::Engine(e.to_string()))?;
        store.limiter(|g| g as &mut dyn ResourceLimiter);
        arm(&mut store, self).map_err(LoadError::Start)?;
        let instance = match self.module.pre.instantiate(&mut store) {
            Ok(i) => i,
            Err(e) if e.downcast_ref::<Trap>().is_some() || store.data().asked.is_some() => {
                return Err(LoadError::Start(classify(&mut store, &e, &self.limits)));
            }
            Err(e) => return Err(LoadError::Instantiate(e.root_cause().to_string())),
        };
        let missing =
            |what: &str| LoadError::Instantiate(format!("`{what}` is missing or mistyped"));
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| missing("memory"))?;
        let version = instance
            .get_typed_func::<(), u32>(&mut store, "clpe_abi_version")
            .map_err(|_| missing("clpe_abi_version"))?;
        let alloc = instance
            .get_typed_func::<u32, u32>(&mut store, "clpe_alloc")
            .map_err(|_| missing("clpe_alloc"))?;
        let decide = instance
            .get_typed_func::<(u32, u32), u64>(&mut store, "clpe_decide")
            .map_err(|_| missing("clpe_decide"))?;
        arm(&mut store, self).map_err(LoadError::Start)?;
        let v = version
            .call(&mut store, ())
            .map_err(|e| LoadError::Start(classify(&mut store, &e, &self.limits)))?;
        if v != clpe_agent_sdk::ABI_VERSION {
            return Err(LoadError::Version(v));
        }
        let mut inbox = Inbox::default();
        if self.module.has_init {
            let init = instance
                .get_typed_func::<(u32, u32), u64>(&mut store, "clpe_init")
                .map_err(|_| missing("clpe_init"))?;
            arm(&mut store, self).map_err(LoadError::Start)?;
            let ptr = put(&mut store, &memory, &alloc, &mut inbox, &self.config, self)
                .map_err(LoadError::Start)?;
            let len = self.config.len() as u32;
            let packed = init
                .call(&mut store, (ptr, len))
                .map_err(|e| LoadError::Start(classify(&mut store, &e, &self.limits)))?;
            if packed != 0 {
                let text = output(memory.data(&store), packed, self.max_output, "clpe_init")
                    .map_err(LoadError::Start)?;
                let text = String::from_utf8_lossy(text);
                return Err(LoadError::Config(text.chars().take(1024).collect()));
            }
        }
        Ok(Slot {
            store,
            memory,
            alloc,
            decide,
            inbox,
            buf: Vec::new(),
        })
    }
}

impl Slot {
    /// One decision: `fill` encodes the input; the reply is decoded and validated in the
    /// guest's memory. An `Err` leaves the instance unfit for reuse.
    pub fn call(
        &mut self,
        c: &Compiled,
        fill: impl FnOnce(&mut Vec<u8>),
    ) -> Result<ReplyView<'_>, CallError> {
        fill(&mut self.buf);
        arm(&mut self.store, c)?;
        let ptr = put(
            &mut self.store,
            &self.memory,
            &self.alloc,
            &mut self.inbox,
            &self.buf,
            c,
        )?;
        let len = self.buf.len() as u32;
        let packed = self
            .decide
            .call(&mut self.store, (ptr, len))
            .map_err(|e| classify(&mut self.store, &e, &c.limits))?;
        let bytes = output(
            self.memory.data(&self.store),
            packed,
            c.max_output,
            "clpe_decide",
        )?;
        ReplyView::decode(bytes)
            .map_err(|e| CallError::Abi(format!("clpe_decide returned garbage: {e}")))
    }
}
