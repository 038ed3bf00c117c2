//! The shared state carried along an event's chain (SPEC §3.5).

use std::collections::BTreeMap;

use smallvec::SmallVec;

use crate::attrs::{Attrs, keys, kid};
use crate::event::{Decision, Direction, Event, RateLimit, StateView};
use crate::limits::SlotGuard;
use crate::names::{PeerName, Time};
use crate::runtime::Runtime;
use crate::snapshot::{ExportEntry, ImportEntry, PeerEntry, Snapshot, SourceEntry};
use crate::text::Text;

/// A possible target peer of an egress connection: one of the Import's sources.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'s> {
    pub source: &'s SourceEntry,
    pub peer: &'s PeerEntry,
    /// Position among the Import's sources (source order).
    pub order: usize,
}

impl<'s> Candidate<'s> {
    pub fn name(&self) -> &'s PeerName {
        &self.peer.name
    }
}

/// What the event is about, resolved against the inventory.
#[derive(Clone, Copy, Debug)]
pub enum Scope<'s> {
    Ingress {
        export: &'s ExportEntry,
        namespace: &'s str,
    },
    Egress {
        import: &'s ImportEntry,
    },
    Expose {
        export: &'s ExportEntry,
        namespace: &'s str,
    },
    List {
        peer: &'s PeerName,
    },
    Closed,
}

pub use crate::agent::Held;

/// An allow recorded by an agent: for one candidate (egress) or the whole event.
#[derive(Clone, Debug)]
pub struct AllowMark<'s> {
    pub peer: Option<&'s PeerName>,
    pub matched_by: Held<'s>,
    pub agent: &'s Text,
    /// The sentence for the response; made from the others when absent.
    pub reason: Option<Held<'s>>,
}

pub struct Context<'s> {
    pub snapshot: &'s Snapshot,
    pub runtime: &'s Runtime,
    pub event: &'s Event,
    pub scope: Scope<'s>,
    pub now: Time,
    /// `?dryRun=true`: decide without consuming limits or counting.
    pub dry_run: bool,
    /// The source side's attributes.
    pub src: Attrs<'s>,
    /// Egress: the peers still possible, in source order.
    pub candidates: SmallVec<[Candidate<'s>; 4]>,
    /// Egress: the chosen peer, and the ordered peers to fail over to.
    pub target: Option<Candidate<'s>>,
    pub fallbacks: SmallVec<[Candidate<'s>; 4]>,
    /// ExposeService / ServiceListRequest answers.
    pub target_peers: Vec<PeerName>,
    pub services: Vec<String>,
    pub decision: Option<Decision>,
    pub rate_limit: Option<u64>,
    /// Limiter slots held for this connection: given back when dropped uncommitted.
    pub slots: Vec<SlotGuard>,
    /// The smallest `leaseSeconds` asked by a limit that holds this connection.
    pub lease: Option<u64>,
    /// What agents annotated the response with; `None` until one does (an empty map
    /// would still cost its drop on every decision).
    pub annotations: Option<BTreeMap<String, String>>,
    pub connection_id: Option<crate::names::ConnectionId>,
    /// `ConnectionClosed`: the record of the connection that was closed, if it was open.
    pub closed: Option<crate::limits::Connection>,
    pub(crate) allows: SmallVec<[AllowMark<'s>; 4]>,
    pub notes: Notes<'s>,
}

/// What agents note for the trace and the monitor: kept apart from the rest of the
/// state so an agent can note while it reads the attributes.
#[derive(Debug)]
pub struct Notes<'s> {
    /// The running agent's name, borrowed from the snapshot's chain: no reference
    /// counting per agent run.
    pub(crate) current_agent: &'s Text,
    /// Policies that matched in the current agent (trace only).
    pub(crate) matched: Vec<Text>,
    pub(crate) would_deny: Vec<(Text, Text)>,
    pub(crate) explain: bool,
}

impl Notes<'_> {
    /// Notes a policy that matched, for the trace.
    pub fn matched(&mut self, policy: &Text) {
        if self.explain {
            self.matched.push(policy.clone());
        }
    }

    /// A dry-run policy would have denied.
    pub fn would_deny(&mut self, policy: &Text) {
        self.would_deny
            .push((self.current_agent.clone(), policy.clone()));
    }
}

impl<'s> Context<'s> {
    pub fn direction(&self) -> Option<Direction> {
        match self.scope {
            Scope::Ingress { .. } => Some(Direction::Ingress),
            Scope::Egress { .. } => Some(Direction::Egress),
            _ => None,
        }
    }

