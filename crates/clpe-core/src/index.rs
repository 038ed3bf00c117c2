//! The match index: compiled `from`/`to` rules indexed by the attribute values they require.
//!
//! Every policy kind that selects a source and a destination (access, limit and balancing
//! policies) is a [`Rule`]. At build time each rule is filed under the `key=value` pairs
//! one of its sides cannot match without (a `matchLabels` pair, or each value of an `In`),
//! choosing the side whose pairs are rarest. A decision then probes the postings of the
//! pairs it actually has, and evaluates only the rules found there, plus the few rules
//! that require nothing indexable (`{}` on both sides, only `NotIn`/`Exists`).

use std::hash::{BuildHasher, Hasher};

use hashbrown::HashTable;
use rustc_hash::{FxBuildHasher, FxHashMap};
use smallvec::SmallVec;

use crate::attrs::Attrs;
use crate::selector::{Op, Selector};

/// A source side and a destination side, each matching when any of its selectors does.
#[derive(Clone, Debug)]
pub struct Rule {
    pub from: Box<[Selector]>,
    pub to: Box<[Selector]>,
}

impl Rule {
    pub fn matches(&self, src: &Attrs<'_>, dst: &Attrs<'_>) -> bool {
        self.from.iter().any(|s| s.matches(src)) && self.to.iter().any(|s| s.matches(dst))
    }
}

struct Posting {
    key: Box<str>,
    value: Box<str>,
    /// Ascending.
    ids: Box<[u32]>,
}

#[derive(Default)]
struct Postings {
    table: HashTable<Posting>,
}

fn pair_hash(key: &str, value: &str) -> u64 {
    let mut h = FxBuildHasher.build_hasher();
    h.write(key.as_bytes());
    h.write_u8(0xff);
    h.write(value.as_bytes());
    h.finish()
}

impl Postings {
    fn build(mut lists: FxHashMap<(&str, &str), Vec<u32>>) -> Postings {
        let mut table = HashTable::with_capacity(lists.len());
        for ((key, value), mut ids) in lists.drain() {
            ids.sort_unstable();
            ids.dedup();
            let posting = Posting {
                key: key.into(),
                value: value.into(),
                ids: ids.into(),
            };
            table.insert_unique(pair_hash(key, value), posting, |p| {
                pair_hash(&p.key, &p.value)
            });
        }
        Postings { table }
    }

    #[inline]
    fn get(&self, key: &str, value: &str) -> Option<&[u32]> {
        if self.table.is_empty() {
            return None;
        }
        self.table
            .find(pair_hash(key, value), |p| {
                &*p.key == key && &*p.value == value
            })
            .map(|p| &*p.ids)
    }
}

struct PairPosting {
    from: (Box<str>, Box<str>),
    to: (Box<str>, Box<str>),
    ids: Box<[u32]>,
}

fn quad_hash(from: (&str, &str), to: (&str, &str)) -> u64 {
    let mut h = FxBuildHasher.build_hasher();
    for part in [from.0, from.1, to.0, to.1] {
        h.write(part.as_bytes());
        h.write_u8(0xff);
    }
    h.finish()
}

/// Rules anchored on both sides at once: filed under a (source pair, destination pair),
/// so a decision finds only the rules whose two anchors it holds.
#[derive(Default)]
struct PairPostings {
    table: HashTable<PairPosting>,
    /// The keys used as anchors on each side: only attributes with these keys are probed.
    from_keys: Box<[Box<str>]>,
    to_keys: Box<[Box<str>]>,
}

type PairLists<'a> = FxHashMap<((&'a str, &'a str), (&'a str, &'a str)), Vec<u32>>;

