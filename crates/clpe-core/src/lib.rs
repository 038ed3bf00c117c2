//! clpe-core: the ClusterLink policy engine, sans-IO.
//!
//! Documents are parsed and validated ([`document`]), compiled into an immutable
//! [`snapshot::Snapshot`] with indexed selectors ([`index`]), and events are decided by the
//! [`dispatcher::Engine`], which runs each event's chain of [`agent::Agent`]s: the built-in
//! [`acl`], [`lb`], [`connection_limiter`], [`rate_limiter`] and [`monitor`], and any WASM
//! agent a host loads. No async runtime, no wire formats, no clock calls: time is passed in.

pub mod acl;
pub mod agent;
pub mod attrs;
pub mod connection_limiter;
pub mod context;
pub mod dispatcher;
pub mod document;
pub mod error;
pub mod event;
pub mod index;
pub mod lb;
pub mod limits;
pub mod monitor;
pub mod names;
pub mod rate_limiter;
pub mod runtime;
pub mod scenario;
pub mod selector;
mod shard_lock;
pub mod snapshot;
pub mod text;

pub use agent::{Agent, AgentLoader, Outcome, Verdict};
pub use context::Context;
pub use dispatcher::{Applied, Change, DecideOptions, Engine, EngineConfig};
pub use document::{DocKey, Document, Kind, parse_documents};
pub use error::{AgentError, ApplyError, DocError, EventError};
pub use event::{Decision, Event, EventType, Response};
pub use names::{AgentName, ConnectionId, Namespace, PeerName, ServiceName, Time};
pub use text::Text;
