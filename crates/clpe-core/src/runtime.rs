//! The engine's mutable state that outlives snapshots: open connections, limiter
//! counters, rate buckets, the balancers' seed. Nothing here takes a global lock on the
//! decision path: counters are atomics, tables are sharded, and connection ids are handed
//! out from per-thread blocks. Random draws come from one seeded sequence per balancer
//! (see [`Runtime::random`]).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::limits::{Connections, Counters};
use crate::names::ConnectionId;
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
    /// `clpe-<8 hex digits of the seed's mix>-`: every connection id starts so.
    id_prefix: [u8; 14],
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
        let mut id_prefix = *b"clpe-00000000-";
        let tag = (mix64(seed) >> 32) as u32;
        for (i, digit) in id_prefix.iter_mut().skip(5).take(8).enumerate() {
            let nibble = (tag >> (4 * (7 - i))) & 0xf;
            *digit = char::from_digit(nibble, 16).map_or(b'0', |c| c as u8);
        }
        Runtime {
            connections: Connections::default(),
            counters: Counters::default(),
            rates: RateBuckets::default(),
            default_lease,
            seed,
            ids: AtomicU64::new(0),
            serial: RUNTIMES.fetch_add(1, Ordering::Relaxed),
            id_prefix,
        }
    }

    /// The `n`th number of the seeded pseudo-random sequence named `salt`. Each balancer
    /// draws from its own sequence, numbered by its own counter: threads drawing for
    /// different Imports share no counter, and a seeded engine makes the same choices
    /// for a sequential client.
    pub fn random(&self, n: u64, salt: u64) -> u64 {
        mix64(self.seed ^ salt ^ mix64(n))
    }

    /// A fresh connection id, unique for this engine's seed.
    pub fn connection_id(&self) -> ConnectionId {
        let n = take(&self.ids, self.serial);
        // `clpe-<8 hex digits of the seed>-<n>`, without the formatting machinery: this
        // runs on every admitted connection that came without an id.
        let mut id = [0u8; 34];
        let digits = n.checked_ilog10().map_or(1, |l| l as usize + 1);
        if let Some((prefix, number)) = id.split_first_chunk_mut::<14>() {
            *prefix = self.id_prefix;
            let mut v = n;
            for d in number.iter_mut().take(digits).rev() {
                *d = b'0' + (v % 10) as u8;
                v /= 10;
            }
        }
        let text = id.get(..14 + digits).unwrap_or_default();
        ConnectionId::new(std::str::from_utf8(text).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    #[test]
    fn ids_count_up_per_engine_and_never_repeat() {
        let a = Runtime::new(7, 0);
        let b = Runtime::new(7, 0);
        let tag = format!("{:08x}", (mix64(7) >> 32) as u32);
        assert_eq!(a.connection_id().as_str(), format!("clpe-{tag}-0"));
        assert_eq!(
            b.connection_id().as_str(),
            format!("clpe-{tag}-0"),
            "its own sequence"
        );
        assert_eq!(a.connection_id().as_str(), format!("clpe-{tag}-1"));
        let mut seen = std::collections::HashSet::new();
        for _ in 0..3000 {
            assert!(seen.insert(a.connection_id()));
            let _ = b.connection_id();
        }
        let others: Vec<ConnectionId> = std::thread::scope(|s| {
            let h = s.spawn(|| (0..2000).map(|_| a.connection_id()).collect());
            h.join().unwrap()
        });
        for id in others {
            assert!(seen.insert(id), "another thread's ids are its own");
        }
        let max = Runtime::new(1, 0);
        max.ids.store(u64::MAX - 5, Ordering::Relaxed);
        assert!(
            max.connection_id()
                .as_str()
                .ends_with(&u64::MAX.wrapping_sub(5).to_string())
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
