//! Property tests of the engine against simple models: batch apply/delete against a
//! `BTreeMap`, and limiter counters against a list of open connections.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeMap;

use clpe_core::document::parse_value;
use clpe_core::{DecideOptions, DocKey, Engine, EngineConfig, Event, Kind, PeerName, Time};
use proptest::prelude::*;
use serde_json::{Value, json};

#[derive(Clone, Debug)]
enum Op {
    /// Apply a batch of (peer index, label value, valid?).
    Apply(Vec<(u8, u8, bool)>),
    Delete(Vec<u8>),
}

fn peer_doc(i: u8, label: u8, valid: bool) -> Value {
    let labels = if valid {
        json!({"v": label.to_string()})
    } else {
        json!({"v": "not a valid value!"})
    };
    json!({"kind": "Peer", "metadata": {"name": format!("p{i}"), "labels": labels}})
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let apply = prop::collection::vec((0u8..6, 0u8..3, prop::bool::weighted(0.85)), 1..4)
        .prop_map(Op::Apply);
    let delete = prop::collection::vec(0u8..6, 1..3).prop_map(Op::Delete);
    prop::collection::vec(prop_oneof![apply, delete], 1..25)
}

proptest! {
    /// Any sequence of batches, valid or not, leaves exactly what a map model says:
    /// a batch with one bad document changes nothing; a delete of an unknown one neither.
    #[test]
    fn batches_are_all_or_nothing(ops in ops()) {
        let engine = Engine::new(EngineConfig::default());
        let mut model: BTreeMap<String, u8> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Apply(batch) => {
                    let docs: Result<Vec<_>, _> = batch.iter().enumerate().map(|(n, (i, l, v))| parse_value(peer_doc(*i, *l, *v), n + 1)).collect();
                    let valid = batch.iter().all(|b| b.2);
                    match docs {
                        Ok(docs) => {
                            prop_assert!(valid);
                            engine.apply(docs).unwrap();
                            for (i, l, _) in batch {
                                model.insert(format!("p{i}"), l);
                            }
                        }
                        Err(_) => prop_assert!(!valid),
                    }
                }
                Op::Delete(names) => {
                    let mut keys: Vec<DocKey> = names.iter().map(|i| DocKey::new(Kind::Peer, None, &format!("p{i}"))).collect();
                    keys.dedup();
                    let all_known = keys.iter().all(|k| model.contains_key(&*k.name));
                    let r = engine.delete(&keys);
                    prop_assert_eq!(r.is_ok(), all_known);
                    if all_known {
                        for k in &keys {
                            model.remove(&*k.name);
                        }
                    }
                }
            }
            let snap = engine.snapshot();
            let have: BTreeMap<String, u8> = snap
                .peers
                .values()
                .map(|p| (p.name.to_string(), p.labels["v"].parse().unwrap()))
                .collect();
            prop_assert_eq!(&have, &model);
        }
    }
}

#[derive(Clone, Debug)]
enum ConnOp {
    Open(u8),
    Close(u8),
    /// Seconds.
    Advance(u16),
}

fn limit_engine() -> Engine {
    let engine = Engine::new(EngineConfig {
        local_peer: PeerName::from("home"),
        ..EngineConfig::default()
    });
    let docs = [
        json!({"kind": "Peer", "metadata": {"name": "p0"}}),
        json!({"kind": "Import", "metadata": {"name": "db"}, "spec": {"sources": [{"peer": "p0", "exportName": "db", "exportNamespace": "default"}]}}),
        json!({"kind": "AccessPolicy", "metadata": {"name": "all"}, "spec": {"action": "allow", "from": [{"workloadSelector": {}}], "to": [{"workloadSelector": {}}]}}),
        // Holds the connections of service `a` (even ids); those of `b` no limit holds.
        json!({"kind": "ConnectionLimitPolicy", "metadata": {"name": "three"}, "spec": {"from": [{"workloadSelector": {"matchLabels": {"client.clusterlink.net/service": "a"}}}], "to": [{"workloadSelector": {}}], "maxConnections": 3, "leaseSeconds": 10}}),
        // Denies every third second's connections after the limiter reserved: the slot must come back.
        json!({"kind": "RateLimitPolicy", "metadata": {"name": "rate"}, "spec": {"from": [{"workloadSelector": {}}], "to": [{"workloadSelector": {}}], "connectionsPerSecond": 1, "burst": 2}}),
    ];
    let docs = docs
        .into_iter()
        .enumerate()
        .map(|(i, d)| parse_value(d, i + 1).unwrap())
        .collect();
    engine.apply(docs).unwrap();
    engine
}

