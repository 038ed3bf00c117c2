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

/// Destinations as the snapshot holds them: pairs with distinct keys (the first of a
/// repeated key kept), all precomputed.
fn dest_of(symbols: &Symbols, pairs: &[(&'static str, &'static str)]) -> OwnedAttrs {
    let mut seen = Vec::new();
    let distinct: Vec<(&str, &str)> = pairs
        .iter()
        .filter(|(k, _)| {
            let first = !seen.contains(k);
            seen.push(*k);
            first
        })
        .copied()
        .collect();
    crate::attrs::owned_with_labels(
        symbols,
        &distinct,
        "",
        std::iter::empty::<(&String, &String)>(),
    )
}

proptest! {
    /// An index built for a list of destinations finds, for each of them, exactly what
    /// matching every rule by strings finds; and so it does for a destination it was not
    /// built for.
    #[test]
    fn index_by_destination_agrees_with_a_scan(
        rules in prop::collection::vec(rule(FEW_KEYS), 0..30),
        src in attr_list(FEW_KEYS),
        dests in prop::collection::vec(attr_list(FEW_KEYS), 1..6),
        first in 0u32..3,
    ) {
        agrees_by_destination(rules, &src, &dests, first)?;
    }

    /// The same with more keys than the plan lists combinations of.
    #[test]
    fn index_by_destination_agrees_with_a_scan_with_many_keys(
        rules in prop::collection::vec(rule(MANY_KEYS), 10..40),
        src in attr_list(MANY_KEYS),
        dests in prop::collection::vec(attr_list(MANY_KEYS), 1..6),
        first in 0u32..3,
    ) {
        agrees_by_destination(rules, &src, &dests, first)?;
    }
}

fn agrees_by_destination(
    rules: Vec<Rule>,
    src: &[(&'static str, &'static str)],
    dests: &[Vec<(&'static str, &'static str)>],
    first: u32,
) -> Result<(), TestCaseError> {
    let symbols = symbols_of(&rules);
    let sb = base_of(&symbols, src);
    let s = attrs_of(&symbols, &sb, src);
    let owned: Vec<OwnedAttrs> = dests.iter().map(|d| dest_of(&symbols, d)).collect();
    let refs: Vec<&OwnedAttrs> = owned.iter().collect();
    let expected = |d: &Attrs<'_>| -> Vec<u32> {
        (rules.iter().enumerate())
            .filter(|(_, r)| r.matches(&s, d))
            .map(|(i, _)| i as u32)
            .collect()
    };
    let wanted: Vec<Vec<u32>> = owned.iter().map(|o| expected(&Attrs::over(o))).collect();
    let dests = Dests {
        first,
        attrs: &refs,
    };
    for anywhere in [false, true] {
        let index = MatchIndex::build_for(rules.clone(), &symbols, Some((dests, anywhere)));
        prop_assert_eq!(index.all.is_some(), anywhere);
        agrees_at(&index, &s, &owned, &wanted, first, &expected)?;
    }
    Ok(())
}

