//! Random sequences of batches against a `BTreeMap` model, for every backend; the redb
//! store is closed and reopened at random points.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::collections::BTreeMap;
use std::path::Path;

use clpe_store::{Change, DocKey, Loaded, MemoryStore, RedbStore, Store};
use proptest::prelude::*;
use proptest::sample::select;

#[derive(Clone, Debug)]
enum Step {
    Commit(Vec<Change>),
    /// Drops the store and opens it again (a no-op for the memory store).
    Reopen,
}

/// A small key space, so puts, deletes and overwrites of the same key are common.
fn doc_key() -> impl Strategy<Value = DocKey> {
    (
        select(&["AccessPolicy", "Peer"][..]),
        select(&["", "default", "default\u{0}"][..]),
        select(&["a", "b", "ab"][..]),
    )
        .prop_map(|(kind, namespace, name)| DocKey::new(kind, namespace, name))
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        3 => (doc_key(), prop::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(key, body)| Change::Put { key, body }),
        2 => doc_key().prop_map(|key| Change::Delete { key }),
        1 => (select(&["token", "applied"][..]), prop::collection::vec(any::<u8>(), 0..4))
            .prop_map(|(key, value)| Change::SetMeta { key: key.to_owned(), value }),
    ]
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        6 => prop::collection::vec(change(), 0..6).prop_map(Step::Commit),
        1 => Just(Step::Reopen),
    ];
    prop::collection::vec(step, 0..24)
}

#[derive(Default)]
struct Model {
    revision: u64,
    docs: BTreeMap<DocKey, Vec<u8>>,
    meta: BTreeMap<String, Vec<u8>>,
}

impl Model {
    fn commit(&mut self, changes: &[Change]) -> u64 {
        for change in changes {
            match change {
                Change::Put { key, body } => {
                    self.docs.insert(key.clone(), body.clone());
                }
                Change::Delete { key } => {
                    self.docs.remove(key);
                }
                Change::SetMeta { key, value } => {
                    self.meta.insert(key.clone(), value.clone());
                }
            }
        }
        self.revision += 1;
        self.revision
    }

    fn loaded(&self) -> Loaded {
        Loaded {
            revision: self.revision,
            docs: self.docs.clone().into_iter().collect(),
            meta: self.meta.clone(),
        }
    }
}

/// Runs `steps` against the store `open` gives and the model, comparing after each.
fn check(steps: &[Step], mut open: impl FnMut() -> Box<dyn Store>) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    let mut store = Some(open());
    for step in steps {
        match step {
            Step::Commit(changes) => {
                let revision = store.as_ref().unwrap().commit(changes).unwrap();
                prop_assert_eq!(revision, model.commit(changes));
            }
            Step::Reopen => {
                // The old handle must be gone before the file can be opened again.
                drop(store.take());
                store = Some(open());
            }
        }
        prop_assert_eq!(store.as_ref().unwrap().load().unwrap(), model.loaded());
    }
    Ok(())
}

fn open_redb(dir: &Path) -> Box<dyn Store> {
    Box::new(RedbStore::open(dir).unwrap())
}

proptest! {
    #[test]
    fn memory_store_follows_the_model(steps in steps()) {
        let store = std::sync::Arc::new(MemoryStore::new());
        check(&steps, || Box::new(SharedMemory(store.clone())))?;
    }
}

proptest! {
    // Fewer cases than the default: every commit is an fsync, which dominates the time.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn redb_store_follows_the_model(steps in steps()) {
        let dir = tempfile::tempdir().unwrap();
        check(&steps, || open_redb(dir.path()))?;
    }
}

/// A memory store that a "reopen" hands back unchanged, as the same process would.
struct SharedMemory(std::sync::Arc<MemoryStore>);

impl Store for SharedMemory {
    fn commit(&self, changes: &[Change]) -> Result<u64, clpe_store::StoreError> {
        self.0.commit(changes)
    }

    fn load(&self) -> Result<Loaded, clpe_store::StoreError> {
        self.0.load()
    }

    fn backend(&self) -> &'static str {
        self.0.backend()
    }
}
