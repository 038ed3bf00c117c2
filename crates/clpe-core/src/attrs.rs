//! Flat attribute maps: what selectors match against (SPEC §2, "Attributes").
//!
//! Each snapshot numbers the attribute keys and the `key=value` pairs its selectors
//! mention ([`Symbols`]). Every attribute pair carries those numbers, found once: at apply
//! time for the inventory's pairs, once per decision for the few the event brings. Rules
//! then match by comparing integers, and the match index files them under pair numbers.

use std::hash::{BuildHasher, Hasher};

use hashbrown::HashTable;
use rustc_hash::{FxBuildHasher, FxHashMap};
use smallvec::SmallVec;
use smol_str::SmolStr;

use crate::selector::{Op, Selector};

/// Well-known attribute keys (ClusterLink v0.4's names).
pub mod keys {
    pub const CLIENT_SERVICE: &str = "client.clusterlink.net/service";
    pub const PEER_NAME: &str = "peer.clusterlink.net/name";
    pub const PEER_LABELS: &str = "peer.clusterlink.net/labels.";
    pub const EXPORT_NAME: &str = "export.clusterlink.net/name";
    pub const EXPORT_NAMESPACE: &str = "export.clusterlink.net/namespace";
    pub const EXPORT_LABELS: &str = "export.clusterlink.net/labels.";
}

/// The numbers of the well-known keys: the same in every snapshot.
pub mod kid {
    pub const CLIENT_SERVICE: u32 = 0;
    pub const PEER_NAME: u32 = 1;
    pub const EXPORT_NAME: u32 = 2;
    pub const EXPORT_NAMESPACE: u32 = 3;
}

const WELL_KNOWN: [&str; 4] = [
    keys::CLIENT_SERVICE,
    keys::PEER_NAME,
    keys::EXPORT_NAME,
    keys::EXPORT_NAMESPACE,
];

/// No number: a key or a pair no selector of the snapshot mentions.
pub const NONE: u32 = u32::MAX;

fn value_hash(kid: u32, value: &str) -> u64 {
    let mut h = FxBuildHasher.build_hasher();
    h.write_u32(kid);
    h.write(value.as_bytes());
    h.finish()
}

/// The keys and pairs a snapshot's selectors mention, numbered. A number, once given,
/// stays with its key or pair in every table extended from this one (see
/// `snapshot::symbols_of`), so indexes built over it stay valid.
#[derive(Clone, Debug)]
pub struct Symbols {
    /// Keys are shared by every pair that names them (see [`Symbols::owned`]).
    keys: FxHashMap<SmolStr, u32>,
    /// (key number, value, pair number); short values are kept inline.
    pairs: HashTable<(u32, SmolStr, u32)>,
    /// The key number of each pair number.
    pair_keys: Vec<u32>,
}

impl Default for Symbols {
    fn default() -> Self {
        let mut keys = FxHashMap::default();
        for (i, k) in WELL_KNOWN.iter().enumerate() {
            keys.insert(SmolStr::new(k), i as u32);
        }
        Symbols {
            keys,
            pairs: HashTable::new(),
            pair_keys: Vec::new(),
        }
    }
}

impl Symbols {
    pub fn intern_key(&mut self, key: &str) -> u32 {
        if let Some(k) = self.keys.get(key) {
            return *k;
        }
        let k = self.keys.len() as u32;
        self.keys.insert(SmolStr::new(key), k);
        k
    }

    pub fn intern_pair(&mut self, key: &str, value: &str) -> u32 {
        let kid = self.intern_key(key);
        let hash = value_hash(kid, value);
        if let Some((_, _, pid)) = self
            .pairs
            .find(hash, |(k, v, _)| *k == kid && **v == *value)
        {
            return *pid;
        }
        let pid = self.pair_keys.len() as u32;
        self.pair_keys.push(kid);
        self.pairs
            .insert_unique(hash, (kid, SmolStr::new(value), pid), |(k, v, _)| {
                value_hash(*k, v)
            });
        pid
    }

    /// Numbers every key and pair a selector mentions.
    pub fn intern_selector(&mut self, sel: &Selector) {
        for (k, v) in sel.labels.iter() {
            self.intern_pair(k, v);
        }
        for r in sel.requirements.iter() {
            self.intern_key(&r.key);
            if let Op::In(values) | Op::NotIn(values) = &r.op {
                for v in values.iter() {
                    self.intern_pair(&r.key, v);
                }
            }
        }
    }

