//! The embedded backend: one redb file, `store.redb`, in the data directory.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use redb::{
    Builder, Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, StorageError,
    TableDefinition,
};

use crate::{Change, Loaded, Store, StoreError, key};

const FILE_NAME: &str = "store.redb";

/// Documents by [`key::encode`] of their key.
const DOCS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("docs");
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
/// Store bookkeeping kept apart from `META` so callers cannot overwrite it.
const STATE: TableDefinition<'_, &str, u64> = TableDefinition::new("state");
const REVISION: &str = "revision";

/// A store in one redb file, each commit fsync'd before it returns.
///
/// The file is locked while the store is open: a second open, from this process or
/// another, fails with [`StoreError::Locked`].
#[derive(Debug)]
pub struct RedbStore {
    db: Database,
    path: PathBuf,
}

impl RedbStore {
    /// The name of the file the store keeps in its directory.
    pub const FILE_NAME: &str = FILE_NAME;

    /// Opens the store in `dir`, creating the directory and the file if needed.
    ///
    /// Every page's checksum is verified on open, so a damaged file is refused with
    /// [`StoreError::Corrupt`] rather than trusted; the store holds operator documents,
    /// small enough that reading it whole costs little.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let dir_existed = exists(dir)?;
        fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            op: "create the store directory",
            path: dir.to_owned(),
            source,
        })?;
        if !dir_existed && let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
        let path = dir.join(FILE_NAME);
        let file_existed = exists(&path)?;
        let db = Builder::new()
            .set_check_integrity_on_open(true)
            .create(&path)
            .map_err(|err| open_error(&path, err))?;
        if !file_existed {
            // The new file's directory entry must be durable too, or a crash could lose
            // the whole store after commits were acknowledged.
            sync_dir(dir)?;
        }
        let store = Self { db, path };
        store.create_tables()?;
        Ok(store)
    }

    /// The path of the store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the tables a fresh file lacks, so reads never meet a missing table.
    fn create_tables(&self) -> Result<(), StoreError> {
        let txn = self
            .db
            .begin_write()
            .map_err(self.fail("begin a write transaction"))?;
        txn.open_table(DOCS)
            .map_err(self.fail("open the docs table"))?;
        txn.open_table(META)
            .map_err(self.fail("open the meta table"))?;
        txn.open_table(STATE)
            .map_err(self.fail("open the state table"))?;
        txn.commit().map_err(self.fail("commit the tables"))
    }

    /// Maps a redb error of operation `op` to a [`StoreError`].
    fn fail<E: Into<redb::Error>>(&self, op: &'static str) -> impl FnOnce(E) -> StoreError {
        move |err| backend_error(&self.path, op, err.into())
    }
}

impl Store for RedbStore {
    fn commit(&self, changes: &[Change]) -> Result<u64, StoreError> {
        let mut txn = self
            .db
            .begin_write()
            .map_err(self.fail("begin a write transaction"))?;
        txn.set_durability(Durability::Immediate)
            .map_err(self.fail("set durability"))?;
        // INVARIANT: nothing is visible until `commit` returns Ok; on any error the
        // transaction is dropped, which aborts it, so a batch applies whole or not at all.
        let revision = {
            let mut docs = txn
                .open_table(DOCS)
                .map_err(self.fail("open the docs table"))?;
            let mut meta = txn
                .open_table(META)
                .map_err(self.fail("open the meta table"))?;
            let mut state = txn
                .open_table(STATE)
                .map_err(self.fail("open the state table"))?;
            let previous = state
                .get(REVISION)
                .map_err(self.fail("read the revision"))?
                .map_or(0, |guard| guard.value());
            let revision = previous.checked_add(1).ok_or_else(|| StoreError::Corrupt {
                path: self.path.clone(),
                detail: format!("revision {previous} cannot be incremented"),
            })?;
            for change in changes {
                match change {
                    Change::Put { key, body } => {
                        docs.insert(key::encode(key).as_slice(), body.as_slice())
                            .map_err(self.fail("write a document"))?;
                    }
                    Change::Delete { key } => {
                        docs.remove(key::encode(key).as_slice())
                            .map_err(self.fail("delete a document"))?;
                    }
                    Change::SetMeta { key, value } => {
                        meta.insert(key.as_str(), value.as_slice())
                            .map_err(self.fail("write a meta entry"))?;
                    }
                }
            }
            state
                .insert(REVISION, revision)
                .map_err(self.fail("write the revision"))?;
            revision
        };
        txn.commit().map_err(self.fail("commit"))?;
        Ok(revision)
    }

    fn load(&self) -> Result<Loaded, StoreError> {
        let txn = self
            .db
            .begin_read()
            .map_err(self.fail("begin a read transaction"))?;
        let state = txn
            .open_table(STATE)
            .map_err(self.fail("open the state table"))?;
        let revision = state
            .get(REVISION)
            .map_err(self.fail("read the revision"))?
            .map_or(0, |guard| guard.value());

        let table = txn
            .open_table(DOCS)
            .map_err(self.fail("open the docs table"))?;
        let mut docs = Vec::new();
        for entry in table.iter().map_err(self.fail("read the documents"))? {
            let (stored_key, body) = entry.map_err(self.fail("read a document"))?;
            let doc_key =
                key::decode(stored_key.value()).map_err(|detail| StoreError::Corrupt {
                    path: self.path.clone(),
                    detail: format!("bad document key: {detail}"),
                })?;
            docs.push((doc_key, body.value().to_vec()));
        }

        let table = txn
            .open_table(META)
            .map_err(self.fail("open the meta table"))?;
        let mut meta = BTreeMap::new();
        for entry in table.iter().map_err(self.fail("read the meta entries"))? {
            let (meta_key, value) = entry.map_err(self.fail("read a meta entry"))?;
            meta.insert(meta_key.value().to_owned(), value.value().to_vec());
        }
        Ok(Loaded {
            revision,
            docs,
            meta,
        })
    }

