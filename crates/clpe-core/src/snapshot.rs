//! The immutable policy snapshot: everything a decision reads, compiled and indexed.
//!
//! A snapshot is built off the hot path whenever a batch is applied, then swapped in
//! whole; decisions never see half a batch. It is built from the whole document set, but
//! keeps what the batch did not change from the snapshot before it: the document set
//! itself (persistent), the numbering, the exports, and each namespace's access index
//! (see `build`). Decisions after the swap then find those where the ones before left
//! them, in cache.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use hashbrown::HashTable;
use rustc_hash::FxHashMap;
use smol_str::SmolStr;

use crate::acl::AclTables;
use crate::agent::Agent;
use crate::attrs::{OwnedAttrs, Symbols, keys, owned_with_labels};
use crate::document::{
    ConnectionLimitSpec, DocKey, Document, FailureMode, ImportSource, Kind, LbSpec, RateLimitSpec,
    Scheme, Spec, Workload,
};
use crate::error::DocError;
use crate::event::{Direction, EventType};
use crate::index::{MatchIndex, Rule};
use crate::limits::Padded;
use crate::names::{AgentName, PeerName, Priority};
use crate::selector::Selector;
use crate::text::Text;

/// The documents in force, in key order. Persistent: a batch clones the set in force in
/// O(1) and changes what it changes, where a `BTreeMap` clone copied every key (10 ms at
/// 125,000 documents, most of a one-policy batch). Each entry is one pointer, the key
/// being the document's own.
#[derive(Clone, Default)]
pub struct Docs(imbl::OrdSet<ByKey>);

/// A document, ordered and found by its key.
#[derive(Clone)]
struct ByKey(Arc<Document>);

impl PartialEq for ByKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.key == other.0.key
    }
}

impl Eq for ByKey {}

impl PartialOrd for ByKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.key.cmp(&other.0.key)
    }
}

impl std::borrow::Borrow<DocKey> for ByKey {
    fn borrow(&self) -> &DocKey {
        &self.0.key
    }
}

impl Docs {
    pub fn new() -> Docs {
        Docs::default()
    }

    pub fn get(&self, key: &DocKey) -> Option<&Arc<Document>> {
        self.0.get(key).map(|d| &d.0)
    }

    pub fn contains_key(&self, key: &DocKey) -> bool {
        self.0.contains(key)
    }

    /// Puts a document under its own key; the one it replaces, if any.
    pub fn insert(&mut self, doc: Arc<Document>) -> Option<Arc<Document>> {
        self.0.insert(ByKey(doc)).map(|d| d.0)
    }

    pub fn remove(&mut self, key: &DocKey) -> Option<Arc<Document>> {
        self.0.remove(key).map(|d| d.0)
    }

    /// Every document, in key order.
    pub fn values(&self) -> impl Iterator<Item = &Arc<Document>> {
        self.0.iter().map(|d| &d.0)
    }

    /// The documents from `from` on, in key order.
    pub fn from_key(&self, from: DocKey) -> impl Iterator<Item = &Arc<Document>> {
        self.0.range::<_, DocKey>(from..).map(|d| &d.0)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A peer of the inventory, with its attributes precomputed.
#[derive(Debug)]
pub struct PeerEntry {
    pub name: PeerName,
    pub labels: BTreeMap<String, String>,
    /// `peer.clusterlink.net/name` and `peer.clusterlink.net/labels.<k>`.
    pub attrs: OwnedAttrs,
    pub reachable: bool,
    /// Where the connections open to this peer are counted (for `least-connections`).
    pub open: crate::limits::PeerRef,
}

/// Laid out in the order a decision reads it (`repr(C)`): the name it is found by, then
/// the attributes' numbers. Aligned to 128 bytes: an entry (120 bytes) is then one
/// aligned pair of cache lines, which the core's adjacent-line prefetcher brings in
/// together, rather than straddling two pairs (acl-10000: 0.950 and 0.970 of the median
/// unaligned, 16 and 12 alternating pairs; acl-100 and acl-100000 unchanged).
#[derive(Debug)]
#[repr(C, align(128))]
pub struct ExportEntry {
    /// `namespace/name`: inline (up to 23 bytes), so finding an export reads no other
    /// allocation.
    pub reference: SmolStr,
    /// Its number among the snapshot's exports (see [`Destinations`]).
    pub dest: u32,
    /// Where the name starts in `reference` (names are far shorter than 4 GiB).
    name_at: u32,
    /// `export.clusterlink.net/name`, `.../namespace` and `.../labels.<k>`, then the local
    /// peer's name and labels: the destination side of an ingress connection.
    pub attrs: OwnedAttrs,
}

impl ExportEntry {
    pub fn namespace(&self) -> &str {
        self.reference
            .get(..(self.name_at as usize).saturating_sub(1))
            .unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.reference
            .get(self.name_at as usize..)
            .unwrap_or_default()
    }
}

/// The local Exports, found by namespace and name with one hash and one probe (a decision
/// looks one up for every ingress connection).
#[derive(Default)]
pub struct Exports {
    table: HashTable<ExportEntry>,
}

impl std::fmt::Debug for Exports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

fn export_hash(namespace: &str, name: &str) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = rustc_hash::FxBuildHasher.build_hasher();
    h.write(namespace.as_bytes());
    h.write_u8(b'/');
    h.write(name.as_bytes());
    h.finish()
}

impl ExportEntry {
    /// Whether this is `namespace/name`: the reference, as long as both and the slash,
    /// starts with the one, then the slash, and ends with the other.
    fn is(&self, namespace: &str, name: &str) -> bool {
        let r = self.reference.as_bytes();
        let (ns, slash) = (namespace.len(), namespace.len() + 1);
        let same = crate::names::same_bytes;
        r.len() == slash + name.len()
            && r.get(ns) == Some(&b'/')
            && r.get(..ns).is_some_and(|n| same(n, namespace.as_bytes()))
            && r.get(slash..).is_some_and(|n| same(n, name.as_bytes()))
    }
}

impl Exports {
    pub fn get(&self, namespace: &str, name: &str) -> Option<&ExportEntry> {
        let eq = |e: &ExportEntry| e.is(namespace, name);
        self.table.find(export_hash(namespace, name), eq)
    }

