//! The `lb` agent: picks the target peer of an egress connection (SPEC §3.2).

use std::sync::atomic::{AtomicU64, Ordering};

use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use crate::agent::{Agent, Verdict};
use crate::attrs::Attrs;
use crate::context::{Candidate, Context, Scope};
use crate::document::Scheme;
use crate::error::AgentError;
use crate::event::{Direction, EventType};
use crate::limits::Padded;
use crate::names::PeerName;
use crate::runtime::stable_hash;
use crate::shard_lock::ShardLock;
use crate::snapshot::{ImportEntry, Snapshot};

pub struct LoadBalancer;

/// `consistent-hash`'s memory, per Import or balancing policy (carried from snapshot to
/// snapshot like its counter): the peer each key was given. A key keeps its peer while
/// that peer stays a candidate, whoever joins (SPEC §3.2); no function of the key and
/// the candidates alone can promise that (rendezvous hashing moves a key to a peer that
/// joins and ranks higher for it). A key whose peer is no longer a source of the Import
/// is placed again by rendezvous hashing over the candidates left, and remembered there.
/// One whose peer is only out of this decision's candidates (narrowed away for this
/// source, or unreachable) is placed by hashing this once and keeps its peer for next
/// time.
#[derive(Default)]
pub struct Sticky(Padded<ShardLock<Generations>>);

/// Keys a [`Sticky`] remembers, in two generations of half as many: when the recent one
/// is full it becomes the older one, and the older one's keys not used since are
/// forgotten (a forgotten key is placed again by rendezvous hashing, which moves it only
/// if a peer that ranks higher for it joined meanwhile). About 48 bytes a key.
const STICKY_KEYS: usize = if cfg!(test) { 64 } else { 1 << 16 };

#[derive(Default)]
struct Generations {
    recent: FxHashMap<u64, PeerName>,
    older: FxHashMap<u64, PeerName>,
}

impl Generations {
    fn get(&self, key: u64) -> Option<&PeerName> {
        self.recent.get(&key).or_else(|| self.older.get(&key))
    }

    /// Remembers `peer` for `key` in the recent generation.
    fn put(&mut self, key: u64, peer: PeerName) {
        if self.recent.len() >= STICKY_KEYS / 2 && !self.recent.contains_key(&key) {
            let full = STICKY_KEYS / 2;
            self.older = std::mem::take(&mut self.recent);
            self.recent.reserve(full);
        }
        self.older.remove(&key);
        self.recent.insert(key, peer);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.recent.len() + self.older.len()
    }
}

impl std::fmt::Debug for Sticky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sticky")
    }
}

impl Sticky {
    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().len()
    }

    /// Puts the remembered peer of `key` first when it is in `ranked`; else, unless it is
    /// still a source of the Import (`source`), remembers the first of `ranked` (a dry
    /// run remembers nothing, and leaves the generations as they are).
    fn keep(
        &self,
        key: u64,
        ranked: &mut List<'_>,
        dry_run: bool,
        source: impl Fn(&PeerName) -> bool,
    ) {
        let mut table = self.0.lock();
        if let Some(peer) = table.get(key) {
            if let Some(at) = ranked.iter().position(|c| c.name() == peer) {
                let c = ranked.remove(at);
                ranked.insert(0, c);
                if !dry_run && !table.recent.contains_key(&key) {
                    let peer = peer.clone();
                    table.put(key, peer);
                }
                return;
            }
            if source(peer) {
                return;
            }
        }
        if let Some(first) = ranked.first()
            && !dry_run
        {
            table.put(key, first.name().clone());
        }
    }
}

type List<'s> = SmallVec<[Candidate<'s>; 4]>;

/// The scheme in force for this source: the first balancing policy (by name) whose
/// `from` selects it, else the Import's own.
struct Choice<'a> {
    scheme: Scheme,
    /// Advanced once per pick: round-robin's position, or the number of the next random
    /// draw.
    counter: &'a AtomicU64,
    /// Names the random sequence: the Import's or balancing policy's reference, hashed.
    salt: u64,
    sticky: &'a Sticky,
    policy: Option<&'a crate::snapshot::LbEntry>,
}

fn choose<'a>(import: &'a ImportEntry, src: &Attrs<'_>) -> Choice<'a> {
    if !import.lb_policies.is_empty() {
        let empty = Attrs::new();
        if let Some(p) = import
            .lb_index
            .first_match(src, &empty)
            .and_then(|id| import.lb_policies.get(id as usize))
        {
            return Choice {
                scheme: p.spec.scheme,
                counter: &p.counter,
                salt: p.salt,
                sticky: &p.sticky,
                policy: Some(p),
            };
        }
    }
    Choice {
        scheme: import.scheme,
        counter: &import.counter,
        salt: import.salt,
        sticky: &import.sticky,
        policy: None,
    }
}

