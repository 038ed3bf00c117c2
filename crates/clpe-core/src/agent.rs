//! The agent contract: every policy agent, built-in or WASM, is this one small trait.
//!
//! The dispatcher calls [`Agent::decide`] for each subscribed agent in ascending priority,
//! handing it the shared [`Context`] of the chain. A deny ends the chain. Once the chain
//! has settled, every subscribed agent's [`Agent::observe`] sees the outcome (the monitor
//! counts it there), whether or not the agent ran.

use std::sync::Arc;

use crate::context::Context;
use crate::document::WasmAgentSpec;
use crate::error::AgentError;
use crate::event::{Event, Response};
use crate::names::AgentName;

/// What an agent says about the event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to say; the chain goes on.
    Continue,
    /// The agent allows (naming the policy, if one decided). Later agents may still deny.
    Allow { matched_by: Option<Arc<str>> },
    /// The agent denies: the chain ends.
    Deny {
        reason: Arc<str>,
        matched_by: Option<Arc<str>>,
    },
}

/// The settled outcome of one chain, as observers see it.
pub struct Outcome<'a> {
    pub event: &'a Event,
    pub response: &'a Response,
    /// Agents whose subscription ran, with how long each took (when the engine has a ticker).
    pub agent_nanos: &'a [(Arc<str>, u64)],
    /// Agents that failed (error, trap, time-out), whatever their failure mode.
    pub failures: &'a [Arc<str>],
    pub chain_nanos: Option<u64>,
    /// `ConnectionClosed`: the connection that was closed, if it was open.
    pub closed: Option<&'a crate::limits::Connection>,
    /// The time of the decision, on the engine's clock.
    pub now: crate::names::Time,
}

impl<'a> Outcome<'a> {
    /// A settled event and its response, with nothing else to report (no agent timed,
    /// none failed, no connection closed).
    pub fn new(event: &'a Event, response: &'a Response, now: crate::names::Time) -> Self {
        Outcome {
            event,
            response,
            agent_nanos: &[],
            failures: &[],
            chain_nanos: None,
            closed: None,
            now,
        }
    }
}

pub trait Agent: Send + Sync {
    /// Decides on the event; `cx` carries the event, the snapshot and the shared state.
    /// A deny is a verdict, never an `Err`: an `Err` means the agent could not decide, and
    /// its subscription's failure mode applies.
    fn decide(&self, cx: &mut Context<'_>) -> Result<Verdict, AgentError>;

    /// Called once per event after the chain settles (not for dry-run decisions).
    fn observe(&self, _outcome: &Outcome<'_>) {}
}

/// Compiles `WasmAgent` documents into agents; provided by the host (the `clpe-wasm`
/// crate), so the core needs no WASM runtime.
pub trait AgentLoader: Send + Sync {
    fn load(&self, name: &AgentName, spec: &WasmAgentSpec) -> Result<Arc<dyn Agent>, String>;
}
