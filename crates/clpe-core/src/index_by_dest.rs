//! Rules found through their destination.
//!
//! An ingress decision's destination side is not made up from the event: it is an
//! export, whose pairs the snapshot already holds. So a rule whose destination side
//! matches only a few exports can be filed with each of them when the index is built, its
//! destination side checked once there: the decision then reads its export's short list
//! (a line or two) and checks only the source sides on it, instead of probing the pair
//! tables for each combination of a source key and a destination key the rules use.
//! Rules that can match many exports (`to: {}`, a label most exports carry), and those of
//! an export more rules match than a list keeps, stay in the pair tables, which find
//! them by source pair.
//!
//! Egress decisions weigh the other way: an import's sources share their export's name,
//! so the pair tables find the rules of all the candidates with one probe, where each
//! candidate would have a list of its own to read (chain-10000: 11% slower through
//! lists). They name no destination, and the index keeps tables over every rule for them
//! where there are Import sources ([`MatchIndex::build_for`]).
//!
//! A destination the index was not built for (none, in the engine) is answered by
//! checking every rule filed here in full: slower, never wrong.

use std::hint::cold_path;

use rustc_hash::FxHashMap;

use super::{CompiledRule, Stored, side_anchors};
use crate::attrs::{Attrs, OwnedAttrs, Symbols};

/// The destinations a decision can name, numbered from `first`, as the snapshot holds
/// their pairs.
#[derive(Clone, Copy)]
pub struct Dests<'a> {
    pub first: u32,
    pub attrs: &'a [&'a OwnedAttrs],
}

/// Most destinations a rule may be filed with: those holding the pairs its destination
/// side cannot match without. Each filing takes 20 bytes; past this the pair tables cost
/// less memory. It also bounds the work of filing: at most this many checks per rule.
const NARROW_MAX: u32 = if cfg!(test) { 2 } else { 16 };

/// Longest list a destination keeps: its rules are checked one by one. A destination
/// that more rules can match keeps none, and those rules stay in the pair tables (which
/// find them by source pair), so no list is long and no rule filed more than it is worth.
const SCAN_MAX: usize = if cfg!(test) { 2 } else { 16 };

/// How a filed rule's source side is checked (the top two bits of [`Near::tagged`]).
const BY_RULE: u32 = 0;
const ANY: u32 = 1 << 30;
const PAIRS: u32 = 2 << 30;
const ID: u32 = (1 << 30) - 1;

/// A rule filed with a destination: its source side held in place when it is nothing, or
/// one selector of one or two pairs (most policies); else read from the index's rule.
#[derive(Clone, Copy, Debug)]
struct Near {
    tagged: u32,
    /// For [`PAIRS`]: both pairs required (a single pair twice), each with its key's
    /// number. The source holds a pair when its key has that pair's number (one value
    /// per numbered key): for the well-known keys, one read in place of a scan.
    keys: [u32; 2],
    pairs: [u32; 2],
}

impl Near {
    fn new(id: u32, rule: &CompiledRule, symbols: &Symbols) -> Near {
        let mut near = Near {
            tagged: id | BY_RULE,
            keys: [0; 2],
            pairs: [0; 2],
        };
        if super::everything(&rule.from) {
            near.tagged = id | ANY;
        } else if let Some((pairs, len @ 1..)) = super::small_side(&rule.from) {
            let [a, b] = pairs;
            near.pairs = [a, if len == 1 { a } else { b }];
            near.keys = near.pairs.map(|p| symbols.key_of(p));
            near.tagged = id | PAIRS;
        }
        near
    }

    fn id(&self) -> u32 {
        self.tagged & ID
    }

    #[inline]
    fn matches(&self, src: &Attrs<'_>, rules: &[Stored]) -> bool {
        match self.tagged & !ID {
            ANY => true,
            PAIRS => {
                let ([ka, kb], [a, b]) = (self.keys, self.pairs);
                src.pid(ka) == a && src.pid(kb) == b
            }
            _ => rules
                .get(self.id() as usize)
                .is_some_and(|r| r.source_matches(src)),
        }
    }
}

/// A destination's rules, ascending: a run of [`ByDest::near`].
#[derive(Clone, Copy, Debug)]
struct Block {
    start: u32,
    len: u32,
}

#[derive(Debug)]
pub(super) struct ByDest {
    /// The number of the first destination.
    first: u32,
    blocks: Box<[Block]>,
    near: Box<[Near]>,
    /// Every rule filed here, ascending.
    filed: Box<[u32]>,
}

