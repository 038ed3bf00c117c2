//! Acknowledged means durable: a client applies documents one by one while the daemon
//! is killed with SIGKILL at a random moment; after every restart the store opens
//! cleanly and every acknowledged document is there.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Daemon, Rng, agent, try_send};

const ROUNDS: usize = 6;

#[test]
fn every_acknowledged_apply_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::seeded();
    let mut acknowledged: BTreeSet<String> = BTreeSet::new();
    let mut daemon = Daemon::start(dir.path());
    for round in 0..ROUNDS {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (url, token, acked, stop) = (
                daemon.url("/v1/apply"),
                daemon.token.clone(),
                acked.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                let agent = agent();
                for i in 0..20_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let name = format!("crash-{round}-{i}");
                    let body = format!(
                        "{{kind: Peer, metadata: {{name: {name}, labels: {{round: r{round}}}}}}}"
                    );
                    match try_send(&agent, &url, "POST", Some(&body), Some(&token)) {
                        Ok((200, _)) => acked.lock().unwrap().push(name),
                        Ok((status, body)) => panic!("apply of {name} refused: {status} {body}"),
                        // The daemon died mid-request: not acknowledged, may or may not be there.
                        Err(_) => break,
                    }
                }
            })
        };
        // Kill at a random moment once the client is under way.
        while acked.lock().unwrap().is_empty() && !writer.is_finished() {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(rng.below(400)));
        daemon.kill();
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        let acked = acked.lock().unwrap().clone();
        assert!(
            !acked.is_empty(),
            "round {round}: nothing was acknowledged before the kill"
        );
        acknowledged.extend(acked);

        daemon = Daemon::start(dir.path());
        assert_eq!(daemon.get("/readyz").1["status"], "ready");
        let (status, peers) = daemon.get("/v1/peer");
        assert_eq!(status, 200);
        let present: BTreeSet<String> = peers
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
            .collect();
        let lost: Vec<&String> = acknowledged.difference(&present).collect();
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged but lost after SIGKILL: {lost:?}"
        );
    }
}