impl PairPostings {
    fn build(mut lists: PairLists<'_>) -> PairPostings {
        let mut table = HashTable::with_capacity(lists.len());
        let mut from_keys: Vec<Box<str>> = Vec::new();
        let mut to_keys: Vec<Box<str>> = Vec::new();
        for ((from, to), mut ids) in lists.drain() {
            ids.sort_unstable();
            ids.dedup();
            if !from_keys.iter().any(|k| **k == *from.0) {
                from_keys.push(from.0.into());
            }
            if !to_keys.iter().any(|k| **k == *to.0) {
                to_keys.push(to.0.into());
            }
            let posting = PairPosting {
                from: (from.0.into(), from.1.into()),
                to: (to.0.into(), to.1.into()),
                ids: ids.into(),
            };
            table.insert_unique(quad_hash(from, to), posting, |p| {
                quad_hash((&p.from.0, &p.from.1), (&p.to.0, &p.to.1))
            });
        }
        PairPostings {
            table,
            from_keys: from_keys.into(),
            to_keys: to_keys.into(),
        }
    }

    /// Calls `f` with the ids of every posting the two attribute maps hold.
    #[inline]
    fn probe(&self, src: &Attrs<'_>, dst: &Attrs<'_>, mut f: impl FnMut(&[u32])) {
        if self.table.is_empty() {
            return;
        }
        for (fk, fv) in src.pairs() {
            if !self.from_keys.iter().any(|k| **k == *fk) {
                continue;
            }
            for (tk, tv) in dst.pairs() {
                if !self.to_keys.iter().any(|k| **k == *tk) {
                    continue;
                }
                let found = self.table.find(quad_hash((fk, fv), (tk, tv)), |p| {
                    *p.from.0 == *fk && *p.from.1 == *fv && *p.to.0 == *tk && *p.to.1 == *tv
                });
                if let Some(p) = found {
                    f(&p.ids);
                }
            }
        }
    }
}

/// Most anchor combinations a rule is filed under in the pair table; past it, one side.
const MAX_PAIRS: usize = 16;

/// Rules indexed for lookup; rule ids are their positions in the list given to `build`.
#[derive(Default)]
pub struct MatchIndex {
    rules: Vec<Rule>,
    from: Postings,
    to: Postings,
    pairs: PairPostings,
    /// Rules with nothing to index on either side; ascending.
    scan: Box<[u32]>,
}

impl std::fmt::Debug for MatchIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MatchIndex")
            .field("rules", &self.rules.len())
            .field("scan", &self.scan.len())
            .finish()
    }
}

/// A cost (how many rules share the pairs) and the pairs.
type Anchors<'a> = (u64, SmallVec<[(&'a str, &'a str); 2]>);

/// The pairs a selector cannot match without, as alternatives: the selector matches only
/// if the attributes hold one of them.
fn anchors<'a>(sel: &'a Selector, freq: &FxHashMap<(&str, &str), u32>) -> Option<Anchors<'a>> {
    let mut best: Option<Anchors<'a>> = None;
    let mut consider = |cost: u64, pairs: SmallVec<[(&'a str, &'a str); 2]>| {
        if best.as_ref().is_none_or(|(c, _)| cost < *c) {
            best = Some((cost, pairs));
        }
    };
    for (k, v) in sel.labels.iter() {
        let cost = u64::from(freq.get(&(&**k, &**v)).copied().unwrap_or(1));
        consider(cost, smallvec::smallvec![(&**k, &**v)]);
    }
    for r in sel.requirements.iter() {
        if let Op::In(values) = &r.op {
            let cost = values
                .iter()
                .map(|v| u64::from(freq.get(&(&*r.key, &**v)).copied().unwrap_or(1)))
                .sum();
            consider(cost, values.iter().map(|v| (&*r.key, &**v)).collect());
        }
    }
    best
}

/// The anchors of a whole side: one set per selector, or `None` if some selector has none.
fn side_anchors<'a>(
    side: &'a [Selector],
    freq: &FxHashMap<(&str, &str), u32>,
) -> Option<(u64, Vec<(&'a str, &'a str)>)> {
    let mut cost = 0;
    let mut pairs = Vec::new();
    for sel in side {
        let (c, p) = anchors(sel, freq)?;
        cost += c;
        pairs.extend(p);
    }
    Some((cost, pairs))
}

fn count<'a>(side: &'a [Selector], freq: &mut FxHashMap<(&'a str, &'a str), u32>) {
    for sel in side {
        for (k, v) in sel.labels.iter() {
            *freq.entry((k, v)).or_default() += 1;
        }
        for r in sel.requirements.iter() {
            if let Op::In(values) = &r.op {
                for v in values.iter() {
                    *freq.entry((&r.key, v)).or_default() += 1;
                }
            }
        }
    }
}

