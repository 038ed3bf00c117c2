//! The anchors' floor (`../shared/bench/anchors.tsv`): the same access decisions made
//! the least way there is. Names are interned to integers, each rule is a tuple in an
//! FxHash set, and a decision is a handful of set probes. `clpe bench --floor` times it
//! on the workload's own events, just before and just after the engine, so the ratio of
//! the two comes from one run on one machine (whose speed drifts from minute to minute).
//!
//! Only workloads of the anchors' shape are understood: regular access policies in one
//! namespace, not dry-run, each side one selector of `matchLabels`, the source's over
//! the client's service and the peer's name, the destination's over the export's name;
//! ingress `NewConnection` events with no attributes of their own. For anything else the
//! floor says what it cannot express. A policy applied twice in the batch counts once,
//! the last, as the engine keeps it.
//!
//! Its figure is a mean: one timed loop over all the events, as anchors.tsv's floor is
//! timed. The engine's is a median of decisions timed one by one.

use std::time::Instant;

use clpe_core::document::{AccessSpec, Action, Spec, Workload};
use clpe_core::event::Direction;
use clpe_core::{Decision, Document, Event, Kind};
use rustc_hash::{FxHashMap, FxHashSet};

/// A rule side that names nothing matches any value.
const ANY: u32 = u32::MAX;
/// A name no rule mentions.
const UNKNOWN: u32 = u32::MAX - 1;

const SERVICE: &str = "client.clusterlink.net/service";
const PEER: &str = "peer.clusterlink.net/name";
const EXPORT: &str = "export.clusterlink.net/name";

/// (client service, peer, export).
type Key = (u32, u32, u32);

/// One access policy of the anchors' shape: what each part must be (`None`: anything).
#[derive(Clone, Debug)]
pub struct Rule {
    pub allow: bool,
    pub service: Option<String>,
    pub peer: Option<String>,
    pub export: Option<String>,
}

/// A workload of the anchors' shape, decoded: the rules every anchor is given (the
/// floor here; Cedar and Rego in `tools/anchors`).
#[derive(Debug)]
pub struct AclWorkload {
    /// The namespace of every policy (none: no policy, so every decision is a deny).
    pub namespace: Option<String>,
    /// The names of the Exports in that namespace.
    pub exports: Vec<String>,
    /// By policy name (the last of a name applied wins, as in the engine's batch).
    pub rules: Vec<Rule>,
}

impl AclWorkload {
    /// The rules of these documents, or what the anchors' shape cannot express.
    pub fn new(docs: &[Document]) -> Result<AclWorkload, String> {
        let mut namespace: Option<&str> = None;
        let mut exports = Vec::new();
        let mut policies = std::collections::BTreeMap::new();
        for doc in docs {
            match (&doc.key.kind, &doc.spec) {
                (Kind::Peer, _) => {}
                (Kind::Export, _) => exports.push(doc),
                (Kind::AccessPolicy, Spec::Access(spec)) => {
                    let ns = doc.key.namespace.as_str();
                    if namespace.is_some_and(|n| n != ns) {
                        return Err(
                            "access policies in more than one namespace are beyond the floor"
                                .into(),
                        );
                    }
                    namespace = Some(ns);
                    policies.insert(doc.key.name.as_str(), (doc, spec));
                }
                (kind, _) => return Err(format!("{kind:?} documents are beyond the floor")),
            }
        }
        let rules = (policies.into_values())
            .map(|(doc, spec)| rule(spec).map_err(|e| format!("{}: {e}", doc.key.reference())))
            .collect::<Result<_, _>>()?;
        let exports = (exports.into_iter())
            .filter(|doc| namespace == Some(doc.key.namespace.as_str()))
            .map(|doc| doc.key.name.to_string())
            .collect();
        Ok(AclWorkload {
            namespace: namespace.map(str::to_owned),
            exports,
            rules,
        })
    }
}

/// The names one side's only selector requires: (service, peer, export).
type Side = [Option<String>; 3];

