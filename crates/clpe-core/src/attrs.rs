//! Flat attribute maps: what selectors match against (SPEC §2, "Attributes").
//!
//! Every pair carries the hash the match index files it under, computed once: at apply
//! time for the inventory's pairs, once per decision for the event's.

use std::hash::{BuildHasher, Hasher};

use rustc_hash::FxBuildHasher;
use smallvec::SmallVec;

/// Well-known attribute keys (ClusterLink v0.4's names).
pub mod keys {
    pub const CLIENT_SERVICE: &str = "client.clusterlink.net/service";
    pub const PEER_NAME: &str = "peer.clusterlink.net/name";
    pub const PEER_LABELS: &str = "peer.clusterlink.net/labels.";
    pub const EXPORT_NAME: &str = "export.clusterlink.net/name";
    pub const EXPORT_NAMESPACE: &str = "export.clusterlink.net/namespace";
    pub const EXPORT_LABELS: &str = "export.clusterlink.net/labels.";
}

/// The hash of a `key=value` pair, as the match index files it.
pub fn pair_hash(key: &str, value: &str) -> u64 {
    let mut h = FxBuildHasher.build_hasher();
    h.write(key.as_bytes());
    h.write_u8(0xff);
    h.write(value.as_bytes());
    h.finish()
}

/// An owned attribute pair with its hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair {
    pub key: Box<str>,
    pub value: Box<str>,
    pub hash: u64,
}

impl Pair {
    pub fn new(key: &str, value: &str) -> Pair {
        Pair {
            key: key.into(),
            value: value.into(),
            hash: pair_hash(key, value),
        }
    }
}

/// The attribute pairs of an inventory item (a peer's name and labels, an export's name,
/// namespace and labels), precomputed at apply time.
pub type OwnedAttrs = Box<[Pair]>;

/// A borrowed attribute pair with its hash.
#[derive(Clone, Copy, Debug)]
pub struct PairRef<'a> {
    pub key: &'a str,
    pub value: &'a str,
    pub hash: u64,
}

/// A borrowed attribute map, built per decision without allocating.
///
/// INVARIANT: pairs pushed first take precedence: the engine pushes the attributes it
/// derives (peer name, labels, client service) before the ones the event gives in
/// `src_attributes`, so an event cannot override them.
#[derive(Clone, Debug, Default)]
pub struct Attrs<'a> {
    pairs: SmallVec<[PairRef<'a>; 12]>,
}

impl<'a> Attrs<'a> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, key: &'a str, value: &'a str) {
        self.pairs.push(PairRef {
            key,
            value,
            hash: pair_hash(key, value),
        });
    }

    pub fn extend_owned(&mut self, owned: &'a [Pair]) {
        self.pairs.extend(owned.iter().map(|p| PairRef {
            key: &p.key,
            value: &p.value,
            hash: p.hash,
        }));
    }

    /// The value of `key`: the first pair with that key.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.pairs.iter().find(|p| p.key == key).map(|p| p.value)
    }

    /// Every pair, shadowed ones included (callers that probe indexes re-check with `get`).
    pub fn pairs(&self) -> impl Iterator<Item = PairRef<'a>> + '_ {
        self.pairs.iter().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The effective map (shadowed pairs dropped), sorted by key: for traces and WASM guests.
    pub fn to_map(&self) -> std::collections::BTreeMap<String, String> {
        let mut map = std::collections::BTreeMap::new();
        for p in &self.pairs {
            map.entry(p.key.to_owned())
                .or_insert_with(|| p.value.to_owned());
        }
        map
    }
}

/// Builds the owned attribute pairs of a named item with labels under a key prefix.
pub fn owned_with_labels<'l>(
    fixed: &[(&str, &str)],
    label_prefix: &str,
    labels: impl IntoIterator<Item = (&'l String, &'l String)>,
) -> OwnedAttrs {
    let mut out: Vec<Pair> = fixed.iter().map(|(k, v)| Pair::new(k, v)).collect();
    for (k, v) in labels {
        out.push(Pair::new(&format!("{label_prefix}{k}"), v));
    }
    out.into_boxed_slice()
}
