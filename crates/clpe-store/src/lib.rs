//! Durable storage of the operator's documents.
//!
//! The store knows nothing of the engine's types: a document is opaque bytes (its JSON)
//! under a [`DocKey`], and a batch of [`Change`]s is committed whole or not at all. Two
//! backends implement [`Store`]: [`RedbStore`], the embedded default (one `store.redb`
//! file in the data directory, fsync'd before a commit returns), and [`MemoryStore`], for
//! tests and offline runs. A distributed backend can come later behind the same trait.
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        reason = "tests fail loudly"
    )
)]

mod error;
mod key;
mod memory;
mod redb_store;

use std::collections::BTreeMap;

pub use error::StoreError;
pub use memory::MemoryStore;
pub use redb_store::RedbStore;

/// Identifies one document.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DocKey {
    /// The kind as documents spell it, e.g. `AccessPolicy`.
    pub kind: String,
    /// The namespace; `""` for cluster-wide kinds.
    pub namespace: String,
    /// The document's name.
    pub name: String,
}

impl DocKey {
    /// A key from its three parts.
    pub fn new(
        kind: impl Into<String>,
        namespace: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        Self {
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for DocKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.kind, self.name)
        } else {
            write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// One change of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Stores `body` under `key`, replacing what was there.
    Put { key: DocKey, body: Vec<u8> },
    /// Removes `key`; removing a key that is not there is not an error at this layer.
    Delete { key: DocKey },
    /// Sets a metadata entry (engine bookkeeping that is not a document).
    SetMeta { key: String, value: Vec<u8> },
}

/// Everything a store holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    /// The revision of the last commit; 0 for a store never committed to.
    pub revision: u64,
    /// Every document, in key order.
    pub docs: Vec<(DocKey, Vec<u8>)>,
    /// Every metadata entry.
    pub meta: BTreeMap<String, Vec<u8>>,
}

/// Durable storage of documents.
///
/// Commits are serialised: the revisions they return are 1, 2, 3, ... with no gaps,
/// one per commit, an empty batch included.
pub trait Store: Send + Sync {
    /// Applies every change of the batch, in order, atomically and durably (on disk
    /// before it returns `Ok`), or none of them. Returns the new revision.
    fn commit(&self, changes: &[Change]) -> Result<u64, StoreError>;

    /// Everything stored, docs in key order.
    fn load(&self) -> Result<Loaded, StoreError>;

    /// A short name of the backend for logs (`redb`, `memory`).
    fn backend(&self) -> &'static str;
}
