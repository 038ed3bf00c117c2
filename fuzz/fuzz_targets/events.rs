//! Any text as an event: it parses or is refused; what parses is decided by an engine
//! that has a policy of every kind.
#![no_main]

use std::sync::LazyLock;

use clpe_core::{Engine, EngineConfig, Event, PeerName, parse_documents};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

const POLICIES: &str = r#"
kind: Peer
metadata: {name: a, labels: {zone: z1}}
---
kind: Peer
metadata: {name: b}
---
kind: Export
metadata: {name: s, namespace: default}
---
kind: Import
metadata: {name: s, namespace: default}
spec:
  lbScheme: least-connections
  sources: [{peer: a, exportName: s, exportNamespace: default}, {peer: b, exportName: s, exportNamespace: default}]
---
kind: LoadBalancingPolicy
metadata: {name: sticky, namespace: default}
spec:
  import: s
  from: [{workloadSelector: {matchLabels: {client.clusterlink.net/service: c}}}]
  scheme: consistent-hash
  hashKey: client.clusterlink.net/service
---
kind: AccessPolicy
metadata: {name: allow-all, namespace: default}
spec: {action: allow, from: [{workloadSelector: {}}], to: [{workloadSelector: {}}]}
---
kind: AccessPolicy
metadata: {name: deny-x, namespace: default}
spec: {action: deny, from: [{workloadSelector: {matchLabels: {client.clusterlink.net/service: x}}}], to: [{workloadSelector: {}}]}
---
kind: ConnectionLimitPolicy
metadata: {name: c}
spec: {from: [{workloadSelector: {}}], to: [{workloadSelector: {}}], maxConnections: 3, key: [client.clusterlink.net/service], leaseSeconds: 10}
---
kind: RateLimitPolicy
metadata: {name: r}
spec: {from: [{workloadSelector: {}}], to: [{workloadSelector: {}}], connectionsPerSecond: 5, burst: 2, bandwidth: 10Mbps}
"#;

static ENGINE: LazyLock<Engine> = LazyLock::new(|| {
    let engine = Engine::new(EngineConfig {
        local_peer: PeerName::from("home"),
        ..EngineConfig::default()
    });
    let docs = parse_documents(POLICIES).expect("the fixed policies parse");
    engine.apply(docs).expect("the fixed policies apply");
    engine
});

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(event) = Event::from_json(&text) {
        static CLOCK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let now = CLOCK.fetch_add(1_000_000, std::sync::atomic::Ordering::Relaxed);
        common::decide(&ENGINE, &event, now);
    }
});
