//! The engine's mutable state that outlives snapshots: open connections, limiter
//! counters, rate buckets, the balancers' randomness. Nothing here takes a global lock on
//! the decision path: counters are atomics, tables are sharded.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use parking_lot::Mutex;
use rustc_hash::FxHashMap;

use crate::limits::{Connections, Counters};
use crate::names::PeerName;
use crate::rate_limiter::RateBuckets;

pub struct Runtime {
    pub connections: Connections,
    pub counters: Counters,
    pub rates: RateBuckets,
    /// The lease of connections held by no limit policy, nanoseconds.
    pub default_lease: u64,
    seed: u64,
    rng: AtomicU64,
    ids: AtomicU64,
    pub(crate) peer_counters: Mutex<FxHashMap<PeerName, Arc<AtomicI64>>>,
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

impl Runtime {
    pub fn new(seed: u64, default_lease: u64) -> Runtime {
        Runtime {
            connections: Connections::default(),
            counters: Counters::default(),
            rates: RateBuckets::default(),
            default_lease,
            seed,
            rng: AtomicU64::new(0),
            ids: AtomicU64::new(0),
            peer_counters: Mutex::new(FxHashMap::default()),
        }
    }

    /// The next pseudo-random number of the engine's seeded sequence.
    pub fn random(&self) -> u64 {
        mix64(self.seed ^ mix64(self.rng.fetch_add(1, Ordering::Relaxed)))
    }

    /// A fresh connection id, unique for this engine's seed.
    pub fn connection_id(&self) -> Arc<str> {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        // `clpe-<8 hex digits of the seed>-<n>`, without the formatting machinery: this
        // runs on every admitted connection that came without an id.
        let mut id = String::with_capacity(36);
        id.push_str("clpe-");
        let tag = (mix64(self.seed) >> 32) as u32;
        for shift in (0..8).rev() {
            id.push(char::from_digit((tag >> (4 * shift)) & 0xf, 16).unwrap_or('0'));
        }
        id.push('-');
        let mut digits: smallvec::SmallVec<[char; 20]> = smallvec::SmallVec::new();
        let mut v = n;
        loop {
            digits.push(char::from_digit((v % 10) as u32, 10).unwrap_or('0'));
            v /= 10;
            if v == 0 {
                break;
            }
        }
        id.extend(digits.iter().rev());
        Arc::from(id)
    }
}
