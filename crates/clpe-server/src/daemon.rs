//! The daemon's state: the engine, the durable store under it, and the operator token.
//!
//! Every apply and delete is committed to the store inside the engine's write step,
//! before the new snapshot is swapped in: acknowledged means durable, and a store that
//! refuses the commit leaves the engine as it was. On start the engine is rebuilt from
//! the store; the default subscriptions are seeded once, on the very first start, so a
//! default the operator deleted stays deleted across restarts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clpe_core::dispatcher::Ticker;
use clpe_core::{
    AgentLoader, Applied, ApplyError, Change, DecideOptions, DocKey, Document, Engine, EngineConfig,
};
use clpe_core::{Event, EventError, PeerName, Response};
use clpe_store::{RedbStore, Store, StoreError};

use crate::clock;
use crate::config::ServerConfig;
use crate::token::{Token, TokenError};

/// The store's metadata key that records that the default subscriptions were seeded.
const SEEDED: &str = "seeded-defaults";

/// Why the daemon cannot start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create the data directory `{}`", path.display())]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Token(#[from] TokenError),
    /// A stored document no longer parses: the store is refused rather than half loaded.
    #[error("stored document {key}: {message}")]
    Stored { key: String, message: String },
    #[error("cannot rebuild the engine from the store: {0}")]
    Restore(ApplyError),
}

/// Run after every batch (applied or refused): the binary hands its allocator's free
/// memory back to the system there. Process-wide, like the allocator it speaks for.
static AFTER_BATCH: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets what runs after every batch (once per process; later calls are ignored).
pub fn set_after_batch(hook: fn()) {
    let _ = AFTER_BATCH.set(hook);
}

fn after_batch() {
    if let Some(hook) = AFTER_BATCH.get() {
        hook();
    }
}

pub struct Daemon {
    engine: Engine,
    store: Box<dyn Store>,
    token: Token,
    ready: AtomicBool,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("store", &self.store.backend())
            .finish_non_exhaustive()
    }
}

/// The engine configuration a daemon runs with.
pub fn engine_config(config: &ServerConfig, loader: Option<Arc<dyn AgentLoader>>) -> EngineConfig {
    let ticker: Ticker = clock::ticker();
    EngineConfig {
        local_peer: PeerName::from(config.local_peer.as_str()),
        seed: config.seed,
        decision_log: config.decision_log,
        ticker: Some(ticker),
        loader,
        ..EngineConfig::default()
    }
}

impl Daemon {
    /// Opens the data directory (made with 0700 permissions when new): the store, the token.
    pub fn open(data_dir: &Path, engine: EngineConfig) -> Result<Daemon, OpenError> {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(|source| OpenError::DataDir {
                path: data_dir.to_owned(),
                source,
            })?;
        let token = Token::load_or_create(&data_dir.join(crate::config::TOKEN_FILE))?;
        let store = RedbStore::open(data_dir)?;
        Daemon::with_store(Box::new(store), engine, token)
    }