impl ByDest {
    /// Files with `dests` the rules whose destination side can match at most
    /// [`NARROW_MAX`] of them, marking those in `filed`; the others are left to the pair
    /// tables.
    pub(super) fn build(
        rules: &[CompiledRule],
        to_freq: &FxHashMap<u32, u32>,
        dests: Dests<'_>,
        symbols: &Symbols,
        filed: &mut [bool],
    ) -> ByDest {
        // How many destinations hold each pair.
        let mut holders: FxHashMap<u32, u32> = FxHashMap::default();
        for attrs in dests.attrs {
            for p in Attrs::over(attrs).pairs() {
                *holders.entry(p.pid).or_default() += 1;
            }
        }
        // The rules to file, by the pairs their destination side cannot match without:
        // those few destinations hold.
        let mut by_pair: FxHashMap<u32, Vec<u32>> = FxHashMap::default();
        filed.fill(false);
        for (id, r) in rules.iter().enumerate() {
            if r.from.is_empty() || r.to.is_empty() {
                continue;
            }
            let Some((_, pairs)) = side_anchors(&r.to, to_freq) else {
                continue;
            };
            let reach: u32 = (pairs.iter())
                .map(|p| holders.get(p).copied().unwrap_or(0))
                .fold(0, u32::saturating_add);
            if reach > NARROW_MAX {
                continue;
            }
            for p in pairs {
                by_pair.entry(p).or_default().push(id as u32);
            }
            if let Some(f) = filed.get_mut(id) {
                *f = true;
            }
        }
        // Each destination's matching rules, ascending; those of a destination with too
        // many stay in the tables.
        let mut lists: Vec<Vec<u32>> = Vec::with_capacity(dests.attrs.len());
        for attrs in dests.attrs {
            let dst = Attrs::over(attrs);
            let mut found: Vec<u32> = Vec::new();
            for p in dst.pairs() {
                for &id in by_pair.get(&p.pid).into_iter().flatten() {
                    let to = rules
                        .get(id as usize)
                        .map(|r| &r.to[..])
                        .unwrap_or_default();
                    if to.iter().any(|s| s.matches(&dst)) {
                        found.push(id);
                    }
                }
            }
            found.sort_unstable();
            found.dedup();
            if found.len() > SCAN_MAX {
                for id in found.drain(..) {
                    if let Some(f) = filed.get_mut(id as usize) {
                        *f = false;
                    }
                }
            }
            lists.push(found);
        }
        let is_filed = |id: &u32| filed.get(*id as usize).copied().unwrap_or(false);
        let mut near = Vec::new();
        let blocks =
            lists
                .into_iter()
                .map(|mut list| {
                    list.retain(is_filed);
                    let start = near.len() as u32;
                    near.extend(list.iter().filter_map(|id| {
                        rules.get(*id as usize).map(|r| Near::new(*id, r, symbols))
                    }));
                    Block {
                        start,
                        len: list.len() as u32,
                    }
                })
                .collect();
        ByDest {
            first: dests.first,
            blocks,
            near: near.into(),
            filed: (0..rules.len() as u32).filter(is_filed).collect(),
        }
    }

    /// The smallest id of a rule filed here that matches `src` and `dst`, the
    /// destination numbered `dest`.
    #[inline]
    pub(super) fn first(
        &self,
        rules: &[Stored],
        src: &Attrs<'_>,
        dst: &Attrs<'_>,
        dest: Option<u32>,
    ) -> Option<u32> {
        let block = dest
            .and_then(|d| d.checked_sub(self.first))
            .and_then(|at| self.blocks.get(at as usize));
        match block {
            Some(Block { start, len }) => {
                let (start, len) = (*start as usize, *len as usize);
                let list = self.near.get(start..start + len).unwrap_or_default();
                list.iter().find(|n| n.matches(src, rules)).map(Near::id)
            }
            None => {
                cold_path();
                self.all(rules, src, dst).next()
            }
        }
    }

    /// Every rule filed here that matches, in full (for the rare callers that want all).
    pub(super) fn all(
        &self,
        rules: &[Stored],
        src: &Attrs<'_>,
        dst: &Attrs<'_>,
    ) -> impl Iterator<Item = u32> {
        self.filed
            .iter()
            .copied()
            .filter(move |id| rules.get(*id as usize).is_some_and(|r| r.matches(src, dst)))
    }

    /// The rules filed here, and the length of each destination's list.
    #[cfg(test)]
    pub(super) fn layout(&self) -> (Vec<u32>, Vec<u32>) {
        let lens = self.blocks.iter().map(|b| b.len);
        (self.filed.to_vec(), lens.collect())
    }
}
