#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

/// The Kubernetes definition, written as plainly as possible.
fn naive(sel: &LabelSelector, attrs: &BTreeMap<String, String>) -> bool {
    for (k, v) in &sel.match_labels {
        if attrs.get(k) != Some(v) {
            return false;
        }
    }
    for e in &sel.match_expressions {
        let vals = e.values.clone().unwrap_or_default();
        let ok = match e.operator.as_str() {
            "In" => attrs.get(&e.key).is_some_and(|v| vals.contains(v)),
            "NotIn" => !attrs.get(&e.key).is_some_and(|v| vals.contains(v)),
            "Exists" => attrs.contains_key(&e.key),
            "DoesNotExist" => !attrs.contains_key(&e.key),
            _ => unreachable!(),
        };
        if !ok {
            return false;
        }
    }
    true
}

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "x.io/c", "client.clusterlink.net/service"])
        .prop_map(str::to_owned)
}
fn value() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["1", "2", "v", ""]).prop_map(str::to_owned)
}

fn expression() -> impl Strategy<Value = Expression> {
    (key(), 0..4usize, prop::collection::vec(value(), 1..3)).prop_map(|(key, op, values)| {
        let operator = ["In", "NotIn", "Exists", "DoesNotExist"][op].to_owned();
        let values = (op < 2).then_some(values);
        Expression {
            key,
            operator,
            values,
        }
    })
}

fn selector() -> impl Strategy<Value = LabelSelector> {
    (
        prop::collection::btree_map(key(), value(), 0..3),
        prop::collection::vec(expression(), 0..3),
    )
        .prop_map(|(match_labels, match_expressions)| LabelSelector {
            match_labels,
            match_expressions,
        })
}

proptest! {
    #[test]
    fn compiled_selector_agrees_with_the_definition(
        sel in selector(),
        attrs in prop::collection::btree_map(key(), value(), 0..4),
    ) {
        let compiled = Selector::compile(&sel, "s").unwrap();
        let mut a = Attrs::new();
        for (k, v) in &attrs {
            a.push(&crate::attrs::Symbols::default(), k, v);
        }
        prop_assert_eq!(compiled.matches(&a), naive(&sel, &attrs));
    }
}

#[test]
fn empty_selector_matches_an_empty_map() {
    let s = Selector::compile(&LabelSelector::default(), "s").unwrap();
    assert!(s.matches(&Attrs::new()));
    assert!(s.is_everything());
}

#[test]
fn label_syntax_follows_kubernetes() {
    for ok in [
        "a",
        "app.kubernetes.io/name",
        "client.clusterlink.net/labels.app",
        "A_b-c.9",
        &"x".repeat(63),
    ] {
        assert!(check_key(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "-a",
        "a-",
        "this is not a key",
        "Upper.Case/x",
        "a/b/c",
        &"x".repeat(64),
        "/x",
        "x/",
    ] {
        assert!(check_key(bad).is_err(), "{bad}");
    }
    for ok in ["", "v", "a.b-c_d", &"v".repeat(63)] {
        assert!(check_value(ok).is_ok(), "{ok}");
    }
    for bad in ["bad!@#", "-v", &"v".repeat(64), "with space"] {
        assert!(check_value(bad).is_err(), "{bad}");
    }
}

#[test]
fn operators_need_or_refuse_values() {
    let with = |op: &str, values: Option<Vec<String>>| LabelSelector {
        match_labels: BTreeMap::new(),
        match_expressions: vec![Expression {
            key: "a".into(),
            operator: op.into(),
            values,
        }],
    };
    assert!(Selector::compile(&with("In", Some(vec![])), "s").is_err());
    assert!(Selector::compile(&with("NotIn", None), "s").is_err());
    assert!(Selector::compile(&with("Exists", Some(vec!["x".into()])), "s").is_err());
    assert!(Selector::compile(&with("DoesNotExist", None), "s").is_ok());
    let err = Selector::compile(
        &with("Gt", Some(vec!["1".into()])),
        "spec.from[0].workloadSelector",
    )
    .unwrap_err();
    assert_eq!(
        err.field,
        "spec.from[0].workloadSelector.matchExpressions[0].operator"
    );
    assert!(err.message.contains("`Gt`"));
}