    /// Whether every key and pair a selector mentions is numbered; `note_key` and
    /// `note_pair` are told the number of each that is.
    pub fn numbers(
        &self,
        sel: &Selector,
        note_key: &mut impl FnMut(u32),
        note_pair: &mut impl FnMut(u32),
    ) -> bool {
        let mut all = true;
        let mut key = |k: &str| match self.key(k) {
            NONE => {
                all = false;
                NONE
            }
            kid => {
                note_key(kid);
                kid
            }
        };
        let mut pairs: SmallVec<[(u32, &str); 4]> = SmallVec::new();
        for (k, v) in sel.labels.iter() {
            pairs.push((key(k), v.as_str()));
        }
        for r in sel.requirements.iter() {
            let kid = key(&r.key);
            if let Op::In(values) | Op::NotIn(values) = &r.op {
                pairs.extend(values.iter().map(|v| (kid, &**v)));
            }
        }
        for (kid, value) in pairs {
            match self.pair(kid, value) {
                NONE => all = false,
                pid => note_pair(pid),
            }
        }
        all
    }

    /// How many pairs are numbered.
    pub fn pairs_len(&self) -> usize {
        self.pair_keys.len()
    }

    /// How many keys are numbered.
    pub fn keys_len(&self) -> usize {
        self.keys.len()
    }

    pub fn key(&self, key: &str) -> u32 {
        self.keys.get(key).copied().unwrap_or(NONE)
    }

    pub fn pair(&self, kid: u32, value: &str) -> u32 {
        if kid == NONE || self.pairs.is_empty() {
            return NONE;
        }
        self.pairs
            .find(value_hash(kid, value), |(k, v, _)| {
                *k == kid && crate::names::same(v, value)
            })
            .map_or(NONE, |(_, _, pid)| *pid)
    }

    /// The key number of a pair number.
    pub fn key_of(&self, pid: u32) -> u32 {
        self.pair_keys.get(pid as usize).copied().unwrap_or(NONE)
    }

    /// An owned pair and its numbers (key, pair); its key string is the symbols' own
    /// (shared).
    fn owned(&self, key: &str, value: &str) -> (Pair, (u32, u32)) {
        let (key, kid) = match self.keys.get_key_value(key) {
            Some((k, id)) => (k.clone(), *id),
            None => (SmolStr::new(key), NONE),
        };
        let pid = self.pair(kid, value);
        let pair = Pair {
            key,
            value: SmolStr::new(value),
        };
        (pair, (kid, pid))
    }
}

/// The pair numbers of the well-known keys (indexed by [`kid`]), found in place of a scan:
/// a decision asks for these most. [`ABSENT`] where the map lacks the key.
#[derive(Clone, Copy, Debug)]
struct Known([u32; WELL_KNOWN.len()]);

/// In [`Known`]: the key is not in the map ([`NONE`] there means it holds a value no
/// selector mentions). INVARIANT: every pair number is below this and [`NONE`] (there is
/// one per distinct pair the snapshot's selectors name: far fewer than 2^32 - 2).
const ABSENT: u32 = u32::MAX - 1;

impl Default for Known {
    fn default() -> Self {
        Known([ABSENT; WELL_KNOWN.len()])
    }
}

impl Known {
    /// Notes the pair of a key, unless the key already has one (the first wins).
    fn note(&mut self, kid: u32, pid: u32) {
        if let Some(slot) = self.0.get_mut(kid as usize)
            && *slot == ABSENT
        {
            *slot = pid;
        }
    }

    /// `None`: not a well-known key; `Some(None)`: a well-known key the map lacks.
    #[inline]
    fn get(&self, kid: u32) -> Option<Option<u32>> {
        let pid = *self.0.get(kid as usize)?;
        Some((pid != ABSENT).then_some(pid))
    }
}

/// An owned attribute pair (its numbers are kept beside it, in [`OwnedAttrs`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair {
    pub key: SmolStr,
    pub value: SmolStr,
}

/// The attribute pairs of an inventory item (a peer's name and labels, an export's name,
/// namespace and labels), precomputed at apply time: the strings, and beside them, held
/// inline in the item itself, the numbers matching reads.
///
/// Laid out in the order a decision reads it (`repr(C)`): the well-known keys' numbers,
/// then all the numbers; the strings, which matching does not read, last.
#[derive(Clone, Debug, Default)]
#[repr(C)]
pub struct OwnedAttrs {
    known: Known,
    /// (key number, pair number) of each pair, in the same order.
    ids: SmallVec<[(u32, u32); 6]>,
    pairs: Box<[Pair]>,
}

impl OwnedAttrs {
    fn new(pairs: Box<[Pair]>, ids: SmallVec<[(u32, u32); 6]>) -> OwnedAttrs {
        let mut known = Known::default();
        for &(kid, pid) in &ids {
            known.note(kid, pid);
        }
        OwnedAttrs { pairs, ids, known }
    }

    /// The pairs of several items, in order (their keys must not overlap).
    pub fn concat(parts: &[&OwnedAttrs]) -> OwnedAttrs {
        OwnedAttrs::new(
            parts.iter().flat_map(|p| p.pairs.iter().cloned()).collect(),
            parts.iter().flat_map(|p| p.ids.iter().copied()).collect(),
        )
    }
}

/// A borrowed attribute pair with its numbers.
#[derive(Clone, Copy, Debug)]
pub struct PairRef<'a> {
    pub key: &'a str,
    pub value: &'a str,
    pub kid: u32,
    pub pid: u32,
}

