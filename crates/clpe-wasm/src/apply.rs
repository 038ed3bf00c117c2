//! Applies a guest's reply to the shared state: validated whole first, so a reply that
//! breaks a rule changes nothing (the agent failed), then removals, the target, the
//! order of preference, annotations, and the verdict.

use clpe_agent_sdk::{ReplyView, Verdict as Guest};
use clpe_core::Verdict;
use clpe_core::context::{Candidate, Context};
use smallvec::SmallVec;

use crate::error::CallError;

/// Limits on what one reply may carry.
const MAX_REASON: usize = 1024;
const MAX_MATCHED_BY: usize = 256;
const MAX_ANNOTATIONS: usize = 64;
const MAX_KEY: usize = 256;
const MAX_VALUE: usize = 1024;
const MAX_PEERS: usize = 1024;

/// Candidates in an order of preference (inline up to 4, like the context's lists).
type List<'s> = SmallVec<[Candidate<'s>; 4]>;

fn abi(message: String) -> CallError {
    CallError::Abi(message)
}

fn check(cx: &Context<'_>, r: &ReplyView<'_>) -> Result<(), CallError> {
    if r.reason.is_some_and(|s| s.len() > MAX_REASON) {
        return Err(abi(format!("its reason is longer than {MAX_REASON} bytes")));
    }
    if r.matched_by
        .is_some_and(|s| s.is_empty() || s.len() > MAX_MATCHED_BY)
    {
        return Err(abi(format!(
            "its matched_by must be 1 to {MAX_MATCHED_BY} bytes"
        )));
    }
    if r.remove.len() > MAX_PEERS || r.prefer.len() > MAX_PEERS {
        return Err(abi(format!("it names more than {MAX_PEERS} peers")));
    }
    if r.annotations.len() > MAX_ANNOTATIONS {
        return Err(abi(format!(
            "it sets {} annotations, more than {MAX_ANNOTATIONS}",
            r.annotations.len()
        )));
    }
    if let Some((k, _)) = r
        .annotations
        .iter()
        .find(|(k, v)| k.is_empty() || k.len() > MAX_KEY || v.len() > MAX_VALUE)
    {
        return Err(abi(format!(
            "annotation `{}` breaks the limits (keys 1 to {MAX_KEY} bytes, values at most {MAX_VALUE})",
            k.chars().take(64).collect::<String>()
        )));
    }
    if let Some(t) = r.target
        && (r.remove.contains(t) || !cx.candidates.iter().any(|c| c.name().as_str() == t))
    {
        let names: Vec<&str> = cx
            .candidates
            .iter()
            .map(|c| c.name().as_str())
            .filter(|n| !r.remove.contains(n))
            .collect();
        return Err(abi(format!(
            "it sets the target to `{}`, which is not a candidate (candidates: {})",
            t.chars().take(64).collect::<String>(),
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        )));
    }
    Ok(())
}

/// The current order of preference: the target then the fallbacks once a target is
/// chosen, else the reachable candidates then the unreachable ones (as `lb` orders them).
fn preference<'s>(cx: &Context<'s>) -> List<'s> {
    let mut order: List<'s> = SmallVec::with_capacity(cx.candidates.len());
    if let Some(t) = cx.target {
        order.push(t);
        order.extend(cx.fallbacks.iter().copied());
    }
    for reachable in [true, false] {
        for c in cx
            .candidates
            .iter()
            .filter(|c| c.peer.reachable == reachable)
        {
            if !order.iter().any(|o| o.name() == c.name()) {
                order.push(*c);
            }
        }
    }
    order
}

/// Makes `target` the target; the previous order of preference, without it, becomes
/// the fallbacks.
fn set_target<'s>(cx: &mut Context<'s>, target: Candidate<'s>) {
    let mut order = preference(cx);
    order.retain(|c| c.name() != target.name());
    cx.target = Some(target);
    cx.fallbacks = order;
}

/// Puts the listed peers first, in the listed order, keeping unreachable peers after
/// reachable ones (as SPEC §3.2 orders fallbacks). With no target yet, the first listed
/// candidate (a reachable one if any) becomes the target.
fn prefer(cx: &mut Context<'_>, r: &ReplyView<'_>) {
    if cx.target.is_none() {
        let listed = || r.prefer.iter().filter_map(|p| find(cx, p));
        if let Some(first) = listed()
            .find(|c| c.peer.reachable)
            .or_else(|| listed().next())
        {
            set_target(cx, first);
        }
    }
    let mut rest: List<'_> = std::mem::take(&mut cx.fallbacks);
    let mut ordered: List<'_> = SmallVec::with_capacity(rest.len());
    for p in r.prefer.iter() {
        if let Some(i) = rest.iter().position(|c| c.name().as_str() == p) {
            ordered.push(rest.remove(i));
        }
    }
    ordered.append(&mut rest);
    let (reachable, unreachable): (List<'_>, List<'_>) =
        ordered.into_iter().partition(|c| c.peer.reachable);
    cx.fallbacks = reachable.into_iter().chain(unreachable).collect();
}

fn find<'s>(cx: &Context<'s>, name: &str) -> Option<Candidate<'s>> {
    cx.candidates
        .iter()
        .find(|c| c.name().as_str() == name)
        .copied()
}

/// Applies a reply; returns the verdict for the dispatcher.
pub(crate) fn apply<'s>(
    cx: &mut Context<'s>,
    r: &ReplyView<'_>,
    agent: &str,
) -> Result<Verdict<'s>, CallError> {
    if r.verdict == Guest::Fail {
        return Err(CallError::Failed(
            r.reason
                .unwrap_or("no reason given")
                .chars()
                .take(MAX_REASON)
                .collect(),
        ));
    }
    check(cx, r)?;
    for name in r.remove.iter() {
        let peer = cx
            .candidates
            .iter()
            .chain(cx.fallbacks.iter())
            .chain(cx.target.iter())
            .find(|c| c.name().as_str() == name)
            .map(|c| c.name().clone());
        if let Some(peer) = peer {
            cx.remove_peer(&peer);
        }
    }
    if let Some(t) = r.target.and_then(|t| find(cx, t)) {
        set_target(cx, t);
    }
    if !r.prefer.is_empty() {
        prefer(cx, r);
    }
    for (k, v) in r.annotations.iter() {
        (cx.annotations.get_or_insert_default()).insert(k.to_owned(), v.to_owned());
    }
    let matched_by = r.matched_by.map(clpe_core::agent::Held::from);
    Ok(match r.verdict {
        Guest::Continue | Guest::Fail => Verdict::Continue,
        Guest::Allow => Verdict::Allow { matched_by },
        Guest::Deny => Verdict::Deny {
            reason: match r.reason {
                Some(reason) if !reason.is_empty() => reason.into(),
                _ => format!("denied by WASM agent {agent}").into(),
            },
            matched_by,
        },
    })
}
