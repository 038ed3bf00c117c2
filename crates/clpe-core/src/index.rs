//! The match index: compiled `from`/`to` rules indexed by the attribute pairs they require.
//!
//! Every policy kind that selects a source and a destination (access, limit and balancing
//! policies) is a [`Rule`]. At build time its selectors are compiled against the
//! snapshot's [`Symbols`] (pairs and keys become numbers), and the rule is filed under
//! the pairs one of its sides cannot match without (a `matchLabels` pair, or each value of
//! an `In`), under a (source pair, destination pair) when both sides have some. A decision
//! probes the postings of the pairs it actually has and checks only the rules found there,
//! plus the few that require nothing indexable (`{}` on both sides, only `NotIn`/`Exists`).
//! A rule that is nothing but the pairs it is filed under is marked exact: finding it is
//! matching it.

use hashbrown::HashTable;
use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use crate::attrs::{Attrs, NONE, Symbols};
use std::sync::Arc;

use crate::selector::{Op, Selector};

#[path = "index_by_dest.rs"]
mod by_dest;
use by_dest::ByDest;
pub use by_dest::Dests;

/// A source side and a destination side, each matching when any of its selectors does.
#[derive(Clone, Debug)]
pub struct Rule {
    pub from: Box<[Arc<Selector>]>,
    pub to: Box<[Arc<Selector>]>,
}

impl Rule {
    /// Matches by strings: the definition the compiled form must agree with.
    pub fn matches(&self, src: &Attrs<'_>, dst: &Attrs<'_>) -> bool {
        self.from.iter().any(|s| s.matches(src)) && self.to.iter().any(|s| s.matches(dst))
    }
}

#[derive(Clone, Debug)]
enum Test {
    In(Box<[u32]>),
    NotIn(Box<[u32]>),
    Exists,
    DoesNotExist,
}

/// A compiled requirement on the key numbered `kid`.
#[derive(Clone, Debug)]
struct Requirement {
    kid: u32,
    test: Test,
}

impl Requirement {
    fn matches(&self, attrs: &Attrs<'_>) -> bool {
        let pair = attrs.pair_of(self.kid);
        match (&self.test, pair) {
            (Test::In(ps), Some(p)) => ps.contains(&p),
            (Test::In(_), None) => false,
            (Test::NotIn(ps), Some(p)) => !ps.contains(&p),
            (Test::NotIn(_), None) => true,
            (Test::Exists, p) => p.is_some(),
            (Test::DoesNotExist, p) => p.is_none(),
        }
    }
}

/// A compiled selector: every pair held, every requirement met.
#[derive(Clone, Debug)]
struct Compiled {
    pairs: SmallVec<[u32; 2]>,
    requirements: Box<[Requirement]>,
}

impl Compiled {
    /// `None` when the selector can match nothing (it names a pair no attribute can
    /// hold: only possible if the symbols miss it).
    fn new(sel: &Selector, symbols: &Symbols) -> Option<Compiled> {
        let mut pairs = SmallVec::new();
        for (k, v) in sel.labels.iter() {
            let pid = symbols.pair(symbols.key(k), v);
            if pid == NONE {
                return None;
            }
            pairs.push(pid);
        }
        let mut requirements = Vec::new();
        for r in sel.requirements.iter() {
            let kid = symbols.key(&r.key);
            let ids = |values: &[Box<str>]| -> Box<[u32]> {
                values
                    .iter()
                    .map(|v| symbols.pair(kid, v))
                    .filter(|p| *p != NONE)
                    .collect()
            };
            let test = match &r.op {
                Op::In(vs) => Test::In(ids(vs)),
                Op::NotIn(vs) => Test::NotIn(ids(vs)),
                Op::Exists => Test::Exists,
                Op::DoesNotExist => Test::DoesNotExist,
            };
            if kid == NONE {
                // A key no attribute can hold: absent everywhere.
                match test {
                    Test::In(_) | Test::Exists => return None,
                    Test::NotIn(_) | Test::DoesNotExist => continue,
                }
            }
            requirements.push(Requirement { kid, test });
        }
        Some(Compiled {
            pairs,
            requirements: requirements.into(),
        })
    }