    /// The destination side's attributes for an ingress connection or an exposed service
    /// (the local Export on the local peer).
    pub fn dst_local(&self, export: &'s ExportEntry) -> Attrs<'s> {
        Attrs::over(&export.attrs)
    }

    /// The same with the export's number, for the access policies' index.
    pub fn dst_export(&self, export: &'s ExportEntry) -> crate::acl::Dst<'s> {
        crate::acl::Dst(self.dst_local(export), Some(export.dest))
    }

    /// An egress candidate's destination side, for the access policies' index.
    pub fn dst_source(&self, c: &Candidate<'s>) -> crate::acl::Dst<'s> {
        crate::acl::Dst(self.dst_candidate(c), None)
    }

    /// The destination side's attributes for an egress candidate.
    pub fn dst_candidate(&self, c: &Candidate<'s>) -> Attrs<'s> {
        Attrs::over(&c.source.attrs)
    }

    /// The destination attributes of the connection as it stands: the chosen target on
    /// egress (the limits' view), the local export on ingress.
    pub fn dst_current(&self) -> Option<Attrs<'s>> {
        match self.scope {
            Scope::Ingress { export, .. } => Some(self.dst_local(export)),
            Scope::Egress { .. } => self.target.as_ref().map(|t| self.dst_candidate(t)),
            _ => None,
        }
    }

    /// Egress: makes sure a target is chosen, taking the first candidate when no balancer
    /// chose one (the rest become the fallbacks). Returns whether there is a target.
    pub fn ensure_target(&mut self) -> bool {
        if self.target.is_some() {
            return true;
        }
        if self.candidates.is_empty() {
            return false;
        }
        let first = self.candidates.remove(0);
        let (reachable, unreachable): (SmallVec<[Candidate<'s>; 4]>, SmallVec<[Candidate<'s>; 4]>) =
            self.candidates
                .iter()
                .copied()
                .partition(|c| c.peer.reachable);
        self.candidates.insert(0, first);
        self.fallbacks = reachable.into_iter().chain(unreachable).collect();
        self.target = Some(first);
        true
    }

    /// Removes a peer from the candidates, the fallbacks and the target; when it was the
    /// target, the next fallback takes its place.
    pub fn remove_peer(&mut self, peer: &PeerName) {
        self.candidates.retain(|c| c.name() != peer);
        self.fallbacks.retain(|c| c.name() != peer);
        if self.target.as_ref().is_some_and(|t| t.name() == peer) {
            self.target = if self.fallbacks.is_empty() {
                None
            } else {
                Some(self.fallbacks.remove(0))
            };
        }
    }

    /// Records that the current agent allows `peer` (or the event, with `None`) by a policy.
    pub fn allow(&mut self, peer: Option<&'s PeerName>, matched_by: Held<'s>) {
        let agent = self.notes.current_agent;
        self.allows.push(AllowMark {
            peer,
            matched_by,
            agent,
            reason: None,
        });
    }

    /// Like [`Context::allow`], for a policy of the snapshot, with the sentence the
    /// response gives as its reason.
    pub fn allow_because(
        &mut self,
        peer: Option<&'s PeerName>,
        matched_by: &'s Text,
        reason: Held<'s>,
    ) {
        let agent = self.notes.current_agent;
        self.allows.push(AllowMark {
            peer,
            matched_by: Held::Borrowed(matched_by),
            agent,
            reason: Some(reason),
        });
    }

    /// Notes a policy that matched, for the trace.
    pub fn note_match(&mut self, policy: &Text) {
        self.notes.matched(policy);
    }

    /// A dry-run policy would have denied.
    pub fn would_deny(&mut self, policy: &Text) {
        self.notes.would_deny(policy);
    }

    pub fn is_explaining(&self) -> bool {
        self.notes.explain
    }

    /// The `n`th pseudo-random number of the sequence named `salt`: reproducible for a
    /// given seed.
    pub fn random(&self, n: u64, salt: u64) -> u64 {
        self.runtime.random(n, salt)
    }

    pub fn view(&self) -> StateView {
        StateView {
            candidates: self.candidates.iter().map(|c| c.name().clone()).collect(),
            target: self.target.as_ref().map(|t| t.name().clone()),
            fallbacks: self.fallbacks.iter().map(|c| c.name().clone()).collect(),
            decision: self.decision,
            rate_limit: self.rate_limit.map(|b| RateLimit { bits_per_second: b }),
        }
    }

    /// The source attribute a key names (`client.clusterlink.net/service`, ...).
    pub fn src_value(&self, key: &str) -> Option<&'s str> {
        self.src.get(key)
    }
}

/// Builds the source attributes of an event (SPEC §2's table).
pub(crate) fn source_attrs<'s>(snapshot: &'s Snapshot, event: &'s Event) -> Attrs<'s> {
    let symbols = &snapshot.symbols;
    match event {
        Event::NewConnection(e) => {
            let mut a = match e.direction {
                Direction::Ingress => match &e.src_peer {
                    Some(p) => peer_side(snapshot, p),
                    None => Attrs::new(),
                },
                Direction::Egress => Attrs::over(snapshot.local_attrs()),
            };
            if let Some(s) = &e.src_service {
                a.push_known(
                    symbols,
                    kid::CLIENT_SERVICE,
                    keys::CLIENT_SERVICE,
                    s.as_str(),
                );
            }
            for (k, v) in &e.src_attributes {
                a.push(symbols, k, v);
            }
            a
        }
        Event::ServiceListRequest(e) => peer_side(snapshot, &e.src_peer),
        Event::ExposeService(_) | Event::ConnectionClosed(_) => Attrs::new(),
    }
}

/// A remote peer as a source: its inventory attributes, or just its name when unknown.
pub(crate) fn peer_side<'s>(snapshot: &'s Snapshot, peer: &'s PeerName) -> Attrs<'s> {
    match snapshot.peers.get(peer) {
        Some(entry) => Attrs::over(&entry.attrs),
        None => {
            let mut a = Attrs::new();
            a.push_known(
                &snapshot.symbols,
                kid::PEER_NAME,
                keys::PEER_NAME,
                peer.as_str(),
            );
            a
        }
    }
}
