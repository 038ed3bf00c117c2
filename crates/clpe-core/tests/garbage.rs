//! Garbage in: every decoder answers with an error, never a panic, whatever it is given.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use clpe_core::scenario::parse_suites;
use clpe_core::{DecideOptions, Engine, EngineConfig, Event, Time, parse_documents};
use proptest::prelude::*;

/// Valid documents and events, to mutate.
const SEEDS: &[&str] = &[
    r#"{"kind": "AccessPolicy", "metadata": {"name": "p", "namespace": "ns"}, "spec": {"action": "allow", "from": [{"workloadSelector": {"matchLabels": {"a": "b"}}}], "to": [{"workloadSelector": {"matchExpressions": [{"key": "k", "operator": "In", "values": ["v"]}]}}]}}"#,
    "kind: Import\nmetadata: {name: i}\nspec:\n  lbScheme: weighted\n  sources: [{peer: p, exportName: e, exportNamespace: default}]\n",
    "kind: RateLimitPolicy\nmetadata: {name: r}\nspec: {from: [{workloadSelector: {}}], to: [{workloadSets: [s]}], connectionsPerSecond: 0.5, burst: 2, bandwidth: 10Mbps}\n",
    "kind: LoadBalancingPolicy\nmetadata: {name: l}\nspec: {import: i, scheme: static, order: [a, b]}\n---\nkind: Peer\nmetadata: {name: a}\n",
    r#"{"type": "NewConnection", "direction": "ingress", "src_peer": "p", "dst_service": "s", "src_attributes": {"a": "b"}}"#,
];

fn mutate(seed: &str, edits: &[(usize, u8)]) -> String {
    let mut bytes = seed.as_bytes().to_vec();
    for (at, b) in edits {
        if bytes.is_empty() {
            break;
        }
        let i = at % bytes.len();
        match b % 3 {
            0 => bytes[i] = *b,
            1 => {
                bytes.remove(i);
            }
            _ => bytes.insert(i, *b),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn documents_never_panic(seed in 0..SEEDS.len(), edits in prop::collection::vec((any::<usize>(), any::<u8>()), 0..8)) {
        let text = mutate(SEEDS[seed], &edits);
        if let Ok(docs) = parse_documents(&text) {
            // Whatever parses must also apply or be refused cleanly.
            let engine = Engine::new(EngineConfig::default());
            let _ = engine.apply(docs);
        }
    }

    #[test]
    fn events_never_panic(seed in 0..SEEDS.len(), edits in prop::collection::vec((any::<usize>(), any::<u8>()), 0..8)) {
        let text = mutate(SEEDS[seed], &edits);
        if let Ok(event) = Event::from_json(&text) {
            let engine = Engine::new(EngineConfig::default());
            let _ = engine.decide(&event, Time::ZERO, DecideOptions { explain: true, dry_run: false });
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,200}") {
        let _ = parse_documents(&text);
        let _ = Event::from_json(&text);
        let _ = parse_suites(&text);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse_documents(&text);
        let _ = Event::from_json(&text);
        let _ = parse_suites(&text);
    }
}

#[test]
fn huge_and_deep_inputs_are_refused_with_a_reason() {
    let deep_yaml = format!(
        "kind: Peer\nmetadata: {{name: p, labels: {}x{}}}\n",
        "{a: ".repeat(200),
        "}".repeat(200)
    );
    let deep_json = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let many_labels = format!(
        "kind: Peer\nmetadata:\n  name: p\n  labels:\n{}",
        (0..20_000)
            .map(|i| format!("    k{i}: v\n"))
            .collect::<String>()
    );
    for input in [deep_yaml, deep_json] {
        let e = parse_documents(&input).unwrap_err().to_string();
        assert!(
            e.contains("deep")
                || e.contains("recursion")
                || e.contains("depth")
                || e.contains("nest"),
            "{e}"
        );
    }
    // Large but legal: accepted.
    assert_eq!(parse_documents(&many_labels).unwrap().len(), 1);
    let deep_event = format!("{}{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
    assert!(Event::from_json(&deep_event).is_err());
}