proptest! {
    /// Opens, closes, denies and clock advances leave the counter equal to the number of
    /// admitted, unclosed, unexpired connections of service `a`; the open-connection
    /// records (held for the limit's lease, or the default one, an hour, for service `b`,
    /// which no limit holds) and the target peer's count agree with their own model.
    #[test]
    fn limiter_counts_what_is_open(ops in prop::collection::vec(prop_oneof![
        (0u8..8).prop_map(ConnOp::Open),
        (0u8..8).prop_map(ConnOp::Close),
        (0u16..6).prop_map(ConnOp::Advance),
        // Half an hour: records held by the default lease (an hour) end too.
        Just(ConnOp::Advance(1800)),
    ], 1..60)) {
        let engine = limit_engine();
        let mut now = Time::ZERO;
        // id -> expiry (nanos): of the limiter's slot, and of the connection's record.
        let mut open: BTreeMap<u8, u64> = BTreeMap::new();
        let mut records: BTreeMap<u8, u64> = BTreeMap::new();
        for op in ops {
            match op {
                ConnOp::Open(id) => {
                    let limited = id % 2 == 0;
                    let service = if limited { "a" } else { "b" };
                    let ev: Event = serde_json::from_value(json!({"type": "NewConnection", "direction": "egress", "src_service": service, "dst_service": "db", "connection_id": format!("c{id}")})).unwrap();
                    let r = engine.decide(&ev, now, DecideOptions::default()).unwrap();
                    open.retain(|_, exp| *exp > now.0);
                    if r.decision == clpe_core::Decision::Allow {
                        if limited {
                            // A reused id replaces the old record, but only once admitted: it counts until then.
                            prop_assert!(open.len() < 3);
                            open.insert(id, now.0 + 10_000_000_000);
                            // Held by `three`: the connection's lease is that policy's.
                            records.insert(id, now.0 + 10_000_000_000);
                        } else {
                            records.insert(id, now.0 + 3_600_000_000_000);
                        }
                    } else if r.decided_by.as_deref() == Some("connection-limiter") {
                        prop_assert!(limited && open.len() >= 3);
                    }
                }
                ConnOp::Close(id) => {
                    let ev: Event = serde_json::from_value(json!({"type": "ConnectionClosed", "connection_id": format!("c{id}")})).unwrap();
                    let r = engine.decide(&ev, now, DecideOptions::default()).unwrap();
                    prop_assert_eq!(r.decision, clpe_core::Decision::Allow);
                    open.remove(&id);
                    records.remove(&id);
                }
                ConnOp::Advance(s) => now = now.plus_nanos(u64::from(s) * 1_000_000_000),
            }
            engine.runtime().connections.expire(now);
            open.retain(|_, exp| *exp > now.0);
            let counted = engine.runtime().counters.current("/three", &[]);
            prop_assert_eq!(counted, open.len() as i64);
            records.retain(|_, exp| *exp > now.0);
            prop_assert_eq!(engine.runtime().connections.open(), records.len() as i64);
            let peer = engine.snapshot().peers.get("p0").map(|p| engine.runtime().connections.open_to(p.open));
            prop_assert_eq!(peer, Some(records.len() as i64));
        }
    }
}