fn side(side: &[Workload]) -> Result<Side, String> {
    let [Workload::Selector(sel)] = side else {
        return Err("a side that is not one selector".into());
    };
    if !sel.requirements.is_empty() {
        return Err("a selector with matchExpressions".into());
    }
    let mut out: Side = Default::default();
    for (key, value) in sel.labels.iter() {
        let at = [SERVICE, PEER, EXPORT]
            .iter()
            .position(|k| *k == key.as_str());
        let Some(slot) = at.and_then(|at| out.get_mut(at)) else {
            return Err(format!("a selector on {key}"));
        };
        *slot = Some(value.to_string());
    }
    Ok(out)
}

fn rule(spec: &AccessSpec) -> Result<Rule, String> {
    if spec.dry_run {
        return Err("a dry-run policy".into());
    }
    let [service, peer, from_export] = side(&spec.from)?;
    let [to_service, to_peer, export] = side(&spec.to)?;
    if from_export.is_some() {
        return Err("a source selector on the export".into());
    }
    if to_service.is_some() || to_peer.is_some() {
        return Err("a destination selector on the client or the peer".into());
    }
    Ok(Rule {
        allow: spec.action == Action::Allow,
        service,
        peer,
        export,
    })
}

pub struct Floor {
    names: FxHashMap<Box<str>, u32>,
    namespace: Option<Box<str>>,
    exports: FxHashSet<u32>,
    allow: FxHashSet<Key>,
    deny: FxHashSet<Key>,
    /// The distinct ways rules name their three parts (which are not `ANY`): one probe
    /// each.
    shapes: Vec<(bool, bool, bool)>,
}

/// An event as the anchors take it: names as given (the floor interns them while
/// deciding, as an engine that receives strings must).
pub struct FloorEvent {
    /// As given (absent: `default`).
    pub namespace: Option<Box<str>>,
    /// Absent: no selector on it matches, as the engine's attribute is then absent.
    pub service: Option<Box<str>>,
    pub peer: Option<Box<str>>,
    pub export: Box<str>,
}

/// The median time of an empty timed region: the clock's own share of every timing, taken
/// off each decision `clpe bench` times one by one (the engine's and the floor's).
pub fn timer_overhead() -> u64 {
    let mut empty: Vec<u64> = (0..100_000)
        .map(|_| {
            let t0 = Instant::now();
            std::hint::black_box(());
            t0.elapsed().as_nanos() as u64
        })
        .collect();
    empty.sort_unstable();
    empty.get(empty.len() / 2).copied().unwrap_or(0)
}

/// The median of `rounds` passes over decisions `0..n` timed one by one: `touch(i)` reads
/// event `i` first, untimed; `decide(i)` is timed, the clock's own `timer_ns` taken off;
/// its answer then goes to `seen`, untimed. The first error ends the passes.
pub fn median_timed<T, E>(
    n: usize,
    rounds: usize,
    timer_ns: u64,
    mut touch: impl FnMut(usize),
    mut decide: impl FnMut(usize) -> Result<T, E>,
    mut seen: impl FnMut(usize, T),
) -> Result<u64, E> {
    let mut times = Vec::with_capacity(n * rounds);
    for _ in 0..rounds {
        for i in 0..n {
            touch(i);
            let t0 = Instant::now();
            let answer = decide(i)?;
            let ns = (t0.elapsed().as_nanos() as u64).saturating_sub(timer_ns);
            seen(i, std::hint::black_box(answer));
            times.push(ns);
        }
    }
    times.sort_unstable();
    Ok(times.get(times.len() / 2).copied().unwrap_or(0))
}

impl FloorEvent {
    /// Reads the event's names (each name's bytes, which lie apart from the event), as the
    /// engine's check reads its event (whose short names lie within it).
    pub fn touch(&self) -> usize {
        let sum = |s: &str| s.bytes().map(usize::from).sum::<usize>();
        let opt = |s: &Option<Box<str>>| s.as_deref().map_or(0, sum);
        opt(&self.namespace) + opt(&self.service) + opt(&self.peer) + sum(&self.export)
    }
}

impl Floor {
    /// The floor of these documents, or what it cannot express.
    pub fn new(docs: &[Document]) -> Result<Floor, String> {
        Ok(Floor::of(&AclWorkload::new(docs)?))
    }