    /// Adds (or replaces) the export `namespace/name`.
    fn insert(&mut self, namespace: &str, name: &str, attrs: OwnedAttrs, dest: u32) {
        let entry = ExportEntry {
            reference: smol_str::format_smolstr!("{namespace}/{name}"),
            dest,
            name_at: u32::try_from(namespace.len() + 1).unwrap_or(u32::MAX),
            attrs,
        };
        let hash = export_hash(namespace, name);
        match self.table.find_mut(hash, |e| e.is(namespace, name)) {
            Some(old) => *old = entry,
            None => {
                let rehash = |e: &ExportEntry| export_hash(e.namespace(), e.name());
                self.table.insert_unique(hash, entry, rehash);
            }
        }
    }

    /// Every export, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &ExportEntry> {
        self.table.iter()
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

/// The exports' destination sides, by number, for the access policies' index: exports
/// are numbered in document order, so a namespace's are one run of numbers.
pub struct Destinations<'a> {
    pub exports: Vec<&'a OwnedAttrs>,
    /// Each namespace's exports' numbers.
    pub ranges: FxHashMap<SmolStr, std::ops::Range<u32>>,
    /// The namespaces with Import sources (the destinations of egress decisions).
    pub egress: rustc_hash::FxHashSet<SmolStr>,
}

#[derive(Debug)]
pub struct SourceEntry {
    pub source: ImportSource,
    /// `None` when the peer is not in the inventory: then it is not a candidate.
    pub peer: Option<Arc<PeerEntry>>,
    /// `export.clusterlink.net/name` and `.../namespace` from the source, the Import's
    /// `export.clusterlink.net/labels.<k>`, then the peer's name and labels: the
    /// destination side of an egress connection to this source.
    pub attrs: OwnedAttrs,
}

/// A balancing counter (round-robin's position, the next random draw), on lines of its
/// own: it is written on every pick, by every deciding thread, and a line it shared with
/// the snapshot's read-only data would be taken from every other core each time.
pub type Counter = Padded<AtomicU64>;

#[derive(Debug)]
pub struct ImportEntry {
    pub key: DocKey,
    pub namespace: SmolStr,
    pub sources: Vec<SourceEntry>,
    pub scheme: Scheme,
    pub counter: Arc<Counter>,
    /// `consistent-hash`'s memory of which key went where.
    pub sticky: Arc<crate::lb::Sticky>,
    /// Names this Import's random sequence (its reference, hashed).
    pub salt: u64,
    /// The balancing policies for this import, by name, with the index of their `from`.
    pub lb_policies: Vec<LbEntry>,
    pub lb_index: MatchIndex,
}

#[derive(Debug)]
pub struct LbEntry {
    pub matched_by: Text,
    pub spec: Arc<LbSpec>,
    pub counter: Arc<Counter>,
    pub sticky: Arc<crate::lb::Sticky>,
    /// Names this policy's random sequence (its reference, hashed).
    pub salt: u64,
}

#[derive(Debug)]
pub struct ConnLimitEntry {
    pub name: Text,
    pub spec: Arc<ConnectionLimitSpec>,
}

#[derive(Debug)]
pub struct RateLimitEntry {
    pub name: Text,
    pub spec: Arc<RateLimitSpec>,
    /// GCRA emission interval, nanoseconds (at least 1).
    pub interval: u64,
}

/// One event type's chain as decisions run it: the links with work for an event going
/// each way, the others left out (see [`Agent::idle`]), and the links that observe.
/// Worked out once per snapshot: a decision calls no agent only to hear `Continue`.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// For an ingress event or one without a direction, then for an egress one.
    runs: [Vec<Link>; 2],
    pub observers: Vec<Link>,
}

impl Plan {
    fn of(snapshot: &Snapshot, event: EventType) -> Plan {
        let chain = snapshot.chain(event);
        let directions = match event {
            EventType::NewConnection => [Some(Direction::Ingress), Some(Direction::Egress)],
            _ => [None, None],
        };
        let runs = |direction| {
            (chain.iter())
                .filter(|l| !l.agent.idle(snapshot, event, direction))
                .cloned()
                .collect()
        };
        Plan {
            runs: directions.map(runs),
            observers: chain
                .iter()
                .filter(|l| l.agent.observes())
                .cloned()
                .collect(),
        }
    }

    /// The links an event going `direction` runs.
    pub fn runs(&self, direction: Option<Direction>) -> &[Link] {
        let at = usize::from(direction == Some(Direction::Egress));
        self.runs.get(at).map(Vec::as_slice).unwrap_or_default()
    }
}

/// One agent in an event's chain.
#[derive(Clone)]
pub struct Link {
    pub subscription: Arc<str>,
    /// The agent's name, with an origin: what the monitor counts the agent by.
    pub agent_name: Text,
    pub agent: Arc<dyn Agent>,
    pub priority: Priority,
    pub failure_mode: FailureMode,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}@{}({})",
            self.agent_name, self.priority, self.subscription
        )
    }
}

/// A loaded WASM agent and the document (canonical JSON) it was loaded from.
pub type LoadedAgent = (crate::document::Canonical, Arc<dyn Agent>);