    #[inline]
    fn matches(&self, attrs: &Attrs<'_>) -> bool {
        self.pairs.iter().all(|p| attrs.has_pair(*p))
            && self.requirements.iter().all(|r| r.matches(attrs))
    }

    fn is_everything(&self) -> bool {
        self.pairs.is_empty() && self.requirements.is_empty()
    }
}

#[derive(Clone, Debug)]
struct CompiledRule {
    from: SmallVec<[Compiled; 1]>,
    to: SmallVec<[Compiled; 1]>,
}

impl CompiledRule {
    #[inline]
    fn matches(&self, src: &Attrs<'_>, dst: &Attrs<'_>) -> bool {
        self.from.iter().any(|s| s.matches(src)) && self.to.iter().any(|s| s.matches(dst))
    }
}

/// A rule as the index keeps it: most policies have one selector a side, each nothing
/// but a pair or two, and those are held in place (no allocation, one cache line for a
/// few rules); the rest are boxed.
#[derive(Clone, Debug)]
enum Stored {
    Pairs {
        from: [u32; 2],
        to: [u32; 2],
        from_len: u8,
        to_len: u8,
    },
    General(Box<CompiledRule>),
}

/// The pairs of a side that is one selector of at most two pairs and nothing else.
fn small_side(side: &[Compiled]) -> Option<([u32; 2], u8)> {
    match side {
        [one] if one.requirements.is_empty() && one.pairs.len() <= 2 => {
            let mut out = [NONE; 2];
            for (slot, p) in out.iter_mut().zip(one.pairs.iter()) {
                *slot = *p;
            }
            Some((out, one.pairs.len() as u8))
        }
        _ => None,
    }
}

impl Stored {
    fn new(rule: CompiledRule) -> Stored {
        match (small_side(&rule.from), small_side(&rule.to)) {
            (Some((from, from_len)), Some((to, to_len))) => Stored::Pairs {
                from,
                to,
                from_len,
                to_len,
            },
            _ => Stored::General(Box::new(rule)),
        }
    }

    #[inline]
    fn matches(&self, src: &Attrs<'_>, dst: &Attrs<'_>) -> bool {
        match self {
            Stored::Pairs {
                from,
                to,
                from_len,
                to_len,
            } => {
                from.iter()
                    .take(usize::from(*from_len))
                    .all(|p| src.has_pair(*p))
                    && to
                        .iter()
                        .take(usize::from(*to_len))
                        .all(|p| dst.has_pair(*p))
            }
            Stored::General(rule) => rule.matches(src, dst),
        }
    }

    /// Whether the source side matches.
    #[inline]
    fn source_matches(&self, src: &Attrs<'_>) -> bool {
        match self {
            Stored::Pairs { from, from_len, .. } => from
                .iter()
                .take(usize::from(*from_len))
                .all(|p| src.has_pair(*p)),
            Stored::General(rule) => rule.from.iter().any(|s| s.matches(src)),
        }
    }
}

/// Set on a posting whose rule matches whenever the posting is found.
const EXACT: u32 = 1 << 31;

/// A posting list's place: the rule itself when it is alone, else a slice of `lists`.
#[derive(Clone, Copy)]
struct Slot {
    key: u64,
    start: u32,
    len: u32,
}

/// Rule ids (ascending, flagged [`EXACT`] where it applies) filed under pair numbers.
///
/// Most probes find nothing. A bit per key hash (16 bits per key, so a few percent of
/// false hits) answers those from a table small enough to stay in cache, so a probe that
/// misses costs no trip to memory even when the table is large.
#[derive(Default)]
struct Postings {
    table: HashTable<Slot>,
    lists: Box<[u32]>,
    filter: Box<[u64]>,
}

fn slot_hash(key: u64) -> u64 {
    crate::runtime::mix64(key)
}

/// The filter word and bit of a hash: bits the table's own probing does not lean on
/// (hashbrown takes the top 7 bits and the low ones).
#[inline]
fn filter_place(hash: u64, mask: usize) -> (usize, u64) {
    let word = (hash >> 20) as usize & mask;
    (word, 1u64 << ((hash >> 14) & 63))
}

