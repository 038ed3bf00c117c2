#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::*;

fn invalid(text: &str) -> Vec<DocError> {
    match parse_documents(text) {
        Err(ApplyError::Invalid(e)) => e,
        other => panic!("expected invalid, got {other:?}"),
    }
}

#[test]
fn yaml_json_and_streams_all_parse() {
    let yaml = "# comment\n---\nkind: Peer\nmetadata: {name: p0}\n---\n{\"kind\": \"Peer\", \"metadata\": {\"name\": \"p1\"}}\n--- {\"kind\": \"Export\", \"metadata\": {\"name\": \"e\"}}\n";
    let docs = parse_documents(yaml).unwrap();
    assert_eq!(docs.len(), 3);
    assert_eq!(docs[2].key.namespace.as_str(), "default");
    let json = r#"[{"kind": "Peer", "metadata": {"name": "p0"}}]"#;
    assert_eq!(parse_documents(json).unwrap().len(), 1);
}

#[test]
fn errors_name_the_document_the_field_and_the_rule() {
    let e = invalid(
        "kind: AccessPolicy\nmetadata: {name: p, namespace: ns1}\nspec:\n  action: allow\n  from: [{workloadSelector: {matchLabels: {\"bad key!\": v}}}]\n  to: [{workloadSelector: {}}]\n",
    );
    assert_eq!(e[0].document, "AccessPolicy ns1/p");
    assert_eq!(e[0].field, "spec.from[0].workloadSelector.matchLabels");
    assert!(e[0].message.contains("bad key!"));

    let e = invalid(
        "kind: AccessPolicy\nmetadata: {name: p}\nspec: {action: Allow, from: [{workloadSelector: {}}], to: [{workloadSelector: {}}]}\n",
    );
    assert_eq!(e[0].field, "spec.action");
    assert!(e[0].message.contains("Allow"));

    let e = invalid("kind: Import\nmetadata: {name: i}\nspec: {lbScheme: fastest, sources: []}\n");
    assert_eq!(e[0].field, "spec.lbScheme");

    let e = invalid("kind: NoSuchKind\nmetadata: {name: x}\n");
    assert!(e[0].message.contains("unknown kind `NoSuchKind`"));

    let e = invalid("kind: Peer\nmetadata: {name: x}\nspec: {reachable: yes}\n");
    assert_eq!(e[0].field, "spec.reachable", "YAML 1.2: `yes` is a string");

    let e = invalid("kind: Peer\nmetadata: {name: x, namespace: ns}\n");
    assert_eq!(e[0].field, "metadata.namespace");
}

#[test]
fn malformed_input_is_an_error_not_a_panic() {
    let deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
    let huge_string = format!(
        "kind: Peer\nmetadata: {{name: \"{}\"}}\n",
        "x".repeat(1 << 20)
    );
    let binary: String = (0u8..=255).map(char::from).collect();
    let inputs = [
        "kind: [unclosed",
        "{\"kind\": ",
        ": : :",
        "- - - -",
        "kind: 7\nmetadata: 7",
        "kind: Peer\nmetadata: {name: [1, 2]}",
        "kind: Peer\nmetadata: {name: ok}\nspec: {reachable: 3}",
        "kind: Import\nmetadata: {name: i}\nspec: {sources: {peer: 1}}",
        "kind: AccessPolicy\nmetadata: {name: p}\nspec: {action: allow, from: [{workloadSelector: {}, workloadSets: [a]}], to: [{workloadSelector: {}}]}",
        "kind: WasmAgent\nmetadata: {name: w}\nspec: {module: '!!!not base64'}",
        "kind: RateLimitPolicy\nmetadata: {name: r}\nspec: {from: [{workloadSelector: {}}], to: [{workloadSelector: {}}], connectionsPerSecond: -1}",
        &deep,
        &huge_string,
        &binary,
        "\u{0}\u{1}\u{2}",
        "*alias",
        "&a [*a]",
    ];
    for input in inputs {
        let r = parse_documents(input);
        assert!(r.is_err(), "accepted: {:.60}", input);
        let message = r.unwrap_err().to_string();
        assert!(!message.is_empty());
        assert!(
            message.len() < 4096,
            "error is too long: {} bytes",
            message.len()
        );
    }
}

#[test]
fn every_error_of_a_batch_is_reported() {
    let e = invalid(
        "kind: Peer\nmetadata: {name: ok}\n---\nkind: Peer\nmetadata: {}\n---\nkind: Bogus\nmetadata: {name: x}\n",
    );
    assert_eq!(e.len(), 2);
}

proptest::proptest! {
    /// The JSON fast path writes the canonical text itself; it must be exactly what the
    /// tree path (serde_json) writes, escapes included.
    #[test]
    fn fast_and_tree_paths_agree_on_the_canonical_text(
        name in "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?",
        labels in proptest::collection::btree_map("[a-z]{1,8}", "[A-Za-z0-9]([A-Za-z0-9._-]{0,10}[A-Za-z0-9])?", 0..4),
        with_spec in proptest::bool::ANY,
    ) {
        let meta = serde_json::json!({"name": name, "namespace": "ns", "labels": labels});
        let mut doc = serde_json::json!({"kind": "Export", "metadata": meta});
        if with_spec {
            doc = serde_json::json!({"kind": "AccessPolicy", "metadata": meta, "spec": {"action": "allow", "from": [{"workloadSelector": {}}], "to": [{"workloadSelector": {}}]}});
        }
        let text = doc.to_string();
        let fast = parse_documents(&text).unwrap();
        let tree = parse_value(doc, 1).unwrap();
        proptest::prop_assert_eq!(fast[0].raw.text(), tree.raw.text());
    }
}

#[test]
fn json_strings_escape_like_serde_json() {
    for s in [
        "plain",
        "quote\"back\\slash",
        "tab\tnl\ncr\r",
        "\u{01}\u{08}\u{0c}\u{1f}",
        "ünï",
    ] {
        let mut out = String::new();
        super::push_json_str(&mut out, s);
        assert_eq!(out, serde_json::to_string(s).unwrap());
    }
}