pub struct Snapshot {
    pub revision: u64,
    pub docs: Docs,
    /// The keys and pairs the selectors mention, numbered (see [`crate::attrs`]).
    pub symbols: Arc<Symbols>,
    pub local_peer: PeerName,
    pub peers: FxHashMap<PeerName, Arc<PeerEntry>>,
    /// Peers sorted by name, for `ExposeService` answers.
    pub peer_order: Vec<Arc<PeerEntry>>,
    /// The local peer's entry when the inventory has it (its labels are attributes).
    pub local: Option<Arc<PeerEntry>>,
    /// The local peer's name as attributes, when the inventory does not have it.
    pub local_attrs: OwnedAttrs,
    pub exports: Arc<Exports>,
    /// namespace → name → import.
    pub imports: FxHashMap<SmolStr, FxHashMap<SmolStr, Arc<ImportEntry>>>,
    pub acl: AclTables,
    pub conn_limits: Vec<ConnLimitEntry>,
    pub conn_index: MatchIndex,
    pub rate_limits: Vec<RateLimitEntry>,
    pub rate_index: MatchIndex,
    /// Per event type, the chain in ascending priority.
    pub chains: [Vec<Link>; 4],
    /// Per event type, the chain as decisions run it (see [`Plan`]).
    pub plans: [Plan; 4],
    /// Loaded WASM agents by name, kept so an unchanged document is not compiled again.
    pub wasm: FxHashMap<SmolStr, LoadedAgent>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("revision", &self.revision)
            .field("docs", &self.docs.len())
            .finish()
    }
}

impl Snapshot {
    /// No documents at all (not even subscriptions).
    pub fn empty(local_peer: &PeerName) -> Snapshot {
        Snapshot {
            revision: 0,
            docs: Docs::new(),
            local_peer: local_peer.clone(),
            peers: FxHashMap::default(),
            peer_order: Vec::new(),
            local: None,
            local_attrs: peer_attrs(&Symbols::default(), local_peer.as_str(), &BTreeMap::new()),
            symbols: Arc::default(),
            exports: Arc::default(),
            imports: FxHashMap::default(),
            acl: AclTables::default(),
            conn_limits: Vec::new(),
            conn_index: MatchIndex::default(),
            rate_limits: Vec::new(),
            rate_index: MatchIndex::default(),
            chains: Default::default(),
            plans: Default::default(),
            wasm: FxHashMap::default(),
        }
    }

    pub fn export(&self, namespace: &str, name: &str) -> Option<&ExportEntry> {
        self.exports.get(namespace, name)
    }

    pub fn import(&self, namespace: &str, name: &str) -> Option<&Arc<ImportEntry>> {
        self.imports.get(namespace)?.get(name)
    }

    pub fn chain(&self, event: EventType) -> &[Link] {
        self.chains
            .get(event.index())
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    pub fn plan(&self, event: EventType) -> &Plan {
        static NONE: Plan = Plan {
            runs: [Vec::new(), Vec::new()],
            observers: Vec::new(),
        };
        self.plans.get(event.index()).unwrap_or(&NONE)
    }

    /// The local peer's attributes (name, and labels when the inventory has it).
    pub fn local_attrs(&self) -> &OwnedAttrs {
        match &self.local {
            Some(p) => &p.attrs,
            None => &self.local_attrs,
        }
    }
}

/// What building a snapshot needs besides the documents.
pub struct BuildEnv<'a> {
    pub local_peer: &'a PeerName,
    pub builtins: &'a [(AgentName, Arc<dyn Agent>)],
    pub loader: Option<&'a dyn crate::agent::AgentLoader>,
    /// Where each peer's open connections are counted.
    pub connections: &'a crate::limits::Connections,
}

/// Why a document set cannot be built: the documents at fault.
pub enum BuildError {
    /// A document refers to something missing (a WorkloadSet, an agent), or a module is bad.
    Invalid(DocError),
    /// Two subscriptions contradict each other.
    Conflict(DocError),
}

pub fn peer_attrs(symbols: &Symbols, name: &str, labels: &BTreeMap<String, String>) -> OwnedAttrs {
    owned_with_labels(
        symbols,
        &[(keys::PEER_NAME, name)],
        keys::PEER_LABELS,
        labels,
    )
}

/// How a snapshot's numbering relates to the one before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Numbering {
    /// The very same table: everything read with it reads the same.
    Same,
    /// Extended: every number given before means what it meant (indexes built over the
    /// old table stay valid), but pairs were added, so attributes numbered with the old
    /// one may lack some.
    Extended,
    /// Numbered afresh.
    Fresh,
}

