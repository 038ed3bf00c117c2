//! The redb store across processes: the file lock, and a writer killed mid-commit.
//!
//! The other process is this test binary run again with only the `child` test selected
//! and the role in the environment.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::io::{BufRead, BufReader, Lines, Read};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

use clpe_store::{Change, DocKey, RedbStore, Store, StoreError};

const DIR_VAR: &str = "CLPE_STORE_TEST_CHILD_DIR";
const ROLE_VAR: &str = "CLPE_STORE_TEST_CHILD_ROLE";
/// Documents each batch of the killed writer puts, all with the batch's revision.
const KEYS: usize = 25;

fn spawn_child(dir: &Path, role: &str) -> (Child, Lines<BufReader<ChildStdout>>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR_VAR, dir)
        .env(ROLE_VAR, role)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

/// Reads the child's output up to a line with `marker`, and returns what follows it.
/// The harness prints `test child ... ` on the line of the first marker.
fn wait_for(lines: &mut Lines<BufReader<ChildStdout>>, marker: &str) -> String {
    for line in lines.by_ref() {
        if let Some((_, rest)) = line.unwrap().split_once(marker) {
            return rest.to_owned();
        }
    }
    panic!("the child ended before printing `{marker}`");
}

#[test]
fn a_store_open_in_another_process_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, mut lines) = spawn_child(dir.path(), "hold");
    wait_for(&mut lines, "OPEN");

    let err = RedbStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");

    drop(child.stdin.take()); // tells the child to close the store and exit
    assert!(child.wait().unwrap().success());
    let store = RedbStore::open(dir.path()).unwrap();
    assert_eq!(
        store.load().unwrap().revision,
        1,
        "the child's commit is there"
    );
}

#[test]
fn another_process_cannot_open_a_store_held_here() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path()).unwrap();
    store.commit(&[]).unwrap();
    let (mut child, mut lines) = spawn_child(dir.path(), "expect-locked");
    assert_eq!(wait_for(&mut lines, "RESULT "), "locked");
    assert!(child.wait().unwrap().success());
    assert_eq!(store.load().unwrap().revision, 1);
}

/// A writer killed at a random point of its commits leaves a store that opens, holds
/// every batch it acknowledged, and no part of a batch.
#[test]
fn a_killed_writer_leaves_whole_batches() {
    let dir = tempfile::tempdir().unwrap();
    for round in 1..=4_u64 {
        let (mut child, mut lines) = spawn_child(dir.path(), "write");
        let mut acked = 0;
        while acked < round * 15 {
            acked = wait_for(&mut lines, "ACK ").parse().unwrap();
        }
        child.kill().unwrap();
        child.wait().unwrap();
        // Acknowledgements printed after the last one read were acknowledged too.
        for line in lines {
            if let Some((_, rest)) = line.unwrap().split_once("ACK ") {
                acked = rest.parse().unwrap();
            }
        }

        let loaded = RedbStore::open(dir.path()).unwrap().load().unwrap();
        assert!(loaded.revision >= acked, "{} < {acked}", loaded.revision);
        assert_eq!(loaded.docs.len(), KEYS);
        let expected = loaded.revision.to_string();
        for (key, body) in &loaded.docs {
            assert_eq!(body, expected.as_bytes(), "{key} at {}", loaded.revision);
        }
    }
}

/// The other process of the tests above; does nothing when run on its own.
#[test]
#[ignore = "run by the tests above as their child process"]
fn child() {
    let Ok(dir) = std::env::var(DIR_VAR) else {
        return;
    };
    let dir = Path::new(&dir);
    match std::env::var(ROLE_VAR).unwrap().as_str() {
        "hold" => {
            let store = RedbStore::open(dir).unwrap();
            store.commit(&[]).unwrap();
            println!("OPEN");
            // Holds the store until the parent closes our stdin.
            std::io::stdin().read_to_end(&mut Vec::new()).unwrap();
        }
        "expect-locked" => match RedbStore::open(dir) {
            Err(StoreError::Locked { .. }) => println!("RESULT locked"),
            other => println!("RESULT {other:?}"),
        },
        "write" => {
            let store = RedbStore::open(dir).unwrap();
            loop {
                let next = store.load().unwrap().revision + 1;
                let batch: Vec<Change> = (0..KEYS)
                    .map(|i| Change::Put {
                        key: DocKey::new("Peer", "", format!("p{i:02}")),
                        body: next.to_string().into_bytes(),
                    })
                    .collect();
                let revision = store.commit(&batch).unwrap();
                assert_eq!(revision, next);
                println!("ACK {revision}");
            }
        }
        role => panic!("unknown role `{role}`"),
    }
}
