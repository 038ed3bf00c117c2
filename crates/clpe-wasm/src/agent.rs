//! A loaded WASM agent: the core's [`Agent`] trait over a pool of guest instances.

use std::sync::Arc;

use clpe_agent_sdk::encode_input;
use clpe_core::{Agent, AgentError, Context, Verdict};
use parking_lot::Mutex;

use crate::instance::{Compiled, Slot};
use crate::source::Source;

/// One `WasmAgent` document, compiled.
///
/// Instances are pooled: a decision takes an idle instance (or makes one from the
/// pre-instantiated module, running `clpe_init` with the config), and gives it back when
/// the call succeeded. An instance whose call failed is dropped, never reused. At most
/// `pool_size` idle instances are kept.
pub struct WasmAgent {
    name: Arc<str>,
    compiled: Compiled,
    pool: Mutex<Vec<Slot>>,
    pool_size: usize,
}

impl std::fmt::Debug for WasmAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmAgent")
            .field("name", &self.name)
            .field("limits", &self.compiled.limits)
            .finish()
    }
}

impl WasmAgent {
    pub(crate) fn new(name: &str, compiled: Compiled, first: Slot, pool_size: usize) -> WasmAgent {
        WasmAgent {
            name: name.into(),
            compiled,
            pool: Mutex::new(vec![first]),
            pool_size: pool_size.max(1),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Idle instances ready for the next decisions.
    pub fn idle_instances(&self) -> usize {
        self.pool.lock().len()
    }

    fn take(&self) -> Result<Slot, AgentError> {
        if let Some(slot) = self.pool.lock().pop() {
            return Ok(slot);
        }
        self.compiled
            .instantiate()
            .map_err(|e| AgentError(format!("cannot start an instance: {e}")))
    }

    fn give_back(&self, slot: Slot) {
        let mut pool = self.pool.lock();
        if pool.len() < self.pool_size {
            pool.push(slot);
        }
    }
}

impl Agent for WasmAgent {
    fn observes(&self) -> bool {
        false
    }

    fn decide<'s>(&self, cx: &mut Context<'s>) -> Result<Verdict<'s>, AgentError> {
        let mut slot = self.take()?;
        let source = Source {
            agent: &self.name,
            cx,
        };
        let result = match slot.call(&self.compiled, |buf| encode_input(&source, buf)) {
            // The instance answered: it stays fit for reuse even if its reply is refused.
            Ok(reply) => Ok(crate::apply::apply(cx, &reply, &self.name)),
            Err(e) => Err(e),
        };
        match result {
            Ok(applied) => {
                self.give_back(slot);
                applied.map_err(|e| AgentError(e.to_string()))
            }
            Err(e) => Err(AgentError(e.to_string())),
        }
    }
}