/// Numbers every key and pair the documents mention: with the earlier snapshot's table
/// where it numbers them all, else continuing its numbering, else afresh when most of
/// the numbers it carries are of pairs no document mentions any more (so that a table
/// never grows without bound).
fn symbols_of(
    docs: &Docs,
    earlier: Option<&Arc<Symbols>>,
    diff: Option<&Diff<'_>>,
) -> (Arc<Symbols>, Numbering) {
    if let Some(earlier) = earlier {
        // The earlier table numbers what the earlier documents mention: when the batch is
        // known and its new documents mention nothing else, it is kept as it is (it
        // does not grow: nothing to count).
        if let Some(diff) = diff {
            let mut all = true;
            for doc in diff.new_docs() {
                mentions_of(doc, &mut |item| match item {
                    Mention::Selector(sel) => all &= earlier.numbers(sel, &mut |_| {}, &mut |_| {}),
                    Mention::Key(key) => all &= earlier.key(&key) != crate::attrs::NONE,
                });
            }
            if all {
                return (earlier.clone(), Numbering::Same);
            }
        }
        // Else: what of the earlier table is still mentioned, keys and pairs.
        let live = |len: usize| {
            let mut seen = vec![false; len];
            let mut count = 0;
            move |id: u32| {
                if let Some(s) = seen.get_mut(id as usize)
                    && !*s
                {
                    *s = true;
                    count += 1;
                }
                count
            }
        };
        let (mut keys, mut pairs) = (live(earlier.keys_len()), live(earlier.pairs_len()));
        let (mut live_keys, mut live_pairs) = (0, 0);
        let mut all = true;
        mentions(docs, &mut |item| match item {
            Mention::Selector(sel) => {
                all &= earlier.numbers(sel, &mut |k| live_keys = keys(k), &mut |p| {
                    live_pairs = pairs(p)
                });
            }
            Mention::Key(key) => match earlier.key(&key) {
                crate::attrs::NONE => all = false,
                k => live_keys = keys(k),
            },
        });
        let (symbols, numbering) = match all {
            true => (earlier.clone(), Numbering::Same),
            false => {
                let mut symbols = Symbols::clone(earlier);
                intern(&mut symbols, docs);
                (Arc::new(symbols), Numbering::Extended)
            }
        };
        // What was added is live too.
        let live_keys = live_keys + (symbols.keys_len() - earlier.keys_len());
        let live_pairs = live_pairs + (symbols.pairs_len() - earlier.pairs_len());
        if symbols.keys_len() <= 2 * live_keys + STALE
            && symbols.pairs_len() <= 2 * live_pairs + STALE
        {
            return (symbols, numbering);
        }
    }
    let mut symbols = Symbols::default();
    intern(&mut symbols, docs);
    (Arc::new(symbols), Numbering::Fresh)
}

/// Keys, and pairs, no document mentions that a table carried over may hold beyond as
/// many as it has live ones.
const STALE: usize = 1024;

fn intern(symbols: &mut Symbols, docs: &Docs) {
    mentions(docs, &mut |item| match item {
        Mention::Selector(sel) => symbols.intern_selector(sel),
        Mention::Key(key) => {
            symbols.intern_key(&key);
        }
    });
}

/// What the documents mention that is numbered.
enum Mention<'d> {
    Selector(&'d Selector),
    /// An inventory label's key (numbered too, so every pair shares its key string).
    Key(String),
}

fn mentions<'d>(docs: &'d Docs, visit: &mut impl FnMut(Mention<'d>)) {
    for doc in docs.values() {
        mentions_of(doc, visit);
    }
}

fn mentions_of<'d>(doc: &'d Document, visit: &mut impl FnMut(Mention<'d>)) {
    let (from, to): (&[Workload], &[Workload]) = match &doc.spec {
        Spec::Access(s) => (&s.from, &s.to),
        Spec::ConnectionLimit(s) => (&s.from, &s.to),
        Spec::RateLimit(s) => (&s.from, &s.to),
        Spec::LoadBalancing(s) => (&s.from, &[]),
        Spec::WorkloadSet(s) => {
            for sel in s.selectors.iter() {
                visit(Mention::Selector(sel));
            }
            return;
        }
        Spec::Peer(_) | Spec::Export | Spec::Import(_) => {
            let prefix = match doc.spec {
                Spec::Peer(_) => keys::PEER_LABELS,
                _ => keys::EXPORT_LABELS,
            };
            for k in doc.labels.keys() {
                visit(Mention::Key(format!("{prefix}{k}")));
            }
            return;
        }
        _ => return,
    };
    for item in from.iter().chain(to) {
        if let Workload::Selector(s) = item {
            visit(Mention::Selector(s));
        }
    }
}

/// What differs between the earlier snapshot's documents and a new set: the keys a
/// batch put or deleted, and their kinds and (kind, namespace)s (a check then costs
/// nothing). A build from stored documents has none: it keeps nothing.
struct Diff<'a> {
    docs: &'a Docs,
    keys: rustc_hash::FxHashSet<&'a DocKey>,
    kinds: rustc_hash::FxHashSet<Kind>,
    spaces: rustc_hash::FxHashSet<(Kind, &'a str)>,
}

impl<'a> Diff<'a> {
    fn new(docs: &'a Docs, changed: &'a [DocKey]) -> Diff<'a> {
        Diff {
            docs,
            keys: changed.iter().collect(),
            kinds: changed.iter().map(|k| k.kind).collect(),
            spaces: (changed.iter())
                .map(|k| (k.kind, k.namespace.as_str()))
                .collect(),
        }
    }

    /// Whether `kind`'s documents in `namespace` (in every one, for `None`) are the very
    /// same documents.
    fn same(&self, kind: Kind, namespace: Option<&str>) -> bool {
        match namespace {
            None => !self.kinds.contains(&kind),
            Some(n) => !self.spaces.contains(&(kind, n)),
        }
    }

    /// Whether the document of `key` (or its absence) is the same.
    fn same_doc(&self, key: &DocKey) -> bool {
        !self.keys.contains(key)
    }

    /// The documents the batch put.
    fn new_docs(&self) -> impl Iterator<Item = &'a Arc<Document>> + '_ {
        self.keys.iter().filter_map(|k| self.docs.get(k))
    }
}

/// Resolves `from`/`to` items into selectors (WorkloadSets expanded).
fn selectors(
    items: &[Workload],
    sets: &FxHashMap<&str, &[Arc<Selector>]>,
    doc: &Document,
    field: &str,
) -> Result<Box<[Arc<Selector>]>, DocError> {
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item {
            Workload::Selector(s) => out.push(s.clone()),
            Workload::Sets(names) => {
                for (j, name) in names.iter().enumerate() {
                    let Some(sels) = sets.get(&**name) else {
                        return Err(doc.error(
                            &format!("{field}[{i}].workloadSets[{j}]"),
                            format!("WorkloadSet `{name}` does not exist"),
                        ));
                    };
                    out.extend(sels.iter().cloned());
                }
            }
        }
    }
    Ok(out.into())
}