impl MatchIndex {
    pub fn build(rules: Vec<Rule>) -> MatchIndex {
        let (mut from_freq, mut to_freq) = (FxHashMap::default(), FxHashMap::default());
        for r in &rules {
            count(&r.from, &mut from_freq);
            count(&r.to, &mut to_freq);
        }
        let mut from_lists: FxHashMap<(&str, &str), Vec<u32>> = FxHashMap::default();
        let mut to_lists: FxHashMap<(&str, &str), Vec<u32>> = FxHashMap::default();
        let mut pair_lists: PairLists<'_> = FxHashMap::default();
        let mut scan = Vec::new();
        for (id, r) in rules.iter().enumerate() {
            let id = id as u32;
            let f = side_anchors(&r.from, &from_freq);
            let t = side_anchors(&r.to, &to_freq);
            if let (Some((_, fp)), Some((_, tp))) = (&f, &t)
                && fp.len() * tp.len() <= MAX_PAIRS
            {
                for a in fp {
                    for b in tp {
                        pair_lists.entry((*a, *b)).or_default().push(id);
                    }
                }
                continue;
            }
            let (lists, pairs) = match (f, t) {
                (Some((fc, fp)), Some((tc, tp))) => {
                    if fc <= tc {
                        (&mut from_lists, fp)
                    } else {
                        (&mut to_lists, tp)
                    }
                }
                (Some((_, fp)), None) => (&mut from_lists, fp),
                (None, Some((_, tp))) => (&mut to_lists, tp),
                (None, None) => {
                    scan.push(id);
                    continue;
                }
            };
            for pair in pairs {
                lists.entry(pair).or_default().push(id);
            }
        }
        let from = Postings::build(from_lists);
        let to = Postings::build(to_lists);
        let pairs = PairPostings::build(pair_lists);
        MatchIndex {
            from,
            to,
            pairs,
            scan: scan.into(),
            rules,
        }
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rule(&self, id: u32) -> Option<&Rule> {
        self.rules.get(id as usize)
    }

    /// The smallest id of a matching rule: rules are listed in precedence order, so this
    /// is the one that decides.
    pub fn first_match(&self, src: &Attrs<'_>, dst: &Attrs<'_>) -> Option<u32> {
        let mut best = u32::MAX;
        let try_ids = |ids: &[u32], best: &mut u32| {
            for &id in ids {
                if id >= *best {
                    break;
                }
                if self
                    .rules
                    .get(id as usize)
                    .is_some_and(|r| r.matches(src, dst))
                {
                    *best = id;
                    break;
                }
            }
        };
        try_ids(&self.scan, &mut best);
        for (k, v) in src.pairs() {
            if let Some(ids) = self.from.get(k, v) {
                try_ids(ids, &mut best);
            }
        }
        for (k, v) in dst.pairs() {
            if let Some(ids) = self.to.get(k, v) {
                try_ids(ids, &mut best);
            }
        }
        self.pairs.probe(src, dst, |ids| try_ids(ids, &mut best));
        (best != u32::MAX).then_some(best)
    }

    /// Every matching rule id, ascending, without duplicates.
    pub fn all_matches(&self, src: &Attrs<'_>, dst: &Attrs<'_>, out: &mut SmallVec<[u32; 8]>) {
        out.clear();
        if self.rules.is_empty() {
            return;
        }
        out.extend_from_slice(&self.scan);
        for (k, v) in src.pairs() {
            if let Some(ids) = self.from.get(k, v) {
                out.extend_from_slice(ids);
            }
        }
        for (k, v) in dst.pairs() {
            if let Some(ids) = self.to.get(k, v) {
                out.extend_from_slice(ids);
            }
        }
        self.pairs.probe(src, dst, |ids| out.extend_from_slice(ids));
        out.sort_unstable();
        out.dedup();
        out.retain(|id| {
            self.rules
                .get(*id as usize)
                .is_some_and(|r| r.matches(src, dst))
        });
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
