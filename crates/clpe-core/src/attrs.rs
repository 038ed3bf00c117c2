//! Flat attribute maps: what selectors match against (SPEC §2, "Attributes").

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

/// An owned list of attribute pairs, precomputed at apply time for an inventory item
/// (a peer's name and labels, an export's name, namespace and labels).
pub type OwnedAttrs = Box<[(Box<str>, Box<str>)]>;

/// A borrowed attribute map, built per decision without allocating.
///
/// INVARIANT: pairs pushed first take precedence: the engine pushes the attributes it
/// derives (peer name, labels, client service) before the ones the event gives in
/// `src_attributes`, so an event cannot override them.
#[derive(Clone, Debug, Default)]
pub struct Attrs<'a> {
    pairs: SmallVec<[(&'a str, &'a str); 16]>,
}

impl<'a> Attrs<'a> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, key: &'a str, value: &'a str) {
        self.pairs.push((key, value));
    }

    pub fn extend_owned(&mut self, owned: &'a [(Box<str>, Box<str>)]) {
        self.pairs.extend(owned.iter().map(|(k, v)| (&**k, &**v)));
    }

    /// The value of `key`: the first pair with that key.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    /// Every pair, shadowed ones included (callers that probe indexes re-check with `get`).
    pub fn pairs(&self) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        self.pairs.iter().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The effective map (shadowed pairs dropped), sorted by key: for traces and WASM guests.
    pub fn to_map(&self) -> std::collections::BTreeMap<String, String> {
        let mut map = std::collections::BTreeMap::new();
        for (k, v) in &self.pairs {
            map.entry((*k).to_owned())
                .or_insert_with(|| (*v).to_owned());
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
    let mut out: Vec<(Box<str>, Box<str>)> = fixed
        .iter()
        .map(|(k, v)| (Box::from(*k), Box::from(*v)))
        .collect();
    for (k, v) in labels {
        out.push((format!("{label_prefix}{k}").into(), v.as_str().into()));
    }
    out.into_boxed_slice()
}