/// Builds the snapshot of `docs`, keeping what it can of `prev`'s. `changed`: the keys
/// put or deleted since `prev`, when the caller knows them (without them nothing is kept
/// but the numbering, if it still fits).
pub fn build(
    docs: Docs,
    revision: u64,
    prev: Option<&Snapshot>,
    changed: Option<&[DocKey]>,
    env: &BuildEnv<'_>,
) -> Result<Snapshot, BuildError> {
    let invalid = BuildError::Invalid;
    let mut sets: FxHashMap<&str, &[Arc<Selector>]> = FxHashMap::default();
    for doc in list(&docs, Kind::WorkloadSet) {
        if let Spec::WorkloadSet(s) = &doc.spec {
            sets.insert(&doc.key.name, &s.selectors);
        }
    }

    let diff = prev.and(changed).map(|c| Diff::new(&docs, c));
    let (symbols, numbering) = symbols_of(&docs, prev.map(|p| &p.symbols), diff.as_ref());
    // Whether the local peer is the same document (or absent from both): every export's
    // attributes carry its name and labels.
    let local_key = DocKey::new(Kind::Peer, None, env.local_peer.as_str());
    let same_local = diff.as_ref().is_some_and(|d| d.same_doc(&local_key));

    // Inventory.
    let mut peers: FxHashMap<PeerName, Arc<PeerEntry>> = FxHashMap::default();
    {
        for doc in list(&docs, Kind::Peer) {
            if let Spec::Peer(p) = &doc.spec {
                let name = PeerName::from(&*doc.key.name);
                let open = env.connections.peer(&name);
                let entry = PeerEntry {
                    attrs: peer_attrs(&symbols, name.as_str(), &doc.labels),
                    labels: doc.labels.clone(),
                    reachable: p.reachable,
                    open,
                    name: name.clone(),
                };
                peers.insert(name, Arc::new(entry));
            }
        }
    }
    let mut peer_order: Vec<Arc<PeerEntry>> = peers.values().cloned().collect();
    peer_order.sort_by(|a, b| a.name.cmp(&b.name));
    let local = peers.get(env.local_peer).cloned();
    let local_attrs = match &local {
        Some(p) => p.attrs.clone(),
        None => peer_attrs(&symbols, env.local_peer.as_str(), &BTreeMap::new()),
    };

    // The exports: the earlier snapshot's table while what it was built from is the same
    // (decisions after the swap then find it where the ones before left it, in cache).
    let kept_exports = prev.filter(|_| {
        numbering == Numbering::Same
            && same_local
            && diff.as_ref().is_some_and(|d| d.same(Kind::Export, None))
    });
    let exports = match kept_exports {
        Some(p) => p.exports.clone(),
        None => {
            let mut exports = Exports::default();
            for (dest, doc) in (0u32..).zip(list(&docs, Kind::Export)) {
                let own = owned_with_labels(
                    &symbols,
                    &[
                        (keys::EXPORT_NAME, &doc.key.name),
                        (keys::EXPORT_NAMESPACE, &doc.key.namespace),
                    ],
                    keys::EXPORT_LABELS,
                    &doc.labels,
                );
                let attrs = OwnedAttrs::concat(&[&own, &local_attrs]);
                exports.insert(&doc.key.namespace, &doc.key.name, attrs, dest);
            }
            Arc::new(exports)
        }
    };
    let export_count = exports.len() as u32;
    let mut lb_by_import: FxHashMap<(SmolStr, SmolStr), Vec<&Document>> = FxHashMap::default();
    for doc in list(&docs, Kind::LoadBalancingPolicy) {
        if let Spec::LoadBalancing(lb) = &doc.spec {
            lb_by_import
                .entry((doc.key.namespace.clone(), SmolStr::new(lb.import.as_str())))
                .or_default()
                .push(doc);
        }
    }

    let mut imports: FxHashMap<SmolStr, FxHashMap<SmolStr, Arc<ImportEntry>>> =
        FxHashMap::default();
    for doc in list(&docs, Kind::Import) {
        let Spec::Import(spec) = &doc.spec else {
            continue;
        };
        let prev_import = prev.and_then(|p| p.import(&doc.key.namespace, &doc.key.name));
        let label_attrs = owned_with_labels(&symbols, &[], keys::EXPORT_LABELS, &doc.labels);
        let sources = spec
            .sources
            .iter()
            .map(|s| {
                let peer = peers.get(&s.peer).cloned();
                let own = owned_with_labels(
                    &symbols,
                    &[
                        (keys::EXPORT_NAME, s.export_name.as_str()),
                        (keys::EXPORT_NAMESPACE, s.export_namespace.as_str()),
                    ],
                    keys::EXPORT_LABELS,
                    std::iter::empty(),
                );
                let attrs = match &peer {
                    Some(p) => OwnedAttrs::concat(&[&own, &label_attrs, &p.attrs]),
                    None => OwnedAttrs::concat(&[&own, &label_attrs]),
                };
                SourceEntry {
                    peer,
                    attrs,
                    source: s.clone(),
                }
            })
            .collect();
        let mut lb_policies = Vec::new();
        let mut lb_rules = Vec::new();
        // BTreeMap order: the balancing policies of this import come sorted by name.
        for lb_doc in lb_by_import
            .get(&(doc.key.namespace.clone(), doc.key.name.clone()))
            .into_iter()
            .flatten()
        {
            let Spec::LoadBalancing(lb) = &lb_doc.spec else {
                continue;
            };
            let from = selectors(&lb.from, &sets, lb_doc, "spec.from").map_err(invalid)?;
            let matched_by = Text::named(&lb_doc.key.reference());
            let earlier =
                prev_import.and_then(|p| p.lb_policies.iter().find(|e| e.matched_by == matched_by));
            let counter = earlier.map(|e| e.counter.clone()).unwrap_or_default();
            let sticky = earlier.map(|e| e.sticky.clone()).unwrap_or_default();
            lb_rules.push(Rule {
                from,
                to: Box::new([Arc::new(Selector::everything())]),
            });
            lb_policies.push(LbEntry {
                salt: crate::runtime::stable_hash(&[matched_by.as_str()]),
                matched_by,
                spec: lb.clone(),
                counter,
                sticky,
            });
        }
        let entry = ImportEntry {
            key: doc.key.clone(),
            namespace: doc.key.namespace.clone(),
            sources,
            scheme: spec.lb_scheme,
            counter: prev_import.map(|p| p.counter.clone()).unwrap_or_default(),
            sticky: prev_import.map(|p| p.sticky.clone()).unwrap_or_default(),
            salt: crate::runtime::stable_hash(&[&doc.key.reference()]),
            lb_policies,
            lb_index: MatchIndex::build(lb_rules, &symbols),
        };
        imports
            .entry(doc.key.namespace.clone())
            .or_default()
            .insert(doc.key.name.clone(), Arc::new(entry));
    }

    // Policies.
    let empty = OwnedAttrs::default();
    let mut dests = Destinations {
        exports: vec![&empty; export_count as usize],
        ranges: FxHashMap::default(),
        egress: (imports.iter())
            .filter(|(_, by_name)| by_name.values().any(|i| !i.sources.is_empty()))
            .map(|(ns, _)| ns.clone())
            .collect(),
    };
    for export in exports.iter() {
        if let Some(slot) = dests.exports.get_mut(export.dest as usize) {
            *slot = &export.attrs;
        }
        let at = export.dest;
        let range = (dests.ranges)
            .entry(SmolStr::new(export.namespace()))
            .or_insert(at..at + 1);
        *range = range.start.min(at)..range.end.max(at + 1);
    }
    // The access tables keep the earlier snapshot's index of a tier or namespace whose
    // policies and exports are the very documents it was built from, read the same way:
    // the same numbering, WorkloadSets and local peer.
    let earlier = prev.filter(|_| {
        numbering != Numbering::Fresh
            && same_local
            && diff
                .as_ref()
                .is_some_and(|d| d.same(Kind::WorkloadSet, None))
    });
    let unchanged = |namespace: Option<&str>| {
        let policies = match namespace {
            None => Kind::PrivilegedAccessPolicy,
            Some(_) => Kind::AccessPolicy,
        };
        diff.as_ref()
            .is_some_and(|d| d.same(policies, namespace) && d.same(Kind::Export, namespace))
    };
    let earlier = earlier.map(|p| crate::acl::Earlier {
        tables: &p.acl,
        unchanged: &unchanged,
    });
    let acl =
        AclTables::build(&docs, &sets, selectors, &symbols, &dests, earlier).map_err(invalid)?;
    drop(dests);
    let mut conn_limits = Vec::new();
    let mut conn_rules = Vec::new();
    let mut rate_limits = Vec::new();
    let mut rate_rules = Vec::new();
    for doc in list(&docs, Kind::ConnectionLimitPolicy).chain(list(&docs, Kind::RateLimitPolicy)) {
        match &doc.spec {
            Spec::ConnectionLimit(spec) => {
                conn_rules.push(Rule {
                    from: selectors(&spec.from, &sets, doc, "spec.from").map_err(invalid)?,
                    to: selectors(&spec.to, &sets, doc, "spec.to").map_err(invalid)?,
                });
                conn_limits.push(ConnLimitEntry {
                    name: Text::named(&doc.key.reference()),
                    spec: spec.clone(),
                });
            }
            Spec::RateLimit(spec) => {
                rate_rules.push(Rule {
                    from: selectors(&spec.from, &sets, doc, "spec.from").map_err(invalid)?,
                    to: selectors(&spec.to, &sets, doc, "spec.to").map_err(invalid)?,
                });
                let interval = (1e9 / spec.connections_per_second).round().max(1.0) as u64;
                rate_limits.push(RateLimitEntry {
                    name: Text::named(&doc.key.reference()),
                    spec: spec.clone(),
                    interval,
                });
            }
            _ => {}
        }
    }

    // Agents and chains.
    let mut wasm: FxHashMap<SmolStr, LoadedAgent> = FxHashMap::default();
    for doc in list(&docs, Kind::WasmAgent) {
        let Spec::WasmAgent(spec) = &doc.spec else {
            continue;
        };
        if env
            .builtins
            .iter()
            .any(|(n, _)| n.as_str() == &*doc.key.name)
        {
            return Err(invalid(doc.error(
                "metadata.name",
                format!("`{}` is the name of a built-in agent", doc.key.name),
            )));
        }
        let reuse = prev
            .and_then(|p| p.wasm.get(&doc.key.name))
            .filter(|(raw, _)| *raw == doc.raw);
        let agent = match reuse {
            Some((_, agent)) => agent.clone(),
            None => {
                let Some(loader) = env.loader else {
                    return Err(invalid(
                        doc.error("", "this build of clpe cannot load WASM agents"),
                    ));
                };
                let name = AgentName::from(&*doc.key.name);
                loader
                    .load(&name, spec)
                    .map_err(|m| invalid(doc.error("spec.module", m)))?
            }
        };
        wasm.insert(doc.key.name.clone(), (doc.raw.clone(), agent));
    }
    let mut chains: [Vec<Link>; 4] = Default::default();
    for doc in list(&docs, Kind::Subscription) {
        let Spec::Subscription(sub) = &doc.spec else {
            continue;
        };
        let agent = env
            .builtins
            .iter()
            .find(|(n, _)| n == &sub.agent)
            .map(|(_, a)| a.clone())
            .or_else(|| wasm.get(sub.agent.as_str()).map(|(_, a)| a.clone()));
        let Some(agent) = agent else {
            let known: Vec<&str> = env
                .builtins
                .iter()
                .map(|(n, _)| n.as_str())
                .chain(wasm.keys().map(|k| &**k))
                .collect();
            return Err(invalid(doc.error(
                "spec.agent",
                format!(
                    "no agent named `{}` (known: {})",
                    sub.agent,
                    known.join(", ")
                ),
            )));
        };
        let Some(chain) = chains.get_mut(sub.event.index()) else {
            continue;
        };
        if let Some(other) = chain.iter().find(|l| *l.agent_name == *sub.agent.as_str()) {
            return Err(BuildError::Conflict(doc.error(
                "spec.agent",
                format!(
                    "agent `{}` is already subscribed to {} by Subscription `{}`",
                    sub.agent,
                    sub.event.as_str(),
                    other.subscription
                ),
            )));
        }
        if let Some(other) = chain.iter().find(|l| l.priority == sub.priority) {
            return Err(BuildError::Conflict(doc.error(
                "spec.priority",
                format!(
                    "priority {} of {} is already taken by Subscription `{}` (agent `{}`)",
                    sub.priority,
                    sub.event.as_str(),
                    other.subscription,
                    other.agent_name
                ),
            )));
        }
        // One name per agent, as the snapshot before had it: the same origin, so the
        // monitor's counts by origin (see `monitor::ByOrigin`) do not start new keys for
        // every agent at every batch.
        let agent_name = (prev.into_iter())
            .flat_map(|p| p.chains.iter().flatten())
            .chain(chains.iter().flatten())
            .find(|l| *l.agent_name == *sub.agent.as_str())
            .map(|l| l.agent_name.clone())
            .unwrap_or_else(|| Text::named(sub.agent.as_str()));
        let Some(chain) = chains.get_mut(sub.event.index()) else {
            continue;
        };
        chain.push(Link {
            subscription: Arc::from(doc.key.name.as_str()),
            agent_name,
            agent,
            priority: sub.priority,
            failure_mode: sub.failure_mode,
        });
    }
    for chain in &mut chains {
        chain.sort_by_key(|l| l.priority);
    }

    let mut snapshot = Snapshot {
        revision,
        local_attrs,
        local_peer: env.local_peer.clone(),
        peers,
        peer_order,
        local,
        exports,
        imports,
        acl,
        conn_index: MatchIndex::build(conn_rules, &symbols),
        conn_limits,
        rate_index: MatchIndex::build(rate_rules, &symbols),
        rate_limits,
        chains,
        plans: Default::default(),
        wasm,
        docs,
        symbols,
    };
    snapshot.plans = EventType::ALL.map(|event| Plan::of(&snapshot, event));
    Ok(snapshot)
}