impl Agent for LoadBalancer {
    /// Only an egress connection has peers to choose from.
    fn idle(&self, _: &Snapshot, event: EventType, direction: Option<Direction>) -> bool {
        !(event == EventType::NewConnection && direction == Some(Direction::Egress))
    }

    fn observes(&self) -> bool {
        false
    }

    fn decide<'s>(&self, cx: &mut Context<'s>) -> Result<Verdict<'s>, AgentError> {
        let Scope::Egress { import } = cx.scope else {
            return Ok(Verdict::Continue);
        };
        if cx.target.is_some() {
            return Ok(Verdict::Continue);
        }
        if cx.candidates.is_empty() {
            return Ok(no_candidate(import));
        }
        let choice = choose(import, &cx.src);
        if let Some(p) = choice.policy {
            cx.note_match(&p.matched_by);
        }
        let (reachable, unreachable): (List<'_>, List<'_>) = cx
            .candidates
            .iter()
            .copied()
            .partition(|c| c.peer.reachable);
        let pool_is_reachable = !reachable.is_empty();
        let pool = if pool_is_reachable {
            reachable
        } else {
            unreachable.clone()
        };
        let Some(mut order) = prefer(cx, &choice, &pool, true) else {
            return Ok(Verdict::Deny {
                reason: format!(
                    "every candidate of Import {} weighs 0",
                    import.key.reference()
                )
                .into(),
                matched_by: choice.policy.map(|p| (&p.matched_by).into()),
            });
        };
        if pool_is_reachable {
            order.extend(prefer(cx, &choice, &unreachable, false).unwrap_or_default());
        }
        if order.is_empty() {
            return Ok(no_candidate(import));
        }
        let target = order.remove(0);
        cx.target = Some(target);
        cx.fallbacks = order;
        Ok(Verdict::Continue)
    }
}

fn no_candidate(import: &ImportEntry) -> Verdict<'static> {
    Verdict::Deny {
        reason: format!(
            "no candidate peer left for Import {}",
            import.key.reference()
        )
        .into(),
        matched_by: None,
    }
}

