//! clpe-server: the daemon's surfaces (SPEC §4).
//!
//! A [`Daemon`] holds the engine and the durable store under it; [`http::router`] is
//! the decision and operator API over HTTP, [`grpc::Decisions`] the decision API over
//! gRPC (`clpe.v1.Decisions`), and [`run`] ties them to listeners, signals and the
//! configuration ([`ServerConfig`]). Decisions run inline on the executor against the
//! current snapshot; applies and deletes run on the blocking pool, commit to the store,
//! then swap the snapshot whole, so a decision never waits for a write and never sees
//! half a batch.

pub mod clock;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod grpc;
pub mod http;
pub mod run;
pub mod token;

pub use config::{FileConfig, LogFormat, ServerConfig, default_data_dir};
pub use daemon::{Daemon, OpenError};
pub use run::{RunError, run};
pub use token::Token;
