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

/// An event as the floor takes it: names as given (interned while deciding, as an
/// engine that receives strings must).
pub struct FloorEvent {
    namespace: Option<Box<str>>,
    /// Absent: no selector on it matches, as the engine's attribute is then absent.
    service: Option<Box<str>>,
    peer: Option<Box<str>>,
    export: Box<str>,
}

impl Floor {
    /// The floor of these documents, or what it cannot express.
    pub fn new(docs: &[Document]) -> Result<Floor, String> {
        let mut floor = Floor {
            names: FxHashMap::default(),
            namespace: None,
            exports: FxHashSet::default(),
            allow: FxHashSet::default(),
            deny: FxHashSet::default(),
            shapes: Vec::new(),
        };
        let mut exports = Vec::new();
        // By name, the last of a name winning, as in the engine's batch.
        let mut policies = FxHashMap::default();
        for doc in docs {
            match (&doc.key.kind, &doc.spec) {
                (Kind::Peer, _) => {}
                (Kind::Export, _) => exports.push(doc),
                (Kind::AccessPolicy, Spec::Access(spec)) => {
                    floor.same_namespace(&doc.key.namespace)?;
                    policies.insert(doc.key.name.as_str(), (doc, spec));
                }
                (kind, _) => return Err(format!("{kind:?} documents are beyond the floor")),
            }
        }
        for (doc, spec) in policies.into_values() {
            floor
                .add(spec)
                .map_err(|e| format!("{}: {e}", doc.key.reference()))?;
        }
        for doc in exports {
            if floor.namespace.as_deref() == Some(doc.key.namespace.as_str()) {
                let id = floor.intern(&doc.key.name);
                floor.exports.insert(id);
            }
        }
        Ok(floor)
    }

    fn same_namespace(&mut self, namespace: &str) -> Result<(), String> {
        match &self.namespace {
            Some(n) if **n != *namespace => {
                Err("access policies in more than one namespace are beyond the floor".into())
            }
            Some(_) => Ok(()),
            None => {
                self.namespace = Some(namespace.into());
                Ok(())
            }
        }
    }

    fn intern(&mut self, name: &str) -> u32 {
        let next = self.names.len() as u32;
        *self.names.entry(name.into()).or_insert(next)
    }

    /// The names one side's only selector requires, by key.
    fn side(&mut self, side: &[Workload]) -> Result<[u32; 3], String> {
        let [Workload::Selector(sel)] = side else {
            return Err("a side that is not one selector".into());
        };
        if !sel.requirements.is_empty() {
            return Err("a selector with matchExpressions".into());
        }
        let mut out = [ANY; 3];
        for (key, value) in sel.labels.iter() {
            let at = [SERVICE, PEER, EXPORT]
                .iter()
                .position(|k| *k == key.as_str());
            let Some(at) = at else {
                return Err(format!("a selector on {key}"));
            };
            let id = self.intern(value);
            if let Some(slot) = out.get_mut(at) {
                *slot = id;
            }
        }
        Ok(out)
    }

    fn add(&mut self, spec: &AccessSpec) -> Result<(), String> {
        if spec.dry_run {
            return Err("a dry-run policy".into());
        }
        let [service, peer, from_export] = self.side(&spec.from)?;
        let [to_service, to_peer, export] = self.side(&spec.to)?;
        if from_export != ANY {
            return Err("a source selector on the export".into());
        }
        if to_service != ANY || to_peer != ANY {
            return Err("a destination selector on the client or the peer".into());
        }
        let key = (service, peer, export);
        let shape = (service != ANY, peer != ANY, export != ANY);
        if !self.shapes.contains(&shape) {
            self.shapes.push(shape);
        }
        match spec.action {
            Action::Allow => self.allow.insert(key),
            Action::Deny => self.deny.insert(key),
        };
        Ok(())
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