/// An attribute map as a decision sees it: a precomputed slice of the inventory (a peer's
/// pairs, an export's pairs with the local peer's) borrowed whole, and the few pairs the
/// event brings. Built per decision without copying the inventory's pairs.
///
/// INVARIANT: the base's keys are distinct, and distinct from the first pair pushed (the
/// client service); later pushes (`src_attributes`) never override: a pushed pair whose
/// key is numbered and already present is not kept, and lookups by string find the base
/// first. So "the pair with this number is here" means "the key has this value".
#[derive(Clone, Debug, Default)]
pub struct Attrs<'a> {
    base: &'a [Pair],
    /// The base's numbers, read in place.
    ids: &'a [(u32, u32)],
    extra: SmallVec<[PairRef<'a>; 2]>,
    /// The well-known keys' pairs, base and pushed alike.
    known: Known,
}

impl<'a> Attrs<'a> {
    pub fn new() -> Self {
        Self::default()
    }

    /// A map of precomputed pairs.
    pub fn over(base: &'a OwnedAttrs) -> Self {
        Attrs {
            base: &base.pairs,
            ids: &base.ids,
            extra: SmallVec::new(),
            known: base.known,
        }
    }

    /// Pushes a pair the event brings (its numbers looked up in `symbols`).
    pub fn push(&mut self, symbols: &Symbols, key: &'a str, value: &'a str) {
        let kid = symbols.key(key);
        self.push_known(symbols, kid, key, value);
    }

    /// Pushes a pair whose key number is known.
    pub fn push_known(&mut self, symbols: &Symbols, kid: u32, key: &'a str, value: &'a str) {
        if kid != NONE && self.pair_of(kid).is_some() {
            return;
        }
        let pid = symbols.pair(kid, value);
        self.known.note(kid, pid);
        self.extra.push(PairRef {
            key,
            value,
            kid,
            pid,
        });
    }

    /// The value of `key`: the first pair with that key.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.pairs().find(|p| p.key == key).map(|p| p.value)
    }

    /// Whether the map holds the pair numbered `pid`.
    #[inline]
    pub fn has_pair(&self, pid: u32) -> bool {
        self.ids.iter().any(|p| p.1 == pid) || self.extra.iter().any(|p| p.pid == pid)
    }

    /// The pair number of the key numbered `kid`: `None` when the key is absent,
    /// `Some(NONE)` when its value is one no selector mentions.
    #[inline]
    pub fn pair_of(&self, kid: u32) -> Option<u32> {
        if let Some(known) = self.known.get(kid) {
            return known;
        }
        match self.ids.iter().find(|p| p.0 == kid) {
            Some(p) => Some(p.1),
            None => self.extra.iter().find(|p| p.kid == kid).map(|p| p.pid),
        }
    }

    /// The pair number of the key numbered `kid`, [`NONE`] when the key is absent or
    /// its value is one no selector mentions: what a lookup by pair number needs.
    #[inline]
    pub fn pid(&self, kid: u32) -> u32 {
        match self.known.get(kid) {
            Some(known) => known.unwrap_or(NONE),
            None => self.pair_of(kid).unwrap_or(NONE),
        }
    }

    /// Every pair, the base first (numbered keys once; unnumbered ones may repeat, the
    /// first wins).
    pub fn pairs(&self) -> impl Iterator<Item = PairRef<'a>> + '_ {
        self.base
            .iter()
            .zip(self.ids)
            .map(|(p, &(kid, pid))| PairRef {
                key: &p.key,
                value: &p.value,
                kid,
                pid,
            })
            .chain(self.extra.iter().copied())
    }

    pub fn is_empty(&self) -> bool {
        self.base.is_empty() && self.extra.is_empty()
    }

    /// The effective map (shadowed pairs dropped), sorted by key: for traces and WASM guests.
    pub fn to_map(&self) -> std::collections::BTreeMap<String, String> {
        let mut map = std::collections::BTreeMap::new();
        for p in self.pairs() {
            map.entry(p.key.to_owned())
                .or_insert_with(|| p.value.to_owned());
        }
        map
    }
}

/// Builds the owned attribute pairs of a named item with labels under a key prefix.
pub fn owned_with_labels<'l>(
    symbols: &Symbols,
    fixed: &[(&str, &str)],
    label_prefix: &str,
    labels: impl IntoIterator<Item = (&'l String, &'l String)>,
) -> OwnedAttrs {
    let mut pairs = Vec::new();
    let mut ids = SmallVec::new();
    let mut add = |(pair, id)| {
        pairs.push(pair);
        ids.push(id);
    };
    for (k, v) in fixed {
        add(symbols.owned(k, v));
    }
    for (k, v) in labels {
        add(symbols.owned(&format!("{label_prefix}{k}"), v));
    }
    OwnedAttrs::new(pairs.into(), ids)
}
