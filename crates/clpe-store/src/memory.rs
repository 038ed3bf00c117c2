//! The in-memory backend, for tests and offline runs.

use std::collections::BTreeMap;

use parking_lot::Mutex;

use crate::{Change, DocKey, Loaded, Store, StoreError};

/// A store that keeps everything in memory and forgets it when dropped.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    revision: u64,
    docs: BTreeMap<DocKey, Vec<u8>>,
    meta: BTreeMap<String, Vec<u8>>,
}

impl MemoryStore {
    /// An empty store at revision 0.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for MemoryStore {
    fn commit(&self, changes: &[Change]) -> Result<u64, StoreError> {
        // INVARIANT: applying a change cannot fail, so holding the lock for the whole
        // batch makes it atomic: no reader sees part of it.
        let mut state = self.state.lock();
        for change in changes {
            match change {
                Change::Put { key, body } => {
                    state.docs.insert(key.clone(), body.clone());
                }
                Change::Delete { key } => {
                    state.docs.remove(key);
                }
                Change::SetMeta { key, value } => {
                    state.meta.insert(key.clone(), value.clone());
                }
            }
        }
        state.revision += 1;
        Ok(state.revision)
    }

    fn load(&self) -> Result<Loaded, StoreError> {
        let state = self.state.lock();
        Ok(Loaded {
            revision: state.revision,
            docs: state
                .docs
                .iter()
                .map(|(key, body)| (key.clone(), body.clone()))
                .collect(),
            meta: state.meta.clone(),
        })
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}