    /// Rebuilds the engine from `store`, seeding the default subscriptions into a new one.
    pub fn with_store(
        store: Box<dyn Store>,
        config: EngineConfig,
        token: Token,
    ) -> Result<Daemon, OpenError> {
        let loaded = store.load()?;
        let seeded = loaded.meta.contains_key(SEEDED) || !loaded.docs.is_empty();
        let engine = if seeded {
            let mut docs = Vec::with_capacity(loaded.docs.len());
            for (i, (key, body)) in loaded.docs.into_iter().enumerate() {
                docs.push(stored_document(&key, &body, i + 1)?);
            }
            Engine::restore(config, docs, loaded.revision).map_err(OpenError::Restore)?
        } else {
            let engine = Engine::new(config);
            let mut changes: Vec<clpe_store::Change> = engine
                .snapshot()
                .docs
                .values()
                .map(|d| store_change(&Change::Put(d.clone())))
                .collect();
            changes.push(clpe_store::Change::SetMeta {
                key: SEEDED.to_owned(),
                value: b"1".to_vec(),
            });
            store.commit(&changes)?;
            engine
        };
        Ok(Daemon {
            engine,
            store,
            token,
            ready: AtomicBool::new(true),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn token(&self) -> &Token {
        &self.token
    }

    pub fn backend(&self) -> &'static str {
        self.store.backend()
    }

    /// Applies a batch, all or nothing, durably. Blocking: call it off the async executor.
    pub fn apply(&self, docs: Vec<Document>) -> Result<Applied, ApplyError> {
        let result = self.engine.apply_with(docs, |changes| self.commit(changes));
        after_batch();
        result
    }

    /// Deletes documents, all or nothing, durably. Blocking: call it off the async executor.
    pub fn delete(&self, keys: &[DocKey]) -> Result<Applied, ApplyError> {
        let result = self
            .engine
            .delete_with(keys, |changes| self.commit(changes));
        after_batch();
        result
    }

    /// Decides an event now (the wall clock).
    pub fn decide(&self, event: &Event, opts: DecideOptions) -> Result<Response, EventError> {
        self.engine.decide(event, clock::now(), opts)
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Marks the daemon as going away: `/readyz` answers 503 from now on.
    pub fn set_draining(&self) {
        self.ready.store(false, Ordering::Release);
    }

    fn commit(&self, changes: &[Change]) -> Result<(), String> {
        let changes: Vec<clpe_store::Change> = changes.iter().map(store_change).collect();
        self.store
            .commit(&changes)
            .map(|_| ())
            .map_err(|e| error_chain(&e))
    }
}

fn store_key(key: &DocKey) -> clpe_store::DocKey {
    clpe_store::DocKey::new(key.kind.as_str(), &*key.namespace, &*key.name)
}

fn store_change(change: &Change) -> clpe_store::Change {
    match change {
        Change::Put(doc) => clpe_store::Change::Put {
            key: store_key(&doc.key),
            body: doc.raw.text().into_bytes(),
        },
        Change::Delete(key) => clpe_store::Change::Delete {
            key: store_key(key),
        },
    }
}

fn stored_document(
    key: &clpe_store::DocKey,
    body: &[u8],
    index: usize,
) -> Result<Document, OpenError> {
    let bad = |message: String| OpenError::Stored {
        key: key.to_string(),
        message,
    };
    let text = std::str::from_utf8(body).map_err(|_| bad("not UTF-8".to_owned()))?;
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
    clpe_core::document::parse_value(value, index).map_err(|e| bad(e.to_string()))
}

/// An error and its sources, one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
mod tests {
    use super::*;
    use clpe_core::Kind;
    use clpe_core::parse_documents;
    use clpe_store::MemoryStore;

    fn token() -> Token {
        let dir = tempfile::tempdir().unwrap();
        Token::load_or_create(&dir.path().join("t")).unwrap()
    }

    #[test]
    fn a_deleted_default_stays_deleted_after_restart() {
        let dir = tempfile::tempdir().unwrap();
        let key = DocKey::new(Kind::Subscription, None, "new-connection-lb");
        {
            let d = Daemon::open(dir.path(), EngineConfig::default()).unwrap();
            assert!(d.engine().snapshot().docs.contains_key(&key));
            d.delete(std::slice::from_ref(&key)).unwrap();
        }
        let d = Daemon::open(dir.path(), EngineConfig::default()).unwrap();
        let snapshot = d.engine().snapshot();
        assert!(!snapshot.docs.contains_key(&key));
        assert!(snapshot.docs.contains_key(&DocKey::new(
            Kind::Subscription,
            None,
            "new-connection-acl"
        )));
    }

    #[test]
    fn a_refused_commit_changes_nothing() {
        struct Refusing(MemoryStore);
        impl Store for Refusing {
            fn commit(&self, changes: &[clpe_store::Change]) -> Result<u64, StoreError> {
                if changes
                    .iter()
                    .any(|c| matches!(c, clpe_store::Change::Put { key, .. } if key.kind == "Peer"))
                {
                    return Err(StoreError::Corrupt {
                        path: "x".into(),
                        detail: "refused".into(),
                    });
                }
                self.0.commit(changes)
            }
            fn load(&self) -> Result<clpe_store::Loaded, StoreError> {
                self.0.load()
            }
            fn backend(&self) -> &'static str {
                "refusing"
            }
        }
        let d = Daemon::with_store(
            Box::new(Refusing(MemoryStore::default())),
            EngineConfig::default(),
            token(),
        )
        .unwrap();
        let before = d.engine().snapshot().revision;
        let docs = parse_documents("{kind: Peer, metadata: {name: P0}}").unwrap();
        let err = d.apply(docs).unwrap_err();
        assert_eq!(err.status(), 500);
        assert_eq!(d.engine().snapshot().revision, before);
        assert!(
            !d.engine()
                .snapshot()
                .docs
                .values()
                .any(|d| d.key.kind == Kind::Peer)
        );
    }
}
