//! The `lb` agent: picks the target peer of an egress connection (SPEC §3.2).

use std::sync::atomic::{AtomicU64, Ordering};

use smallvec::SmallVec;

use crate::agent::{Agent, Verdict};
use crate::attrs::Attrs;
use crate::context::{Candidate, Context, Scope};
use crate::document::Scheme;
use crate::error::AgentError;
use crate::event::{Direction, EventType};
use crate::runtime::stable_hash;
use crate::snapshot::{ImportEntry, Snapshot};

pub struct LoadBalancer;

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
                policy: Some(p),
            };
        }
    }
    Choice {
        scheme: import.scheme,
        counter: &import.counter,
        salt: import.salt,
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
            let key = spec
                .and_then(|s| s.hash_key.as_deref())
                .and_then(|k| cx.src.get(k))
                .unwrap_or("");
            let mut scored: SmallVec<[(u64, Candidate<'s>); 4]> = pool
                .iter()
                .map(|c| (stable_hash(&[key, c.name().as_str()]), *c))
                .collect();
            // Rendezvous hashing: the highest score wins, and only a leaving peer's keys move.
            scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.order.cmp(&b.1.order)));
            scored.into_iter().map(|(_, c)| c).collect()
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
