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
use crate::event::{Direction, Event, EventType, Response};
use crate::names::AgentName;
use crate::snapshot::Snapshot;
use crate::text::Text;

/// What an agent says about the event. Its texts are borrowed from the snapshot where
/// they live there: a verdict is a few words, passed back without copying texts, and a
/// text is copied once, into the response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict<'s> {
    /// Nothing to say; the chain goes on.
    Continue,
    /// The agent allows (naming the policy, if one decided). Later agents may still deny.
    Allow { matched_by: Option<Held<'s>> },
    /// The agent denies: the chain ends.
    Deny {
        reason: Held<'s>,
        matched_by: Option<Held<'s>>,
    },
}

/// A text an agent hands the dispatcher: borrowed from the snapshot, made for this
/// decision (boxed, so that a verdict stays small whatever it holds), or a fixed start and
/// a snapshot's text, joined only if a response takes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Held<'s> {
    Borrowed(&'s Text),
    Owned(Box<Text>),
    Joined(&'static str, &'s str),
}

impl Held<'_> {
    pub fn into_text(self) -> Text {
        match self {
            Held::Borrowed(t) => t.clone(),
            Held::Owned(t) => *t,
            Held::Joined(a, b) => Text::joined(a, b),
        }
    }

    pub fn to_text(&self) -> Text {
        self.clone().into_text()
    }
}

impl std::fmt::Display for Held<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Held::Borrowed(t) => f.write_str(t),
            Held::Owned(t) => f.write_str(t),
            Held::Joined(a, b) => write!(f, "{a}{b}"),
        }
    }
}

impl<'s> From<&'s Text> for Held<'s> {
    fn from(t: &'s Text) -> Held<'s> {
        Held::Borrowed(t)
    }
}

impl From<Text> for Held<'_> {
    fn from(t: Text) -> Self {
        Held::Owned(Box::new(t))
    }
}

impl From<String> for Held<'_> {
    fn from(s: String) -> Self {
        Held::Owned(Box::new(Text::from(s)))
    }
}

impl From<&str> for Held<'_> {
    fn from(s: &str) -> Self {
        Held::Owned(Box::new(Text::new(s)))
    }
}

/// The settled outcome of one chain, as observers see it.
pub struct Outcome<'a> {
    pub event: &'a Event,
    pub response: &'a Response,
    /// Agents whose subscription ran, with how long each took (when the engine has a ticker).
    pub agent_nanos: &'a [(Text, u64)],
    /// Agents that failed (error, trap, time-out), whatever their failure mode.
    pub failures: &'a [Text],
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
    fn decide<'s>(&self, cx: &mut Context<'s>) -> Result<Verdict<'s>, AgentError>;

    /// Called once per event after the chain settles (not for dry-run decisions).
    fn observe(&self, _outcome: &Outcome<'_>) {}

    /// Whether [`Agent::decide`] would say `Continue` and leave the context as it found
    /// it, for every event of type `event` going in `direction` (`None`: an event without
    /// one) on `snapshot`. The dispatcher leaves such an agent out of the chains it runs;
    /// an explained decision runs the whole chain, so that its trace shows every agent.
    fn idle(&self, _snapshot: &Snapshot, _event: EventType, _direction: Option<Direction>) -> bool {
        false
    }

    /// Whether [`Agent::observe`] does anything: the dispatcher calls only those that do.
    fn observes(&self) -> bool {
        true
    }
}

/// Compiles `WasmAgent` documents into agents; provided by the host (the `clpe-wasm`
/// crate), so the core needs no WASM runtime.
pub trait AgentLoader: Send + Sync {
    fn load(&self, name: &AgentName, spec: &WasmAgentSpec) -> Result<Arc<dyn Agent>, String>;
}
