//! The engine's mutable state that outlives snapshots: open connections, limiter
//! counters, rate buckets, the balancers' seed. Nothing here takes a global lock on the
//! decision path: counters are atomics, tables are sharded, and connection ids are handed
//! out from per-thread blocks. Random draws come from one seeded sequence per balancer
//! (see [`Runtime::random`]).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::limits::{Connections, Counters, PeerRef, SlotGuard};
use crate::names::{ConnectionId, ServiceName, Time};
use crate::rate_limiter::RateBuckets;

pub struct Runtime {
    pub connections: Connections,
    pub counters: Counters,
    pub rates: RateBuckets,
    /// The lease of connections held by no limit policy, nanoseconds.
    pub default_lease: u64,
    seed: u64,
    ids: AtomicU64,
    /// This runtime's number in the process: names its blocks in the threads' caches.
    serial: u64,
}

/// SplitMix64: a good 64-bit mix, used for reproducible randomness and stable hashing.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A stable 64-bit hash of a string (FNV-1a, then mixed): the same on every machine and
/// run, so consistent hashing keeps its choices across restarts.
pub fn stable_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h)
}

/// How many numbers of a sequence a thread reserves at once.
const BLOCK: u64 = 1024;

/// Runtimes are numbered from 1 (0 marks an empty cache entry), never reusing a number,
/// so a cached block can only be used by the runtime it was reserved from.
static RUNTIMES: AtomicU64 = AtomicU64::new(1);

/// Numbers `next..end` of a runtime's ids, reserved by this thread.
#[derive(Clone, Copy)]
struct Block {
    /// The runtime's `serial`; 0 for none.
    owner: u64,
    next: u64,
    end: u64,
}

const EMPTY: Block = Block {
    owner: 0,
    next: 0,
    end: 0,
};

thread_local! {
    /// The blocks this thread holds, newest reservation first: a few engines can share a
    /// thread (tests) without reserving a block per call.
    static BLOCKS: [Cell<Block>; 4] = const { [const { Cell::new(EMPTY) }; 4] };
}

/// The next number of `counter`'s sequence for this thread: one atomic add per `BLOCK`
/// numbers instead of one per number. Numbers are unique; on one thread they count up
/// from 0 as the counter itself would. A thread that ends leaves its block's rest unused,
/// and threads' numbers interleave: fine for ids, which need only be unique.
fn take(counter: &AtomicU64, owner: u64) -> u64 {
    let cached = BLOCKS.try_with(|blocks| {
        for cell in blocks {
            let b = cell.get();
            if b.owner == owner {
                if b.next < b.end {
                    cell.set(Block {
                        next: b.next + 1,
                        ..b
                    });
                    return Some(b.next);
                }
                break;
            }
        }
        None
    });
    match cached {
        Ok(Some(n)) => n,
        Ok(None) => {
            let start = counter.fetch_add(BLOCK, Ordering::Relaxed);
            let _ = BLOCKS.try_with(|blocks| {
                // Newest first: the entry this owner had, or the oldest, makes room.
                let mut carry = Block {
                    owner,
                    next: start.saturating_add(1),
                    end: start.saturating_add(BLOCK),
                };
                for cell in blocks {
                    let old = cell.replace(carry);
                    if old.owner == owner {
                        break;
                    }
                    carry = old;
                }
            });
            start
        }
        // The thread is being torn down: take one number the slow way.
        Err(_) => counter.fetch_add(1, Ordering::Relaxed),
    }
}