impl Postings {
    fn build(mut filed: FxHashMap<u64, Vec<u32>>) -> Postings {
        let mut table = HashTable::with_capacity(filed.len());
        let mut lists = Vec::new();
        for (key, ids) in filed.iter_mut() {
            ids.sort_unstable_by_key(|id| id & !EXACT);
            ids.dedup_by_key(|id| *id & !EXACT);
            let slot = match ids.as_slice() {
                [one] => Slot {
                    key: *key,
                    start: *one,
                    len: 1,
                },
                _ => {
                    let start = lists.len() as u32;
                    lists.extend_from_slice(ids);
                    Slot {
                        key: *key,
                        start,
                        len: ids.len() as u32,
                    }
                }
            };
            table.insert_unique(slot_hash(*key), slot, |s| slot_hash(s.key));
        }
        let words = (filed.len() * 16 / 64).next_power_of_two();
        let mut filter = vec![0u64; words];
        let mask = words - 1;
        for key in filed.keys() {
            let (word, bit) = filter_place(slot_hash(*key), mask);
            if let Some(w) = filter.get_mut(word) {
                *w |= bit;
            }
        }
        Postings {
            table,
            lists: lists.into(),
            filter: filter.into(),
        }
    }

    // One copy for the three tables: inlined at each probe, the copies would take more
    // instruction cache than a decision can spare.
    #[inline(never)]
    fn get(&self, key: u64) -> &[u32] {
        let hash = slot_hash(key);
        let (word, bit) = filter_place(hash, self.filter.len().wrapping_sub(1));
        if self.filter.get(word).is_none_or(|w| w & bit == 0) {
            return &[];
        }
        match self.table.find(hash, |s| s.key == key) {
            Some(s) if s.len == 1 => std::slice::from_ref(&s.start),
            Some(s) => self
                .lists
                .get(s.start as usize..(s.start as usize + s.len as usize))
                .unwrap_or_default(),
            None => &[],
        }
    }
}

/// The key numbers a posting table files under, each once: the plan a decision follows
/// is made of them.
#[derive(Default)]
struct Keys(SmallVec<[u32; 4]>);

impl Keys {
    fn insert(&mut self, kid: u32) {
        if kid != NONE && !self.0.contains(&kid) {
            self.0.push(kid);
        }
    }
}

/// A step of a decision's plan: one lookup (the posting table, and the keys whose pairs
/// make its key), or, for [`Probe::PairsHeld`], one per combination the attributes hold.
#[derive(Clone, Copy, Debug)]
enum Probe {
    /// The source's pair of this key, in `from`.
    From(u32),
    /// The destination's pair of this key, in `to`.
    To(u32),
    /// The source's pair of one key and the destination's of another, in `pairs`.
    Pairs(u32, u32),
    /// Every (source pair, destination pair) of the keys `pairs` files under that both
    /// sides hold: when those keys are too many to list each combination (most of them
    /// absent from any one decision's attributes).
    PairsHeld,
}

/// Most (source key, destination key) combinations the plan lists one by one.
const MAX_PLANNED_PAIRS: usize = 16;

/// Most anchor combinations a rule is filed under in the pair table; past it, one side.
const MAX_PAIRS: usize = 16;

/// Rules indexed for lookup; rule ids are their positions in the list given to `build`.
#[derive(Default)]
pub struct MatchIndex {
    rules: Vec<Stored>,
    /// Every rule, or when rules are also found through their destination
    /// (`by_dest`), the others.
    tables: Tables,
    /// Rules found through the destination a decision names (see [`Dests`]).
    by_dest: Option<Box<ByDest>>,
    /// With `by_dest`: every rule, for decisions that name no destination, if asked for.
    /// Boxed: most indexes (the balancers', the limiters') have none, and an import
    /// holds its balancers' index in place.
    all: Option<Box<Tables>>,
}

/// Posting tables over some of an index's rules.
#[derive(Default)]
struct Tables {
    /// Rules filed under a source pair.
    from: Postings,
    /// Rules filed under a destination pair.
    to: Postings,
    /// Rules filed under a (source pair, destination pair).
    pairs: Postings,
    /// The probes a decision makes: one per key (or pair of keys) the tables file
    /// under, so only those attributes are looked up; or, past [`MAX_PLANNED_PAIRS`]
    /// combinations, the pairs held.
    plan: Box<[Probe]>,
    /// The keys `pairs` files under, source side and destination side: only kept for
    /// [`Probe::PairsHeld`].
    pair_keys: (Box<[u32]>, Box<[u32]>),
    /// Rules with nothing to index on either side; ascending, flagged.
    scan: Box<[u32]>,
}

