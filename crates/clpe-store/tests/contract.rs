//! The contract of `Store`, run against every backend.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use clpe_store::{Change, DocKey, Loaded, MemoryStore, RedbStore, Store};

fn put(kind: &str, ns: &str, name: &str, body: &str) -> Change {
    Change::Put {
        key: DocKey::new(kind, ns, name),
        body: body.as_bytes().to_vec(),
    }
}

fn delete(kind: &str, ns: &str, name: &str) -> Change {
    Change::Delete {
        key: DocKey::new(kind, ns, name),
    }
}

fn meta(key: &str, value: &str) -> Change {
    Change::SetMeta {
        key: key.to_owned(),
        value: value.as_bytes().to_vec(),
    }
}

fn doc_names(loaded: &Loaded) -> Vec<String> {
    loaded.docs.iter().map(|(key, _)| key.to_string()).collect()
}

fn empty_store_is_at_revision_zero(store: &dyn Store) {
    assert_eq!(store.load().unwrap(), Loaded::default());
}

fn commit_then_load_round_trips(store: &dyn Store) {
    let body = br#"{"kind":"AccessPolicy","spec":{"action":"allow"}}"#;
    store
        .commit(&[Change::Put {
            key: DocKey::new("AccessPolicy", "default", "allow-all"),
            body: body.to_vec(),
        }])
        .unwrap();
    let loaded = store.load().unwrap();
    assert_eq!(
        loaded.docs,
        vec![(
            DocKey::new("AccessPolicy", "default", "allow-all"),
            body.to_vec()
        )]
    );
}

fn docs_load_in_key_order(store: &dyn Store) {
    store
        .commit(&[
            put("Peer", "", "b", "1"),
            put("AccessPolicy", "z", "a", "2"),
            put("AccessPolicy", "a", "zz", "3"),
            put("AccessPolicy", "a", "b", "4"),
            put("AccessPolicy", "", "x", "5"),
        ])
        .unwrap();
    assert_eq!(
        doc_names(&store.load().unwrap()),
        [
            "AccessPolicy/x",
            "AccessPolicy/a/b",
            "AccessPolicy/a/zz",
            "AccessPolicy/z/a",
            "Peer/b"
        ]
    );
}

fn revision_increments_per_commit(store: &dyn Store) {
    assert_eq!(store.commit(&[put("Peer", "", "a", "1")]).unwrap(), 1);
    assert_eq!(store.commit(&[put("Peer", "", "a", "2")]).unwrap(), 2);
    assert_eq!(store.commit(&[]).unwrap(), 3, "an empty batch is a commit");
    assert_eq!(store.commit(&[delete("Peer", "", "a")]).unwrap(), 4);
    assert_eq!(store.load().unwrap().revision, 4);
}

fn put_replaces_and_delete_removes(store: &dyn Store) {
    store.commit(&[put("Peer", "", "a", "old")]).unwrap();
    store.commit(&[put("Peer", "", "a", "new")]).unwrap();
    assert_eq!(store.load().unwrap().docs[0].1, b"new");
    store.commit(&[delete("Peer", "", "a")]).unwrap();
    assert!(store.load().unwrap().docs.is_empty());
}

fn deleting_a_missing_key_is_not_an_error(store: &dyn Store) {
    assert_eq!(store.commit(&[delete("Peer", "", "ghost")]).unwrap(), 1);
    assert!(store.load().unwrap().docs.is_empty());
}

fn changes_of_a_batch_apply_in_order(store: &dyn Store) {
    store
        .commit(&[
            put("Peer", "", "a", "1"),
            delete("Peer", "", "a"),
            delete("Peer", "", "b"),
            put("Peer", "", "b", "2"),
            meta("m", "first"),
            meta("m", "second"),
        ])
        .unwrap();
    let loaded = store.load().unwrap();
    assert_eq!(doc_names(&loaded), ["Peer/b"]);
    assert_eq!(loaded.meta["m"], b"second");
}

fn meta_round_trips(store: &dyn Store) {
    store
        .commit(&[meta("token", "secret"), meta("applied", "")])
        .unwrap();
    store.commit(&[meta("token", "rotated")]).unwrap();
    let loaded = store.load().unwrap();
    let expected: BTreeMap<String, Vec<u8>> = [
        ("applied".to_owned(), Vec::new()),
        ("token".to_owned(), b"rotated".to_vec()),
    ]
    .into();
    assert_eq!(loaded.meta, expected);
    assert!(loaded.docs.is_empty(), "meta is not a document");
}

fn binary_and_odd_keys_round_trip(store: &dyn Store) {
    let odd = [
        DocKey::new("", "", ""),
        DocKey::new("K\u{0}", "", "n"),
        DocKey::new("K", "\u{0}", "n"),
        DocKey::new("K", "", "\u{0}n"),
        DocKey::new("K", "ns/with/slashes", "ünïcödé"),
    ];
    let changes: Vec<Change> = odd
        .iter()
        .map(|key| Change::Put {
            key: key.clone(),
            body: vec![0, 255, 1, 0],
        })
        .collect();
    store.commit(&changes).unwrap();
    let mut expected = odd.to_vec();
    expected.sort();
    let loaded: Vec<DocKey> = store
        .load()
        .unwrap()
        .docs
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(loaded, expected);
}

/// A reader running beside a writer sees every batch whole or not at all.
fn readers_never_see_half_a_batch(store: &dyn Store) {
    const KEYS: usize = 40;
    const BATCHES: usize = 30;
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for batch in 0..BATCHES {
                let changes: Vec<Change> = (0..KEYS)
                    .map(|i| put("Peer", "", &format!("p{i:02}"), &batch.to_string()))
                    .collect();
                store.commit(&changes).unwrap();
            }
            done.store(true, Ordering::SeqCst);
        });
        let mut reads = 0;
        while !done.load(Ordering::SeqCst) || reads == 0 {
            let loaded = store.load().unwrap();
            reads += 1;
            if loaded.revision == 0 {
                assert!(loaded.docs.is_empty());
                continue;
            }
            assert_eq!(loaded.docs.len(), KEYS, "at revision {}", loaded.revision);
            let expected = (loaded.revision - 1).to_string();
            for (key, body) in &loaded.docs {
                assert_eq!(body, expected.as_bytes(), "{key} at {}", loaded.revision);
            }
        }
    });
}

macro_rules! contract {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            contract!(@tests $make;
                empty_store_is_at_revision_zero,
                commit_then_load_round_trips,
                docs_load_in_key_order,
                revision_increments_per_commit,
                put_replaces_and_delete_removes,
                deleting_a_missing_key_is_not_an_error,
                changes_of_a_batch_apply_in_order,
                meta_round_trips,
                binary_and_odd_keys_round_trip,
                readers_never_see_half_a_batch,
            );
        }
    };
    (@tests $make:expr; $($test:ident,)*) => {
        $(
            #[test]
            fn $test() {
                let (store, _guard) = $make;
                super::$test(&store);
            }
        )*
    };
}

contract!(memory, (MemoryStore::new(), ()));
contract!(redb, {
    let dir = tempfile::tempdir().unwrap();
    (RedbStore::open(dir.path()).unwrap(), dir)
});

#[test]
fn backends_name_themselves() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(RedbStore::open(dir.path()).unwrap().backend(), "redb");
    assert_eq!(MemoryStore::new().backend(), "memory");
}