    /// The floor of a decoded workload.
    pub fn of(workload: &AclWorkload) -> Floor {
        let mut floor = Floor {
            names: FxHashMap::default(),
            namespace: workload.namespace.as_deref().map(Box::from),
            exports: FxHashSet::default(),
            allow: FxHashSet::default(),
            deny: FxHashSet::default(),
            shapes: Vec::new(),
        };
        for rule in &workload.rules {
            floor.add(rule);
        }
        for name in &workload.exports {
            let id = floor.intern(name);
            floor.exports.insert(id);
        }
        floor
    }

    fn intern(&mut self, name: &str) -> u32 {
        let next = self.names.len() as u32;
        *self.names.entry(name.into()).or_insert(next)
    }

    fn add(&mut self, rule: &Rule) {
        let mut id = |name: &Option<String>| name.as_deref().map_or(ANY, |n| self.intern(n));
        let key = (id(&rule.service), id(&rule.peer), id(&rule.export));
        let shape = (key.0 != ANY, key.1 != ANY, key.2 != ANY);
        if !self.shapes.contains(&shape) {
            self.shapes.push(shape);
        }
        match rule.allow {
            true => self.allow.insert(key),
            false => self.deny.insert(key),
        };
    }

    /// The events as the floor takes them, or what it cannot express.
    pub fn events(&self, events: &[Event]) -> Result<Vec<FloorEvent>, String> {
        events
            .iter()
            .map(|e| match e {
                Event::NewConnection(c)
                    if c.direction == Direction::Ingress && c.src_attributes.is_empty() =>
                {
                    Ok(FloorEvent {
                        namespace: c.dst_namespace.as_ref().map(|n| n.as_str().into()),
                        service: c.src_service.as_ref().map(|s| s.as_str().into()),
                        peer: c.src_peer.as_ref().map(|p| p.as_str().into()),
                        export: c.dst_service.as_str().into(),
                    })
                }
                _ => Err("an event other than an ingress NewConnection without attributes".into()),
            })
            .collect()
    }

    fn id(&self, name: Option<&str>) -> u32 {
        name.and_then(|n| self.names.get(n))
            .copied()
            .unwrap_or(UNKNOWN)
    }

    /// Deny overrides allow; no rule, no connection.
    pub fn decide(&self, e: &FloorEvent) -> Decision {
        let namespace = e.namespace.as_deref().unwrap_or("default");
        let export = self.id(Some(&e.export));
        if self.namespace.as_deref() != Some(namespace) || !self.exports.contains(&export) {
            return Decision::Deny;
        }
        let (service, peer) = (self.id(e.service.as_deref()), self.id(e.peer.as_deref()));
        let hit = |set: &FxHashSet<Key>| {
            self.shapes.iter().any(|&(s, p, x)| {
                let pick = |yes: bool, id: u32| if yes { id } else { ANY };
                set.contains(&(pick(s, service), pick(p, peer), pick(x, export)))
            })
        };
        match !hit(&self.deny) && hit(&self.allow) {
            true => Decision::Allow,
            false => Decision::Deny,
        }
    }

    /// Decisions timed one by one, as `clpe bench` times the engine's: each event read
    /// just before (as the engine's is), the clock's own `timer_ns` taken off each time.
    /// The median of `rounds` passes (at least one), in nanoseconds.
    pub fn median_each(&self, events: &[FloorEvent], rounds: usize, timer_ns: u64) -> u64 {
        let touch = |i| {
            std::hint::black_box(events.get(i).map(FloorEvent::touch));
        };
        let decide = |i| {
            let e = events.get(i);
            Ok::<_, std::convert::Infallible>(e.map(|e| self.decide(std::hint::black_box(e))))
        };
        match median_timed(
            events.len(),
            rounds.max(1),
            timer_ns,
            touch,
            decide,
            |_, _| {},
        ) {
            Ok(ns) => ns,
            Err(never) => match never {},
        }
    }

    /// Nanoseconds per decision over `rounds` passes (at least one) over the events.
    pub fn time(&self, events: &[FloorEvent], rounds: usize) -> f64 {
        let rounds = rounds.max(1);
        let t0 = Instant::now();
        let mut allowed = 0usize;
        for _ in 0..rounds {
            for e in events {
                let d = self.decide(std::hint::black_box(e));
                allowed += usize::from(d == Decision::Allow);
            }
        }
        std::hint::black_box(allowed);
        let n = (rounds * events.len()).max(1);
        t0.elapsed().as_nanos() as f64 / n as f64
    }
}