/// The pool in the scheme's order of preference, the pick first. `pick` says whether
/// the scheme chooses now (counters advance) or only orders the rest. `None`: a
/// weighted pool where everything weighs 0.
fn prefer<'s>(
    cx: &Context<'s>,
    choice: &Choice<'_>,
    pool: &List<'s>,
    pick: bool,
) -> Option<List<'s>> {
    if pool.is_empty() {
        return Some(List::new());
    }
    let n = pool.len() as u64;
    let next = |cx: &Context<'s>| {
        if cx.dry_run || !pick {
            choice.counter.load(Ordering::Relaxed)
        } else {
            choice.counter.fetch_add(1, Ordering::Relaxed)
        }
    };
    // Schemes with no order of preference: the pick, then the rest in source order.
    let picked = |i: u64| -> List<'s> {
        let mut out = pool.clone();
        let idx = (i % n) as usize;
        if idx < out.len() {
            let p = out.remove(idx);
            out.insert(0, p);
        }
        out
    };
    let spec = choice.policy.map(|p| &p.spec);
    Some(match choice.scheme {
        Scheme::RoundRobin => {
            if pick {
                picked(next(cx))
            } else {
                pool.clone()
            }
        }
        Scheme::Random => {
            if pick {
                picked(cx.random(next(cx), choice.salt))
            } else {
                pool.clone()
            }
        }
        Scheme::Static => {
            let mut out = pool.clone();
            if let Some(spec) = spec {
                let rank = |c: &Candidate<'_>| {
                    spec.order
                        .iter()
                        .position(|p| p == c.name())
                        .unwrap_or(usize::MAX)
                };
                out.sort_by_key(|c| (rank(c), c.order));
            }
            out
        }
        Scheme::Weighted => {
            let weight = |c: &Candidate<'_>| {
                spec.and_then(|s| s.weights.get(c.name()).copied())
                    .unwrap_or(1)
            };
            let eligible: List<'s> = pool.iter().copied().filter(|c| weight(c) > 0).collect();
            let total: u64 = eligible.iter().map(|c| u64::from(weight(c))).sum();
            if total == 0 {
                return if pick { None } else { Some(List::new()) };
            }
            if !pick {
                return Some(eligible);
            }
            let mut r = cx.random(next(cx), choice.salt) % total;
            let mut idx = 0;
            for (i, c) in eligible.iter().enumerate() {
                let w = u64::from(weight(c));
                if r < w {
                    idx = i;
                    break;
                }
                r -= w;
            }
            let mut out = eligible;
            let p = out.remove(idx);
            out.insert(0, p);
            out
        }
        Scheme::LeastConnections => {
            let mut out = pool.clone();
            let open = |c: &Candidate<'_>| cx.runtime.connections.open_to(c.peer.open);
            out.sort_by_key(|c| (open(c), c.order));
            out
        }
        Scheme::ConsistentHash => {
            let hash_key = spec.and_then(|s| s.hash_key.as_deref());
            let key = hash_key.and_then(|k| cx.src.get(k)).unwrap_or("");
            let mut scored: SmallVec<[(u64, Candidate<'s>); 4]> = pool
                .iter()
                .map(|c| (stable_hash(&[key, c.name().as_str()]), *c))
                .collect();
            // Rendezvous hashing: the highest score wins, and only a leaving peer's keys
            // move; what a joining one would take, the memory keeps where it was.
            scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.order.cmp(&b.1.order)));
            let mut ranked: List<'s> = scored.into_iter().map(|(_, c)| c).collect();
            if pick {
                let remembered = stable_hash(&[hash_key.unwrap_or(""), key]);
                let source = |peer: &PeerName| match cx.scope {
                    Scope::Egress { import } => (import.sources.iter())
                        .any(|s| s.peer.as_ref().is_some_and(|p| p.name == *peer)),
                    _ => false,
                };
                choice
                    .sticky
                    .keep(remembered, &mut ranked, cx.dry_run, source);
            }
            ranked
        }
        Scheme::Locality => {
            let label = spec.and_then(|s| s.locality_label.as_deref()).unwrap_or("");
            let mine = cx.snapshot.local.as_ref().and_then(|p| p.labels.get(label));
            let (near, far): (List<'s>, List<'s>) = pool
                .iter()
                .copied()
                .partition(|c| mine.is_some() && c.peer.labels.get(label) == mine);
            let group = if near.is_empty() {
                far.clone()
            } else {
                near.clone()
            };
            let n = group.len() as u64;
            let mut out: List<'s> = if pick && n > 0 {
                let idx = (next(cx) % n) as usize;
                let mut g = group;
                if idx < g.len() {
                    let p = g.remove(idx);
                    g.insert(0, p);
                }
                g
            } else {
                group
            };
            if !near.is_empty() {
                out.extend(far);
            }
            out
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use serde_json::json;

    use crate::{DecideOptions, Engine, EngineConfig, Event, PeerName, Time};

    fn apply(engine: &Engine, docs: &[serde_json::Value]) {
        let docs = (docs.iter().enumerate())
            .map(|(i, d)| crate::document::parse_value(d.clone(), i + 1).unwrap())
            .collect();
        engine.apply(docs).unwrap();
    }

    fn import(peers: &[&str]) -> serde_json::Value {
        let sources: Vec<_> = (peers.iter())
            .map(|p| json!({"peer": p, "exportName": "db", "exportNamespace": "default"}))
            .collect();
        json!({"kind": "Import", "metadata": {"name": "db"},
            "spec": {"sources": sources, "lbScheme": "consistent-hash"}})
    }

    fn target(engine: &Engine, key: &str, dry_run: bool) -> String {
        let event: Event = serde_json::from_value(json!({"type": "NewConnection",
            "direction": "egress", "src_service": key, "dst_service": "db"}))
        .unwrap();
        let opts = DecideOptions {
            dry_run,
            ..DecideOptions::default()
        };
        let r = engine.decide(&event, Time::ZERO, opts).unwrap();
        r.target_peer.unwrap().to_string()
    }

    /// Keys keep their peer when peers join (up to the memory's bound), move only when
    /// their own peer goes, and the memory stays within its bound.
    #[test]
    fn consistent_hash_keys_stay_while_their_peer_does() {
        let engine = Engine::new(EngineConfig {
            local_peer: PeerName::from("home"),
            ..EngineConfig::default()
        });
        let peers: Vec<_> = (0..8)
            .map(|i| json!({"kind": "Peer", "metadata": {"name": format!("p{i}")}}))
            .collect();
        apply(&engine, &peers);
        let all = json!({"kind": "AccessPolicy", "metadata": {"name": "all"}, "spec": {"action": "allow",
            "from": [{"workloadSelector": {}}], "to": [{"workloadSelector": {}}]}});
        let by_service = json!({"kind": "LoadBalancingPolicy", "metadata": {"name": "ch"},
            "spec": {"import": "db", "from": [{"workloadSelector": {}}], "scheme": "consistent-hash",
                "hashKey": "client.clusterlink.net/service"}});
        apply(&engine, &[import(&["p0", "p1"]), all, by_service]);
        // A dry run remembers nothing.
        target(&engine, "k0", true);
        let sticky = || {
            let snapshot = engine.snapshot();
            let import = snapshot.import("default", "db").unwrap();
            import.lb_policies[0].sticky.clone()
        };
        assert_eq!(sticky().len(), 0);
        let keys: Vec<String> = (0..2 * super::STICKY_KEYS)
            .map(|i| format!("k{i}"))
            .collect();
        let before: Vec<String> = keys.iter().map(|k| target(&engine, k, false)).collect();
        assert_eq!(sticky().len(), super::STICKY_KEYS, "bounded");
        // The keys of the last two generations are remembered (those of the last one,
        // STICKY_KEYS / 2 of them, are asked below: asking the older ones would promote
        // them, a generation change); the first ones are forgotten.
        let forgotten = &keys[..super::STICKY_KEYS];
        let recent = keys.len() - super::STICKY_KEYS / 2;
        let (remembered, was) = (&keys[recent..], &before[recent..]);
        // Six peers join: no remembered key moves.
        apply(
            &engine,
            &[import(&["p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7"])],
        );
        let after: Vec<String> = remembered
            .iter()
            .map(|k| target(&engine, k, false))
            .collect();
        assert_eq!(after, was, "no remembered key moved");
        // p0 goes: its keys move, the others stay.
        apply(
            &engine,
            &[import(&["p1", "p2", "p3", "p4", "p5", "p6", "p7"])],
        );
        for (key, was) in remembered.iter().zip(&after) {
            let now = target(&engine, key, false);
            match was.as_str() {
                "p0" => assert_ne!(now, "p0", "{key}"),
                _ => assert_eq!(&now, was, "{key}"),
            }
        }
        // Forgotten keys are placed by rendezvous hashing: some on the newcomers.
        let newcomers = ["p2", "p3", "p4", "p5", "p6", "p7"];
        let placed: Vec<String> = forgotten
            .iter()
            .map(|k| target(&engine, k, false))
            .collect();
        assert!(placed.iter().any(|p| newcomers.contains(&p.as_str())));
        assert_eq!(sticky().len(), super::STICKY_KEYS);
    }

    /// A key's peer narrowed away for one source, or unreachable for a while, is not
    /// forgotten: the other sources keep it, and it comes back.
    #[test]
    fn consistent_hash_keys_survive_narrowing_and_unreachability() {
        let engine = Engine::new(EngineConfig {
            local_peer: PeerName::from("home"),
            ..EngineConfig::default()
        });
        let peer = |name: &str, reachable: bool| json!({"kind": "Peer", "metadata": {"name": name}, "spec": {"reachable": reachable}});
        let allow = |name: &str, service: &str, to: serde_json::Value| {
            json!({"kind": "AccessPolicy", "metadata": {"name": name}, "spec": {"action": "allow",
                "from": [{"workloadSelector": {"matchLabels": {"client.clusterlink.net/service": service}}}],
                "to": [{"workloadSelector": to}]}})
        };
        let by_user = json!({"kind": "LoadBalancingPolicy", "metadata": {"name": "ch"},
            "spec": {"import": "db", "from": [{"workloadSelector": {}}], "scheme": "consistent-hash",
                "hashKey": "client.clusterlink.net/labels.user"}});
        apply(
            &engine,
            &[
                peer("p0", true),
                peer("p1", true),
                import(&["p0", "p1"]),
                by_user,
            ],
        );
        apply(
            &engine,
            &[
                allow("wide", "wide", json!({})),
                allow(
                    "narrow",
                    "narrow",
                    json!({"matchLabels": {"peer.clusterlink.net/name": "p1"}}),
                ),
            ],
        );
        let ask = |service: &str, user: &str| {
            let event: Event = serde_json::from_value(json!({"type": "NewConnection",
                "direction": "egress", "src_service": service, "dst_service": "db",
                "src_attributes": {"client.clusterlink.net/labels.user": user}}))
            .unwrap();
            let r = engine
                .decide(&event, Time::ZERO, DecideOptions::default())
                .unwrap();
            r.target_peer.unwrap().to_string()
        };
        // A user that `wide` is given p0.
        let user = (0..64)
            .map(|i| format!("u{i}"))
            .find(|u| ask("wide", u) == "p0")
            .unwrap();
        assert_eq!(ask("narrow", &user), "p1", "narrowed to p1 for this source");
        assert_eq!(
            ask("wide", &user),
            "p0",
            "the key keeps its peer for the others"
        );
        apply(&engine, &[peer("p0", false)]);
        assert_eq!(ask("wide", &user), "p1", "while p0 is unreachable");
        apply(&engine, &[peer("p0", true)]);
        assert_eq!(ask("wide", &user), "p0", "back with p0");
    }
}
