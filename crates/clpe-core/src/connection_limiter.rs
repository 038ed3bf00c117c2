//! The `connection-limiter` agent (SPEC §3.4): open connections per policy and key tuple.
//!
//! On `NewConnection` it reserves a slot of every matching limit (an RAII guard kept in
//! the shared state: a later deny drops it, an allow moves it into the connection's
//! record). On `ConnectionClosed` it closes the record, which gives the slots back.

use smallvec::SmallVec;

use crate::agent::{Agent, Verdict};
use crate::context::{Context, Scope};
use crate::error::AgentError;
use crate::event::{Direction, Event, EventType};
use crate::limits::SlotGuard;
use crate::rate_limiter::key_values;
use crate::snapshot::Snapshot;

pub struct ConnectionLimiter;

impl Agent for ConnectionLimiter {
    /// It closes every connection, and limits new ones only when some policy could.
    fn idle(&self, snapshot: &Snapshot, event: EventType, _: Option<Direction>) -> bool {
        match event {
            EventType::ConnectionClosed => false,
            EventType::NewConnection => snapshot.conn_index.is_empty(),
            EventType::ExposeService | EventType::ServiceListRequest => true,
        }
    }

    fn observes(&self) -> bool {
        false
    }

    fn decide<'s>(&self, cx: &mut Context<'s>) -> Result<Verdict<'s>, AgentError> {
        // Reached when idle only in an explained decision, which runs every agent.
        if self.idle(cx.snapshot, cx.event.event_type(), None) {
            return Ok(Verdict::Continue);
        }
        match cx.event {
            Event::ConnectionClosed(e) => {
                if !cx.dry_run {
                    cx.closed = cx.runtime.connections.close(e.connection_id.as_str());
                }
                Ok(Verdict::Continue)
            }
            Event::NewConnection(_) => reserve(cx),
            _ => Ok(Verdict::Continue),
        }
    }
}

fn reserve<'s>(cx: &mut Context<'s>) -> Result<Verdict<'s>, AgentError> {
    if matches!(cx.scope, Scope::Egress { .. }) && !cx.ensure_target() {
        return Ok(Verdict::Continue);
    }
    let snapshot = cx.snapshot;
    let runtime = cx.runtime;
    let Some(dst) = cx.dst_current() else {
        return Ok(Verdict::Continue);
    };
    let mut ids = SmallVec::new();
    snapshot.conn_index.all_matches(&cx.src, &dst, &mut ids);
    for id in ids {
        let Some(p) = snapshot.conn_limits.get(id as usize) else {
            continue;
        };
        let mut values: SmallVec<[&str; 4]> = SmallVec::new();
        key_values(&mut values, &p.spec.key, Some(&cx.src));
        key_values(&mut values, &p.spec.target_key, Some(&dst));
        cx.note_match(&p.name);
        let lease = p.spec.lease_nanos.unwrap_or(runtime.default_lease);
        let expires = cx.now.plus_nanos(lease);
        let max = p.spec.max_connections;
        if cx.dry_run {
            let full = runtime.counters.current(&p.name, &values) >= max as i64;
            if full && p.spec.dry_run {
                cx.would_deny(&p.name);
            } else if full {
                return Ok(deny(&p.name, max));
            }
            continue;
        }
        if p.spec.dry_run {
            // Evaluated in full (its counter moves) but never denies.
            let counter = runtime.counters.counter(&p.name, &values);
            let guard = SlotGuard::take(counter, expires);
            if guard_over(&guard, max) {
                cx.would_deny(&p.name);
            }
            cx.slots.push(guard);
            continue;
        }
        match runtime.counters.try_reserve(&p.name, &values, max, expires) {
            Some(guard) => cx.slots.push(guard),
            None => return Ok(deny(&p.name, max)),
        }
    }
    Ok(Verdict::Continue)
}

fn guard_over(guard: &SlotGuard, max: u64) -> bool {
    guard.count() > max as i64
}

fn deny(name: &crate::text::Text, max: u64) -> Verdict<'_> {
    Verdict::Deny {
        reason: format!(
            "connection limit ConnectionLimitPolicy {} reached ({max} open connections)",
            name.trim_start_matches('/')
        )
        .into(),
        matched_by: Some(name.into()),
    }
}
