//! The match index: compiled `from`/`to` rules indexed by the attribute values they require.
//!
//! Every policy kind that selects a source and a destination (access, limit and balancing
//! policies) is a [`Rule`]. At build time each rule is filed under the `key=value` pairs
//! one of its sides cannot match without (a `matchLabels` pair, or each value of an `In`),
//! choosing the side whose pairs are rarest. A decision then probes the postings of the
//! pairs it actually has, and evaluates only the rules found there, plus the few rules
//! that require nothing indexable (`{}` on both sides, only `NotIn`/`Exists`).

use hashbrown::HashTable;
use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use crate::attrs::{Attrs, pair_hash};
use std::sync::Arc;

use crate::selector::{Op, Selector};

/// A source side and a destination side, each matching when any of its selectors does.
#[derive(Clone, Debug)]
pub struct Rule {
    pub from: Box<[Arc<Selector>]>,
    pub to: Box<[Arc<Selector>]>,
}

impl Rule {
    pub fn matches(&self, src: &Attrs<'_>, dst: &Attrs<'_>) -> bool {
        self.from.iter().any(|s| s.matches(src)) && self.to.iter().any(|s| s.matches(dst))
    }
}

/// Rule ids filed under a 64-bit hash of the pairs they require.
///
/// INVARIANT: postings only nominate candidates; every candidate is verified by
/// [`Rule::matches`] before it counts. So a posting is keyed by the hash alone (no
/// strings to chase through memory), and two pairs whose hashes collide simply share a
/// list: the extra candidates fail verification.
#[derive(Default)]
struct Postings {
    table: HashTable<(u64, Box<[u32]>)>,
}

impl Postings {
    fn build(lists: FxHashMap<u64, Vec<u32>>) -> Postings {
        let mut table = HashTable::with_capacity(lists.len());
        for (hash, mut ids) in lists {
            ids.sort_unstable();
            ids.dedup();
            table.insert_unique(hash, (hash, ids.into_boxed_slice()), |e| e.0);
        }
        Postings { table }
    }

    #[inline]
    fn get(&self, hash: u64) -> Option<&[u32]> {
        if self.table.is_empty() {
            return None;
        }
        self.table.find(hash, |e| e.0 == hash).map(|e| &*e.1)
    }
}

/// The hash of a (source pair, destination pair): a mix of the two pair hashes.
fn quad_hash(from: u64, to: u64) -> u64 {
    crate::runtime::mix64(from ^ to.rotate_left(23))
}

/// Rules anchored on both sides at once: filed under a (source pair, destination pair),
/// so a decision finds only the rules whose two anchors it holds.
#[derive(Default)]
struct PairPostings {
    table: Postings,
    /// The keys used as anchors on each side: only attributes with these keys are probed.
    from_keys: Box<[Box<str>]>,
    to_keys: Box<[Box<str>]>,
}

type PairLists<'a> = FxHashMap<((&'a str, &'a str), (&'a str, &'a str)), Vec<u32>>;

impl PairPostings {
    fn build(lists: PairLists<'_>) -> PairPostings {
        let mut from_keys: Vec<Box<str>> = Vec::new();
        let mut to_keys: Vec<Box<str>> = Vec::new();
        let mut hashed: FxHashMap<u64, Vec<u32>> = FxHashMap::default();
        for ((from, to), ids) in lists {
            if !from_keys.iter().any(|k| **k == *from.0) {
                from_keys.push(from.0.into());
            }
            if !to_keys.iter().any(|k| **k == *to.0) {
                to_keys.push(to.0.into());
            }
            let hash = quad_hash(pair_hash(from.0, from.1), pair_hash(to.0, to.1));
            hashed.entry(hash).or_default().extend(ids);
        }
        PairPostings {
            table: Postings::build(hashed),
            from_keys: from_keys.into(),
            to_keys: to_keys.into(),
        }
    }

    /// Calls `f` with the ids of every posting the two attribute maps hold.
    #[inline]
    fn probe(&self, src: &Attrs<'_>, dst: &Attrs<'_>, mut found_ids: impl FnMut(&[u32])) {
        if self.table.table.is_empty() {
            return;
        }
        for f in src.pairs() {
            if !self.from_keys.iter().any(|k| **k == *f.key) {
                continue;
            }
            for t in dst.pairs() {
                if !self.to_keys.iter().any(|k| **k == *t.key) {
                    continue;
                }
                let found = self.table.get(quad_hash(f.hash, t.hash));
                if let Some(ids) = found {
                    found_ids(ids);
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
    side: &'a [Arc<Selector>],
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

fn count<'a>(side: &'a [Arc<Selector>], freq: &mut FxHashMap<(&'a str, &'a str), u32>) {
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
        let mut from_lists: FxHashMap<u64, Vec<u32>> = FxHashMap::default();
        let mut to_lists: FxHashMap<u64, Vec<u32>> = FxHashMap::default();
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
            for (k, v) in pairs {
                lists.entry(pair_hash(k, v)).or_default().push(id);
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
        for pair in src.pairs() {
            if let Some(ids) = self.from.get(pair.hash) {
                try_ids(ids, &mut best);
            }
        }
        for pair in dst.pairs() {
            if let Some(ids) = self.to.get(pair.hash) {
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
        for pair in src.pairs() {
            if let Some(ids) = self.from.get(pair.hash) {
                out.extend_from_slice(ids);
            }
        }
        for pair in dst.pairs() {
            if let Some(ids) = self.to.get(pair.hash) {
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
