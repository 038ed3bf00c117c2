//! Hot paths: the acl decision at 100 / 10k / 100k policies, the whole NewConnection
//! chain, each lb scheme's pick, a rate-limiter check, a connection-limiter reserve and
//! release, and applying a 10k-policy batch. `cargo bench -p clpe-core`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::hint::black_box;
use std::sync::Arc;

use clpe_core::document::parse_value;
use clpe_core::{DecideOptions, Document, Engine, EngineConfig, Event, PeerName, Time};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};

fn docs(values: Vec<Value>) -> Vec<Document> {
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| parse_value(v, i + 1).unwrap())
        .collect()
}

/// `n` access policies in the shape of the shared acl-N workloads.
fn acl_docs(n: usize) -> Vec<Value> {
    let mut v = Vec::new();
    for p in 0..20 {
        v.push(json!({"kind": "Peer", "metadata": {"name": format!("peer-{p}")}}));
    }
    for s in 0..50 {
        v.push(json!({"kind": "Export", "metadata": {"name": format!("svc-{s}")}}));
    }
    for i in 0..n {
        let action = if i % 3 == 0 { "deny" } else { "allow" };
        v.push(json!({"kind": "AccessPolicy", "metadata": {"name": format!("rule-{i:06}")}, "spec": {
            "action": action,
            "from": [{"workloadSelector": {"matchLabels": {"client.clusterlink.net/service": format!("svc-{}", i % 97)}}}],
            "to": [{"workloadSelector": {"matchLabels": {"export.clusterlink.net/name": format!("svc-{}", i % 50)}}}],
        }}));
    }
    v
}

fn ingress(i: usize) -> Event {
    serde_json::from_value(json!({"type": "NewConnection", "direction": "ingress", "src_peer": format!("peer-{}", i % 20),
        "src_service": format!("svc-{}", i % 97), "dst_service": format!("svc-{}", i % 50)})).unwrap()
}

fn engine_with(values: Vec<Value>) -> Engine {
    let engine = Engine::new(EngineConfig {
        local_peer: PeerName::from("home"),
        decision_log: 0,
        ..EngineConfig::default()
    });
    engine.apply(docs(values)).unwrap();
    engine
}

fn acl(c: &mut Criterion) {
    for n in [100, 10_000, 100_000] {
        let engine = engine_with(acl_docs(n));
        let events: Vec<Event> = (0..1000).map(ingress).collect();
        let mut i = 0;
        c.bench_function(&format!("acl decision, {n} policies"), |b| {
            b.iter(|| {
                i = (i + 1) % events.len();
                black_box(
                    engine
                        .decide(&events[i], Time::ZERO, DecideOptions::default())
                        .unwrap(),
                )
            })
        });
    }
}

fn egress_docs(scheme: &str) -> Vec<Value> {
    let mut v = vec![
        json!({"kind": "Peer", "metadata": {"name": "home", "labels": {"region": "eu"}}}),
        json!({"kind": "AccessPolicy", "metadata": {"name": "all"}, "spec": {"action": "allow", "from": [{"workloadSelector": {}}], "to": [{"workloadSelector": {}}]}}),
    ];
    let mut sources = Vec::new();
    for p in 0..3 {
        v.push(json!({"kind": "Peer", "metadata": {"name": format!("p{p}"), "labels": {"region": if p == 1 { "eu" } else { "us" }}}}));
        sources.push(
            json!({"peer": format!("p{p}"), "exportName": "db", "exportNamespace": "default"}),
        );
    }
    v.push(json!({"kind": "Import", "metadata": {"name": "db"}, "spec": {"sources": sources}}));
    let mut spec = json!({"import": "db", "scheme": scheme});
    match scheme {
        "weighted" => spec["weights"] = json!({"p0": 3, "p1": 1}),
        "static" => spec["order"] = json!(["p2"]),
        "consistent-hash" => spec["hashKey"] = json!("client.clusterlink.net/service"),
        "locality" => spec["localityLabel"] = json!("region"),
        _ => {}
    }
    v.push(json!({"kind": "LoadBalancingPolicy", "metadata": {"name": "lb"}, "spec": spec}));
    v
}

fn egress(i: usize) -> Event {
    serde_json::from_value(json!({"type": "NewConnection", "direction": "egress", "src_service": format!("app-{}", i % 10), "dst_service": "db", "connection_id": format!("c{i}")})).unwrap()
}

fn lb(c: &mut Criterion) {
    let opts = DecideOptions {
        explain: false,
        dry_run: true,
    };
    for scheme in [
        "round-robin",
        "random",
        "static",
        "weighted",
        "least-connections",
        "consistent-hash",
        "locality",
    ] {
        let engine = engine_with(egress_docs(scheme));
        let events: Vec<Event> = (0..100).map(egress).collect();
        let mut i = 0;
        c.bench_function(&format!("egress chain with lb {scheme} (dry run)"), |b| {
            b.iter(|| {
                i = (i + 1) % events.len();
                black_box(engine.decide(&events[i], Time::ZERO, opts).unwrap())
            })
        });
    }
}

fn chain_and_limits(c: &mut Criterion) {
    let mut values = egress_docs("round-robin");
    values.push(json!({"kind": "ConnectionLimitPolicy", "metadata": {"name": "cap"}, "spec": {"from": [{"workloadSelector": {}}], "to": [{"workloadSelector": {}}], "maxConnections": 1_000_000_000u64, "targetKey": ["peer.clusterlink.net/name"]}}));
    values.push(json!({"kind": "RateLimitPolicy", "metadata": {"name": "rate"}, "spec": {"from": [{"workloadSelector": {}}], "to": [{"workloadSelector": {}}], "connectionsPerSecond": 1e9, "burst": 1_000_000, "bandwidth": "10Mbps", "key": ["client.clusterlink.net/service"]}}));
    let engine = engine_with(values);
    let close: Vec<Event> = (0..100)
        .map(|i| {
            serde_json::from_value(
                json!({"type": "ConnectionClosed", "connection_id": format!("c{i}")}),
            )
            .unwrap()
        })
        .collect();
    let open: Vec<Event> = (0..100).map(egress).collect();
    let mut i = 0;
    c.bench_function(
        "whole NewConnection chain + ConnectionClosed (reserve and release)",
        |b| {
            b.iter(|| {
                i = (i + 1) % open.len();
                black_box(
                    engine
                        .decide(&open[i], Time::ZERO, DecideOptions::default())
                        .unwrap(),
                );
                black_box(
                    engine
                        .decide(&close[i], Time::ZERO, DecideOptions::default())
                        .unwrap(),
                )
            })
        },
    );
    let rates = &engine.runtime().rates;
    let policy: Arc<str> = "/bench".into();
    let mut t = 0u64;
    c.bench_function("rate-limiter GCRA check", |b| {
        b.iter(|| {
            t += 1_000;
            black_box(rates.check(&policy, &["app-1"], 1_000, 10, Time(t), true))
        })
    });
    let counters = &engine.runtime().counters;
    c.bench_function("connection-limiter reserve + release", |b| {
        b.iter(|| black_box(counters.try_reserve(&policy, &["p0"], 1_000, Time(0))))
    });
}

fn apply(c: &mut Criterion) {
    let values = acl_docs(10_000);
    c.bench_function("apply a 10k-policy batch", |b| {
        b.iter_batched(
            || (Engine::new(EngineConfig::default()), docs(values.clone())),
            |(engine, docs)| black_box(engine.apply(docs).unwrap()),
            BatchSize::LargeInput,
        )
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(2));
    targets = acl, lb, chain_and_limits, apply
}
criterion_main!(benches);