impl std::fmt::Debug for MatchIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MatchIndex")
            .field("rules", &self.rules.len())
            .field("scan", &self.tables.scan.len())
            .field("by_dest", &self.by_dest.is_some())
            .finish()
    }
}

/// A cost (how many rules share the pairs) and the pair numbers.
type Anchors = (u64, SmallVec<[u32; 2]>);

/// The pairs a selector cannot match without, as alternatives: the selector matches only
/// if the attributes hold one of them.
fn anchors(sel: &Compiled, freq: &FxHashMap<u32, u32>) -> Option<Anchors> {
    let cost_of = |p: &u32| u64::from(freq.get(p).copied().unwrap_or(1));
    let mut best: Option<Anchors> = None;
    let mut consider = |cost: u64, pairs: SmallVec<[u32; 2]>| {
        if best.as_ref().is_none_or(|(c, _)| cost < *c) {
            best = Some((cost, pairs));
        }
    };
    for p in &sel.pairs {
        consider(cost_of(p), smallvec::smallvec![*p]);
    }
    for r in sel.requirements.iter() {
        if let Test::In(ps) = &r.test {
            consider(ps.iter().map(cost_of).sum(), ps.iter().copied().collect());
        }
    }
    best
}

/// The anchors of a whole side: one set per selector, or `None` if some selector has none.
fn side_anchors(side: &[Compiled], freq: &FxHashMap<u32, u32>) -> Option<(u64, Vec<u32>)> {
    let mut cost = 0;
    let mut pairs = Vec::new();
    for sel in side {
        let (c, p) = anchors(sel, freq)?;
        cost += c;
        pairs.extend(p);
    }
    Some((cost, pairs))
}

fn count(side: &[Compiled], freq: &mut FxHashMap<u32, u32>) {
    for sel in side {
        for p in &sel.pairs {
            *freq.entry(*p).or_default() += 1;
        }
        for r in sel.requirements.iter() {
            if let Test::In(ps) = &r.test {
                for p in ps.iter() {
                    *freq.entry(*p).or_default() += 1;
                }
            }
        }
    }
}

/// Whether a side is nothing but the one pair it is filed under.
fn only_pair(side: &[Compiled]) -> bool {
    matches!(side, [one] if one.pairs.len() == 1 && one.requirements.is_empty())
}

fn everything(side: &[Compiled]) -> bool {
    side.iter().any(Compiled::is_everything)
}

fn add_key(keys: &mut Keys, symbols: &Symbols, pid: u32) {
    keys.insert(symbols.key_of(pid));
}

fn pair_key(from: u32, to: u32) -> u64 {
    (u64::from(from) << 32) | u64::from(to)
}

impl MatchIndex {
    pub fn build(rules: Vec<Rule>, symbols: &Symbols) -> MatchIndex {
        MatchIndex::build_for(rules, symbols, None)
    }

