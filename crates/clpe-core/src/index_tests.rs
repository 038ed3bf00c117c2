#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::*;
use crate::attrs::OwnedAttrs;
use crate::selector::{Expression, LabelSelector};
use proptest::prelude::*;
use std::sync::Arc;

fn sel(labels: &[(&str, &str)], exprs: Vec<Expression>) -> Selector {
    let raw = LabelSelector {
        match_labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        match_expressions: exprs,
    };
    Selector::compile(&raw, "s").unwrap()
}

/// The label keys selectors and attributes use: a few (each combination of a source key
/// and a destination key is a probe of its own), or many (the pairs they hold are found).
const FEW_KEYS: &[&str] = &["a", "b", crate::attrs::keys::PEER_NAME];
const MANY_KEYS: &[&str] = &["a", "b", "c", "e", "f", "g", crate::attrs::keys::PEER_NAME];

fn raw_selector(keys: &'static [&'static str]) -> impl Strategy<Value = Selector> {
    let keys = prop::sample::select(keys);
    let vals = prop::sample::select(vec!["1", "2", "3"]);
    (
        prop::collection::btree_map(keys.clone(), vals.clone(), 0..2),
        prop::option::of((keys, 0..4usize, prop::collection::vec(vals, 1..3))),
    )
        .prop_map(|(labels, expr)| {
            let labels: Vec<(&str, &str)> = labels.into_iter().collect();
            let exprs = expr
                .map(|(k, op, values)| {
                    let operator = ["In", "NotIn", "Exists", "DoesNotExist"][op].to_owned();
                    vec![Expression {
                        key: k.to_owned(),
                        operator,
                        values: (op < 2).then(|| values.into_iter().map(str::to_owned).collect()),
                    }]
                })
                .unwrap_or_default();
            sel(&labels, exprs)
        })
}

fn rule(keys: &'static [&'static str]) -> impl Strategy<Value = Rule> {
    (
        prop::collection::vec(raw_selector(keys), 1..3),
        prop::collection::vec(raw_selector(keys), 1..3),
    )
        .prop_map(|(from, to)| Rule {
            from: from.into_iter().map(Arc::new).collect(),
            to: to.into_iter().map(Arc::new).collect(),
        })
}

fn symbols_of(rules: &[Rule]) -> Symbols {
    let mut symbols = Symbols::default();
    for r in rules {
        for s in r.from.iter().chain(r.to.iter()) {
            symbols.intern_selector(s);
        }
    }
    symbols
}

/// The first pair as a precomputed base (as an inventory item's are), the rest pushed
/// (as an event's are).
fn base_of(symbols: &Symbols, pairs: &[(&'static str, &'static str)]) -> OwnedAttrs {
    let first = pairs.first().map(|(k, v)| (*k, *v));
    crate::attrs::owned_with_labels(
        symbols,
        first.as_slice(),
        "",
        std::iter::empty::<(&String, &String)>(),
    )
}

fn attrs_of<'a>(
    symbols: &Symbols,
    base: &'a OwnedAttrs,
    pairs: &'a [(&'static str, &'static str)],
) -> Attrs<'a> {
    let mut a = Attrs::over(base);
    for (k, v) in pairs.iter().skip(1) {
        a.push(symbols, k, v);
    }
    a
}

/// Attribute lists with keys and values no selector mentions ("d", "4") and repeated keys
/// (the first wins).
fn attr_list(
    keys: &'static [&'static str],
) -> impl Strategy<Value = Vec<(&'static str, &'static str)>> {
    let mut keys = keys.to_vec();
    keys.push("d");
    prop::collection::vec(
        (
            prop::sample::select(keys),
            prop::sample::select(vec!["1", "2", "3", "4"]),
        ),
        0..4,
    )
}

proptest! {
    /// The index finds exactly what matching every rule by strings finds.
    #[test]
    fn index_agrees_with_a_scan(rules in prop::collection::vec(rule(FEW_KEYS), 0..30), src in attr_list(FEW_KEYS), dst in attr_list(FEW_KEYS)) {
        agrees(rules, &src, &dst)?;
    }

    /// The same with more keys than the plan lists combinations of.
    #[test]
    fn index_agrees_with_a_scan_with_many_keys(rules in prop::collection::vec(rule(MANY_KEYS), 10..40), src in attr_list(MANY_KEYS), dst in attr_list(MANY_KEYS)) {
        agrees(rules, &src, &dst)?;
    }
}

fn agrees(
    rules: Vec<Rule>,
    src: &[(&'static str, &'static str)],
    dst: &[(&'static str, &'static str)],
) -> Result<(), TestCaseError> {
    {
        let symbols = symbols_of(&rules);
        let (sb, db) = (base_of(&symbols, src), base_of(&symbols, dst));
        let (s, d) = (attrs_of(&symbols, &sb, src), attrs_of(&symbols, &db, dst));
        let expected: Vec<u32> = rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.matches(&s, &d))
            .map(|(i, _)| i as u32)
            .collect();
        let index = MatchIndex::build(rules, &symbols);
        let mut all = SmallVec::new();
        index.all_matches(&s, &d, &mut all);
        prop_assert_eq!(all.to_vec(), expected.clone());
        prop_assert_eq!(index.first_match(&s, &d), expected.first().copied());
    }
    Ok(())
}

#[test]
fn rules_requiring_nothing_are_scanned() {
    let everything = Rule {
        from: vec![Arc::new(Selector::everything())].into(),
        to: vec![Arc::new(Selector::everything())].into(),
    };
    let index = MatchIndex::build(vec![everything], &Symbols::default());
    assert_eq!(index.first_match(&Attrs::new(), &Attrs::new()), Some(0));
}
