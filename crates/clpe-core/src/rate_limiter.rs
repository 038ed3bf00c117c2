//! The `rate-limiter` agent (SPEC §3.4): GCRA per policy and key tuple, bandwidth caps.

use std::hash::{BuildHasher, Hash, Hasher};

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;
use smallvec::SmallVec;

use crate::agent::{Agent, Verdict};
use crate::context::Context;
use crate::error::AgentError;
use crate::event::{Direction, EventType};
use crate::limits::Padded;
use crate::names::Time;
use crate::shard_lock::ShardLock;
use crate::snapshot::Snapshot;

const SHARDS: usize = 32;

struct Bucket {
    policy: Box<str>,
    values: Box<[Box<str>]>,
    /// GCRA's theoretical arrival time, nanoseconds.
    tat: u64,
}

#[derive(Default)]
struct Shard {
    table: HashTable<Bucket>,
    ops: u32,
}

/// GCRA state per (policy, key tuple). A bucket whose theoretical arrival time has passed
/// is the same as a new one, so idle buckets are dropped: memory is bounded by the keys
/// active within one burst window.
pub struct RateBuckets {
    /// Each on its own cache line: threads checking buckets of different shards do not
    /// take a line from each other.
    shards: Box<[Padded<ShardLock<Shard>>]>,
}

impl Default for RateBuckets {
    fn default() -> Self {
        RateBuckets {
            shards: (0..SHARDS).map(|_| Padded::default()).collect(),
        }
    }
}

fn bucket_hash(policy: &str, values: &[&str]) -> u64 {
    let mut h = FxBuildHasher.build_hasher();
    policy.hash(&mut h);
    for v in values {
        v.hash(&mut h);
    }
    h.finish()
}

impl RateBuckets {
    /// Whether one more connection conforms at `now`; when `take`, it is counted.
    pub fn check(
        &self,
        policy: &str,
        values: &[&str],
        interval: u64,
        burst: u64,
        now: Time,
        take: bool,
    ) -> bool {
        let hash = bucket_hash(policy, values);
        let Some(shard) = self.shards.get(hash as usize % SHARDS) else {
            return true;
        };
        let mut s = shard.lock();
        s.ops = s.ops.wrapping_add(1);
        if s.ops % 1024 == 0 {
            s.table.retain(|b| b.tat > now.0);
        }
        let tolerance = interval.saturating_mul(burst.saturating_sub(1));
        let eq = |b: &Bucket| {
            *b.policy == *policy
                && b.values.len() == values.len()
                && b.values.iter().zip(values).all(|(a, b)| &**a == *b)
        };
        let tat = s.table.find(hash, eq).map_or(now.0, |b| b.tat.max(now.0));
        if tat - now.0 > tolerance {
            return false;
        }
        if take {
            let next = tat.saturating_add(interval);
            match s.table.find_mut(hash, eq) {
                Some(b) => b.tat = next,
                None => {
                    let bucket = Bucket {
                        policy: Box::from(policy),
                        values: values.iter().map(|v| Box::from(*v)).collect(),
                        tat: next,
                    };
                    s.table.insert_unique(hash, bucket, |b| {
                        let vs: SmallVec<[&str; 4]> = b.values.iter().map(|v| &**v).collect();
                        bucket_hash(&b.policy, &vs)
                    });
                }
            }
        }
        true
    }

    /// Buckets held now (idle ones may linger until their shard's next sweep).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().table.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every idle bucket now.
    pub fn sweep(&self, now: Time) {
        for shard in self.shards.iter() {
            shard.lock().table.retain(|b| b.tat > now.0);
        }
    }
}

/// The values of `keys` on one side; a missing attribute counts as the empty string.
pub(crate) fn key_values<'a>(
    out: &mut SmallVec<[&'a str; 4]>,
    keys: &[Box<str>],
    attrs: Option<&crate::attrs::Attrs<'a>>,
) {
    for k in keys {
        out.push(attrs.and_then(|a| a.get(k)).unwrap_or(""));
    }
}

pub struct RateLimiter;

impl Agent for RateLimiter {
    /// It limits new connections, when some policy could.
    fn idle(&self, snapshot: &Snapshot, event: EventType, _: Option<Direction>) -> bool {
        event != EventType::NewConnection || snapshot.rate_index.is_empty()
    }

    fn observes(&self) -> bool {
        false
    }

    fn decide<'s>(&self, cx: &mut Context<'s>) -> Result<Verdict<'s>, AgentError> {
        // Reached when idle only in an explained decision, which runs every agent.
        if self.idle(cx.snapshot, cx.event.event_type(), None) {
            return Ok(Verdict::Continue);
        }
        if matches!(cx.scope, crate::context::Scope::Egress { .. }) && !cx.ensure_target() {
            return Ok(Verdict::Continue);
        }
        let snapshot = cx.snapshot;
        let Some(dst) = cx.dst_current() else {
            return Ok(Verdict::Continue);
        };
        let mut ids = SmallVec::new();
        snapshot.rate_index.all_matches(&cx.src, &dst, &mut ids);
        for id in ids {
            let Some(p) = snapshot.rate_limits.get(id as usize) else {
                continue;
            };
            let mut values: SmallVec<[&str; 4]> = SmallVec::new();
            key_values(&mut values, &p.spec.key, Some(&cx.src));
            key_values(&mut values, &p.spec.target_key, Some(&dst));
            let ok = cx.runtime.rates.check(
                &p.name,
                &values,
                p.interval,
                p.spec.burst,
                cx.now,
                !cx.dry_run,
            );
            cx.note_match(&p.name);
            if p.spec.dry_run {
                if !ok {
                    cx.would_deny(&p.name);
                }
                continue;
            }
            if !ok {
                return Ok(Verdict::Deny {
                    reason: format!(
                        "rate limit RateLimitPolicy {} exceeded ({} connections per second, burst {})",
                        p.name.trim_start_matches('/'),
                        p.spec.connections_per_second,
                        p.spec.burst
                    ).into(),
                    matched_by: Some((&p.name).into()),
                });
            }
            if let Some(bw) = p.spec.bandwidth {
                cx.rate_limit = Some(cx.rate_limit.map_or(bw, |cur| cur.min(bw)));
            }
        }
        Ok(Verdict::Continue)
    }
}