fn agrees_at(
    index: &MatchIndex,
    s: &Attrs<'_>,
    owned: &[OwnedAttrs],
    wanted: &[Vec<u32>],
    first: u32,
    expected: &dyn Fn(&Attrs<'_>) -> Vec<u32>,
) -> Result<(), TestCaseError> {
    let symbols = Symbols::default();
    for (k, (o, want)) in owned.iter().zip(wanted).enumerate() {
        let d = Attrs::over(o);
        let dest = first + k as u32;
        prop_assert_eq!(
            index.first_match_at(s, &d, Some(dest)),
            want.first().copied()
        );
        prop_assert_eq!(index.first_match_at(s, &d, None), want.first().copied());
        let mut all = SmallVec::new();
        index.all_matches(s, &d, &mut all);
        prop_assert_eq!(&all.to_vec(), want);
    }
    // A destination outside the list (the number past the last, or before the first).
    let stranger = dest_of(&symbols, &[]);
    let d = Attrs::over(&stranger);
    let want = expected(&d);
    for dest in [first + owned.len() as u32, first.wrapping_sub(1)] {
        prop_assert_eq!(
            index.first_match_at(s, &d, Some(dest)),
            want.first().copied()
        );
    }
    Ok(())
}

/// Rules filed with destinations (of each kind of source side), destinations more rules
/// match than a list keeps, and a rule matching every destination: each rule is found
/// where it is kept.
#[test]
fn rules_are_found_through_their_destination_or_the_tables() {
    let to = |v: &'static str| Arc::new(sel(&[("b", v)], vec![]));
    let from = |v: &'static str| Arc::new(sel(&[("a", v)], vec![]));
    let from_in = |v: &'static str| {
        let expr = Expression {
            key: "a".to_owned(),
            operator: "In".to_owned(),
            values: Some(vec![v.to_owned()]),
        };
        Arc::new(sel(&[], vec![expr]))
    };
    let rule = |f: Arc<Selector>, t: Arc<Selector>| Rule {
        from: vec![f].into(),
        to: vec![t].into(),
    };
    let everything = || Arc::new(Selector::everything());
    let rules = vec![
        rule(from("1"), to("1")),
        // To every destination: no pair it needs, left to the tables.
        rule(from("3"), everything()),
        rule(from("2"), to("1")),
        rule(from("3"), to("1")),
        rule(from("2"), to("2")),
        // Three to b=3, as three to b=1 above: more than a list keeps (2 in tests).
        rule(from_in("1"), to("3")),
        rule(everything(), to("3")),
        rule(from_in("2"), to("3")),
        // Two to b=4, kept in its list.
        rule(from_in("2"), to("4")),
        rule(everything(), to("4")),
    ];
    let symbols = symbols_of(&rules);
    let owned: Vec<OwnedAttrs> = [("b", "1"), ("b", "2"), ("b", "3"), ("b", "4")]
        .iter()
        .map(|p| dest_of(&symbols, &[*p]))
        .collect();
    let refs: Vec<&OwnedAttrs> = owned.iter().collect();
    let dests = Dests {
        first: 0,
        attrs: &refs,
    };
    let index = MatchIndex::build_for(rules, &symbols, Some((dests, false)));
    let layout = index.by_dest.as_ref().map(|b| b.layout());
    assert_eq!(
        layout,
        Some((vec![4, 8, 9], vec![0, 1, 0, 2])),
        "the broad rule and the rules of crowded destinations are left to the tables"
    );
    let decide = |a: &'static str, dest: u32| {
        let src_base = base_of(&symbols, &[("a", a)]);
        let src = Attrs::over(&src_base);
        let dst = Attrs::over(&owned[dest as usize]);
        let at = index.first_match_at(&src, &dst, Some(dest));
        assert_eq!(at, index.first_match(&src, &dst), "a={a} dest {dest}");
        at
    };
    assert_eq!(decide("1", 0), Some(0));
    assert_eq!(decide("2", 0), Some(2));
    assert_eq!(
        decide("3", 0),
        Some(1),
        "the broad rule comes before rule 3"
    );
    assert_eq!(decide("2", 1), Some(4));
    assert_eq!(decide("3", 2), Some(1));
    assert_eq!(decide("1", 2), Some(5));
    assert_eq!(decide("2", 2), Some(6));
    assert_eq!(decide("4", 2), Some(6));
    assert_eq!(decide("1", 1), None);
    assert_eq!(decide("2", 3), Some(8));
    assert_eq!(decide("1", 3), Some(9));
    assert_eq!(decide("3", 3), Some(1));
}

/// No destinations to file rules with: the index is the plain one.
#[test]
fn an_empty_list_of_destinations_files_nothing() {
    let rule = Rule {
        from: vec![Arc::new(sel(&[("a", "1")], vec![]))].into(),
        to: vec![Arc::new(sel(&[("b", "1")], vec![]))].into(),
    };
    let symbols = symbols_of(std::slice::from_ref(&rule));
    let dests = Dests {
        first: 0,
        attrs: &[],
    };
    let index = MatchIndex::build_for(vec![rule], &symbols, Some((dests, true)));
    assert!(index.by_dest.is_none() && index.all.is_none());
    let (s, d) = (
        base_of(&symbols, &[("a", "1")]),
        base_of(&symbols, &[("b", "1")]),
    );
    let at = index.first_match_at(&Attrs::over(&s), &Attrs::over(&d), Some(0));
    assert_eq!(at, Some(0));
}