    fn backend(&self) -> &'static str {
        "redb"
    }
}

fn open_error(path: &Path, err: DatabaseError) -> StoreError {
    match err {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            StoreError::Locked {
                path: path.to_owned(),
            }
        }
        DatabaseError::Storage(StorageError::Io(source)) => StoreError::Io {
            op: "open the store file",
            path: path.to_owned(),
            source,
        },
        other => backend_error(path, "open the store file", other.into()),
    }
}

fn backend_error(path: &Path, op: &'static str, err: redb::Error) -> StoreError {
    match err {
        redb::Error::Corrupted(detail) => StoreError::Corrupt {
            path: path.to_owned(),
            detail,
        },
        other => StoreError::Backend {
            op,
            path: path.to_owned(),
            source: Box::new(other),
        },
    }
}

fn exists(path: &Path) -> Result<bool, StoreError> {
    path.try_exists().map_err(|source| StoreError::Io {
        op: "look for",
        path: path.to_owned(),
        source,
    })
}

/// Makes the entries of `dir` durable (a new file or directory in it survives a crash).
#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    // An empty parent means the current directory.
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    fs::File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|source| StoreError::Io {
            op: "sync the directory",
            path: dir.to_owned(),
            source,
        })
}

/// Directories cannot be opened for syncing here; NTFS journals their entries.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<(), StoreError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DocKey;

    fn put(name: &str, body: &[u8]) -> Change {
        Change::Put {
            key: DocKey::new("Peer", "", name),
            body: body.to_vec(),
        }
    }

    #[test]
    fn reopen_after_drop_returns_the_same_data() {
        let dir = tempfile::tempdir().unwrap();
        let before = {
            let store = RedbStore::open(dir.path()).unwrap();
            store.commit(&[put("a", b"1"), put("b", b"2")]).unwrap();
            store
                .commit(&[
                    Change::Delete {
                        key: DocKey::new("Peer", "", "a"),
                    },
                    Change::SetMeta {
                        key: "k".to_owned(),
                        value: b"v".to_vec(),
                    },
                ])
                .unwrap();
            store.load().unwrap()
        };
        assert_eq!(before.revision, 2);
        let store = RedbStore::open(dir.path()).unwrap();
        assert_eq!(store.load().unwrap(), before);
        assert_eq!(
            store.commit(&[]).unwrap(),
            3,
            "revisions go on after a reopen"
        );
    }

    #[test]
    fn creates_missing_directories() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a").join("b");
        let store = RedbStore::open(&nested).unwrap();
        assert_eq!(store.path(), nested.join(FILE_NAME));
        assert!(store.path().is_file());
    }

    #[test]
    fn a_second_open_in_this_process_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path()).unwrap();
        store.commit(&[put("a", b"1")]).unwrap();
        let err = RedbStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
        assert!(err.to_string().contains("already open"), "{err}");
        // The refused open left the first handle and its data alone.
        assert_eq!(store.load().unwrap().docs.len(), 1);
        drop(store);
        assert_eq!(
            RedbStore::open(dir.path())
                .unwrap()
                .load()
                .unwrap()
                .revision,
            1
        );
    }

    #[test]
    fn a_file_of_garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), vec![0x5a_u8; 64 * 1024]).unwrap();
        let err = RedbStore::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains(FILE_NAME), "{err}");
    }

    #[test]
    fn a_directory_in_place_of_the_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join(FILE_NAME)).unwrap();
        let err = RedbStore::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains(FILE_NAME), "{err}");
    }

    /// Damage anywhere in a real store file gives an error or a store that loads one of
    /// the states it was committed through (damage in a page no commit uses goes
    /// unnoticed); never a panic, never made-up data.
    #[test]
    fn damaged_files_are_refused_never_misread() {
        let dir = tempfile::tempdir().unwrap();
        let mut states = Vec::new();
        {
            let store = RedbStore::open(dir.path()).unwrap();
            states.push(store.load().unwrap());
            for i in 0..20 {
                let body = vec![u8::try_from(i).unwrap(); 3000];
                store.commit(&[put(&format!("p{i}"), &body)]).unwrap();
                states.push(store.load().unwrap());
            }
        }
        let path = dir.path().join(FILE_NAME);
        let pristine = fs::read(&path).unwrap();
        let step = (pristine.len() / 97).max(1);
        let mut refused = 0;
        for at in (0..pristine.len()).step_by(step) {
            for damage in [Damage::Flip, Damage::Truncate] {
                let mut bytes = pristine.clone();
                match damage {
                    Damage::Flip => bytes[at] ^= 0xff,
                    Damage::Truncate => bytes.truncate(at),
                }
                fs::write(&path, &bytes).unwrap();
                match RedbStore::open(dir.path()).and_then(|store| store.load()) {
                    Ok(loaded) => assert!(states.contains(&loaded), "byte {at}: {loaded:?}"),
                    Err(err) => {
                        refused += 1;
                        assert!(err.to_string().contains(FILE_NAME), "{err}");
                    }
                }
            }
        }
        assert!(refused > 0, "no damage was noticed");
    }

    #[derive(Clone, Copy)]
    enum Damage {
        Flip,
        Truncate,
    }
}