impl Runtime {
    pub fn new(seed: u64, default_lease: u64) -> Runtime {
        Runtime {
            connections: Connections::new((mix64(seed) >> 48) as u16),
            counters: Counters::default(),
            rates: RateBuckets::default(),
            default_lease,
            seed,
            ids: AtomicU64::new(0),
            serial: RUNTIMES.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The `n`th number of the seeded pseudo-random sequence named `salt`. Each balancer
    /// draws from its own sequence, numbered by its own counter: threads drawing for
    /// different Imports share no counter, and a seeded engine makes the same choices
    /// for a sequential client.
    pub fn random(&self, n: u64, salt: u64) -> u64 {
        mix64(self.seed ^ salt ^ mix64(n))
    }

    /// Admits a connection: under the event's id, or under one made now (unique for this
    /// engine), which is returned.
    pub fn admit(
        &self,
        id: Option<ConnectionId>,
        target: Option<PeerRef>,
        src_service: Option<ServiceName>,
        slots: Vec<SlotGuard>,
        expires: Time,
    ) -> ConnectionId {
        match id {
            Some(id) => {
                let named = id.clone();
                self.connections
                    .admit(id, target, src_service, slots, expires);
                named
            }
            None => {
                let serial = || take(&self.ids, self.serial);
                self.connections
                    .admit_new(serial, target, src_service, slots, expires)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    fn made(rt: &Runtime) -> ConnectionId {
        rt.admit(None, None, None, Vec::new(), Time(1))
    }

    /// The serial of an id `made` writes (`c<tag>-<serial>-<place>`).
    fn serial_of(id: &ConnectionId) -> u64 {
        let serial = id.as_str().split('-').nth(1).unwrap();
        u64::from_str_radix(serial, 16).unwrap()
    }

    #[test]
    fn ids_count_up_per_engine_and_never_repeat() {
        let a = Runtime::new(7, 0);
        let b = Runtime::new(7, 0);
        let tag = format!("{:04x}", (mix64(7) >> 48) as u16);
        // `c<tag>-<serial>-<place>`: serials count up per engine.
        let first = made(&a);
        assert!(first.as_str().starts_with(&format!("c{tag}-0-")), "{first}");
        assert!(
            made(&b).as_str().starts_with(&format!("c{tag}-0-")),
            "its own sequence"
        );
        assert!(made(&a).as_str().starts_with(&format!("c{tag}-1-")));
        // Serials, not only ids, never repeat (an id also names a place, and places are
        // reused once their connection closes): close each id before the next is made.
        let mut seen = std::collections::HashSet::new();
        for _ in 0..3000 {
            let id = made(&a);
            assert!(seen.insert(serial_of(&id)), "{id}");
            assert!(a.connections.close(id.as_str()).is_some());
            let _ = made(&b);
        }
        let others: Vec<ConnectionId> = std::thread::scope(|s| {
            let h = s.spawn(|| {
                let ids: Vec<ConnectionId> = (0..2000).map(|_| made(&a)).collect();
                ids.iter()
                    .for_each(|id| assert!(a.connections.close(id.as_str()).is_some()));
                ids
            });
            h.join().unwrap()
        });
        for id in others {
            assert!(
                seen.insert(serial_of(&id)),
                "another thread's serials are its own"
            );
        }
        assert_eq!(a.connections.open(), 2, "the first two are still open");
        let max = Runtime::new(1, 0);
        max.ids.store(u64::MAX - 5, Ordering::Relaxed);
        let id = made(&max);
        assert_eq!(serial_of(&id), u64::MAX - 5, "{id}");
        assert!(
            max.connections.close(id.as_str()).is_some(),
            "found from its id"
        );
    }

    #[test]
    fn random_draws_are_named_and_numbered_and_seeded() {
        let r = Runtime::new(42, 0);
        let again = Runtime::new(42, 0);
        let other_seed = Runtime::new(43, 0);
        let draws = |rt: &Runtime, salt| (0..64).map(|n| rt.random(n, salt)).collect::<Vec<_>>();
        assert_eq!(draws(&r, 7), draws(&again, 7), "same seed, same sequence");
        assert_ne!(draws(&r, 7), draws(&r, 8), "each name its own sequence");
        assert_ne!(
            draws(&r, 7),
            draws(&other_seed, 7),
            "each seed its own sequence"
        );
        let distinct: std::collections::HashSet<u64> = draws(&r, 7).into_iter().collect();
        assert_eq!(distinct.len(), 64);
        // Spread: over 3 candidates, 3,000 draws land about a third each.
        let mut hits = [0u32; 3];
        for n in 0..3000 {
            hits[(r.random(n, 7) % 3) as usize] += 1;
        }
        assert!(hits.iter().all(|h| (850..1150).contains(h)), "{hits:?}");
    }
}