/// Documents whose kind has a `Kind` for listing.
pub fn list(docs: &Docs, kind: Kind) -> impl Iterator<Item = &Arc<Document>> {
    let from = DocKey {
        kind,
        namespace: "".into(),
        name: "".into(),
    };
    docs.from_key(from).take_while(move |d| d.key.kind == kind)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn docs(values: &[serde_json::Value]) -> Vec<Document> {
        (values.iter().enumerate())
            .map(|(i, v)| crate::document::parse_value(v.clone(), i + 1).unwrap())
            .collect()
    }

    fn policy(namespace: &str, name: &str, service: &str) -> serde_json::Value {
        serde_json::json!({"kind": "AccessPolicy", "metadata": {"name": name, "namespace": namespace},
            "spec": {"action": "allow",
                "from": [{"workloadSelector": {"matchLabels": {"client.clusterlink.net/service": service}}}],
                "to": [{"workloadSelector": {"matchLabels": {"export.clusterlink.net/name": "e"}}}]}})
    }

    /// A batch in one namespace leaves the other namespaces' access indexes as they were
    /// (the very same), and rebuilds its own.
    #[test]
    fn a_batch_keeps_the_indexes_of_namespaces_it_does_not_touch() {
        let engine = crate::Engine::new(crate::EngineConfig::default());
        let export = |ns: &str| serde_json::json!({"kind": "Export", "metadata": {"name": "e", "namespace": ns}});
        engine
            .apply(docs(&[
                policy("a", "p", "x"),
                policy("b", "p", "x"),
                export("a"),
                export("b"),
            ]))
            .unwrap();
        let before = engine.snapshot();
        engine.apply(docs(&[policy("b", "q", "y")])).unwrap();
        let after = engine.snapshot();
        assert!(after.acl.shares_with(&before.acl, Some("a")));
        assert!(!after.acl.shares_with(&before.acl, Some("b")));
        // An export added in `a` renumbers `b`'s exports: both are rebuilt.
        engine
            .apply(docs(&[
                serde_json::json!({"kind": "Export", "metadata": {"name": "f", "namespace": "a"}}),
            ]))
            .unwrap();
        let last = engine.snapshot();
        assert!(!last.acl.shares_with(&after.acl, Some("a")));
        assert!(!last.acl.shares_with(&after.acl, Some("b")));
    }

    /// Applying and deleting policies that name ever new values keeps the numbering
    /// table within twice the pairs the documents mention, plus [`STALE`].
    #[test]
    fn the_numbering_does_not_grow_without_bound() {
        let engine = crate::Engine::new(crate::EngineConfig::default());
        engine.apply(docs(&[policy("a", "keep", "kept")])).unwrap();
        let key = DocKey::new(Kind::AccessPolicy, Some("b"), "p");
        let mut largest = 0;
        for i in 0..3 * STALE {
            engine
                .apply(docs(&[policy("b", "p", &format!("v{i}"))]))
                .unwrap();
            engine.delete(std::slice::from_ref(&key)).unwrap();
            largest = largest.max(engine.snapshot().symbols.pairs_len());
        }
        // Live: `kept` and `e` (twice over: both policies name it).
        assert!(largest <= 2 * 3 + STALE, "{largest} pairs");
        assert!(largest > STALE / 2, "the numbering was extended: {largest}");
    }

    /// The same for keys: selectors that name ever new keys with `Exists`, and peers
    /// with ever new label keys (keys without pairs).
    #[test]
    fn the_numbering_of_keys_does_not_grow_without_bound() {
        let engine = crate::Engine::new(crate::EngineConfig::default());
        let exists = |key: &str| {
            serde_json::json!({"kind": "AccessPolicy", "metadata": {"name": "p", "namespace": "b"},
                "spec": {"action": "allow",
                    "from": [{"workloadSelector": {"matchExpressions": [{"key": key, "operator": "Exists"}]}}],
                    "to": [{"workloadSelector": {}}]}})
        };
        let peer = |key: &str| serde_json::json!({"kind": "Peer", "metadata": {"name": "q", "labels": {key: "v"}}});
        let baseline = engine.snapshot().symbols.keys_len();
        let mut largest = 0;
        for i in 0..3 * STALE {
            engine
                .apply(docs(&[exists(&format!("k{i}")), peer(&format!("l{i}"))]))
                .unwrap();
            largest = largest.max(engine.snapshot().symbols.keys_len());
        }
        // Live: the well-known keys, one selector key and one label key.
        assert!(largest <= 2 * (baseline + 2) + STALE, "{largest} keys");
        assert!(largest > STALE / 2, "the numbering was extended: {largest}");
    }

    /// An agent's name keeps its origin from batch to batch: the monitor counts by it.
    #[test]
    fn agent_names_keep_their_origin_across_batches() {
        let engine = crate::Engine::new(crate::EngineConfig::default());
        let origins = || -> Vec<Option<u64>> {
            let snapshot = engine.snapshot();
            let links = snapshot.chains.iter().flatten();
            links.map(|l| l.agent_name.origin()).collect()
        };
        let before = origins();
        assert!(before.iter().all(Option::is_some) && !before.is_empty());
        engine.apply(docs(&[policy("a", "p", "x")])).unwrap();
        assert_eq!(origins(), before);
        // One name per agent, whatever the event.
        let snapshot = engine.snapshot();
        for a in snapshot.chains.iter().flatten() {
            for b in snapshot.chains.iter().flatten() {
                let same = a.agent_name.as_str() == b.agent_name.as_str();
                assert_eq!(same, a.agent_name.origin() == b.agent_name.origin());
            }
        }
    }

    /// The document set: a document put under a key held replaces it; clones are
    /// independent; kinds come in order.
    #[test]
    fn documents_are_kept_by_key_and_clones_are_apart() {
        let mut set = Docs::new();
        let [a, b, c] = [
            policy("n", "p", "x"),
            policy("n", "p", "y"),
            policy("m", "q", "x"),
        ]
        .map(|v| Arc::new(docs(&[v]).remove(0)));
        assert!(set.insert(a.clone()).is_none());
        let before = set.clone();
        assert!(
            set.insert(b.clone())
                .is_some_and(|old| Arc::ptr_eq(&old, &a))
        );
        assert!(set.insert(c.clone()).is_none());
        assert_eq!(set.len(), 2);
        assert!(set.get(&b.key).is_some_and(|d| Arc::ptr_eq(d, &b)));
        assert!(before.get(&a.key).is_some_and(|d| Arc::ptr_eq(d, &a)));
        assert_eq!(before.len(), 1);
        let order: Vec<String> = set.values().map(|d| d.key.to_string()).collect();
        assert_eq!(order, [c.key.to_string(), b.key.to_string()]);
        assert_eq!(list(&set, Kind::AccessPolicy).count(), 2);
        assert_eq!(list(&set, Kind::Export).count(), 0);
        assert!(set.remove(&c.key).is_some());
        assert!(!set.contains_key(&c.key) && set.contains_key(&b.key));
    }

    /// An export's entry, its number included, fits one aligned pair of cache lines.
    #[test]
    fn an_export_entry_takes_two_lines() {
        assert!(std::mem::size_of::<ExportEntry>() <= 128);
        assert_eq!(std::mem::align_of::<ExportEntry>(), 128);
    }

    #[test]
    fn exports_are_found_by_exactly_their_namespace_and_name() {
        let mut exports = Exports::default();
        exports.insert("a", "bcd", OwnedAttrs::default(), 0);
        exports.insert("ab", "cd", OwnedAttrs::default(), 1);
        exports.insert("default", "reviews", OwnedAttrs::default(), 2);
        let found = |ns, name| exports.get(ns, name).map(|e| e.reference.clone());
        assert_eq!(found("a", "bcd").as_deref(), Some("a/bcd"));
        assert_eq!(found("ab", "cd").as_deref(), Some("ab/cd"));
        let e = exports.get("default", "reviews").unwrap();
        assert_eq!((e.namespace(), e.name()), ("default", "reviews"));
        // Same length, same bytes around a slash placed elsewhere: not the same export
        // (asked of the entry itself too, as a hash collision would).
        let entry = exports.get("a", "bcd").unwrap();
        assert!(entry.is("a", "bcd"));
        for (ns, name) in [
            ("a/b", "d"),
            ("a", "b/cd"),
            ("abc", "d"),
            ("", "a/bcd"),
            ("a", "bc"),
            ("ab", "cd"),
            ("a", "bcd/"),
        ] {
            assert!(!entry.is(ns, name), "{ns} {name}");
            let other = found(ns, name).filter(|r| r.as_str() != format!("{ns}/{name}"));
            assert_eq!(other, None, "{ns} {name}");
        }
        // Applying again replaces.
        exports.insert("a", "bcd", OwnedAttrs::default(), 0);
        assert_eq!(exports.iter().count(), 3);
    }
}
