//! The guest SDK of clpe WASM policy agents (ABI v1).
//!
//! An agent is a type that implements [`Agent`], exported with [`export_agent!`] from a
//! `cdylib` crate built for `wasm32-unknown-unknown`:
//!
//! ```no_run
//! use clpe_agent_sdk::{Agent, Input, Reply, export_agent};
//!
//! struct DenyAll;
//!
//! impl Agent for DenyAll {
//!     fn new(_config: serde_json::Value) -> Result<Self, String> {
//!         Ok(DenyAll)
//!     }
//!     fn decide<'a>(&mut self, input: &Input<'a>) -> Reply<'a> {
//!         Reply::deny("nobody gets in").matched_by(format!("/{}", input.agent))
//!     }
//! }
//!
//! export_agent!(DenyAll);
//! ```
//!
//! The module then exports `memory`, `clpe_abi_version`, `clpe_alloc`, `clpe_init` and
//! `clpe_decide`, and imports nothing: the host refuses a module that imports anything.
//! Time comes from the host ([`Input::now_nanos`]); the guest never reads a clock.
//!
//! The same crate builds on the host: `clpe-wasm` uses its codec ([`encode_input`],
//! [`ReplyView`]), so host and guest cannot disagree on the encoding.
//! `docs/wasm-agents.md` describes the interface in full.

pub mod guest;
pub mod input;
pub mod reply;
pub mod wire;

pub use guest::Agent;
pub use input::{
    ABI_VERSION, Candidate, CandidateWriter, Candidates, Decision, Event, EventType, Input,
    InputSource, encode_input,
};
pub use reply::{Reply, ReplyView, Text, Verdict};
pub use serde_json;
pub use wire::{ListWriter, Map, MapWriter, StrList, WireError};

/// Exports an [`Agent`] type as the module's ABI v1 entry points.
///
/// Use it once, at the root of a `cdylib` crate. It expands to `#[unsafe(no_mangle)]`
/// functions, which is why it lives in the agent's crate and not in this one.
#[macro_export]
macro_rules! export_agent {
    ($agent:ty) => {
        ::std::thread_local! {
            static __CLPE_AGENT: ::core::cell::RefCell<::core::option::Option<$agent>> =
                const { ::core::cell::RefCell::new(::core::option::Option::None) };
        }

        /// The ABI version this module speaks.
        #[unsafe(no_mangle)]
        pub extern "C" fn clpe_abi_version() -> u32 {
            $crate::ABI_VERSION
        }

        /// A buffer of `len` bytes for the host to write a message into.
        #[unsafe(no_mangle)]
        pub extern "C" fn clpe_alloc(len: u32) -> u32 {
            $crate::guest::alloc(len)
        }

        /// Builds the agent from its JSON config: 0, or the packed error text.
        #[unsafe(no_mangle)]
        pub extern "C" fn clpe_init(ptr: u32, len: u32) -> u64 {
            $crate::guest::init::<$agent>(&__CLPE_AGENT, ptr, len)
        }

        /// Decides one event: the packed reply.
        #[unsafe(no_mangle)]
        pub extern "C" fn clpe_decide(ptr: u32, len: u32) -> u64 {
            $crate::guest::decide::<$agent>(&__CLPE_AGENT, ptr, len)
        }
    };
}
