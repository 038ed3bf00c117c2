//! A snapshot keeps the access index of a namespace its batch did not touch (see
//! `AclTables::build`). Property: after any sequence of batches, an engine that applied
//! them one by one decides every event exactly as an engine that applied the resulting
//! documents in one batch, building everything afresh.
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

const NAMESPACES: [&str; 3] = ["a", "default", "z"];
/// Label values; "new" is one a selector may mention before any document carries it.
const ZONES: [&str; 3] = ["x", "y", "new"];
const TIERS: [&str; 3] = ["web", "db", "new"];

fn engine() -> Engine {
    Engine::new(EngineConfig {
        local_peer: PeerName::from("home"),
        ..EngineConfig::default()
    })
}

/// One side of a policy: a selector over the names and labels the events and inventory
/// carry, or a WorkloadSet.
fn side(pick: u8, value: u8) -> Value {
    let v = value % 3;
    let zone = ZONES[v as usize];
    let tier = TIERS[v as usize];
    let exists = ["Exists", "DoesNotExist", "Exists"][v as usize];
    match pick % 9 {
        0 => json!({"workloadSelector": {}}),
        1 => {
            json!({"workloadSelector": {"matchLabels": {"client.clusterlink.net/service": format!("s{v}")}}})
        }
        2 => {
            json!({"workloadSelector": {"matchLabels": {"peer.clusterlink.net/name": format!("p{v}")}}})
        }
        3 => {
            json!({"workloadSelector": {"matchLabels": {"peer.clusterlink.net/labels.zone": zone}}})
        }
        4 => {
            json!({"workloadSelector": {"matchLabels": {"export.clusterlink.net/name": format!("e{v}")}}})
        }
        5 => {
            json!({"workloadSelector": {"matchLabels": {"export.clusterlink.net/labels.tier": tier}}})
        }
        6 => {
            json!({"workloadSelector": {"matchExpressions": [{"key": "export.clusterlink.net/labels.tier", "operator": "NotIn", "values": [tier]}]}})
        }
        7 => {
            json!({"workloadSelector": {"matchExpressions": [{"key": "peer.clusterlink.net/labels.zone", "operator": exists}]}})
        }
        _ => json!({"workloadSets": ["w0"]}),
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// (namespace, name, allow?, dry run?, from, to)
    Policy(u8, u8, bool, bool, (u8, u8), (u8, u8)),
    Privileged(u8, bool, (u8, u8), (u8, u8)),
    /// (namespace, name, tier label)
    Export(u8, u8, u8),
    /// (name, zone label); peer 3 is the local peer.
    Peer(u8, u8),
    /// (namespace, source peer)
    Import(u8, u8),
    /// The WorkloadSet's selector.
    Set(u8, u8),
    /// Deletes the document an op of this shape would have made.
    Delete(Box<Op>),
}

impl Op {
    fn key(&self) -> DocKey {
        match self {
            Op::Policy(ns, n, ..) => DocKey::new(
                Kind::AccessPolicy,
                Some(NAMESPACES[*ns as usize]),
                &format!("r{n}"),
            ),
            Op::Privileged(n, ..) => {
                DocKey::new(Kind::PrivilegedAccessPolicy, None, &format!("q{n}"))
            }
            Op::Export(ns, n, _) => DocKey::new(
                Kind::Export,
                Some(NAMESPACES[*ns as usize]),
                &format!("e{n}"),
            ),
            Op::Peer(n, _) => DocKey::new(Kind::Peer, None, &peer_name(*n)),
            Op::Import(ns, _) => DocKey::new(Kind::Import, Some(NAMESPACES[*ns as usize]), "i0"),
            Op::Set(..) => DocKey::new(Kind::WorkloadSet, None, "w0"),
            Op::Delete(op) => op.key(),
        }
    }

    fn doc(&self) -> Option<Value> {
        Some(match self {
            Op::Policy(ns, n, allow, dry, from, to) => json!({
                "kind": "AccessPolicy",
                "metadata": {"name": format!("r{n}"), "namespace": NAMESPACES[*ns as usize]},
                "spec": {"action": if *allow { "allow" } else { "deny" }, "dryRun": dry,
                         "from": [side(from.0, from.1)], "to": [side(to.0, to.1)]},
            }),
            Op::Privileged(n, allow, from, to) => json!({
                "kind": "PrivilegedAccessPolicy",
                "metadata": {"name": format!("q{n}")},
                "spec": {"action": if *allow { "allow" } else { "deny" },
                         "from": [side(from.0, from.1)], "to": [side(to.0, to.1)]},
            }),
            Op::Export(ns, n, tier) => {
                let tier = TIERS[*tier as usize % 3];
                json!({
                    "kind": "Export",
                    "metadata": {"name": format!("e{n}"), "namespace": NAMESPACES[*ns as usize],
                                 "labels": {"tier": tier}},
                })
            }
            Op::Peer(n, zone) => {
                let zone = ZONES[*zone as usize % 3];
                json!({"kind": "Peer", "metadata": {"name": peer_name(*n), "labels": {"zone": zone}}})
            }
            Op::Import(ns, peer) => json!({
                "kind": "Import",
                "metadata": {"name": "i0", "namespace": NAMESPACES[*ns as usize]},
                "spec": {"sources": [{"peer": peer_name(*peer), "exportName": "e0", "exportNamespace": NAMESPACES[*ns as usize]}]},
            }),
            Op::Set(pick, value) => json!({
                "kind": "WorkloadSet",
                "metadata": {"name": "w0"},
                "spec": {"workloadSelectors": [side(*pick % 8, *value)["workloadSelector"].clone()]},
            }),
            Op::Delete(_) => return None,
        })
    }
}

fn peer_name(n: u8) -> String {
    match n % 4 {
        3 => "home".into(),
        n => format!("p{n}"),
    }
}

fn op() -> impl Strategy<Value = Op> {
    let ns = 0u8..3;
    let sel = (0u8..9, 0u8..3);
    let make = prop_oneof![
        4 => (ns.clone(), 0u8..4, any::<bool>(), prop::bool::weighted(0.2), sel.clone(), sel.clone())
            .prop_map(|(a, b, c, d, e, f)| Op::Policy(a, b, c, d, e, f)),
        1 => (0u8..2, any::<bool>(), sel.clone(), sel.clone()).prop_map(|(a, b, c, d)| Op::Privileged(a, b, c, d)),
        2 => (ns.clone(), 0u8..3, 0u8..3).prop_map(|(a, b, c)| Op::Export(a, b, c)),
        1 => (0u8..4, 0u8..3).prop_map(|(a, b)| Op::Peer(a, b)),
        1 => (ns, 0u8..4).prop_map(|(a, b)| Op::Import(a, b)),
        1 => (0u8..8, 0u8..3).prop_map(|(a, b)| Op::Set(a, b)),
    ];
    make.prop_flat_map(|op| prop_oneof![3 => Just(op.clone()), 1 => Just(Op::Delete(Box::new(op)))])
}

/// Every ingress connection, exposure, listing and egress connection the universe allows.
fn events() -> Vec<Event> {
    let mut out = Vec::new();
    for ns in NAMESPACES {
        for e in 0..3 {
            for p in 0..4 {
                for s in 0..3 {
                    out.push(json!({"type": "NewConnection", "direction": "ingress", "src_peer": peer_name(p),
                        "src_service": format!("s{s}"), "dst_service": format!("e{e}"), "dst_namespace": ns}));
                }
            }
            out.push(json!({"type": "ExposeService", "service": format!("e{e}"), "namespace": ns}));
        }
        for s in 0..3 {
            out.push(json!({"type": "NewConnection", "direction": "egress", "src_service": format!("s{s}"),
                "dst_service": "i0", "dst_namespace": ns}));
        }
    }
    for p in 0..4 {
        out.push(json!({"type": "ServiceListRequest", "src_peer": peer_name(p)}));
    }
    out.into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect()
}

/// What a decision says, less the connection id an engine makes.
fn decide(engine: &Engine, event: &Event) -> Value {
    let opts = DecideOptions {
        dry_run: true,
        ..DecideOptions::default()
    };
    let r = engine.decide(event, Time::ZERO, opts).unwrap();
    let mut v = serde_json::to_value(&r).unwrap();
    if let Some(o) = v.as_object_mut() {
        o.remove("connection_id");
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn batches_one_by_one_decide_as_one_fresh_batch(ops in prop::collection::vec(op(), 1..16)) {
        let stepwise = engine();
        let mut model: BTreeMap<DocKey, Value> = BTreeMap::new();
        let events = events();
        for op in ops {
            let key = op.key();
            let ok = match op.doc() {
                Some(doc) => {
                    let applied = stepwise.apply(vec![parse_value(doc.clone(), 1).unwrap()]).is_ok();
                    if applied {
                        model.insert(key, doc);
                    }
                    applied
                }
                None => {
                    let deleted = stepwise.delete(std::slice::from_ref(&key)).is_ok();
                    // Refused too when a policy still refers to the set.
                    if deleted {
                        prop_assert!(model.remove(&key).is_some());
                    }
                    deleted
                }
            };
            if !ok {
                continue;
            }
            let fresh = engine();
            let docs = model.values().enumerate().map(|(i, d)| parse_value(d.clone(), i + 1).unwrap()).collect();
            fresh.apply(docs).unwrap();
            for event in &events {
                prop_assert_eq!(decide(&stepwise, event), decide(&fresh, event), "{:?}", event);
            }
        }
    }
}