    /// An index whose decisions may name their destination among `dests` (see
    /// [`first_match_at`](Self::first_match_at)): rules that match few of them are found
    /// through those. With `anywhere`, decisions that name none are answered as fast as
    /// by an index without `dests` (it keeps tables over every rule for them). Without
    /// destinations (none given, or an empty list), it is the index `build` makes.
    pub fn build_for(
        rules: Vec<Rule>,
        symbols: &Symbols,
        dests: Option<(Dests<'_>, bool)>,
    ) -> MatchIndex {
        let compile = |side: &[Arc<Selector>]| -> SmallVec<[Compiled; 1]> {
            side.iter()
                .filter_map(|s| Compiled::new(s, symbols))
                .collect()
        };
        let compiled: Vec<CompiledRule> = rules
            .iter()
            .map(|r| CompiledRule {
                from: compile(&r.from),
                to: compile(&r.to),
            })
            .collect();
        let mut freq = (FxHashMap::default(), FxHashMap::default());
        for r in &compiled {
            count(&r.from, &mut freq.0);
            count(&r.to, &mut freq.1);
        }
        let mut index = MatchIndex::default();
        let mut filed = vec![false; compiled.len()];
        if let Some((dests, anywhere)) = dests.filter(|(d, _)| !d.attrs.is_empty()) {
            let by_dest = ByDest::build(&compiled, &freq.1, dests, symbols, &mut filed);
            index.by_dest = Some(Box::new(by_dest));
            if anywhere {
                index.all = Some(Box::new(Tables::build(&compiled, symbols, &freq, &[])));
            }
        }
        index.tables = Tables::build(&compiled, symbols, &freq, &filed);
        // A new vector: collecting in place would keep the larger one's capacity.
        let mut stored = Vec::with_capacity(compiled.len());
        stored.extend(compiled.into_iter().map(Stored::new));
        index.rules = stored;
        index
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The tables a decision probes, and what `through` finds through its destination
    /// when those tables do not hold every rule.
    #[inline]
    fn tables_for<T>(
        &self,
        dest: Option<u32>,
        through: impl FnOnce(&ByDest) -> T,
    ) -> (&Tables, Option<T>) {
        match (&self.by_dest, &self.all, dest) {
            (None, _, _) => (&self.tables, None),
            (Some(_), Some(all), None) => (all, None),
            (Some(by_dest), _, _) => (&self.tables, Some(through(by_dest))),
        }
    }

    /// Whether the posting `id` (flags included) matches.
    #[inline]
    fn check(&self, posting: u32, src: &Attrs<'_>, dst: &Attrs<'_>) -> bool {
        posting & EXACT != 0
            || self
                .rules
                .get((posting & !EXACT) as usize)
                .is_some_and(|r| r.matches(src, dst))
    }

    /// The smallest id of a matching rule: rules are listed in precedence order, so this
    /// is the one that decides.
    pub fn first_match(&self, src: &Attrs<'_>, dst: &Attrs<'_>) -> Option<u32> {
        self.first_match_at(src, dst, None)
    }

    /// The same, `dst` being the destination numbered `dest` in the index's [`Dests`],
    /// if the decision names one.
    pub fn first_match_at(
        &self,
        src: &Attrs<'_>,
        dst: &Attrs<'_>,
        dest: Option<u32>,
    ) -> Option<u32> {
        if self.rules.is_empty() {
            return None;
        }
        let (tables, found) = self.tables_for(dest, |b| b.first(&self.rules, src, dst, dest));
        let mut best = found.flatten().unwrap_or(u32::MAX);
        tables.probe(src, dst, |ids| {
            for &posting in ids {
                let id = posting & !EXACT;
                if id >= best {
                    break;
                }
                if self.check(posting, src, dst) {
                    best = id;
                    break;
                }
            }
        });
        (best != u32::MAX).then_some(best)
    }

    /// Every matching rule id, ascending, without duplicates.
    pub fn all_matches(&self, src: &Attrs<'_>, dst: &Attrs<'_>, out: &mut SmallVec<[u32; 8]>) {
        out.clear();
        if self.rules.is_empty() {
            return;
        }
        let (tables, _) = self.tables_for(None, |b| out.extend(b.all(&self.rules, src, dst)));
        tables.probe(src, dst, |ids| {
            out.extend(
                ids.iter()
                    .filter(|p| self.check(**p, src, dst))
                    .map(|p| p & !EXACT),
            )
        });
        out.sort_unstable();
        out.dedup();
    }
}

impl Tables {
    /// Files every rule but those `skip` marks.
    fn build(
        rules: &[CompiledRule],
        symbols: &Symbols,
        (from_freq, to_freq): &(FxHashMap<u32, u32>, FxHashMap<u32, u32>),
        skip: &[bool],
    ) -> Tables {
        let mut index = Tables::default();
        let (mut from_keys, mut to_keys) = (Keys::default(), Keys::default());
        let (mut pair_from_keys, mut pair_to_keys) = (Keys::default(), Keys::default());
        let mut from_lists: FxHashMap<u64, Vec<u32>> = FxHashMap::default();
        let mut to_lists: FxHashMap<u64, Vec<u32>> = FxHashMap::default();
        let mut pair_lists: FxHashMap<u64, Vec<u32>> = FxHashMap::default();
        let mut scan = Vec::new();
        for (id, r) in rules.iter().enumerate() {
            if skip.get(id).copied().unwrap_or(false) {
                continue;
            }
            let id = id as u32;
            if r.from.is_empty() || r.to.is_empty() {
                continue; // a side with no selector left matches nothing
            }
            let f = side_anchors(&r.from, from_freq);
            let t = side_anchors(&r.to, to_freq);
            let exact = |yes: bool| if yes { id | EXACT } else { id };
            if let (Some((_, fp)), Some((_, tp))) = (&f, &t)
                && fp.len() * tp.len() <= MAX_PAIRS
            {
                let posting = exact(only_pair(&r.from) && only_pair(&r.to));
                for a in fp {
                    add_key(&mut pair_from_keys, symbols, *a);
                    for b in tp {
                        add_key(&mut pair_to_keys, symbols, *b);
                        pair_lists
                            .entry(pair_key(*a, *b))
                            .or_default()
                            .push(posting);
                    }
                }
                continue;
            }
            let from_side = match (&f, &t) {
                (Some((fc, _)), Some((tc, _))) => fc <= tc,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => {
                    scan.push(exact(everything(&r.from) && everything(&r.to)));
                    continue;
                }
            };
            let (lists, keys, pairs, posting) = if from_side {
                let posting = exact(only_pair(&r.from) && everything(&r.to));
                let pairs = f.map(|(_, p)| p).unwrap_or_default();
                (&mut from_lists, &mut from_keys, pairs, posting)
            } else {
                let posting = exact(only_pair(&r.to) && everything(&r.from));
                let pairs = t.map(|(_, p)| p).unwrap_or_default();
                (&mut to_lists, &mut to_keys, pairs, posting)
            };
            for p in pairs {
                add_key(keys, symbols, p);
                lists.entry(u64::from(p)).or_default().push(posting);
            }
        }
        index.from = Postings::build(from_lists);
        index.to = Postings::build(to_lists);
        index.pairs = Postings::build(pair_lists);
        index.scan = scan.into();
        let mut plan: Vec<Probe> = Vec::new();
        plan.extend(from_keys.0.iter().map(|k| Probe::From(*k)));
        plan.extend(to_keys.0.iter().map(|k| Probe::To(*k)));
        if pair_from_keys.0.len() * pair_to_keys.0.len() <= MAX_PLANNED_PAIRS {
            for a in &pair_from_keys.0 {
                plan.extend(pair_to_keys.0.iter().map(|b| Probe::Pairs(*a, *b)));
            }
        } else {
            plan.push(Probe::PairsHeld);
            index.pair_keys = (
                pair_from_keys.0.into_iter().collect(),
                pair_to_keys.0.into_iter().collect(),
            );
        }
        index.plan = plan.into();
        index
    }

    /// Calls `found` with every posting list the two attribute maps reach.
    #[inline]
    fn probe<'i>(&'i self, src: &Attrs<'_>, dst: &Attrs<'_>, mut found: impl FnMut(&'i [u32])) {
        found(&self.scan);
        // A key the attributes lack, or hold with a value no selector mentions, files
        // nothing.
        let held = |pid: u32| (pid != NONE).then_some(pid);
        for probe in self.plan.iter() {
            match *probe {
                Probe::From(k) => {
                    if let Some(p) = held(src.pid(k)) {
                        found(self.from.get(u64::from(p)));
                    }
                }
                Probe::To(k) => {
                    if let Some(p) = held(dst.pid(k)) {
                        found(self.to.get(u64::from(p)));
                    }
                }
                Probe::Pairs(a, b) => {
                    if let (Some(f), Some(t)) = (held(src.pid(a)), held(dst.pid(b))) {
                        found(self.pairs.get(pair_key(f, t)));
                    }
                }
                Probe::PairsHeld => {
                    let all = |attrs: &Attrs<'_>, keys: &[u32]| -> SmallVec<[u32; 8]> {
                        keys.iter().filter_map(|k| held(attrs.pid(*k))).collect()
                    };
                    let to = all(dst, &self.pair_keys.1);
                    for f in all(src, &self.pair_keys.0) {
                        for t in &to {
                            found(self.pairs.get(pair_key(f, *t)));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
